"""Bad-input matrix, continued: fan-out and daemon-mode entry points.

As in test_bad_input.py, each row of ``MATRIX`` is one argument of one public callable, the
values it must reject and how to call it. For every value Hypothesis draws, the call must
raise TypeError or ValueError whose message names the argument and shows the value
(``!r``), start no thread, run no task, register no daemon and install no signal handler;
what it was called on must still work afterwards. Then: seconds too large for the
platform's lock timeouts, and other values that pass validation and must then work.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from _harness import current_frames
from threadkit import (
    ChildSpec,
    ManagedThread,
    PeriodicThread,
    Supervisor,
    ThreadState,
    _executor,
    _fanout,
    fan_out,
    fan_out_and_join,
    handle_signals,
    shutdown_daemons,
    spawn_daemon,
)
from threadkit._daemon import registered_daemons

#: Longest wait for something that must happen; never a timing assertion.
HANG = 30.0

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
    st.sampled_from([complex, Decimal, Fraction, bytearray, frozenset]).flatmap(st.from_type),
    st.builds(object),
    st.sampled_from([threading.Event(), threading.Lock(), contextvars.ContextVar("v")]),
)
NEGATIVE_OR_NAN: st.SearchStrategy[object] = st.one_of(
    st.integers(max_value=-1),
    st.floats(max_value=-1e-300, allow_infinity=True),
    st.just(math.nan),
    st.just(-math.inf),
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def not_seconds(*, none_ok: bool, finite: bool = False, positive: bool = False) -> Any:
    """What a seconds argument must reject: wrong types (bools included), negatives, NaN;
    infinity when it must be ``finite``, zero when it must be ``positive``."""
    wrong_type = ANYTHING.filter(lambda v: not _is_number(v) and not (none_ok and v is None))
    cases = [wrong_type, NEGATIVE_OR_NAN]
    if finite:
        cases.append(st.just(math.inf))
    if positive:
        cases.append(st.sampled_from([0, 0.0]))
    return st.one_of(*cases)


NOT_STR_OR_NONE = ANYTHING.filter(lambda v: v is not None and not isinstance(v, str))
NOT_CALLABLE = ANYTHING.filter(lambda v: not callable(v))
NOT_CALLABLE_OR_NONE = NOT_CALLABLE.filter(lambda v: v is not None)
NOT_ITERABLE = ANYTHING.filter(lambda v: not hasattr(v, "__iter__"))
NOT_BOOL = ANYTHING.filter(lambda v: not isinstance(v, bool))
NOT_EXECUTOR_OR_NONE = ANYTHING.filter(lambda v: v is not None and not isinstance(v, Executor))
#: max_workers: an int >= 1 or None.
BAD_WORKERS = st.one_of(
    ANYTHING.filter(lambda v: v is not None and not (isinstance(v, int) and v >= 1)),
    st.booleans(),
    st.integers(max_value=0),
)
#: max_restarts: an int >= 0.
BAD_RESTARTS = st.one_of(
    ANYTHING.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)),
    st.booleans(),
    st.integers(max_value=-1),
)
#: A signal number that can be caught.
BAD_SIGNALS = st.one_of(
    ANYTHING.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool))),
    st.booleans(),
    st.sampled_from([-1, 0, 10_000, 2**40, signal.SIGKILL, signal.SIGSTOP]),
)


def not_in(allowed: tuple[str, ...]) -> Any:
    return ANYTHING.filter(lambda v: not (isinstance(v, str) and v in allowed))


# -- targets and checks ---------------------------------------------------------------------------


class Ran:
    """A task, factory or callback that records being called (it must not be)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> Any:
        self.calls += 1
        return ManagedThread()


@contextlib.contextmanager
def no_target() -> Iterator[None]:
    yield None


@contextlib.contextmanager
def thread_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="bad-input-pool") as pool:
        yield pool


def _pool_untouched(pool: ThreadPoolExecutor) -> None:
    assert fan_out_and_join(abs, [-1, -2], executor=pool) == [1, 2]


def _fan_out_works(_: object) -> None:
    assert fan_out_and_join(abs, [-3, 4], max_workers=2) == [3, 4]
    assert list(fan_out(abs, [-5])) == [5]


@contextlib.contextmanager
def a_registered_daemon() -> Iterator[ManagedThread[None]]:
    """A cooperative daemon: a rejected shutdown_daemons() must not touch it."""
    daemon = spawn_daemon(threadkit.sleep, HANG * 10, name="bad-input-daemon")
    try:
        yield daemon
    finally:
        daemon.cancel()
        daemon.join(HANG)


