"""Tests for spawn_daemon, shutdown_daemons, handle_signals and what happens at interpreter exit."""

from __future__ import annotations

import contextlib
import functools
import glob
import inspect
import itertools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import threadkit
from threadkit import ManagedThread, ThreadState
from threadkit import _daemon as daemon_module
from threadkit._daemon import registered_daemons

#: A ceiling for waits on events that must happen; never a timing assertion.
WAIT = 10.0
ROOT = Path(__file__).resolve().parent.parent
POSIX = sys.platform != "win32"


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


@pytest.fixture
def excepthook(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Capture what threads report to threading.excepthook (pytest would fail the test)."""
    calls: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", calls.append)
    return calls


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that stubborn daemons wait on; set at teardown so that none is left behind."""
    event = threading.Event()
    yield event
    event.set()


def wait_for_cancel() -> str | None:
    """A cooperative daemon: waits until cancelled, then says why."""
    token = threadkit.current_token()
    assert token.wait(WAIT)
    return token.reason


def sleep_until_cancelled() -> None:
    """A cooperative daemon that ends by Cancelled."""
    threadkit.sleep(WAIT)
    raise AssertionError("never cancelled")


def ignore_cancel(release: threading.Event, entered: threading.Event | None = None) -> None:
    """A daemon that ignores cancellation until the test releases it."""
    if entered is not None:
        entered.set()
    assert release.wait(WAIT)


# -- spawn_daemon -----------------------------------------------------------------------------


@pytest.mark.shake
def test_spawn_daemon_starts_a_registered_daemon_that_shutdown_cancels() -> None:
    t = threadkit.spawn_daemon(sleep_until_cancelled, name="waiter")
    assert isinstance(t, ManagedThread)
    assert (t.name, t.daemon, t.is_alive()) == ("waiter", True, True)
    assert t in registered_daemons()
    assert threadkit.shutdown_daemons() == []
    assert t.state is ThreadState.CANCELLED
    assert t not in registered_daemons()


@pytest.mark.shake
def test_daemons_that_end_unregister_themselves_and_keep_their_result() -> None:
    threads = [threadkit.spawn_daemon(pow, i, 2) for i in range(50)]
    assert [t.result(WAIT) for t in threads] == [i * i for i in range(50)]
    assert not set(threads) & set(registered_daemons())  # no unbounded registry growth


def test_spawn_daemon_names_the_thread_after_fn_by_default() -> None:
    t = threadkit.spawn_daemon(len, "abc")
    assert t.result(WAIT) == 3
    assert re.fullmatch(r"Thread-\d+ \(len\)", t.name)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((42,), {}, TypeError, "fn must be callable, got 42"),
        ((len, "x"), {"name": 1}, TypeError, "name must be a str or None, got 1"),
        ((len, "x"), {"grace": -0.5}, ValueError, "grace must be >= 0, got -0.5"),
        ((len, "x"), {"grace": "1"}, TypeError, "grace must be a number of seconds, got '1'"),
        (
            (len, "x"),
            {"grace": float("inf")},
            ValueError,
            "grace must be a finite number of seconds, got inf",
        ),
    ],
)
def test_spawn_daemon_rejects_bad_arguments_before_starting_a_thread(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=exactly(message)):
        threadkit.spawn_daemon(*args, **kwargs)
    assert threading.active_count() == before
    assert registered_daemons() == []


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-1, ValueError, "timeout must be >= 0, got -1"),
        (float("nan"), ValueError, "timeout must be >= 0, got nan"),
        ("soon", TypeError, "timeout must be a number of seconds, got 'soon'"),
    ],
)
def test_shutdown_daemons_checks_its_timeout(
    timeout: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exactly(message)):
        threadkit.shutdown_daemons(timeout)


