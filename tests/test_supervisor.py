"""Tests for Supervisor: strategies, restart types, intensity, backoff, stopping, nesting."""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import threadkit
from threadkit import (
    Cancelled,
    ChildSpec,
    ChildStatistics,
    ManagedThread,
    Supervisor,
    SupervisorStatistics,
    ThreadState,
)
from threadkit._daemon import registered_daemons

#: A ceiling for waits on events that must happen; never a timing assertion.
WAIT = 10.0
ROOT = Path(__file__).resolve().parent.parent


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


class Boom(Exception):
    """What a child raises when told to fail."""


class Harness:
    """Children whose threads do exactly what the test says, and a log of what they did.

    Child ``i``'s factory makes thread ``generation`` 0, 1, ... Each thread records
    ``("start", i, gen)``, waits for a command (``"fail"``, ``"return"``) or its own
    cancellation, and records ``("end", i, gen)`` in its ``finally:`` block.
    """

    def __init__(self, n: int) -> None:
        self.cond = threading.Condition()
        self.threads: list[list[ManagedThread[None]]] = [[] for _ in range(n)]
        self.log: list[tuple[str, int, int]] = []
        self.errors: dict[tuple[int, int], Boom] = {}
        self._inboxes: dict[tuple[int, int], queue.SimpleQueue[str]] = {}

    def factory(self, i: int) -> Callable[[], ManagedThread[None]]:
        return functools.partial(self._make, i)

    def factories(self) -> list[Callable[[], ManagedThread[None]]]:
        return [self.factory(i) for i in range(len(self.threads))]

    def _make(self, i: int) -> ManagedThread[None]:
        with self.cond:
            gen = len(self.threads[i])
            inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
            self._inboxes[i, gen] = inbox
            thread: ManagedThread[None] = ManagedThread(
                target=self._body, args=(i, gen, inbox), name=f"child{i}.{gen}"
            )
            self.threads[i].append(thread)
        return thread

    def _body(self, i: int, gen: int, inbox: queue.SimpleQueue[str]) -> None:
        token = threadkit.current_token()
        unregister = token.on_cancel(functools.partial(inbox.put, "cancelled"))
        self._record("start", i, gen)
        try:
            command = inbox.get(timeout=WAIT)
            if command == "fail":
                error = Boom(f"child {i}.{gen} failed")
                self.errors[i, gen] = error
                raise error
            if command == "cancelled":
                token.raise_if_cancelled()
        finally:
            unregister()
            self._record("end", i, gen)

    def _record(self, what: str, i: int, gen: int) -> None:
        with self.cond:
            self.log.append((what, i, gen))
            self.cond.notify_all()

    def tell(self, i: int, command: str) -> None:
        """Send ``command`` to child ``i``'s newest thread."""
        with self.cond:
            gen = len(self.threads[i]) - 1
        self._inboxes[i, gen].put(command)

    def newest(self, i: int) -> ManagedThread[None]:
        with self.cond:
            return self.threads[i][-1]

    def wait_logged(self, *entries: tuple[str, int, int]) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: all(e in self.log for e in entries), WAIT)
            assert ok, f"never logged {entries}; log: {self.log}"

    def since(self, entry: tuple[str, int, int]) -> list[tuple[str, int, int]]:
        """The log after ``entry``."""
        with self.cond:
            return self.log[self.log.index(entry) + 1 :]

    def generations(self) -> list[int]:
        with self.cond:
            return [len(threads) for threads in self.threads]


