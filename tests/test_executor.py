"""Tests for fan_out and fan_out_and_join with executor=: thread, process and Dask pools."""

from __future__ import annotations

import contextvars
import functools
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest

import _executor_tasks as tasks
import threadkit
from threadkit import Cancelled, CancelToken, FanOutError, fan_out, fan_out_and_join
from threadkit._executor import _default_in_flight

#: A distributed.Client (untyped: Dask is optional, and its API is not fully typed).
Client = Any
P = ParamSpec("P")
T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
#: How long a test waits for something that happens at once unless the code is broken.
SAFETY = tasks.SAFETY


def _fan_threads() -> list[threading.Thread]:
    """Threads a fan-out would have started: named after the call (this module's calls are
    named "exec-..." or have the default name)."""
    return [t for t in threading.enumerate() if t.name.startswith(("fan_out-", "exec-"))]


@pytest.fixture(autouse=True)
def no_fan_out_thread() -> Iterator[None]:
    """The executor path starts no thread of its own, whatever the executor.

    The Dask tests are marked allow_threads (Dask starts and stops threads of its own, at
    its own pace), so this is their leak check.
    """
    yield
    assert _fan_threads() == []


# -- executors --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    # spawn, not fork: forking a process that runs threads is unsafe (deprecated from 3.12).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Start the pool's own threads now, before the first test's leak check looks.
        pool.submit(tasks.square, 0).result()
        yield pool


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    distributed = pytest.importorskip(
        "distributed", reason="Dask is not installed (pip install 'threadkit[dask]')"
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            # The scheduler's HTTP endpoint on any free port: with 8787 taken (another
            # cluster on the machine), Dask warns, and warnings are errors here.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def thread_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4, thread_name_prefix="pool") as pool:
        yield pool


@pytest.fixture(
    params=[
        pytest.param("threads", marks=pytest.mark.shake),
        "processes",
        pytest.param("dask", marks=pytest.mark.allow_threads),
    ]
)
def executor(request: pytest.FixtureRequest, process_pool: ProcessPoolExecutor) -> Executor:
    """Each real executor in turn: the shared suite runs against all of them."""
    if request.param == "threads":
        pool: ThreadPoolExecutor = request.getfixturevalue("thread_pool")
        return pool
    if request.param == "processes":
        return process_pool
    client: Client = request.getfixturevalue("dask_client")
    dask_executor: Executor = client.get_executor()
    return dask_executor


def _gate(tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """A file-based gate tasks in any process can wait on: its path and the opener."""
    path = tmp_path / "gate"
    return str(path), path.touch


def _wait_for_files(*paths: Path) -> None:
    deadline = time.monotonic() + SAFETY
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"tasks never started: {paths}"
        time.sleep(0.002)


# -- the shared suite: every executor ---------------------------------------------------------


def test_join_returns_results_in_input_order(executor: Executor) -> None:
    assert fan_out_and_join(tasks.square, range(60), executor=executor) == [
        x * x for x in range(60)
    ]


def test_stream_is_in_input_order_and_unordered_is_a_permutation(executor: Executor) -> None:
    squares = [x * x for x in range(40)]
    assert list(fan_out(tasks.square, iter(range(40)), executor=executor)) == squares
    unordered = fan_out_and_join(tasks.square, range(40), executor=executor, ordered=False)
    assert sorted(unordered) == squares
    streamed = fan_out(tasks.square, range(40), executor=executor, ordered=False)
    assert sorted(streamed) == squares


def test_join_of_nothing_submits_nothing(executor: Executor) -> None:
    assert fan_out_and_join(tasks.square, [], executor=executor) == []


def test_fail_fast_raises_fan_out_error_with_note_and_partial_results(executor: Executor) -> None:
    # One future in flight: item 4 is read only after item 3 has finished, and 3 fails.
    with pytest.raises(FanOutError) as info:
        fan_out_and_join(
            tasks.fail_on_three, range(6), executor=executor, max_workers=1, name="exec-t"
        )
    error = info.value
    assert error.message == "1 of 4 task(s) of fan-out 'exec-t' failed"
    (failure,) = error.exceptions
    assert isinstance(failure, ValueError)
    assert str(failure) == "bad item 3"
    assert failure.__notes__ == ["fan-out item 3: 3"]
    assert error.failed == {3: failure}
    assert error.results == [0, 1, 2, None]


def test_fail_fast_false_runs_everything_and_reports_every_failure(executor: Executor) -> None:
    with pytest.raises(FanOutError) as info:
        fan_out_and_join(
            tasks.key_error_every_ten,
            range(40),
            executor=executor,
            fail_fast=False,
            name="exec-all",
        )
    error = info.value
    assert error.message == "4 of 40 task(s) of fan-out 'exec-all' failed"
    assert list(error.failed) == [3, 13, 23, 33]
    assert [e.args[0] for e in error.exceptions] == [3, 13, 23, 33]
    assert [e.__notes__ for e in error.exceptions] == [
        [f"fan-out item {x}: {x}"] for x in (3, 13, 23, 33)
    ]
    assert error.results == [None if x % 10 == 3 else x for x in range(40)]


def test_stream_with_fail_fast_false_yields_the_rest_then_raises(executor: Executor) -> None:
    got: list[int] = []
    with pytest.raises(FanOutError) as info:
        for value in fan_out(tasks.fail_on_three, range(6), executor=executor, fail_fast=False):
            got.append(value)
    assert got == [0, 1, 2, 4, 5]
    assert info.value.results == []
    assert list(info.value.failed) == [3]


def test_error_from_items_propagates_unchanged(executor: Executor) -> None:
    error = RuntimeError("items broke")

    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise error

    with pytest.raises(RuntimeError) as info:
        fan_out_and_join(tasks.square, items(), executor=executor)
    assert info.value is error
    with pytest.raises(RuntimeError) as info:
        list(fan_out(tasks.square, items(), executor=executor))
    assert info.value is error


def test_on_progress_counts_every_task_in_the_callers_thread(executor: Executor) -> None:
    calls: list[tuple[int, int | None, str]] = []

    def on_progress(done: int, total: int | None) -> None:
        calls.append((done, total, threading.current_thread().name))

    fan_out_and_join(tasks.square, range(30), executor=executor, on_progress=on_progress)
    assert calls[-1][:2] == (30, 30)
    dones = [c[0] for c in calls]
    assert dones == sorted(dones)
    assert {c[2] for c in calls} == {threading.current_thread().name}
    calls.clear()
    list(fan_out(tasks.square, iter(range(7)), executor=executor, on_progress=on_progress))
    assert calls[-1][:2] == (7, None)


def test_timeout_raises_timeout_error(executor: Executor, tmp_path: Path) -> None:
    gate, open_gate = _gate(tmp_path)
    try:
        # The running tasks are abandoned after the grace period (with a ResourceWarning,
        # which the next test checks) on the pools whose running futures cannot be cancelled.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(
                TimeoutError, match=r"^fan-out 'exec-slow' timed out after 0.1 seconds$"
            ):
                fan_out_and_join(
                    functools.partial(tasks.hold, gate),
                    range(4),
                    executor=executor,
                    timeout=0.1,
                    grace=0.05,
                    name="exec-slow",
                )
    finally:
        open_gate()


def test_cancelled_call_cancels_what_it_can_and_abandons_running_tasks(
    executor: Executor, tmp_path: Path
) -> None:
    gate, open_gate = _gate(tmp_path)
    started = tmp_path / "started"
    started.mkdir()
    task = functools.partial(tasks.mark_and_hold, str(started), gate)

    def items(group: threadkit.ThreadGroup) -> Iterator[int]:
        yield 0
        yield 1
        # Read by the calling thread while tasks 0 and 1 run: cancel the call from outside.
        _wait_for_files(started / "0", started / "1")
        group.cancel("stop now")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with threadkit.ThreadGroup() as group:
                with pytest.raises(Cancelled, match=r"^stop now$"):
                    fan_out_and_join(
                        task,
                        items(group),
                        executor=executor,
                        max_workers=3,
                        grace=0.05,
                        name="exec-c",
                    )
    finally:
        open_gate()
    messages = [str(w.message) for w in caught]
    if "Client" in repr(executor):
        # Every future of a Dask ClientExecutor can be cancelled: the scheduler drops the tasks
        # (a task already running on a worker finishes there, its result unused).
        assert messages == []
    else:
        name = type(executor).__name__
        assert messages == [
            f"fan-out 'exec-c' abandoned 2 task(s) still running on {name} after 0.05 s: "
            "item 0 (0), item 1 (1)"
        ]
        assert caught[0].category is ResourceWarning
        assert caught[0].filename == __file__


def test_break_leaves_nothing_pending_on_the_executor(executor: Executor) -> None:
    recording = Recording(executor)
    read = 0

    def items() -> Iterator[int]:
        nonlocal read
        while True:
            read += 1
            yield read - 1

    # grace=SAFETY: the tasks still running at the break are quick; they are waited for.
    it = fan_out(tasks.square, items(), executor=recording, max_workers=3, grace=SAFETY)
    for value in it:
        if value == 16:
            break
    read_at_break = read
    it.close()
    # Nothing more is read once the loop has left, and nothing is left queued or running on
    # the executor: what had not started was cancelled, what had started has finished.
    assert read == read_at_break
    assert len(recording.futures) == read
    assert all(f.done() for f in recording.futures)


def test_progress_bar_on_stderr(executor: Executor, capsys: pytest.CaptureFixture[str]) -> None:
    assert fan_out_and_join(
        tasks.square, range(20), executor=executor, progress=True, name="exec-bar"
    ) == [x * x for x in range(20)]
    err = capsys.readouterr().err
    assert "exec-bar" in err
    assert "20/20" in err


def test_nothing_is_submitted_before_the_first_next(executor: Executor) -> None:
    recording = Recording(executor)
    it = fan_out(tasks.square, [1, 2], executor=recording)
    assert recording.futures == []
    assert next(it) == 1
    it.close()


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        (
            ProcessPoolExecutor,
            "executor must be a concurrent.futures.Executor or None, "
            "got <class 'concurrent.futures.process.ProcessPoolExecutor'>",
        ),
        ("dask", "executor must be a concurrent.futures.Executor or None, got 'dask'"),
    ],
)
def test_a_bad_executor_raises_type_error_before_anything_starts(
    executor: object, message: str
) -> None:
    read: list[int] = []

    def items() -> Iterator[int]:
        read.append(0)
        yield 0

    for function in (fan_out_and_join, fan_out):
        with pytest.raises(TypeError) as info:
            function(tasks.square, items(), executor=executor)  # type: ignore[arg-type]
        assert str(info.value) == message
    assert read == []