@pytest.mark.shake
def test_a_failing_daemon_reports_to_excepthook_and_unregisters(
    excepthook: list[threading.ExceptHookArgs],
) -> None:
    error = OSError("disk full")

    def fail() -> None:
        raise error

    t = threadkit.spawn_daemon(fail, name="failing")
    t.join(WAIT)
    assert t.state is ThreadState.FAILED
    assert [(a.exc_value, a.thread) for a in excepthook] == [(error, t)]
    assert t not in registered_daemons()


# -- a Ctrl-C anywhere while a daemon starts ---------------------------------------------------


class InterruptAtLine:
    """Raise KeyboardInterrupt at the ``n``-th line run in ``functions``, in this thread only.

    A trace function that raises makes the traced frame raise at that line: the same as a
    Ctrl-C whose handler runs there, but at a chosen line instead of wherever it lands. Only
    a line's first run in a frame counts: the second line event of a ``with`` line is its
    ``__exit__`` call, where no Python code can protect a lock from an exception
    (bpo-29988; a signal handler rarely runs there, a trace function always
    would).
    """

    def __init__(
        self, n: int, *functions: Callable[..., object], last: tuple[Any, int] | None = None
    ) -> None:
        """``last``: (function, line): lines run after that one in it are not counted."""
        self.n = n
        self.last = None if last is None else (inspect.unwrap(last[0]).__code__, last[1])
        self.codes = {inspect.unwrap(f).__code__ for f in functions}
        self.lines = 0
        self.fired = False
        self.past_last = False
        self._seen: dict[FrameType, set[int]] = {}
        self._previous: Any = None

    def _global(self, frame: FrameType, event: str, arg: object) -> Any:
        return self._local if frame.f_code in self.codes else None

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and not self.fired:
            seen = self._seen.setdefault(frame, set())
            if frame.f_lineno in seen:
                return self._local
            seen.add(frame.f_lineno)
            last = self.last
            if last is not None and last[0] is frame.f_code and frame.f_lineno > last[1]:
                self.past_last = True
            if self.past_last:
                return self._local
            self.lines += 1
            if self.lines == self.n:
                self.fired = True
                raise KeyboardInterrupt
        return self._local

    def __enter__(self) -> InterruptAtLine:
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.settrace(self._previous)
        self._seen.clear()


def _every_line(run: Callable[[int], bool]) -> int:
    """Call ``run(n)`` for n = 1, 2, ... until it reports that no interrupt fired."""
    for n in itertools.count(1):
        if not run(n):
            return n - 1
        assert n < 500, "the interrupted code never completes"
    raise AssertionError("unreachable")


_START_PATH = (
    threadkit.spawn_daemon,
    threadkit.PeriodicThread.start,
    threadkit.Supervisor.start,
    daemon_module._start_registered,
    daemon_module._register,
)


@pytest.mark.parametrize("kind", ["spawn_daemon", "PeriodicThread", "Supervisor"])
def test_a_ctrl_c_anywhere_while_a_daemon_starts_leaves_it_registered_iff_it_runs(
    kind: str,
) -> None:
    """Regression: spawn_daemon registered the thread before its try, so a Ctrl-C landing
    there left a thread that never ran in the registry (exit waited its grace for it)."""
    # The first registration installs the exit hook: run it now, so that every run below
    # takes the same path and n counts the same lines.
    threadkit.spawn_daemon(len, "x").join(WAIT)

    def run(n: int) -> bool:
        name = f"interrupted-{kind}-{n}"
        made: list[ManagedThread[Any]] = []
        if kind == "PeriodicThread":
            made.append(threadkit.PeriodicThread(WAIT, len, "x", name=name))
        elif kind == "Supervisor":
            child = functools.partial(ManagedThread, target=wait_for_cancel, name=f"{name}-child")
            made.append(threadkit.Supervisor([child], name=name))
        interrupted = False
        with InterruptAtLine(n, *_START_PATH) as interrupt:
            try:
                if made:
                    made[0].start()
                else:
                    threadkit.spawn_daemon(wait_for_cancel, name=name)
            except KeyboardInterrupt:
                interrupted = True
        assert interrupted is interrupt.fired, n
        ours = [t for t in threading.enumerate() if t.name == name]
        try:
            assert [t for t in registered_daemons() if t.name == name] == ours, n
            assert bool(ours) is not interrupted or interrupt.lines == n, n
        finally:
            for t in ours:
                assert isinstance(t, ManagedThread)
                t.cancel()
                t.join(WAIT)
        if made and not ours:
            # Interrupted before the start: the thread is still new and starts normally.
            assert made[0].state is ThreadState.CREATED, n
            made[0].start()
            made[0].cancel()
            assert isinstance(made[0].exception(WAIT), threadkit.Cancelled), n
        return interrupt.fired

    assert _every_line(run) >= 5


