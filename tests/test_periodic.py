"""Tests for PeriodicThread: the fixed-rate schedule, stop/cancel, on_error and statistics."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from threadkit import Cancelled, PeriodicStatistics, PeriodicThread, ThreadState
from threadkit._daemon import _Schedule, registered_daemons

#: A ceiling for waits on events that must happen; never a timing assertion.
WAIT = 10.0
ROOT = Path(__file__).resolve().parent.parent


class Ticker:
    """A tick function that counts its calls and lets the test wait for the n-th one."""

    def __init__(self, action: Callable[[int], object] | None = None) -> None:
        self.cond = threading.Condition()
        self.calls = 0
        self.times: list[float] = []
        self.action = action

    def __call__(self) -> None:
        with self.cond:
            self.calls += 1
            self.times.append(time.monotonic())
            n = self.calls
            self.cond.notify_all()
        if self.action is not None:
            self.action(n)

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls >= n, WAIT), f"only {self.calls} calls"


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


@pytest.fixture
def excepthook(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Capture what threads report to threading.excepthook (pytest would fail the test)."""
    calls: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", calls.append)
    return calls


# -- the schedule arithmetic, without threads -----------------------------------------------


@given(
    start=st.integers(0, 10**6),
    interval=st.integers(1, 1000),
    first=st.sampled_from([0, 1]),
    steps=st.lists(
        # (how late the thread wakes up after the due time, how long the call takes)
        st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
        max_size=40,
    ),
)
def test_schedule_runs_on_the_grid_skips_missed_ticks_and_never_bunches(
    start: int, interval: int, first: int, steps: list[tuple[int, int]]
) -> None:
    # Integer-valued floats keep the arithmetic exact, so the properties can be exact too.
    schedule = _Schedule(float(start), float(interval), first)
    now = float(start)
    ran: list[int] = []
    for late, duration in steps:
        due = schedule.due()
        assert due > now or not ran  # never due at or before the end of the previous tick
        woke = max(now, due) + late
        index = schedule.begin(woke)
        tick_due = start + index * interval
        # On the grid, at most one interval late, never an earlier slot than the one due.
        assert tick_due <= woke < tick_due + interval
        assert index >= (ran[-1] + 1 if ran else first)
        ran.append(index)
        now = woke + duration
        schedule.end(now)
        assert schedule.due() > now
        # Every slot from the first to the next one either ran or was counted as an overrun.
        assert schedule.overruns == schedule.next - first - len(ran)


def test_schedule_example_a_long_tick_skips_the_slots_it_covered() -> None:
    schedule = _Schedule(100.0, 10.0, 0)
    assert schedule.begin(100.0) == 0
    schedule.end(145.0)  # slots 1 to 4 passed while tick 0 ran
    assert (schedule.next, schedule.overruns, schedule.due()) == (5, 4, 150.0)
    assert schedule.begin(150.5) == 5
    schedule.end(151.0)
    assert (schedule.next, schedule.overruns) == (6, 4)
    assert schedule.begin(181.0) == 8  # woken far too late: runs the current slot's tick
    assert schedule.overruns == 6


def test_schedule_with_a_subnormal_interval_counts_its_slots_exactly() -> None:
    # 0.5 / 5e-324 overflows a float; the slot index (2**1073) does not overflow an int.
    schedule = _Schedule(100.0, 5e-324, 1)
    assert schedule.due() == 100.0  # start + 5e-324 rounds to start
    assert schedule.begin(100.5) == 2**1073
    assert schedule.overruns == 2**1073 - 1
    schedule.end(100.5)
    assert schedule.next == 2**1073 + 1
    assert schedule.due() == 100.5  # the index is past the float range, the product is not
    assert schedule.begin(101.0) == 2**1074
    schedule.end(101.0)
    assert schedule.overruns == schedule.next - 1 - 2


# -- argument checks --------------------------------------------------------------------------