def _daemon_untouched(daemon: ManagedThread[None]) -> None:
    assert daemon.is_alive()
    assert not daemon.token.cancelled
    assert daemon in registered_daemons()
    assert shutdown_daemons() == []
    assert daemon.state is ThreadState.CANCELLED


@contextlib.contextmanager
def a_ticking_thread() -> Iterator[PeriodicThread]:
    ticked = threading.Event()
    thread = PeriodicThread(0.001, ticked.set, name="bad-input-ticker")
    thread.start()
    assert ticked.wait(HANG)
    try:
        yield thread
    finally:
        thread.stop(timeout=HANG)


def _ticker_untouched(thread: PeriodicThread) -> None:
    assert thread.is_alive()
    assert not thread.token.cancelled
    thread.stop(timeout=HANG)
    assert thread.state is ThreadState.SUCCEEDED


HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def _handlers() -> list[Any]:
    return [signal.getsignal(s) for s in HANDLED]


@dataclass(frozen=True)
class Entry:
    """One argument of one public callable."""

    id: str
    argument: str  # the name the error message must contain
    bad: Any  # st.SearchStrategy[object]
    call: Callable[[Any, Any, Ran], object]  # (target, value, a recorder that must not run)
    target: Callable[[], contextlib.AbstractContextManager[Any]] = no_target
    still_works: Callable[[Any], None] = lambda _: None
    shows_value: bool = True  # the message shows the value with !r
    marks: tuple[Any, ...] = field(default=())


def _fan_out_rows(function: Callable[..., Any], label: str) -> list[Entry]:
    def call(**kwargs: Any) -> Callable[[Any, Any, Ran], object]:
        def run(target: Any, value: Any, ran: Ran) -> object:
            arguments: dict[str, Any] = {"fn": ran, "items": [1, 2], **kwargs}
            for key, given_value in arguments.items():
                if given_value is VALUE:
                    arguments[key] = value
                elif given_value is TARGET:
                    arguments[key] = target
            return function(**arguments)

        return run

    pool = {"target": thread_pool, "still_works": _pool_untouched}
    return [
        Entry(f"{label}(fn)", "fn", NOT_CALLABLE, call(fn=VALUE), still_works=_fan_out_works),
        Entry(f"{label}(items)", "items", NOT_ITERABLE, call(items=VALUE)),
        Entry(f"{label}(max_workers)", "max_workers", BAD_WORKERS, call(max_workers=VALUE)),
        Entry(f"{label}(max_workers, executor)", "max_workers", BAD_WORKERS,
              call(max_workers=VALUE, executor=TARGET), **pool),  # type: ignore[arg-type]
        Entry(f"{label}(ordered)", "ordered", NOT_BOOL, call(ordered=VALUE)),
        Entry(f"{label}(timeout)", "timeout", not_seconds(none_ok=True), call(timeout=VALUE)),
        Entry(f"{label}(timeout, executor)", "timeout", not_seconds(none_ok=True),
              call(timeout=VALUE, executor=TARGET), **pool),  # type: ignore[arg-type]
        Entry(f"{label}(fail_fast)", "fail_fast", NOT_BOOL, call(fail_fast=VALUE)),
        Entry(f"{label}(executor)", "executor", NOT_EXECUTOR_OR_NONE, call(executor=VALUE)),
        Entry(f"{label}(on_progress)", "on_progress", NOT_CALLABLE_OR_NONE,
              call(on_progress=VALUE)),
        Entry(f"{label}(progress)", "progress", NOT_BOOL, call(progress=VALUE)),
        Entry(f"{label}(name)", "name", NOT_STR_OR_NONE, call(name=VALUE)),
        Entry(f"{label}(grace)", "grace", not_seconds(none_ok=False), call(grace=VALUE)),
        Entry(f"{label}(grace, executor)", "grace", not_seconds(none_ok=False),
              call(grace=VALUE, executor=TARGET), **pool),  # type: ignore[arg-type]
    ]  # fmt: skip


VALUE = object()  # stands for the bad value in a row's arguments
TARGET = object()  # stands for the row's target