def test_a_ctrl_c_while_start_waits_for_the_new_thread_keeps_the_daemon_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a Ctrl-C that lands while Thread.start() waits for the new thread to run
    raises from spawn_daemon, but the daemon runs: it must stay registered for shutdown."""
    start = threading.Thread.start

    def start_then_interrupt(self: threading.Thread) -> None:
        start(self)
        if self.name == "interrupted-start":
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        threadkit.spawn_daemon(wait_for_cancel, name="interrupted-start")
    monkeypatch.undo()
    (daemon,) = [t for t in threading.enumerate() if t.name == "interrupted-start"]
    assert isinstance(daemon, ManagedThread)
    try:
        assert daemon in registered_daemons()
        assert threadkit.shutdown_daemons(timeout=WAIT) == []
        assert daemon.result(WAIT) == "shutdown_daemons() was called"
    finally:
        daemon.cancel()
        daemon.join(WAIT)


# -- shutdown_daemons ---------------------------------------------------------------------------


@pytest.mark.shake
def test_shutdown_returns_the_daemons_that_ignore_cancellation(release: threading.Event) -> None:
    entered = threading.Event()
    stubborn = threadkit.spawn_daemon(ignore_cancel, release, entered, name="stubborn")
    polite = threadkit.spawn_daemon(wait_for_cancel, name="polite")
    assert entered.wait(WAIT)
    assert threadkit.shutdown_daemons(timeout=0.05) == [stubborn]
    assert polite.result(WAIT) == "shutdown_daemons() was called"
    assert stubborn.token.cancelled
    assert stubborn in registered_daemons()  # registered until it ends
    release.set()
    stubborn.join(WAIT)
    assert stubborn.state is ThreadState.SUCCEEDED
    assert registered_daemons() == []


@pytest.mark.shake
def test_without_a_timeout_each_daemon_gets_its_own_grace(release: threading.Event) -> None:
    entered = threading.Event()
    # Would block the call for WAIT seconds (until release) if grace were not honoured.
    stubborn = threadkit.spawn_daemon(ignore_cancel, release, entered, grace=0.05)
    polite = threadkit.spawn_daemon(wait_for_cancel, grace=WAIT)
    assert entered.wait(WAIT)
    assert threadkit.shutdown_daemons() == [stubborn]
    assert not polite.is_alive()


@pytest.mark.shake
def test_shutdown_cancels_in_reverse_start_order_and_is_idempotent() -> None:
    cancelled: list[str] = []
    ready = threading.Barrier(4)

    def service(label: str) -> None:
        token = threadkit.current_token()
        # on_cancel callbacks run in the cancelling thread, in the order of the cancellations.
        token.on_cancel(functools.partial(cancelled.append, label))
        ready.wait(WAIT)
        token.wait(WAIT)

    threads = [threadkit.spawn_daemon(service, label) for label in ("a", "b", "c")]
    ready.wait(WAIT)
    assert threadkit.shutdown_daemons() == []
    assert cancelled == ["c", "b", "a"]
    assert threadkit.shutdown_daemons() == []
    assert cancelled == ["c", "b", "a"]
    assert not any(t.is_alive() for t in threads)


@pytest.mark.shake
def test_a_daemon_may_shut_down_the_daemons_itself() -> None:
    other = threadkit.spawn_daemon(sleep_until_cancelled, name="other")

    def shut_down() -> list[ManagedThread[Any]]:
        return threadkit.shutdown_daemons()

    me = threadkit.spawn_daemon(shut_down, name="me")
    # It cannot join itself: it is cancelled, not waited for, and reported alive.
    assert me.result(WAIT) == [me]
    assert other.state is ThreadState.CANCELLED


# -- the exit hook, run in this process -------------------------------------------------------


@pytest.fixture
def exit_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test run the exit hook; the module's flags are restored afterwards."""
    monkeypatch.setattr(daemon_module, "_exiting", False)
    monkeypatch.setattr(daemon_module, "_exit_done", False)


