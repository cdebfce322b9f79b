"""ThreadGroup: joining, sibling cancellation, exception groups, timeouts, nesting, Ctrl-C."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from threadkit import Cancelled, CancelToken, ThreadGroup, ThreadState

pytestmark = pytest.mark.shake

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wait_for_cancel() -> None:
    threadkit.sleep(120)


def fail(message: str) -> None:
    raise ValueError(message)


def test_block_joins_every_task() -> None:
    with ThreadGroup(name="g") as g:
        a = g.spawn(pow, 2, 5)
        b = g.spawn(functools.partial(int, "11", base=2), name="b")
    assert not a.is_alive()
    assert not b.is_alive()
    assert (a.result(), b.result()) == (32, 3)
    assert a.name == "g-0"
    assert b.name == "b"
    assert a.daemon


def test_failure_cancels_siblings_and_raises_group() -> None:
    started = threading.Barrier(2)

    def waiter() -> None:
        started.wait()
        wait_for_cancel()

    def failer() -> None:
        started.wait()
        fail("first")

    with pytest.raises(ExceptionGroup) as info, ThreadGroup(name="g") as g:
        w = g.spawn(waiter)
        g.spawn(failer)
    assert str(info.value) == "1 task(s) of thread group 'g' failed (1 sub-exception)"
    (exc,) = info.value.exceptions
    assert isinstance(exc, ValueError)
    assert str(exc) == "first"
    assert w.state is ThreadState.CANCELLED
    assert w.token.reason == "sibling task 'g-1' failed"


def test_all_failures_are_reported_in_spawn_order() -> None:
    gate = threading.Barrier(3)

    def failer(message: str) -> None:
        gate.wait()  # all three fail; none is cancelled before it raises
        fail(message)

    with pytest.raises(ExceptionGroup) as info, ThreadGroup() as g:
        for m in ("a", "b", "c"):
            g.spawn(failer, m)
    assert [str(e) for e in info.value.exceptions] == ["a", "b", "c"]


def test_base_exception_failure_makes_base_exception_group() -> None:
    def exit_() -> None:
        raise SystemExit(3)

    with pytest.raises(BaseExceptionGroup) as info, ThreadGroup() as g:
        g.spawn(exit_)
    assert not isinstance(info.value, ExceptionGroup)
    assert isinstance(info.value.exceptions[0], SystemExit)


def test_body_exception_cancels_and_joins_then_propagates() -> None:
    started = threading.Event()

    def waiter() -> None:
        started.set()
        wait_for_cancel()

    with pytest.raises(KeyError, match="body"):
        with ThreadGroup() as g:
            w = g.spawn(waiter)
            started.wait()
            raise KeyError("body")
    assert not w.is_alive()
    assert w.state is ThreadState.CANCELLED


def test_body_error_and_task_failure_are_both_raised() -> None:
    with pytest.raises(ExceptionGroup) as info:
        with ThreadGroup() as g:
            t = g.spawn(fail, "task")
            t.join()
            raise KeyError("body")
    assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]


def test_body_seeing_group_cancellation_raises_only_the_failures() -> None:
    with pytest.raises(ExceptionGroup) as info:
        with ThreadGroup() as g:
            g.spawn(fail, "task")
            threadkit.sleep(120)  # woken by the group's cancellation
    assert [str(e) for e in info.value.exceptions] == ["task"]


def test_current_token_in_body_is_group_token_and_restored() -> None:
    outside = threadkit.current_token()
    seen: list[CancelToken] = []
    started = threading.Event()

    def task() -> None:
        seen.append(threadkit.current_token())
        started.set()
        wait_for_cancel()

    with ThreadGroup() as g:
        assert threadkit.current_token() is g.token
        t = g.spawn(task)
        started.wait()
        g.cancel()  # a task's token is a child of the group's
    assert threadkit.current_token() is outside
    assert seen == [t.token]
    assert t.state is ThreadState.CANCELLED


def test_timeout_while_waiting_at_end_of_block() -> None:
    with pytest.raises(TimeoutError, match=r"^thread group 'slow' timed out after 0\.05 seconds$"):
        with ThreadGroup(name="slow", timeout=0.05) as g:
            t = g.spawn(wait_for_cancel)
    assert t.state is ThreadState.CANCELLED


def test_timeout_while_body_still_running() -> None:
    with pytest.raises(TimeoutError), ThreadGroup(timeout=0.05) as g:
        g.spawn(wait_for_cancel)
        threadkit.sleep(120)  # the body itself is woken by the deadline


def test_no_timeout_error_when_finished_in_time() -> None:
    with ThreadGroup(timeout=60) as g:
        t = g.spawn(int, "5")
    assert t.result() == 5


def test_cancel_method_cancels_tasks_without_error() -> None:
    started = threading.Event()

    def waiter() -> None:
        started.set()
        wait_for_cancel()

    with ThreadGroup() as g:
        t = g.spawn(waiter)
        started.wait()
        g.cancel("enough")
        g.cancel()  # idempotent
    assert t.state is ThreadState.CANCELLED
    assert t.token.reason == "enough"


def test_cancelling_one_task_is_not_a_failure() -> None:
    started = threading.Event()

    def waiter() -> None:
        started.set()
        wait_for_cancel()

    with ThreadGroup() as g:
        t = g.spawn(waiter)
        other = g.spawn(int, "1")
        started.wait()
        t.cancel()
    assert t.state is ThreadState.CANCELLED
    assert other.result() == 1
    assert not g.token.cancelled


def test_parent_token_cancellation_raises_cancelled() -> None:
    parent = CancelToken()
    started = threading.Event()

    def outer() -> None:
        with ThreadGroup() as g:

            def waiter() -> None:
                started.set()
                wait_for_cancel()

            g.spawn(waiter)

    runner: threadkit.ManagedThread[None] = threadkit.ManagedThread(target=outer, token=parent)
    runner.start()
    started.wait()
    parent.cancel("from above")
    exc = runner.exception()
    assert isinstance(exc, Cancelled)
    assert exc.reason == "from above"


def test_nested_groups_cancel_inner_when_outer_fails() -> None:
    inner_started = threading.Event()
    inner_tasks: list[threadkit.ManagedThread[None]] = []

    def inner_group() -> None:
        with ThreadGroup(name="inner") as inner:
            inner_tasks.append(inner.spawn(wait_for_cancel))
            inner_started.set()

    def failer() -> None:
        inner_started.wait()
        fail("outer task")

    with pytest.raises(ExceptionGroup) as info, ThreadGroup(name="outer") as g:
        g.spawn(inner_group)
        g.spawn(failer)
    assert [str(e) for e in info.value.exceptions] == ["outer task"]
    assert inner_tasks[0].state is ThreadState.CANCELLED


def test_spawn_into_closed_group_is_runtime_error() -> None:
    with ThreadGroup(name="done") as g:
        pass
    with pytest.raises(
        RuntimeError, match=r"^cannot spawn into thread group 'done': it is closed$"
    ):
        g.spawn(int)


def test_spawn_before_enter_and_reuse_are_runtime_errors() -> None:
    g = ThreadGroup()
    with pytest.raises(
        RuntimeError, match=r"^cannot spawn into a thread group before entering it$"
    ):
        g.spawn(int)
    with g:
        pass
    with pytest.raises(
        RuntimeError, match=r"^thread groups are not reusable; make a new ThreadGroup$"
    ):
        g.__enter__()


def test_spawn_from_a_task_while_group_open() -> None:
    results: list[int] = []
    with ThreadGroup() as g:

        def parent() -> None:
            results.append(g.spawn(int, "4").result())

        g.spawn(parent)
    assert results == [4]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError) as info:
        ThreadGroup(name=1)  # type: ignore[arg-type]
    assert str(info.value) == "name must be a str or None, got 1"
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, got -1$"):
        ThreadGroup(timeout=-1)
    with pytest.raises(TypeError, match=r"^timeout must be a number of seconds, got '3'$"):
        ThreadGroup(timeout="3")  # type: ignore[arg-type]
    with ThreadGroup() as g:
        with pytest.raises(TypeError, match=r"^fn must be callable, got 'nope'$"):
            g.spawn("nope")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^name must be a str or None, got 2$"):
            g.spawn(int, name=2)  # type: ignore[arg-type]
        assert threading.active_count() >= 1
    assert g._threads == []


def test_task_ignoring_timeout_is_abandoned_with_resource_warning() -> None:
    release = threading.Event()
    with pytest.warns(ResourceWarning, match=r"abandoned 1 task\(s\) .*'stubborn'"):
        with pytest.raises(TimeoutError), ThreadGroup(timeout=0.01, grace=0.01) as g:
            t = g.spawn(release.wait, name="stubborn")
    assert t.is_alive()
    release.set()
    t.join()


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    import threadkit

    def task():
        threadkit.sleep(30)

    try:
        with threadkit.ThreadGroup() as g:
            for _ in range(4):
                g.spawn(task)
            print("ready", flush=True)
    except KeyboardInterrupt:
        print("interrupted", threading.active_count(), flush=True)
        sys.exit(0)
    """
)


