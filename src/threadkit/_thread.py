"""Implements ManagedThread, a threading.Thread with a result, lifecycle hooks and cancellation."""

from __future__ import annotations

import contextvars
import dis
import enum
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

from ._cancel import Cancelled, CancelToken, _acquire, _check_seconds, _current, _unmasked

__all__ = ["ManagedThread", "ThreadState"]

T = TypeVar("T")


class ThreadState(enum.Enum):
    """The lifecycle state of a :class:`ManagedThread`; it only ever moves forward.

    ``CREATED`` → ``RUNNING`` (at :meth:`~ManagedThread.start`) → one of
    ``SUCCEEDED``, ``FAILED`` or ``CANCELLED`` once every hook has run.
    """

    __module__ = "threadkit"

    CREATED = "created"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether this is one of the three final states."""
        return self in _FINISHED


_FINISHED = frozenset({ThreadState.SUCCEEDED, ThreadState.FAILED, ThreadState.CANCELLED})


class ManagedThread(threading.Thread, Generic[T]):
    """A :class:`threading.Thread` whose result and error reach someone, and that can be cancelled.

    It is a drop-in ``Thread``: same constructor (plus ``token`` and
    ``context``), ``start``, ``join``, ``is_alive``, ``name``, ``daemon`` and
    ``ident`` behave as the standard library documents, and ``start()`` a
    second time raises ``RuntimeError`` whatever the state.

    What it adds:

    * :meth:`result` and :meth:`exception` wait for the thread and hand over
      what ``run()`` returned or the exception that ended it.
    * :meth:`cancel` cancels the thread's :class:`CancelToken`; the code that
      runs sees it through :func:`threadkit.current_token`,
      :func:`threadkit.check_cancelled` and :func:`threadkit.sleep`.
    * The thread runs in a copy of the :mod:`contextvars` context of the caller
      of :meth:`start` (or in ``context`` when given).
    * An error that ends the thread is also handed to
      :func:`threading.excepthook`, as for a plain ``Thread`` (a thread that
      ends by :class:`Cancelled` is not an error and is not reported).

    **Subclass contract.** Override :meth:`run` (it may return the result) and
    any of the hooks, which are called in the new thread, in this order:
    :meth:`on_start`, :meth:`run`, then exactly one of :meth:`on_success`,
    :meth:`on_error` or :meth:`on_cancel`, then :meth:`on_finish` (always). A
    hook that raises fails the thread with that exception. A thread cancelled
    before ``run`` begins skips ``on_start`` and ``run`` but still gets
    ``on_cancel`` and ``on_finish``. ``Thread`` keeps private attributes that a
    subclass must not reuse, or ``join()`` breaks: ``_target``, ``_name``,
    ``_args``, ``_kwargs``, ``_daemonic``, ``_ident``, ``_native_id``,
    ``_tstate_lock``, ``_started``, ``_is_stopped``, ``_initialized``,
    ``_stderr``, ``_invoke_excepthook``, ``_stop``, ``_handle`` and ``_context``;
    threadkit's own private attributes all start with ``_tk_``.

    Example:
        >>> t = ManagedThread(target=sum, args=([1, 2, 3],))
        >>> t.start()
        >>> t.result()
        6
        >>> t.state
        <ThreadState.SUCCEEDED: 'succeeded'>
    """

    __module__ = "threadkit"

    def __init__(
        self,
        group: None = None,
        target: Callable[..., T] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        token: CancelToken | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        if target is not None and not callable(target):
            msg = f"target must be callable or None, got {target!r}"
            raise TypeError(msg)
        if token is not None and not isinstance(token, CancelToken):
            msg = f"token must be a CancelToken or None, got {token!r}"
            raise TypeError(msg)
        if context is not None and not isinstance(context, contextvars.Context):
            msg = f"context must be a contextvars.Context or None, got {context!r}"
            raise TypeError(msg)
        try:
            args = tuple(args)
        except TypeError:
            msg = f"args must be an iterable of arguments, got {args!r}"
            raise TypeError(msg) from None
        if kwargs is not None and not isinstance(kwargs, Mapping):
            msg = f"kwargs must be a mapping of keyword arguments or None, got {kwargs!r}"
            raise TypeError(msg)
        super().__init__(group, None, name, daemon=daemon)
        self._tk_target = target
        self._tk_args = args
        self._tk_kwargs = dict(kwargs) if kwargs is not None else {}
        self._tk_token = token if token is not None else CancelToken()
        self._tk_context = context
        self._tk_state = ThreadState.CREATED
        self._tk_start_lock = threading.Lock()
        self._tk_result: T | None = None
        self._tk_exc: BaseException | None = None
        # Held from start() until the lifecycle is over (every hook and report done). Waiting
        # on it, not on join(), keeps result() right on 3.11/3.12, where a join() interrupted
        # by a signal marks a running thread as stopped (python/cpython#90882). A lock is
        # cheaper to make than an Event, and most threads are waited on once.
        self._tk_done = threading.Lock()
        # Set by an owner (ThreadGroup): called last in the thread; its errors go to the owner,
        # so the thread does not report them to threading.excepthook.
        self._tk_on_done: Callable[[ManagedThread[Any]], None] | None = None
        # start() was interrupted (or failed) before the OS thread existed: it never will.
        self._tk_unstarted = False

    # -- the standard Thread interface ------------------------------------------------------

    def start(self) -> None:
        """Start the thread; see :meth:`threading.Thread.start`.

        A ``KeyboardInterrupt`` that lands in here propagates. If it landed before
        the OS thread existed, the thread never runs: it ends at once, FAILED with
        that exception (so :meth:`result` does not wait for it); if after, the
        thread runs as usual.

        Raises:
            RuntimeError: the thread was started before (whatever its state).
        """
        started: ThreadState | None = None
        try:
            with self._tk_start_lock:
                if self._tk_state is not ThreadState.CREATED:
                    msg = "threads can only be started once"
                    raise RuntimeError(msg)
                # Held until the lifecycle is over. Not blocking: a start() interrupted before
                # it flipped the state may hold it already.
                self._tk_done.acquire(False)
                started = self._tk_state = ThreadState.RUNNING
            if self._tk_context is None:
                self._tk_context = contextvars.copy_context()
            # Thread._bootstrap_inner calls self.run(): an instance attribute puts the lifecycle
            # around the user's run() without touching any private method of Thread.
            self.__dict__["run"] = self._tk_main
            super().start()
        except BaseException as exc:
            # "can't start new thread", or a Ctrl-C that landed in here. If the OS thread
            # exists, it runs as usual (its owner waits for it); if not, it never will: the
            # thread ends at once, failed with that exception, so nothing waits for it forever.
            error = _unmasked(exc)
            # Told from where exc (not the Ctrl-C behind it, whose traceback ends in the wait)
            # left Thread.start.
            if started is not None and not _os_thread_exists(self, exc):
                self._tk_never_started(error)
            if error is not exc:
                raise error from None
            raise

    def run(self) -> T:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """The thread's work: calls ``target(*args, **kwargs)`` and returns its result.

        Override it in a subclass to do the work there; what it returns becomes
        :meth:`result`.
        """
        target = self._tk_target
        try:
            if target is None:
                return cast(T, None)
            return target(*self._tk_args, **self._tk_kwargs)
        finally:
            # Like Thread.run: drop the references so they do not outlive the work.
            self._tk_target = None
            self._tk_args = ()
            self._tk_kwargs = {}

    # -- threadkit's additions --------------------------------------------------------------

    @property
    def token(self) -> CancelToken:
        """The thread's cancellation token (made fresh when none was given)."""
        return self._tk_token

    @property
    def state(self) -> ThreadState:
        """The lifecycle state; final only once every hook has run."""
        return self._tk_state

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the thread's token; idempotent, returns at once.

        Cancellation is cooperative: the thread stops at its next
        ``check_cancelled()``/``sleep()``, or when an ``on_cancel`` callback
        unblocks it. A thread not yet running never runs ``on_start``/``run``.
        """
        self._tk_token.cancel(reason)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the thread and return its result, or raise the exception that ended it.

        The exception is re-raised as the same object, its traceback kept.

        Raises:
            TimeoutError: the thread is still running after ``timeout`` seconds.
            RuntimeError: the thread was never started.
        """
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        return cast(T, self._tk_result)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the thread and return the exception that ended it, or ``None``.

        Raises:
            TimeoutError: the thread is still running after ``timeout`` seconds.
            RuntimeError: the thread was never started.
        """
        if self._tk_state is ThreadState.CREATED:
            msg = "cannot wait for a thread before it is started"
            raise RuntimeError(msg)
        if timeout is not None:
            _check_seconds("timeout", timeout)
        if threading.current_thread() is self:
            msg = "cannot join current thread"
            raise RuntimeError(msg)
        done = self._tk_done
        if not _acquire(done, timeout):
            msg = f"thread {self.name!r} did not finish within {timeout!r} seconds"
            raise TimeoutError(msg)
        done.release()
        if not self._tk_unstarted:  # (a thread whose start never made it has nothing to join)
            self.join()  # the OS thread is past the lifecycle: this takes microseconds
        return self._tk_exc

    # -- hooks for subclasses -----------------------------------------------------------------

    def on_start(self) -> None:
        """Called in the new thread before :meth:`run`; a no-op by default."""

    def on_success(self, result: T) -> None:
        """Called after :meth:`run` returned ``result``; a no-op by default."""

    def on_error(self, exc: BaseException) -> None:
        """Called after :meth:`run` (or :meth:`on_start`) raised ``exc``; a no-op by default."""

    def on_cancel(self, exc: Cancelled) -> None:
        """Called when the thread ended by cancellation; a no-op by default."""

    def on_finish(self) -> None:
        """Called last, whatever the outcome; a no-op by default."""

    # -- the lifecycle, run in the new thread ---------------------------------------------------

    def _tk_main(self) -> None:
        self.__dict__.pop("run", None)
        context = cast(contextvars.Context, self._tk_context)
        try:
            result, exc = context.run(self._tk_lifecycle)
        except BaseException as context_exc:
            result, exc = None, context_exc
        self._tk_result = result
        self._tk_exc = exc
        if exc is None:
            self._tk_state = ThreadState.SUCCEEDED
        elif isinstance(exc, Cancelled):
            self._tk_state = ThreadState.CANCELLED
        else:
            self._tk_state = ThreadState.FAILED
        try:
            on_done = self._tk_on_done
            if on_done is not None:
                self._tk_on_done = None
                on_done(self)
            elif exc is not None and not isinstance(exc, Cancelled):
                self._tk_report(exc)
        finally:
            self._tk_done.release()

    def _tk_lifecycle(self) -> tuple[T | None, BaseException | None]:
        token = self._tk_token
        reset = _current.set(token)
        result: T | None = None
        exc: BaseException | None = None
        try:
            if token.cancelled:
                exc = Cancelled(token.reason)
            else:
                try:
                    self.on_start()
                    result = self.run()
                except BaseException as run_exc:
                    exc = run_exc
            try:
                if exc is None:
                    self.on_success(cast(T, result))
                elif isinstance(exc, Cancelled):
                    self.on_cancel(exc)
                else:
                    self.on_error(exc)
            except BaseException as hook_exc:
                exc, result = _chain(hook_exc, exc), None
            try:
                self.on_finish()
            except BaseException as hook_exc:
                exc, result = _chain(hook_exc, exc), None
        finally:
            _current.reset(reset)
        return result, exc

    def _tk_never_started(self, exc: BaseException) -> None:
        self.__dict__.pop("run", None)
        _forget_unstarted(self)
        self._tk_exc = exc
        self._tk_unstarted = True
        self._tk_state = ThreadState.FAILED
        self._tk_done.release()

    def _tk_report(self, exc: BaseException) -> None:
        # What Thread._bootstrap_inner does for an exception escaping run().
        args = threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, self))
        try:
            threading.excepthook(args)
        except BaseException as hook_exc:
            hook_exc.__suppress_context__ = True
            sys.excepthook(type(hook_exc), hook_exc, hook_exc.__traceback__)


def _chain(new: BaseException, old: BaseException | None) -> BaseException:
    """Make ``old`` the context of ``new`` (a hook's error replacing run's), as ``raise`` does."""
    if old is not None and new is not old and new.__context__ is None:
        new.__context__ = old
    return new


# -- telling whether an interrupted Thread.start() created its OS thread ---------------------------

_START = threading.Thread.start.__code__


def _creation_points() -> tuple[range, int] | None:
    """The offsets of Thread.start's call that creates the OS thread, and the line where it
    then waits for that thread; ``None`` if this Python's Thread.start is not recognized."""
    instructions = list(dis.get_instructions(_START))
    call: range | None = None
    wait_line: int | None = None
    for i, ins in enumerate(instructions):
        if call is None and ins.argval in ("_start_new_thread", "_start_joinable_thread"):
            for j in range(i + 1, len(instructions) - 1):
                if instructions[j].opname.startswith("CALL"):
                    call = range(instructions[j].offset, instructions[j + 1].offset)
                    break
        elif call is not None and ins.argval == "_started" and instructions[i + 1].argval == "wait":
            positions = instructions[i + 1].positions
            wait_line = positions.lineno if positions is not None else None
            break
    if call is None or wait_line is None:
        return None
    return call, wait_line