def _periodic(**kwargs: Any) -> Callable[[Any, Any, Ran], object]:
    def run(target: Any, value: Any, ran: Ran) -> object:
        arguments: dict[str, Any] = {"interval": 0.01, "fn": ran, **kwargs}
        arguments = {k: (value if v is VALUE else v) for k, v in arguments.items()}
        interval, fn = arguments.pop("interval"), arguments.pop("fn")
        return PeriodicThread(interval, fn, **arguments)

    return run


def _supervisor(**kwargs: Any) -> Callable[[Any, Any, Ran], object]:
    def run(target: Any, value: Any, ran: Ran) -> object:
        arguments: dict[str, Any] = {"children": [ran], **kwargs}
        arguments = {k: (value if v is VALUE else v) for k, v in arguments.items()}
        children = arguments.pop("children")
        return Supervisor(children, **arguments)

    return run


def _child_spec(**kwargs: Any) -> Callable[[Any, Any, Ran], object]:
    def run(target: Any, value: Any, ran: Ran) -> object:
        arguments: dict[str, Any] = {"factory": ran, **kwargs}
        arguments = {k: (value if v is VALUE else v) for k, v in arguments.items()}
        factory = arguments.pop("factory")
        return ChildSpec(factory, **arguments)

    return run


STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")

MATRIX: list[Entry] = [
    *_fan_out_rows(fan_out_and_join, "fan_out_and_join"),
    *_fan_out_rows(fan_out, "fan_out"),  # checked at the call, before the first next()
    # spawn_daemon, shutdown_daemons, handle_signals
    Entry("spawn_daemon(fn)", "fn", NOT_CALLABLE, lambda _, v, r: spawn_daemon(v)),
    Entry("spawn_daemon(name=)", "name", NOT_STR_OR_NONE, lambda _, v, r: spawn_daemon(r, name=v)),
    Entry("spawn_daemon(grace=)", "grace", not_seconds(none_ok=False, finite=True),
          lambda _, v, r: spawn_daemon(r, grace=v)),
    Entry("shutdown_daemons(timeout)", "timeout", not_seconds(none_ok=True),
          lambda _, v, r: shutdown_daemons(v), a_registered_daemon, _daemon_untouched),
    Entry("handle_signals(*signals)", "signal", BAD_SIGNALS,
          lambda _, v, r: handle_signals(signal.SIGUSR1, v), shows_value=False),
    # PeriodicThread
    Entry("PeriodicThread(interval)", "interval",
          not_seconds(none_ok=False, finite=True, positive=True), _periodic(interval=VALUE)),
    Entry("PeriodicThread(fn)", "fn", NOT_CALLABLE, _periodic(fn=VALUE)),
    Entry("PeriodicThread(name=)", "name", NOT_STR_OR_NONE, _periodic(name=VALUE)),
    Entry("PeriodicThread(run_immediately=)", "run_immediately", NOT_BOOL,
          _periodic(run_immediately=VALUE)),
    Entry("PeriodicThread(on_error=)", "on_error",
          ANYTHING.filter(lambda v: not callable(v) and v not in ("log", "stop")),
          _periodic(on_error=VALUE)),
    Entry("PeriodicThread(daemon=)", "daemon", NOT_BOOL, _periodic(daemon=VALUE)),
    Entry("PeriodicThread(grace=)", "grace", not_seconds(none_ok=False, finite=True),
          _periodic(grace=VALUE)),
    Entry("PeriodicThread.stop(timeout)", "timeout", not_seconds(none_ok=True),
          lambda t, v, r: t.stop(v), a_ticking_thread, _ticker_untouched),
    # Supervisor and ChildSpec
    Entry("Supervisor(children)", "children",
          st.one_of(NOT_ITERABLE, st.text(max_size=3), st.binary(max_size=3)),
          _supervisor(children=VALUE)),
    Entry("Supervisor(children[i])", "children[0]", NOT_CALLABLE.map(lambda v: [v]),
          _supervisor(children=VALUE), shows_value=False),
    Entry("Supervisor(strategy=)", "strategy", not_in(STRATEGIES), _supervisor(strategy=VALUE)),
    Entry("Supervisor(max_restarts=)", "max_restarts", BAD_RESTARTS,
          _supervisor(max_restarts=VALUE)),
    Entry("Supervisor(within=)", "within", not_seconds(none_ok=False, finite=True, positive=True),
          _supervisor(within=VALUE)),
    Entry("Supervisor(backoff=)", "backoff", not_seconds(none_ok=False, finite=True),
          _supervisor(backoff=VALUE)),
    Entry("Supervisor(name=)", "name", NOT_STR_OR_NONE, _supervisor(name=VALUE)),
    Entry("Supervisor(grace=)", "grace", not_seconds(none_ok=False, finite=True),
          _supervisor(grace=VALUE)),
    Entry("Supervisor(daemon=)", "daemon", NOT_BOOL, _supervisor(daemon=VALUE)),
    Entry("ChildSpec(factory)", "factory", NOT_CALLABLE, _child_spec(factory=VALUE)),
    Entry("ChildSpec(restart=)", "restart", not_in(RESTART_TYPES), _child_spec(restart=VALUE)),
    Entry("ChildSpec(name=)", "name", NOT_STR_OR_NONE, _child_spec(name=VALUE)),
]  # fmt: skip


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id, marks=e.marks) for e in MATRIX])
@given(data=st.data())
def test_bad_input_is_rejected_cleanly(entry: Entry, data: st.DataObject) -> None:
    value = data.draw(entry.bad, label=entry.argument)
    ran = Ran()
    with entry.target() as target:
        before = set(threading.enumerate())
        registry = registered_daemons()
        handlers = _handlers()
        with pytest.raises((TypeError, ValueError)) as info:
            entry.call(target, value, ran)
        assert set(threading.enumerate()) == before, "a rejected call started a thread"
        assert registered_daemons() == registry, "a rejected call registered a daemon"
        assert _handlers() == handlers, "a rejected call installed a signal handler"
        assert ran.calls == 0, "a rejected call ran the task, factory or callback"
        message = str(info.value)
        assert entry.argument in message, message
        if entry.shows_value:
            assert repr(value) in message, message
        elif entry.argument == "signal":
            shown = getattr(value, "name", None) if isinstance(value, signal.Signals) else None
            assert repr(value) in message or (shown is not None and shown in message), message
        entry.still_works(target)