def test_max_workers_is_checked_with_an_executor(thread_pool: ThreadPoolExecutor) -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be >= 1, got 0$"):
        fan_out_and_join(tasks.square, [1], executor=thread_pool, max_workers=0)


# -- how many futures are in flight --------------------------------------------------------------


class InlineExecutor(Executor):
    """Runs each task inside submit(): every future is done when the call gets it."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None:
            self._max_workers = workers

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class Recording(Executor):
    """Hands tasks to another executor and keeps their futures."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future = self.inner.submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def _most_in_flight(executor: Executor, max_workers: int | None = None) -> int:
    """The most futures submitted and not yet seen finished when the call read an item."""
    done = 0
    in_flight: list[int] = []

    def on_progress(finished: int, _: int | None) -> None:
        nonlocal done
        done = finished

    def items() -> Iterator[int]:
        for k in range(200):
            in_flight.append(k - done)  # futures 0..k-1 submitted, `done` of them finished
            yield k

    fan_out_and_join(
        tasks.square, items(), executor=executor, max_workers=max_workers, on_progress=on_progress
    )
    return max(in_flight) + 1  # with the one submitted for the item just read


def test_max_workers_bounds_the_futures_in_flight() -> None:
    assert _most_in_flight(InlineExecutor(), max_workers=3) == 3
    assert _most_in_flight(InlineExecutor(), max_workers=1) == 1