def _noop() -> None:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0, _noop), {}, ValueError, "interval must be a finite number of seconds > 0, got 0"),
        ((-1.0, _noop), {}, ValueError, "interval must be >= 0, got -1.0"),
        (
            (float("inf"), _noop),
            {},
            ValueError,
            "interval must be a finite number of seconds > 0, got inf",
        ),
        ((float("nan"), _noop), {}, ValueError, "interval must be >= 0, got nan"),
        ((True, _noop), {}, TypeError, "interval must be a number of seconds, got True"),
        (("1", _noop), {}, TypeError, "interval must be a number of seconds, got '1'"),
        ((1.0, 42), {}, TypeError, "fn must be callable, got 42"),
        ((1.0, _noop), {"name": 3}, TypeError, "name must be a str or None, got 3"),
        (
            (1.0, _noop),
            {"on_error": "ignore"},
            ValueError,
            "on_error must be 'log', 'stop' or a callable, got 'ignore'",
        ),
        (
            (1.0, _noop),
            {"on_error": None},
            TypeError,
            "on_error must be 'log', 'stop' or a callable, got None",
        ),
        (
            (1.0, _noop),
            {"run_immediately": 1},
            TypeError,
            "run_immediately must be a bool, got 1",
        ),
        ((1.0, _noop), {"daemon": None}, TypeError, "daemon must be a bool, got None"),
        ((1.0, _noop), {"grace": -1}, ValueError, "grace must be >= 0, got -1"),
        (
            (1.0, _noop),
            {"grace": float("inf")},
            ValueError,
            "grace must be a finite number of seconds, got inf",
        ),
    ],
)
def test_bad_arguments_are_rejected_before_any_thread_starts(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=exactly(message)):
        PeriodicThread(*args, **kwargs)
    assert threading.active_count() == before


def test_stop_timeout_is_checked() -> None:
    t = PeriodicThread(1.0, _noop)
    with pytest.raises(ValueError, match=exactly("timeout must be >= 0, got -1")):
        t.stop(timeout=-1)


# -- running ----------------------------------------------------------------------------------


@pytest.mark.shake
def test_ticks_until_stopped_then_succeeds_with_the_final_statistics() -> None:
    ticker = Ticker()
    t = PeriodicThread(0.001, ticker, name="ticker")
    assert t.daemon
    assert t.state is ThreadState.CREATED
    t.start()
    ticker.wait_for(5)
    t.stop()
    assert t.state is ThreadState.SUCCEEDED
    stats = t.result()
    assert stats is t.statistics()
    assert stats.ticks == ticker.calls >= 5
    assert (stats.errors, stats.last_error) == (0, None)


@pytest.mark.shake
def test_stop_wakes_the_thread_instead_of_waiting_for_the_interval() -> None:
    # With an hour between ticks, stop() can only return in time if the wait is interruptible.
    ticker = Ticker()
    t = PeriodicThread(3600, ticker)
    t.start()
    ticker.wait_for(1)
    t.stop(timeout=WAIT)
    assert t.result().ticks == 1


@pytest.mark.shake
def test_ticks_are_never_early_and_run_immediately_false_skips_tick_zero() -> None:
    interval = 0.02
    ticker = Ticker(lambda n: t.stop() if n == 3 else None)
    t = PeriodicThread(interval, ticker, run_immediately=False)
    before = time.monotonic()
    t.start()
    t.join(WAIT)
    assert t.result().ticks == 3
    # Tick k (k >= 1 here) is due at start + k * interval, and start >= before: a lower bound
    # that holds however loaded the machine is.
    for k, at in enumerate(ticker.times, start=1):
        assert at >= before + k * interval


@pytest.mark.shake
def test_a_long_tick_skips_the_slots_it_covered_instead_of_bunching_them() -> None:
    interval = 0.01

    def action(n: int) -> None:
        if n == 1:
            # The first call lasts at least 4.5 intervals: slots 1 to 4 pass meanwhile.
            threading.Event().wait(4.5 * interval)
        else:
            t.stop()

    t = PeriodicThread(interval, Ticker(action))
    t.start()
    t.join(WAIT)
    stats = t.result()
    # Bunching would run the missed ticks back to back: 0 overruns and more ticks.
    assert stats.ticks == 2
    assert stats.overruns >= 4


def test_stop_before_start_ends_at_once_without_a_tick() -> None:
    ticker = Ticker()
    t = PeriodicThread(0.001, ticker)
    t.stop()
    t.stop()  # idempotent
    t.start()
    t.join(WAIT)
    assert t.state is ThreadState.SUCCEEDED
    assert t.result() == PeriodicStatistics(ticks=0)
    assert ticker.calls == 0
    t.stop()


@pytest.mark.shake
def test_stop_from_inside_the_tick_does_not_deadlock() -> None:
    def tick() -> None:
        t.stop()

    t = PeriodicThread(0.001, tick)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    assert t.result().ticks == 1


