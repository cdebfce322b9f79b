"""Reliability harness for the core: stateful models, fault injection, Ctrl-C anywhere, soak runs.

Covers CancelToken trees, ManagedThread and ThreadGroup. Each known bug found by the
harness has a ``strict`` xfail test below (search for ``reason="bug:``); where a model
or a sweep has to step around a known bug so that it can keep checking everything
else, the step-around names the xfail test that covers it. Fixing a bug means
deleting its xfail marker and its step-around.

Soak tests (marked ``slow``) run in reduced form by default and at full scale under
``THREADKIT_STRESS=1``; their counters are printed in one line when the module ends
and written to ``_harness.SOAK_REPORT``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import random
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import threadkit
from _harness import (
    JOIN_TIMEOUT,
    MAIN_WATCH,
    SOAK,
    SOAK_REPORT,
    STRESS,
    HookRecorder,
    Injection,
    Interrupt,
    LineInjector,
    Point,
    ThreadAccount,
    Watchdog,
    Window,
    blocked_in,
    codes_in,
    iter_unique,
    join_all,
    running,
    scaled,
)
from threadkit import (
    Cancelled,
    CancelToken,
    ManagedThread,
    ThreadGroup,
    ThreadState,
    _cancel,
    _group,
    _thread,
)

# The never-cancelled root token: a token or group that forgets to detach from its parent
# leaves a callback registered here for the life of the process.
_NEVER = _cancel._NEVER

LIB_FILES = frozenset(m.__file__ for m in (_cancel, _group, _thread) if m.__file__ is not None)
#: Frames recorded for interrupts: the library and threading.Thread.start (the launch window).
TRACE_FILES = LIB_FILES | {threading.__file__}
CODES = codes_in(_cancel, _group, _thread)
CODES["Thread.start"] = threading.Thread.start.__code__
CODES["Condition.wait"] = threading.Condition.wait.__code__

#: Short grace periods keep interrupted and timed-out groups fast; tasks here observe
#: cancellation within microseconds, so a straggler warning means a bug, not a slow machine.
GRACE = 0.5


@pytest.fixture(scope="module", autouse=True)
def soak_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the soak counters in one line when the module ends, and write them to a file."""
    start = time.monotonic()
    # Other modules use the same harness: report (and check) only what this module added.
    _SOAK_START.update(SOAK.snapshot())
    yield
    seconds = time.monotonic() - start
    SOAK.write(SOAK_REPORT, seconds, _SOAK_START)
    line = SOAK.summary(seconds, _SOAK_START)
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    # Fixture teardown runs with output captured: step outside it so the line is always shown.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(line)
        else:
            print(line)
    assert_soak_clean()


_SOAK_START: dict[str, int] = {}


def assert_soak_clean() -> None:
    added = SOAK.since(_SOAK_START)
    bad = {name: added[name] for name in SOAK.MUST_BE_ZERO if added[name]}
    assert not bad, f"soak counters that must stay 0: {bad}"


def no_leaks_since(account: ThreadAccount, seconds: float = JOIN_TIMEOUT) -> None:
    """Assert (and count) that every thread started since ``account`` has ended."""
    alive = account.alive_after(seconds)
    if alive:
        SOAK.add(threads_leaked=len(alive))
    assert not alive, f"threads still running: {[t.name for t in alive]}"


# =================================================================================================
# Known bugs found by this harness. Each has a strict xfail test; the tables below let the
# stateful models and the interrupt sweep step around them (and only them).
# =================================================================================================

#: Ctrl-C windows of main-thread code where an interrupt breaks a guarantee, checked in this
#: order. Each has a strict xfail reproduction in test_known_ctrl_c_window (KNOWN_REPRO).
KNOWN_INTERRUPT_WINDOWS: dict[str, tuple[Window, ...]] = {
    # No Python code can catch an interrupt that lands before its function's first instruction
    # (CPython checks for signals on entering a function, and the line-exact injector stops at
    # the first line, here a `try:` that is not covered by itself): ThreadGroup.__exit__ then
    # never runs at all, so its tasks are neither cancelled nor joined. Inherent to a pure
    # Python context manager; everything after that point of __exit__ is covered.
    # (A real signal is handled at the entry itself, reported at the `def` line.)
    "exit-entry": (Window("ThreadGroup.__exit__", "def __exit__(", "try:"),),
    # CPython: Condition.wait releases the lock one statement before the `try:` whose `finally`
    # re-acquires it; an interrupt in between (or at the top of that `finally`) makes the
    # caller's `with cond:` release a lock it does not hold: RuntimeError("release unlocked
    # lock") in place of the KeyboardInterrupt, and a lock released under another thread.
    # ThreadGroup no longer waits in Condition.wait (KNOWN_REPRO["condition"] checks it), but
    # the main thread still can through the standard library: spawn's Thread.start waits for
    # the new thread on an Event (the new thread may die in its bootstrap), as does code in
    # the body that waits on an Event. In Thread.start it is fixed: ManagedThread.start (and
    # fan-out's worker start) raise the KeyboardInterrupt the RuntimeError hides
    # (KNOWN_REPRO["stdlib-condition"] is its regression test); code in the body of a block
    # still gets the RuntimeError.
    "stdlib-condition": (
        Window("Condition.wait", "saved_state = self._release_save()", "try:", innermost=True),
        Window("Condition.wait", "self._acquire_restore(saved_state)", innermost=True),
    ),
}

#: One deterministic reproduction per window: (sweep scenario, function, line snippet). Fixed
#: windows keep theirs (pointing at the code that replaced the broken lines) as regression tests.
KNOWN_REPRO = {
    # Interrupted between running the group token's callbacks: they must all still run.
    "cancel": ("body-raises", "_cancel_subtree", "entry._flip(token._reason)"),
    "enter": ("cancel", "ThreadGroup.__enter__", "return self"),
    "exit": ("body-raises", "ThreadGroup.__exit__", "self._leave(exc)"),
    "exit-entry": ("body-raises", "ThreadGroup.__exit__", "try:"),
    # Interrupted after spawn() counted the task, before its OS thread exists.
    "spawn": ("cancel", "ManagedThread.start", "super().start()"),
    # Just before the group blocks waiting for its tasks (once in Condition.wait).
    "condition": ("body-raises", "ThreadGroup._wait", "if deadline is None:"),
    "stdlib-condition": ("body-raises", "Condition.wait", "try:"),
}

_RESOLVED = {
    name: [(w, w.lines(CODES[w.qualname])) for w in windows]
    for name, windows in KNOWN_INTERRUPT_WINDOWS.items()
}


def known_window(stack: tuple[str, ...]) -> str | None:
    """The known-bug window an interrupt raised with this traced stack falls in, if any."""
    for name, windows in _RESOLVED.items():
        if any(window.holds(stack, lines) for window, lines in windows):
            return name
    return None


# =================================================================================================
# Stateful model 1: CancelToken trees
# =================================================================================================


class CallbackError(Exception):
    """What a faulty on_cancel callback raises."""