@pytest.mark.usefixtures("exit_hook")
def test_the_exit_hook_warns_about_stragglers_and_refuses_new_daemons(
    release: threading.Event,
) -> None:
    entered = threading.Event()
    stubborn = threadkit.spawn_daemon(ignore_cancel, release, entered, name="stuck", grace=0.05)
    polite = threadkit.spawn_daemon(wait_for_cancel, name="polite")
    assert entered.wait(WAIT)
    message = (
        "1 daemon thread(s) did not finish within their grace period at interpreter exit and "
        "were left to die with the interpreter: 'stuck' (grace 0.05 s)"
    )
    with pytest.warns(RuntimeWarning, match=exactly(message)):
        daemon_module._at_exit()
    assert polite.result(WAIT) == "interpreter exit"
    with pytest.raises(
        RuntimeError, match=exactly("cannot start daemon 'late': the interpreter is exiting")
    ):
        threadkit.spawn_daemon(len, "x", name="late")
    late = threadkit.PeriodicThread(1.0, len, "x", name="late")
    with pytest.raises(
        RuntimeError, match=exactly("cannot start daemon 'late': the interpreter is exiting")
    ):
        late.start()
    # A non-daemon thread is not the registry's business: it still starts.
    t = threadkit.PeriodicThread(1.0, len, "x", daemon=False)
    t.start()
    t.stop(timeout=WAIT)
    release.set()
    stubborn.join(WAIT)