def test_default_bound_is_twice_the_executors_workers_or_32() -> None:
    assert _most_in_flight(InlineExecutor(workers=5)) == 10
    assert _most_in_flight(InlineExecutor()) == 32


def test_default_bound_of_real_executors(
    process_pool: ProcessPoolExecutor, thread_pool: ThreadPoolExecutor
) -> None:
    assert _default_in_flight(process_pool) == 4
    assert _default_in_flight(thread_pool) == 8


@pytest.mark.allow_threads
def test_default_bound_on_dask_counts_the_workers_threads(dask_client: Client) -> None:
    assert _default_in_flight(dask_client.get_executor()) == 4  # 2 workers x 1 thread


# -- cancellation, step by step (an executor whose futures finish when the test says) -----------


class HeldExecutor(Executor):
    """Futures whose fate ``plan(item)`` decides at submit.

    ``"run"``: run at once; ``"start"``: running (cannot be cancelled) until the test
    finishes it; ``"hold"``: pending (can be cancelled) until the test finishes it;
    ``"cancel"``: cancelled by the executor; ``"refuse"``: submit() raises.
    """

    def __init__(self, plan: Callable[[Any], str]) -> None:
        self.plan = plan
        self.futures: dict[Any, Future[Any]] = {}
        self.submitted = threading.Condition()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        (item,) = args
        what = self.plan(item)
        if what == "refuse":
            msg = "cannot schedule new futures after shutdown"
            raise RuntimeError(msg)
        future: Future[T] = Future()
        if what in {"run", "start"}:
            future.set_running_or_notify_cancel()
        if what == "run":
            future.set_result(fn(*args, **kwargs))
        elif what == "cancel":
            future.cancel()
        with self.submitted:
            self.futures[item] = future
            self.submitted.notify_all()
        return future


