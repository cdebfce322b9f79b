"""Implements ThreadGroup, structured concurrency for threads."""

from __future__ import annotations

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
    _check_seconds,
    _current,
    _lock_timeout,
    current_token,
)
from ._thread import ManagedThread, ThreadState

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
    * Ctrl-C while the block waits cancels every task, waits ``grace`` seconds
      for them, and re-raises :class:`KeyboardInterrupt` (a second Ctrl-C
      re-raises at once).

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
        self._all_done = threading.Condition(self._lock)
        self._threads: list[ManagedThread[Any]] = []
        self._failed: set[ManagedThread[Any]] = set()  # decided as each task ends
        self._running = 0
        self._entered = False
        self._closed = False
        self._token: CancelToken | None = None
        self._cancelled_by: str | None = None  # "failure", "timeout", "body", "interrupt", "cancel"
        self._timer: threading.Timer | None = None
        self._grace_deadline: float | None = None
        self._reset_token: Any = None

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
        self._token = current_token().child()
        if self._deadline_seconds is not None:
            self._timer = threading.Timer(self._deadline_seconds, self._on_deadline)
            self._timer.name = f"{self._name}-deadline"
            self._timer.daemon = True
            self._timer.start()
        self._reset_token = _current.set(self._token)
        return self

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
        with self._lock:
            if self._token is None:
                msg = "cannot spawn into a thread group before entering it"
                raise RuntimeError(msg)
            if self._closed:
                msg = f"cannot spawn into thread group {self._name!r}: it is closed"
                raise RuntimeError(msg)
            index = len(self._threads)
            thread: ManagedThread[R] = ManagedThread(
                target=fn,
                args=args,
                name=name if name is not None else f"{self._name}-{index}",
                daemon=True,
                token=self._token.child(),
            )
            thread._tk_on_done = self._task_done
            self._threads.append(thread)
            self._running += 1
        try:
            thread.start()
        except Exception:
            # No thread was started ("can't start new thread"): undo the bookkeeping. A Ctrl-C
            # that lands inside start() is not caught here: the thread is running by then, and
            # stays the group's to cancel and join.
            with self._lock:
                self._threads.remove(thread)
                self._running -= 1
            thread.token._release()
            raise
        return thread

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
        token = self.token
        _current.reset(self._reset_token)
        interrupt = exc if isinstance(exc, KeyboardInterrupt) else None
        if exc is not None:
            self._cancel("interrupt" if interrupt else "body", _reason_for(exc))
        try:
            try:
                self._wait()
            except KeyboardInterrupt as first:
                if interrupt is not None:
                    raise  # a second Ctrl-C: stop waiting at once
                interrupt = first
                self._cancel("interrupt", _INTERRUPT_REASON)
                self._wait()  # bounded by the grace period; a second Ctrl-C ends it at once
        finally:
            self._finish()
        if interrupt is not None:
            failures = self._failures()
            if failures and interrupt.__context__ is None:
                # The interrupt wins, but the failures that came before it are not lost.
                msg = f"{len(failures)} task(s) of thread group {self._name!r} failed"
                interrupt.__context__ = BaseExceptionGroup(msg, failures)
            if interrupt is exc:
                return False  # the body's KeyboardInterrupt propagates
            raise interrupt
        failures = self._failures()
        if failures:
            if exc is not None and not self._is_own_cancellation(exc, token):
                failures.insert(0, exc)
            msg = f"{len(failures)} task(s) of thread group {self._name!r} failed"
            raise BaseExceptionGroup(msg, failures)
        if self._cancelled_by == "timeout" and (exc is None or isinstance(exc, Cancelled)):
            msg = f"thread group {self._name!r} timed out after {self._timeout!r} seconds"
            raise TimeoutError(msg) from exc
        if isinstance(exc, Cancelled) and self._cancelled_by == "cancel":
            return True  # the body saw the group's own cancel(): that was asked for
        if exc is not None:
            return False
        if self._cancelled_by is None and token.cancelled:
            # Cancelled from outside: by a parent token.
            raise Cancelled(token.reason)
        return False

    # -- internals ------------------------------------------------------------------------

    def _cancel(self, why: str, reason: str | None) -> None:
        token = self._token
        if token is None:
            msg = "cannot cancel a thread group before entering it"
            raise RuntimeError(msg)
        with self._all_done:
            if self._cancelled_by is None and not token.cancelled:
                self._cancelled_by = why
            if why in _BOUNDED and self._grace_deadline is None:
                # Tasks get `grace` seconds to notice; then the waiter stops waiting for them.
                self._grace_deadline = time.monotonic() + self._grace
                self._all_done.notify_all()
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
            with self._all_done:
                self._running -= 1
                if self._running == 0:
                    self._all_done.notify_all()

    def _wait(self) -> None:
        with self._all_done:
            # Closing under the lock: no spawn can slip in after the last task is counted.
            self._closed = True
            while self._running:
                if self._grace_deadline is None:
                    self._all_done.wait()
                    continue
                left = self._grace_deadline - time.monotonic()
                if left <= 0:
                    return
                self._all_done.wait(_lock_timeout(left))

    def _finish(self) -> None:
        with self._lock:
            self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
        stragglers: list[ManagedThread[Any]] = []
        for thread in self._threads:
            if thread.state.finished:
                # Its lifecycle is over but its OS thread may still be unwinding: nothing of the
                # group may outlive the block, so wait for that (it takes microseconds).
                thread.join()
            else:
                stragglers.append(thread)
        if stragglers:
            names = ", ".join(repr(t.name) for t in stragglers)
            warnings.warn(
                f"thread group {self._name!r} abandoned {len(stragglers)} task(s) still running "
                f"after cancellation (grace {self._grace} s): {names}",
                ResourceWarning,
                stacklevel=3,
            )
        if self._token is not None:
            self._token._release()

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
