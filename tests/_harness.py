"""Reliability-test tools: soak counters, hook capture, thread accounting, interrupt injection."""

from __future__ import annotations

import dis
import gc
import inspect
import json
import linecache
import os
import signal
import sys
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import Any

from threadkit import _cancel

#: ``THREADKIT_STRESS=1`` (``make stress``) runs the soak tests at full scale.
STRESS = bool(os.environ.get("THREADKIT_STRESS"))

#: A thread that has not ended this long after it should have is a hang, not a slow machine.
JOIN_TIMEOUT = 30.0

#: Where the soak tests leave their counters (one JSON object per pytest process).
SOAK_REPORT = Path(os.environ.get("THREADKIT_SOAK_REPORT", "/tmp/threadkit-soak-core.json"))


def scaled(default: int, stress: int) -> int:
    """``stress`` under THREADKIT_STRESS=1, else ``default`` (the reduced run CI does)."""
    return stress if STRESS else default


# -- soak counters ------------------------------------------------------------------------------


class SoakCounters:
    """Thread-safe counters the soak tests add to and report in one line."""

    #: Printed in this order; the last three must stay 0 (the soak tests assert it).
    FIELDS = (
        "examples",
        "tasks_run",
        "faults_injected",
        "interrupts_delivered",
        "callbacks_run",
        "unraisable_reported",
        "excepthook_reported",
        "known_bug_hits",
        "signals_resent",
        "results_lost",
        "threads_leaked",
        "hangs",
    )
    MUST_BE_ZERO = ("results_lost", "threads_leaked", "hangs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, **counts: int) -> None:
        unknown = set(counts) - set(self.FIELDS)
        if unknown:
            msg = f"unknown soak counters: {sorted(unknown)}"
            raise KeyError(msg)
        with self._lock:
            self._counts.update(counts)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {name: self._counts[name] for name in self.FIELDS}

    def since(self, start: dict[str, int] | None) -> dict[str, int]:
        """The counts added since ``start`` (a :meth:`snapshot`; ``None``: since the beginning)."""
        now = self.snapshot()
        return {name: now[name] - (start or {}).get(name, 0) for name in self.FIELDS}

    def summary(self, seconds: float | None = None, start: dict[str, int] | None = None) -> str:
        parts = [f"{name}={value}" for name, value in self.since(start).items()]
        if seconds is not None:
            parts.append(f"seconds={seconds:.1f}")
        mode = "stress" if STRESS else "reduced"
        return f"threadkit soak ({mode}): " + " ".join(parts)

    def write(self, path: Path, seconds: float, start: dict[str, int] | None = None) -> None:
        data: dict[str, object] = {
            **self.since(start),
            "seconds": round(seconds, 1),
            "stress": STRESS,
        }
        path.write_text(json.dumps(data, sort_keys=True) + "\n")


SOAK = SoakCounters()


# -- hook capture -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unraisable:
    """What one call of :func:`sys.unraisablehook` received."""

    exc_value: BaseException | None
    err_msg: str | None
    obj: object


class HookRecorder:
    """Records every report to ``sys.unraisablehook`` and ``threading.excepthook`` while active.

    Both hooks are process-wide and called from whichever thread reports, so the
    lists are guarded by a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.unraisable: list[Unraisable] = []
        self.excepthook: list[threading.ExceptHookArgs] = []
        self._saved: tuple[Any, Any] | None = None

    def _on_unraisable(self, args: Any) -> None:
        with self._lock:
            self.unraisable.append(Unraisable(args.exc_value, args.err_msg, args.object))

    def _on_thread_error(self, args: threading.ExceptHookArgs) -> None:
        with self._lock:
            self.excepthook.append(args)

    def __enter__(self) -> HookRecorder:
        self._saved = (sys.unraisablehook, threading.excepthook)
        sys.unraisablehook = self._on_unraisable
        threading.excepthook = self._on_thread_error
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._saved is not None
        sys.unraisablehook, threading.excepthook = self._saved
        SOAK.add(unraisable_reported=len(self.unraisable), excepthook_reported=len(self.excepthook))


# -- thread accounting --------------------------------------------------------------------------


class ThreadAccount:
    """The threads started since it was made, and which of them are still alive."""

    def __init__(self) -> None:
        self.before = set(threading.enumerate())

    def new(self) -> list[threading.Thread]:
        # A Thread interrupted inside start() before its OS thread existed stays in
        # threading's bookkeeping without ever running (ident None): not a live thread.
        return [t for t in threading.enumerate() if t not in self.before and t.ident is not None]

    def alive_after(self, seconds: float) -> list[threading.Thread]:
        """Join every new thread within one shared deadline; return those still running."""
        deadline = time.monotonic() + seconds
        threads = self.new()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]


def join_all(threads: Iterable[threading.Thread], seconds: float = JOIN_TIMEOUT) -> list[str]:
    """Join threads within a shared deadline; return the names of those that did not end."""
    deadline = time.monotonic() + seconds
    stuck = []
    for thread in threads:
        if thread.ident is None:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stuck.append(thread.name)
    if stuck:
        SOAK.add(hangs=1)
    return stuck


class Watchdog:
    """Runs ``on_hang`` (which must unblock the test) if the block outlives ``seconds``.

    A watchdog that fires counts a hang; the test then asserts ``fired`` is false.
    """

    def __init__(
        self, seconds: float, on_hang: Callable[[], object], *, count: bool = True
    ) -> None:
        self.seconds = seconds
        self.on_hang = on_hang
        self.count = count  # False when the caller classifies (and counts) hangs itself
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def _watch(self) -> None:
        if not self._done.wait(self.seconds):
            self.fired = True
            if self.count:
                SOAK.add(hangs=1)
            self.on_hang()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()


# -- where the main thread is -------------------------------------------------------------------

_MAIN = threading.main_thread()
_CONDITION_WAIT = threading.Condition.wait.__code__


def _lines_of(code: CodeType, snippet: str) -> frozenset[int]:
    source, start = inspect.getsourcelines(code)
    return frozenset(start + i for i, line in enumerate(source) if snippet in line)


#: Where the main thread blocks on a lock, by function: the lines of its blocking
#: ``acquire(...)`` calls. In Condition.wait, the ``waiter.acquire(...)`` after it released the
#: lock (anywhere else in it a signal can hit CPython's release/re-acquire race); in
#: ThreadGroup._wait, which waits on a lock of its own.
_BLOCKING_LINES: dict[CodeType, frozenset[int]] = {
    _CONDITION_WAIT: frozenset(
        line
        for line in _lines_of(_CONDITION_WAIT, "waiter.acquire(")
        if line > min(_lines_of(_CONDITION_WAIT, "self._release_save()"))
    ),
}


def add_blocking_lines(
    function: Callable[..., object], snippet: str, *, after: str | None = None
) -> None:
    """Count the main thread as blocked (for :func:`blocked_in`) in ``function``'s calls to C
    on the lines containing ``snippet`` (e.g. ``"waiter.acquire("``), only those after the
    first line containing ``after`` when it is given."""
    code = _code_of(function)
    lines = _lines_of(code, snippet)
    if after is not None:
        start = min(_lines_of(code, after), default=None)
        lines = frozenset(line for line in lines if start is not None and line > start)
    if not lines:
        msg = f"snippet {snippet!r} not found in {code.co_qualname}: update the harness"
        raise LookupError(msg)
    _BLOCKING_LINES[code] = _BLOCKING_LINES.get(code, frozenset()) | lines


def ctrl_c_masked_in_start(
    monkeypatch: Any, which: Callable[[threading.Thread], bool]
) -> list[threading.Thread]:
    """Make ``Thread.start()``, for the threads ``which`` picks, end the way CPython's
    ``Condition.wait`` race makes it end when a Ctrl-C lands in its wait for the new thread:
    the thread runs, and ``start()`` raises ``RuntimeError("release unlocked lock")`` with the
    KeyboardInterrupt as its context. Returns the threads so started."""
    real = threading.Thread.start
    masked: list[threading.Thread] = []

    def start(self: threading.Thread) -> None:
        real(self)
        if which(self):
            masked.append(self)
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                msg = "release unlocked lock"
                raise RuntimeError(msg)  # noqa: B904  # the context is the point

    monkeypatch.setattr(threading.Thread, "start", start)
    return masked


def current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()`` with the cyclic collector off while it runs.

    On CPython 3.11 it holds the runtime's thread-list lock while it makes frame objects; a
    collection started by one of those allocations can free a ``threading.local``, whose
    dealloc takes that lock again: the thread deadlocks holding the GIL, and no timeout can
    fire (python/cpython#106883; seen here as a --shake run that never ended). Keeping the
    collector off for the call is the fix CPython chose for 3.12.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


class MainWatch:
    """Where the main thread is, published by the main thread itself.

    Other threads must not read the main thread's frames: on CPython 3.11,
    ``sys._current_frames()`` can deadlock a thread being started
    (python/cpython#106883) and walking ``f_back`` of a running thread's frames
    crashed the interpreter (a segfault, under ``--shake``). So, while a watch is
    active (``with MAIN_WATCH:``, which :class:`Interrupt` does), a profile hook in
    the main thread keeps count of the functions it is in, which one is innermost,
    and, while it is blocked in ``Condition.wait``, its stack as ``(code, line)``
    pairs; other threads only read those.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._previous: Any = None
        self.active: dict[CodeType, int] = {}
        self._stack: list[CodeType] = []
        self.innermost: CodeType | None = None
        #: The stack (innermost first) while the main thread is blocked in Condition.wait.
        self.blocked: tuple[tuple[CodeType, int], ...] | None = None

    def __enter__(self) -> MainWatch:
        if threading.current_thread() is not _MAIN:
            msg = "only the main thread can be watched"
            raise RuntimeError(msg)
        self._depth += 1
        # An exception raised in a profile function (a Ctrl-C handled in it) turns profiling
        # off: install the hook again whenever a watch begins.
        if self._depth == 1 or sys.getprofile() is not self._hook:
            frame: FrameType | None = sys._getframe(1)
            stack = []
            while frame is not None:
                stack.append(frame.f_code)
                frame = frame.f_back
            self._stack = stack[::-1]
            self.active = dict(Counter(self._stack))
            self.innermost = self._stack[-1] if self._stack else None
            self.blocked = None
            if self._depth == 1:
                self._previous = sys.getprofile()
            sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            sys.setprofile(self._previous)
            self.blocked = None
            self.innermost = None

    def _hook(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            code = frame.f_code
            self._stack.append(code)
            self.active[code] = self.active.get(code, 0) + 1
            self.innermost = code
        elif event == "return":
            if self._stack:
                code = self._stack.pop()
                self.active[code] -= 1
            self.innermost = self._stack[-1] if self._stack else None
        elif event == "c_call":
            if frame.f_lineno in _BLOCKING_LINES.get(frame.f_code, ()):
                stack = []
                walk: FrameType | None = frame
                while walk is not None:  # this thread's own frames: safe
                    stack.append((walk.f_code, walk.f_lineno))
                    walk = walk.f_back
                self.blocked = tuple(stack)
        elif self.blocked is not None and frame.f_code in _BLOCKING_LINES:  # c_return/exception
            self.blocked = None

    def is_in(self, code: CodeType) -> bool:
        return self.active.get(code, 0) > 0


MAIN_WATCH = MainWatch()
_HOOK_CODE = MainWatch._hook.__code__

#: Code a SIGINT handler can run in where a KeyboardInterrupt raised is lost or breaks the
#: interpreter's own bookkeeping, whatever the program does: a weakref callback (the
#: exception is unraisable, printed and dropped: the Ctrl-C is lost; seen as a fan-out whose
#: tasks were never cancelled), and Condition.__enter__ once its lock is taken (the `with`
#: block never owns it: the lock stays held, and the next wait on it hangs; seen in
#: Thread.start's wait for the new thread, which then hangs setting its _started event).
_SWALLOWING_CODE = frozenset(
    {
        weakref.WeakSet()._remove.__code__,  # type: ignore[attr-defined]
        weakref.WeakValueDictionary()._remove.__code__,  # type: ignore[attr-defined]
        weakref.WeakKeyDictionary()._remove.__code__,  # type: ignore[attr-defined]
        threading.Condition.__enter__.__code__,
    }
)


def _cannot_take_a_ctrl_c(frame: FrameType | None) -> bool:
    """Whether a KeyboardInterrupt raised by a signal handler called at ``frame`` would land
    where no program can handle it: in the watch's profile hook (a harness artifact: see
    Interrupt._handler), in a weakref or gc callback or a ``__del__``, or in
    Condition.__enter__."""
    if frame is not None and (
        frame.f_code in _SWALLOWING_CODE or frame.f_code.co_name == "__del__"
    ):
        return True
    # A gc callback (Hypothesis installs one) also has its exception dropped as unraisable.
    gc_codes = {
        getattr(getattr(callback, "__func__", callback), "__code__", None)
        for callback in gc.callbacks
    }
    while frame is not None:
        if frame.f_code is _HOOK_CODE or frame.f_code in gc_codes:
            return True
        frame = frame.f_back
    return False


def blocked_in(function: Callable[..., object] | CodeType) -> Callable[[], bool]:
    """A predicate: the main thread is blocked on a lock (in Condition.wait or at a line given
    to :func:`add_blocking_lines`) under ``function`` (needs an active :data:`MAIN_WATCH`)."""
    code = function if isinstance(function, CodeType) else _code_of(function)

    def holds() -> bool:
        blocked = MAIN_WATCH.blocked
        return blocked is not None and any(c is code for c, _ in blocked)

    return holds


def running(function: Callable[..., object]) -> Callable[[], bool]:
    """A predicate: ``function`` is the main thread's innermost Python function (needs an
    active :data:`MAIN_WATCH`)."""
    code = _code_of(function)

    def holds() -> bool:
        return MAIN_WATCH.innermost is code

    return holds


def _code_of(function: Callable[..., object]) -> CodeType:
    code = getattr(inspect.unwrap(function), "__code__", None)
    if not isinstance(code, CodeType):
        msg = f"no code object for {function!r}"
        raise TypeError(msg)
    return code


# ThreadGroup, CancelToken and ManagedThread wait on locks of their own, not in Condition.wait,
# through _cancel._acquire (in slices, in the main thread).
add_blocking_lines(_cancel._acquire, "lock.acquire(timeout=")


def _describe(frame: FrameType | None, files: frozenset[str]) -> tuple[str, ...]:
    """The library frames of a stack, innermost first, as ``qualname:line`` (call it only on
    the calling thread's own frames)."""
    out = []
    while frame is not None:
        code = frame.f_code
        if code.co_filename in files:
            # f_lineno is None at an instruction that belongs to no line (seen on 3.11 under
            # --shake): -1, which no line range holds.
            line = frame.f_lineno if frame.f_lineno is not None else -1
            out.append(f"{code.co_qualname}:{line}")
        frame = frame.f_back
    return tuple(out)


# -- real Ctrl-C from a helper thread -----------------------------------------------------------


class Interrupt:
    """Delivers one real SIGINT to the main thread once ``when()`` holds; catches what it raises.

    The helper thread polls ``when`` (e.g. ``blocked_in(ThreadGroup._wait)``), waits
    ``lag`` seconds more, and sends ``signal.pthread_kill(main, SIGINT)``. Leaving the
    block settles the delivery: if the predicate never held the signal is not sent;
    if it was sent, the block waits (still inside the protected region) until the
    handler has run, so a KeyboardInterrupt can never land outside it and hit pytest.

    Whatever the block raised is stored in ``error`` (and suppressed); ``landed`` is
    the stack of library frames where the KeyboardInterrupt was raised.
    """

    #: Frames of these files are recorded in ``landed``.
    FILES: frozenset[str] = frozenset()

    def __init__(
        self,
        when: Callable[[], bool],
        *,
        lag: float = 0.0,
        give_up: float = 10.0,
        files: frozenset[str] | None = None,
    ) -> None:
        if threading.current_thread() is not _MAIN:
            msg = "signals are handled by the main thread only"
            raise RuntimeError(msg)
        self.when = when
        self.lag = lag
        self.give_up = give_up
        self.files = files if files is not None else self.FILES
        self.error: BaseException | None = None
        self.sent = False
        self.gave_up = False  # the helper stopped without sending
        self.handled = False
        self.landed: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._abandoned = False
        self._stop = threading.Event()
        self._resend = threading.Event()  # set once the handler ran: stop re-sending
        self._retry = threading.Event()  # wakes the re-sending helper (set with _resend too)
        #: Signals the handler did not act on because they came where a Ctrl-C cannot be taken.
        self.deferred = 0
        self._helper = threading.Thread(target=self._deliver, name="interrupter", daemon=True)
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.handled:
            return  # a re-sent signal that arrived after all: one interrupt only
        if _cannot_take_a_ctrl_c(frame):
            # Python runs signal handlers inside the profile hook too, and an exception from
            # there lands where no real Ctrl-C can: before the call of a `with` block's
            # __exit__, say, which leaves its lock held (on 3.12 threading's
            # _active_limbo_lock stayed taken and the next thread to end hung). In a weakref
            # callback or Condition.__enter__ a real one is lost or wedges the interpreter's
            # own locks (see _SWALLOWING_CODE), as no library can prevent; a user would press
            # Ctrl-C again. So does this helper: it sends it again (this thread must not: its
            # pthread_kill would run this handler again at once, still here).
            self.deferred += 1
            self._retry.set()
            return
        self.handled = True
        self.landed = _describe(frame, self.files)
        raise KeyboardInterrupt

    def _deliver(self) -> None:
        deadline = time.monotonic() + self.give_up
        while not self.when():
            if self._stop.wait(0.0002) or time.monotonic() > deadline:
                self.gave_up = True
                return
        if self.lag:
            time.sleep(self.lag)  # only moves the landing point; no assertion depends on it
        with self._lock:
            if self._abandoned:
                self.gave_up = True
                return
            self.sent = True
        ident = _MAIN.ident
        assert ident is not None
        signal.pthread_kill(ident, signal.SIGINT)
        # CPython checks for pending signals before a blocking lock acquire, not in it: a signal
        # that arrives just before the main thread blocks waits until the lock is released,
        # which for a group waiting on tasks that wait for cancellation is never. A user would
        # press Ctrl-C again; so does this helper (the handler acts on the first one only).
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not self.handled and time.monotonic() < deadline:
            self._retry.wait(0.05)
            self._retry.clear()
            if self._resend.is_set():
                return
            if not self.handled:
                SOAK.add(signals_resent=1)
                signal.pthread_kill(ident, signal.SIGINT)

    def __enter__(self) -> Interrupt:
        MAIN_WATCH.__enter__()  # what blocked_in() and running() read
        self._previous = signal.signal(signal.SIGINT, self._handler)
        self._helper.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self.error = exc
        try:
            try:
                self._settle()
            except KeyboardInterrupt as late:
                # It landed after the block but inside the protected region: the caller saw it.
                if self.error is None:
                    self.error = late
            self._stop_resending()
            self._helper.join()
            if self.sent:
                # A re-sent signal may still be on its way: let it reach this (now inert)
                # handler, not pytest's. A syscall delivers it; a Python call runs the handler.
                time.sleep(0.001)
                _noop()
        finally:
            # Whatever happened, the next test starts with pytest's handler and no watch.
            self._stop_resending()
            signal.signal(signal.SIGINT, self._previous)
            MAIN_WATCH.__exit__()
        if self.sent:
            SOAK.add(interrupts_delivered=1)
        return True

    def _stop_resending(self) -> None:
        self._resend.set()
        self._retry.set()

    def _settle(self) -> None:
        self._stop.set()
        if self.handled:
            self._stop_resending()
        with self._lock:
            self._abandoned = True
            sent = self.sent
        if not sent:
            return
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not self.handled:
            # Executing bytecode is what lets the main thread run the Python-level handler.
            time.sleep(0.0001)
            if time.monotonic() > deadline:
                SOAK.add(hangs=1)
                msg = "SIGINT was sent but its handler never ran"
                raise AssertionError(msg)


def _noop() -> None:
    pass


# -- line-exact injection -----------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """The ``hit``-th execution of one source line, in the main thread."""

    filename: str
    lineno: int
    qualname: str
    hit: int
    #: The traced frames (``qualname:line``, innermost first) when it was recorded.
    stack: tuple[str, ...] = field(default=(), compare=False)

    @property
    def source(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def __str__(self) -> str:
        return f"{self.qualname}:{self.lineno}#{self.hit} `{self.source}`"


class LineInjector:
    """Records the lines the main thread runs in some files, or raises just before one of them.

    ``sys.settrace`` (this thread only) sees each line of the target code before it
    runs; raising from the trace function raises in the traced frame at that line,
    as if a signal handler had raised there, and turns tracing off. A real signal can
    land at a line only where the interpreter checks for pending signals (after a
    call, on a backward jump, in a blocking wait), so this over-approximates: a window
    found this way is checked for reachability before it is called a bug.
    """

    def __init__(
        self,
        files: Iterable[str],
        extra_codes: Iterable[CodeType] = (),
        stack_files: Iterable[str] = (),
    ) -> None:
        self.files = frozenset(files)
        self.extra_codes = frozenset(extra_codes)
        #: Frames of these files make up ``Injection.stack`` (default: ``files``).
        self.stack_files = frozenset(stack_files) or self.files

    def _wanted(self, code: CodeType) -> bool:
        return code.co_filename in self.files or code in self.extra_codes

    def record(self, fn: Callable[[], object]) -> tuple[list[Point], BaseException | None]:
        """Run ``fn`` traced; return every point it passed, in order, and what it raised."""
        points: list[Point] = []
        hits: Counter[tuple[str, int]] = Counter()

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and not _leaving_with(frame):
                key = (frame.f_code.co_filename, frame.f_lineno)
                hits[key] += 1
                stack = _describe(frame, self.stack_files)
                points.append(Point(key[0], key[1], frame.f_code.co_qualname, hits[key], stack))
            return local

        try:
            self._run(fn, local)
        except BaseException as error:  # handed to the caller to judge
            return points, error
        return points, None

    def inject(
        self, point: Point, fn: Callable[[], object], exc: Callable[[], BaseException]
    ) -> Injection:
        """Run ``fn``, raising ``exc()`` just before ``point`` runs; report what happened."""
        hits: Counter[tuple[str, int]] = Counter()
        target = (point.filename, point.lineno)
        result = Injection()

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and not result.fired and not _leaving_with(frame):
                key = (frame.f_code.co_filename, frame.f_lineno)
                hits[key] += 1
                if key == target and hits[key] == point.hit:
                    result.fired = True
                    result.stack = _describe(frame, self.stack_files)
                    SOAK.add(faults_injected=1)
                    raise exc()
            return local

        try:
            self._run(fn, local)
        except BaseException as error:  # handed to the caller to judge
            result.error = error
        return result

    def _run(self, fn: Callable[[], object], local: Any) -> None:
        def global_trace(frame: FrameType, event: str, arg: object) -> Any:
            if event == "call" and self._wanted(frame.f_code):
                return local
            return None

        previous = sys.gettrace()
        sys.settrace(global_trace)
        try:
            fn()
        finally:
            sys.settrace(previous)


_INSTRUCTIONS: dict[CodeType, dict[int, list[dis.Instruction]]] = {}


def _leaving_with(frame: FrameType) -> bool:
    """Whether this line event is a ``with`` block's normal exit (its ``__exit__`` call).

    The interpreter reports that call as a new execution of the ``with`` line, but no
    signal can be handled between the end of the block and that call: raising there
    would skip ``__exit__`` (and leave a lock held), which no real interrupt can do.
    """
    code = frame.f_code
    table = _INSTRUCTIONS.get(code)
    if table is None:
        instructions = list(dis.get_instructions(code))
        table = {ins.offset: instructions[i : i + 4] for i, ins in enumerate(instructions)}
        _INSTRUCTIONS[code] = table
    upcoming = table.get(frame.f_lasti, [])
    if upcoming and upcoming[0].opname == "SWAP":  # `return x` inside the block
        upcoming = upcoming[1:]
    upcoming = upcoming[:3]
    return len(upcoming) == 3 and all(
        ins.opname == "LOAD_CONST" and ins.argval is None for ins in upcoming
    )


@dataclass
class Injection:
    """What :meth:`LineInjector.inject` did: whether it raised, where, and what ``fn`` raised."""

    fired: bool = False
    stack: tuple[str, ...] = ()
    error: BaseException | None = None


@dataclass(frozen=True)
class Window:
    """A stretch of one function: the lines from the one containing ``first`` to the one
    containing ``last`` (default: ``first``), or to the line before ``until``.

    ``innermost``: the window holds only when the point is in that function itself, not
    in something it calls.
    """

    qualname: str
    first: str
    last: str | None = None
    until: str | None = None
    innermost: bool = False

    def lines(self, code: CodeType) -> range:
        source, start = inspect.getsourcelines(code)
        first = _find(source, self.first, 0)
        if self.until is not None:
            last = _find(source, self.until, first + 1) - 1
        elif self.last is not None:
            last = _find(source, self.last, first)
        else:
            last = first
        return range(start + first, start + last + 1)

    def holds(self, stack: tuple[str, ...], lines: range) -> bool:
        for frame in stack[:1] if self.innermost else stack:
            qualname, _, line = frame.rpartition(":")
            if qualname == self.qualname and int(line) in lines:
                return True
        return False


def _find(source: list[str], snippet: str, after: int) -> int:
    for index in range(after, len(source)):
        if snippet in source[index]:
            return index
    msg = f"snippet {snippet!r} not found: the code changed, update the known window"
    raise LookupError(msg)


def codes_in(*modules: types.ModuleType) -> dict[str, CodeType]:
    """Every function code object defined in ``modules`` (nested ones too), by qualname."""
    found: dict[str, CodeType] = {}
    seen: set[tuple[int, str]] = set()

    def visit(code: CodeType) -> None:
        found.setdefault(code.co_qualname, code)
        for const in code.co_consts:
            if isinstance(const, CodeType):
                visit(const)

    def scan(values: Iterable[object], filename: str) -> None:
        for value in values:
            if (id(value), filename) in seen:
                continue
            seen.add((id(value), filename))
            if isinstance(value, property):
                scan([value.fget, value.fset, value.fdel], filename)
            elif isinstance(value, (staticmethod, classmethod)):
                scan([value.__func__], filename)
            elif isinstance(value, type):
                scan(vars(value).values(), filename)
            else:
                code = getattr(value, "__code__", None)
                if isinstance(code, CodeType) and code.co_filename == filename:
                    visit(code)

    for module in modules:
        filename = module.__file__
        assert filename is not None
        scan(list(vars(module).values()), filename)
    return found


def iter_unique(points: Iterable[Point], *, every_hit: bool) -> Iterator[Point]:
    """The injection points to try: every hit, or the first hit of each line."""
    seen: set[tuple[str, int]] = set()
    for point in points:
        key = (point.filename, point.lineno)
        if every_hit or key not in seen:
            seen.add(key)
            yield point