def test_matrix_covers_every_public_argument() -> None:
    """A new argument of a fan-out or daemon entry point needs a row (or a reason it has none)."""
    import inspect

    covered = {(e.id.split("(")[0], e.argument.split("[")[0]) for e in MATRIX}
    covered |= {("handle_signals", "signals")}  # the row checks each of them, as "signal"
    no_row = {
        ("spawn_daemon", "args"),  # anything: they are fn's arguments
        ("PeriodicThread", "args"),
    }
    entry_points: dict[str, Callable[..., object]] = {
        "fan_out_and_join": fan_out_and_join,
        "fan_out": fan_out,
        "spawn_daemon": spawn_daemon,
        "shutdown_daemons": shutdown_daemons,
        "handle_signals": handle_signals,
        "PeriodicThread": PeriodicThread.__init__,
        "PeriodicThread.stop": PeriodicThread.stop,
        "Supervisor": Supervisor.__init__,
        "ChildSpec": ChildSpec,
    }
    missing = []
    for name, fn in entry_points.items():
        for param in inspect.signature(fn).parameters.values():
            if param.name == "self":
                continue
            if (name, param.name) not in covered | no_row:
                missing.append(f"{name}({param.name})")
    assert missing == []


def test_a_bad_signal_after_a_good_one_installs_neither() -> None:
    """handle_signals checks every signal before it installs any handler."""
    handlers = _handlers()
    with pytest.raises(ValueError, match=r"^signal SIGKILL cannot be caught$"):
        handle_signals(signal.SIGUSR1, signal.SIGKILL)
    with pytest.raises(TypeError, match=r"^signals must be signal numbers, got 'x'$"):
        handle_signals(signal.SIGUSR1, "x")  # type: ignore[arg-type]
    assert _handlers() == handlers


def test_supervisor_children_with_duplicate_names_are_rejected_before_anything_starts() -> None:
    ran = Ran()
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=r"^children\[1\] has the name 'a' of an earlier child"):
        Supervisor([ChildSpec(ran, name="a"), ChildSpec(ran, name="a")])
    with pytest.raises(ValueError, match=r"^children\[1\] has the name 'child-0'"):
        Supervisor([ran, ChildSpec(ran, name="child-0")])
    assert ran.calls == 0
    assert set(threading.enumerate()) == before


def test_an_iterator_of_children_that_raises_propagates_unchanged() -> None:
    error = LookupError("children broke")

    def children() -> Iterator[Any]:
        yield Ran()
        raise error

    with pytest.raises(LookupError) as info:
        Supervisor(children())
    assert info.value is error


