"""ManagedThread: drop-in Thread behaviour, results, hooks, cancellation, contextvars."""

from __future__ import annotations

import contextvars
import signal
import threading
from typing import Any

import pytest

import threadkit
from _harness import ctrl_c_masked_in_start, current_frames
from threadkit import Cancelled, CancelToken, ManagedThread, ThreadState

pytestmark = pytest.mark.shake

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    captured: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", captured.append)
    return captured


class Recorder(ManagedThread[int]):
    """Records every hook call, in order."""

    def __init__(self, outcome: str = "ok", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome = outcome
        self.calls: list[str] = []

    def on_start(self) -> None:
        self.calls.append("on_start")

    def run(self) -> int:  # type: ignore[override]
        self.calls.append("run")
        if self.outcome == "fail":
            raise ValueError("run failed")
        if self.outcome == "cancel":
            raise Cancelled("run cancelled")
        return 7

    def on_success(self, result: int) -> None:
        self.calls.append(f"on_success({result})")

    def on_error(self, exc: BaseException) -> None:
        self.calls.append(f"on_error({type(exc).__name__})")

    def on_cancel(self, exc: Cancelled) -> None:
        self.calls.append("on_cancel")

    def on_finish(self) -> None:
        self.calls.append("on_finish")


def test_is_a_drop_in_thread() -> None:
    t: ManagedThread[None] = ManagedThread(target=lambda: None, name="worker", daemon=True)
    assert isinstance(t, threading.Thread)
    assert t.name == "worker"
    assert t.daemon is True
    assert t.ident is None
    assert not t.is_alive()
    assert t.state is ThreadState.CREATED
    t.start()
    t.join()
    assert t.ident is not None
    assert not t.is_alive()
    assert t.state is ThreadState.SUCCEEDED


def test_target_args_kwargs_and_result() -> None:
    t: ManagedThread[str] = ManagedThread(target="{}-{x}".format, args=(1,), kwargs={"x": 2})
    t.start()
    assert t.result() == "1-2"
    assert t.exception() is None


def test_no_target_returns_none() -> None:
    t: ManagedThread[None] = ManagedThread()
    t.start()
    assert t.result() is None


def test_start_twice_is_runtime_error_in_every_state() -> None:
    release = threading.Event()
    t: ManagedThread[bool] = ManagedThread(target=release.wait)
    t.start()
    with pytest.raises(RuntimeError, match=r"^threads can only be started once$"):
        t.start()  # while running
    release.set()
    t.join()
    with pytest.raises(RuntimeError, match=r"^threads can only be started once$"):
        t.start()  # finished


def test_result_reraises_same_exception_with_traceback() -> None:
    error = KeyError("missing")

    def fail() -> None:
        raise error

    t: ManagedThread[None] = ManagedThread(target=fail)
    t._tk_on_done = lambda _t: None  # owned: no excepthook report
    t.start()
    with pytest.raises(KeyError) as info:
        t.result()
    assert info.value is error
    assert info.value.__traceback__ is not None
    frames = []
    tb = info.value.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "fail" in frames
    assert t.exception() is error
    assert t.state is ThreadState.FAILED


def test_result_timeout() -> None:
    release = threading.Event()
    t: ManagedThread[bool] = ManagedThread(target=release.wait, name="slow")
    t.start()
    with pytest.raises(TimeoutError, match=r"^thread 'slow' did not finish within 0\.01 seconds$"):
        t.result(timeout=0.01)
    with pytest.raises(TimeoutError):
        t.exception(timeout=0)
    release.set()
    assert t.result() is True


def test_result_before_start_is_runtime_error() -> None:
    t: ManagedThread[None] = ManagedThread()
    with pytest.raises(RuntimeError, match=r"^cannot wait for a thread before it is started$"):
        t.result()


def test_join_before_start_behaves_like_thread() -> None:
    with pytest.raises(RuntimeError, match="cannot join thread before it is started"):
        ManagedThread().join()


@pytest.mark.parametrize(
    ("outcome", "calls", "state"),
    [
        ("ok", ["on_start", "run", "on_success(7)", "on_finish"], ThreadState.SUCCEEDED),
        ("fail", ["on_start", "run", "on_error(ValueError)", "on_finish"], ThreadState.FAILED),
        ("cancel", ["on_start", "run", "on_cancel", "on_finish"], ThreadState.CANCELLED),
    ],
)
def test_hook_order(
    outcome: str,
    calls: list[str],
    state: ThreadState,
    reports: list[threading.ExceptHookArgs],
) -> None:
    t = Recorder(outcome)
    t.start()
    t.join()
    assert t.calls == calls
    assert t.state is state
    # Only a real failure reaches threading.excepthook; cancellation is not an error.
    assert len(reports) == (1 if outcome == "fail" else 0)


def test_cancelled_before_start_skips_on_start_and_run() -> None:
    t = Recorder()
    t.cancel("never mind")
    t.start()
    t.join()
    assert t.calls == ["on_cancel", "on_finish"]
    assert t.state is ThreadState.CANCELLED
    exc = t.exception()
    assert isinstance(exc, Cancelled)
    assert exc.reason == "never mind"


def test_hook_that_raises_fails_the_thread(reports: list[threading.ExceptHookArgs]) -> None:
    class BadSuccess(Recorder):
        def on_success(self, result: int) -> None:
            super().on_success(result)
            raise RuntimeError("hook failed")

    t = BadSuccess()
    t.start()
    with pytest.raises(RuntimeError, match=r"^hook failed$"):
        t.result()
    assert t.state is ThreadState.FAILED
    # Exactly one outcome hook ran, then on_finish.
    assert t.calls == ["on_start", "run", "on_success(7)", "on_finish"]
    assert [r.exc_value for r in reports] == [t.exception()]


def test_on_finish_error_chains_the_run_error(reports: list[threading.ExceptHookArgs]) -> None:
    class BadFinish(Recorder):
        def on_finish(self) -> None:
            raise OSError("finish failed")

    t = BadFinish("fail")
    t.start()
    exc = t.exception()
    assert isinstance(exc, OSError)
    assert isinstance(exc.__context__, ValueError)  # the run's error is not lost
    assert len(reports) == 1


def test_on_start_error_skips_run_and_calls_on_error(
    reports: list[threading.ExceptHookArgs],
) -> None:
    class BadStart(Recorder):
        def on_start(self) -> None:
            super().on_start()
            raise ValueError("no start")

    t = BadStart()
    t.start()
    t.join()
    assert t.calls == ["on_start", "on_error(ValueError)", "on_finish"]
    assert len(reports) == 1


def test_standalone_error_reaches_excepthook_before_join_returns(
    reports: list[threading.ExceptHookArgs],
) -> None:
    def fail() -> None:
        raise ValueError("boom")

    t: ManagedThread[None] = ManagedThread(target=fail, name="failer")
    t.start()
    t.join()
    assert len(reports) == 1
    (report,) = reports
    assert report.exc_type is ValueError
    assert str(report.exc_value) == "boom"
    assert report.thread is t


def test_excepthook_that_raises_falls_back_to_sys_excepthook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[type[BaseException]] = []

    def bad_hook(args: threading.ExceptHookArgs) -> None:
        raise RuntimeError("hook is broken")

    monkeypatch.setattr(threading, "excepthook", bad_hook)
    monkeypatch.setattr("sys.excepthook", lambda et, ev, tb: seen.append(et))
    t: ManagedThread[None] = ManagedThread(target=lambda: 1 / 0)
    t.start()
    t.join()
    assert seen == [RuntimeError]


def test_thread_sees_its_token_as_current_token() -> None:
    token = CancelToken()
    t: ManagedThread[CancelToken] = ManagedThread(target=threadkit.current_token, token=token)
    t.start()
    assert t.result() is token
    assert t.token is token


def test_cancel_is_seen_by_check_cancelled() -> None:
    inside = threading.Event()

    def loop() -> None:
        inside.set()
        while True:
            threadkit.check_cancelled()
            threadkit.current_token().wait(1)

    t: ManagedThread[None] = ManagedThread(target=loop)
    t.start()
    inside.wait()
    t.cancel()
    t.cancel()  # idempotent
    t.join()
    assert t.state is ThreadState.CANCELLED


def test_contextvars_copied_from_caller_of_start() -> None:
    t: ManagedThread[str] = ManagedThread(target=var.get)
    token = var.set("at start")
    try:
        t.start()
    finally:
        var.reset(token)
    assert t.result() == "at start"


def test_changes_in_thread_do_not_leak_back() -> None:
    def set_it() -> str:
        var.set("inside")
        return var.get()

    t: ManagedThread[str] = ManagedThread(target=set_it)
    t.start()
    assert t.result() == "inside"
    assert var.get() == "unset"


def test_explicit_context_is_used() -> None:
    ctx = contextvars.Context()
    ctx.run(var.set, "given")
    t: ManagedThread[str] = ManagedThread(target=var.get, context=ctx)
    t.start()
    assert t.result() == "given"


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError) as info:
        ManagedThread(target=3)  # type: ignore[arg-type]
    assert str(info.value) == "target must be callable or None, got 3"
    with pytest.raises(TypeError) as info:
        ManagedThread(token="t")  # type: ignore[arg-type]
    assert str(info.value) == "token must be a CancelToken or None, got 't'"
    with pytest.raises(TypeError) as info:
        ManagedThread(context={})  # type: ignore[arg-type]
    assert str(info.value) == "context must be a contextvars.Context or None, got {}"