def test_ctrl_c_cancels_tasks_and_raises_keyboard_interrupt() -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0
    # All four tasks noticed the cancellation: only the main thread is left.
    assert out.strip() == "interrupted 1"
    assert elapsed < 10  # generous: it is milliseconds, but machines are noisy


@given(plan=st.lists(st.sampled_from(["ok", "fail", "observe", "ignore"]), min_size=0, max_size=8))
def test_group_outcomes_for_any_mix_of_tasks(plan: list[str]) -> None:
    """The raised group holds exactly the failures; no task outlives the block."""
    all_started = threading.Barrier(len(plan) + 1)

    def task(i: int, kind: str) -> int:
        all_started.wait()
        if kind == "fail":
            raise ValueError(f"task {i}")
        if kind == "observe":
            threadkit.sleep(0.001)
        return i

    raised: BaseException | None = None
    threads: list[threadkit.ManagedThread[int]] = []
    try:
        with ThreadGroup() as g:
            threads = [g.spawn(task, i, kind) for i, kind in enumerate(plan)]
            all_started.wait()
    except ExceptionGroup as eg:
        raised = eg
    assert all(not t.is_alive() for t in threads)
    expected_failures = [f"task {i}" for i, kind in enumerate(plan) if kind == "fail"]
    if expected_failures:
        assert isinstance(raised, ExceptionGroup)
        assert [str(e) for e in raised.exceptions] == expected_failures
    else:
        assert raised is None
    for i, (t, kind) in enumerate(zip(threads, plan, strict=True)):
        if kind == "fail":
            assert t.state is ThreadState.FAILED
        elif kind == "observe" and expected_failures:
            # It may finish its short sleep before or after a sibling's failure cancels it.
            assert t.state in (ThreadState.SUCCEEDED, ThreadState.CANCELLED)
        else:  # "ok", and "ignore" which never looks at its token
            assert t.state is ThreadState.SUCCEEDED
            assert t.result() == i