# =================================================================================================
# Seconds too large for the platform's lock timeouts (threading.TIMEOUT_MAX, ~292 years)
# =================================================================================================
#
# As for the core (test_bad_input.py): such a value is either a wait without a deadline, or
# a ValueError that names the argument; never an OverflowError, never a crashed thread.

HUGE = [math.inf, 1e10, sys.float_info.max]
HUGE_IDS = ["inf", "1e10", "float_max"]


def _main_in(*codes: Any) -> bool:
    ident = threading.main_thread().ident
    frame = current_frames().get(ident) if ident is not None else None
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _release_when(condition: Callable[[], bool], release: threading.Event) -> threading.Thread:
    """Set ``release`` once ``condition()`` holds (or after HANG, or once released)."""

    def run() -> None:
        give_up = time.monotonic() + HANG
        while not condition() and time.monotonic() < give_up and not release.is_set():
            time.sleep(0.0005)
        release.set()

    helper = threading.Thread(target=run, name="releaser")
    helper.start()
    return helper


def _held_task(release: threading.Event, x: int) -> int:
    """Held until the caller waits for it (or the call is cancelled: it failed meanwhile)."""
    unregister = threadkit.current_token().on_cancel(release.set)
    try:
        assert release.wait(HANG)
    finally:
        unregister()
    return x


def _fan_out_with_huge_timeout(value: float, pool: ThreadPoolExecutor | None) -> None:
    """The call must wait for its tasks: they end only once the caller waits for them."""
    release = threading.Event()
    waiting = _release_when(
        lambda: _main_in(_fanout._Call._receive.__code__, _executor.ExecutorCall._wait.__code__),
        release,
    )
    try:
        task = functools.partial(_held_task, release)
        assert fan_out_and_join(task, [1, 2], max_workers=2, timeout=value, executor=pool) == [
            1,
            2,
        ]
    finally:
        release.set()
        waiting.join()


def _linger(release: threading.Event, x: int) -> int:
    if x == 1:
        threadkit.current_token().wait(HANG)  # cancelled when the stream is left...
        assert release.wait(HANG)  # ... and still busy a while: the grace period is used
    return x


def _fan_out_with_huge_grace(value: float, pool: ThreadPoolExecutor | None) -> None:
    """Leaving a stream waits ``grace`` for its tasks: a huge one is no deadline."""
    release = threading.Event()
    running: list[int] = []
    task = functools.partial(_linger, release)

    def tracked(x: int) -> int:
        running.append(x)
        return task(x)

    stream = fan_out(tracked, [0, 1], max_workers=2, executor=pool, grace=value)
    assert next(stream) == 0
    waiting = _release_when(
        lambda: _main_in(_fanout._join.__code__, _executor.ExecutorCall._drain.__code__),
        release,
    )
    try:
        stream.close()
    finally:
        release.set()
        waiting.join()


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
@pytest.mark.parametrize("on_pool", [False, True], ids=["threads", "pool"])
@pytest.mark.parametrize(
    "use",
    [
        pytest.param(
            _fan_out_with_huge_timeout,
            id="timeout",
        ),
        pytest.param(
            _fan_out_with_huge_grace,
            id="grace",
        ),
    ],
)
def test_fan_out_seconds_beyond_the_platform_limit_mean_no_deadline_or_a_clear_error(
    use: Callable[[float, ThreadPoolExecutor | None], None], on_pool: bool, value: float
) -> None:
    """fan_out(timeout=, grace=) accept any number >= 0 (_check_seconds lets inf through)
    and hand ``deadline - time.monotonic()`` to SimpleQueue.get / Thread.join, which raise
    OverflowError ("timestamp out of range for platform time_t") past TIMEOUT_MAX. The call
    then fails with OverflowError: with ``timeout``, as soon as the caller waits (on the
    executor path, always); with ``grace``, when a stopped call waits for its tasks, from
    the middle of _shutdown/_drain, so the token is not released and the remaining workers
    are not joined.

    Fix: as the core did (_cancel._lock_timeout): a deadline past TIMEOUT_MAX is no
    deadline; or reject such values with a ValueError naming the argument.
    """
    before = set(threading.enumerate())
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(2)) if on_pool else None
        rejected: ValueError | None = None
        try:
            use(value, pool)
        except ValueError as exc:
            rejected = exc
        if rejected is not None:
            assert any(name in str(rejected) for name in ("timeout", "grace")), rejected
    for thread in [t for t in threading.enumerate() if t not in before]:
        thread.join(HANG)
        assert not thread.is_alive(), thread


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
def test_periodic_stop_with_a_huge_timeout_waits_for_the_end(value: float) -> None:
    """A stop(timeout) beyond threading.TIMEOUT_MAX (inf passes validation) is a wait without
    a deadline; it used to reach Thread.join() as is and raise OverflowError."""
    thread = PeriodicThread(0.001, lambda: None, name="huge-stop")
    thread.start()
    try:
        thread.stop(timeout=value)
        assert thread.state is ThreadState.SUCCEEDED
    finally:
        thread.stop()


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
def test_shutdown_daemons_with_a_huge_timeout_waits_without_a_deadline(value: float) -> None:
    daemon = spawn_daemon(threadkit.sleep, HANG * 10, name="huge-shutdown")
    assert shutdown_daemons(timeout=value) == []
    assert daemon.state is ThreadState.CANCELLED


