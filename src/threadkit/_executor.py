"""Implements the ``executor=`` path of fan_out and fan_out_and_join: one future per item."""

from __future__ import annotations

import functools
import queue
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, Generic, TypeGuard, TypeVar

from ._cancel import Cancelled, CancelToken, _current, _get, _lock_timeout
from ._fanout import (
    _BOUNDED_STOPS,
    _CLOSED_REASON,
    _INTERRUPT_REASON,
    _MAX_IN_FLIGHT,
    _TIMEOUT_REASON,
    FanOutError,
    _add_note,
    _Bar,
    _Call,
    _group,
    _outcome,
    _short,
)

__all__ = ["ExecutorCall"]

T = TypeVar("T")
R = TypeVar("R")

#: Futures in flight per worker of the executor, by default: one running, one queued behind
#: it, so a worker that finishes a task has the next one at hand while the caller refills.
_IN_FLIGHT_PER_WORKER = 2
#: Futures in flight by default when the executor's number of workers cannot be found.
_DEFAULT_IN_FLIGHT = 32
#: Items named in the warning about abandoned tasks.
_NAMED = 5

#: What a finished future gives the caller: (index, succeeded, result or None).
_Outcome = tuple[int, bool, Any]


class ExecutorCall(Generic[T, R]):
    """One fan-out call whose tasks are futures of an Executor, run from the calling thread.

    Everything happens in the calling thread: it reads ``items``, submits one future per
    item while fewer than ``limit`` are unfinished, and waits for the futures' done callbacks
    (which run in the executor's threads and only queue the item's index). No thread of
    threadkit's own is started.
    """

    def __init__(self, call: _Call[T, R], executor: Executor) -> None:
        self._call = call
        self._executor = executor
        # An in-process pool runs each task in a copy of the caller's context, with the call's
        # token, as threadkit's own workers do; nothing of that can be sent to another process.
        self._in_process = isinstance(executor, ThreadPoolExecutor)
        self._limit = call._in_flight or 0  # 0: from the executor, at the start
        # Done callbacks -> caller: the index of a finished future, or None to wake it up.
        self._done: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        # The futures not yet seen finished by the caller, with their items (for the notes).
        self._pending: dict[int, tuple[Future[R], T]] = {}
        self._token: CancelToken | None = None
        self._unregister: Callable[[], None] | None = None
        self._bar: _Bar | None = None
        self._deadline: float | None = None
        self._read = 0  # items read from `items`, each submitted as one future
        self._completed = 0  # futures seen finished (failed and cancelled ones included)
        self._released = 0  # outcomes handed over to the consumer
        self._exhausted = False
        # Why the call stops: as _Call._stop.
        self._stop: str | None = None
        self._failures: dict[int, Exception] = {}
        self._fatal: BaseException | None = None
        self._error: FanOutError | None = None
        self._interrupt: BaseException | None = None  # the first Ctrl-C the call saw
        self._until: float | None = None  # the end of the bounded wait for the tasks
        self._warned = False  # the abandoned-task warning was given

    # -- front ends -----------------------------------------------------------------------

    def join(self) -> list[R]:
        ordered = self._call._ordered
        slots: list[Any] = []  # the results by index
        arrival: list[int] = []  # with ordered=False, the indices in completion order
        error: BaseException | None = None
        try:
            try:
                self._start()
                for index, ok, value in self._outcomes():
                    self._released += 1
                    if ok:
                        _put(slots, index, value)
                        if not ordered:
                            arrival.append(index)
            except BaseException as exc:
                error = exc
            late, error = self._close(error, stacklevel=6)
        except KeyboardInterrupt as exc:  # landed while closing: close again (idempotent)
            late, error = self._close(exc, stacklevel=6)
        if error is not None:
            group = self._error
            # The group is raised, or rides on a TimeoutError or an error from `items`.
            if group is not None:
                for index, ok, value in late:
                    if ok:
                        _put(slots, index, value)
                slots.extend([None] * (self._read - len(slots)))
                group.results = slots
            raise error
        if ordered:
            return slots
        return [slots[index] for index in arrival]

    def stream(self) -> Generator[R, None, None]:
        error: BaseException | None = None
        try:
            try:
                self._start()
                if self._call._ordered:
                    held: dict[int, tuple[bool, Any]] = {}
                    head = 0
                    for index, ok, value in self._outcomes():
                        if self._stop is not None:
                            break
                        held[index] = (ok, value)
                        while head in held:
                            succeeded, result = held.pop(head)
                            head += 1
                            self._released += 1
                            if succeeded:
                                yield result
                else:
                    for _, ok, value in self._outcomes():
                        if self._stop is not None:
                            break
                        self._released += 1
                        if ok:
                            yield value
            except BaseException as exc:
                error = exc
            _, error = self._close(error, stacklevel=4)
        except KeyboardInterrupt as exc:  # landed while closing: close again (idempotent)
            _, error = self._close(exc, stacklevel=4)
        if error is not None and not isinstance(error, GeneratorExit):
            raise error

    # -- the calling thread ---------------------------------------------------------------

    def _start(self) -> None:
        call = self._call
        if not self._limit:
            self._limit = _default_in_flight(self._executor)
        token = self._token = call._parent.child()
        if self._in_process:
            call._base.run(_current.set, token)
        self._unregister = token.on_cancel(self._wake)
        timeout = _lock_timeout(call._timeout)  # past the platform's limit: no deadline
        if timeout is not None:
            self._deadline = time.monotonic() + timeout
        if call._bar_factory is not None:
            self._bar = call._bar_factory(
                total=call._total, desc=call._name, unit="task", file=sys.stderr
            )

    def _outcomes(self) -> Iterator[_Outcome]:
        """Yield an outcome per finished future, keeping the executor fed, until done or stopped."""
        call = self._call
        on_progress = call._on_progress
        while True:
            self._submit()
            if self._stop is not None or (self._exhausted and not self._pending):
                return
            # Every outcome is accounted for (its failure noted) before any is yielded: the
            # loop may stop at the first.
            outcomes = [self._settle(index) for index in self._wait()]
            if outcomes:
                self._completed += len(outcomes)
                if self._bar is not None:
                    self._bar.update(len(outcomes))
                if on_progress is not None:
                    on_progress(self._completed, call._total)
            yield from outcomes

    def _submit(self) -> None:
        """Read items and submit them while fewer than ``limit`` futures are unfinished."""
        if self._stop is not None or self._exhausted:
            return
        call = self._call
        items = call._items
        fn = call._fn
        submit = self._executor.submit
        base = call._base if self._in_process else None
        pending = self._pending
        limit = self._limit
        notify = self._notify
        # Unfinished futures, and finished ones held back for the consumer (ordered fan_out),
        # are both bounded: memory does not grow with the number of items.
        while len(pending) < limit and self._read - self._released < _MAX_IN_FLIGHT:
            try:
                item = next(items)
            except StopIteration:
                self._exhausted = True
                return
            index = self._read
            self._read = index + 1
            # Ctrl-C is held back until the future is recorded: the executor's submit() is not
            # interrupt-safe (a KeyboardInterrupt inside ThreadPoolExecutor.submit can leave
            # one of the pool's locks held, and its shutdown hangs for ever). Besides, the
            # submit and its bookkeeping share one line, and _drain catches up with a future
            # whose done callback was never added.
            with _SigintDeferred():
                if base is None:
                    pending[index] = (future := submit(fn, item), item)
                else:
                    pending[index] = (future := submit(base.copy().run, fn, item), item)
                future.add_done_callback(functools.partial(notify, index))

    def _notify(self, index: int, _: Future[R]) -> None:
        # A done callback: runs in the executor's thread (or at once, in the calling thread,
        # for a future that is already done). It must not block.
        self._done.put(index)

    def _wake(self) -> None:
        # The token's on_cancel callback (a failure, a timeout, a parent token, ...).
        self._done.put(None)

    def _wait(self) -> list[int]:
        """Wait for finished futures; return their indices (none when timed out or cancelled)."""
        done = self._done
        try:
            if self._deadline is None:
                first = _get(done)
            else:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                first = _get(done, left)
        except queue.Empty:
            self._cancel("timeout", _TIMEOUT_REASON)
            return []
        ready = [first, *(done.get() for _ in range(done.qsize()))]
        token = self._token
        if self._stop is None and token is not None and token.cancelled:
            self._stop = "cancelled"  # a parent token; the call's own stops set _stop first
        return [index for index in ready if index is not None]

    def _settle(self, index: int) -> _Outcome:
        """Account for a finished future: its result, or its failure (noted, and recorded)."""
        future, item = self._pending.pop(index)
        exc: BaseException | None
        if future.cancelled():
            if self._stop is not None:
                return (index, False, None)  # cancelled by this call
            exc = CancelledError("the executor cancelled the task")
        else:
            exc = future.exception()
            if exc is None:
                return (index, True, future.result())
        token = self._token
        if isinstance(exc, Cancelled) and token is not None and token.cancelled:
            return (index, False, None)  # the call's own cancellation, seen by the task
        _add_note(exc, f"fan-out item {index}: {_short(item)}")
        if not isinstance(exc, Exception):
            if self._fatal is None:
                self._fatal = exc
            self._cancel("failure", f"fan-out task raised {type(exc).__name__}")
        else:
            self._failures[index] = exc
            if self._call._fail_fast:
                self._cancel("failure", f"fan-out task {index} failed")
        return (index, False, None)

    def _cancel(self, why: str, reason: str) -> None:
        if self._stop is None:
            self._stop = why
        if self._token is not None:
            self._token.cancel(reason)

    def _close(
        self, error: BaseException | None, *, stacklevel: int
    ) -> tuple[list[_Outcome], BaseException | None]:
        """Cancel what has not started, wait for what runs; return the late outcomes and
        what the call must raise.

        A Ctrl-C that lands while closing (anywhere, also outside the waits) closes again
        with that KeyboardInterrupt as the error: closing is idempotent.
        """
        while True:
            try:
                return self._close_once(error, stacklevel=stacklevel + 1)
            except KeyboardInterrupt as again:
                error = again

    def _close_once(
        self, error: BaseException | None, *, stacklevel: int
    ) -> tuple[list[_Outcome], BaseException | None]:
        """One attempt of :meth:`_close`."""
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
        late, interrupt = self._drain(bounded=bounded, abandon=abandon)
        stragglers = sorted(self._pending.items())
        token = self._token
        if self._unregister is not None:
            self._unregister()
        if token is not None:
            token._release()
        if self._bar is not None:
            self._bar.close()
        if stragglers and not self._warned:
            self._warned = True
            self._warn_abandoned(stragglers, stacklevel)
        if interrupt is not None:
            return late, interrupt
        call = self._call
        self._error = _group(self._failures, self._read, call._name)
        outcome = _outcome(
            error,
            self._error,
            self._fatal,
            self._stop,
            token,
            name=call._name,
            timeout=call._timeout,
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
            grace = _lock_timeout(self._call._grace)  # past the platform's limit: no deadline
            if grace is not None:
                deadline = self._until = time.monotonic() + grace
        return deadline

    def _drain(
        self, *, bounded: bool, abandon: bool = False
    ) -> tuple[list[_Outcome], BaseException | None]:
        """Cancel the pending futures and wait for the rest (within ``grace`` when bounded,
        not at all when abandoning).

        Returns the outcomes of the futures that finished meanwhile, and a Ctrl-C that
        arrived while waiting.
        """
        pending = self._pending
        # A future that has started cannot be cancelled (cancel() returns False): it is waited
        # for. What "started" means is the executor's: a ProcessPoolExecutor's futures start
        # when they are queued for a worker process; a Dask ClientExecutor's never do, so all
        # can be cancelled (a task already running on a worker finishes there, unseen).
        for future, _ in list(pending.values()):
            future.cancel()
        deadline = None
        if abandon:
            deadline = time.monotonic()
        elif bounded:
            deadline = self._grace_deadline()
        done = self._done
        late: list[_Outcome] = []
        interrupt: BaseException | None = None
        # A Ctrl-C can drop the index of a finished future (taken from the queue, not yet
        # settled) or land before the last future's done callback was added: once the call
        # was interrupted, the futures themselves are the truth, the queue only a wake-up.
        catch_up = self._interrupt is not None
        while pending:
            try:
                if catch_up:
                    catch_up = False
                    self._catch_up(late)
                    continue
                if deadline is None:
                    index = _get(done)
                else:
                    left = deadline - time.monotonic()
                    index = _get(done, left) if left > 0 else done.get(block=False)
                if index is not None and index in pending:
                    late.append(self._settle(index))
            except queue.Empty:
                break
            except KeyboardInterrupt as exc:
                if self._interrupted(exc):
                    return late, exc  # a second Ctrl-C: stop waiting at once
                interrupt = exc
                catch_up = True
                if deadline is None:
                    deadline = self._grace_deadline()
        return late, interrupt

    def _catch_up(self, late: list[_Outcome]) -> None:
        """Settle the pending futures that are done; make sure the last one wakes the drain."""
        pending = self._pending
        last = self._read - 1
        if last in pending:  # its add_done_callback may not have run (an extra one is ignored)
            pending[last][0].add_done_callback(functools.partial(self._notify, last))
        for index in [index for index, (future, _) in pending.items() if future.done()]:
            late.append(self._settle(index))

    def _warn_abandoned(
        self, stragglers: list[tuple[int, tuple[Future[R], T]]], level: int
    ) -> None:
        named = ", ".join(
            f"item {index} ({_short(item)})" for index, (_, item) in stragglers[:_NAMED]
        )
        if len(stragglers) > _NAMED:
            named += f" and {len(stragglers) - _NAMED} more"
        call = self._call
        warnings.warn(
            f"fan-out {call._name!r} abandoned {len(stragglers)} task(s) still running on "
            f"{type(self._executor).__name__} after {call._grace} s: {named}",
            ResourceWarning,
            stacklevel=level,
        )


class _SigintDeferred:
    """Hold back SIGINT's Python handler (Ctrl-C) in the main thread until the block ends.

    A SIGINT that arrives meanwhile is recorded, and the handler runs as the block is
    left (so a ``KeyboardInterrupt`` is raised there, after the block's last statement).
    Outside the main thread, or when SIGINT has no Python handler, it does nothing.
    """

    __slots__ = ("_pending", "_previous")

    def __init__(self) -> None:
        self._previous: Callable[[int, FrameType | None], Any] | None = None
        self._pending: int | None = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            self._previous = handler  # before the swap: __exit__ only undoes a swap made
            signal.signal(signal.SIGINT, self._record)

    def _record(self, signum: int, _: FrameType | None) -> None:
        if self._pending is None:
            self._pending = signum

    def __exit__(self, *exc_info: object) -> None:
        previous = self._previous
        if previous is None:
            return
        signal.signal(signal.SIGINT, previous)
        if self._pending is not None:
            previous(self._pending, sys._getframe(1))


def _put(slots: list[Any], index: int, value: object) -> None:
    """Set ``slots[index]``, growing the list with ``None`` as needed."""
    if index >= len(slots):
        slots.extend([None] * (index + 1 - len(slots)))
    slots[index] = value


def _default_in_flight(executor: Executor) -> int:
    """How many futures a call keeps in flight on ``executor`` when ``max_workers`` is None."""
    workers = _workers(executor)
    return _IN_FLIGHT_PER_WORKER * workers if workers else _DEFAULT_IN_FLIGHT


def _workers(executor: Executor) -> int | None:
    """The number of tasks ``executor`` runs at once, when it can be found out."""
    # The standard library's pools (and loky's) keep it in _max_workers.
    count: object = getattr(executor, "_max_workers", None)
    if _is_count(count):
        return count
    # A Dask ClientExecutor keeps its Client in _client: ask the scheduler for the threads
    # of its workers (one round trip, once per call). An asynchronous client cannot answer
    # synchronously.
    client = getattr(executor, "_client", None)
    nthreads = getattr(client, "nthreads", None)
    if callable(nthreads) and getattr(client, "asynchronous", True) is False:
        try:
            threads: object = nthreads()
        except Exception:  # the executor still runs the tasks, with the default bound
            return None
        if isinstance(threads, dict):
            counts: list[object] = list(threads.values())  # pyright: ignore[reportUnknownArgumentType]
            total = sum(n for n in counts if _is_count(n))
            return total or None
    return None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