@dataclass(eq=False)
class Node:
    token: CancelToken
    parent: Node | None
    children: list[Node] = field(default_factory=list)
    cancelled: bool = False
    reason: str | None = None

    def subtree(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.subtree()


@dataclass(eq=False)
class Callback:
    node: Node
    raises: bool
    runs: list[int] = field(default_factory=list)  # idents of the threads it ran in
    state: str = "pending"  # pending | unregistered | ran
    delivered: str = ""  # how a raising callback's error came out: "hook" | "raised"
    error: CallbackError | None = None
    unregister: Callable[[], None] = lambda: None

    def __call__(self) -> None:
        self.runs.append(threading.get_ident())
        SOAK.add(callbacks_run=1)
        if self.raises:
            self.error = CallbackError(f"callback on {self.node.token!r}")
            raise self.error


@dataclass(eq=False)
class Waiter:
    node: Node
    thread: threading.Thread
    result: list[bool]


REASONS = st.sampled_from([None, "a", "b", "stop"])


class TokenTreeMachine(RuleBasedStateMachine):
    """Drives a forest of CancelTokens from several threads against a sequential model.

    Model: cancelling a node cancels exactly the live nodes of its subtree with its reason
    (the first reason sticks); each on_cancel callback runs exactly once iff it was
    registered and not unregistered before its token was cancelled (at once, in the
    registering thread, if the token already was), in the cancelling thread; errors of
    callbacks run by cancel() reach sys.unraisablehook exactly once; wait() returns True
    once cancelled and blocks until then; a token keeps registrations only for its live
    children and pending callbacks (cancelled or released children detach).
    """

    nodes = Bundle("nodes")
    callbacks = Bundle("callbacks")

    def __init__(self) -> None:
        super().__init__()
        self.hooks = HookRecorder().__enter__()
        self.all_nodes: list[Node] = []
        self.all_callbacks: list[Callback] = []
        self.waiters: list[Waiter] = []
        self.expected_reports: list[CallbackError] = []

    # -- model -----------------------------------------------------------------------------

    def _cancel_model(self, node: Node, reason: str | None) -> list[Node]:
        newly = [n for n in node.subtree() if not n.cancelled]
        for n in newly:
            n.cancelled = True
            n.reason = reason
        return newly

    def _callbacks_fired(self, newly: list[Node], ran_in: set[int]) -> None:
        fired = {id(n) for n in newly}
        for cb in self.all_callbacks:
            if cb.state == "pending" and id(cb.node) in fired:
                cb.state = "ran"
                assert len(cb.runs) == 1, f"{cb} ran {len(cb.runs)} times"
                assert cb.runs[0] in ran_in
                if cb.raises:
                    assert cb.error is not None
                    self.expected_reports.append(cb.error)

    def _in_thread(self, fn: Callable[[], object]) -> int:
        thread = threading.Thread(target=fn, name="token-machine")
        thread.start()
        assert not join_all([thread]), "a cancel() from another thread hung"
        assert thread.ident is not None
        return thread.ident

    # -- rules -----------------------------------------------------------------------------

    def _root(self) -> Node:
        node = Node(CancelToken(), None)
        self.all_nodes.append(node)
        return node

    @initialize(target=nodes)
    def first_root(self) -> Node:
        return self._root()

    @rule(target=nodes)
    def new_root(self) -> Node:
        return self._root()

    @rule(target=nodes, parent=nodes, via_constructor=st.booleans())
    def child(self, parent: Node, via_constructor: bool) -> Node:
        token = CancelToken(parent.token) if via_constructor else parent.token.child()
        node = Node(token, parent)
        parent.children.append(node)
        if parent.cancelled:  # born cancelled, with the parent's reason
            node.cancelled, node.reason = True, parent.reason
        self.all_nodes.append(node)
        return node

    @rule(target=callbacks, node=nodes, raises=st.booleans())
    def register(self, node: Node, raises: bool) -> Callback:
        cb = Callback(node, raises)
        self.all_callbacks.append(cb)
        reports_before = len(self.hooks.unraisable)
        error: CallbackError | None = None
        try:
            cb.unregister = node.token.on_cancel(cb)
        except CallbackError as exc:
            error = exc
        if error is not None:
            # Already cancelled: the callback ran at once and its error reached the caller.
            assert node.cancelled
            assert raises
            assert error is cb.error
            cb.delivered = "raised"
        if node.cancelled:
            assert cb.runs == [threading.get_ident()]
            cb.state = "ran"
            if raises and not cb.delivered:
                # The alternative design: reported like errors of callbacks run by cancel().
                assert len(self.hooks.unraisable) == reports_before + 1
                assert cb.error is not None
                self.expected_reports.append(cb.error)
                cb.delivered = "hook"
        else:
            assert cb.runs == []
        return cb

    @rule(cb=callbacks, twice=st.booleans())
    def unregister(self, cb: Callback, twice: bool) -> None:
        cb.unregister()
        if twice:
            cb.unregister()  # idempotent
        if cb.state == "pending":
            cb.state = "unregistered"

    @rule(node=nodes, reason=REASONS, from_thread=st.booleans())
    def cancel(self, node: Node, reason: str | None, from_thread: bool) -> None:
        def go() -> None:
            node.token.cancel(reason)

        if from_thread:
            ident = self._in_thread(go)
        else:
            go()
            ident = threading.get_ident()
        newly = self._cancel_model(node, reason)
        self._callbacks_fired(newly, {ident})

    @rule(a=nodes, b=nodes, ra=REASONS, rb=REASONS)
    def cancel_two_at_once(self, a: Node, b: Node, ra: str | None, rb: str | None) -> None:
        """Two threads cancel two nodes (maybe an ancestor and its descendant) at the same time."""
        barrier = threading.Barrier(2)
        idents: set[int] = set()

        def go(node: Node, reason: str | None) -> None:
            idents.add(threading.get_ident())
            barrier.wait()
            node.token.cancel(reason)

        threads = [
            threading.Thread(target=go, args=(a, ra)),
            threading.Thread(target=go, args=(b, rb)),
        ]
        for t in threads:
            t.start()
        assert not join_all(threads)
        in_a = {id(n) for n in a.subtree() if not n.cancelled}
        in_b = {id(n) for n in b.subtree() if not n.cancelled}
        newly = [n for n in self.all_nodes if id(n) in in_a | in_b]
        for n in newly:
            allowed = ({ra} if id(n) in in_a else set()) | ({rb} if id(n) in in_b else set())
            assert n.token.cancelled
            assert n.token.reason in allowed, (n.token.reason, allowed)
        for n in newly:
            # Cancellation reaches a node through its parent unless the node itself was cancelled.
            if n is not a and n is not b and n.parent is not None and id(n.parent) in in_a | in_b:
                assert n.token.reason == n.parent.token.reason
            n.cancelled, n.reason = True, n.token.reason
        self._callbacks_fired(newly, idents)

    @rule(cb=callbacks, reason=REASONS)
    def unregister_while_cancelling(self, cb: Callback, reason: str | None) -> None:
        """Unregister a callback while another thread cancels its token: it runs 0 or 1 times."""
        barrier = threading.Barrier(2)

        def unregister() -> None:
            barrier.wait()
            cb.unregister()

        def cancel() -> None:
            barrier.wait()
            cb.node.token.cancel(reason)

        was_pending = cb.state == "pending"
        runs_before = len(cb.runs)
        threads = [threading.Thread(target=unregister), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        assert not join_all(threads)
        ran = len(cb.runs) - runs_before
        if was_pending:
            assert ran in (0, 1)
            cb.state = "ran" if ran else "unregistered"
            if ran and cb.raises:
                assert cb.error is not None
                self.expected_reports.append(cb.error)
        else:
            assert ran == 0
        newly = self._cancel_model(cb.node, reason)
        self._callbacks_fired(newly, {t.ident for t in threads if t.ident})

    @rule(node=nodes)
    def start_waiter(self, node: Node) -> None:
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(node.token.wait()), name="waiter")
        thread.start()
        self.waiters.append(Waiter(node, thread, result))

    @rule(node=nodes, timeout=st.sampled_from([0, 0.0, 0.001]))
    def timed_wait(self, node: Node, timeout: float) -> None:
        assert node.token.wait(timeout) is node.cancelled

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def tokens_match_model(self) -> None:
        for n in self.all_nodes:
            assert n.token.cancelled is n.cancelled
            assert n.token.reason == n.reason
            if n.cancelled:
                with pytest.raises(Cancelled) as info:
                    n.token.raise_if_cancelled()
                assert info.value.reason == n.reason
            else:
                n.token.raise_if_cancelled()

    @invariant()
    def callbacks_ran_exactly_when_due(self) -> None:
        for cb in self.all_callbacks:
            assert len(cb.runs) == (1 if cb.state == "ran" else 0), (cb.state, cb.runs)
        reported = [u.exc_value for u in self.hooks.unraisable]
        assert len(reported) == len(self.expected_reports)
        assert {id(e) for e in reported} == {id(e) for e in self.expected_reports}
        for u in self.hooks.unraisable:
            assert u.err_msg is not None
            assert "on_cancel callback" in u.err_msg

    @invariant()
    def registrations_do_not_leak(self) -> None:
        # White-box on purpose: a child that does not detach keeps itself (and everything its
        # callbacks reference) alive for as long as its parent lives.
        for n in self.all_nodes:
            if n.cancelled:
                assert len(n.token._callbacks) == 0
                continue
            pending = sum(1 for cb in self.all_callbacks if cb.node is n and cb.state == "pending")
            live_children = sum(1 for c in n.children if not c.cancelled)
            assert len(n.token._callbacks) == pending + live_children

    @invariant()
    def waiters_wake_exactly_when_cancelled(self) -> None:
        for w in self.waiters:
            if w.node.cancelled:
                assert not join_all([w.thread]), "wait() did not return after cancel()"
                assert w.result == [True]
            else:
                assert w.thread.is_alive()
                assert w.result == []

    def teardown(self) -> None:
        try:
            for n in self.all_nodes:
                if n.parent is None:
                    n.token.cancel("teardown")
            assert not join_all([w.thread for w in self.waiters])
            assert all(w.result == [True] for w in self.waiters)
        finally:
            self.hooks.__exit__(None, None, None)
            SOAK.add(examples=1)


TestTokenTree = pytest.mark.shake(TokenTreeMachine.TestCase)


# =================================================================================================
# Stateful model 2: ThreadGroup (tasks, nested groups, cancellation, failures, body errors)
# =================================================================================================


class TaskError(Exception):
    """A task's scripted failure."""


class TaskAbort(BaseException):
    """A scripted failure that is not an Exception (like SystemExit in a task)."""


#: ok: block until released, return.  fail / base: block until released, raise TaskError /
#: TaskAbort.  observe: block until released or cancelled, then check_cancelled().
#: fail_now: raise at once.  self_cancel: block until released, raise Cancelled of its own
#: (a failure unless its token is cancelled).  nested: run an inner ThreadGroup of sub-tasks
#: (ok / fail / observe) and block until released or cancelled.
KINDS = ("ok", "fail", "observe", "fail_now", "base", "self_cancel", "nested")
SUB_KINDS = ("ok", "fail", "observe")


@dataclass(eq=False)
class Task:
    label: str
    kind: str
    subs: tuple[str, ...]
    value: int
    group: GroupModel
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    thread: ManagedThread[int] | None = None
    token_cancelled: bool = False
    # The model's verdict, once the task is (expected to be) finished.
    done: bool = False
    outcome: str = ""  # succeeded | failed | cancelled
    failure: bool = False
    ran: bool = True
    checked: bool = False

    def __repr__(self) -> str:
        return f"<Task {self.label} {self.kind}{list(self.subs) if self.subs else ''}>"


@dataclass(eq=False)
class GroupModel:
    name: str
    group: ThreadGroup
    token_cancelled: bool
    reason: str | None
    cancelled_by: str | None = None
    tasks: list[Task] = field(default_factory=list)


def run_task(task: Task) -> int:
    task.started.set()
    kind = task.kind
    if kind == "fail_now":
        raise TaskError(task.label)
    if kind == "nested":
        return run_nested(task)
    if kind == "observe":
        threadkit.current_token().on_cancel(task.release.set)
    task.release.wait()
    if kind == "fail":
        raise TaskError(task.label)
    if kind == "base":
        raise TaskAbort(task.label)
    if kind == "self_cancel":
        raise Cancelled(f"{task.label} gave up")
    if kind == "observe":
        threadkit.check_cancelled()
    return task.value


def run_nested(task: Task) -> int:
    failing = task.subs.count("fail")
    # The failing sub-tasks fail together, so all of them are in the inner group's error.
    gate = threading.Barrier(failing) if failing else None
    with ThreadGroup(name=f"{task.label}.inner") as inner:
        for j, kind in enumerate(task.subs):
            inner.spawn(run_sub, kind, f"{task.label}.{j}", gate)
        token = threadkit.current_token()
        token.on_cancel(task.release.set)
        task.release.wait()
        token.raise_if_cancelled()
        inner.cancel("nested task released")
    return task.value


def run_sub(kind: str, label: str, gate: threading.Barrier | None) -> int:
    if kind == "fail":
        assert gate is not None
        gate.wait(JOIN_TIMEOUT)
        raise TaskError(label)
    if kind == "observe":
        threadkit.sleep(JOIN_TIMEOUT * 10)  # always ended by a cancellation
    return 0


def _expected_nested_error(task: Task) -> list[str]:
    return [f"{task.label}.{j}" for j, kind in enumerate(task.subs) if kind == "fail"]


class GroupMachine(RuleBasedStateMachine):
    """Drives nested ThreadGroups and their tasks against a sequential model.

    Every task blocks until the machine releases it (or, for the kinds that look,
    until cancelled), and every rule waits for the threads its action ends, so the
    model knows the exact order of events: which tasks a cancellation reaches, which
    failure cancels whom, and what leaving each block must raise. Groups nest in the
    body (a stack, entered and left by rules) and inside tasks (``nested``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[GroupModel] = []
        self.tasks: list[Task] = []
        self.numbers = 0
        self.outside = threadkit.current_token()
        self.never_registrations = len(_NEVER._callbacks)
        self.hooks = HookRecorder().__enter__()

    # -- model -----------------------------------------------------------------------------

    def _expect(self, task: Task, outcome: str, *, failure: bool = False, ran: bool = True) -> None:
        task.done, task.outcome, task.failure, task.ran = True, outcome, failure, ran
        if failure:
            thread = task.thread
            assert thread is not None
            level = self.stack.index(task.group)
            self._expect_cancel(level, "failure", f"sibling task {thread.name!r} failed")

    def _expect_cancel(self, level: int, why: str, reason: str | None) -> None:
        group = self.stack[level]
        if group.cancelled_by is None and not group.token_cancelled:
            group.cancelled_by = why
        # The group's token and those of the groups entered in its body are all cancelled...
        for inner in self.stack[level:]:
            if not inner.token_cancelled:
                inner.token_cancelled, inner.reason = True, reason
            # ... and with them the tokens of their running tasks (finished ones detached).
            for task in inner.tasks:
                if not task.done:
                    task.token_cancelled = True
        for inner in self.stack[level:]:
            for task in inner.tasks:
                if not task.done and task.kind in ("observe", "nested"):
                    self._expect(task, "cancelled")

    def _expect_release(self, task: Task) -> None:
        kind = task.kind
        if kind in ("ok", "observe", "nested"):  # pending observe/nested: not cancelled
            self._expect(task, "succeeded")
        elif kind in ("fail", "base"):
            self._expect(task, "failed", failure=True)
        else:  # self_cancel: a failure unless its own token was cancelled
            self._expect(task, "cancelled", failure=not task.token_cancelled)

    def _check_finished(self) -> None:
        """Wait for every task the model says has finished, then check its outcome."""
        for task in self.tasks:
            if task.done and not task.checked:
                self._check(task)

    def _check(self, task: Task) -> None:
        thread = task.thread
        assert thread is not None
        assert not join_all([thread]), f"{task} did not finish"
        task.checked = True
        state = thread.state
        exc = thread.exception()
        assert task.started.is_set() is task.ran, task
        if task.outcome == "succeeded":
            if state is not ThreadState.SUCCEEDED or thread.result() != task.value:
                SOAK.add(results_lost=1)
            assert state is ThreadState.SUCCEEDED, (task, state, exc)
            assert thread.result() == task.value
        elif task.outcome == "cancelled":
            assert state is ThreadState.CANCELLED, (task, state, exc)
            assert isinstance(exc, Cancelled)
        else:
            assert state is ThreadState.FAILED, (task, state, exc)
            if task.kind == "base":
                assert isinstance(exc, TaskAbort)
                assert str(exc) == task.label
            elif task.kind == "nested":
                assert isinstance(exc, ExceptionGroup), exc
                assert [str(e) for e in exc.exceptions] == _expected_nested_error(task)
                inner = f"{task.label}.inner"
                assert (
                    exc.message == f"{len(exc.exceptions)} task(s) of thread group {inner!r} failed"
                )
            else:
                assert isinstance(exc, TaskError)
                assert str(exc) == task.label

    def _open_tasks(self) -> list[Task]:
        return [t for g in self.stack for t in g.tasks]

    def _pending(self) -> list[Task]:
        return [t for t in self._open_tasks() if not t.done]

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def enter_first_group(self) -> None:
        self.enter_group()

    @precondition(lambda self: len(self.stack) < 3)
    @rule()
    def enter_group(self) -> None:
        parent = self.stack[-1] if self.stack else None
        self.numbers += 1
        group = ThreadGroup(name=f"g{self.numbers}", grace=GRACE)
        group.__enter__()
        model = GroupModel(
            group.name,
            group,
            token_cancelled=parent.token_cancelled if parent else False,
            reason=parent.reason if parent else None,
        )
        self.stack.append(model)
        assert threadkit.current_token() is group.token
        assert group.token.cancelled is model.token_cancelled

    @precondition(lambda self: bool(self.stack))
    @rule(
        data=st.data(),
        kind=st.sampled_from(KINDS),
        subs=st.lists(st.sampled_from(SUB_KINDS), max_size=3).map(tuple),
    )
    def spawn(self, data: st.DataObject, kind: str, subs: tuple[str, ...]) -> None:
        level = data.draw(st.integers(0, len(self.stack) - 1), label="level")
        model = self.stack[level]
        task = Task(
            f"{model.name}-{len(model.tasks)}",
            kind,
            subs if kind == "nested" else (),
            value=len(self.tasks) * 10 + 7,
            group=model,
        )
        task.thread = model.group.spawn(run_task, task)
        assert task.thread.name == task.label
        model.tasks.append(task)
        self.tasks.append(task)
        SOAK.add(tasks_run=1 + len(task.subs))
        if model.token_cancelled:
            # Its token is born cancelled: it never runs, and that is not a failure.
            task.token_cancelled = True
            self._expect(task, "cancelled", ran=False)
        elif kind == "fail_now" or (kind == "nested" and "fail" in subs):
            self._expect(task, "failed", failure=True)
        else:
            assert task.started.wait(JOIN_TIMEOUT), f"{task} never started"
        self._check_finished()

    @precondition(lambda self: bool(self._pending()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self._pending()), label="task")
        task.release.set()
        self._expect_release(task)
        self._check_finished()

    @precondition(lambda self: bool(self._open_tasks()))
    @rule(data=st.data(), from_thread=st.booleans())
    def cancel_task(self, data: st.DataObject, from_thread: bool) -> None:
        # Finished tasks too: cancelling one afterwards must not change its outcome.
        task = data.draw(st.sampled_from(self._open_tasks()), label="task")
        thread = task.thread
        assert thread is not None
        if from_thread:
            helper = threading.Thread(target=thread.cancel, args=("task cancelled",))
            helper.start()
            assert not join_all([helper])
        else:
            thread.cancel("task cancelled")
        if not task.done:
            task.token_cancelled = True
            if task.kind in ("observe", "nested"):
                self._expect(task, "cancelled")
        self._check_finished()

    @precondition(lambda self: bool(self.stack))
    @rule(data=st.data(), reason=REASONS, from_thread=st.booleans())
    def cancel_group(self, data: st.DataObject, reason: str | None, from_thread: bool) -> None:
        level = data.draw(st.integers(0, len(self.stack) - 1), label="level")
        group = self.stack[level].group
        if from_thread:
            helper = threading.Thread(target=group.cancel, args=(reason,))
            helper.start()
            assert not join_all([helper])
        else:
            group.cancel(reason)
        self._expect_cancel(level, "cancel", reason)
        self._check_finished()

    @precondition(lambda self: bool(self.stack))
    @rule(action=st.sampled_from(["normal", "raise", "check"]))
    def leave(self, action: str) -> None:
        self._leave_innermost(action)

    def _leave_innermost(self, action: str) -> None:
        level = len(self.stack) - 1
        model = self.stack[level]
        group = model.group
        body_exc: BaseException | None = None
        if action == "raise":
            body_exc = KeyError(f"body of {model.name}")
        elif action == "check":
            try:
                threadkit.check_cancelled()
            except Cancelled as exc:
                body_exc = exc
            assert (body_exc is not None) is model.token_cancelled
        if body_exc is not None:
            self._expect_cancel(
                level, "body", f"thread group body raised {type(body_exc).__name__}"
            )
        # Release what is still blocked, in order, from another thread while this one waits
        # at the end of the block (after the body's exception has cancelled the group).
        to_release = [t for t in model.tasks if not t.done]
        for task in to_release:
            if not task.done:
                self._expect_release(task)

        def releaser() -> None:
            if body_exc is not None:
                group.token.wait(JOIN_TIMEOUT)
            for task in to_release:
                task.release.set()
                assert task.thread is not None
                task.thread.join(JOIN_TIMEOUT)

        helper = threading.Thread(target=releaser, name="releaser")
        helper.start()
        raised: BaseException | None = None
        try:
            suppressed = group.__exit__(
                type(body_exc) if body_exc else None,
                body_exc,
                body_exc.__traceback__ if body_exc else None,
            )
            raised = None if suppressed else body_exc
        except BaseException as exc:  # what leaving the block raised
            raised = exc
        finally:
            self.stack.pop()
            assert not join_all([helper])
        self._check_finished()
        self._check_left(model, body_exc, raised)

    def _check_left(
        self, model: GroupModel, body_exc: BaseException | None, raised: BaseException | None
    ) -> None:
        for task in model.tasks:
            assert task.done, task
            assert task.checked, task
            assert task.thread is not None
            assert not task.thread.is_alive()
        failures = []
        for task in model.tasks:
            if task.failure:
                assert task.thread is not None
                failures.append(task.thread.exception())
        expected_token = self.stack[-1].group.token if self.stack else self.outside
        assert threadkit.current_token() is expected_token
        assert model.group.token._parent is None, "the group's token is still registered"
        if failures:
            own = isinstance(body_exc, Cancelled) and model.token_cancelled
            lead = [body_exc] if body_exc is not None and not own else []
            assert isinstance(raised, BaseExceptionGroup), repr(raised)
            got = list(raised.exceptions)
            lost = {id(e) for e in lead + failures} - {id(e) for e in got}
            if lost or len(got) != len(lead + failures):
                SOAK.add(results_lost=len(lost) or 1)
            assert [id(e) for e in got] == [id(e) for e in lead + failures], (got, failures)
            assert isinstance(raised, ExceptionGroup) is all(isinstance(e, Exception) for e in got)
            assert raised.message == f"{len(got)} task(s) of thread group {model.name!r} failed"
        elif isinstance(body_exc, Cancelled) and model.cancelled_by == "cancel":
            assert raised is None, repr(raised)  # the body saw the cancel() it asked for
        elif body_exc is not None:
            assert raised is body_exc
        elif model.cancelled_by is None and model.token_cancelled:
            assert isinstance(raised, Cancelled), repr(raised)
            assert raised.reason == model.reason
        else:
            assert raised is None, repr(raised)

    @invariant()
    def pending_tasks_are_still_running(self) -> None:
        for task in self._pending():
            assert task.thread is not None
            assert not task.thread.state.finished, task

    def teardown(self) -> None:
        try:
            while self.stack:
                self._leave_innermost("normal")
            assert threadkit.current_token() is self.outside
            assert len(_NEVER._callbacks) == self.never_registrations
            assert not self.hooks.excepthook, "task errors are the caller's, not excepthook's"
        finally:
            # Whatever failed above: no thread may outlive the example.
            for task in self.tasks:
                task.release.set()
            while self.stack:
                group = self.stack.pop().group
                with contextlib.suppress(BaseException):
                    group.cancel("teardown")
                    group.__exit__(None, None, None)
            join_all([t.thread for t in self.tasks if t.thread is not None])
            self.hooks.__exit__(None, None, None)
            SOAK.add(examples=1)


TestGroupModel = pytest.mark.shake(GroupMachine.TestCase)


# =================================================================================================
# Fault injection: lifecycle hooks that raise
# =================================================================================================


class HookError(Exception):
    """What a faulty hook raises."""


class HookAbort(BaseException):
    """A faulty hook's error that is not an Exception."""


HOOKS = ("on_start", "run", "on_success", "on_error", "on_cancel", "on_finish")
FAULTS = st.sampled_from(["error", "base", "cancelled"])


def _fault(kind: str, where: str) -> BaseException:
    if kind == "error":
        return HookError(where)
    if kind == "base":
        return HookAbort(where)
    return Cancelled(where)


class FaultyThread(ManagedThread[int]):
    """Raises the planned error from the planned hooks and records the hooks called."""

    def __init__(self, plan: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.plan = plan
        self.calls: list[str] = []

    def _hook(self, name: str) -> None:
        self.calls.append(name)
        if name in self.plan:
            SOAK.add(faults_injected=1)
            raise _fault(self.plan[name], name)

    def on_start(self) -> None:
        self._hook("on_start")

    def run(self) -> int:  # type: ignore[override]
        self._hook("run")
        return 42

    def on_success(self, result: int) -> None:
        assert result == 42
        self._hook("on_success")

    def on_error(self, exc: BaseException) -> None:
        self._hook("on_error")

    def on_cancel(self, exc: Cancelled) -> None:
        self._hook("on_cancel")

    def on_finish(self) -> None:
        self._hook("on_finish")


def expected_lifecycle(plan: dict[str, str], cancelled_first: bool) -> tuple[list[str], list[str]]:
    """The hooks called and the chain of errors (newest first) for a plan, sequentially."""
    calls: list[str] = []
    chain: list[str] = []  # hook names whose error is current, newest first
    kind: str | None = "cancelled" if cancelled_first else None
    if cancelled_first:
        chain.append("<token>")
    else:
        for hook in ("on_start", "run"):
            calls.append(hook)
            if hook in plan:
                kind = plan[hook]
                chain.insert(0, hook)
                break
    outcome_hook = {None: "on_success", "cancelled": "on_cancel"}.get(kind, "on_error")
    for hook in (outcome_hook, "on_finish"):
        calls.append(hook)
        if hook in plan:
            chain.insert(0, hook)
    return calls, chain


@pytest.mark.shake
@given(
    plan=st.dictionaries(st.sampled_from(HOOKS), FAULTS, max_size=4),
    cancelled_first=st.booleans(),
)
def test_lifecycle_hooks_that_raise(plan: dict[str, str], cancelled_first: bool) -> None:
    """Whichever hooks raise: one outcome hook, on_finish always, the last error wins and
    chains the earlier ones, and a failure reaches threading.excepthook exactly once,
    before join() returns."""
    check_faulty_lifecycle(plan, cancelled_first)


def check_faulty_lifecycle(plan: dict[str, str], cancelled_first: bool) -> None:
    account = ThreadAccount()
    with HookRecorder() as hooks:
        thread = FaultyThread(plan)
        if cancelled_first:
            thread.cancel("before start")
        thread.start()
        thread.join()
        reports = list(hooks.excepthook)
    calls, chain = expected_lifecycle(plan, cancelled_first)
    assert thread.calls == calls
    exc = thread.exception()
    if not chain:
        assert exc is None
        assert thread.state is ThreadState.SUCCEEDED
        assert thread.result() == 42
    else:
        assert exc is not None
        # Walk the __context__ chain: every error raised on the way is still reachable.
        seen: list[str] = []
        link: BaseException | None = exc
        while link is not None and len(seen) < len(chain):
            seen.append("<token>" if str(link) == "before start" else str(link))
            link = link.__context__
        assert seen == chain
        if isinstance(exc, Cancelled):
            assert thread.state is ThreadState.CANCELLED
        else:
            assert thread.state is ThreadState.FAILED
        with pytest.raises(type(exc)) as info:
            thread.result()
        assert info.value is exc
    if thread.state is ThreadState.FAILED:
        assert [r.exc_value for r in reports] == [exc]
        assert reports[0].thread is thread
    else:
        assert reports == []
    no_leaks_since(account)


# =================================================================================================
# Fault injection: tasks that fail at random points while tokens are cancelled at random times
# =================================================================================================


@dataclass(frozen=True)
class FaultPlan:
    steps: int
    fault_at: int | None  # the step that raises, if any
    fault: str  # error | base | stray_cancel
    callback: str  # none | ok | raising: an on_cancel callback registered while it runs


FAULT_PLANS = st.builds(
    FaultPlan,
    steps=st.integers(0, 6),
    fault_at=st.none() | st.integers(0, 6),
    fault=st.sampled_from(["error", "base", "stray_cancel"]),
    callback=st.sampled_from(["none", "ok", "raising"]),
)
#: Who gets cancelled, and after how many task steps in total.
CANCELS = st.lists(
    st.tuples(st.sampled_from(["group", "task", "parent"]), st.integers(0, 20), st.integers(0, 7)),
    max_size=3,
)
_STRAY = CancelToken()
_STRAY.cancel("stray")


class Progress:
    """Counts task steps; lets a canceller wait for the n-th step (or for the block to end)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.steps = 0
        self.over = False

    def step(self) -> None:
        with self._cond:
            self.steps += 1
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.over = True
            self._cond.notify_all()

    def wait_for(self, steps: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.steps >= steps or self.over, JOIN_TIMEOUT)


@dataclass
class CallbackLog:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ran: int = 0
    errors: list[BaseException] = field(default_factory=list)


def faulty_task(index: int, plan: FaultPlan, progress: Progress, log: CallbackLog) -> int:
    token = threadkit.current_token()
    unregister: Callable[[], None] = lambda: None  # noqa: E731
    if plan.callback != "none":

        def callback() -> None:
            with log.lock:
                log.ran += 1
            if plan.callback == "raising":
                error = CallbackError(f"callback of task {index}")
                with log.lock:
                    log.errors.append(error)
                raise error

        unregister = token.on_cancel(callback)
    try:
        for step in range(plan.steps + 1):
            threadkit.check_cancelled()
            if plan.fault_at == step:
                SOAK.add(faults_injected=1)
                if plan.fault == "error":
                    raise TaskError(f"task {index}")
                if plan.fault == "base":
                    raise TaskAbort(f"task {index}")
                _STRAY.raise_if_cancelled()  # a Cancelled that is not this task's
            progress.step()
            threadkit.sleep(0)
        return index * 3
    finally:
        unregister()


def run_fault_example(plans: list[FaultPlan], cancels: list[tuple[str, int, int]]) -> None:
    """Run one group of faulty tasks with cancellations racing them; check every outcome."""
    account = ThreadAccount()
    progress = Progress()
    log = CallbackLog()
    parent = CancelToken()
    tasks: list[ManagedThread[int]] = []
    outcome: list[BaseException | None] = [None]
    group_holder: list[ThreadGroup] = []
    ready = threading.Event()

    def body() -> None:
        try:
            with ThreadGroup(name="faults", grace=GRACE) as g:
                group_holder.append(g)
                for i, plan in enumerate(plans):
                    tasks.append(g.spawn(faulty_task, i, plan, progress, log))
                ready.set()
        except BaseException as exc:
            outcome[0] = exc
        finally:
            ready.set()
            progress.end()

    def canceller() -> None:
        ready.wait()
        for target, after, which in cancels:
            progress.wait_for(after)
            if target == "parent":
                parent.cancel("parent cancelled")
            elif target == "group" and group_holder:
                group_holder[0].cancel("group cancelled")
            elif target == "task" and tasks:
                tasks[which % len(tasks)].cancel("task cancelled")

    with HookRecorder() as hooks:
        # The group runs in a ManagedThread whose token is `parent`, so the group's token is a
        # child of a token the canceller can cancel: the "cancelled from above" path.
        runner: ManagedThread[None] = ManagedThread(target=body, token=parent, name="runner")
        helper = threading.Thread(target=canceller, name="canceller")

        def unblock() -> None:
            for task in tasks:
                task.cancel("watchdog")

        with Watchdog(JOIN_TIMEOUT, unblock) as dog:
            runner.start()
            helper.start()
            runner.join()
            helper.join()
        assert not dog.fired
        unraisable = [u.exc_value for u in hooks.unraisable]
    SOAK.add(tasks_run=len(plans), examples=1)
    no_leaks_since(account)

    # Every task ended, with an outcome its plan allows.
    definite: list[BaseException] = []  # failures the caller must see
    optional: list[BaseException] = []  # stray Cancelled whose token was cancelled afterwards
    ran_at_registration: list[BaseException] = []
    for i, (task, plan) in enumerate(zip(tasks, plans, strict=True)):
        assert not task.is_alive()
        exc = task.exception()
        state = task.state
        faults = plan.fault_at is not None and plan.fault_at <= plan.steps
        if state is ThreadState.SUCCEEDED:
            assert not faults
            if task.result() != i * 3:
                SOAK.add(results_lost=1)
            assert task.result() == i * 3
        elif isinstance(exc, CallbackError):
            # Cancelled between its start and its on_cancel(): the callback ran at once, in
            # the task, and its error ended the task (it does not go to sys.unraisablehook).
            assert state is ThreadState.FAILED
            assert plan.callback == "raising"
            definite.append(exc)
            ran_at_registration.append(exc)
        elif state is ThreadState.FAILED:
            assert faults
            assert plan.fault in ("error", "base")
            assert isinstance(exc, TaskError if plan.fault == "error" else TaskAbort)
            definite.append(exc)
        else:
            assert state is ThreadState.CANCELLED
            assert isinstance(exc, Cancelled)
            if exc.reason == "stray":
                assert faults
                assert plan.fault == "stray_cancel"
                # A stray Cancelled is a failure; whether a cancellation that reached the token
                # just after it still counts is a race the contract does not settle.
                (optional if task.token.cancelled else definite).append(exc)
            else:
                assert task.token.cancelled
    # The caller sees every failure exactly once, in spawn order; else Cancelled if the parent
    # cancelled the group before anyone else did; else nothing.
    raised = outcome[0]
    if isinstance(raised, BaseExceptionGroup):
        got = list(raised.exceptions)
        allowed = {id(e) for e in definite + optional}
        order = [id(e) for e in tasks_exceptions(tasks)]
        if not {id(e) for e in definite} <= {id(e) for e in got}:
            SOAK.add(results_lost=1)
        assert {id(e) for e in definite} <= {id(e) for e in got}, (got, definite)
        assert {id(e) for e in got} <= allowed
        assert len(got) == len({id(e) for e in got}), "a failure was reported twice"
        assert [id(e) for e in got] == [i for i in order if i in {id(e) for e in got}]
    else:
        assert not definite, (raised, definite)
        group = group_holder[0]
        if group.token.reason == "parent cancelled" and isinstance(raised, Cancelled):
            assert raised.reason == "parent cancelled"
        elif group.token.reason == "parent cancelled" and not optional:
            # Raced by g.cancel(), which claimed the cancellation first: nothing to raise.
            assert raised is None, repr(raised)
            assert any(c[0] == "group" for c in cancels)
        else:
            assert raised is None, repr(raised)
    # Each callback error reached sys.unraisablehook exactly once; the runner reported nothing.
    reported = [e for e in log.errors if all(e is not r for r in ran_at_registration)]
    assert sorted(map(id, unraisable)) == sorted(map(id, reported))
    assert len(log.errors) <= log.ran
    assert hooks.excepthook == []
    assert runner.exception() is None
    assert current_token_is_clean()


def tasks_exceptions(tasks: list[ManagedThread[int]]) -> list[BaseException]:
    return [e for e in (t.exception() for t in tasks) if e is not None]


def current_token_is_clean() -> bool:
    return threadkit.current_token() is _NEVER


# Under --shake again: the failures it once showed there were races of the library (a task
# cancelled between its start and its on_cancel(), now expected below; a g.cancel() racing the
# end of the block, which made leaving it raise Cancelled, fixed in ThreadGroup._outcome).
@pytest.mark.shake
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plans=st.lists(FAULT_PLANS, min_size=1, max_size=6), cancels=CANCELS)
def test_tasks_fail_at_random_points_while_tokens_are_cancelled(
    plans: list[FaultPlan], cancels: list[tuple[str, int, int]]
) -> None:
    run_fault_example(plans, cancels)


# =================================================================================================
# Ctrl-C, delivered as a real SIGINT from a helper thread
# =================================================================================================

LONG = JOIN_TIMEOUT * 10  # a sleep that only a cancellation ends
INTERRUPT_KINDS = ("observe", "done", "nested", "stubborn")


@dataclass
class InterruptPlan:
    abort: threading.Event = field(default_factory=threading.Event)
    ran: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def interrupt_task(kind: str, plan: InterruptPlan) -> int:
    with plan.lock:
        plan.ran.add(threading.current_thread().name)
    if kind == "done":
        return 1
    if kind == "observe":
        threadkit.sleep(LONG)
    elif kind == "nested":
        with ThreadGroup(name=f"{threading.current_thread().name}.inner") as inner:
            inner.spawn(threadkit.sleep, LONG)
            threadkit.sleep(LONG)
    else:  # stubborn: ignores cancellation until the test lets it go
        plan.abort.wait()
    return 2


def spin(interrupt: Interrupt) -> None:
    """Busy Python code in the body: a Ctrl-C lands at the next bytecode boundary."""
    while not interrupt.gave_up:
        pass


def run_interrupt_example(phase: str, kinds: list[str], lag: float) -> str | None:
    """One group, one Ctrl-C in ``phase``; check it; return the known-bug window hit, if any."""
    account = ThreadAccount()
    plan = InterruptPlan()
    never = len(_NEVER._callbacks)
    armed = threading.Event()
    tasks: list[ManagedThread[int]] = []
    groups: list[ThreadGroup] = []
    left = threading.Event()
    # The grace period is long, and ended by this helper once every task that observes
    # cancellation has ended: whatever the machine's speed (--shake, a loaded CI runner),
    # the group abandons exactly the stubborn tasks.
    interrupts: list[Interrupt] = []
    expirer = threading.Thread(
        target=_end_grace_when_only_stubborn_tasks_run,
        args=(groups, tasks, kinds, plan),
        kwargs={"left": left, "interrupts": interrupts},
        name="grace-expirer",
    )
    expirer.start()
    predicates: dict[str, Callable[[], bool]] = {
        "body-blocked": blocked_in(_cancel.sleep),
        "body-spinning": running(spin),
        "exit-waiting": blocked_in(ThreadGroup._wait),
        "anywhere": armed.is_set,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Interrupt(predicates[phase], lag=lag, files=TRACE_FILES) as interrupt:
            interrupts.append(interrupt)
            with ThreadGroup(name="ctrl-c", grace=JOIN_TIMEOUT) as g:
                groups.append(g)
                tasks.extend(g.spawn(interrupt_task, kind, plan) for kind in kinds)
                armed.set()
                if phase == "body-blocked":
                    threadkit.sleep(LONG)
                elif phase == "body-spinning":
                    spin(interrupt)
                elif phase == "anywhere":
                    threadkit.sleep(random.random() * 0.002)
    left.set()
    expirer.join()
    known = known_window(interrupt.landed)
    try:
        assert interrupt.sent, f"the interrupt was never delivered in phase {phase}"
        if known is not None:
            SOAK.add(known_bug_hits=1)
            return known
        assert isinstance(interrupt.error, KeyboardInterrupt), (
            f"{interrupt.error!r}, interrupt landed at {interrupt.landed}"
        )
        for task, kind in zip(tasks, kinds, strict=True):
            ran = task.name in plan.ran
            if kind in ("observe", "nested"):
                assert task.state is ThreadState.CANCELLED, (task, task.state, interrupt.landed)
            elif kind == "done":
                assert task.state in (ThreadState.SUCCEEDED, ThreadState.CANCELLED)
                assert (task.state is ThreadState.SUCCEEDED) is ran
                if ran:
                    assert task.result() == 1
        warned = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        abandoned = [
            t.name
            for t, k in zip(tasks, kinds, strict=True)
            if k == "stubborn" and t.name in plan.ran
        ]
        if abandoned:
            assert len(warned) == 1, warned
            for name in abandoned:
                assert repr(name) in warned[0]
        else:
            assert warned == [], warned
        assert threadkit.current_token() is _NEVER
        assert len(_NEVER._callbacks) == never
        return None
    finally:
        plan.abort.set()
        for task in tasks:  # only needed when a known bug left them uncancelled
            task.cancel("test cleanup")
        no_leaks_since(account)
        SOAK.add(tasks_run=len(kinds) + kinds.count("nested"), examples=1)


def _end_grace_when_only_stubborn_tasks_run(
    groups: list[ThreadGroup],
    tasks: list[ManagedThread[int]],
    kinds: list[str],
    plan: InterruptPlan,
    *,
    left: threading.Event,
    interrupts: list[Interrupt],
) -> None:
    """Once the group waits out its grace period, end it as soon as every task has ended
    except the stubborn ones that are running (and have said so in ``plan.ran``).

    Should the interrupter give up (it never saw the moment to send the Ctrl-C), cancel the
    group instead, so that a body blocked for good fails the test instead of hanging it.
    """

    def only_stubborn_left() -> bool:
        if not groups or groups[0]._grace_deadline is None or len(tasks) < len(kinds):
            return False
        with plan.lock:
            ran = set(plan.ran)
        return all(
            t.state.finished or (k == "stubborn" and t.name in ran)
            for t, k in zip(tasks, kinds, strict=True)
        )

    deadline = time.monotonic() + JOIN_TIMEOUT
    while not left.wait(0.0005) and time.monotonic() < deadline:
        if interrupts and interrupts[0].gave_up and groups:
            groups[0].cancel("the interrupter gave up")
            return
        if only_stubborn_left():
            group = groups[0]
            with group._lock:
                group._grace_deadline = time.monotonic()
                group._wake()
            return


INTERRUPT_PLANS = st.lists(st.sampled_from(INTERRUPT_KINDS), min_size=1, max_size=5).map(
    lambda kinds: ["observe", *kinds]  # something always waits for the cancellation
)


# Under --shake again. What made it fail or hang there: the group's wait went through
# Condition.wait (whose release/re-acquire race turned a Ctrl-C into RuntimeError, fixed in
# ThreadGroup._wait), a 0.1 s grace that a slow machine could miss (the grace is now ended by
# a helper once only stubborn tasks run), and a profile hook that a Ctrl-C switched off (the
# watch is now reinstalled; a body whose Ctrl-C never comes is cancelled instead of hanging).
@pytest.mark.shake
@given(
    phase=st.sampled_from(["body-blocked", "body-spinning", "exit-waiting"]),
    kinds=INTERRUPT_PLANS,
    lag=st.sampled_from([0.0, 0.0005]),
)
def test_ctrl_c_while_the_group_waits_or_runs_its_body(
    phase: str, kinds: list[str], lag: float
) -> None:
    """Ctrl-C cancels every task, waits for them (grace for those that ignore it), re-raises."""
    assert run_interrupt_example(phase, kinds, lag) is None


@pytest.mark.shake
def test_ctrl_c_at_random_moments_after_spawning() -> None:
    """A Ctrl-C at a random moment of the body or of leaving the block (known windows aside)."""
    rng = random.Random(1234)
    for _ in range(25):
        kinds = ["observe", *rng.choices(INTERRUPT_KINDS[:3], k=rng.randint(0, 4))]
        run_interrupt_example("anywhere", kinds, lag=rng.random() * 0.003)


# =================================================================================================
# Ctrl-C at every line of the main thread's library code (line-exact injection sweep)
# =================================================================================================

INJECTOR = LineInjector(
    LIB_FILES,
    extra_codes=[CODES["Thread.start"], CODES["Condition.wait"]],
    stack_files=TRACE_FILES,
)


def patient(abort: threading.Event) -> int:
    """A task that ends when cancelled, or when the test gives up on it (an orphan's way out)."""
    token = threadkit.current_token()
    while not abort.is_set():
        if token.wait(0.005):
            raise Cancelled(token.reason)
    return 0


def _inner_group_task(abort: threading.Event, started: threading.Event) -> None:
    with ThreadGroup(name="sweep.inner", grace=GRACE) as inner:
        inner.spawn(patient, abort)
        started.set()
        patient(abort)


def sweep_cancel(abort: threading.Event) -> None:
    with ThreadGroup(name="sweep", grace=GRACE) as g:
        for _ in range(3):
            g.spawn(patient, abort)
        g.cancel("done")


def sweep_body_raises(abort: threading.Event) -> None:
    with ThreadGroup(name="sweep", grace=GRACE) as g:
        g.spawn(patient, abort)
        g.spawn(patient, abort)
        raise KeyError("body")


def sweep_timeout(abort: threading.Event) -> None:
    with ThreadGroup(name="sweep", grace=GRACE, timeout=0.01) as g:
        g.spawn(patient, abort)


def sweep_failure(abort: threading.Event) -> None:
    with ThreadGroup(name="sweep", grace=GRACE) as g:
        g.spawn(patient, abort)
        g.spawn(int, "not a number").join()


def sweep_nested(abort: threading.Event) -> None:
    started = threading.Event()
    with ThreadGroup(name="sweep", grace=GRACE) as outer:
        outer.spawn(_inner_group_task, abort, started)
        with ThreadGroup(name="sweep.body", grace=GRACE) as inner:
            inner.spawn(patient, abort)
            started.wait(JOIN_TIMEOUT)
            outer.cancel("done")


#: What leaving each scenario raises when nothing interrupts it.
SWEEP_SCENARIOS: dict[str, tuple[Callable[[threading.Event], None], type[BaseException] | None]] = {
    "cancel": (sweep_cancel, None),
    "body-raises": (sweep_body_raises, KeyError),
    "timeout": (sweep_timeout, TimeoutError),
    "failure": (sweep_failure, ExceptionGroup),
    # The inner group's Cancelled (its parent, the outer group, was cancelled by its own
    # cancel()) is absorbed by the outer group, which asked for it.
    "nested": (sweep_nested, None),
}


SWEEP_EXPECTED = dict(SWEEP_SCENARIOS.values())


def _in_fresh_context(fn: Callable[[], object]) -> tuple[BaseException | None, CancelToken]:
    """Run ``fn`` in an empty context, so a leaked current token cannot reach the next run."""

    def run() -> tuple[BaseException | None, CancelToken]:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # judged by the caller
            error = exc
        return error, threadkit.current_token()

    return contextvars.Context().run(run)


def record_points(scenario: Callable[[threading.Event], None]) -> list[Point]:
    abort = threading.Event()
    account = ThreadAccount()
    points: list[Point] = []

    def traced() -> None:
        recorded, error = INJECTOR.record(lambda: scenario(abort))
        points.extend(recorded)
        if error is not None:
            raise error

    error, _ = _in_fresh_context(traced)
    abort.set()
    join_all(account.new())
    expected = SWEEP_EXPECTED.get(scenario)
    if expected is None:
        assert error is None, repr(error)
    else:
        assert isinstance(error, expected), repr(error)
    return points


def run_injected(
    scenario: Callable[[threading.Event], None], point: Point
) -> tuple[Injection, list[str]]:
    """Run ``scenario`` with a KeyboardInterrupt raised just before ``point``; list what broke."""
    account = ThreadAccount()
    abort = threading.Event()
    never = len(_NEVER._callbacks)
    problems: list[str] = []
    injection = Injection()

    def injected() -> None:
        nonlocal injection
        injection = INJECTOR.inject(point, lambda: scenario(abort), KeyboardInterrupt)
        if injection.error is not None:
            raise injection.error

    with HookRecorder() as hooks, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watchdog(SWEEP_HANG, abort.set, count=False) as dog:
            _, current = _in_fresh_context(injected)
        alive = account.alive_after(GRACE + 0.5)
        abort.set()
        join_all(account.new())
    if dog.fired:
        problems.append("hang")
    if injection.fired and not isinstance(injection.error, KeyboardInterrupt):
        problems.append(f"caller saw {injection.error!r}")
    if alive:
        problems.append(f"threads left running: {[t.name for t in alive]}")
    problems.extend(f"warning: {w.message}" for w in caught)
    problems.extend(f"thread died: {r.exc_value!r}" for r in hooks.excepthook)
    problems.extend(f"unraisable: {u.exc_value!r}" for u in hooks.unraisable)
    if current is not _NEVER:
        problems.append(f"current token left set to {current!r}")
    if len(_NEVER._callbacks) != never:
        problems.append("a token stayed registered with the root token")
    return injection, problems


#: How long an injected run may take before it counts as a hang (its tasks are then released).
SWEEP_HANG = 5.0


def sweep(name: str, *, every_hit: bool) -> None:
    scenario, _ = SWEEP_SCENARIOS[name]
    unexplained: list[str] = []
    tried = 0
    for point in iter_unique(record_points(scenario), every_hit=every_hit):
        if known_window(point.stack) is not None:
            continue  # covered by test_known_ctrl_c_window
        tried += 1
        injection, problems = run_injected(scenario, point)
        if not problems:
            continue
        if known_window(injection.stack) is not None:
            SOAK.add(known_bug_hits=1)
            continue
        SOAK.add(
            hangs=int("hang" in problems),
            threads_leaked=sum("threads left running" in p for p in problems),
        )
        unexplained.append(f"{point} <- {' < '.join(injection.stack[1:4])}: {problems}")
    assert tried, "the scenario ran no library code"
    SOAK.add(examples=tried)
    assert not unexplained, "\n".join(unexplained)


@pytest.mark.parametrize("name", sorted(SWEEP_SCENARIOS))
def test_ctrl_c_at_every_line(name: str) -> None:
    """A KeyboardInterrupt just before any line the main thread runs in the library (first
    time each line runs): the caller gets the KeyboardInterrupt, every task ends, nothing
    is left registered, warned about or set as the current token."""
    sweep(name, every_hit=False)


def _repro_point(window: str) -> tuple[str, Point]:
    name, qualname, snippet = KNOWN_REPRO[window]
    line = Window(qualname, snippet).lines(CODES[qualname]).start
    for point in record_points(SWEEP_SCENARIOS[name][0]):
        if point.qualname == qualname and point.lineno == line:
            if window in KNOWN_INTERRUPT_WINDOWS:
                assert known_window(point.stack) == window, point.stack
            return name, point
    msg = f"scenario {name!r} never runs {qualname}:{line}: update KNOWN_REPRO"
    raise LookupError(msg)


_WINDOW_BUGS = {
    "exit-entry": "an interrupt before the first instruction of ThreadGroup.__exit__ cannot be "
    "caught by it (inherent to a Python context manager): tasks neither cancelled nor joined",
}


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=f"bug: {_WINDOW_BUGS[name]}")]
            if name in _WINDOW_BUGS
            else [],
        )
        for name in KNOWN_REPRO
    ],
)
def test_known_ctrl_c_window(window: str) -> None:
    """One deterministic reproduction per known Ctrl-C window (see KNOWN_INTERRUPT_WINDOWS)."""
    name, point = _repro_point(window)
    injection, problems = run_injected(SWEEP_SCENARIOS[name][0], point)
    assert injection.fired
    assert not problems, f"{name}: {point}: {problems}"


