"""Implements graceful daemons: spawn_daemon, shutdown_daemons, handle_signals, PeriodicThread."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType
from typing import Any, Literal, TypeAlias, TypeVar, TypeVarTuple, final

from ._cancel import _SIGNAL_SLICE, Cancelled, _check_seconds
from ._thread import ManagedThread, ThreadState

__all__ = [
    "PeriodicStatistics",
    "PeriodicThread",
    "handle_signals",
    "shutdown_daemons",
    "spawn_daemon",
]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

#: How long a daemon gets, by default, to finish its ``finally:`` blocks once cancelled.
DEFAULT_GRACE = 2.0

_logger = logging.getLogger("threadkit.daemon")

# -- the registry of daemons that get a graceful shutdown ----------------------------------------


class _Entry:
    """A registered daemon's grace, and an event its thread sets as its very last act."""

    __slots__ = ("done", "grace")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        # Waited on instead of Thread.join()/is_alive(): on 3.11 and 3.12 a join() that a signal
        # handler interrupts (Ctrl-C, handle_signals) marks a running thread as stopped, so
        # is_alive() lies afterwards (python/cpython#90882, fixed in 3.13).
        self.done = threading.Event()


_lock = threading.Lock()
# Registered daemons, in start order (dicts keep it).
_registry: dict[ManagedThread[Any], _Entry] = {}
_atexit_installed = False
_exiting = False  # set when the exit hook starts: no daemon may start after it
_exit_done = False  # set when the exit hook has finished: signals are ignored after it


def spawn_daemon(
    fn: Callable[[*Ts], R], /, *args: *Ts, name: str | None = None, grace: float = DEFAULT_GRACE
) -> ManagedThread[R]:
    """Start ``fn(*args)`` in a daemon thread that is shut down gracefully at exit.

    The thread is a started, daemon :class:`ManagedThread`, registered until it
    ends. At interpreter exit (after the non-daemon threads have ended, when
    plain daemon threads would be killed wherever they stand) and on
    :func:`shutdown_daemons`, registered daemons are cancelled and given
    ``grace`` seconds to return and run their ``finally:`` blocks. One still
    running after that is named in a :class:`RuntimeWarning` and left to die
    with the interpreter, so exit is never blocked forever. The daemon sees its
    cancellation through :func:`threadkit.current_token`,
    :func:`threadkit.check_cancelled` and :func:`threadkit.sleep`.

    An error that ends the daemon goes to :func:`threading.excepthook`, as for
    any thread. Use :func:`functools.partial` to pass keyword arguments.

    Args:
        fn: the work to run.
        *args: its positional arguments.
        name: the thread's name; by default ``"Thread-N (fn-name)"``.
        grace: how many seconds the daemon gets to finish once cancelled.

    Returns:
        The started thread; its :meth:`~ManagedThread.result` is what ``fn`` returned.

    Raises:
        TypeError: ``fn`` is not callable, ``name`` is not a string, or
            ``grace`` is not a number.
        ValueError: ``grace`` is negative, NaN or infinite.
        RuntimeError: the interpreter is already shutting its daemons down.

    Example:
        >>> import threadkit
        >>> def heartbeat() -> None:
        ...     while True:
        ...         threadkit.sleep(1.0)  # returns early by raising Cancelled
        >>> t = threadkit.spawn_daemon(heartbeat, name="heartbeat")
        >>> threadkit.shutdown_daemons()
        []
        >>> t.state
        <ThreadState.CANCELLED: 'cancelled'>
    """
    if not callable(fn):
        msg = f"fn must be callable, got {fn!r}"
        raise TypeError(msg)
    _check_name(name)
    _check_grace(grace)
    thread: ManagedThread[R] = ManagedThread(target=fn, args=args, name=name, daemon=True)
    if name is None:
        thread.name = _default_name(thread.name, fn)
    _start_registered(thread, thread.start, grace)
    return thread


