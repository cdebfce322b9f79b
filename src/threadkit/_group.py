"""Implements ThreadGroup, structured concurrency for threads."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple, final

from ._cancel import (
    Cancelled,
    CancelToken,
    _acquire,
    _check_seconds,
    _current,
    _lock_timeout,
    current_token,
)
from ._thread import (
    ManagedThread,
    ThreadState,
    _forget_unstarted,
    _os_thread_exists,
    _started,
)

__all__ = ["ThreadGroup"]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

#: How long a group waits for tasks to observe a timeout or Ctrl-C before abandoning them.
DEFAULT_GRACE = 1.0

_TIMEOUT_REASON = "thread group timed out"
_INTERRUPT_REASON = "interrupted (KeyboardInterrupt)"
# Cancellations after which the group waits only `grace` seconds for its tasks.
_BOUNDED = frozenset({"timeout", "interrupt"})


@final
class ThreadGroup:
    """A ``with`` block whose threads all finish before the block is left.

    Tasks started with :meth:`spawn` run in their own :class:`ManagedThread`.
    Leaving the block waits for every one of them. When a task fails, its
    siblings are cancelled, and leaving the block raises an
    :class:`ExceptionGroup` (a :class:`BaseExceptionGroup` if a failure is not an
    ``Exception``) of every failure, in spawn order. Tasks that end by
    :class:`Cancelled` because the group cancelled them are not failures.

    * When the body raises, every task is cancelled and joined, then the
      exception propagates (grouped with the task failures, if there were any).
    * ``timeout`` cancels the group at the deadline, whether the body is still
      running or already waiting at the end of the block; leaving the block
      then raises :class:`TimeoutError`.
    * When a parent token (the :func:`current_token` where the group was
      entered) cancels the group, leaving the block raises :class:`Cancelled`.
    * Ctrl-C while the block waits (or anywhere while it is left, or in
      :meth:`spawn`) cancels every task, waits ``grace`` seconds for them, and
      re-raises :class:`KeyboardInterrupt` (a second Ctrl-C re-raises at once).
      A task whose thread a Ctrl-C kept from starting is not the group's.

    Inside the body, :func:`current_token` is the group's token, so groups nest.
    Tasks run in daemon threads: a task that ignores cancellation after a
    timeout or Ctrl-C is abandoned after ``grace`` seconds with a
    :class:`ResourceWarning` naming it, and never blocks interpreter exit.
    Groups are not reusable: spawning into a group that is closed is a
    ``RuntimeError``.

    Example:
        >>> import threadkit
        >>> with threadkit.ThreadGroup(name="squares") as g:
        ...     a = g.spawn(pow, 2, 10)
        ...     b = g.spawn(pow, 3, 3, name="cube")
        >>> a.result(), b.result()
        (1024, 27)
    """

    __module__ = "threadkit"

    def __init__(
        self, *, name: str | None = None, timeout: float | None = None, grace: float = DEFAULT_GRACE
    ) -> None:
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, got {name!r}"
            raise TypeError(msg)
        if timeout is not None:
            _check_seconds("timeout", timeout)
        _check_seconds("grace", grace)
        self._name = name if name is not None else f"ThreadGroup-{next(_group_numbers)}"
        self._timeout = timeout
        # A timeout beyond what the platform can wait for is no deadline at all.
        self._deadline_seconds = _lock_timeout(timeout)
        self._grace = grace
        self._lock = threading.Lock()
        # Held by the thread waiting in _wait() while it waits; released (under _lock) to wake
        # it. Not a Condition: Condition.wait releases its lock one statement before the `try`
        # that re-acquires it, so a Ctrl-C there breaks the lock (RuntimeError, tasks leaked).
        self._waiter: threading.Lock | None = None
        self._threads: list[ManagedThread[Any]] = []
        self._failed: set[ManagedThread[Any]] = set()  # decided as each task ends
        self._running = 0
        self._entered = False
        self._closed = False
        self._token: CancelToken | None = None
        self._cancelled_by: str | None = None  # "failure", "timeout", "body", "interrupt", "cancel"
        self._timer: threading.Timer | None = None
        self._grace_deadline: float | None = None
        self._outer: CancelToken | None = None  # the current token when the block was entered
        self._reset_token: contextvars.Token[CancelToken] | None = None
        self._interrupted = False  # a KeyboardInterrupt was seen while leaving the block
        self._warned = False

    def __repr__(self) -> str:
        return f"<ThreadGroup {self._name!r} tasks={len(self._threads)} running={self._running}>"

    @property
    def name(self) -> str:
        """The group's name, used as the prefix of its threads' names."""
        return self._name

    @property
    def token(self) -> CancelToken:
        """The group's token (a child of the token current when the block was entered).

        Raises:
            RuntimeError: the block has not been entered yet.
        """
        if self._token is None:
            msg = "the thread group has not been entered yet"
            raise RuntimeError(msg)
        return self._token

    def __enter__(self) -> Self:
        if self._entered:
            msg = "thread groups are not reusable; make a new ThreadGroup"
            raise RuntimeError(msg)
        self._entered = True
        # Made unlinked, so that an interrupt cannot leave it registered with its parent unseen.
        self._token = CancelToken()
        try:
            outer = self._outer = current_token()
            outer._adopt(self._token)
            if self._deadline_seconds is not None:
                timer = self._timer = threading.Timer(self._deadline_seconds, self._on_deadline)
                timer.name = f"{self._name}-deadline"
                timer.daemon = True
                timer.start()
            self._reset_token = _current.set(self._token)
            return self
        except BaseException as exc:
            # Interrupted (or the timer could not start): __exit__ will not be called, so undo.
            self._closed = True
            self._stop_timer(exc)
            self._token._release()
            self._restore_current()
            raise

    def spawn(
        self, fn: Callable[[*Ts], R], /, *args: *Ts, name: str | None = None
    ) -> ManagedThread[R]:
        """Start ``fn(*args)`` in a new thread of this group and return that thread.

        Use :func:`functools.partial` to pass keyword arguments. The task's
        token is a child of the group's; it runs in a copy of the caller's context.

        Raises:
            RuntimeError: the group is not entered, or already closed.
            TypeError: ``fn`` is not callable, or ``name`` is not a string.
        """
        if not callable(fn):
            msg = f"fn must be callable, got {fn!r}"
            raise TypeError(msg)
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, got {name!r}"
            raise TypeError(msg)
        thread: ManagedThread[R] | None = None
        counted = 0
        try:
            with self._lock:
                if self._token is None:
                    msg = "cannot spawn into a thread group before entering it"
                    raise RuntimeError(msg)
                if self._closed:
                    msg = f"cannot spawn into thread group {self._name!r}: it is closed"
                    raise RuntimeError(msg)
                index = len(self._threads)
                thread = ManagedThread(
                    target=fn,
                    args=args,
                    name=name if name is not None else f"{self._name}-{index}",
                    daemon=True,
                    token=self._token.child(),
                )
                thread._tk_on_done = self._task_done
                self._threads.append(thread)
                # One statement: no interrupt can separate the count from knowing it was made.
                self._running = counted = self._running + 1
            thread.start()
            return thread
        except BaseException:
            # "can't start new thread", or a Ctrl-C. A task whose OS thread exists stays the
            # group's to cancel and join; one that never started is forgotten.
            if thread is not None and (thread.state is ThreadState.CREATED or thread._tk_unstarted):
                self._forget(thread, counted=bool(counted))
            raise

    def _forget(self, thread: ManagedThread[Any], *, counted: bool) -> None:
        with self._lock:
            if thread in self._threads:
                self._threads.remove(thread)
            if counted:
                self._running -= 1
                if self._running == 0:
                    self._wake()
        thread.token._release()

    def cancel(self, reason: str | None = None) -> None:
        """Cancel every task of the group; idempotent, returns at once.

        Leaving the block then raises nothing for tasks that ended by
        :class:`Cancelled` (the cancellation was asked for).
        """
        if reason is not None and not isinstance(reason, str):
            msg = f"reason must be a str or None, got {reason!r}"
            raise TypeError(msg)
        self._cancel("cancel", reason)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # Everything is in one `try`, whose handler finishes the job: a Ctrl-C landing anywhere
        # while leaving still cancels the tasks, waits for them (within the grace period),
        # joins them and restores the current token before it propagates.
        try:
            self._leave(exc)
            self._finish()
        except BaseException as late:
            self._abort(late)
            raise
        return self._outcome(exc)

    # -- internals ------------------------------------------------------------------------

    def _cancel(self, why: str, reason: str | None) -> None:
        token = self._token
        if token is None:
            msg = "cannot cancel a thread group before entering it"
            raise RuntimeError(msg)
        with self._lock:
            if self._cancelled_by is None and not token.cancelled:
                self._cancelled_by = why
            if why in _BOUNDED and self._grace_deadline is None:
                # Tasks get `grace` seconds to notice; then the waiter stops waiting for them.
                self._grace_deadline = time.monotonic() + self._grace
                self._wake()
        token.cancel(reason)

    def _on_deadline(self) -> None:
        self._cancel("timeout", _TIMEOUT_REASON)

    def _task_done(self, thread: ManagedThread[Any]) -> None:
        # Runs last in the task's thread, after all its hooks. Whether it failed is decided
        # now, from its token now: a later cancel() of the finished task must not change it.
        failed = _is_failure(thread)
        try:
            thread.token._release()
            if failed:
                with self._lock:
                    self._failed.add(thread)
                self._cancel("failure", f"sibling task {thread.name!r} failed")
        finally:
            # Even when an on_cancel callback raised a BaseException out of the cancellation,
            # the task is uncounted: leaving the block must not wait for it forever.
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._wake()

    def _wake(self) -> None:
        # Called holding _lock. The waiter only ever acquires its lock and wakers only release
        # it under _lock, so "locked" cannot change between the test and the release.
        waiter = self._waiter
        if waiter is not None and waiter.locked():
            waiter.release()

    def _wait(self) -> None:
        """Wait until no task runs, or until the grace period (after a timeout or Ctrl-C) ends.

        Interrupt-safe: the lock it blocks on is its own, so a KeyboardInterrupt anywhere
        leaves every lock as it should be.
        """
        waiter = threading.Lock()
        waiter.acquire()
        with self._lock:
            # Closing under the lock: no spawn can slip in after the last task is counted.
            self._closed = True
            self._waiter = waiter
        while True:
            with self._lock:
                if not self._running:
                    return
                deadline = self._grace_deadline
            if deadline is None:
                _acquire(waiter)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _acquire(waiter, left)

    def _leave(self, exc: BaseException | None) -> None:
        self.token  # noqa: B018  # raises RuntimeError if the block was never entered
        if isinstance(exc, KeyboardInterrupt):
            self._interrupted = True
            self._cancel("interrupt", _INTERRUPT_REASON)
        elif exc is not None:
            self._cancel("body", _reason_for(exc))
        self._wait()

    def _abort(self, late: BaseException) -> None:
        """Leave the block after ``late`` (a Ctrl-C, most likely) broke into leaving it."""
        if self._token is None:
            return  # never entered: nothing to undo
        try:
            if not isinstance(late, KeyboardInterrupt):
                self._cancel("interrupt", f"leaving thread group raised {type(late).__name__}")
                self._wait()
            elif not self._interrupted:
                # The first Ctrl-C: cancel and give the tasks the grace period. A second one (or
                # one after the body's) stops waiting at once.
                self._interrupted = True
                self._cancel("interrupt", _INTERRUPT_REASON)
                self._wait()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting
        finally:
            self._finish(stacklevel=4)
        if isinstance(late, KeyboardInterrupt):
            self._attach_failures(late)

    def _outcome(self, exc: BaseException | None) -> bool:
        token = self.token
        with self._lock:
            # Read together: a cancel() racing the end of the block sets `_cancelled_by` under
            # the lock before it cancels the token, so the token is never seen cancelled by
            # it with no one to blame (which would raise Cancelled as if a parent did it).
            cancelled_by = self._cancelled_by
            cancelled = token.cancelled
        if isinstance(exc, KeyboardInterrupt):
            self._attach_failures(exc)
            return False  # the body's KeyboardInterrupt propagates
        failures = self._failures()
        if failures:
            if exc is not None and not self._is_own_cancellation(exc, token):
                failures.insert(0, exc)
            msg = f"{len(failures)} task(s) of thread group {self._name!r} failed"
            raise BaseExceptionGroup(msg, failures)
        if cancelled_by == "timeout" and (exc is None or isinstance(exc, Cancelled)):
            msg = f"thread group {self._name!r} timed out after {self._timeout!r} seconds"
            raise TimeoutError(msg) from exc
        if isinstance(exc, Cancelled) and cancelled_by == "cancel":
            return True  # the body saw the group's own cancel(): that was asked for
        if exc is not None:
            return False
        if cancelled_by is None and cancelled:
            # Cancelled from outside: by a parent token.
            raise Cancelled(token.reason)
        return False

    def _attach_failures(self, interrupt: BaseException) -> None:
        failures = self._failures()
        if failures and interrupt.__context__ is None:
            # The interrupt wins, but the failures that came before it are not lost.
            msg = f"{len(failures)} task(s) of thread group {self._name!r} failed"
            interrupt.__context__ = BaseExceptionGroup(msg, failures)

    def _finish(self, stacklevel: int = 3) -> None:
        """Close the group, join its tasks, detach its token, restore the current token.

        Idempotent: after an interrupt, running it again completes it.
        """
        with self._lock:
            self._closed = True
        self._stop_timer()
        stragglers: list[ManagedThread[Any]] = []
        for thread in self._threads:
            if thread.state.finished:
                # Its lifecycle is over but its OS thread may still be unwinding: nothing of the
                # group may outlive the block, so wait for that (it takes microseconds).
                thread.join()
            else:
                stragglers.append(thread)
        if self._token is not None:
            self._token._release()
        self._restore_current()
        if stragglers and not self._warned:
            self._warned = True
            names = ", ".join(repr(t.name) for t in stragglers)
            warnings.warn(
                f"thread group {self._name!r} abandoned {len(stragglers)} task(s) still running "
                f"after cancellation (grace {self._grace} s): {names}",
                ResourceWarning,
                stacklevel=stacklevel,
            )

    def _stop_timer(self, exc: BaseException | None = None) -> None:
        """Stop the deadline timer; ``exc``: what interrupted __enter__ (maybe in its start)."""
        timer = self._timer
        if timer is None:
            return
        timer.cancel()
        if exc is None or _os_thread_exists(timer, exc):
            # Started, or its start was interrupted once the thread existed: it sees the cancel
            # as soon as it runs.
            _started(timer).wait()
            timer.join()
        else:
            _forget_unstarted(timer)

    def _restore_current(self) -> None:
        """Make the token current when the block was entered current again; idempotent."""
        reset = self._reset_token
        if reset is not None:
            # A repeat after an interrupt finds the reset done ("has already been used").
            with contextlib.suppress(RuntimeError):
                _current.reset(reset)
            self._reset_token = None
        elif self._outer is not None and _current.get() is self._token:
            # Interrupted between making the group's token current and keeping the reset token.
            _current.set(self._outer)

    def _failures(self) -> list[BaseException]:
        failed = self._failed
        return [t._tk_exc for t in self._threads if t in failed and t._tk_exc is not None]

    def _is_own_cancellation(self, exc: BaseException, token: CancelToken) -> bool:
        # The body saw the group's own cancellation (because a task failed): not a new error.
        return isinstance(exc, Cancelled) and token.cancelled


def _is_failure(thread: ManagedThread[Any]) -> bool:
    """A finished task failed, unless it ended by Cancelled after being cancelled."""
    state = thread.state
    if state is ThreadState.FAILED:
        return True
    return state is ThreadState.CANCELLED and not thread.token.cancelled


def _reason_for(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return _INTERRUPT_REASON
    return f"thread group body raised {type(exc).__name__}"


# next() on itertools.count is atomic in CPython: no lock needed.
_group_numbers = itertools.count(1)