def test_a_ctrl_c_is_never_raised_from_inside_the_watch_hook() -> None:
    """The harness's own Ctrl-C lands in the program, never in its profile hook.

    Raised from the hook it would land where no real Ctrl-C can: before the call of a ``with``
    block's ``__exit__``, leaving its lock held (on 3.12 threading's thread-table lock stayed
    taken, and the next thread to end hung a --shake run). Here the signal arrives while the
    hook runs, deterministically: the hook's bookkeeping waits in it until the handler ran.
    """
    in_hook = threading.Event()

    class Stalling(dict[CodeType, int]):
        """MAIN_WATCH's call counts; the first lookup stays in the hook until a SIGINT came."""

        def get(self, key: CodeType, default: int = 0) -> int:  # type: ignore[override]
            if not in_hook.is_set():
                in_hook.set()
                deadline = time.monotonic() + JOIN_TIMEOUT
                while interrupt.deferred == 0 and time.monotonic() < deadline:
                    pass  # a loop: the handler runs here, in the hook
            return super().get(key, default)

    def called() -> None:
        pass

    with Interrupt(in_hook.is_set) as interrupt:
        saved = MAIN_WATCH.active
        MAIN_WATCH.active = Stalling(saved)
        try:
            called()  # its call event runs the hook
            deadline = time.monotonic() + JOIN_TIMEOUT
            while not interrupt.handled and time.monotonic() < deadline:
                pass  # the re-sent signal lands here
        finally:
            MAIN_WATCH.active = dict(MAIN_WATCH.active)
    assert interrupt.handled
    assert isinstance(interrupt.error, KeyboardInterrupt)
    where = []
    tb = interrupt.error.__traceback__
    while tb is not None:
        where.append(tb.tb_frame.f_code.co_qualname)
        tb = tb.tb_next
    assert "MainWatch._hook" not in where, where
    assert where[0] == "test_a_ctrl_c_is_never_raised_from_inside_the_watch_hook", where
    assert interrupt.deferred >= 1