def shutdown_daemons(timeout: float | None = None) -> list[ManagedThread[Any]]:
    """Cancel every registered daemon and wait for them to end; return those still running.

    Daemons are cancelled in reverse start order, then joined in the same
    order. Each is waited for until ``timeout`` seconds after the call, or,
    when ``timeout`` is ``None``, until its own ``grace`` has passed (the grace
    periods run concurrently, so the call takes at most the longest one).

    Idempotent: a second call cancels nothing new and returns at once unless a
    daemon is still finishing. Daemons started during or after the call are
    not affected. A daemon that calls it is cancelled but not waited for (a
    thread cannot join itself), so it is in the returned list.

    Returns:
        The registered daemons still alive at the end, in start order. They
        stay registered until they end (interpreter exit waits for them again).

    Raises:
        TypeError: ``timeout`` is not a number.
        ValueError: ``timeout`` is negative or NaN.
    """
    if timeout is not None:
        _check_seconds("timeout", timeout)
    return _shutdown(timeout, "shutdown_daemons() was called")


def handle_signals(*signals: int) -> Callable[[], None]:
    """Make SIGTERM and SIGINT (or the given ``signals``) end the program gracefully.

    The handler raises :class:`KeyboardInterrupt` for SIGINT and
    ``SystemExit(128 + signal number)`` for the others (143 for SIGTERM, the
    shell's convention) in the main thread. The main thread unwinds through its
    ``finally:`` blocks and the interpreter exits the ordinary way, which
    shuts the registered daemons down gracefully (see :func:`spawn_daemon`). The
    handler itself takes no lock and cancels nothing, so it cannot deadlock
    with the code it interrupts.

    Without it, SIGTERM kills the process at once: no ``finally:`` block, no
    daemon shutdown. As always, non-daemon threads still hold the exit up until
    they end; a signal that arrives while the interpreter waits for them stops
    that wait (the stdlib prints it as ignored), and a signal during the
    daemons' grace period stops waiting for them.

    Must be called from the main thread. Calling it again installs the handler
    again (the returned function of each call undoes that call).

    Args:
        *signals: signal numbers (``signal.SIGTERM``, ...); none means SIGTERM and SIGINT.

    Returns:
        A function that restores the previous handlers, where the handler is
        still this one; idempotent. Call it from the main thread too.

    Raises:
        RuntimeError: not called from the main thread.
        TypeError: a signal is not an int.
        ValueError: a signal is not a valid signal number, or cannot be caught (SIGKILL, SIGSTOP).

    Example:
        >>> import signal, threadkit
        >>> restore = threadkit.handle_signals()
        >>> signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        True
        >>> restore()
    """
    if threading.current_thread() is not threading.main_thread():
        msg = "handle_signals() must be called from the main thread"
        raise RuntimeError(msg)
    chosen = [_check_signal(s) for s in signals] or [signal.SIGTERM, signal.SIGINT]
    previous: dict[signal.Signals, Any] = {}
    for sig in chosen:
        old = signal.signal(sig, _on_signal)
        previous.setdefault(sig, old)

    def restore() -> None:
        if threading.current_thread() is not threading.main_thread():
            msg = "the function returned by handle_signals() must be called from the main thread"
            raise RuntimeError(msg)
        while previous:
            sig, old = previous.popitem()
            if signal.getsignal(sig) is _on_signal:
                # None: the old handler was not set from Python; the default is the best guess.
                signal.signal(sig, signal.SIG_DFL if old is None else old)

    return restore


for _fn in (spawn_daemon, shutdown_daemons, handle_signals):
    _fn.__module__ = "threadkit"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _exit_done:
        return  # the daemons are already shut down; the process is ending anyway
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _check_signal(value: object) -> signal.Signals:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"signals must be signal numbers, got {value!r}"
        raise TypeError(msg)
    try:
        sig = signal.Signals(value)
    except ValueError:
        msg = f"signals must be signal numbers, got {value!r}"
        raise ValueError(msg) from None
    if sig.name in ("SIGKILL", "SIGSTOP"):
        msg = f"signal {sig.name} cannot be caught"
        raise ValueError(msg)
    return sig