@pytest.fixture
def excepthook(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Capture what threads report to threading.excepthook (pytest would fail the test)."""
    calls: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", calls.append)
    return calls


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that stubborn threads wait on; set at teardown so that none is left behind."""
    event = threading.Event()
    yield event
    event.set()


def started(h: Harness, *, name: str | None = None, **options: Any) -> Supervisor:
    """A supervisor of every child of ``h``, started, once every child has started."""
    sup = Supervisor(h.factories(), backoff=0, name=name, **options)
    sup.start()
    h.wait_logged(*(("start", i, 0) for i in range(len(h.threads))))
    return sup


def stop(sup: Supervisor) -> None:
    sup.cancel()
    sup.join(WAIT)
    assert sup.state is ThreadState.CANCELLED


# -- argument checks --------------------------------------------------------------------------


def _factory() -> ManagedThread[None]:
    return ManagedThread()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (
            (42,),
            {},
            TypeError,
            "children must be an iterable of factories or ChildSpec objects, got 42",
        ),
        (
            ("ab",),
            {},
            TypeError,
            "children must be an iterable of factories or ChildSpec objects, got 'ab'",
        ),
        (
            ([_factory, 3],),
            {},
            TypeError,
            "children[1] must be a ChildSpec or a factory returning a ManagedThread, got 3",
        ),
        (
            ([ChildSpec(_factory, name="a"), ChildSpec(_factory, name="a")],),
            {},
            ValueError,
            "children[1] has the name 'a' of an earlier child; names must be unique",
        ),
        (
            ([_factory, ChildSpec(_factory, name="child-0")],),
            {},
            ValueError,
            "children[1] has the name 'child-0' of an earlier child; names must be unique",
        ),
        (
            ([],),
            {"strategy": "one_for_none"},
            ValueError,
            "strategy must be 'one_for_one', 'one_for_all' or 'rest_for_one', got 'one_for_none'",
        ),
        (([],), {"max_restarts": -1}, ValueError, "max_restarts must be an int >= 0, got -1"),
        (([],), {"max_restarts": 2.0}, TypeError, "max_restarts must be an int >= 0, got 2.0"),
        (([],), {"max_restarts": True}, TypeError, "max_restarts must be an int >= 0, got True"),
        (
            ([],),
            {"within": 0},
            ValueError,
            "within must be a finite number of seconds > 0, got 0",
        ),
        (
            ([],),
            {"within": float("inf")},
            ValueError,
            "within must be a finite number of seconds > 0, got inf",
        ),
        (([],), {"within": -1}, ValueError, "within must be >= 0, got -1"),
        (([],), {"backoff": -0.1}, ValueError, "backoff must be >= 0, got -0.1"),
        (
            ([],),
            {"backoff": float("inf")},
            ValueError,
            "backoff must be a finite number of seconds, got inf",
        ),
        (([],), {"backoff": "1"}, TypeError, "backoff must be a number of seconds, got '1'"),
        (([],), {"grace": -1}, ValueError, "grace must be >= 0, got -1"),
        (([],), {"name": 5}, TypeError, "name must be a str or None, got 5"),
        (([],), {"daemon": 1}, TypeError, "daemon must be a bool, got 1"),
    ],
)
def test_bad_arguments_are_rejected_before_any_thread_starts(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=exactly(message)):
        Supervisor(*args, **kwargs)
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((None,), {}, TypeError, "factory must be a callable returning a ManagedThread, got None"),
        (
            (_factory,),
            {"restart": "sometimes"},
            ValueError,
            "restart must be 'permanent', 'transient' or 'temporary', got 'sometimes'",
        ),
        ((_factory,), {"name": 1}, TypeError, "name must be a str or None, got 1"),
    ],
)
def test_child_spec_checks_its_fields(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exactly(message)):
        ChildSpec(*args, **kwargs)