def test_fail_fast_cancels_pending_futures_and_waits_for_running_ones() -> None:
    pool = HeldExecutor(lambda x: "start" if x < 2 else "hold")
    all_cancelled = threading.Event()

    def executor_side() -> None:
        with pool.submitted:
            assert pool.submitted.wait_for(lambda: len(pool.futures) == 4, SAFETY)
        futures = pool.futures

        def on_done(_: Future[Any]) -> None:
            if futures[2].done() and futures[3].done():
                all_cancelled.set()

        futures[2].add_done_callback(on_done)
        futures[3].add_done_callback(on_done)
        futures[1].set_exception(OSError("boom"))
        # The call cancels what has not started, then waits for task 0, which still runs.
        assert all_cancelled.wait(SAFETY)
        futures[0].set_result("late")

    side = threading.Thread(target=executor_side)
    side.start()
    try:
        with pytest.raises(FanOutError) as info:
            # grace=0: after a failure, running tasks are waited for however long they take.
            fan_out_and_join(lambda x: x, range(10), executor=pool, max_workers=4, grace=0)
    finally:
        side.join()
    assert list(info.value.failed) == [1]
    assert info.value.results == ["late", None, None, None]  # task 0's result is kept
    assert [pool.futures[i].cancelled() for i in range(4)] == [False, False, True, True]


def test_unordered_results_are_in_completion_order() -> None:
    # "one" finishes at once; "zero" only once the caller has seen "one" finish.
    pool = HeldExecutor(lambda x: "hold" if x == "zero" else "run")

    def finish_item_0(done: int, total: int | None) -> None:
        if done == 1:
            pool.futures["zero"].set_result("zero")

    for ordered, expected in ((False, ["one", "zero"]), (True, ["zero", "one"])):
        pool.futures.clear()
        items = ["zero", "one"]
        results = fan_out_and_join(
            lambda x: x, items, executor=pool, ordered=ordered, on_progress=finish_item_0
        )
        assert results == expected
        pool.futures.clear()
        streamed = fan_out(
            lambda x: x, items, executor=pool, ordered=ordered, on_progress=finish_item_0
        )
        assert list(streamed) == expected