@pytest.mark.shake
def test_stop_lets_the_tick_in_progress_finish_and_times_out_meanwhile() -> None:
    entered, release = threading.Event(), threading.Event()

    def tick() -> None:
        entered.set()
        assert release.wait(WAIT)

    t = PeriodicThread(3600, tick, name="slow")
    t.start()
    assert entered.wait(WAIT)
    with pytest.raises(
        TimeoutError, match=exactly("periodic thread 'slow' did not stop within 0.01 seconds")
    ):
        t.stop(timeout=0.01)
    assert not t.token.cancelled  # stop() does not cancel the tick
    release.set()
    t.stop()
    assert t.state is ThreadState.SUCCEEDED
    assert t.result().ticks == 1


def test_a_stop_interrupted_by_ctrl_c_does_not_make_the_next_stop_return_early() -> None:
    """Regression: stop() waited with join(), which on 3.11 and 3.12 marks a still-running
    thread as stopped when a Ctrl-C interrupts it (python/cpython#90882): the next stop()
    returned at once, the tick still running, and is_alive() said False."""
    entered, release = threading.Event(), threading.Event()

    def tick() -> None:
        entered.set()
        assert release.wait(WAIT)

    t = PeriodicThread(3600, tick, name="interrupted")
    t.start()
    assert entered.wait(WAIT)
    stop_code = PeriodicThread.stop.__code__
    landed: list[str] = []

    def ctrl_c_in_the_wait(frame: FrameType, event: str, arg: object) -> None:
        # The Ctrl-C lands in the blocking call stop() makes to wait for the thread: a
        # profile function that raises aborts that call, as a signal handler would.
        name = getattr(arg, "__name__", None)
        if event != "c_call" or name not in ("acquire", "join") or not t._tk_stop_token.cancelled:
            return
        caller: FrameType | None = frame
        while caller is not None and caller.f_code is not stop_code:
            caller = caller.f_back  # this thread's own frames
        if caller is not None:
            sys.setprofile(None)
            landed.append(f"{frame.f_code.co_name}: {name}")
            raise KeyboardInterrupt

    sys.setprofile(ctrl_c_in_the_wait)
    try:
        with pytest.raises(KeyboardInterrupt):
            t.stop()
    finally:
        sys.setprofile(None)
    assert landed, "stop() never waited"
    assert t.is_alive()
    with pytest.raises(
        TimeoutError,
        match=exactly("periodic thread 'interrupted' did not stop within 0.01 seconds"),
    ):
        t.stop(timeout=0.01)  # the tick cannot end: release is not set
    release.set()
    t.stop()
    assert t.state is ThreadState.SUCCEEDED
    assert not t.is_alive()
    assert t.result().ticks == 1


@pytest.mark.shake
def test_cancel_reaches_the_tick_in_progress_and_ends_cancelled() -> None:
    entered = threading.Event()

    def tick() -> None:
        entered.set()
        assert threadkit.current_token().wait(WAIT)
        threadkit.check_cancelled()

    t = PeriodicThread(3600, tick)
    t.start()
    assert entered.wait(WAIT)
    t.cancel("enough")
    t.join(WAIT)
    assert t.state is ThreadState.CANCELLED
    with pytest.raises(Cancelled, match="enough"):
        t.result()
    assert t.statistics() == PeriodicStatistics(ticks=1)


@pytest.mark.shake
def test_cancel_between_ticks_ends_cancelled_even_after_stop() -> None:
    ticker = Ticker()
    t = PeriodicThread(3600, ticker)
    t.start()
    ticker.wait_for(1)
    t.cancel()
    t.stop(timeout=WAIT)  # cancellation wins over stop()
    assert t.state is ThreadState.CANCELLED
    assert isinstance(t.exception(), Cancelled)


@pytest.mark.shake
def test_on_error_log_logs_counts_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    errors = [ValueError("first"), ValueError("second")]

    def action(n: int) -> None:
        if n <= 2:
            raise errors[n - 1]
        if n == 4:
            t.stop()

    t = PeriodicThread(0.001, Ticker(action), name="flaky")
    with caplog.at_level(logging.ERROR, logger="threadkit.daemon"):
        t.start()
        t.join(WAIT)
    stats = t.result()
    assert (stats.ticks, stats.errors) == (4, 2)
    assert stats.last_error is errors[1]
    # Tick indices, not call counts: under load a slot may be skipped between the two calls.
    matches = [
        re.fullmatch(r"periodic thread 'flaky': tick (\d+) failed", r.getMessage())
        for r in caplog.records
    ]
    assert len(matches) == 2
    assert all(matches)
    first, second = (int(m.group(1)) for m in matches if m)
    assert first < second
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == errors


