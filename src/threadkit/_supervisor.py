"""Implements Supervisor, Erlang/OTP-style supervision trees for threads."""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast, final

from ._cancel import Cancelled, _check_seconds
from ._daemon import DEFAULT_GRACE, _check_grace, _check_name, _start_registered
from ._thread import ManagedThread, ThreadState

__all__ = ["ChildSpec", "ChildStatistics", "Supervisor", "SupervisorStatistics"]

RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]
Factory: TypeAlias = Callable[[], ManagedThread[Any]]
_Outcome: TypeAlias = Literal["succeeded", "failed", "cancelled"]

_RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
_STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")

_logger = logging.getLogger("threadkit.supervisor")


@final
@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How a :class:`Supervisor` runs one child: its factory, restart type and name.

    A plain factory passed to :class:`Supervisor` means ``ChildSpec(factory)``.

    Attributes:
        factory: called with no arguments, in the supervisor's thread, each
            time the child is (re)started; must return a new, unstarted
            :class:`ManagedThread` (a :class:`Supervisor` or
            :class:`PeriodicThread` is one).
        restart: when the child's thread is replaced after it ends, as in OTP:
            ``"permanent"``: always (after a failure, a normal return or a
            cancellation that the supervisor did not ask for);
            ``"transient"``: only after a failure (an exception other than
            :class:`Cancelled`); ``"temporary"``: never.
        name: the child's name in statistics and logs; by default ``"child-<index>"``.
            Names must be unique within a supervisor.

    Example:
        >>> import threadkit
        >>> spec = threadkit.ChildSpec(lambda: threadkit.ManagedThread(), restart="transient")
        >>> spec.restart
        'transient'
    """

    factory: Factory
    restart: RestartType = field(default="permanent", kw_only=True)
    name: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not callable(self.factory):
            msg = f"factory must be a callable returning a ManagedThread, got {self.factory!r}"
            raise TypeError(msg)
        if self.restart not in _RESTART_TYPES:
            msg = f"restart must be 'permanent', 'transient' or 'temporary', got {self.restart!r}"
            raise ValueError(msg)
        _check_name(self.name)


@final
@dataclass(frozen=True, slots=True)
class ChildStatistics:
    """One child's part of :class:`SupervisorStatistics`.

    Attributes:
        name: the child's name (see :class:`ChildSpec`).
        restarts: how many times the child's thread was replaced by a fresh one.
        alive: whether a thread of the child is running now.
        last_error: the exception that last ended one of its threads (or its
            factory), other than a cancellation; ``None`` if none did.
    """

    name: str
    restarts: int
    alive: bool
    last_error: BaseException | None


@final
@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a :class:`Supervisor` (see :meth:`Supervisor.statistics`).

    Attributes:
        restarts: restarts made, one per restart decision (a one_for_all
            restart of three children counts once, as for ``max_restarts``).
        children: one :class:`ChildStatistics` per child, in the order given.
    """

    restarts: int
    children: tuple[ChildStatistics, ...]


for _cls in (ChildSpec, ChildStatistics, SupervisorStatistics):
    # After @dataclass, which resolves string annotations in the defining module.
    _cls.__module__ = "threadkit"


# -- the decisions, free of threads and clocks (property-tested) --------------------------------


def _should_restart(restart: RestartType, outcome: _Outcome) -> bool:
    return restart == "permanent" or (restart == "transient" and outcome == "failed")


class _Intensity:
    """OTP's restart intensity (MaxR restarts within MaxT seconds) and the backoff delays."""

    __slots__ = ("_backoff", "_max_restarts", "_times", "_within")

    def __init__(self, max_restarts: int, within: float, backoff: float) -> None:
        self._max_restarts = max_restarts
        self._within = within
        self._backoff = backoff
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> float | None:
        """Record a restart at ``now`` (not before the last one).

        Returns:
            How long to wait before restarting (``backoff`` doubled for each
            earlier restart still in the window, at most ``within``), or ``None``
            when this restart is one too many: the supervisor gives up.
        """
        times = self._times
        # As OTP's supervisor: a restart at `then` is in the window while now <= then + within.
        while times and now > times[0] + self._within:
            times.popleft()
        times.append(now)
        if len(times) > self._max_restarts:
            return None
        # 2.0 ** 1000 is still a float; the product may overflow to inf, which min() caps.
        return min(self._within, self._backoff * 2.0 ** min(len(times) - 1, 1000))


