"""Tests for fan_out and fan_out_and_join: results, errors, cancellation, arguments."""

from __future__ import annotations

import contextlib
import contextvars
import gc
import itertools
import pickle
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import threadkit
from _harness import ctrl_c_masked_in_start
from threadkit import Cancelled, CancelToken, FanOutError, _fanout, fan_out, fan_out_and_join

pytestmark = pytest.mark.shake

#: How long a test waits for something that happens at once unless the code is broken.
SAFETY = 10.0


def square(x: int) -> int:
    return x * x


def _fan_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fan_out-")]


# -- results ---------------------------------------------------------------------------------


def test_join_returns_results_in_input_order() -> None:
    assert fan_out_and_join(square, range(100), max_workers=4) == [x * x for x in range(100)]


def test_join_of_nothing_starts_no_thread() -> None:
    before = threading.active_count()
    assert fan_out_and_join(square, []) == []
    assert threading.active_count() == before


def test_unordered_join_is_a_permutation() -> None:
    assert sorted(fan_out_and_join(square, range(50), ordered=False)) == [x * x for x in range(50)]


def test_unordered_join_is_in_completion_order() -> None:
    # Item 0 waits until the caller has received item 1's result (on_progress runs in the
    # caller's thread once a result is in): completion order is 1, 0. Setting the event from
    # item 1 itself would race: item 0 could hand its result back before item 1 does.
    one_received = threading.Event()

    def progress(done: int, total: int | None) -> None:
        one_received.set()

    def task(x: int) -> int:
        if x == 0:
            assert one_received.wait(SAFETY)
        return x

    got = fan_out_and_join(task, [0, 1], max_workers=2, ordered=False, on_progress=progress)
    assert got == [1, 0]


def test_stream_yields_in_input_order() -> None:
    assert list(fan_out(square, iter(range(1000)), max_workers=3)) == [x * x for x in range(1000)]


def test_stream_unordered_yields_first_finished_first() -> None:
    release = threading.Event()

    def task(x: int) -> int:
        if x == 0:
            assert release.wait(SAFETY)
        return x

    it = fan_out(task, [0, 1, 2], max_workers=3, ordered=False)
    got = [next(it), next(it)]
    release.set()
    got.append(next(it))
    assert got[2] == 0
    assert sorted(got) == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(it)


def test_many_tiny_tasks_run_exactly_once() -> None:
    # Large enough for big batches, and for idle workers to cut the last ones short.
    counts = [0] * 50_000
    lock = threading.Lock()

    def task(x: int) -> int:
        with lock:
            counts[x] += 1
        return x

    assert fan_out_and_join(task, range(50_000), max_workers=4) == list(range(50_000))
    assert set(counts) == {1}


