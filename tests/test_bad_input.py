"""Bad-input matrix: every public entry point rejects wrong types and values, and only that.

Each row of ``MATRIX`` is one argument of one public callable: the values it must reject,
how to call it, and how to check that the rejected call left nothing behind. For every
value Hypothesis draws, the call must raise TypeError or ValueError whose message names
the argument and shows the value (``!r``), start no thread, and leave the object it was
called on working. Fan-out and daemon entry points join the matrix as more rows.
"""

from __future__ import annotations

import contextlib
import contextvars
import linecache
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from _harness import MAIN_WATCH, HookRecorder, ThreadAccount, blocked_in, join_all
from threadkit import Cancelled, CancelToken, ManagedThread, ThreadGroup, ThreadState, _cancel

LONG = 300.0  # a sleep that only a cancellation ends

# -- wrong values ---------------------------------------------------------------------------------

#: Values of many types; each row filters out the ones its argument accepts.
ANYTHING: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([complex, Decimal, Fraction, bytearray, frozenset, range]).flatmap(
        st.from_type
    ),
    st.builds(object),
    st.sampled_from([threading.Event(), threading.Lock(), contextvars.ContextVar("v")]),
)
#: Negative numbers and NaN: the right type, a wrong value.
NEGATIVE_OR_NAN: st.SearchStrategy[object] = st.one_of(
    st.integers(max_value=-1),
    st.floats(max_value=-1e-300, allow_infinity=True),
    st.just(math.nan),
    st.just(-math.inf),
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def not_seconds(*, none_ok: bool) -> st.SearchStrategy[object]:
    """What a seconds argument must reject: wrong types (bools included), negatives, NaN."""
    wrong_type = ANYTHING.filter(lambda v: not _is_number(v) and not (none_ok and v is None))
    return st.one_of(wrong_type, NEGATIVE_OR_NAN)


NOT_STR_OR_NONE = ANYTHING.filter(lambda v: v is not None and not isinstance(v, str))
NOT_TOKEN_OR_NONE = ANYTHING.filter(lambda v: v is not None and not isinstance(v, CancelToken))
NOT_CALLABLE = ANYTHING.filter(lambda v: not callable(v))
NOT_CALLABLE_OR_NONE = NOT_CALLABLE.filter(lambda v: v is not None)
NOT_CONTEXT_OR_NONE = ANYTHING.filter(
    lambda v: v is not None and not isinstance(v, contextvars.Context)
)
NOT_ITERABLE = ANYTHING.filter(lambda v: not hasattr(v, "__iter__"))
NOT_MAPPING = ANYTHING.filter(lambda v: v is not None and not hasattr(v, "keys"))


# -- targets: what the entry point is called on ---------------------------------------------------


@contextlib.contextmanager
def no_target() -> Iterator[None]:
    yield None


@contextlib.contextmanager
def live_token() -> Iterator[CancelToken]:
    yield CancelToken()


@contextlib.contextmanager
def finished_thread() -> Iterator[ManagedThread[int]]:
    thread: ManagedThread[int] = ManagedThread(target=int, args=("7",))
    thread.start()
    thread.join()
    yield thread


@contextlib.contextmanager
def unstarted_thread() -> Iterator[ManagedThread[int]]:
    yield ManagedThread(target=int, args=("7",))


@contextlib.contextmanager
def entered_group() -> Iterator[ThreadGroup]:
    with ThreadGroup(name="bad-input") as g:
        yield g


@contextlib.contextmanager
def group_that_must_time_out() -> Iterator[ThreadGroup]:
    """An entered group with a deadline; leaving it must raise TimeoutError, as if the rejected
    call had never happened."""
    with pytest.raises(TimeoutError, match=r"^thread group 'bad-input' timed out after 0\.02"):
        with ThreadGroup(name="bad-input", timeout=0.02) as g:
            yield g
            g.spawn(threadkit.sleep, LONG)


# -- what "still works" means after a rejected call -----------------------------------------------


def _nothing(target: object) -> None:
    pass


def _token_untouched(token: CancelToken) -> None:
    assert not token.cancelled
    assert token.wait(0) is False
    calls: list[int] = []
    token.on_cancel(lambda: calls.append(1))
    token.cancel("fine")
    assert (token.reason, calls) == ("fine", [1])


def _thread_untouched(thread: ManagedThread[int]) -> None:
    assert thread.state is ThreadState.SUCCEEDED
    assert thread.result(timeout=1) == 7
    assert not thread.token.cancelled


def _unstarted_untouched(thread: ManagedThread[int]) -> None:
    assert thread.state is ThreadState.CREATED
    assert not thread.token.cancelled
    thread.start()
    assert thread.result() == 7


def _group_untouched(group: ThreadGroup) -> None:
    # The rejected spawn used no task number and left no task behind.
    task = group.spawn(int, "5")
    assert task.name == "bad-input-0"
    assert task.result() == 5
    assert not group.token.cancelled


def _fresh_group_works(target: object) -> None:
    with ThreadGroup() as g:
        t = g.spawn(int, "3")
    assert t.result() == 3


# -- the matrix -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One argument of one public callable."""

    id: str
    argument: str  # the name the error message must contain
    bad: st.SearchStrategy[object]
    call: Callable[[Any, Any], object]  # (target, value): the value is wrong on purpose
    target: Callable[[], contextlib.AbstractContextManager[Any]] = no_target
    still_works: Callable[[Any], None] = _nothing
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


MATRIX: list[Entry] = [
    # CancelToken
    Entry("CancelToken(parent)", "parent", NOT_TOKEN_OR_NONE, lambda _, v: CancelToken(v)),
    Entry("CancelToken(parent=)", "parent", NOT_TOKEN_OR_NONE, lambda _, v: CancelToken(parent=v)),
    Entry(
        "CancelToken.cancel(reason)",
        "reason",
        NOT_STR_OR_NONE,
        lambda t, v: t.cancel(v),
        live_token,
        _token_untouched,
    ),
    Entry(
        "CancelToken.wait(timeout)",
        "timeout",
        not_seconds(none_ok=True),
        lambda t, v: t.wait(v),
        live_token,
        _token_untouched,
    ),
    Entry(
        "CancelToken.on_cancel(callback)",
        "callback",
        NOT_CALLABLE,
        lambda t, v: t.on_cancel(v),
        live_token,
        _token_untouched,
    ),
    Entry("sleep(seconds)", "seconds", not_seconds(none_ok=False), lambda _, v: threadkit.sleep(v)),
    # ManagedThread
    Entry(
        "ManagedThread(target)",
        "target",
        NOT_CALLABLE_OR_NONE,
        lambda _, v: ManagedThread(target=v),
        still_works=lambda _: _unstarted_untouched(ManagedThread(target=int, args=("7",))),
    ),
    Entry("ManagedThread(token)", "token", NOT_TOKEN_OR_NONE, lambda _, v: ManagedThread(token=v)),
    Entry(
        "ManagedThread(context)",
        "context",
        NOT_CONTEXT_OR_NONE,
        lambda _, v: ManagedThread(context=v),
    ),
    Entry(
        "ManagedThread(args)",
        "args",
        NOT_ITERABLE,
        lambda _, v: ManagedThread(target=print, args=v),
    ),
    Entry(
        "ManagedThread(kwargs)",
        "kwargs",
        NOT_MAPPING,
        lambda _, v: ManagedThread(target=print, kwargs=v),
    ),
    Entry(
        "ManagedThread.cancel(reason)",
        "reason",
        NOT_STR_OR_NONE,
        lambda t, v: t.cancel(v),
        unstarted_thread,
        _unstarted_untouched,
    ),
    Entry(
        "ManagedThread.result(timeout)",
        "timeout",
        not_seconds(none_ok=True),
        lambda t, v: t.result(v),
        finished_thread,
        _thread_untouched,
    ),
    Entry(
        "ManagedThread.exception(timeout)",
        "timeout",
        not_seconds(none_ok=True),
        lambda t, v: t.exception(timeout=v),
        finished_thread,
        _thread_untouched,
    ),
    # ThreadGroup
    Entry(
        "ThreadGroup(name)",
        "name",
        NOT_STR_OR_NONE,
        lambda _, v: ThreadGroup(name=v),
        still_works=_fresh_group_works,
    ),
    Entry(
        "ThreadGroup(timeout)",
        "timeout",
        not_seconds(none_ok=True),
        lambda _, v: ThreadGroup(timeout=v),
        still_works=_fresh_group_works,
    ),
    Entry(
        "ThreadGroup(grace)",
        "grace",
        not_seconds(none_ok=False),
        lambda _, v: ThreadGroup(grace=v),
        still_works=_fresh_group_works,
    ),
    Entry(
        "ThreadGroup.spawn(fn)",
        "fn",
        NOT_CALLABLE,
        lambda g, v: g.spawn(v),
        entered_group,
        _group_untouched,
    ),
    Entry(
        "ThreadGroup.spawn(name=)",
        "name",
        NOT_STR_OR_NONE,
        lambda g, v: g.spawn(int, name=v),
        entered_group,
        _group_untouched,
    ),
    Entry(
        "ThreadGroup.cancel(reason)",
        "reason",
        NOT_STR_OR_NONE,
        lambda g, v: g.cancel(v),
        group_that_must_time_out,
    ),
]


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id, marks=e.marks) for e in MATRIX])
@given(data=st.data())
def test_bad_input_is_rejected_cleanly(entry: Entry, data: st.DataObject) -> None:
    value = data.draw(entry.bad, label=entry.argument)
    with entry.target() as target:
        before = set(threading.enumerate())
        with pytest.raises((TypeError, ValueError)) as info:
            entry.call(target, value)
        assert set(threading.enumerate()) == before, "a rejected call started a thread"
        message = str(info.value)
        assert entry.argument in message, message
        assert repr(value) in message, message
        entry.still_works(target)