@dataclass(frozen=True, slots=True)
class _Restart:
    """Stop the running siblings ``stop`` (in that order), wait ``delay``, start ``start``."""

    stop: tuple[int, ...]
    start: tuple[int, ...]
    delay: float


_Decision: TypeAlias = _Restart | Literal["remove", "give_up"]


class _Supervision:
    """What a supervisor does when a child ends: which children to stop and restart, or give up.

    A child is *active* while supervised: running, or about to be (re)started.
    A child that ends for good (temporary; transient that did not fail; a
    temporary sibling stopped by a group restart) becomes inactive and is never
    started again, not even by a later one_for_all restart. The supervisor is
    done, successfully, when no child is active.
    """

    __slots__ = ("_intensity", "_strategy", "_types", "active", "restarts", "total_restarts")

    def __init__(
        self,
        strategy: Strategy,
        types: Sequence[RestartType],
        intensity: _Intensity,
    ) -> None:
        self._strategy = strategy
        self._types = tuple(types)
        self._intensity = intensity
        self.active = [True] * len(self._types)
        self.restarts = [0] * len(self._types)
        self.total_restarts = 0

    def done(self) -> bool:
        return not any(self.active)

    def exited(self, index: int, outcome: _Outcome, now: float) -> _Decision:
        """Child ``index`` (active) ended with ``outcome`` at ``now``: decide what to do."""
        if not _should_restart(self._types[index], outcome):
            self.active[index] = False
            return "remove"
        delay = self._intensity.add(now)
        if delay is None:
            return "give_up"
        n = len(self._types)
        if self._strategy == "one_for_one":
            group = [index]
        elif self._strategy == "one_for_all":
            group = [j for j in range(n) if j == index or self.active[j]]
        else:  # rest_for_one: the child and the active children after it
            group = [j for j in range(n) if j == index or (j > index and self.active[j])]
        # A temporary sibling stopped with the group is never restarted (as in OTP).
        start = tuple(j for j in group if j == index or self._types[j] != "temporary")
        for j in group:
            self.active[j] = j in start
        for j in start:
            self.restarts[j] += 1
        self.total_restarts += 1
        stop = tuple(j for j in reversed(group) if j != index)
        return _Restart(stop=stop, start=start, delay=delay)


# -- the Supervisor thread ----------------------------------------------------------------------