def test_ctrl_c_keeps_earlier_task_failures_as_context() -> None:
    main = threading.main_thread().ident
    assert main is not None
    never = threading.Event()

    with pytest.raises(KeyboardInterrupt) as info:
        with ThreadGroup() as g:
            failed = g.spawn(fail, "before the interrupt")
            # Interrupt the body once the failure is recorded.
            sender = threading.Thread(
                target=lambda: (failed.exception(), signal.pthread_kill(main, signal.SIGINT))
            )
            sender.start()
            never.wait()
    sender.join()
    context = info.value.__context__
    assert isinstance(context, ExceptionGroup)
    assert [str(e) for e in context.exceptions] == ["before the interrupt"]


SECOND_CTRL_C_CHILD = textwrap.dedent(
    """
    import sys, threading
    import threadkit

    def stubborn():
        # Reports the cancellation, then ignores it.
        threadkit.current_token().on_cancel(lambda: print("cancelled", flush=True))
        threading.Event().wait()

    try:
        with threadkit.ThreadGroup(grace=60) as g:
            g.spawn(stubborn)
            print("ready", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    """
)


def test_second_ctrl_c_after_one_in_the_body_stops_waiting_at_once() -> None:
    # The child abandons its stubborn task with a ResourceWarning: keep it a warning even
    # when this suite runs with PYTHONWARNINGS=error.
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONWARNINGS": "default"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SECOND_CTRL_C_CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "cancelled"  # now in the 60 s grace period
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    elapsed = time.monotonic() - start
    assert out.strip() == "interrupted"
    assert proc.returncode == 0
    assert elapsed < 30  # far below the grace period: the second Ctrl-C did not wait it out


SIGINT_DURING_SPAWN_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import threadkit

    tasks = []

    def task():
        os.kill(os.getpid(), signal.SIGINT)  # lands while spawn() waits for this thread
        threadkit.sleep(30)
        print("never cancelled", flush=True)

    try:
        with threadkit.ThreadGroup() as g:
            tasks.append(g)
            g.spawn(task)
    except KeyboardInterrupt:
        (t,) = tasks[0]._threads
        print("interrupted", t.state.name, t.is_alive(), flush=True)
        sys.exit(0)
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_landing_inside_spawn_still_cancels_and_joins_the_task(attempt: int) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-c", SIGINT_DURING_SPAWN_CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interrupted CANCELLED False"
    assert proc.stderr == ""