@pytest.mark.shake
def test_on_error_stop_fails_the_thread_with_that_error(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    error = ValueError("broken")

    def tick() -> None:
        raise error

    t = PeriodicThread(0.001, tick, on_error="stop")
    t.start()
    t.join(WAIT)
    assert t.state is ThreadState.FAILED
    with pytest.raises(ValueError, match=exactly("broken")) as info:
        t.result()
    assert info.value is error
    assert t.statistics() == PeriodicStatistics(ticks=1, errors=1, last_error=error)
    # A standalone thread's error reaches threading.excepthook, as for any thread.
    assert [(a.exc_value, a.thread) for a in excepthook] == [(error, t)]


@pytest.mark.shake
def test_on_error_callable_sees_each_error_and_can_end_the_thread(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    seen: list[Exception] = []

    def handler(exc: Exception) -> None:
        seen.append(exc)
        if len(seen) == 3:
            raise RuntimeError("three strikes") from exc

    def tick() -> None:
        raise KeyError(len(seen))

    t = PeriodicThread(0.001, tick, on_error=handler)
    t.start()
    t.join(WAIT)
    assert t.state is ThreadState.FAILED
    exc = t.exception()
    assert isinstance(exc, RuntimeError)
    assert str(exc) == "three strikes"
    assert [type(e) for e in seen] == [KeyError] * 3
    stats = t.statistics()
    assert (stats.ticks, stats.errors, stats.last_error) == (3, 3, seen[-1])
    assert [a.exc_value for a in excepthook] == [exc]


def test_a_base_exception_from_fn_ends_the_thread_and_counts_the_tick(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    def tick() -> None:
        raise KeyboardInterrupt

    t = PeriodicThread(0.001, tick, on_error="log")
    t.start()
    t.join(WAIT)
    assert t.state is ThreadState.FAILED
    assert isinstance(t.exception(), KeyboardInterrupt)
    assert t.statistics() == PeriodicStatistics(ticks=1)
    assert len(excepthook) == 1


def test_statistics_are_frozen() -> None:
    stats = PeriodicThread(1.0, _noop).statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.ticks = 3  # type: ignore[misc]


def test_names_and_thread_behaviour() -> None:
    t = PeriodicThread(1.0, _noop)
    assert re.fullmatch(r"Thread-\d+ \(_noop\)", t.name)
    assert PeriodicThread(1.0, _noop, name="beat").name == "beat"
    assert isinstance(t, threading.Thread)
    assert not PeriodicThread(1.0, _noop, daemon=False).daemon
    assert PeriodicThread.__module__ == "threadkit"


def test_start_twice_is_a_runtime_error() -> None:
    t = PeriodicThread(3600, _noop)
    t.start()
    try:
        with pytest.raises(RuntimeError, match=exactly("threads can only be started once")):
            t.start()
    finally:
        t.stop(timeout=WAIT)
    with pytest.raises(RuntimeError, match=exactly("threads can only be started once")):
        t.start()


@pytest.mark.shake
def test_a_daemon_periodic_thread_is_registered_until_it_ends() -> None:
    ticker = Ticker()
    daemon = PeriodicThread(3600, ticker)
    plain = PeriodicThread(3600, ticker, daemon=False)
    daemon.start()
    plain.start()
    try:
        assert daemon in registered_daemons()
        assert plain not in registered_daemons()
        assert threadkit.shutdown_daemons(timeout=WAIT) == []
        assert daemon.state is ThreadState.CANCELLED
        assert plain.is_alive()  # not a registered daemon: not shut down
    finally:
        plain.stop(timeout=WAIT)
    assert daemon not in registered_daemons()


@pytest.mark.shake
def test_args_are_passed_and_the_token_is_the_threads() -> None:
    seen: list[tuple[int, str, bool]] = []

    def tick(a: int, b: str) -> None:
        seen.append((a, b, threadkit.current_token() is t.token))
        t.stop()

    t = PeriodicThread(0.001, tick, 1, "x")
    t.start()
    t.join(WAIT)
    assert seen == [(1, "x", True)]


def test_the_periodic_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "background_periodic.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == [f"reading {n}: {20.0 + n}" for n in (0, 2, 3, 4, 5)]
    # The thread may tick once more between the fifth reading and stop(); overruns need load.
    match = re.fullmatch(
        r"stopped after (\d+) ticks, (\d+) overruns, 1 error: sensor offline", lines[5]
    )
    assert match is not None, lines
    assert int(match.group(1)) >= 6
    assert len(lines) == 6
    assert re.search(
        r"ERROR threadkit.daemon: periodic thread 'poller': tick \d+ failed", result.stderr
    )
    assert "ValueError: sensor offline" in result.stderr