@pytest.mark.parametrize("value", [1e10, sys.float_info.max], ids=["1e10", "float_max"])
def test_huge_but_finite_daemon_and_supervisor_seconds_work(value: float) -> None:
    """Finite values beyond TIMEOUT_MAX pass validation; they must then simply work."""
    before = set(threading.enumerate())
    daemon = spawn_daemon(threadkit.sleep, HANG * 10, name="huge-grace", grace=value)
    assert shutdown_daemons() == []
    assert daemon.state is ThreadState.CANCELLED
    ticks: list[int] = []
    periodic = PeriodicThread(value, ticks.append, 1, name="huge-interval", grace=value)
    periodic.start()
    periodic.stop(timeout=HANG)
    assert periodic.state is ThreadState.SUCCEEDED
    assert ticks == [1]
    failed = threading.Event()

    def child() -> None:
        if not failed.is_set():
            failed.set()
            raise LookupError("first run fails")  # a restart, then a backoff of `value` s
        threadkit.sleep(HANG * 10)

    reported: list[Any] = []
    saved, threading.excepthook = threading.excepthook, reported.append
    try:
        sup = Supervisor(
            [lambda: ManagedThread(target=child, name="huge-child")],
            within=value,
            backoff=value,
            grace=value,
            name="huge-sup",
        )
        sup.start()
        assert failed.wait(HANG)
        sup.cancel()
        sup.join(HANG)
        assert sup.state is ThreadState.CANCELLED
    finally:
        threading.excepthook = saved
    assert reported == []
    for thread in [t for t in threading.enumerate() if t not in before]:
        thread.join(HANG)


# =================================================================================================
# Values that pass validation and must then work
# =================================================================================================


def test_a_huge_max_workers_means_no_limit_beyond_the_items() -> None:
    """_Call.__init__ makes ``self._running = [None] * workers`` (one slot per possible
    worker): max_workers=2**62 raises MemoryError, and max_workers=10**8 allocates 800 MB
    for a two-item call. Found by the bad-input matrix's value sweep. Fix: size _running by
    the workers actually started (append in _spawn), or cap max_workers at what can ever
    be used (e.g. _MAX_IN_FLIGHT)."""
    before = set(threading.enumerate())
    assert fan_out_and_join(abs, [-1, -2], max_workers=2**62) == [1, 2]
    assert list(fan_out(abs, [-3], max_workers=sys.maxsize)) == [3]
    assert set(threading.enumerate()) == before


def test_a_huge_max_workers_on_an_executor_is_fine() -> None:
    with ThreadPoolExecutor(2) as pool:
        assert fan_out_and_join(abs, [-1, -2], max_workers=2**62, executor=pool) == [1, 2]


def test_the_smallest_positive_interval_is_accepted_and_works() -> None:
    """A subnormal interval (finite, > 0) ticks. The tick index ``(now - start) / interval``
    used to overflow to inf, and floor() killed the thread with OverflowError before its
    first tick; the schedule now computes it exactly when the float division overflows."""
    ticks = threading.Event()
    reported: list[Any] = []
    saved, threading.excepthook = threading.excepthook, reported.append
    try:
        thread = PeriodicThread(5e-324, ticks.set, name="subnormal", run_immediately=False)
        thread.start()
        ticked = ticks.wait(HANG) if thread.is_alive() else ticks.is_set()
        thread.stop(timeout=HANG)
    finally:
        threading.excepthook = saved
    assert reported == [], [getattr(r, "exc_value", r) for r in reported]
    assert ticked
    assert thread.state is ThreadState.SUCCEEDED, thread.exception()