def test_matrix_covers_every_public_argument() -> None:
    """A new argument of a core entry point needs a row (or a reason it needs none)."""
    import inspect

    covered = {(e.id.split("(")[0], e.argument) for e in MATRIX}
    no_row = {
        # Accepted as the stdlib accepts them: ManagedThread is a drop-in Thread.
        ("ManagedThread", "group"),
        ("ManagedThread", "name"),
        ("ManagedThread", "daemon"),
        ("CancelToken.on_cancel", "self"),
    }
    entry_points: dict[str, Callable[..., object]] = {
        "CancelToken": CancelToken.__init__,
        "CancelToken.cancel": CancelToken.cancel,
        "CancelToken.wait": CancelToken.wait,
        "CancelToken.on_cancel": CancelToken.on_cancel,
        "sleep": threadkit.sleep,
        "ManagedThread": ManagedThread.__init__,
        "ManagedThread.cancel": ManagedThread.cancel,
        "ManagedThread.result": ManagedThread.result,
        "ManagedThread.exception": ManagedThread.exception,
        "ThreadGroup": ThreadGroup.__init__,
        "ThreadGroup.spawn": ThreadGroup.spawn,
        "ThreadGroup.cancel": ThreadGroup.cancel,
    }
    missing = []
    for name, fn in entry_points.items():
        for param in inspect.signature(fn).parameters.values():
            if param.name == "self" or param.kind is param.VAR_POSITIONAL:
                continue
            if (name, param.name) not in covered | no_row:
                missing.append(f"{name}({param.name})")
    assert missing == []