_CREATION = _creation_points()


def _os_thread_exists(thread: threading.Thread, exc: BaseException) -> bool:
    """Whether ``thread``'s OS thread was created, given what escaped ``thread.start()``.

    Told from where ``exc`` left Thread.start: raised after the call that creates the thread
    returned (a signal is handled there) or while waiting for the new thread, it exists;
    raised before that call, or by it (an ``Exception``: it failed), it does not.
    """
    if _started(thread).is_set():  # set by the new thread itself
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not _START:
        tb = tb.tb_next
    if tb is None:
        return False  # Thread.start was never entered
    if _CREATION is None:
        return True  # not recognized: assume the worst (the owner waits for it, as it used to)
    call, wait_line = _CREATION
    if tb.tb_lasti in call:
        return not isinstance(exc, Exception)
    return tb.tb_lineno == wait_line


def _forget_unstarted(thread: threading.Thread) -> None:
    """Drop a thread whose start was interrupted before its OS thread existed from threading's
    table of threads being started (its bootstrap, which never runs, would have done it)."""
    # threading's own bookkeeping (3.11-3.13): otherwise threading.enumerate() lists the
    # thread forever and joining it raises.
    internals = vars(threading)
    with cast(threading.Lock, internals["_active_limbo_lock"]):
        cast(dict[threading.Thread, threading.Thread], internals["_limbo"]).pop(thread, None)


def _started(thread: threading.Thread) -> threading.Event:
    """The Event a thread sets once it runs (``Thread._started``, a stdlib internal)."""
    return cast(threading.Event, vars(thread)["_started"])