def test_closing_the_stream_cancels_pending_futures() -> None:
    pool = HeldExecutor(lambda x: "run" if x == 0 else "hold")
    it = fan_out(lambda x: x, iter(range(100)), executor=pool, max_workers=5)
    assert next(it) == 0
    it.close()
    assert sorted(pool.futures) == [0, 1, 2, 3, 4]  # nothing read after the loop left
    assert all(pool.futures[i].cancelled() for i in range(1, 5))


def test_timeout_abandons_running_futures_with_a_resource_warning() -> None:
    pool = HeldExecutor(lambda x: "start" if x in "ab" else "hold")
    message = (
        r"^fan-out 'exec-stuck' abandoned 2 task\(s\) still running on HeldExecutor after 0.01 s: "
        r"item 0 \('a'\), item 1 \('b'\)$"
    )
    with pytest.warns(ResourceWarning, match=message):
        with pytest.raises(
            TimeoutError, match=r"^fan-out 'exec-stuck' timed out after 0.01 seconds$"
        ):
            fan_out_and_join(
                lambda x: x, "abc", executor=pool, timeout=0.01, grace=0.01, name="exec-stuck"
            )
    assert [f.cancelled() for f in pool.futures.values()] == [False, False, True]


def test_many_abandoned_tasks_are_summed_up() -> None:
    pool = HeldExecutor(lambda _: "start")
    with pytest.warns(ResourceWarning, match=r": item 0 \(0\), .*, item 4 \(4\) and 3 more$"):
        with pytest.raises(TimeoutError):
            fan_out_and_join(lambda x: x, range(8), executor=pool, timeout=0, grace=0)


def test_ctrl_c_in_the_caller_cancels_pending_futures_and_reraises() -> None:
    # on_progress runs in the calling thread: a KeyboardInterrupt there is a Ctrl-C at that point.
    pool = HeldExecutor(lambda x: {0: "run", 1: "start"}.get(x, "hold"))
    interrupt = KeyboardInterrupt()

    def on_progress(done: int, total: int | None) -> None:
        raise interrupt

    with pytest.warns(ResourceWarning, match=r"abandoned 1 task\(s\) .*: item 1 \(1\)$"):
        with pytest.raises(KeyboardInterrupt) as info:
            fan_out_and_join(
                lambda x: x,
                range(10),
                executor=pool,
                max_workers=4,
                on_progress=on_progress,
                grace=0.01,
            )
    assert info.value is interrupt
    assert [pool.futures[i].cancelled() for i in range(4)] == [False, False, True, True]


def test_a_future_cancelled_by_the_executor_is_a_failure() -> None:
    pool = HeldExecutor(lambda x: "cancel" if x == 1 else "run")
    with pytest.raises(FanOutError) as info:
        fan_out_and_join(lambda x: x, range(3), executor=pool, fail_fast=False)
    (failure,) = info.value.exceptions
    assert isinstance(failure, CancelledError)
    assert str(failure) == "the executor cancelled the task"
    assert failure.__notes__ == ["fan-out item 1: 1"]
    assert info.value.results == [0, None, 2]


def test_an_error_from_submit_propagates_unchanged_and_cancels_pending() -> None:
    pool = HeldExecutor(lambda x: "refuse" if x == 2 else "hold")
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        fan_out_and_join(lambda x: x, range(5), executor=pool)
    assert sorted(pool.futures) == [0, 1]
    assert all(f.cancelled() for f in pool.futures.values())


