"""Implements cooperative cancellation: CancelToken, Cancelled and the current-token context."""

from __future__ import annotations

import builtins
import contextvars
import itertools
import math
import sys
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import final

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
    __slots__ = ("__weakref__", "_callbacks", "_cancelled", "_detach", "_event", "_lock", "_reason")

    def __init__(self, parent: CancelToken | None = None) -> None:
        if parent is not None and not isinstance(parent, CancelToken):
            msg = f"parent must be a CancelToken or None, got {parent!r}"
            raise TypeError(msg)
        self._lock = threading.Lock()
        self._cancelled = False
        self._reason: str | None = None
        # Created on first wait(): most tokens are polled, never waited on.
        self._event: threading.Event | None = None
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._detach: Callable[[], None] | None = None
        if parent is not None:

            def cancel_from_parent() -> None:
                # Runs in the thread that cancelled the parent, which already dropped us.
                self._detach = None
                self.cancel(parent._reason)

            # on_cancel runs the callback at once if the parent is cancelled already.
            self._detach = parent.on_cancel(cancel_from_parent)

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
        ``SystemExit`` raised in one is re-raised once all have run.

        Raises:
            TypeError: ``reason`` is not a string or ``None``.
        """
        if reason is not None and not isinstance(reason, str):
            msg = f"reason must be a str or None, got {reason!r}"
            raise TypeError(msg)
        with self._lock:
            if self._cancelled:
                return
            self._reason = reason
            self._cancelled = True
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            event = self._event
        if event is not None:
            event.set()
        interrupt: BaseException | None = None
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:
                _report_unraisable(exc, f"Exception ignored in on_cancel callback {callback!r}")
            except BaseException as exc:
                # Ctrl-C or SystemExit: it must reach the program, once every callback has run.
                if interrupt is None:
                    interrupt = exc
        detach = self._detach
        if detach is not None:
            self._detach = None
            detach()
        if interrupt is not None:
            raise interrupt

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
        with self._lock:
            if self._cancelled:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(_lock_timeout(timeout))

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

    def _release(self) -> None:
        """Detach from the parent so a long-lived parent does not keep this token alive."""
        detach = self._detach
        if detach is not None:
            self._detach = None
            detach()


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
        # Never cancelled: keeping the callback (e.g. a child's link) would only leak it.
        return _noop

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