def test_public_types() -> None:
    spec = ChildSpec(_factory)
    assert (spec.restart, spec.name) == ("permanent", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.restart = "temporary"  # type: ignore[misc]
    for cls in (Supervisor, ChildSpec, ChildStatistics, SupervisorStatistics):
        assert cls.__module__ == "threadkit"
    sup = Supervisor([])
    assert re.fullmatch(r"Supervisor-\d+", sup.name)
    assert sup.daemon
    assert isinstance(sup, ManagedThread)
    assert not Supervisor([], daemon=False).daemon


# -- strategies ---------------------------------------------------------------------------------


@pytest.mark.shake
def test_one_for_one_replaces_only_the_failed_child_with_a_fresh_thread() -> None:
    h = Harness(3)
    sup = started(h, strategy="one_for_one")
    old = h.newest(1)
    h.tell(1, "fail")
    h.wait_logged(("start", 1, 1))
    assert h.generations() == [2 - (i != 1) for i in range(3)]
    assert h.since(("end", 1, 0)) == [("start", 1, 1)]
    assert h.newest(1) is not old
    assert old.state is ThreadState.FAILED
    with pytest.raises(RuntimeError, match=exactly("threads can only be started once")):
        old.start()  # the failed thread is never restarted
    stats = sup.statistics()
    assert [c.restarts for c in stats.children] == [0, 1, 0]
    assert stats.restarts == 1
    assert stats.children[1].last_error is h.errors[1, 0]
    assert all(c.alive for c in stats.children)
    stop(sup)


@pytest.mark.shake
def test_one_for_all_stops_the_others_in_reverse_order_then_restarts_all_in_order() -> None:
    h = Harness(4)
    sup = started(h, strategy="one_for_all")
    h.tell(1, "fail")
    h.wait_logged(*(("start", i, 1) for i in range(4)))
    after = h.since(("end", 1, 0))
    stops, starts = after[:3], after[3:]
    assert stops == [("end", 3, 0), ("end", 2, 0), ("end", 0, 0)]
    # Started in order; each thread logs its start itself, so only the set is certain.
    assert sorted(starts) == [("start", i, 1) for i in range(4)]
    assert [t.state for t in (h.threads[0][0], h.threads[2][0], h.threads[3][0])] == [
        ThreadState.CANCELLED
    ] * 3
    assert [c.restarts for c in sup.statistics().children] == [1, 1, 1, 1]
    assert sup.statistics().restarts == 1  # one restart decision
    stop(sup)


@pytest.mark.shake
def test_rest_for_one_restarts_the_failed_child_and_those_after_it() -> None:
    h = Harness(4)
    sup = started(h, strategy="rest_for_one")
    h.tell(1, "fail")
    h.wait_logged(("start", 1, 1), ("start", 2, 1), ("start", 3, 1))
    after = h.since(("end", 1, 0))
    assert after[:2] == [("end", 3, 0), ("end", 2, 0)]
    assert h.generations() == [1, 2, 2, 2]
    assert h.threads[0][0].is_alive()
    assert [c.restarts for c in sup.statistics().children] == [0, 1, 1, 1]
    stop(sup)


@pytest.mark.shake
def test_cancelling_the_supervisor_stops_children_in_reverse_order() -> None:
    h = Harness(3)
    sup = started(h)
    sup.cancel("bye")
    sup.join(WAIT)
    assert sup.state is ThreadState.CANCELLED
    with pytest.raises(Cancelled, match="bye"):
        sup.result()
    with h.cond:
        log = list(h.log)
    # Started in order; each thread logs its start itself, so only the set is certain.
    assert sorted(log[:3]) == [("start", i, 0) for i in range(3)]
    assert log[3:] == [("end", 2, 0), ("end", 1, 0), ("end", 0, 0)]
    assert not any(c.alive for c in sup.statistics().children)
    sup.cancel()  # idempotent


def test_a_supervisor_cancelled_before_it_runs_never_calls_a_factory() -> None:
    h = Harness(2)
    sup = Supervisor(h.factories())
    sup.cancel()
    sup.start()
    sup.join(WAIT)
    assert sup.state is ThreadState.CANCELLED
    assert h.generations() == [0, 0]


# -- restart types ----------------------------------------------------------------------------


@pytest.mark.shake
@pytest.mark.parametrize(
    ("restart", "action", "restarted"),
    [
        ("permanent", "fail", True),
        ("permanent", "return", True),  # OTP restarts a permanent child that returns
        ("permanent", "cancel", True),  # ...or that someone else cancelled
        ("transient", "fail", True),
        ("transient", "return", False),
        ("transient", "cancel", False),
        ("temporary", "fail", False),
        ("temporary", "return", False),
        ("temporary", "cancel", False),
    ],
)
def test_restart_types(restart: str, action: str, restarted: bool) -> None:
    h = Harness(2)
    sup = Supervisor(
        [ChildSpec(h.factory(0), restart=restart), h.factory(1)],  # type: ignore[arg-type]
        backoff=0,
    )
    sup.start()
    h.wait_logged(("start", 0, 0), ("start", 1, 0))
    if action == "cancel":
        h.newest(0).cancel()
    else:
        h.tell(0, action)
    h.threads[0][0].join(WAIT)  # its end is reported to the supervisor before it ends
    if restarted:
        h.wait_logged(("start", 0, 1))
    # The supervisor handles ends in order: once child 1's restart is seen, child 0's end has
    # been handled too, so child 0's generation count is final.
    h.tell(1, "fail")
    h.wait_logged(("start", 1, 1))
    assert h.generations() == [2 if restarted else 1, 2]
    assert sup.statistics().children[0].restarts == int(restarted)
    stop(sup)


@pytest.mark.shake
def test_a_temporary_sibling_stopped_by_one_for_all_is_not_restarted() -> None:
    h = Harness(3)
    sup = Supervisor(
        [h.factory(0), ChildSpec(h.factory(1), restart="temporary"), h.factory(2)],
        strategy="one_for_all",
        backoff=0,
    )
    sup.start()
    h.wait_logged(*(("start", i, 0) for i in range(3)))
    h.tell(2, "fail")
    h.wait_logged(("start", 0, 1), ("start", 2, 1))
    assert ("end", 1, 0) in h.log
    h.tell(0, "fail")  # a second group restart: child 1 stays gone
    h.wait_logged(("start", 0, 2), ("start", 2, 2))
    assert h.generations() == [3, 1, 3]
    stop(sup)


@pytest.mark.shake
def test_the_supervisor_succeeds_once_no_child_is_left() -> None:
    h = Harness(3)
    sup = Supervisor(
        [
            ChildSpec(h.factory(0), restart="transient"),
            ChildSpec(h.factory(1), restart="temporary"),
            ChildSpec(h.factory(2), restart="transient"),
        ],
        backoff=0,
    )
    sup.start()
    h.wait_logged(*(("start", i, 0) for i in range(3)))
    h.tell(0, "fail")  # transient after a failure: restarted
    h.wait_logged(("start", 0, 1))
    h.tell(0, "return")
    h.tell(1, "fail")  # temporary: gone, even after a failure
    h.newest(2).cancel()
    sup.join(WAIT)
    assert sup.state is ThreadState.SUCCEEDED
    stats = sup.result()
    assert stats == sup.statistics()
    assert [(c.restarts, c.alive) for c in stats.children] == [(1, False)] + [(0, False)] * 2
    assert stats.children[1].last_error is h.errors[1, 0]


def test_a_supervisor_without_children_succeeds_at_once() -> None:
    sup = Supervisor([])
    sup.start()
    assert sup.result(WAIT) == SupervisorStatistics(restarts=0, children=())


# -- restart intensity and backoff ------------------------------------------------------------


@pytest.mark.shake
def test_the_third_failure_within_the_window_makes_it_give_up_with_that_error(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    h = Harness(3)
    sup = started(h, name="sup", max_restarts=2, within=3600)
    for gen in range(2):
        h.tell(1, "fail")
        h.wait_logged(("start", 1, gen + 1))
    h.tell(1, "fail")
    sup.join(WAIT)
    assert sup.state is ThreadState.FAILED
    last = h.errors[1, 2]
    with pytest.raises(Boom) as info:
        sup.result()
    assert info.value is last  # the same object
    assert last.__notes__ == [
        "supervisor 'sup' gave up: more than 2 restart(s) within 3600.0 s "
        "(child 'child-1' failed last)"
    ]
    # Every other child stopped, in reverse order; child 1 is not restarted a third time.
    assert h.since(("end", 1, 2)) == [("end", 2, 0), ("end", 0, 0)]
    assert h.generations() == [1, 3, 1]
    # A standalone supervisor's failure reaches threading.excepthook, as any thread's.
    assert [(a.exc_value, a.thread) for a in excepthook] == [(last, sup)]


@pytest.mark.shake
def test_max_restarts_zero_gives_up_at_the_first_failure(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    h = Harness(1)
    sup = started(h, max_restarts=0)
    h.tell(0, "fail")
    sup.join(WAIT)
    assert sup.exception() is h.errors[0, 0]
    assert h.generations() == [1]
    assert len(excepthook) == 1


@pytest.mark.shake
def test_restarts_after_normal_returns_count_too(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    h = Harness(1)
    sup = started(h, name="sup", max_restarts=1)
    h.tell(0, "return")
    h.wait_logged(("start", 0, 1))
    h.tell(0, "return")
    sup.join(WAIT)
    with pytest.raises(
        RuntimeError,
        match=exactly(
            "supervisor 'sup' gave up: more than 1 restart(s) within 5.0 s "
            "(child 'child-0' succeeded last)"
        ),
    ):
        sup.result()
    assert len(excepthook) == 1


@pytest.mark.shake
def test_restarts_older_than_the_window_do_not_count() -> None:
    within = 0.05
    h = Harness(1)
    sup = started(h, max_restarts=1, within=within)
    for gen in range(3):
        h.tell(0, "fail")
        h.wait_logged(("start", 0, gen + 1))
        # Let the window pass: the next failure is then the only restart inside it.
        threading.Event().wait(within * 1.5)
    assert sup.is_alive()
    assert sup.statistics().restarts == 3
    stop(sup)


@pytest.mark.shake
def test_backoff_doubles_with_each_restart_in_the_window() -> None:
    backoff = 0.02
    h = Harness(1)
    sup = Supervisor([h.factory(0)], backoff=backoff, max_restarts=3, within=3600)
    sup.start()
    h.wait_logged(("start", 0, 0))
    gaps = []
    for gen in range(3):
        failed_at = time.monotonic()
        h.tell(0, "fail")
        h.wait_logged(("start", 0, gen + 1))
        gaps.append(time.monotonic() - failed_at)
    # Lower bounds only (a loaded machine can only make the gaps longer).
    assert [g >= backoff * 2**k for k, g in enumerate(gaps)] == [True] * 3
    stop(sup)


@pytest.mark.shake
def test_cancelling_during_the_backoff_stops_at_once() -> None:
    h = Harness(2)
    sup = Supervisor(h.factories(), backoff=3600)
    sup.start()
    h.wait_logged(("start", 0, 0), ("start", 1, 0))
    h.tell(0, "fail")
    h.wait_logged(("end", 0, 0))
    stop(sup)  # returns long before the hour of backoff
    assert h.generations() == [1, 1]


# -- factories --------------------------------------------------------------------------------


@pytest.mark.shake
@pytest.mark.parametrize("problem", ["raises", "not a thread", "same thread twice"])
def test_a_broken_factory_counts_as_a_failure_of_its_child(
    problem: str, excepthook: list[threading.ExceptHookArgs]
) -> None:
    calls = 0
    same: ManagedThread[None] = ManagedThread()  # returns at once: a permanent child restarts

    def factory() -> Any:
        nonlocal calls
        calls += 1
        if problem == "raises":
            raise LookupError(f"call {calls}")
        if problem == "not a thread":
            return "thread"
        return same

    sup = Supervisor([ChildSpec(factory, name="bad")], max_restarts=2, backoff=0, name="sup")
    sup.start()
    sup.join(WAIT)
    assert sup.state is ThreadState.FAILED
    exc = sup.exception()
    if problem == "raises":
        assert isinstance(exc, LookupError)
        assert str(exc) == "call 3"
        assert calls == 3
    elif problem == "not a thread":
        assert isinstance(exc, TypeError)
        assert str(exc) == "the factory of child 'bad' must return a ManagedThread, got 'thread'"
        assert calls == 3
    else:
        assert isinstance(exc, RuntimeError)
        assert str(exc) == (
            f"the factory of child 'bad' returned {same!r}, which was already started or is "
            "owned elsewhere; it must return a new thread each time"
        )
        assert calls == 3  # the first call's thread ran; the next two calls returned it again
        assert same.state is ThreadState.SUCCEEDED
    assert len(excepthook) == 1


# -- stopping, nesting, daemons ---------------------------------------------------------------


@pytest.mark.shake
def test_a_child_that_ignores_cancellation_is_abandoned_after_grace(
    caplog: pytest.LogCaptureFixture, release: threading.Event
) -> None:
    entered = threading.Event()

    def stubborn() -> None:
        entered.set()
        assert release.wait(WAIT)

    t: ManagedThread[None] = ManagedThread(target=stubborn, name="stubborn")
    sup = Supervisor([ChildSpec(lambda: t, name="mule")], grace=0.01, name="sup")
    sup.start()
    assert entered.wait(WAIT)
    with caplog.at_level(logging.WARNING, logger="threadkit.supervisor"):
        stop(sup)  # does not wait for the stubborn child beyond its grace
    assert t.is_alive()
    assert [r.getMessage() for r in caplog.records] == [
        "supervisor 'sup': abandoned child 'mule' (thread 'stubborn'): still running 0.01 s "
        "after being cancelled"
    ]
    release.set()
    t.join(WAIT)


@pytest.mark.shake
def test_child_failures_are_logged_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(1)
    with caplog.at_level(logging.INFO, logger="threadkit.supervisor"):
        sup = started(h, name="sup")
        h.tell(0, "fail")
        h.wait_logged(("start", 0, 1))
        stop(sup)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "supervisor 'sup': child 'child-0' (thread 'child0.0') failed; restarting 'child-0' in 0 s"
    )
    assert record.exc_info is not None
    assert record.exc_info[1] is h.errors[0, 0]


@pytest.mark.shake
def test_supervisors_nest_and_a_failed_subtree_is_replaced_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(2)
    inner: list[Supervisor] = []

    def subtree() -> Supervisor:
        sup = Supervisor(h.factories(), max_restarts=0, backoff=0, name=f"inner{len(inner)}")
        inner.append(sup)
        return sup

    outer = Supervisor([subtree], backoff=0, name="outer")
    outer.start()
    h.wait_logged(("start", 0, 0), ("start", 1, 0))
    h.tell(0, "fail")  # the inner supervisor gives up; the outer one replaces it
    h.wait_logged(("start", 0, 1), ("start", 1, 1))
    assert inner[0].state is ThreadState.FAILED
    assert inner[0].exception() is h.errors[0, 0]
    assert inner[0] not in registered_daemons()  # owned by outer, not by the exit hook
    assert outer.statistics().children[0].restarts == 1
    stop(outer)
    # Cancelling the outer supervisor stops the inner one, which stops its children in order.
    assert inner[1].state is ThreadState.CANCELLED
    assert h.since(("start", 1, 1))[-2:] == [("end", 1, 1), ("end", 0, 1)]


@pytest.mark.shake
def test_a_daemon_supervisor_is_shut_down_gracefully_with_the_other_daemons() -> None:
    h = Harness(2)
    sup = started(h)
    assert sup in registered_daemons()
    assert not set(h.threads[0] + h.threads[1]) & set(registered_daemons())
    assert threadkit.shutdown_daemons() == []
    assert sup.state is ThreadState.CANCELLED
    assert h.since(("start", 1, 0))[-2:] == [("end", 1, 0), ("end", 0, 0)]
    assert sup not in registered_daemons()


def test_start_twice_is_a_runtime_error() -> None:
    sup = Supervisor([])
    sup.start()
    sup.join(WAIT)
    with pytest.raises(RuntimeError, match=exactly("threads can only be started once")):
        sup.start()


def test_the_supervisor_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "background_supervisor.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr
    # docs/background.md shows this output right after including the example.
    page = (ROOT / "docs" / "background.md").read_text()
    shown = page.split("../examples/background_supervisor.py", 1)[1].split("```text\n", 1)[1]
    assert shown.split("\n```", 1)[0] == result.stdout.rstrip("\n")
    assert result.stdout.splitlines() == [
        "connection 1: open",
        "consumer 1: started",
        "connection 1: closed",
        "consumer 1: stopped",  # rest_for_one: the consumer is stopped and restarted too
        "connection 2: open",
        "consumer 2: started",
        "consumer 2: stopped",  # cancelling root: reverse order all the way down
        "connection 2: closed",
        "root: cancelled",
        "connection: 1 restart(s), last error ConnectionError('connection 1 lost')",
        "consumer: 1 restart(s), last error None",
    ]
    assert result.stderr.startswith(
        "ERROR threadkit.supervisor: supervisor 'pipeline': child 'connection' (thread "
        "'connection-1') failed; restarting 'connection', 'consumer' in 0.05 s\n"
    )
    assert result.stderr.endswith("ConnectionError: connection 1 lost\n")