# -- ThreadPoolExecutor: in-process, so tokens and contextvars work as on threadkit's threads --

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_thread_pool_tasks_see_the_callers_context_and_the_call_token(
    thread_pool: ThreadPoolExecutor,
) -> None:
    token = var.set("caller")
    try:

        def task(x: int) -> tuple[str, CancelToken, str]:
            seen = var.get()
            var.set(f"task {x}")  # not seen by the other tasks
            return seen, threadkit.current_token(), threading.current_thread().name

        results = fan_out_and_join(task, range(50), executor=thread_pool)
    finally:
        var.reset(token)
    assert {seen for seen, _, _ in results} == {"caller"}
    assert len({id(t) for _, t, _ in results}) == 1
    assert all(name.startswith("pool_") for _, _, name in results)  # the pool's own threads


def test_thread_pool_fail_fast_cancels_running_tasks(thread_pool: ThreadPoolExecutor) -> None:
    running = threading.Event()
    cancelled = threading.Event()

    def task(x: int) -> int:
        if x == 0:
            running.set()
            if threadkit.current_token().wait(SAFETY):
                cancelled.set()
            threadkit.check_cancelled()
        assert running.wait(SAFETY)
        raise OSError("boom")

    with pytest.raises(FanOutError) as info:
        fan_out_and_join(task, range(2), executor=thread_pool)
    assert cancelled.is_set()
    assert list(info.value.failed) == [1]  # task 0 ended by Cancelled: not a failure


def test_thread_pool_parent_cancellation_reaches_the_tasks(thread_pool: ThreadPoolExecutor) -> None:
    running = threading.Event()

    def task(x: int) -> int:
        running.set()
        threadkit.sleep(SAFETY)
        return x

    with threadkit.ThreadGroup() as group:

        def canceller() -> None:
            assert running.wait(SAFETY)
            group.cancel("stop now")

        group.spawn(canceller)
        with pytest.raises(Cancelled, match=r"^stop now$"):
            fan_out_and_join(task, range(3), executor=thread_pool)


def test_base_exception_in_a_thread_pool_task_is_reraised_as_itself(
    thread_pool: ThreadPoolExecutor,
) -> None:
    exit_error = SystemExit(3)

    def task(x: int) -> int:
        if x == 2:
            raise exit_error
        return x

    with pytest.raises(SystemExit) as info:
        fan_out_and_join(task, range(10), executor=thread_pool, fail_fast=False)
    assert info.value is exit_error
    assert exit_error.__notes__ == ["fan-out item 2: 2"]


# -- ProcessPoolExecutor -------------------------------------------------------------------------


def test_process_tasks_run_in_the_pools_processes(process_pool: ProcessPoolExecutor) -> None:
    pids = set(fan_out_and_join(tasks.process_id, range(20), executor=process_pool))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_system_exit_in_a_process_task_is_reraised(process_pool: ProcessPoolExecutor) -> None:
    with pytest.raises(SystemExit) as info:
        fan_out_and_join(tasks.exit_on_two, range(6), executor=process_pool, fail_fast=False)
    assert info.value.code == 3
    assert info.value.__notes__ == ["fan-out item 2: 2"]


def test_an_unpicklable_fn_fails_every_item_it_reaches(process_pool: ProcessPoolExecutor) -> None:
    with pytest.raises(FanOutError) as info:
        fan_out_and_join(lambda x: x, range(5), executor=process_pool, max_workers=1)
    (failure,) = info.value.exceptions
    # pickle.PicklingError up to 3.12, AttributeError ("Can't get local object") from 3.13.
    assert isinstance(failure, pickle.PicklingError | AttributeError)
    assert "<lambda>" in str(failure)
    assert failure.__notes__ == ["fan-out item 0: 0"]