def test_a_ctrl_c_where_none_can_be_taken_is_sent_again() -> None:
    """In a weakref or gc callback (where CPython drops the exception) or in Condition.__enter__
    once it holds the lock (the `with` block never owns it), the harness's handler does not
    raise: it counts the signal as deferred, and its helper sends another."""
    frames: dict[str, FrameType] = {}

    def capture(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            frames.setdefault(frame.f_code.co_qualname, frame)

    class Thing:
        pass

    live: weakref.WeakSet[Thing] = weakref.WeakSet()
    thing = Thing()
    live.add(thing)
    cond = threading.Condition()
    sys.setprofile(capture)
    try:
        del thing  # WeakSet's callback runs
        with cond:
            pass
    finally:
        sys.setprofile(None)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        frames.setdefault("gc callback", sys._getframe())

    gc.callbacks.append(on_gc)
    try:
        gc.collect()
        interrupt = Interrupt(lambda: False)  # only its handler is used here
        for name in ("WeakSet.__init__.<locals>._remove", "Condition.__enter__", "gc callback"):
            interrupt._handler(signal.SIGINT, frames[name])  # does not raise
    finally:
        gc.callbacks.remove(on_gc)
    assert interrupt.deferred == 3
    assert not interrupt.handled
    with pytest.raises(KeyboardInterrupt):
        interrupt._handler(signal.SIGINT, sys._getframe())
    assert interrupt.handled


# =================================================================================================
# Other bugs found by the harness (strict xfails: the lead fixes them and deletes the marker)
# =================================================================================================


def test_cancelling_a_finished_failed_task_keeps_its_failure() -> None:
    stray = CancelToken()
    stray.cancel("not this task's")
    with pytest.raises(BaseExceptionGroup) as info:
        with ThreadGroup(name="late") as g:
            t = g.spawn(stray.raise_if_cancelled)
            t.join()
            assert g.token.cancelled  # the group already treated it as a failure
            t.cancel()  # e.g. `for t in tasks: t.cancel()` after the fact
    assert list(info.value.exceptions) == [t.exception()]


def test_body_woken_by_own_cancel_leaves_cleanly() -> None:
    with ThreadGroup(name="own") as g:
        g.spawn(g.cancel, "done")
        threadkit.sleep(LONG)  # woken by the group's own cancellation


def test_nested_group_cancelled_by_its_body_is_not_a_failure_outside() -> None:
    def task() -> str:
        with ThreadGroup(name="inner") as inner:
            inner.spawn(threadkit.sleep, LONG)
            inner.cancel("enough")
            threadkit.check_cancelled()
        return "done"

    with ThreadGroup(name="outer") as g:
        t = g.spawn(task)
    assert t.result() == "done"


def test_base_exception_in_a_task_callback_does_not_hang_the_group() -> None:
    started = threading.Event()
    outcome: list[BaseException | None] = []
    groups: list[ThreadGroup] = []

    def victim() -> None:
        def callback() -> None:
            raise TaskAbort("from a callback")

        threadkit.current_token().on_cancel(callback)
        started.set()
        threadkit.sleep(LONG)

    def failer() -> None:
        started.wait()
        raise TaskError("boom")

    def leave_group() -> None:
        try:
            with ThreadGroup(name="hangs") as g:
                groups.append(g)
                g.spawn(victim)
                g.spawn(failer)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    with HookRecorder():
        runner = threading.Thread(target=leave_group)
        runner.start()
        runner.join(2)  # it takes milliseconds unless it hangs
        hung = runner.is_alive()
        if hung:
            # Test cleanup only: every task has ended, but the group still counts one.
            group = groups[0]
            assert not join_all(list(group._threads))
            with group._lock:
                group._running = 0
                group._wake()
        runner.join(JOIN_TIMEOUT)
    assert not hung, "leaving the group hung"
    assert outcome
    assert isinstance(outcome[0], BaseExceptionGroup)


def test_a_deep_token_chain_is_cancelled_to_the_end() -> None:
    root = CancelToken()
    chain = [root]
    for _ in range(sys.getrecursionlimit() // 2):
        chain.append(chain[-1].child())
    with HookRecorder() as hooks:
        root.cancel("deep")
    assert hooks.unraisable == []
    assert all(token.cancelled for token in chain)


def test_a_deep_token_chain_is_cancelled_deep_in_the_stack() -> None:
    chain = [CancelToken()]
    for _ in range(sys.getrecursionlimit() * 2):
        chain.append(chain[-1].child())
    seen: list[str | None] = []
    chain[-1].on_cancel(lambda: seen.append(chain[-1].reason))

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            chain[0].cancel("deep")

    with HookRecorder() as hooks:
        deep(sys.getrecursionlimit() - 100)
    assert hooks.unraisable == []
    assert seen == ["deep"]
    assert all(token.reason == "deep" for token in chain)
    assert all(not token._callbacks and token._parent is None for token in chain)


def _token_tree_with_callbacks() -> tuple[CancelToken, list[CancelToken], list[list[int]]]:
    """A root with callbacks, children, grandchildren (each with callbacks), and a raising one."""
    root = CancelToken()
    tokens = [root]
    runs: list[list[int]] = []

    def register(token: CancelToken, raises: bool = False) -> None:
        ran: list[int] = []
        runs.append(ran)

        def callback() -> None:
            ran.append(1)
            if raises:
                raise CallbackError("reported")

        token.on_cancel(callback)

    register(root)
    for i in range(3):
        child = root.child()
        tokens.append(child)
        register(child, raises=i == 1)
        grandchild = child.child()
        tokens.append(grandchild)
        register(grandchild)
        register(root)
    return root, tokens, runs


def test_ctrl_c_at_any_line_of_cancel_still_runs_every_callback() -> None:
    """A KeyboardInterrupt just before any line that cancel() runs (every execution of each):
    once the token is cancelled, every callback still runs exactly once, every descendant is
    cancelled and detached, and the caller gets the KeyboardInterrupt."""
    root, _, _ = _token_tree_with_callbacks()
    with HookRecorder():
        points, error = INJECTOR.record(lambda: root.cancel("stop"))
    assert error is None
    assert len(points) > 20
    for point in iter_unique(points, every_hit=True):
        root, tokens, runs = _token_tree_with_callbacks()
        with HookRecorder() as hooks:
            injection = INJECTOR.inject(
                point, functools.partial(root.cancel, "stop"), KeyboardInterrupt
            )
        assert injection.fired, point
        assert isinstance(injection.error, KeyboardInterrupt), (point, injection.error)
        # Nothing is left "being handled" (a stale one would become the context of the
        # next exception the thread raises).
        assert sys.exc_info() == (None, None, None), point
        if not root.cancelled:
            # It landed before the flag flipped: nothing happened, and a new cancel() works.
            assert all(ran == [] for ran in runs), point
            with HookRecorder():
                root.cancel("stop")
        assert all(ran == [1] for ran in runs), (point, runs)
        assert all(t.cancelled and t.reason == "stop" for t in tokens), point
        assert all(not t._callbacks and t._parent is None for t in tokens), point
        assert len(hooks.unraisable) <= 1, point
        SOAK.add(examples=1)


def test_callbacks_and_children_are_cancelled_in_registration_order() -> None:
    root = CancelToken()
    order: list[str] = []
    root.on_cancel(lambda: order.append("a"))
    child = root.child()
    child.on_cancel(lambda: order.append("child"))
    root.on_cancel(lambda: order.append("b"))
    unregister = root.on_cancel(lambda: order.append("gone"))
    root.on_cancel(lambda: order.append("c"))
    unregister()
    root.cancel()
    assert order == ["a", "child", "b", "c"]


def test_children_of_the_root_token_are_not_kept_alive() -> None:
    before = len(_NEVER._callbacks)
    for _ in range(10):
        threadkit.current_token().child()
    gc.collect()
    assert len(_NEVER._callbacks) == before


# =================================================================================================
# Soak: the suites above at scale (reduced by default; full under THREADKIT_STRESS=1)
# =================================================================================================

#: The soak's pseudo-random plans are reproducible: THREADKIT_SOAK_SEED picks another run.
SOAK_SEED = int(__import__("os").environ.get("THREADKIT_SOAK_SEED", "20240601"))


def _machine_settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.mark.slow
def test_soak_token_model() -> None:
    run_state_machine_as_test(
        TokenTreeMachine, settings=_machine_settings(scaled(25, 1_000), scaled(40, 80))
    )
    assert_soak_clean()


@pytest.mark.slow
def test_soak_group_model() -> None:
    run_state_machine_as_test(
        GroupMachine, settings=_machine_settings(scaled(25, 1_000), scaled(40, 80))
    )
    assert_soak_clean()


@pytest.mark.slow
def test_soak_lifecycle_hooks() -> None:
    rng = random.Random(SOAK_SEED)
    for _ in range(scaled(100, 20_000)):
        plan = {
            h: rng.choice(["error", "base", "cancelled"])
            for h in rng.sample(HOOKS, rng.randint(0, 4))
        }
        check_faulty_lifecycle(plan, cancelled_first=rng.random() < 0.3)
        SOAK.add(examples=1, tasks_run=1)
    assert_soak_clean()


@pytest.mark.slow
def test_soak_task_faults() -> None:
    """Groups of faulty tasks with racing cancellations until enough tasks have run."""
    rng = random.Random(SOAK_SEED)
    target = scaled(1_500, 100_000)
    start = SOAK["tasks_run"]
    while SOAK["tasks_run"] - start < target:
        plans = [
            FaultPlan(
                steps=rng.randint(0, 6),
                fault_at=rng.choice([None, None, rng.randint(0, 6)]),
                fault=rng.choice(["error", "base", "stray_cancel"]),
                callback=rng.choice(["none", "ok", "raising"]),
            )
            for _ in range(rng.randint(1, 12))
        ]
        cancels = [
            (rng.choice(["group", "task", "parent"]), rng.randint(0, 30), rng.randint(0, 11))
            for _ in range(rng.randint(0, 3))
        ]
        run_fault_example(plans, cancels)
    assert_soak_clean()


def _soak_ctrl_c(phases: list[str], count: int) -> None:
    rng = random.Random(SOAK_SEED + len(phases))
    for i in range(count):
        kinds = ["observe", *rng.choices(INTERRUPT_KINDS, k=rng.randint(0, 5))]
        phase = phases[i % len(phases)]
        if phase == "anywhere":
            kinds = [k for k in kinds if k != "stubborn"]  # keeps the random window short
        run_interrupt_example(phase, kinds, lag=rng.choice([0.0, rng.random() * 0.002]))
    assert_soak_clean()


@pytest.mark.slow
def test_soak_ctrl_c_in_body_and_exit() -> None:
    """Many real Ctrl-Cs while the body blocks, while it spins, and while the block waits."""
    _soak_ctrl_c(["body-blocked", "body-spinning", "exit-waiting"], scaled(45, 1_200))


@pytest.mark.slow
def test_soak_ctrl_c_at_random_moments() -> None:
    """Many real Ctrl-Cs at random moments after spawning (known windows counted, not failed)."""
    _soak_ctrl_c(["anywhere"], scaled(30, 1_500))


@pytest.mark.slow
def test_soak_ctrl_c_at_every_line_every_time() -> None:
    """The line sweep at every execution of every line, not just the first (reduced run: two
    scenarios; THREADKIT_STRESS=1: all of them)."""
    names = sorted(SWEEP_SCENARIOS) if STRESS else ["body-raises", "cancel"]
    for name in names:
        sweep(name, every_hit=True)
    assert_soak_clean()
