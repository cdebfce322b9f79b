"""Implements cooperative cancellation: CancelToken, Cancelled and the current-token context."""

from __future__ import annotations

import builtins
import contextvars
import itertools
import math
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Final, TypeVar, cast, final

__all__ = ["CancelToken", "Cancelled", "check_cancelled", "current_token", "sleep"]

_keys = itertools.count()


class Cancelled(BaseException):
    """Raised inside a task when its :class:`CancelToken` has been cancelled.

    It derives from :class:`BaseException`, not :class:`Exception`, so that an
    ``except Exception:`` in user code does not swallow a cancellation (the same
    choice as :class:`asyncio.CancelledError` and ``trio.Cancelled``). Let it
    propagate: the thread that owns the token turns it into the CANCELLED state.

    Attributes:
        reason: the reason given to :meth:`CancelToken.cancel`, or ``None``.
    """

    __module__ = "threadkit"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(*(() if reason is None else (reason,)))
        self.reason = reason

    def __reduce__(self) -> tuple[type[Cancelled], tuple[str | None]]:
        return (type(self), (self.reason,))


class CancelToken:
    """A thread-safe, one-way cancellation flag that tasks poll or wait on.

    A token starts live and can be cancelled once; cancelling again is a no-op
    (the first reason is kept). A token made with a ``parent`` (or by
    :meth:`child`) is cancelled whenever its parent is, with the parent's reason;
    cancelling a child does not touch its parent.

    Tasks see cancellation through :meth:`raise_if_cancelled` (or
    :func:`check_cancelled`), :meth:`wait` (or :func:`threadkit.sleep`) and,
    for blocking calls that cannot poll, :meth:`on_cancel` callbacks that
    unblock them (close a socket, put a sentinel on a queue).

    Example:
        >>> token = CancelToken()
        >>> child = token.child()
        >>> token.cancel("shutting down")
        >>> child.cancelled, child.reason
        (True, 'shutting down')
    """

    __module__ = "threadkit"
    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_cancelled",
        "_key",
        "_lock",
        "_parent",
        "_reason",
        "_waiters",
    )

    def __init__(self, parent: CancelToken | None = None) -> None:
        if parent is not None and not isinstance(parent, CancelToken):
            msg = f"parent must be a CancelToken or None, got {parent!r}"
            raise TypeError(msg)
        self._lock = threading.Lock()
        self._cancelled = False
        self._reason: str | None = None
        # One lock per blocked wait(), held by its waiter and released to wake it. Created on
        # first wait(): most tokens are polled, never waited on. Not an Event: Event.wait goes
        # through Condition.wait, which a Ctrl-C can break (it releases the condition's lock
        # one statement before the `try` that re-acquires it).
        self._waiters: list[threading.Lock] | None = None
        # Pending on_cancel callbacks and live children, in registration order. Children are
        # kept here as tokens, not as callbacks: cancel() walks the tree with a stack of its own,
        # so a chain of tokens of any depth is cancelled without recursion.
        self._callbacks: dict[int, _Entry] = {}
        # The parent this token is registered with (under `_key`), until it detaches.
        self._parent: CancelToken | None = None
        self._key = 0
        if parent is not None:
            parent._adopt(self)

    def __repr__(self) -> str:
        if self._cancelled:
            state = "cancelled" if self._reason is None else f"cancelled: {self._reason!r}"
        else:
            state = "live"
        return f"<CancelToken {state} at {id(self):#x}>"

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called (on this token or an ancestor)."""
        return self._cancelled

    @property
    def reason(self) -> str | None:
        """The reason passed to the first :meth:`cancel`, or ``None``."""
        return self._reason

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the token, its children, and run its ``on_cancel`` callbacks.

        Idempotent and thread-safe: only the first call has an effect. The
        callbacks run in the calling thread, once each; an exception raised by
        one is reported through :func:`sys.unraisablehook` (printed on stderr by
        default) and does not stop the others; a ``KeyboardInterrupt`` or
        ``SystemExit`` raised in one is re-raised once all have run. So is a
        Ctrl-C that lands inside ``cancel()`` once the token is cancelled: every
        callback and child is still dealt with first.

        Raises:
            TypeError: ``reason`` is not a string or ``None``.
        """
        if reason is not None and not isinstance(reason, str):
            msg = f"reason must be a str or None, got {reason!r}"
            raise TypeError(msg)
        owner = False
        # The tokens whose cancellation is under way, innermost last (see _cancel_subtree).
        stack: list[CancelToken] = [self]
        try:
            with self._lock:
                if self._cancelled:
                    return
                self._reason = reason
                if len(self._callbacks) > 1:
                    _callbacks_in_order(self)
                # One statement: no interrupt can separate the flip from knowing it is ours.
                self._cancelled = owner = True
                idle = not self._callbacks and not self._waiters
            if idle:
                self._release()  # nothing to run, nobody to wake: only detach
            else:
                _cancel_subtree(stack)
        except BaseException:
            if owner:
                # Interrupted where _cancel_subtree could not catch it (or re-raising what a
                # callback raised): finish what is left, then let the interrupt through.
                _cancel_subtree(stack)
            raise

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` (with the token's reason) if the token is cancelled."""
        if self._cancelled:
            raise Cancelled(self._reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is cancelled or ``timeout`` seconds pass.

        Returns:
            Whether the token is cancelled (``False`` means the timeout passed).

        Raises:
            ValueError: ``timeout`` is negative or NaN.
        """
        if timeout is not None:
            _check_seconds("timeout", timeout)
        if self._cancelled:
            return True
        waiter = threading.Lock()
        waiter.acquire()
        with self._lock:
            if self._cancelled:
                return True
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
        try:
            _acquire(waiter, timeout)
        finally:
            with self._lock:
                if not self._cancelled:  # timed out (or interrupted): no longer waiting
                    self._waiters.remove(waiter)
        return self._cancelled

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback()`` once when the token is cancelled.

        This is how a task unblocks a call that cannot poll: register a callback
        that closes the socket or wakes the queue it is blocked on. If the token
        is already cancelled, the callback runs at once in this thread.

        Returns:
            A function that unregisters the callback (a no-op once it has run).

        Raises:
            TypeError: ``callback`` is not callable.
        """
        if not callable(callback):
            msg = f"callback must be callable, got {callback!r}"
            raise TypeError(msg)
        with self._lock:
            if not self._cancelled:
                # A fresh key per registration: the same callable may be registered twice.
                key = next(_keys)
                self._callbacks[key] = callback

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        callback()
        return _noop

    def child(self) -> CancelToken:
        """Return a new token that is cancelled whenever this one is."""
        return CancelToken(self)

    def _adopt(self, child: CancelToken) -> None:
        """Make ``child`` follow this token (cancelled at once, if this one already is)."""
        with self._lock:
            if not self._cancelled:
                key = next(_keys)
                # Linked before registered: a child that knows its parent can always detach.
                child._parent, child._key = self, key
                self._callbacks[key] = child
                return
        child.cancel(self._reason)

    def _release(self) -> None:
        """Detach from the parent so a long-lived parent does not keep this token alive.

        Idempotent, and safe to repeat after an interrupt.
        """
        parent = self._parent
        if parent is not None:
            with parent._lock:
                parent._callbacks.pop(self._key, None)
            self._parent = None

    def _flip(self, reason: str | None) -> None:
        """Mark the token cancelled (if it is not) without running anything."""
        with self._lock:
            if not self._cancelled:
                self._reason = reason
                if len(self._callbacks) > 1:
                    _callbacks_in_order(self)
                self._cancelled = True

    def _finish(self) -> None:
        """The last step of a cancellation: wake the waiters and detach; idempotent."""
        with self._lock:
            # Only this releases a waiter's lock, under _lock: the test cannot go stale. A
            # repeat (after an interrupt) may release a lock its waiter re-took: harmless.
            for waiter in self._waiters or ():
                if waiter.locked():
                    waiter.release()
        self._release()


#: What a token holds for each registration: a callback to run or a child to cancel.
_Entry = Callable[[], object] | CancelToken
#: What _cancel_subtree takes from a token that has nothing left to run.
_DRAINED: Final = object()


def _callbacks_in_order(token: CancelToken) -> None:
    # Called under the token's lock just before it is cancelled: popitem() takes the last
    # entry, so reversing makes callbacks run (and children cancel) in registration order.
    token._callbacks = dict(reversed(token._callbacks.items()))


def _cancel_subtree(stack: list[CancelToken]) -> None:
    """Run the callbacks of the token in ``stack`` (just cancelled) and cancel its subtree.

    Depth first and iterative, so a chain of tokens of any depth is cancelled. Entries
    are taken from their token one at a time and the work in hand lives in local
    variables that survive an exception: a KeyboardInterrupt (raised by a callback, or
    a Ctrl-C landing here) is kept, the loop goes on where it stopped, and it is
    re-raised once everything has run. The caller keeps ``stack``: should an interrupt
    land where no handler covers it (the first lines, a ``try:``), calling this again
    with it picks up the work, since no entry is in hand at those points.
    """
    entry: _Entry | object | None = None  # taken from stack[-1] and not dealt with yet
    started = False  # whether `entry`, a callback, has been called
    error: BaseException | None = None
    while True:
        try:
            while stack:
                token = stack[-1]
                if entry is None:
                    with token._lock:
                        entry = token._callbacks.popitem()[1] if token._callbacks else _DRAINED
                if entry is _DRAINED:
                    token._finish()
                    entry = None
                    stack.pop()  # an interrupt just before this finishes the token again: harmless
                elif isinstance(entry, CancelToken):
                    # Flipping is idempotent, and pushing a token twice only drains it twice.
                    entry._flip(token._reason)
                    stack.append(entry)
                    entry = None
                else:
                    # `started` is set in the very line that calls: an interrupt landing before
                    # that line leaves the callback to be run, one landing in it or after it not.
                    _ = (started := True) and cast(Callable[[], object], entry)()
                    entry, started = None, False
            break
        except BaseException as exc:
            callback, ran = entry, started
            if ran:
                entry, started = None, False
            if ran and isinstance(exc, Exception):
                _report_unraisable(exc, f"Exception ignored in on_cancel callback {callback!r}")
            elif error is None:
                # KeyboardInterrupt or SystemExit, raised by a callback or landing in this loop.
                error = exc
    if error is not None:
        raise error


@final
class _NeverCancelled(CancelToken):
    """The token returned by :func:`current_token` outside any threadkit task."""

    __slots__ = ()

    def cancel(self, reason: str | None = None) -> None:
        msg = (
            "the root token outside any threadkit task cannot be cancelled; "
            "use a ThreadGroup or a CancelToken of your own"
        )
        raise RuntimeError(msg)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        if not callable(callback):
            msg = f"callback must be callable, got {callback!r}"
            raise TypeError(msg)
        # Never cancelled: keeping the callback would only leak it.
        return _noop

    def _adopt(self, child: CancelToken) -> None:
        # Never cancelled: keeping the child would only leak it.
        pass

    def __repr__(self) -> str:
        return "<CancelToken never cancelled (no current task)>"


_NEVER = _NeverCancelled()
_current: contextvars.ContextVar[CancelToken] = contextvars.ContextVar(
    "threadkit_current_token", default=_NEVER
)


def current_token() -> CancelToken:
    """Return the cancellation token of the task running in this thread.

    Inside a :class:`ManagedThread`, a :class:`ThreadGroup` (its body and its
    tasks) or a fan-out task, that is the task's token. Outside any, it is a
    token that is never cancelled (cancelling it is a ``RuntimeError``).
    """
    return _current.get()


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the current task's token is cancelled.

    Call it at convenient points of long computations; it is cheap.
    """
    token = _current.get()
    if token._cancelled:
        raise Cancelled(token._reason)


def sleep(seconds: float) -> None:
    """Sleep for ``seconds``, returning early by raising :class:`Cancelled`.

    Use it instead of :func:`time.sleep` in tasks, so that cancelling the task
    (its group failing, a timeout, Ctrl-C) wakes it at once.

    Raises:
        Cancelled: the current task's token is, or becomes, cancelled.
        ValueError: ``seconds`` is negative or NaN.
        TypeError: ``seconds`` is not a real number.
    """
    _check_seconds("seconds", seconds)
    token = _current.get()
    if token.wait(seconds):
        raise Cancelled(token._reason)


for _fn in (current_token, check_cancelled, sleep):
    _fn.__module__ = "threadkit"


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds, got {value!r}"
        raise TypeError(msg)
    if math.isnan(value) or value < 0:
        msg = f"{name} must be >= 0, got {value!r}"
        raise ValueError(msg)


def _lock_timeout(seconds: float | None) -> float | None:
    """``seconds`` for a lock or condition wait: ``None`` (no deadline) past the platform's limit.

    Waits longer than :data:`threading.TIMEOUT_MAX` (about 292 years here) cannot be
    expressed to the OS; they are waits without a deadline, not errors.
    """
    if seconds is None or seconds > threading.TIMEOUT_MAX:
        return None
    return seconds


#: The longest the main thread sleeps on a lock at a stretch (seconds). A process-directed
#: signal (Ctrl-C, SIGTERM) goes to any thread that does not block it; when another thread
#: takes it, CPython's C handler only records it, and the main thread, asleep on a lock, is
#: not woken: its Python handler runs only when the wait ends. Waking up this often bounds
#: that delay (the stdlib's Thread.join does the same on Windows).
_SIGNAL_SLICE: Final = 0.05

_Q = TypeVar("_Q")


def _acquire(lock: threading.Lock, timeout: float | None = None) -> bool:
    """``lock.acquire(timeout=...)`` (``None``: no limit) that a signal always ends promptly.

    Outside the main thread this is one acquire; in it, acquires of at most
    :data:`_SIGNAL_SLICE` seconds, so a handler that raises (``KeyboardInterrupt``) runs
    between two of them.
    """
    limit = _lock_timeout(timeout)
    if threading.current_thread() is not threading.main_thread():
        return lock.acquire(timeout=-1 if limit is None else limit)
    if limit is None:
        while not lock.acquire(timeout=_SIGNAL_SLICE):
            pass
        return True
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return lock.acquire(False)
        if lock.acquire(timeout=min(left, _SIGNAL_SLICE)):
            return True


def _unmasked(exc: BaseException) -> BaseException:
    """The Ctrl-C behind an error of ``Thread.start()`` or ``Event.wait()``, else ``exc``.

    CPython's ``Condition.wait`` (3.11-3.13) gives up its lock one statement before the
    ``try`` that takes it back: a Ctrl-C landing in between (as ``start()`` waits for the new
    thread, or in any wait on an Event) leaves the ``with`` around the wait releasing a lock
    it no longer holds, and the caller gets ``RuntimeError: release unlocked lock`` with the
    KeyboardInterrupt as its context. (In ``start()`` the new thread exists then.)
    """
    if isinstance(exc, RuntimeError) and isinstance(exc.__context__, KeyboardInterrupt):
        return exc.__context__
    return exc


def _wait(event: threading.Event, timeout: float | None = None) -> bool:  # pyright: ignore[reportUnusedFunction]  # used by _fanout
    """``event.wait(timeout)`` (``None``: no limit) that a signal always ends promptly."""
    limit = _lock_timeout(timeout)
    if threading.current_thread() is not threading.main_thread():
        return event.wait(limit)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        left = (
            _SIGNAL_SLICE if deadline is None else min(deadline - time.monotonic(), _SIGNAL_SLICE)
        )
        if left <= 0:
            return event.is_set()
        try:
            if event.wait(left):
                return True
        except RuntimeError as exc:
            interrupt = _unmasked(exc)
            if interrupt is exc:
                raise
            raise interrupt from None


def _get(q: queue.SimpleQueue[_Q], timeout: float | None = None) -> _Q:  # pyright: ignore[reportUnusedFunction]  # used by _fanout, _executor
    """``q.get(timeout=...)`` (``None``: no limit) that a signal always ends promptly.

    Raises:
        queue.Empty: the timeout passed.
    """
    limit = _lock_timeout(timeout)
    if threading.current_thread() is not threading.main_thread():
        return q.get(timeout=limit)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        left = (
            _SIGNAL_SLICE if deadline is None else min(deadline - time.monotonic(), _SIGNAL_SLICE)
        )
        if left <= 0:
            return q.get(block=False)
        try:
            return q.get(timeout=left)
        except queue.Empty:
            continue


def _noop() -> None:
    pass


def _report_unraisable(exc: BaseException, err_msg: str) -> None:
    """Report an error no caller can receive, as the interpreter does for ``__del__``."""
    hook = sys.unraisablehook
    if hook is sys.__unraisablehook__:
        # The built-in hook accepts only the interpreter's own argument type, which Python
        # code cannot create: print what it would.
        print(f"{err_msg}:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        return
    hook(_UnraisableArgs(exc, err_msg, None))


class _UnraisableArgs:
    """The argument object :func:`sys.unraisablehook` expects."""

    __slots__ = ("err_msg", "exc_traceback", "exc_type", "exc_value", "object")

    exc_type: type[BaseException]
    exc_value: BaseException | None
    exc_traceback: TracebackType | None
    err_msg: str | None
    object: builtins.object

    def __init__(self, exc: BaseException, err_msg: str, obj: builtins.object) -> None:
        self.exc_type = type(exc)
        self.exc_value = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg = err_msg
        self.object = obj