_CTRL_C_CHILD = """
import functools, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, {tests!r})
import _executor_tasks as tasks
import threadkit

if __name__ == "__main__":
    task = functools.partial(tasks.mark_and_hold, {started!r}, {gate!r})
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            threadkit.fan_out_and_join(task, range(6), executor=pool, max_workers=4, grace=0.1)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_with_a_process_pool(tmp_path: Path) -> None:
    gate, open_gate = _gate(tmp_path)
    started = tmp_path / "started"
    started.mkdir()
    script = textwrap.dedent(
        _CTRL_C_CHILD.format(tests=str(TESTS), started=str(started), gate=gate)
    )
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # show the ResourceWarning
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            _wait_for_files(started / "0")
            child.send_signal(signal.SIGINT)  # the parent only: the worker process runs on
            assert child.stdout.readline() == "interrupted\n"
        finally:
            open_gate()  # leaving the pool's block waits for the tasks that run
        stdout, stderr = child.communicate(timeout=60)
    assert stdout == ""
    assert "KeyboardInterrupt" in stderr
    assert "ResourceWarning: fan-out 'fan_out-1' abandoned " in stderr
    assert "still running on ProcessPoolExecutor after 0.1 s: item 0 (0)" in stderr
    assert child.returncode == -signal.SIGINT
    # One worker: task 0 runs, at most two more wait in the pool's call queue (started, so
    # not cancellable); the fourth was still pending, and was cancelled.
    assert not (started / "3").exists()


# -- Dask -----------------------------------------------------------------------------------------


@pytest.mark.allow_threads
def test_dask_tasks_run_on_the_workers_and_closures_travel_by_value(dask_client: Client) -> None:
    executor = dask_client.get_executor()
    pids = set(fan_out_and_join(tasks.process_id, range(20), executor=executor))
    assert os.getpid() not in pids
    offset = 7
    assert fan_out_and_join(lambda x: x + offset, range(5), executor=executor) == [
        7,
        8,
        9,
        10,
        11,
    ]


# -- the example ----------------------------------------------------------------------------------


def _run_example(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cluster.py"), "--tasks", "6", "--limit", "300"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )


@pytest.mark.allow_threads
def test_example_runs_on_a_process_pool_and_on_the_cluster_at_the_address(
    dask_client: Client,
) -> None:
    address: str = dask_client.scheduler.address
    env = {**os.environ, "THREADKIT_DASK_ADDRESS": address}
    done = _run_example(env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("process pool: 6 tasks in ")
    assert lines[1] == f"dask: using the cluster at {address}"
    assert lines[2].startswith("dask: 6 tasks in ")
    assert lines[3] == "same results: True"


@pytest.mark.allow_threads
def test_example_starts_a_local_cluster_without_an_address() -> None:
    pytest.importorskip(
        "distributed", reason="Dask is not installed (pip install 'threadkit[dask]')"
    )
    env = {k: v for k, v in os.environ.items() if k != "THREADKIT_DASK_ADDRESS"}
    done = _run_example(env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "dask: THREADKIT_DASK_ADDRESS is not set: starting a local cluster"
    assert lines[3] == "same results: True"


def test_example_without_dask_runs_on_the_process_pool_only(tmp_path: Path) -> None:
    # A sitecustomize that hides Dask from the example's interpreter, installed or not.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['distributed'] = None\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    done = _run_example({**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("process pool: 6 tasks in ")
    assert lines[1:] == ["dask: not installed (pip install 'threadkit[dask]'), skipped"]


class _InterruptedInSubmit(ThreadPoolExecutor):
    """A pool whose submit() receives a SIGINT just after it made the future, as a Ctrl-C
    landing inside ThreadPoolExecutor.submit would (where it can break the pool's locks)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.futures: list[Future[Any]] = []
        self.completed = 0  # submit() calls that ran to their end

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        signal.raise_signal(signal.SIGINT)
        self.completed += 1
        return future


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals are handled in the main thread",
)
def test_ctrl_c_is_held_back_until_the_executor_submit_returns() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    pool = _InterruptedInSubmit()
    try:
        with pytest.raises(KeyboardInterrupt):
            fan_out_and_join(threadkit.sleep, [60.0], executor=pool)
        # The interrupt ran the handler only once submit() had returned and the call had
        # recorded the future: so the call cancelled the task and waited for it.
        assert pool.completed == 1
        assert len(pool.futures) == 1
        assert pool.futures[0].done()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        pool.shutdown(wait=True)