def test_own_attributes_do_not_collide_with_thread_privates() -> None:
    plain = threading.Thread()
    managed: ManagedThread[None] = ManagedThread()
    ours = set(vars(managed)) - set(vars(plain))
    assert ours, "expected threadkit attributes"
    assert all(name.startswith("_tk_") for name in ours), sorted(ours)
    public = {n for n in dir(ManagedThread) if not n.startswith("_")} - set(dir(threading.Thread))
    assert public == {
        "cancel",
        "exception",
        "on_cancel",
        "on_error",
        "on_finish",
        "on_start",
        "on_success",
        "result",
        "state",
        "token",
    }


def test_run_attribute_restored_after_start() -> None:
    t: ManagedThread[int] = ManagedThread(target=int)
    t.start()
    t.join()
    assert "run" not in vars(t)


class _Interrupt(Exception):
    pass


def test_result_after_a_signal_interrupted_join_still_waits() -> None:
    """python/cpython#90882: on 3.11/3.12 an interrupted join() marks a live thread stopped."""
    release = threading.Event()
    t: ManagedThread[bool] = ManagedThread(target=release.wait, name="busy")
    t.start()

    def handler(signum: int, frame: object) -> None:
        raise _Interrupt

    main = threading.main_thread().ident
    assert main is not None

    def interrupt_main_once_blocked_in_join() -> None:
        # The bug needs the signal to land while join() waits: watch the main thread's frame.
        pause = threading.Event()
        while True:
            frame = current_frames().get(main)
            code = frame.f_code if frame is not None else None
            in_join = code is not None and code.co_filename == threading.__file__
            if in_join and code.co_name in {"join", "_wait_for_tstate_lock"}:
                break
            pause.wait(0.001)
        signal.pthread_kill(main, signal.SIGUSR1)

    sender = threading.Thread(target=interrupt_main_once_blocked_in_join)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(_Interrupt):
            sender.start()
            t.join()  # interrupted by the handler's exception
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sender.join()
    assert t.state is ThreadState.RUNNING
    with pytest.raises(TimeoutError):
        t.result(timeout=0.01)
    # Another thread's result() must block until the thread really ends: with the bug it
    # returned at once (raising TimeoutError for timeout=None).
    outcome: list[object] = []
    waited = threading.Event()

    def waiter() -> None:
        try:
            outcome.append(t.result())
        except BaseException as exc:  # recorded for the assertion
            outcome.append(exc)
        waited.set()

    w = threading.Thread(target=waiter)
    w.start()
    assert not waited.wait(0.05)  # still blocked: the thread has not finished
    release.set()
    w.join()
    assert outcome == [True]
    assert not t.is_alive()