def _forget_after_fork() -> None:
    # Threads do not survive fork(): the child has none of the registered daemons, and the
    # lock may have been held by a thread that does not exist there.
    global _lock
    _lock = threading.Lock()
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _register(thread: ManagedThread[Any], grace: float) -> None:
    """Register ``thread`` (not started yet) for graceful shutdown until it ends."""
    global _atexit_installed
    with _lock:
        if _exiting:
            msg = f"cannot start daemon {thread.name!r}: the interpreter is exiting"
            raise RuntimeError(msg)
        if not _atexit_installed:
            # Plain atexit, not threading._register_atexit: it runs once the non-daemon
            # threads have ended, which is when the stdlib would kill daemon threads. So a
            # registered daemon lives exactly as long as a plain one; only its end differs.
            atexit.register(_at_exit)
            _atexit_installed = True
        _registry[thread] = _Entry(grace)
    thread._tk_on_done = _daemon_done


def _unregister(thread: ManagedThread[Any]) -> None:
    with _lock:
        _registry.pop(thread, None)
    if thread._tk_on_done is _daemon_done:
        thread._tk_on_done = None


def registered_daemons() -> list[ManagedThread[Any]]:
    """The registered daemons, in start order (for tests and debugging; not exported)."""
    with _lock:
        return list(_registry)


def _daemon_done(thread: ManagedThread[Any]) -> None:
    # Runs last in the daemon's own thread. Setting _tk_on_done made the thread skip its own
    # excepthook report, so do it here, as a standalone ManagedThread would.
    try:
        exc = thread._tk_exc
        if exc is not None and not isinstance(exc, Cancelled):
            thread._tk_report(exc)
    finally:
        with _lock:
            entry = _registry.pop(thread, None)
        if entry is not None:
            entry.done.set()


def _start_registered(thread: ManagedThread[Any], start: Callable[[], None], grace: float) -> None:
    """Start a daemon-by-default thread, registering it when it is a daemon nobody owns."""
    # A thread owned by a Supervisor (its _tk_on_done is set) is stopped by its owner instead.
    register = thread.daemon and thread._tk_on_done is None and thread.state is ThreadState.CREATED
    try:
        # Inside the try: a Ctrl-C that lands between registering and starting must not leave
        # a thread that never runs in the registry (exit would wait its grace for nothing).
        if register:
            _register(thread, grace)
        start()
    except BaseException:
        # CREATED: interrupted before the start, or refused at exit; FAILED: this start failed
        # to make the thread. RUNNING: the thread runs, so it stays registered (a Ctrl-C that
        # landed while start() waited for the new thread, or another start() won the race).
        if register and thread.state is not ThreadState.RUNNING:
            _unregister(thread)
        raise


def _shutdown(timeout: float | None, reason: str) -> list[ManagedThread[Any]]:
    with _lock:
        daemons = list(_registry.items())
    began = time.monotonic()
    # Reverse start order: a daemon started later may depend on one started earlier.
    for thread, _ in reversed(daemons):
        thread.cancel(reason)
    me = threading.current_thread()
    for thread, entry in reversed(daemons):
        if thread is me:
            continue
        _wait(entry.done, began + (entry.grace if timeout is None else timeout))
        if entry.done.is_set():
            # Its lifecycle is over but its OS thread may still be unwinding: a daemon that
            # shutdown_daemons() does not return must be gone (this takes microseconds).
            thread.join()
    return [thread for thread, entry in daemons if not entry.done.is_set()]


def _wait(event: threading.Event, deadline: float) -> None:
    """Wait for ``event`` until ``deadline`` (monotonic), in slices.

    In the main thread, a signal that lands just as the thread goes to sleep on a lock (or
    that the kernel hands to another thread) does not wake it: its Python handler would only
    run when the wait ends. Slices bound that delay, so a second Ctrl-C or SIGTERM at exit
    stops the wait promptly.
    """
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        event.wait(min(left, _SIGNAL_SLICE))