class _Slot:
    """The supervisor's live record of one child."""

    __slots__ = ("generation", "last_error", "name", "spec", "thread")

    def __init__(self, spec: ChildSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.thread: ManagedThread[Any] | None = None  # the running thread, if any
        self.generation = 0  # bumped at each start and stop: stale end reports are ignored
        self.last_error: BaseException | None = None


_Event: TypeAlias = tuple[int, int, ManagedThread[Any]]


@final
class Supervisor(ManagedThread[SupervisorStatistics]):
    """A thread that runs child threads and replaces those that end, Erlang/OTP style.

    Each child is a zero-argument factory of unstarted :class:`ManagedThread`
    (or a :class:`ChildSpec` wrapping one with its restart type). When the
    supervisor starts, it starts one thread per child, in order. When a child's
    thread ends and its restart type says so (see :class:`ChildSpec`: a
    ``"permanent"`` child is restarted even after returning normally), the
    ``strategy`` decides which threads are replaced by fresh ones from their
    factories (a finished thread is never restarted):

    * ``"one_for_one"``: only that child.
    * ``"one_for_all"``: every child; the others are stopped first.
    * ``"rest_for_one"``: that child and the children after it in ``children``;
      those are stopped first.

    Siblings are stopped in reverse order (cancelled, then waited for up to
    ``grace`` seconds each, without limit for a child that is a Supervisor,
    which bounds its own waits), and restarted in order after a delay of
    ``backoff`` seconds, doubled for each earlier restart within ``within``
    seconds (at most ``within``). A temporary sibling that is stopped is not
    restarted. A child still running ``grace`` seconds after being cancelled is
    abandoned with a logged warning.

    Restart intensity: more than ``max_restarts`` restarts within ``within``
    seconds (with ``max_restarts=2``, the third failure inside the window)
    makes the supervisor give up: it stops every child in reverse order and
    fails with the error of the child that ended last (or, when that child did
    not fail, a :class:`RuntimeError`), with a note saying why;
    :meth:`~ManagedThread.result` re-raises it.

    The supervisor ends successfully, :meth:`~ManagedThread.result` returning its
    final statistics, once no child is left to run (all temporary or transient
    children done). Cancelling it (:meth:`~ManagedThread.cancel`) stops every
    child in reverse order and ends it CANCELLED. A factory that raises, or
    returns anything but a new ManagedThread, counts as a failure of its child.

    Child failures are logged (logger ``threadkit.supervisor``) rather than
    passed to :func:`threading.excepthook`. A supervisor is a daemon by
    default; a started daemon supervisor that no other supervisor owns is shut
    down gracefully at interpreter exit (it gets ``grace`` seconds per child
    plus one). Supervisors nest: a factory may return a Supervisor.

    Example:
        >>> import threadkit
        >>> def worker() -> None:
        ...     threadkit.sleep(3600)
        >>> sup = threadkit.Supervisor(
        ...     [lambda: threadkit.ManagedThread(target=worker, name="worker")],
        ...     strategy="one_for_one", max_restarts=3, within=5.0,
        ... )
        >>> sup.start()
        >>> sup.cancel()
        >>> sup.join()
        >>> sup.state
        <ThreadState.CANCELLED: 'cancelled'>
    """

    __module__ = "threadkit"

    def __init__(
        self,
        children: Iterable[ChildSpec | Factory],
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: float = 0.1,
        name: str | None = None,
        grace: float = DEFAULT_GRACE,
        daemon: bool = True,
    ) -> None:
        """Make the supervisor (call :meth:`start` to run it).

        Args:
            children: child factories or :class:`ChildSpec` objects, in start order.
            strategy: ``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``.
            max_restarts: restarts allowed within ``within`` seconds; >= 0.
            within: the intensity window, in seconds; finite and > 0.
            backoff: the delay before the first restart in the window, in seconds.
            name: the thread's name; by default ``"Supervisor-N"``.
            grace: how long a stopped child gets to end, in seconds.
            daemon: whether the supervisor thread is a daemon (threads its
                factories make inherit it unless they say otherwise).

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: an argument has a wrong value (an unknown strategy, a
                negative ``max_restarts``, duplicate child names, ...).
        """
        specs = _check_children(children)
        if strategy not in _STRATEGIES:
            msg = (
                f"strategy must be 'one_for_one', 'one_for_all' or 'rest_for_one', got {strategy!r}"
            )
            raise ValueError(msg)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
            msg = f"max_restarts must be an int >= 0, got {max_restarts!r}"
            raise TypeError(msg)
        if max_restarts < 0:
            msg = f"max_restarts must be an int >= 0, got {max_restarts!r}"
            raise ValueError(msg)
        _check_seconds("within", within)
        if within == 0 or math.isinf(within):
            msg = f"within must be a finite number of seconds > 0, got {within!r}"
            raise ValueError(msg)
        _check_seconds("backoff", backoff)
        if math.isinf(backoff):
            msg = f"backoff must be a finite number of seconds, got {backoff!r}"
            raise ValueError(msg)
        _check_name(name)
        _check_grace(grace)
        if not isinstance(daemon, bool):
            msg = f"daemon must be a bool, got {daemon!r}"
            raise TypeError(msg)
        super().__init__(
            name=name if name is not None else f"Supervisor-{next(_numbers)}", daemon=daemon
        )
        self._tk_max_restarts = max_restarts
        self._tk_within = float(within)
        self._tk_grace = grace
        self._tk_slots = [
            _Slot(spec, spec.name if spec.name is not None else f"child-{i}")
            for i, spec in enumerate(specs)
        ]
        self._tk_core = _Supervision(
            strategy,
            [spec.restart for spec in specs],
            _Intensity(max_restarts, float(within), float(backoff)),
        )
        self._tk_lock = threading.Lock()  # guards the slots and the core against statistics()
        self._tk_events: queue.SimpleQueue[_Event | None] = queue.SimpleQueue()
        # Children waiting to be (re)started: index -> when (monotonic).
        self._tk_pending: dict[int, float] = {}

    def start(self) -> None:
        """Start the supervisor; see :meth:`threading.Thread.start`.

        Raises:
            RuntimeError: it was started before, or the interpreter is shutting
                its daemons down.
        """
        # At exit the supervisor stops its children one by one: each gets `grace`.
        exit_grace = self._tk_grace * (len(self._tk_slots) + 1)
        _start_registered(self, super().start, exit_grace)

    def statistics(self) -> SupervisorStatistics:
        """Return a frozen snapshot: restarts, and per child its restarts and state."""
        with self._tk_lock:
            core = self._tk_core
            return SupervisorStatistics(
                restarts=core.total_restarts,
                children=tuple(
                    ChildStatistics(
                        name=slot.name,
                        restarts=core.restarts[i],
                        alive=slot.thread is not None and slot.thread.is_alive(),
                        last_error=slot.last_error,
                    )
                    for i, slot in enumerate(self._tk_slots)
                ),
            )

    def run(self) -> SupervisorStatistics:  # type: ignore[override]
        """Start the children and supervise them until done, cancelled or giving up."""
        token = self._tk_token
        events = self._tk_events
        unregister = token.on_cancel(functools.partial(events.put, None))
        try:
            now = time.monotonic()
            self._tk_pending = dict.fromkeys(range(len(self._tk_slots)), now)
            while True:
                self._tk_start_due()
                if self._tk_core.done():
                    return self.statistics()
                timeout = None
                if self._tk_pending:
                    timeout = max(0.0, min(self._tk_pending.values()) - time.monotonic())
                    timeout = min(timeout, threading.TIMEOUT_MAX)
                try:
                    event = events.get(timeout=timeout)
                except queue.Empty:
                    continue
                if event is None:
                    raise Cancelled(token.reason)
                index, generation, thread = event
                if generation == self._tk_slots[index].generation:
                    with self._tk_lock:
                        self._tk_slots[index].thread = None
                    self._tk_exited(index, thread, thread._tk_exc)
        finally:
            unregister()
            self._tk_pending.clear()
            self._tk_stop_all()

    # -- internals ------------------------------------------------------------------------

    def _tk_start_due(self) -> None:
        token = self._tk_token
        pending = self._tk_pending
        while pending:
            token.raise_if_cancelled()
            when, index = min((when, index) for index, when in pending.items())
            if when > time.monotonic():
                return
            del pending[index]
            self._tk_launch(index)

    def _tk_launch(self, index: int) -> None:
        slot = self._tk_slots[index]
        with self._tk_lock:
            slot.generation += 1
        try:
            self._tk_make(index, slot)
        except Exception as exc:
            failure = exc
        else:
            return
        with self._tk_lock:
            slot.thread = None
        # Outside the except block, so that giving up does not chain the error to itself.
        self._tk_exited(index, None, failure)

    def _tk_make(self, index: int, slot: _Slot) -> None:
        thread = slot.spec.factory()
        if not isinstance(thread, ManagedThread):
            msg = f"the factory of child {slot.name!r} must return a ManagedThread, got {thread!r}"
            raise TypeError(msg)
        if thread.state is not ThreadState.CREATED or thread._tk_on_done is not None:
            msg = (
                f"the factory of child {slot.name!r} returned {thread!r}, which was already "
                f"started or is owned elsewhere; it must return a new thread each time"
            )
            raise RuntimeError(msg)
        # Called last in the child's thread: its end and its error come to us, not to excepthook.
        thread._tk_on_done = functools.partial(self._tk_child_done, index, slot.generation)
        with self._tk_lock:
            # Before start(): statistics() must know the thread as soon as it runs.
            slot.thread = thread
        thread.start()

    def _tk_child_done(self, index: int, generation: int, thread: ManagedThread[Any]) -> None:
        self._tk_events.put((index, generation, thread))

    def _tk_exited(
        self, index: int, thread: ManagedThread[Any] | None, exc: BaseException | None
    ) -> None:
        """Child ``index`` ended (``thread`` is None when its factory or start failed)."""
        slot = self._tk_slots[index]
        outcome: _Outcome
        if exc is None:
            outcome = "succeeded"
        elif isinstance(exc, Cancelled):
            outcome = "cancelled"
        else:
            outcome = "failed"
        with self._tk_lock:
            if outcome == "failed":
                slot.last_error = exc
            decision = self._tk_core.exited(index, outcome, time.monotonic())
        described = f"child {slot.name!r}" + (f" (thread {thread.name!r})" if thread else "")
        if outcome == "failed":
            _logger.error(
                "supervisor %r: %s failed; %s",
                self.name,
                described,
                _describe(decision, self._tk_slots),
                exc_info=exc,
            )
        else:
            _logger.info(
                "supervisor %r: %s %s; %s",
                self.name,
                described,
                outcome,
                _describe(decision, self._tk_slots),
            )
        if decision == "remove":
            return
        if decision == "give_up":
            raise self._tk_give_up_error(slot, outcome, exc)
        for j in decision.stop:
            # A sibling still waiting for its (re)start is stopped by forgetting it; one that
            # the decision restarts is queued again below (a temporary one never is).
            self._tk_pending.pop(j, None)
            self._tk_stop_child(j)
        when = time.monotonic() + decision.delay
        for j in decision.start:
            self._tk_pending[j] = when

    def _tk_give_up_error(
        self, slot: _Slot, outcome: _Outcome, exc: BaseException | None
    ) -> BaseException:
        why = (
            f"supervisor {self.name!r} gave up: more than {self._tk_max_restarts} restart(s) "
            f"within {self._tk_within!r} s"
        )
        if outcome == "failed" and exc is not None:
            exc.add_note(f"{why} (child {slot.name!r} failed last)")
            return exc
        return RuntimeError(f"{why} (child {slot.name!r} {outcome} last)")

    def _tk_stop_child(self, index: int) -> None:
        slot = self._tk_slots[index]
        with self._tk_lock:
            thread = slot.thread
            slot.thread = None
            slot.generation += 1  # its end report is now stale: we asked for it
        if thread is None:
            return
        thread.cancel(f"stopped by supervisor {self.name!r}")
        # A Supervisor child bounds its own waits (grace per child); anything else gets grace.
        thread.join(
            None if isinstance(thread, Supervisor) else min(self._tk_grace, threading.TIMEOUT_MAX)
        )
        if thread.is_alive():
            _logger.warning(
                "supervisor %r: abandoned child %r (thread %r): still running %s s after "
                "being cancelled",
                self.name,
                slot.name,
                thread.name,
                self._tk_grace,
            )

    def _tk_stop_all(self) -> None:
        for index in reversed(range(len(self._tk_slots))):
            self._tk_stop_child(index)


def _describe(decision: _Decision, slots: Sequence[_Slot]) -> str:
    if decision == "remove":
        return "not restarting it"
    if decision == "give_up":
        return "restart intensity exceeded, giving up"
    names = ", ".join(repr(slots[j].name) for j in decision.start)
    return f"restarting {names} in {decision.delay:.3g} s"


def _check_children(children: object) -> list[ChildSpec]:
    if isinstance(children, (str, bytes)) or not isinstance(children, Iterable):
        msg = f"children must be an iterable of factories or ChildSpec objects, got {children!r}"
        raise TypeError(msg)
    specs: list[ChildSpec] = []
    names: set[str] = set()
    for i, child in enumerate(cast(Iterable[object], children)):
        if isinstance(child, ChildSpec):
            spec = child
        elif callable(child):
            spec = ChildSpec(cast(Factory, child))
        else:
            msg = (
                f"children[{i}] must be a ChildSpec or a factory returning a ManagedThread, "
                f"got {child!r}"
            )
            raise TypeError(msg)
        name = spec.name if spec.name is not None else f"child-{i}"
        if name in names:
            msg = f"children[{i}] has the name {name!r} of an earlier child; names must be unique"
            raise ValueError(msg)
        names.add(name)
        specs.append(spec)
    return specs


# next() on itertools.count is atomic in CPython: no lock needed.
_numbers = itertools.count(1)