def test_result_from_inside_the_thread_is_runtime_error() -> None:
    def own_result() -> object:
        return threading.current_thread().result()  # type: ignore[attr-defined]

    t: ManagedThread[object] = ManagedThread(target=own_result)
    t._tk_on_done = lambda _t: None
    t.start()
    with pytest.raises(RuntimeError, match=r"^cannot join current thread$"):
        t.result()


# -- Ctrl-C inside start() ---------------------------------------------------------------------


def _start_interrupted_at(snippet: str) -> tuple[ManagedThread[int], BaseException | None]:
    """Start a thread with a KeyboardInterrupt raised just before the line of
    ``threading.Thread.start`` containing ``snippet`` (as a Ctrl-C landing there would)."""
    from _harness import LineInjector, Window

    start = threading.Thread.start.__code__
    line = Window("Thread.start", snippet).lines(start).start
    injector = LineInjector((), extra_codes=[start])
    thread: ManagedThread[int] = ManagedThread(target=int, args=("7",), name="interrupted-start")
    hit = next(
        p
        for p in injector.record(ManagedThread(target=int, args=("1",)).start)[0]
        if p.lineno == line
    )
    injection = injector.inject(hit, thread.start, KeyboardInterrupt)
    assert injection.fired
    return thread, injection.error


@pytest.mark.parametrize("snippet", ["_limbo[self] = self", "_start_"])
def test_a_start_interrupted_before_the_os_thread_exists_ends_the_thread(snippet: str) -> None:
    thread, error = _start_interrupted_at(snippet)
    assert isinstance(error, KeyboardInterrupt)
    # Never running, it ended at once: nothing waits for it forever, threading forgets it.
    assert thread.state is ThreadState.FAILED
    assert thread.exception(timeout=0) is error
    assert thread not in threading.enumerate()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match=r"^threads can only be started once$"):
        thread.start()


def test_a_start_interrupted_once_the_os_thread_exists_runs_the_thread() -> None:
    thread, error = _start_interrupted_at("self._started.wait()")
    assert isinstance(error, KeyboardInterrupt)
    assert thread.result(timeout=30) == 7
    assert thread.state is ThreadState.SUCCEEDED


def test_a_ctrl_c_that_start_turned_into_runtimeerror_is_raised_as_the_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython's Condition.wait race turns a Ctrl-C in Thread.start's wait for the new thread
    into RuntimeError("release unlocked lock"); ManagedThread.start raises the Ctrl-C, and the
    thread (which exists) runs as usual."""
    masked = ctrl_c_masked_in_start(monkeypatch, lambda t: t.name == "masked")
    thread: ManagedThread[int] = ManagedThread(target=int, args=("7",), name="masked")
    with pytest.raises(KeyboardInterrupt) as caught:
        thread.start()
    assert masked == [thread]
    assert caught.value.__suppress_context__
    assert thread.result(timeout=30) == 7
    assert thread.state is ThreadState.SUCCEEDED