def _at_exit() -> None:
    global _exiting, _exit_done
    daemons: dict[ManagedThread[Any], _Entry] = {}
    try:
        # Inside the try: a second Ctrl-C may land anywhere, and must still end the hook.
        with _lock:
            _exiting = True
            daemons = dict(_registry)
        stragglers = _shutdown(None, "interpreter exit")
    except (KeyboardInterrupt, SystemExit):
        # A second Ctrl-C or SIGTERM (see handle_signals) during the grace period: stop waiting.
        stragglers = [t for t, entry in daemons.items() if not entry.done.is_set()]
    finally:
        _exit_done = True
    if stragglers:
        names = ", ".join(f"{t.name!r} (grace {daemons[t].grace!r} s)" for t in stragglers)
        warnings.warn(
            f"{len(stragglers)} daemon thread(s) did not finish within their grace period at "
            f"interpreter exit and were left to die with the interpreter: {names}",
            RuntimeWarning,
            stacklevel=1,
        )


# -- PeriodicThread ------------------------------------------------------------------------------

OnError: TypeAlias = Literal["log", "stop"] | Callable[[Exception], object]


@final
@dataclass(frozen=True, slots=True)
class PeriodicStatistics:
    """A snapshot of a :class:`PeriodicThread`'s counters (see :meth:`PeriodicThread.statistics`).

    Attributes:
        ticks: calls of ``fn`` made so far, failed ones included.
        overruns: ticks skipped because the previous call still ran at their
            due time (or the thread woke up too late for them).
        errors: calls that raised an :class:`Exception`.
        last_error: the exception the last failed call raised, or ``None``.
    """

    ticks: int = 0
    overruns: int = 0
    errors: int = 0
    last_error: Exception | None = None


PeriodicStatistics.__module__ = "threadkit"


class _Schedule:
    """Fixed-rate tick arithmetic, free of clocks and threads (property-tested).

    Tick ``k`` is due at ``start + k * interval``. A tick runs at most one
    interval late; the slots of ticks that could not start in time are skipped
    and counted as overruns, never run back to back to catch up.
    """

    __slots__ = ("interval", "next", "overruns", "start")

    def __init__(self, start: float, interval: float, first: int) -> None:
        self.start = start
        self.interval = interval
        self.next = first  # the index of the next tick to run
        self.overruns = 0

    def due(self) -> float:
        """When the next tick is due."""
        try:
            return self.start + self.next * self.interval
        except OverflowError:
            # A subnormal interval: the index is past the float range, the product is not.
            return self.start + float(self.next * Fraction(self.interval))

    def begin(self, now: float) -> int:
        """The next tick starts at ``now`` (not before it is due): return its index.

        A thread woken so late that a later slot has begun runs that slot's tick.
        """
        current = max(self.next, self._slot(now))
        self.overruns += current - self.next
        self.next = current
        return current

    def end(self, now: float) -> None:
        """The tick begun last ended at ``now``: the next is the first not yet due."""
        following = max(self.next + 1, self._slot(now) + 1)
        self.overruns += following - (self.next + 1)
        self.next = following

    def _slot(self, now: float) -> int:
        elapsed = now - self.start
        slot = elapsed / self.interval
        if math.isinf(slot):
            # A subnormal interval (5e-324 is finite and > 0): the quotient overflows a float,
            # so compute the slot exactly instead.
            return math.floor(Fraction(elapsed) / Fraction(self.interval))
        return math.floor(slot)