# -- stdlib parity: where ManagedThread must accept what threading.Thread accepts -----------------


@pytest.mark.parametrize("name", [5, 2.5, None, b"x", ("t",)])
def test_thread_name_is_coerced_like_the_stdlib(name: Any) -> None:
    """Thread(name=5).name == "5": a drop-in Thread must not be stricter than the stdlib."""
    assert ManagedThread(name=name).name.startswith(threading.Thread(name=name).name.split("-")[0])
    if name is not None:
        assert ManagedThread(name=name).name == str(name)


@pytest.mark.parametrize("daemon", ["yes", 0, 1, None])
def test_thread_daemon_is_accepted_like_the_stdlib(daemon: Any) -> None:
    assert ManagedThread(daemon=daemon).daemon == threading.Thread(daemon=daemon).daemon


def test_thread_group_argument_is_rejected_like_the_stdlib() -> None:
    with pytest.raises(AssertionError, match="group argument must be None"):
        threading.Thread(group=1)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="group argument must be None"):
        ManagedThread(group=1)  # type: ignore[arg-type]


def test_waiting_on_an_unstarted_thread_is_a_runtime_error_whatever_the_timeout() -> None:
    thread: ManagedThread[int] = ManagedThread(target=int)
    for timeout in (None, 0, 1.5):
        with pytest.raises(RuntimeError, match=r"^cannot wait for a thread before it is started$"):
            thread.result(timeout)