def test_never_more_threads_than_items_or_max_workers() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=SAFETY)

    def task(x: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # all three items run at once: three threads are needed
        return x

    fan_out_and_join(task, range(3), max_workers=50, name="few")
    assert len(names) == 3
    names.clear()
    fan_out_and_join(
        lambda x: names.add(threading.current_thread().name), range(200), max_workers=2
    )
    assert 1 <= len(names) <= 2


def test_workers_are_daemon_threads_named_after_the_call() -> None:
    seen: list[threading.Thread] = []
    fan_out_and_join(lambda _: seen.append(threading.current_thread()), [1], name="crawl")
    assert seen[0].daemon
    assert seen[0].name == "crawl-0"


# -- the stream: early exit, infinite input, laziness ----------------------------------------


def test_nothing_starts_before_the_first_next() -> None:
    ran: list[int] = []
    it = fan_out(ran.append, [1, 2])
    assert ran == []
    assert _fan_threads() == []
    it.close()
    assert ran == []


def _wait_forever(x: int) -> int:
    """A task that runs until cancelled (returns at once for the first items)."""
    if x < 5:
        return x
    threadkit.current_token().wait(SAFETY)
    threadkit.check_cancelled()
    pytest.fail("the task was not cancelled")  # pragma: no cover


def test_break_cancels_and_joins_the_workers() -> None:
    got: list[int] = []
    for value in fan_out(_wait_forever, itertools.count(), max_workers=4):
        got.append(value)
        if value == 2:
            break
    # The generator is closed when the loop's reference goes away (CPython refcounting).
    gc.collect()
    assert got == [0, 1, 2]
    assert _fan_threads() == []


def test_close_cancels_running_tasks_and_joins() -> None:
    started = threading.Event()
    cancelled = threading.Event()

    def task(x: int) -> int:
        if x == 0:
            return 0
        started.set()
        try:
            threadkit.sleep(SAFETY)
        except Cancelled:
            cancelled.set()
            raise
        pytest.fail("not cancelled")  # pragma: no cover

    it = fan_out(task, itertools.count(), max_workers=2)
    assert next(it) == 0
    assert started.wait(SAFETY)
    it.close()
    assert cancelled.is_set()
    assert _fan_threads() == []
    with pytest.raises(StopIteration):
        next(it)


def test_garbage_collection_closes_the_stream() -> None:
    cancelled = threading.Event()
    waiting = threading.Event()

    def task(x: int) -> int:
        if x:
            waiting.set()
            threadkit.current_token().wait(SAFETY)
            cancelled.set()
        return x

    it = fan_out(task, itertools.count(), max_workers=2)
    assert next(it) == 0
    assert waiting.wait(SAFETY)  # a task is running: collecting the iterator must cancel it
    del it
    gc.collect()
    assert cancelled.is_set()
    assert _fan_threads() == []


def test_infinite_input_is_read_lazily() -> None:
    read = 0

    def naturals() -> Iterator[int]:
        nonlocal read
        for n in itertools.count():
            read = n + 1
            yield n

    it = fan_out(square, naturals(), max_workers=2)
    try:
        ahead = []
        for n in range(150_000):  # more than twice the read-ahead window
            assert next(it) == n * n
            ahead.append(read - (n + 1))
    finally:
        it.close()
    # Bounded read-ahead: never more than the window ahead of the caller, plus the batch being
    # read (how far within that depends on timing: about 500 items typically, up to the
    # window when the workers race ahead, as seen on 3.13).
    assert max(ahead) <= _fanout._MAX_IN_FLIGHT + _fanout._MAX_BATCH
    assert read < 150_000 + _fanout._MAX_IN_FLIGHT + _fanout._MAX_BATCH


def test_items_are_read_by_the_calling_thread() -> None:
    readers: set[str] = set()

    def items() -> Iterator[int]:
        for n in range(500):
            readers.add(threading.current_thread().name)
            yield n

    fan_out_and_join(square, items(), max_workers=4)
    assert readers == {threading.current_thread().name}


def test_the_items_read_get_workers_before_the_iterable_blocks() -> None:
    # The generator yields item 2 only once items 0 and 1 run at the same time: the workers
    # for the items already read must not wait for the next read.
    both_running = threading.Barrier(3, timeout=SAFETY)

    def items() -> Iterator[int]:
        yield 0
        yield 1
        both_running.wait()
        yield 2

    def task(x: int) -> int:
        if x < 2:
            both_running.wait()
        return x

    assert fan_out_and_join(task, items(), max_workers=4) == [0, 1, 2]


def test_a_sized_input_starts_a_worker_per_batch_that_waits() -> None:
    # A list is read before the workers beyond the first start; each batch still gets one.
    all_running = threading.Barrier(4, timeout=SAFETY)

    def task(x: int) -> int:
        all_running.wait()
        return x

    assert fan_out_and_join(task, [0, 1, 2, 3], max_workers=8) == [0, 1, 2, 3]


# -- errors ------------------------------------------------------------------------------------


def fail_on_three(x: int) -> int:
    if x == 3:
        msg = f"bad item {x}"
        raise ValueError(msg)
    return x


def test_fail_fast_raises_fan_out_error_with_note_and_partial_results() -> None:
    with pytest.raises(FanOutError) as info:
        fan_out_and_join(fail_on_three, range(4), max_workers=1, name="t")
    error = info.value
    assert isinstance(error, ExceptionGroup)
    assert error.message == "1 of 4 task(s) of fan-out 't' failed"
    (failure,) = error.exceptions
    assert isinstance(failure, ValueError)
    assert failure.__notes__ == ["fan-out item 3: 3"]
    assert error.failed == {3: failure}
    assert error.results == [0, 1, 2, None]
    assert type(error).__module__ == "threadkit"


def test_fail_fast_false_runs_everything_and_reports_every_failure() -> None:
    ran: list[int] = []

    def task(x: int) -> int:
        ran.append(x)
        if x % 10 == 3:
            raise KeyError(x)
        return x

    with pytest.raises(FanOutError) as info:
        fan_out_and_join(task, range(40), max_workers=4, fail_fast=False)
    assert sorted(ran) == list(range(40))
    assert sorted(info.value.failed) == [3, 13, 23, 33]
    assert [e.args[0] for e in info.value.exceptions] == [3, 13, 23, 33]
    assert info.value.results == [None if x % 10 == 3 else x for x in range(40)]


def test_fail_fast_stops_new_items_and_cancels_running_ones() -> None:
    running = threading.Event()
    cancelled = threading.Event()
    started: list[int] = []

    def task(x: int) -> int:
        started.append(x)
        if x == 0:
            running.set()
            threadkit.current_token().wait(SAFETY)
            cancelled.set()
            threadkit.check_cancelled()
        if x == 1:
            assert running.wait(SAFETY)
            raise OSError("boom")
        return x

    with pytest.raises(FanOutError) as info:
        fan_out_and_join(task, itertools.count(), max_workers=2)
    assert cancelled.is_set()
    assert list(info.value.failed) == [1]
    assert len(started) < 100  # not the infinite rest


def test_stream_with_fail_fast_false_yields_the_rest_then_raises() -> None:
    got: list[int] = []
    with pytest.raises(FanOutError) as info:
        for value in fan_out(fail_on_three, range(6), fail_fast=False, max_workers=2):
            got.append(value)
    assert got == [0, 1, 2, 4, 5]
    assert info.value.results == []
    assert list(info.value.failed) == [3]


def test_fan_out_error_split_keeps_results_and_failed() -> None:
    def task(x: int) -> int:
        raise KeyError(x) if x else ValueError(x)

    with pytest.raises(FanOutError) as info:
        fan_out_and_join(task, range(2), fail_fast=False)
    error: FanOutError = info.value
    match, rest = error.split(KeyError)
    assert type(match) is FanOutError
    assert type(rest) is FanOutError
    assert [type(e) for e in match.exceptions] == [KeyError]
    assert [type(e) for e in rest.exceptions] == [ValueError]
    assert vars(match)["results"] == error.results == [None, None]
    assert vars(match)["failed"] == error.failed


def test_fan_out_error_pickles() -> None:
    error = FanOutError("m", [ValueError(1)], [1, None], {1: ValueError(1)})
    copy = pickle.loads(pickle.dumps(error))
    assert copy.message == "m"
    assert copy.results == [1, None]
    assert list(copy.failed) == [1]


def test_except_star_catches_task_errors() -> None:
    caught = []
    try:
        fan_out_and_join(fail_on_three, range(5))
    except* ValueError as group:
        caught = list(group.exceptions)
    assert [str(e) for e in caught] == ["bad item 3"]


def test_base_exception_in_a_task_is_reraised_as_itself() -> None:
    exit_error = SystemExit(3)

    def task(x: int) -> int:
        if x == 2:
            raise exit_error
        return x

    with pytest.raises(SystemExit) as info:
        fan_out_and_join(task, range(10), max_workers=2, fail_fast=False)
    assert info.value is exit_error
    assert _fan_threads() == []


def test_error_from_items_propagates_unchanged_after_the_workers_stop() -> None:
    error = RuntimeError("items broke")
    running = threading.Event()
    cancelled = threading.Event()

    def task(x: int) -> int:
        if x == 0:
            running.set()
            threadkit.current_token().wait(SAFETY)
            cancelled.set()
        return x

    def items() -> Iterator[int]:
        yield 0
        assert running.wait(SAFETY)  # task 0 runs while items is still being read
        yield 1
        raise error

    with pytest.raises(RuntimeError) as info:
        fan_out_and_join(task, items(), max_workers=2)
    assert info.value is error
    assert cancelled.is_set()
    assert _fan_threads() == []
    running.clear()
    cancelled.clear()
    with pytest.raises(RuntimeError) as info:
        list(fan_out(task, items(), max_workers=2))
    assert cancelled.is_set()
    assert info.value is error


def test_error_in_on_progress_cancels_and_propagates() -> None:
    error = LookupError("callback")

    def on_progress(done: int, total: int | None) -> None:
        raise error

    with pytest.raises(LookupError) as info:
        fan_out_and_join(_wait_forever, range(20), max_workers=2, on_progress=on_progress)
    assert info.value is error


# -- timeout and cancellation ----------------------------------------------------------------


def test_timeout_cancels_tasks_and_raises_timeout_error() -> None:
    cancelled = threading.Event()

    def task(x: int) -> int:
        if threadkit.current_token().wait(SAFETY):
            cancelled.set()
        threadkit.check_cancelled()
        return x

    with pytest.raises(TimeoutError, match=r"^fan-out 'slow' timed out after 0.05 seconds$"):
        fan_out_and_join(task, range(4), timeout=0.05, name="slow")
    assert cancelled.is_set()
    with pytest.raises(TimeoutError):
        list(fan_out(task, range(4), timeout=0.05))


def test_zero_timeout_times_out() -> None:
    with pytest.raises(TimeoutError):
        fan_out_and_join(_wait_forever, range(10), timeout=0)


def test_parent_token_cancellation_raises_cancelled() -> None:
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
        with pytest.raises(Cancelled, match="stop now"):
            fan_out_and_join(task, range(3))


def test_a_task_ignoring_cancellation_is_abandoned_with_a_resource_warning() -> None:
    release = threading.Event()

    def stubborn(x: str) -> str:
        assert release.wait(SAFETY)
        return x

    try:
        with pytest.warns(ResourceWarning, match=r"abandoned 1 thread\(s\).*item 0 \('a'\)"):
            with pytest.raises(TimeoutError):
                fan_out_and_join(stubborn, ["a"], timeout=0.01, grace=0.01, name="stuck")
    finally:
        release.set()


def test_tasks_see_the_call_token_a_child_of_the_callers() -> None:
    tokens: list[CancelToken] = []
    fan_out_and_join(lambda _: tokens.append(threadkit.current_token()), range(3))
    assert len({id(t) for t in tokens}) == 1
    assert not tokens[0].cancelled
    seen: list[bool] = []
    with threadkit.ThreadGroup() as group:

        def task(_: int) -> None:
            group.cancel("from the task")
            seen.append(threadkit.current_token().cancelled)  # a child of the group's token

        with pytest.raises(Cancelled, match="from the task"):
            fan_out_and_join(task, [0])
    assert seen == [True]


# -- contextvars, progress -------------------------------------------------------------------

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_tasks_see_the_callers_context_and_do_not_share_their_own() -> None:
    token = var.set("caller")
    try:

        def task(x: int) -> str:
            seen = var.get()
            var.set(f"task {x}")
            return seen

        assert fan_out_and_join(task, range(200), max_workers=3) == ["caller"] * 200
        assert var.get() == "caller"
        it = fan_out(task, range(3))  # the context of the call, not of the first next()
        var.set("later")
        assert list(it) == ["caller"] * 3
    finally:
        var.reset(token)


def test_on_progress_counts_every_task_in_the_callers_thread() -> None:
    calls: list[tuple[int, int | None, str]] = []

    def on_progress(done: int, total: int | None) -> None:
        calls.append((done, total, threading.current_thread().name))

    fan_out_and_join(square, range(500), max_workers=4, on_progress=on_progress)
    assert calls[-1][:2] == (500, 500)
    dones = [c[0] for c in calls]
    assert dones == sorted(dones)
    assert {c[2] for c in calls} == {threading.current_thread().name}
    calls.clear()
    list(fan_out(square, iter(range(7)), on_progress=on_progress))
    assert calls[-1][:2] == (7, None)


def test_on_progress_counts_failures_too() -> None:
    calls: list[int] = []
    with pytest.raises(FanOutError):
        fan_out_and_join(
            fail_on_three, range(6), fail_fast=False, on_progress=lambda d, _: calls.append(d)
        )
    assert calls[-1] == 6


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert fan_out_and_join(square, range(20), progress=True, name="bar") == [
        x * x for x in range(20)
    ]
    err = capsys.readouterr().err
    assert "bar" in err
    assert "20/20" in err


def test_progress_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError) as info:
        fan_out_and_join(square, [1], progress=True)
    assert str(info.value) == (
        "progress=True needs tqdm, which is not installed; "
        "install the extra: pip install 'threadkit[progress]'"
    )


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fn": 3}, TypeError, "fn must be callable, got 3"),
        ({"items": 5}, TypeError, "items must be an iterable, got 5"),
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1, got 0"),
        ({"max_workers": 2.0}, TypeError, "max_workers must be an int or None, got 2.0"),
        ({"max_workers": True}, TypeError, "max_workers must be an int or None, got True"),
        ({"ordered": 1}, TypeError, "ordered must be True or False, got 1"),
        ({"fail_fast": None}, TypeError, "fail_fast must be True or False, got None"),
        ({"progress": "yes"}, TypeError, "progress must be True or False, got 'yes'"),
        ({"timeout": -1}, ValueError, "timeout must be >= 0, got -1"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds, got '1'"),
        ({"grace": float("nan")}, ValueError, "grace must be >= 0, got nan"),
        ({"on_progress": 1}, TypeError, "on_progress must be callable or None, got 1"),
        ({"name": 1}, TypeError, "name must be a str or None, got 1"),
        (
            {"executor": object()},
            TypeError,
            "executor must be a concurrent.futures.Executor or None, got <object",
        ),
    ],
)
def test_bad_arguments_raise_before_any_thread_starts(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    ran: list[object] = []
    arguments: dict[str, object] = {"fn": ran.append, "items": [1, 2], **kwargs}
    for function in (fan_out_and_join, fan_out):
        with pytest.raises(error) as info:
            function(**arguments)  # type: ignore[arg-type]
        assert str(info.value).startswith(message)
        if not message.endswith("<object"):
            assert str(info.value) == message
    assert ran == []
    assert _fan_threads() == []


def test_public_names() -> None:
    for obj in (fan_out, fan_out_and_join, FanOutError):
        assert obj.__module__ == "threadkit"
        assert obj.__name__ in threadkit.__all__


@pytest.mark.parametrize("on_pool", [False, True], ids=["threads", "thread-pool-executor"])
def test_results_survive_a_timeout(on_pool: bool) -> None:
    """The FanOutError riding on a TimeoutError still has one slot per item read."""
    done = threading.Barrier(3)

    def task(i: int) -> int:
        if i == 0:
            done.wait()
            raise ValueError("zero")
        if i == 1:
            done.wait()
            return 10
        done.wait()
        threadkit.sleep(SAFETY)  # until the deadline cancels it
        return 20

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(3)) if on_pool else None
        with pytest.raises(TimeoutError) as info:
            fan_out_and_join(
                task, range(3), max_workers=3, fail_fast=False, timeout=1.0, executor=pool
            )
    group = info.value.__cause__
    assert isinstance(group, FanOutError)
    assert list(group.failed) == [0]
    assert group.results == [None, 10, None]