@final
class PeriodicThread(ManagedThread[PeriodicStatistics]):
    """A daemon thread that calls ``fn(*args)`` at a fixed rate, without drift.

    Tick ``k`` is due at ``start + k * interval`` (``start`` being when the
    thread starts; tick 0 runs at once when ``run_immediately``, else the first
    tick is tick 1), so lateness never accumulates the way it does in a
    ``while True: work(); time.sleep(interval)`` loop. A tick whose due time
    passes while the previous call is still running is skipped and counted as
    an overrun; missed ticks are never bunched. Between ticks the thread waits
    on its token, so :meth:`stop` and :meth:`cancel` take effect at once.

    * :meth:`stop` is the normal end: the tick in progress finishes, the state
      becomes SUCCEEDED, and :meth:`result` returns the final
      :class:`PeriodicStatistics`.
    * :meth:`cancel` cancels the thread's token, which the tick in progress sees
      (``fn`` may call :func:`threadkit.check_cancelled`); the state becomes
      CANCELLED. If both happen, cancellation wins.
    * ``on_error`` says what an :class:`Exception` raised by ``fn`` does:
      ``"log"`` logs it (logger ``threadkit.daemon``) and carries on;
      ``"stop"`` ends the thread with it (FAILED; :meth:`result` re-raises it);
      a callable is called with it in the thread and the schedule carries on,
      unless the callable raises, which ends the thread with what it raised.
      Other exceptions (:class:`Cancelled`, :class:`KeyboardInterrupt`, ...)
      always end the thread.

    It is a daemon by default, and a started daemon ``PeriodicThread`` that no
    :class:`Supervisor` owns is shut down gracefully at interpreter exit like the
    threads of :func:`spawn_daemon` (it gets ``grace`` seconds once cancelled).

    Example:
        >>> import threadkit
        >>> beats = []
        >>> t = threadkit.PeriodicThread(0.01, beats.append, "beat", name="heartbeat")
        >>> t.start()
        >>> threadkit.sleep(0.05)
        >>> t.stop()
        >>> t.state, t.result().ticks == len(beats)
        (<ThreadState.SUCCEEDED: 'succeeded'>, True)
    """

    __module__ = "threadkit"

    def __init__(
        self,
        interval: float,
        fn: Callable[[*Ts], object],
        /,
        *args: *Ts,
        name: str | None = None,
        run_immediately: bool = True,
        on_error: OnError = "log",
        daemon: bool = True,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        """Make the thread (call :meth:`start` to run it).

        Args:
            interval: seconds between due times; finite and > 0.
            fn: called as ``fn(*args)`` at every tick, in this thread.
            *args: its positional arguments.
            name: the thread's name; by default ``"Thread-N (fn-name)"``.
            run_immediately: run tick 0 at start rather than one interval later.
            on_error: ``"log"``, ``"stop"`` or a callable taking the exception.
            daemon: whether the thread is a daemon (graceful at exit) or not.
            grace: seconds the thread gets to finish once cancelled at exit.

        Raises:
            TypeError: an argument has the wrong type (``fn`` or ``on_error``
                not callable, ``name`` not a string, ...).
            ValueError: ``interval`` is not finite and > 0, ``on_error`` is an
                unknown string, or ``grace`` is negative, NaN or infinite.
        """
        _check_seconds("interval", interval)
        if interval == 0 or math.isinf(interval):
            msg = f"interval must be a finite number of seconds > 0, got {interval!r}"
            raise ValueError(msg)
        if not callable(fn):
            msg = f"fn must be callable, got {fn!r}"
            raise TypeError(msg)
        _check_name(name)
        if not isinstance(run_immediately, bool):
            msg = f"run_immediately must be a bool, got {run_immediately!r}"
            raise TypeError(msg)
        if isinstance(on_error, str):
            if on_error not in ("log", "stop"):
                msg = f"on_error must be 'log', 'stop' or a callable, got {on_error!r}"
                raise ValueError(msg)
        elif not callable(on_error):
            msg = f"on_error must be 'log', 'stop' or a callable, got {on_error!r}"
            raise TypeError(msg)
        if not isinstance(daemon, bool):
            msg = f"daemon must be a bool, got {daemon!r}"
            raise TypeError(msg)
        _check_grace(grace)
        super().__init__(name=name, daemon=daemon)
        if name is None:
            self.name = _default_name(self.name, fn)
        self._tk_interval = float(interval)
        self._tk_fn: Callable[..., object] | None = fn
        self._tk_fn_args: tuple[Any, ...] = args
        self._tk_first_tick = 0 if run_immediately else 1
        self._tk_error_policy = on_error
        self._tk_grace = grace
        # stop() cancels this child token only: the tick in progress does not see it.
        self._tk_stop_token = self._tk_token.child()
        # Replaced whole at every tick, so a reader never sees a torn snapshot.
        self._tk_stats = PeriodicStatistics()

    def start(self) -> None:
        """Start the thread; see :meth:`threading.Thread.start`.

        Raises:
            RuntimeError: the thread was started before, or the interpreter is
                shutting its daemons down.
        """
        _start_registered(self, super().start, self._tk_grace)

    def statistics(self) -> PeriodicStatistics:
        """Return a frozen snapshot of the counters; callable from any thread at any time."""
        return self._tk_stats

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the tick in progress (if any) and wait for the thread to end.

        The thread then ends SUCCEEDED and :meth:`result` returns the final
        statistics. Idempotent. Called before :meth:`start`, the thread ends at
        once when started, with no tick; called from ``fn`` (or ``on_error``)
        itself, it does not wait.

        Args:
            timeout: how long to wait, in seconds; ``None`` (or more than
                :data:`threading.TIMEOUT_MAX`) waits for the end.

        Raises:
            TimeoutError: the thread is still running after ``timeout`` seconds
                (it will still stop after its tick).
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is negative or NaN.
        """
        if timeout is not None:
            _check_seconds("timeout", timeout)
        self._tk_stop_token.cancel("stop() was called")
        if self.ident is None or self is threading.current_thread():
            return
        # exception() waits on the lifecycle rather than join(): on 3.11 and 3.12 a join() that
        # a Ctrl-C interrupts marks the running thread as stopped (python/cpython#90882), and
        # a later stop() would return at once. A timeout past TIMEOUT_MAX is no deadline.
        try:
            self.exception(timeout)
        except TimeoutError:
            msg = f"periodic thread {self.name!r} did not stop within {timeout!r} seconds"
            raise TimeoutError(msg) from None

    def run(self) -> PeriodicStatistics:  # type: ignore[override]
        """Call ``fn`` at every tick until stopped or cancelled; return the final statistics."""
        stop = self._tk_stop_token
        schedule = _Schedule(time.monotonic(), self._tk_interval, self._tk_first_tick)
        try:
            while True:
                delay = min(schedule.due() - time.monotonic(), threading.TIMEOUT_MAX)
                stopping = stop.wait(delay) if delay > 0 else stop.cancelled
                if stopping:
                    break
                index = schedule.begin(time.monotonic())
                self._tk_tick(index, schedule)
                schedule.end(time.monotonic())
                self._tk_stats = dataclasses.replace(self._tk_stats, overruns=schedule.overruns)
            # Cancellation wins over stop(): the token says which one woke us.
            self._tk_token.raise_if_cancelled()
            return self._tk_stats
        finally:
            stop._release()
            self._tk_fn = None
            self._tk_fn_args = ()

    def _tk_tick(self, index: int, schedule: _Schedule) -> None:
        fn = self._tk_fn
        assert fn is not None
        try:
            fn(*self._tk_fn_args)
        except Exception as exc:
            stats = self._tk_stats
            self._tk_stats = dataclasses.replace(
                stats,
                ticks=stats.ticks + 1,
                overruns=schedule.overruns,
                errors=stats.errors + 1,
                last_error=exc,
            )
            policy = self._tk_error_policy
            if not isinstance(policy, str):
                policy(exc)
            elif policy == "stop":
                raise
            else:
                _logger.error("periodic thread %r: tick %d failed", self.name, index, exc_info=exc)
        except BaseException:
            # Cancelled, KeyboardInterrupt...: the call was made; it ends the thread.
            self._tk_stats = dataclasses.replace(
                self._tk_stats, ticks=self._tk_stats.ticks + 1, overruns=schedule.overruns
            )
            raise
        else:
            self._tk_stats = dataclasses.replace(self._tk_stats, ticks=self._tk_stats.ticks + 1)


# -- shared argument checks ---------------------------------------------------------------------


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        msg = f"name must be a str or None, got {name!r}"
        raise TypeError(msg)


def _check_grace(grace: float) -> None:
    _check_seconds("grace", grace)
    if math.isinf(grace):
        # An infinite grace would let one daemon block interpreter exit forever.
        msg = f"grace must be a finite number of seconds, got {grace!r}"
        raise ValueError(msg)


def _default_name(thread_name: str, fn: object) -> str:
    """``Thread-N (fn-name)``, as threading.Thread names a thread made with a target."""
    fn_name = getattr(fn, "__name__", None)
    return f"{thread_name} ({fn_name})" if isinstance(fn_name, str) else thread_name