# -- seconds too large for the platform -----------------------------------------------------------

HUGE = [math.inf, 1e10, sys.float_info.max]


def _cancel_once_main_waits(token: CancelToken, stop: threading.Event) -> threading.Thread:
    """Cancel ``token`` once the main thread is blocked in CancelToken.wait (or give up)."""
    waiting = blocked_in(_cancel.CancelToken.wait)

    def run() -> None:
        while not waiting():
            if stop.wait(0.0005):
                return
        token.cancel("woken")

    helper = threading.Thread(target=run, name="canceller")
    helper.start()
    return helper


def _huge_wait(value: float) -> None:
    token = CancelToken()
    stop = threading.Event()
    helper = _cancel_once_main_waits(token, stop)
    try:
        with MAIN_WATCH:
            assert token.wait(value) is True  # a wait with no deadline, ended by the cancel
    finally:
        stop.set()
        helper.join()


def _huge_sleep(value: float) -> None:
    def task() -> None:
        threadkit.sleep(value)

    with HookRecorder():  # an OverflowError in the task would go to threading.excepthook
        thread: ManagedThread[None] = ManagedThread(target=task)
        thread.start()
        thread.cancel("woken")
        assert isinstance(thread.exception(timeout=10), Cancelled)


def _huge_result(value: float) -> None:
    thread: ManagedThread[int] = ManagedThread(target=int, args=("4",))
    thread.start()
    assert thread.result(value) == 4
    assert thread.exception(timeout=value) is None


def _huge_group_timeout(value: float) -> None:
    with HookRecorder() as hooks:
        with ThreadGroup(timeout=value) as g:
            t = g.spawn(int, "2")
    assert t.result() == 2
    assert hooks.excepthook == [], [r.exc_value for r in hooks.excepthook]


def _huge_group_grace(value: float) -> None:
    release = threading.Event()
    stop = threading.Event()

    def in_grace_wait() -> bool:
        # Blocked in ThreadGroup._wait's bounded branch, the one that waits `left` seconds.
        blocked = MAIN_WATCH.blocked or ()
        return any(
            code is ThreadGroup._wait.__code__
            and "left" in linecache.getline(code.co_filename, line)
            for code, line in blocked
        )

    def lingering() -> None:
        threadkit.current_token().wait()  # cancelled by the deadline...
        release.wait()  # ... and still busy for a while: the grace period is used

    def release_once_waiting_out_the_grace_period() -> None:
        # A fixed version may wait without a deadline instead (no `left`): release it anyway.
        give_up = time.monotonic() + 5
        while not in_grace_wait() and time.monotonic() < give_up:
            if stop.wait(0.0005):
                return
        release.set()

    helper = threading.Thread(target=release_once_waiting_out_the_grace_period)
    helper.start()
    try:
        with MAIN_WATCH, pytest.raises(TimeoutError):
            with ThreadGroup(timeout=0.01, grace=value) as g:
                g.spawn(lingering)
    finally:
        stop.set()
        release.set()
        helper.join()


@pytest.mark.parametrize("value", HUGE, ids=["inf", "1e10", "float_max"])
@pytest.mark.parametrize(
    "use",
    [_huge_wait, _huge_sleep, _huge_result, _huge_group_timeout, _huge_group_grace],
    ids=["wait", "sleep", "result", "ThreadGroup-timeout", "ThreadGroup-grace"],
)
def test_seconds_beyond_the_platform_limit_mean_no_deadline_or_a_clear_error(
    use: Callable[[float], None], value: float
) -> None:
    """Either no deadline at all, or a ValueError that names the argument: never an
    OverflowError, never a crashed thread."""
    account = ThreadAccount()
    rejected: ValueError | None = None
    try:
        use(value)
    except ValueError as exc:
        rejected = exc
    finally:
        assert not join_all(account.new())
    if rejected is not None:
        assert any(name in str(rejected) for name in ("timeout", "seconds", "grace")), rejected