def test_a_ctrl_c_that_a_worker_start_turned_into_runtimeerror_stops_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython's Condition.wait race turns a Ctrl-C in Thread.start's wait for a new worker
    into RuntimeError("release unlocked lock"), which fan-out used to take for "out of
    threads": the Ctrl-C was lost and the running worker dropped from the shutdown. It is a
    Ctrl-C: the call raises it, and joins that worker too."""
    masked = ctrl_c_masked_in_start(monkeypatch, lambda t: t.name == "masked-1")

    def task(x: int) -> int:
        threadkit.current_token().wait(2)  # until the call is cancelled (2 s: a bound only)
        return x

    with pytest.raises(KeyboardInterrupt):
        fan_out_and_join(task, iter(range(20)), max_workers=4, name="masked")
    assert len(masked) == 1
    assert not masked[0].is_alive()


def test_a_ctrl_c_before_a_worker_thread_exists_leaves_no_thread_behind() -> None:
    """A Ctrl-C in a worker's Thread.start() before its OS thread exists: the call raises it,
    and threading does not list that thread (never to run) for ever."""
    from _harness import LineInjector, Point, Window

    start = threading.Thread.start.__code__
    line = Window("Thread.start", "_start_").lines(start).start
    second_start = Point(start.co_filename, line, start.co_qualname, hit=2)

    def task(x: int) -> int:
        threadkit.current_token().wait(2)  # until the call is cancelled (2 s: a bound only)
        return x

    injection = LineInjector((), extra_codes=[start]).inject(
        second_start,
        lambda: fan_out_and_join(task, iter(range(20)), max_workers=4, name="unstarted"),
        KeyboardInterrupt,
    )
    assert injection.fired
    assert isinstance(injection.error, KeyboardInterrupt)
    assert [t.name for t in threading.enumerate() if t.name.startswith("unstarted")] == []
