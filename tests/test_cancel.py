"""CancelToken, Cancelled, current_token, check_cancelled and sleep."""

from __future__ import annotations

import pickle
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from threadkit import Cancelled, CancelToken, _cancel


def test_new_token_is_live() -> None:
    token = CancelToken()
    assert not token.cancelled
    assert token.reason is None
    token.raise_if_cancelled()  # does not raise
    assert token.wait(0) is False


def test_cancel_sets_flag_reason_and_is_idempotent() -> None:
    token = CancelToken()
    token.cancel("first")
    token.cancel("second")
    assert token.cancelled
    assert token.reason == "first"
    with pytest.raises(Cancelled, match=r"^first$") as info:
        token.raise_if_cancelled()
    assert info.value.reason == "first"


def test_cancelled_is_base_exception_not_exception() -> None:
    assert issubclass(Cancelled, BaseException)
    assert not issubclass(Cancelled, Exception)
    caught = False
    try:
        try:
            raise Cancelled("x")
        except Exception:
            pytest.fail("except Exception swallowed Cancelled")
    except Cancelled:
        caught = True
    assert caught


def test_cancelled_pickles_with_reason() -> None:
    exc = pickle.loads(pickle.dumps(Cancelled("why")))
    assert isinstance(exc, Cancelled)
    assert exc.reason == "why"
    assert pickle.loads(pickle.dumps(Cancelled())).reason is None


def test_wait_returns_when_cancelled_from_another_thread() -> None:
    token = CancelToken()
    waiting = threading.Event()
    seen: list[bool] = []

    def waiter() -> None:
        waiting.set()
        seen.append(token.wait())

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait()
    token.cancel()
    t.join()
    assert seen == [True]


def test_on_cancel_runs_once_and_unregister_works() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("a"))
    unregister = token.on_cancel(lambda: calls.append("b"))
    unregister()
    unregister()  # idempotent
    token.cancel()
    token.cancel()
    assert calls == ["a"]


def test_on_cancel_after_cancel_runs_at_once() -> None:
    token = CancelToken()
    token.cancel()
    calls: list[int] = []
    unregister = token.on_cancel(lambda: calls.append(1))
    assert calls == [1]
    unregister()


def test_same_callback_registered_twice_runs_twice() -> None:
    token = CancelToken()
    calls: list[int] = []

    def cb() -> None:
        calls.append(1)

    token.on_cancel(cb)
    token.on_cancel(cb)
    token.cancel()
    assert calls == [1, 1]


def test_failing_callback_is_reported_and_others_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: reported.append(args.exc_value))
    token = CancelToken()
    calls: list[int] = []

    def bad() -> None:
        raise ValueError("callback failed")

    token.on_cancel(bad)
    token.on_cancel(lambda: calls.append(1))
    token.cancel()
    assert calls == [1]
    assert len(reported) == 1
    assert isinstance(reported[0], ValueError)


def test_child_follows_parent_with_reason() -> None:
    parent = CancelToken()
    child = parent.child()
    grandchild = CancelToken(child)
    parent.cancel("stop")
    assert child.cancelled
    assert grandchild.cancelled
    assert grandchild.reason == "stop"


def test_child_of_cancelled_parent_starts_cancelled() -> None:
    parent = CancelToken()
    parent.cancel("early")
    child = parent.child()
    assert child.cancelled
    assert child.reason == "early"


def test_cancelling_child_leaves_parent_live() -> None:
    parent = CancelToken()
    child = parent.child()
    child.cancel()
    assert not parent.cancelled


def test_cancelled_child_detaches_from_parent() -> None:
    parent = CancelToken()
    for _ in range(100):
        parent.child().cancel()
    assert len(parent._callbacks) == 0


def test_on_cancel_wakes_a_blocked_call() -> None:
    """The documented way to unblock a call that cannot poll: a sentinel on its queue."""
    import queue

    token = CancelToken()
    q: queue.Queue[object] = queue.Queue()
    stop = object()
    token.on_cancel(lambda: q.put(stop))
    token.cancel()
    assert q.get() is stop


def test_current_token_outside_any_task_is_never_cancelled() -> None:
    token = threadkit.current_token()
    assert not token.cancelled
    threadkit.check_cancelled()
    with pytest.raises(
        RuntimeError,
        match=r"^the root token outside any threadkit task cannot be cancelled; use a "
        r"ThreadGroup or a CancelToken of your own$",
    ):
        token.cancel()


def test_sleep_returns_normally_when_not_cancelled() -> None:
    threadkit.sleep(0)
    threadkit.sleep(0.001)


def test_sleep_and_check_raise_when_current_token_cancelled() -> None:
    token = CancelToken()
    token.cancel("bye")
    t: threadkit.ManagedThread[None] = threadkit.ManagedThread(
        target=threadkit.sleep, args=(30,), token=token
    )
    t.start()
    assert isinstance(t.exception(), Cancelled)


