"""Implements fan_out and fan_out_and_join, a lazy, bounded, ordered fan-out over threads."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import importlib
import itertools
import os
import queue
import reprlib
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Executor
from contextvars import Context
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, cast, final

from ._cancel import (
    Cancelled,
    CancelToken,
    _check_seconds,
    _current,
    _get,
    _lock_timeout,
    _unmasked,
    _wait,
    current_token,
)
from ._thread import _forget_unstarted, _os_thread_exists

if TYPE_CHECKING:
    from ._executor import ExecutorCall

__all__ = ["FanOutError", "fan_out", "fan_out_and_join"]

T = TypeVar("T")
R = TypeVar("R")

#: How long a cancelled, timed-out or interrupted call waits for its tasks before abandoning them.
DEFAULT_GRACE = 1.0

# Adaptive batching. A worker takes a batch of consecutive items, runs them back to back and
# posts their results in one message, so the fixed cost of a hand-over (two queue operations
# and a thread wake-up, ~10-30 us) is paid once per batch, not once per task. Batches start at
# one item and are sized so that one takes about _TARGET_BATCH_SECONDS, from the time per task
# measured so far: slow tasks go one by one (load balance is that of a plain pool), tiny tasks
# go thousands at a time. A batch can be cut short at any item (see _Call._on_cancel and
# _Call._steal), so a batch whose tasks turn out slow never holds up idle workers.
_TARGET_BATCH_SECONDS = 1e-3
_MAX_BATCH = 8192
#: Growth of the batch size per message, so one lucky measurement cannot jump to _MAX_BATCH.
_MAX_GROWTH = 16
#: Most items read from ``items`` and not yet handed back to the caller (bounded read-ahead).
_MAX_IN_FLIGHT = 1 << 16
#: Batches queued or running, per worker.
_BATCHES_PER_WORKER = 4
#: Time spent reading a sized ``items`` after which the caller starts another worker before it
#: reads on. Starting a thread costs the caller ~0.1-0.3 ms; a worker started after each batch
#: read finds just that batch in the queue, and the workers that are done wait for the next
#: start's batch: the tasks run at the pace of thread start-up (the ramp of
#: ThreadPoolExecutor). So, for a list or a range, the caller reads the window first
#: (microseconds) and then starts the workers, every one busy from its start; a sequence slow
#: to read gets a worker per this much reading, so that the items read do not wait for it.
#: An iterator without ``len()`` (a generator may block between items) gets a worker per
#: batch at once, as long as no idle worker took the batch.
_SPAWN_AFTER = 0.5e-3

#: How long shutdown waits for a worker whose start() was interrupted to be running.
_STARTING_GRACE = 1.0

_TIMEOUT_REASON = "fan-out timed out"
_INTERRUPT_REASON = "interrupted (KeyboardInterrupt)"
_CLOSED_REASON = "fan-out iterator closed"
#: Why-stopped values after which running tasks get ``grace`` seconds, not unlimited time.
_BOUNDED_STOPS = frozenset({"timeout", "cancelled", "interrupt", "closed"})

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60

_call_numbers = itertools.count(1)


@final
class FanOutError(ExceptionGroup[Exception]):
    """The tasks of a :func:`fan_out_and_join` or :func:`fan_out` call that failed.

    An :class:`ExceptionGroup` of the failures, in input order; each carries a
    note (PEP 678) naming its item: ``fan-out item 3: 'http://b'``.

    Attributes:
        results: from :func:`fan_out_and_join`, one slot per item read from
            ``items``, in input order: the result, or ``None`` where the item
            failed or never ran. From :func:`fan_out`, whose results were
            already yielded, empty.
        failed: the failures by item index.

    :meth:`derive` (used by :meth:`~BaseExceptionGroup.split`,
    :meth:`~BaseExceptionGroup.subgroup` and ``except*``) keeps ``results``
    and ``failed`` of the original group.
    """

    __module__ = "threadkit"

    results: list[Any]
    failed: dict[int, Exception]

    def __new__(
        cls,
        message: str,
        exceptions: Sequence[Exception],
        results: Sequence[Any] = (),
        failed: dict[int, Exception] | None = None,
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.results = list(results)
        self.failed = dict(failed) if failed is not None else {}
        return self

    def __init__(
        self,
        message: str,
        exceptions: Sequence[Exception],
        results: Sequence[Any] = (),
        failed: dict[int, Exception] | None = None,
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> FanOutError:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """Return a group with the same message, ``results`` and ``failed``, of ``excs``."""
        return FanOutError(self.message, excs, self.results, self.failed)


def fan_out_and_join(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    fail_fast: bool = True,
    executor: Executor | None = None,
    on_progress: Callable[[int, int | None], object] | None = None,
    progress: bool = False,
    name: str | None = None,
    grace: float = DEFAULT_GRACE,
) -> list[R]:
    """Run ``fn(item)`` for every item on a bounded set of threads; return the results.

    Blocks until every task has finished. The results are in input order
    (``ordered=False``: in completion order). ``items`` is read lazily, by the
    calling thread only, a bounded number of items ahead of the tasks; results
    travel back to the calling thread through a queue.

    * At most ``max_workers`` threads (default ``min(32, cpu_count + 4)``, as
      :class:`~concurrent.futures.ThreadPoolExecutor`), and never more threads
      than items: workers start as work arrives, several at a time.
    * Each task runs in its own copy of the caller's :mod:`contextvars`
      context, in which :func:`~threadkit.current_token` is the call's token,
      a child of the caller's current token: tasks see cancellation through
      :func:`~threadkit.check_cancelled` and :func:`~threadkit.sleep`.
    * ``fail_fast=True``: the first failure stops new items from starting,
      cancels the running tasks, waits for them and raises
      :class:`FanOutError`. ``fail_fast=False``: every item runs, and
      :class:`FanOutError` carries every failure.
    * ``timeout``: a deadline for the whole call. At it the tasks are
      cancelled and :class:`TimeoutError` is raised.
    * Ctrl-C anywhere in the call (also while it is already stopping, after a
      failure, a timeout or leaving a ``fan_out`` loop) cancels every task,
      waits ``grace`` seconds for them and re-raises :class:`KeyboardInterrupt`
      (a second Ctrl-C stops waiting at once). A task that ignores
      cancellation cannot hold the process: workers are daemon threads, so
      once the interrupt leaves the program the interpreter exits without
      waiting for them.
    * After a timeout, Ctrl-C or a cancellation from a parent token, tasks
      that do not stop within ``grace`` seconds are abandoned with a
      :class:`ResourceWarning` naming them. In every other case, when the call
      returns or raises, none of its tasks is running.

    Tasks are handed to the workers in adaptive batches of consecutive items
    (one at a time for slow tasks, up to thousands for tiny ones), which is
    what makes the per-task cost small; a batch is cut short the moment its
    worker is cancelled or another worker runs out of work.

    **On an executor.** With ``executor``, the tasks run on that
    :class:`~concurrent.futures.Executor` (a
    :class:`~concurrent.futures.ProcessPoolExecutor`, a Dask
    ``Client.get_executor()``, ...) and threadkit starts no thread: the calling
    thread submits ``fn(item)`` as one future per item while fewer than
    ``max_workers`` are unfinished, and collects them as they finish. The order
    of the results, ``fail_fast``, ``timeout``, :class:`FanOutError` (same
    notes, ``results`` and ``failed``), Ctrl-C, ``on_progress`` and
    ``progress`` behave as above, within what an executor allows:

    * ``fn``, the items and the results must be picklable for a process or a
      cluster (Dask pickles with cloudpickle, which also sends lambdas and
      closures; the standard ``pickle`` of a process pool needs module-level
      functions). An unpicklable task fails as its item's failure.
    * Cancellation tokens and :mod:`contextvars` do not cross a process
      boundary: there a task sees neither the caller's context nor the call's
      token (:func:`~threadkit.check_cancelled` never raises). On a
      :class:`~concurrent.futures.ThreadPoolExecutor`, which runs in this
      process, each task runs in a copy of the caller's context with the
      call's token, as on threadkit's own threads.
    * When the call stops early (a failure, the timeout, Ctrl-C, a parent's
      cancellation, leaving a ``fan_out`` loop, an error in ``items``), the
      futures that have not started are cancelled. Those that have cannot be
      interrupted: after a failure or an error the call waits for them;
      otherwise it waits up to ``grace`` seconds, then abandons them with a
      :class:`ResourceWarning` (they run to their end on the executor, their
      results unused). Which futures have "started" is the executor's call: a
      process pool starts up to one more than it has workers; every future of
      a Dask executor can be cancelled (Dask drops the result of a task that
      was already running).

    Args:
        fn: called as ``fn(item)`` in a worker thread (or on ``executor``).
        items: any iterable, infinite included; read only by the calling thread.
        max_workers: the most threads to run tasks on. With ``executor``: the
            most futures submitted and not yet finished (default: twice the
            executor's workers when it tells them, as the standard pools and
            Dask do, else 32); it bounds memory and how much work a stopped
            call leaves queued, and should exceed the executor's workers to
            keep them all busy.
        ordered: results in input order (``False``: in completion order).
        timeout: seconds for the whole call, or ``None`` for no deadline (as is a value
            beyond :data:`threading.TIMEOUT_MAX`, ``math.inf`` included).
        fail_fast: stop at the first failure instead of running every item.
        executor: run the tasks on this :class:`~concurrent.futures.Executor`
            instead of threadkit's own threads (see above). ``None``: threads.
        on_progress: called as ``on_progress(done, total)`` in the calling
            thread as results arrive (at least once per batch); ``done``
            counts finished tasks, failed ones included; ``total`` is
            ``len(items)`` when ``items`` has a length, else ``None``.
        progress: draw a tqdm progress bar on stderr (needs the
            ``threadkit[progress]`` extra).
        name: the call's name, used in thread names, messages and the progress bar.
        grace: seconds to wait for tasks to observe a cancellation before
            abandoning them (after a timeout, Ctrl-C, a parent's cancellation, or
            leaving a ``fan_out`` loop); beyond :data:`threading.TIMEOUT_MAX`
            (``math.inf`` included), wait for them without limit.

    Returns:
        ``[fn(item) for item in items]``, computed in parallel.

    Raises:
        FanOutError: one or more tasks raised an :class:`Exception`.
        TimeoutError: ``timeout`` passed.
        Cancelled: a parent token cancelled the call.
        BaseException: a task raised a ``BaseException`` that is not an
            ``Exception`` (``SystemExit``, ``KeyboardInterrupt``): re-raised
            as itself once the workers have stopped; likewise an exception
            raised by ``items`` itself, or by ``executor.submit`` (a pool that
            was shut down or is broken).
        TypeError, ValueError: an argument is invalid (before any thread starts).
        ImportError: ``progress=True`` and tqdm is not installed.

    Example:
        >>> import threadkit
        >>> threadkit.fan_out_and_join(lambda n: n * n, range(5), max_workers=2)
        [0, 1, 4, 9, 16]
    """
    call: _Call[T, R] = _Call(
        fn,
        items,
        max_workers=max_workers,
        ordered=ordered,
        timeout=timeout,
        fail_fast=fail_fast,
        executor=executor,
        on_progress=on_progress,
        progress=progress,
        name=name,
        grace=grace,
    )
    return call.join()


def fan_out(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    fail_fast: bool = True,
    executor: Executor | None = None,
    on_progress: Callable[[int, int | None], object] | None = None,
    progress: bool = False,
    name: str | None = None,
    grace: float = DEFAULT_GRACE,
) -> Generator[R, None, None]:
    """Run ``fn(item)`` for every item on a bounded set of threads; yield results as they come.

    The streaming form of :func:`fan_out_and_join`, with the same arguments
    and semantics: results are yielded in input order (``ordered=False``: in
    completion order), and ``items`` may be infinite. Read-ahead is bounded by
    what the loop has consumed, so a slow loop holds the workers back instead
    of piling up results, and memory does not grow with the number of items.

    Nothing starts (and nothing is submitted to ``executor``) until the first
    ``next()``. The arguments are checked at the call, before any thread
    starts. The contextvars context and the parent token are those of the
    caller of ``fan_out``.

    Leaving the loop early (``break``, an exception in the loop body,
    :meth:`~generator.close`, or the iterator being garbage-collected)
    cancels the pending and running tasks and waits up to ``grace`` seconds for
    them before ``close()`` returns (with ``executor``: cancels the futures that
    have not started, and waits up to ``grace`` seconds for the others). With
    ``fail_fast=False``, the failures are raised as one :class:`FanOutError`
    after the last result is yielded (its ``results`` is empty: they were
    yielded already). ``timeout`` is enforced while the iterator waits for
    results and when it is resumed.

    Returns:
        A generator of the results.

    Raises:
        FanOutError, TimeoutError, Cancelled, TypeError, ValueError,
        ImportError: as :func:`fan_out_and_join` (the argument errors at the
        call, the others from ``next()``).

    Example:
        >>> import threadkit
        >>> for square in threadkit.fan_out(lambda n: n * n, range(3)):
        ...     print(square)
        0
        1
        4
    """
    call: _Call[T, R] = _Call(
        fn,
        items,
        max_workers=max_workers,
        ordered=ordered,
        timeout=timeout,
        fail_fast=fail_fast,
        executor=executor,
        on_progress=on_progress,
        progress=progress,
        name=name,
        grace=grace,
    )
    return call.stream()


fan_out.__module__ = "threadkit"
fan_out_and_join.__module__ = "threadkit"


class _Bar(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> object: ...


#: A worker's message to the caller: batch start index, results (``None`` where an item failed
#: or was cancelled), failures as (index, exception), seconds taken, batches given back to the
#: queue, and a BaseException that must stop the call.
_Message = tuple[int, list[Any], list[tuple[int, BaseException]] | None, float, int]


class _Call(Generic[T, R]):
    """One fan-out call: the caller's side (dispatch, results, shutdown) and the workers."""

    def __init__(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        max_workers: int | None,
        ordered: bool,
        timeout: float | None,
        fail_fast: bool,
        executor: Executor | None,
        on_progress: Callable[[int, int | None], object] | None,
        progress: bool,
        name: str | None,
        grace: float,
    ) -> None:
        if not callable(fn):
            msg = f"fn must be callable, got {fn!r}"
            raise TypeError(msg)
        try:
            iterator = iter(items)
        except TypeError:
            msg = f"items must be an iterable, got {items!r}"
            raise TypeError(msg) from None
        if max_workers is None:
            pass  # the default depends on the path: see below, and ExecutorCall
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            msg = f"max_workers must be an int or None, got {max_workers!r}"
            raise TypeError(msg)
        elif max_workers < 1:
            msg = f"max_workers must be >= 1, got {max_workers!r}"
            raise ValueError(msg)
        for flag, value in (("ordered", ordered), ("fail_fast", fail_fast), ("progress", progress)):
            if not isinstance(value, bool):
                msg = f"{flag} must be True or False, got {value!r}"
                raise TypeError(msg)
        if timeout is not None:
            _check_seconds("timeout", timeout)
        _check_seconds("grace", grace)
        if executor is not None and not isinstance(executor, Executor):
            msg = f"executor must be a concurrent.futures.Executor or None, got {executor!r}"
            raise TypeError(msg)
        if on_progress is not None and not callable(on_progress):
            msg = f"on_progress must be callable or None, got {on_progress!r}"
            raise TypeError(msg)
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, got {name!r}"
            raise TypeError(msg)
        self._bar_factory = _tqdm() if progress else None

        self._fn = fn
        self._items: Iterator[T] = iterator
        self._total = len(items) if isinstance(items, Sized) else None
        self._executor = executor
        # The executor path's bound on futures in flight; None: from the executor's size.
        self._in_flight = max_workers
        self._max_workers = max_workers if max_workers is not None else _default_workers()
        self._ordered = ordered
        self._timeout = timeout
        self._fail_fast = fail_fast
        self._on_progress = on_progress
        self._name = name if name is not None else f"fan_out-{next(_call_numbers)}"
        self._grace = grace
        # The caller's context and token, captured at the call (fan_out starts later).
        self._base = contextvars.copy_context()
        self._parent = current_token()

        self._token: CancelToken | None = None
        self._unregister: Callable[[], None] | None = None
        self._bar: _Bar | None = None
        self._deadline: float | None = None
        # Caller -> workers: (start index, items), or None to stop.
        self._todo: queue.SimpleQueue[tuple[int, list[T]] | None] = queue.SimpleQueue()
        # Workers -> caller: messages in `_inbox`. The caller sleeps on `_wakeup` only until
        # what it waits for has arrived (see _ready), not once per message, which would cost
        # a thread switch per batch and slow every worker down. No lock: deque appends and
        # pops are atomic, and the order of the flag writes and reads in _receive and _post
        # means that a wake-up can be spurious (harmless) but never lost.
        self._inbox: collections.deque[_Message] = collections.deque()
        self._wakeup: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._sleeping = False
        self._wake_at = 1  # messages in the inbox that wake the caller
        self._head = 0  # ordered fan_out: the next item to yield; its message wakes the caller
        self._wants_head = False
        self._eager = on_progress is not None or progress  # wake for every message
        self._threads: list[threading.Thread] = []
        # Set by each worker as its last act (same index as _threads): what shutdown waits
        # on. Not Thread.join(): on 3.11 and 3.12 a Ctrl-C in join() marks a running thread
        # stopped (python/cpython#90882), and the call would stop waiting for it.
        self._exits: list[threading.Event] = []
        # What each worker is running: (start, batch, view it iterates, results so far), one
        # slot per worker started (never max_workers slots up front: it may be huge).
        self._running: list[tuple[int, list[T], list[T], list[Any]] | None] = []

        # The caller's bookkeeping (only the calling thread touches these).
        self._read = 0  # items read from `items`
        self._completed = 0  # items whose task finished (or was cancelled)
        self._released = 0  # items handed over to the consumer
        self._outstanding = 0  # batches queued or running
        self._started = 0  # worker threads started or being started
        self._batch = 1
        self._exhausted = False
        self._window_full = False  # read by idle workers, see _steal
        self._splittable = False  # whether a batch of more than one item was ever queued
        # Why the call stops: "failure", "timeout", "cancelled" (a parent token), "interrupt",
        # "closed", "aborted" (the caller raised); None while it runs.
        self._stop: str | None = None
        self._failing = False  # set by a worker before it cancels the token on a failure
        self._failures: dict[int, Exception] = {}
        self._fatal: BaseException | None = None
        self._error: FanOutError | None = None  # the FanOutError this call raises
        self._interrupt: BaseException | None = None  # the first Ctrl-C the call saw
        self._until: float | None = None  # the end of the bounded wait for the tasks
        self._warned = False  # the abandoned-task warning was given

    # -- front ends -----------------------------------------------------------------------

    def join(self) -> list[R]:
        if self._executor is not None:
            return self._on_executor(self._executor).join()
        chunks: dict[int, list[Any]] = {}
        arrival: list[list[Any]] = []
        error: BaseException | None = None
        try:
            try:
                self._start()
                for start, results, _ in self._chunks():
                    chunks[start] = results
                    if not self._ordered:
                        arrival.append(results)
                    self._released += len(results)
            except BaseException as exc:
                error = exc
            late, error = self._close(error)
        except KeyboardInterrupt as exc:  # landed while closing: close again (idempotent)
            late, error = self._close(exc)
        if error is not None:
            group = self._error
            # The group is raised, or rides on a TimeoutError or an error from `items`.
            if group is not None:
                for start, results, _ in late:
                    chunks[start] = results
                group.results = _in_order(chunks, self._read)
            raise error
        if self._ordered:
            return _in_order(chunks, self._read)
        return list(itertools.chain.from_iterable(arrival))

    def stream(self) -> Generator[R, None, None]:
        if self._executor is not None:
            return self._on_executor(self._executor).stream()
        return self._stream()

    def _on_executor(self, executor: Executor) -> ExecutorCall[T, R]:
        from ._executor import ExecutorCall  # noqa: PLC0415  # _executor imports this module

        return ExecutorCall(self, executor)

    def _stream(self) -> Generator[R, None, None]:
        error: BaseException | None = None
        # The loop wants each result as soon as it can have it: in order, the head of the
        # line; out of order, any.
        self._wants_head = self._ordered
        self._eager = self._eager or not self._ordered
        try:
            try:
                self._start()
                if self._ordered:
                    pending: dict[int, tuple[list[Any], set[int] | None]] = {}
                    head = 0
                    for start, results, failed in self._chunks():
                        if self._stop is not None:
                            break
                        pending[start] = (results, failed)
                        while head in pending:
                            values, holes = pending.pop(head)
                            yield from _values(values, holes)
                            head += len(values)
                            self._head = head
                            self._released += len(values)
                else:
                    for _, results, failed in self._chunks():
                        if self._stop is not None:
                            break
                        yield from _values(results, failed)
                        self._released += len(results)
            except BaseException as exc:
                error = exc
            _, error = self._close(error)
        except KeyboardInterrupt as exc:  # landed while closing: close again (idempotent)
            _, error = self._close(exc)
        if error is not None and not isinstance(error, GeneratorExit):
            raise error

    # -- the caller's side ----------------------------------------------------------------

    def _start(self) -> None:
        token = self._token = self._parent.child()
        self._base.run(_current.set, token)
        self._unregister = token.on_cancel(self._on_cancel)
        timeout = _lock_timeout(self._timeout)  # past the platform's limit: no deadline
        if timeout is not None:
            self._deadline = time.monotonic() + timeout
        if self._bar_factory is not None:
            self._bar = self._bar_factory(
                total=self._total, desc=self._name, unit="task", file=sys.stderr
            )

    def _chunks(self) -> Iterator[tuple[int, list[Any], set[int] | None]]:
        """Yield (start, results, failed offsets) as batches finish, until done or stopped."""
        while True:
            self._dispatch()
            if self._stop is not None or (self._exhausted and self._completed == self._read):
                return
            # Every message is accounted for (its failures noted) before any chunk is yielded:
            # the loop may stop at the first.
            chunks = [self._handle(message) for message in self._receive()]
            if self._on_progress is not None and chunks:
                self._on_progress(self._completed, self._total)
            for chunk in chunks:
                if chunk[1]:
                    yield chunk

    def _dispatch(self) -> None:
        """Read items and queue batches until the read-ahead window is full."""
        if self._stop is not None or self._exhausted:
            return
        workers = self._max_workers
        max_outstanding = _BATCHES_PER_WORKER * workers
        size = self._batch
        max_in_flight = min(_MAX_IN_FLIGHT, max(max_outstanding * size, max_outstanding))
        if self._total is not None:
            # Smaller batches towards the end, so the last ones spread over every worker.
            size = min(size, max(1, (self._total - self._read) // max_outstanding))
        full = False
        todo = self._todo
        # A generator may block between items: then each batch read gets a worker at once.
        defer = self._total is not None
        clock = time.perf_counter
        reading = 0.0  # seconds spent in `items` since the last worker started
        while True:
            if (
                self._outstanding >= max_outstanding
                or self._read - self._released + size > max_in_flight
            ):
                full = True
                break
            began = clock()
            batch = list(itertools.islice(self._items, size))
            reading += clock() - began
            if batch:
                if len(batch) > 1:
                    self._splittable = True
                todo.put((self._read, batch))
                self._read += len(batch)
                self._outstanding += 1
                # A worker for this batch, unless an idle one took it. With a sized `items`,
                # only the first at once and the others once the window is read, or as soon
                # as reading turns out slow: see _SPAWN_AFTER.
                if (
                    self._started < workers
                    and self._started < self._outstanding
                    and (not defer or self._started == 0 or reading >= _SPAWN_AFTER)
                    and not todo.empty()
                ):
                    reading = 0.0
                    self._started += 1
                    self._spawn()
            if len(batch) < size:
                self._exhausted = True
                break
        self._window_full = full
        # The same for the batches queued meanwhile: once the workers started keep the queue
        # empty, another one would only cost the caller time.
        while self._started < workers and self._started < self._outstanding and not todo.empty():
            self._started += 1
            self._spawn()

    def _receive(self) -> list[_Message]:
        """Wait until there is something to do; return the messages that arrived.

        Returns an empty list when the call timed out or was cancelled (see ``_stop``).
        """
        self._sleeping = True  # from now on, a worker that posts what we wait for wakes us
        if self._ready():
            self._sleeping = False
        else:
            try:
                if self._deadline is None:
                    _get(self._wakeup)
                else:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        raise queue.Empty
                    _get(self._wakeup, left)
            except queue.Empty:
                self._sleeping = False
                self._cancel("timeout", _TIMEOUT_REASON)
                return []
            self._sleeping = False
        inbox = self._inbox
        messages = [inbox.popleft() for _ in range(len(inbox))]
        self._check_token()
        return messages

    def _ready(self) -> bool:
        """Whether the caller has something to do now; set what wakes it up."""
        token = self._token
        if token is not None and token.cancelled:
            return True
        inbox = self._inbox
        if self._eager or (self._exhausted and self._outstanding <= 1):
            self._wake_at = 1
        elif self._exhausted:
            # Nothing more to read: wake once everything is done, or for the head of the line.
            self._wake_at = self._outstanding
        else:
            # Wake to read more when half of the queued batches are done.
            self._wake_at = max(1, self._outstanding // 2)
        if len(inbox) >= self._wake_at:
            return True
        head = self._head
        # Over a copy (made in C, atomically): workers append to the inbox meanwhile, and a
        # deque that changes size during iteration raises RuntimeError (found by --shake).
        return self._wants_head and any(message[0] == head for message in inbox.copy())

    def _post(self, message: _Message) -> None:
        """Hand a message to the caller (in a worker), waking it if that is what it waits for."""
        inbox = self._inbox
        inbox.append(message)  # before reading _sleeping: see _receive
        if self._sleeping and (
            len(inbox) >= self._wake_at or (self._wants_head and message[0] == self._head)
        ):
            self._sleeping = False
            self._wakeup.put(None)

    def _handle(self, message: _Message) -> tuple[int, list[Any], set[int] | None]:
        start, results, failures, seconds, given_back = message
        n = len(results)
        self._completed += n
        self._outstanding += given_back - 1
        if n:
            size = int(_TARGET_BATCH_SECONDS * n / seconds) if seconds > 0 else _MAX_BATCH
            self._batch = max(1, min(size, _MAX_BATCH, self._batch * _MAX_GROWTH))
        failed: set[int] | None = None
        if failures:
            # Every slot that holds no result: failures, and tasks that ended by Cancelled.
            failed = set()
            for index, exc in failures:
                failed.add(index - start)
                if isinstance(exc, Exception):
                    self._failures[index] = exc
        if self._stop is None:
            if self._fatal is not None or (self._fail_fast and self._failures):
                self._stop = "failure"
            else:
                self._check_token()
        if self._bar is not None and n:
            self._bar.update(n)
        return start, results, failed

    def _check_token(self) -> None:
        """Note a cancellation that did not come from the caller (a failure or a parent)."""
        token = self._token
        if self._stop is None and token is not None and token.cancelled:
            self._stop = "failure" if self._failing else "cancelled"

    def _cancel(self, why: str, reason: str) -> None:
        if self._stop is None:
            self._stop = why
        if self._token is not None:
            self._token.cancel(reason)

    def _close(
        self, error: BaseException | None
    ) -> tuple[list[tuple[int, list[Any], set[int] | None]], BaseException | None]:
        """Stop and join the workers; return the late chunks and what the call must raise.

        A Ctrl-C that lands while closing (anywhere, also outside the waits) closes again with
        that KeyboardInterrupt as the error: closing is idempotent, and a second Ctrl-C
        only stops the waiting, never the clean-up.
        """
        while True:
            try:
                return self._close_once(error)
            except KeyboardInterrupt as again:
                error = again

    def _close_once(
        self, error: BaseException | None
    ) -> tuple[list[tuple[int, list[Any], set[int] | None]], BaseException | None]:
        """One attempt of :meth:`_close`; cancels, waits (within ``grace``) and releases
        whatever an earlier, interrupted attempt did not."""
        abandon = False
        if error is not None:
            if isinstance(error, KeyboardInterrupt):
                abandon = self._interrupted(error)
            elif isinstance(error, GeneratorExit):
                self._cancel("closed", _CLOSED_REASON)
            else:
                self._cancel("aborted", f"fan-out aborted by {type(error).__name__}")
        elif self._stop is not None:
            self._cancel(self._stop, f"fan-out stopped ({self._stop})")
        bounded = self._stop in _BOUNDED_STOPS or self._interrupt is not None
        interrupt = self._shutdown(bounded=bounded, abandon=abandon)
        inbox = self._inbox
        late = [self._handle(inbox.popleft()) for _ in range(len(inbox))]
        me = threading.current_thread()
        stragglers = [
            thread
            for thread, exited in zip(self._threads, self._exits, strict=False)
            if thread is not me and not exited.is_set() and _started(thread)
        ]
        token = self._token
        if self._unregister is not None:
            self._unregister()
        if token is not None:
            token._release()
        if self._bar is not None:
            self._bar.close()
        if stragglers and not self._warned:
            self._warned = True
            self._warn_abandoned(stragglers)
        if interrupt is not None:
            return late, interrupt
        self._error = _group(self._failures, self._read, self._name)
        outcome = _outcome(
            error,
            self._error,
            self._fatal,
            self._stop,
            token,
            name=self._name,
            timeout=self._timeout,
        )
        return late, outcome

    def _interrupted(self, interrupt: BaseException) -> bool:
        """Note a Ctrl-C and cancel the call; return whether it is a second one (stop waiting)."""
        if self._interrupt is None:
            self._interrupt = interrupt
        self._cancel("interrupt", _INTERRUPT_REASON)
        return interrupt is not self._interrupt

    def _grace_deadline(self) -> float | None:
        """When a bounded wait for the tasks ends (``None``: never): ``grace`` from the first
        bounded wait, so that closing again after a Ctrl-C does not wait it twice."""
        deadline = self._until
        if deadline is None:
            grace = _lock_timeout(self._grace)  # past the platform's limit: no deadline
            if grace is not None:
                deadline = self._until = time.monotonic() + grace
        return deadline

    def _shutdown(self, *, bounded: bool, abandon: bool = False) -> BaseException | None:
        """Stop the workers and wait for them (within ``grace`` when bounded, not at all when
        abandoning); return a Ctrl-C that landed meanwhile."""
        # One stop per worker, so that they all end at once; each also passes one on (see
        # _serve), for a worker whose start() is still under way.
        for _ in range(max(1, len(self._threads))):
            self._todo.put(None)
        interrupt: BaseException | None = None
        deadline = None
        if abandon:
            deadline = time.monotonic()
        elif bounded:
            deadline = self._grace_deadline()
        me = threading.current_thread()
        index = 0
        while True:
            try:
                while index < len(self._threads):
                    thread = self._threads[index]
                    if thread is not me:
                        left = None if deadline is None else deadline - time.monotonic()
                        _join(thread, self._exits[index], left)
                    index += 1
            except KeyboardInterrupt as exc:
                if self._interrupted(exc):
                    return exc  # a second Ctrl-C: stop waiting at once
                interrupt = exc
                if deadline is None:
                    deadline = self._grace_deadline()
                continue
            return interrupt

    def _warn_abandoned(self, stragglers: list[threading.Thread]) -> None:
        names = {t.name for t in stragglers}
        tasks: list[str] = []
        for running in list(self._running):
            if running is None:
                continue
            start, batch, _, results = running
            offset = len(results)
            if offset < len(batch):
                tasks.append(f"item {start + offset} ({_short(batch[offset])})")
        what = ", ".join(tasks) if tasks else "unknown tasks"
        warnings.warn(
            f"fan-out {self._name!r} abandoned {len(names)} thread(s) running tasks that "
            f"ignored cancellation for {self._grace} s: {what} in {', '.join(sorted(names))}",
            ResourceWarning,
            stacklevel=5,  # _warn_abandoned, _close_once, _close, the front end: the caller
        )

    # -- the workers' side ----------------------------------------------------------------

    def _spawn(self) -> None:
        """Start one more worker (in the calling thread)."""
        slot = len(self._running)
        self._running.append(None)
        exited = threading.Event()
        thread = threading.Thread(
            target=self._work, args=(slot, exited), name=f"{self._name}-{slot}", daemon=True
        )
        # Listed before it starts: a Ctrl-C landing in start() (while it waits for the new
        # thread) must not leave a running worker that shutdown never joins. _exits first:
        # shutdown reads _exits[i] for every thread in _threads.
        self._exits.append(exited)
        self._threads.append(thread)
        try:
            thread.start()
        except BaseException as exc:
            error = _unmasked(exc)  # a Ctrl-C that CPython turned into RuntimeError
            if not _os_thread_exists(thread, exc):  # where exc left start(), as in _thread
                # Out of threads, or a Ctrl-C before the OS thread existed: it never runs, so
                # nothing waits for it, and threading must not list it for ever.
                del self._threads[-1]
                del self._exits[-1]
                _forget_unstarted(thread)
                if isinstance(error, Exception) and self._threads:
                    return  # out of threads: the workers that did start do the work
            if error is not exc:
                raise error from None
            raise

    def _work(self, slot: int, exited: threading.Event) -> None:
        try:
            self._serve(slot)
        finally:
            exited.set()

    def _serve(self, slot: int) -> None:
        token = self._token
        assert token is not None
        get = self._todo.get
        post = self._post
        fn = self._fn
        base = self._base
        running = self._running
        # Context.run(context, fn, item), typed for the map() below.
        run = cast(Callable[[Context, Callable[[T], R], T], R], Context.run)
        copy = Context.copy
        repeat = itertools.repeat
        clock = time.perf_counter
        while True:
            job = get()
            if job is None:
                self._todo.put(None)  # for the next worker
                return
            if token._cancelled:
                continue
            start, batch = job
            results: list[Any] = []
            failures: list[tuple[int, BaseException]] | None = None
            given_back = 0
            began = clock()
            try:
                # The tasks iterate over `view`: clearing it (an atomic list operation) from
                # another thread stops the batch before its next task; `batch` stays intact,
                # so what did not run is exactly batch[len(results):].
                view = batch.copy()
                running[slot] = (start, batch, view, results)
                if token._cancelled:
                    view.clear()
                # Each task in a fresh copy of the base context, all at C speed.
                tasks = map(run, map(copy, repeat(base)), repeat(fn), view)
                while True:
                    try:
                        results.extend(tasks)
                        break
                    except BaseException as exc:  # reported to the caller
                        index = start + len(results)
                        item = batch[len(results)]
                        results.append(None)
                        if failures is None:
                            failures = []
                        failures.append((index, exc))
                        if isinstance(exc, Cancelled) and token._cancelled:
                            view.clear()  # the call's own cancellation: not a failure
                            continue
                        _add_note(exc, f"fan-out item {index}: {_short(item)}")
                        if not isinstance(exc, Exception):
                            self._fatal_error(exc, token)
                        elif self._fail_fast:
                            self._failing = True
                            token.cancel(f"fan-out task {index} failed")
                running[slot] = None
                done = len(results)
                if done < len(batch) and not token._cancelled:
                    given_back = self._give_back(start + done, batch[done:])
            except BaseException as exc:  # a bug or MemoryError: stop the call
                running[slot] = None
                self._fatal_error(exc, token)
            post((start, results, failures, clock() - began, given_back))
            if self._splittable and (self._exhausted or self._window_full):
                self._steal(slot)

    def _fatal_error(self, exc: BaseException, token: CancelToken) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._failing = True
        token.cancel(f"fan-out task raised {type(exc).__name__}")

    def _give_back(self, start: int, rest: list[T]) -> int:
        """Queue the items of a batch that was cut short; return how many batches."""
        size = max(1, min(self._batch, -(-len(rest) // self._max_workers)))
        count = 0
        for offset in range(0, len(rest), size):
            self._todo.put((start + offset, rest[offset : offset + size]))
            count += 1
        return count

    def _steal(self, slot: int) -> None:
        """Cut short the other workers' batches when this one has nothing left to do.

        Their workers queue what they did not run, in smaller batches, for idle workers to
        take: a batch of tasks that turned out slow cannot hold up the end of the call.
        """
        if not self._todo.empty():
            return
        for other, running in enumerate(list(self._running)):
            if other != slot and running is not None:
                _, batch, view, results = running
                if len(batch) - len(results) > 1:
                    view.clear()

    def _on_cancel(self) -> None:
        # Runs in the thread that cancelled the token: stop every batch before its next task,
        # then wake the caller.
        for running in list(self._running):
            if running is not None:
                running[2].clear()
        self._wakeup.put(None)


def _group(failures: dict[int, Exception], read: int, name: str) -> FanOutError | None:
    """The FanOutError of a call's failures (``results`` empty: join fills it in), or None."""
    if not failures:
        return None
    failed = dict(sorted(failures.items()))
    msg = f"{len(failed)} of {read} task(s) of fan-out {name!r} failed"
    return FanOutError(msg, list(failed.values()), (), failed)


def _outcome(
    error: BaseException | None,
    group: FanOutError | None,
    fatal: BaseException | None,
    stop: str | None,
    token: CancelToken | None,
    *,
    name: str,
    timeout: float | None,
) -> BaseException | None:
    """What a finished call raises, in order of precedence (``None``: it returns normally).

    Shared by the thread and executor paths; a Ctrl-C during shutdown comes first, and is
    handled by the caller.
    """
    if error is not None:
        if group is not None and isinstance(error, Exception) and error.__context__ is None:
            error.__context__ = group  # the failures so far are not lost
        return error
    if fatal is not None:
        return fatal
    if stop == "timeout":
        msg = f"fan-out {name!r} timed out after {timeout!r} seconds"
        timeout_error = TimeoutError(msg)
        timeout_error.__cause__ = group
        return timeout_error
    if group is not None:
        return group
    if stop == "cancelled" and token is not None:
        return Cancelled(token.reason)
    return None


def _join(thread: threading.Thread, exited: threading.Event, timeout: float | None) -> None:
    """Wait for a worker to end, also one whose start() a Ctrl-C interrupted.

    Waits on the worker's own ``exited`` event, set as its last act, and joins the thread
    only once that is set (then join() returns at once).
    """
    if timeout is not None:
        timeout = max(0.0, timeout)
    # The event the new thread sets once it runs (Thread._started on 3.11-3.13, not in
    # typeshed). A start() interrupted before the thread was created never sets it.
    started: threading.Event = vars(thread)["_started"]
    if not (started.is_set() or _wait(started, _STARTING_GRACE if timeout is None else timeout)):
        return
    if _wait(exited, timeout):
        thread.join()


def _started(thread: threading.Thread) -> bool:
    """Whether the thread ran (see _join): one whose start() failed is no straggler."""
    started: threading.Event = vars(thread)["_started"]
    return started.is_set()


def _values(results: list[Any], failed: set[int] | None) -> Iterator[Any]:
    if failed is None:
        return iter(results)
    return (r for i, r in enumerate(results) if i not in failed)


def _in_order(chunks: dict[int, list[Any]], read: int) -> list[Any]:
    """The results in input order, with None for items that never ran."""
    out: list[Any] = []
    for start in sorted(chunks):
        if start > len(out):
            out.extend([None] * (start - len(out)))
        out.extend(chunks[start])
    if len(out) < read:
        out.extend([None] * (read - len(out)))
    return out


def _short(item: object) -> str:
    try:
        return _short_repr.repr(item)
    except Exception:  # a broken __repr__ must not hide the task's error
        return f"<{type(item).__name__} object>"


def _add_note(exc: BaseException, note: str) -> None:
    with contextlib.suppress(TypeError):  # __notes__ replaced by something that is not a list
        exc.add_note(note)


def _default_workers() -> int:
    # What ThreadPoolExecutor uses (os.process_cpu_count() on 3.13+).
    counter = getattr(os, "process_cpu_count", os.cpu_count)
    return min(32, (counter() or 1) + 4)


def _tqdm() -> Callable[..., _Bar]:
    try:
        module = importlib.import_module("tqdm")
    except ImportError as exc:
        msg = (
            "progress=True needs tqdm, which is not installed; "
            "install the extra: pip install 'threadkit[progress]'"
        )
        raise ImportError(msg, name="tqdm") from exc
    # tqdm's monitor thread (started by the first bar, never stopped) would outlive the call;
    # it only helps bars that wrap an iterator, and ours is updated by hand.
    factory: Callable[..., _Bar] = type("tqdm", (module.tqdm,), {"monitor_interval": 0})
    return factory