@pytest.mark.usefixtures("exit_hook")
def test_a_second_interrupt_at_exit_stops_waiting(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    stubborn = threadkit.spawn_daemon(ignore_cancel, release, name="stuck")

    def interrupted(timeout: float | None, reason: str) -> list[ManagedThread[Any]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(daemon_module, "_shutdown", interrupted)
    with pytest.warns(RuntimeWarning, match=r"'stuck' \(grace 2\.0 s\)$"):
        daemon_module._at_exit()
    assert daemon_module._exit_done
    release.set()
    stubborn.join(WAIT)


def test_a_second_ctrl_c_anywhere_in_the_exit_hook_still_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the exit hook began (refusing new daemons) before its try, so a Ctrl-C
    there escaped it without marking it done (later signals then raised during interpreter
    shutdown instead of being ignored)."""
    threadkit.spawn_daemon(len, "x").join(WAIT)  # the exit hook is installed: same path
    source, first = inspect.getsourcelines(daemon_module._at_exit)
    (wait,) = [first + i for i, line in enumerate(source) if "= _shutdown(" in line]

    def run(n: int) -> bool:
        monkeypatch.setattr(daemon_module, "_exiting", False)
        monkeypatch.setattr(daemon_module, "_exit_done", False)
        daemon = threadkit.spawn_daemon(wait_for_cancel, name=f"exiting-{n}")
        try:
            # A Ctrl-C can always land in a finally block: count lines up to the wait only.
            interrupt = InterruptAtLine(
                n,
                daemon_module._at_exit,
                daemon_module._shutdown,
                last=(daemon_module._at_exit, wait),
            )
            with warnings.catch_warnings(record=True), interrupt:
                warnings.simplefilter("always")
                with contextlib.suppress(KeyboardInterrupt):
                    daemon_module._at_exit()
            # Once the hook has begun (it refuses new daemons), it ends marked done.
            assert daemon_module._exit_done or not daemon_module._exiting, n
        finally:
            daemon.cancel()
            daemon.join(WAIT)
        return interrupt.fired

    assert _every_line(run) >= 5


class _Interrupted(Exception):
    pass


class _ReportingEvent(threading.Event):
    """An Event that says when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_the_exit_wait_lets_a_signal_handler_run_even_if_another_thread_got_the_signal() -> None:
    # A signal the kernel hands to another thread does not wake the main thread from a lock
    # wait; its Python handler only runs when the main thread next runs bytecode. The exit
    # hook waits in slices so that a second Ctrl-C/SIGTERM still stops the wait promptly.
    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    old = signal.signal(signal.SIGUSR1, handler)
    done = _ReportingEvent()
    stop_receiver = threading.Event()
    receiver = threading.Thread(target=stop_receiver.wait, args=(WAIT,), name="receiver")
    receiver.start()

    def send() -> None:
        assert done.waiting.wait(WAIT)
        signal.pthread_kill(receiver.ident or 0, signal.SIGUSR1)

    sender = threading.Thread(target=send, name="sender")
    fallback = threading.Timer(WAIT / 2, done.set)  # ends the wait if the handler never runs
    try:
        sender.start()
        fallback.start()
        with pytest.raises(_Interrupted):
            daemon_module._wait(done, time.monotonic() + WAIT)
        assert not done.is_set()  # interrupted by the handler, not ended by the fallback
    finally:
        fallback.cancel()
        stop_receiver.set()
        for t in (sender, receiver, fallback):
            t.join(WAIT)
        signal.signal(signal.SIGUSR1, old)


# -- handle_signals, in this process ----------------------------------------------------------


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("restore_handlers")
def test_handled_signals_raise_in_the_main_thread_and_restore_puts_back_the_old_handlers() -> None:
    before_term, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    restore = threadkit.handle_signals()
    try:
        with pytest.raises(SystemExit) as info:
            signal.raise_signal(signal.SIGTERM)
        assert info.value.code == 128 + signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.getsignal(signal.SIGINT) is before_int
    restore()  # idempotent


@pytest.mark.usefixtures("restore_handlers")
def test_restore_leaves_a_handler_installed_after_ours_alone() -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    restore = threadkit.handle_signals(signal.SIGTERM)
    signal.signal(signal.SIGTERM, mine)
    restore()
    assert signal.getsignal(signal.SIGTERM) is mine


@pytest.mark.usefixtures("restore_handlers", "exit_hook")
def test_signals_are_ignored_once_the_exit_hook_has_run(monkeypatch: pytest.MonkeyPatch) -> None:
    restore = threadkit.handle_signals(signal.SIGTERM)
    try:
        monkeypatch.setattr(daemon_module, "_exit_done", True)
        signal.raise_signal(signal.SIGTERM)  # no SystemExit
    finally:
        restore()


@pytest.mark.parametrize(
    ("signals", "error", "message"),
    [
        (("TERM",), TypeError, "signals must be signal numbers, got 'TERM'"),
        ((True,), TypeError, "signals must be signal numbers, got True"),
        ((99999,), ValueError, "signals must be signal numbers, got 99999"),
        ((signal.SIGKILL,), ValueError, "signal SIGKILL cannot be caught")
        if POSIX
        else ((-1,), ValueError, "signals must be signal numbers, got -1"),
    ],
)
@pytest.mark.usefixtures("restore_handlers")
def test_handle_signals_rejects_bad_signals_before_installing_anything(
    signals: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(error, match=exactly(message)):
        threadkit.handle_signals(signal.SIGTERM, *signals)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.usefixtures("restore_handlers")
def test_handle_signals_and_restore_need_the_main_thread() -> None:
    restore = threadkit.handle_signals()
    errors: list[BaseException] = []

    def from_a_thread() -> None:
        for call in (threadkit.handle_signals, restore):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)

    t = threading.Thread(target=from_a_thread)
    t.start()
    t.join(WAIT)
    restore()
    assert [str(e) for e in errors] == [
        "handle_signals() must be called from the main thread",
        "the function returned by handle_signals() must be called from the main thread",
    ]


# -- at interpreter exit, in child interpreters (3.11, 3.12 and 3.13) --------------------------


@functools.cache
def _find_python(version: str) -> str | None:
    """An interpreter of ``version`` (e.g. "3.12"): this one, on PATH, or under pyenv."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    home = os.path.expanduser("~/.pyenv/versions")
    candidates = [
        *sorted(glob.glob(os.path.join(home, f"{version}.*", "bin", "python"))),
        shutil.which(f"python{version}"),
    ]
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


PYTHONS = [
    pytest.param(
        version,
        id=f"py{version}",
        marks=pytest.mark.skipif(
            _find_python(version) is None, reason=f"no Python {version} interpreter found"
        ),
    )
    for version in ("3.11", "3.12", "3.13")
]


def run_python(
    version: str, script: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    python = _find_python(version)
    assert python is not None
    return subprocess.run(
        [python, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_child_env(),
    )


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


def write_script(tmp_path: Path, source: str) -> Path:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(source))
    return script


def assert_complete(records: Path) -> int:
    """The records file holds records 0..n-1 and the summary line: nothing was lost."""
    lines = records.read_text().splitlines()
    assert lines, "the records file is empty: the buffer was never flushed"
    assert lines[-1] == f"end: {len(lines) - 1} records", lines[-3:]
    assert lines[:-1] == [f"record {i}" for i in range(len(lines) - 1)]
    return len(lines) - 1


@pytest.mark.parametrize("version", PYTHONS)
def test_the_daemon_example_loses_no_record_when_main_returns(version: str, tmp_path: Path) -> None:
    records = tmp_path / "records.txt"
    result = run_python(version, ROOT / "examples" / "background_daemon.py", str(records))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "main returns while the recorder is still writing\n"
    assert result.stderr == ""
    assert assert_complete(records) >= 100


RECORDER = """
    import sys, threading
    import threadkit

    path, ending, kind = sys.argv[1:]

    def record(started):
        count = 0
        with open(path, "w", buffering=1 << 20) as out:
            try:
                while True:
                    out.write(f"record {count}\\n")
                    count += 1
                    if count == 100:
                        started.set()
                    threadkit.sleep(0.001)
            finally:
                out.write(f"end: {count} records\\n")

    started = threading.Event()
    if kind == "managed":
        threadkit.spawn_daemon(record, started, name="recorder")
    else:
        threading.Thread(target=record, args=(started,), daemon=True).start()
    started.wait()
    if ending == "exit":
        sys.exit(3)
    if ending == "raise":
        raise LookupError("main failed")
"""


@pytest.mark.parametrize("version", PYTHONS)
@pytest.mark.parametrize(("ending", "status"), [("return", 0), ("exit", 3), ("raise", 1)])
def test_a_managed_daemon_flushes_however_the_main_thread_ends(
    version: str, ending: str, status: int, tmp_path: Path
) -> None:
    records = tmp_path / "records.txt"
    result = run_python(version, write_script(tmp_path, RECORDER), str(records), ending, "managed")
    assert result.returncode == status, result.stderr
    assert ("LookupError: main failed" in result.stderr) == (ending == "raise")
    assert assert_complete(records) >= 100


@pytest.mark.parametrize("version", PYTHONS)
def test_control_a_plain_daemon_thread_loses_its_buffer(version: str, tmp_path: Path) -> None:
    # What the managed daemon is compared with: the same code in a plain daemon thread is
    # killed where it stands, its finally: block never runs, its buffer never reaches the file.
    records = tmp_path / "records.txt"
    result = run_python(version, write_script(tmp_path, RECORDER), str(records), "return", "plain")
    assert result.returncode == 0, result.stderr
    assert "end:" not in records.read_text()


STUBBORN = """
    import time
    import threadkit

    def stubborn():
        try:
            while True:
                time.sleep(0.01)  # never looks at its token
        finally:
            print("stubborn: finally", flush=True)

    def polite():
        try:
            threadkit.sleep(3600)
        finally:
            print("polite: finally", flush=True)

    threadkit.spawn_daemon(stubborn, name="stubborn", grace=0.2)
    threadkit.spawn_daemon(polite, name="polite")
    print("main returns", flush=True)
"""


@pytest.mark.parametrize("version", PYTHONS)
def test_a_daemon_that_ignores_cancellation_is_named_and_abandoned_at_exit(
    version: str, tmp_path: Path
) -> None:
    result = run_python(version, write_script(tmp_path, STUBBORN))
    assert result.returncode == 0, result.stderr
    # The polite daemon finished; the stubborn one was left to die with the interpreter.
    assert result.stdout.splitlines() == ["main returns", "polite: finally"]
    assert (
        "RuntimeWarning: 1 daemon thread(s) did not finish within their grace period at "
        "interpreter exit and were left to die with the interpreter: 'stubborn' (grace 0.2 s)"
    ) in result.stderr


OUTLIVES_MAIN = """
    import atexit, threading
    import threadkit

    beats = 0
    beat = threading.Condition()

    def heartbeat():
        global beats
        with beat:
            beats += 1
            beat.notify_all()

    hb = threadkit.PeriodicThread(0.005, heartbeat, name="heartbeat")
    # Registered before the daemon hook (which hb.start() registers), so it runs after it.
    atexit.register(lambda: print(f"after the exit hook: heartbeat {hb.state.name}", flush=True))
    hb.start()
    main_done = threading.Event()

    def worker():
        main_done.wait()
        with beat:
            seen = beats
            alive = beat.wait_for(lambda: beats >= seen + 10, timeout=10)
        print("heartbeat ran on after main returned" if alive else "heartbeat stopped early",
              flush=True)

    threading.Thread(target=worker, name="worker").start()  # a non-daemon thread
    main_done.set()
"""


@pytest.mark.parametrize("version", PYTHONS)
def test_registered_daemons_live_until_the_non_daemon_threads_end(
    version: str, tmp_path: Path
) -> None:
    # Like plain daemons they run as long as the program does; only their end differs.
    result = run_python(version, write_script(tmp_path, OUTLIVES_MAIN))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "heartbeat ran on after main returned",
        "after the exit hook: heartbeat CANCELLED",
    ]


FORKS = """
    import os, sys, warnings
    import threadkit

    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
    threadkit.spawn_daemon(threadkit.sleep, 3600, name="parents", grace=600.0)
    pid = os.fork()
    if pid == 0:
        print("child: exits", flush=True)
        sys.exit(0)  # a normal exit, so the exit hook runs in the child too
    _, status = os.waitpid(pid, 0)
    print(f"parent: child exited with {os.waitstatus_to_exitcode(status)}", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("version", PYTHONS)
def test_a_forked_child_does_not_wait_for_its_parents_daemons(version: str, tmp_path: Path) -> None:
    # The child has none of the parent's threads: waiting for their 600 s of grace at its exit
    # would make run_python time out.
    result = run_python(version, write_script(tmp_path, FORKS), timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child: exits", "parent: child exited with 0"]
    assert "RuntimeWarning" not in result.stderr


# -- signals, in child interpreters -----------------------------------------------------------


def start_python(version: str, script: Path, *args: str) -> subprocess.Popen[str]:
    python = _find_python(version)
    assert python is not None
    return subprocess.Popen(
        [python, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next line of output, waiting at most WAIT seconds for it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    assert ready, "the child printed nothing"
    return proc.stdout.readline().rstrip("\n")


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return out, err


SIGNALLED = """
    import sys, threading
    import threadkit

    path = sys.argv[1]
    threadkit.handle_signals()

    def record(started):
        count = 0
        with open(path, "w", buffering=1 << 20) as out:
            try:
                while True:
                    out.write(f"record {count}\\n")
                    count += 1
                    if count == 100:
                        started.set()
                    threadkit.sleep(0.001)
            finally:
                out.write(f"end: {count} records\\n")

    started = threading.Event()
    threadkit.spawn_daemon(record, started, name="recorder")
    started.wait()
    try:
        print("ready", flush=True)
        threading.Event().wait()  # until a signal interrupts the wait
    finally:
        print("main: finally", flush=True)
"""


@pytest.mark.skipif(not POSIX, reason="sends POSIX signals")
@pytest.mark.parametrize("version", PYTHONS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_handled_signal_shuts_the_daemons_down_gracefully(
    version: str, signum: signal.Signals, tmp_path: Path
) -> None:
    records = tmp_path / "records.txt"
    proc = start_python(version, write_script(tmp_path, SIGNALLED), str(records))
    assert read_line(proc) == "ready"
    proc.send_signal(signum)
    out, err = finish(proc)
    if signum == signal.SIGTERM:
        assert proc.returncode == 143, err
    else:
        # An unhandled KeyboardInterrupt ends Python by SIGINT, as the shell expects.
        assert proc.returncode == -signal.SIGINT, err
        assert "KeyboardInterrupt" in err
    assert out == "main: finally\n"
    assert assert_complete(records) >= 100


SECOND_SIGNAL = """
    import os
    import threading
    import threadkit

    threadkit.handle_signals()

    def stubborn():
        # Printed by the daemon itself, not by an on_cancel callback: callbacks run in the
        # cancelling thread, here the main thread, which the second signal must find waiting.
        threadkit.current_token().wait()
        # os.write, not print: the test reacts to the line at once, and a daemon still inside
        # print() (holding stdout's lock) when the interpreter finalizes is a fatal error.
        os.write(1, b"stubborn: cancelled, ignoring it\\n")
        threading.Event().wait()

    threadkit.spawn_daemon(stubborn, name="stubborn", grace=600.0)
    print("ready", flush=True)
    threading.Event().wait()
"""


@pytest.mark.skipif(not POSIX, reason="sends POSIX signals")
@pytest.mark.parametrize("version", PYTHONS)
def test_a_second_signal_stops_waiting_for_a_stubborn_daemon(version: str, tmp_path: Path) -> None:
    proc = start_python(version, write_script(tmp_path, SECOND_SIGNAL))
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    # Exit is now waiting out the stubborn daemon's 600 s of grace.
    assert read_line(proc) == "stubborn: cancelled, ignoring it"
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc)  # well before 600 s, or finish() times out
    assert proc.returncode == 143, err
    assert "'stubborn' (grace 600.0 s)" in err


@pytest.mark.skipif(not POSIX, reason="sends POSIX signals")
@pytest.mark.parametrize("version", PYTHONS)
def test_the_signals_example_stops_on_sigterm(version: str) -> None:
    proc = start_python(version, ROOT / "examples" / "background_signals.py")
    assert read_line(proc).startswith(f"service running as pid {proc.pid};")
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 143, err
    # The main thread unwinds first, then the exit shuts the worker down gracefully.
    assert out.splitlines() == ["main: unwinding", "worker: flushed and closed"]
    assert err == ""