def test_sleep_wakes_on_cancel() -> None:
    started = threading.Event()

    def task() -> None:
        started.set()
        threadkit.sleep(60)

    t: threadkit.ManagedThread[None] = threadkit.ManagedThread(target=task)
    t.start()
    started.wait()
    t.cancel("wake")
    exc = t.exception(timeout=10)
    assert isinstance(exc, Cancelled)
    assert exc.reason == "wake"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "seconds must be >= 0, got -1"),
        (float("nan"), ValueError, "seconds must be >= 0, got nan"),
        ("1", TypeError, "seconds must be a number of seconds, got '1'"),
        (True, TypeError, "seconds must be a number of seconds, got True"),
        (None, TypeError, "seconds must be a number of seconds, got None"),
    ],
)
def test_sleep_rejects_bad_seconds(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        threadkit.sleep(value)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_bad_arguments() -> None:
    with pytest.raises(TypeError) as info:
        CancelToken(parent="x")  # type: ignore[arg-type]
    assert str(info.value) == "parent must be a CancelToken or None, got 'x'"
    with pytest.raises(TypeError) as info:
        CancelToken().cancel(reason=3)  # type: ignore[arg-type]
    assert str(info.value) == "reason must be a str or None, got 3"
    with pytest.raises(TypeError) as info:
        CancelToken().on_cancel(None)  # type: ignore[arg-type]
    assert str(info.value) == "callback must be callable, got None"
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, got -0\.5$"):
        CancelToken().wait(-0.5)


@pytest.mark.shake
@given(
    tree=st.lists(st.integers(min_value=-1, max_value=30), min_size=1, max_size=30),
    cancel_at=st.data(),
)
def test_token_tree_cancellation_reaches_exactly_the_subtree(
    tree: list[int], cancel_at: st.DataObject
) -> None:
    """For any tree, cancelling a node cancels exactly its descendants, from another thread."""
    tokens: list[CancelToken] = []
    parents: list[int] = []
    for i, p in enumerate(tree):
        parent_index = p if 0 <= p < i else -1
        parents.append(parent_index)
        tokens.append(CancelToken(tokens[parent_index] if parent_index >= 0 else None))
    target = cancel_at.draw(st.integers(min_value=0, max_value=len(tokens) - 1))
    t = threading.Thread(target=tokens[target].cancel, args=("cut",))
    t.start()
    t.join()

    def descends(i: int) -> bool:
        while i >= 0:
            if i == target:
                return True
            i = parents[i]
        return False

    for i, token in enumerate(tokens):
        assert token.cancelled == descends(i)
        if token.cancelled:
            assert token.reason == "cut"


def test_failing_callback_with_default_hook_prints_and_cancel_completes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    token = CancelToken()
    calls: list[int] = []
    token.on_cancel(lambda: 1 / 0)
    token.on_cancel(lambda: calls.append(1))
    token.cancel()
    assert calls == [1]
    err = capsys.readouterr().err
    assert err.startswith("Exception ignored in on_cancel callback <function")
    assert "ZeroDivisionError: division by zero" in err


def test_keyboard_interrupt_in_callback_is_reraised_after_all_callbacks() -> None:
    parent = CancelToken()
    token = parent.child()
    calls: list[int] = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    token.on_cancel(interrupt)
    token.on_cancel(lambda: calls.append(1))
    with pytest.raises(KeyboardInterrupt):
        token.cancel()
    assert calls == [1]
    assert token.cancelled
    assert len(parent._callbacks) == 0  # it still detached from its parent


def test_timed_out_waits_leave_nothing_behind_and_all_waiters_wake() -> None:
    token = CancelToken()
    for _ in range(3):
        assert token.wait(0) is False
        assert token.wait(0.001) is False
    assert token._waiters == []
    woke: list[bool] = []
    barrier = threading.Barrier(4)

    def waiter() -> None:
        barrier.wait()
        woke.append(token.wait())

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    barrier.wait()
    token.cancel()
    for t in threads:
        t.join()
    assert woke == [True, True, True]
    assert token.wait() is True


def test_a_deep_chain_of_children_is_cancelled_without_recursion() -> None:
    chain = [CancelToken()]
    for _ in range(5_000):
        chain.append(chain[-1].child())
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(chain[-1].wait()))
    waiter.start()
    chain[0].cancel("deep")
    waiter.join()
    assert woke == [True]
    assert all(t.reason == "deep" for t in chain)
    assert all(not t._callbacks for t in chain)


class _MaskingEvent(threading.Event):
    """An Event whose wait() fails as CPython's Condition.wait race makes it fail when a Ctrl-C
    lands between its giving the lock up and its ``try``."""

    def __init__(self, context: BaseException) -> None:
        super().__init__()
        self.context = context

    def wait(self, timeout: float | None = None) -> bool:
        try:
            raise self.context
        except BaseException:
            msg = "release unlocked lock"
            raise RuntimeError(msg)  # noqa: B904  # the context is the point


def test_a_wait_raises_the_ctrl_c_that_condition_wait_turned_into_runtimeerror() -> None:
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught:
        _cancel._wait(_MaskingEvent(interrupt), 1.0)
    assert caught.value is interrupt
    with pytest.raises(RuntimeError, match=r"^release unlocked lock$"):  # no Ctrl-C behind it
        _cancel._wait(_MaskingEvent(ValueError()), 1.0)
