"""Hypothesis state machine: any lifecycle sequence keeps ManagedThread's invariants."""

from __future__ import annotations

import threading

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from threadkit import Cancelled, ManagedThread, ThreadState

ORDER = {
    ThreadState.CREATED: 0,
    ThreadState.RUNNING: 1,
    ThreadState.SUCCEEDED: 2,
    ThreadState.FAILED: 2,
    ThreadState.CANCELLED: 2,
}


class Scripted(ManagedThread[int]):
    """A thread whose run blocks until the test releases it, then ends as scripted."""

    def __init__(self, outcome: str) -> None:
        super().__init__(daemon=True)
        self.outcome = outcome
        self.release = threading.Event()
        self.hooks: list[str] = []

    def on_start(self) -> None:
        self.hooks.append("on_start")

    def run(self) -> int:  # type: ignore[override]
        self.hooks.append("run")
        # Wait for the test, but wake at once when cancelled.
        self.token.on_cancel(self.release.set)
        self.release.wait()
        if self.outcome == "observe-cancel":
            self.token.raise_if_cancelled()
        if self.outcome == "fail":
            raise ValueError("scripted failure")
        return 1

    def on_success(self, result: int) -> None:
        self.hooks.append("outcome")

    def on_error(self, exc: BaseException) -> None:
        self.hooks.append("outcome")

    def on_cancel(self, exc: Cancelled) -> None:
        self.hooks.append("outcome")

    def on_finish(self) -> None:
        self.hooks.append("on_finish")


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.outcome = "ok"
        self.thread: Scripted | None = None
        self.started = False
        self.cancelled_before_start = False
        self.last_state = ThreadState.CREATED

    @precondition(lambda self: self.thread is None)
    @rule(outcome=st.sampled_from(["ok", "fail", "observe-cancel"]))
    def create(self, outcome: str) -> None:
        self.thread = Scripted(outcome)
        self.thread._tk_on_done = lambda _t: None  # owned: failures are not reported to the hook

    @precondition(lambda self: self.thread is not None)
    @rule()
    def start(self) -> None:
        assert self.thread is not None
        if self.started:
            with pytest.raises(RuntimeError, match=r"^threads can only be started once$"):
                self.thread.start()
        else:
            self.cancelled_before_start = self.thread.token.cancelled
            self.thread.start()
            self.started = True

    @precondition(lambda self: self.thread is not None)
    @rule(reason=st.one_of(st.none(), st.text(max_size=5)))
    def cancel(self, reason: str | None) -> None:
        assert self.thread is not None
        self.thread.cancel(reason)

    @precondition(lambda self: self.started)
    @rule()
    def release(self) -> None:
        assert self.thread is not None
        self.thread.release.set()

    @precondition(lambda self: self.started)
    @rule()
    def join_and_check_result(self) -> None:
        thread = self.thread
        assert thread is not None
        thread.release.set()
        thread.join()
        state = thread.state
        assert state.finished
        exc = thread.exception()
        if state is ThreadState.SUCCEEDED:
            assert exc is None
            assert thread.result() == 1
        elif state is ThreadState.FAILED:
            assert isinstance(exc, ValueError)
            with pytest.raises(ValueError, match=r"^scripted failure$"):
                thread.result()
        else:
            assert isinstance(exc, Cancelled)
            with pytest.raises(Cancelled):
                thread.result()
        expected = ["outcome", "on_finish"]
        if not self.cancelled_before_start:
            expected = ["on_start", "run", *expected]
        assert thread.hooks == expected
        if self.cancelled_before_start:
            assert state is ThreadState.CANCELLED

    @invariant()
    def state_only_moves_forward(self) -> None:
        if self.thread is None:
            return
        state = self.thread.state
        assert ORDER[state] >= ORDER[self.last_state]
        self.last_state = state
        if not self.started:
            assert state is ThreadState.CREATED

    def teardown(self) -> None:
        if self.thread is not None and self.started:
            self.thread.release.set()
            self.thread.join()


TestLifecycle = pytest.mark.shake(LifecycleMachine.TestCase)
