"""Property tests: for any failure schedule, the supervisor restarts what its strategy prescribes.

The prescription is written here once, declaratively (sets, straight from the OTP rules),
and checked against the supervisor's pure decision logic and against real threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_supervisor import WAIT, Boom, Harness
from threadkit import ChildSpec, Supervisor, ThreadState
from threadkit._supervisor import RestartType, Strategy, _Intensity, _Restart, _Supervision

STRATEGIES: list[Strategy] = ["one_for_one", "one_for_all", "rest_for_one"]
RESTART_TYPES: list[RestartType] = ["permanent", "transient", "temporary"]
OUTCOMES = ["succeeded", "failed", "cancelled"]


# -- the prescription -------------------------------------------------------------------------


def restarts_itself(restart: RestartType, outcome: str) -> bool:
    """OTP: permanent always; transient after an abnormal end only; temporary never."""
    return {"permanent": True, "transient": outcome == "failed", "temporary": False}[restart]


def prescribed(
    strategy: Strategy, types: list[RestartType], active: set[int], ended: int, outcome: str
) -> tuple[set[int], set[int]] | None:
    """Which siblings are stopped and which children started afresh; None: no restart."""
    if not restarts_itself(types[ended], outcome):
        return None
    siblings = {
        "one_for_one": set(),
        "one_for_all": active - {ended},
        "rest_for_one": {j for j in active if j > ended},
    }[strategy]
    return siblings, {ended} | {j for j in siblings if types[j] != "temporary"}


@dataclass
class Model:
    """What the supervisor should have done so far, per the prescription."""

    strategy: Strategy
    types: list[RestartType]
    max_restarts: int
    active: set[int] = field(default_factory=set)
    restarts: list[int] = field(default_factory=list)
    decisions: int = 0

    def __post_init__(self) -> None:
        self.active = set(range(len(self.types)))
        self.restarts = [0] * len(self.types)

    def ended(self, i: int, outcome: str) -> tuple[set[int], set[int]] | str:
        """Child ``i`` ended: the (stopped, started) sets, "remove" or "give_up"."""
        plan = prescribed(self.strategy, self.types, self.active, i, outcome)
        if plan is None:
            self.active.discard(i)
            return "remove"
        self.decisions += 1  # every restart is inside the window in these tests
        if self.decisions > self.max_restarts:
            return "give_up"
        stopped, started = plan
        self.active -= stopped - started
        for j in started:
            self.restarts[j] += 1
        return stopped, started


schedules = st.lists(st.tuples(st.integers(0, 100), st.sampled_from(OUTCOMES)), max_size=12)


# -- the pure decision logic ------------------------------------------------------------------


@given(
    strategy=st.sampled_from(STRATEGIES),
    types=st.lists(st.sampled_from(RESTART_TYPES), min_size=1, max_size=6),
    max_restarts=st.integers(0, 8),
    schedule=schedules,
)
def test_decisions_follow_the_prescription(
    strategy: Strategy,
    types: list[RestartType],
    max_restarts: int,
    schedule: list[tuple[int, str]],
) -> None:
    core = _Supervision(strategy, types, _Intensity(max_restarts, 1000.0, 0.0))
    model = Model(strategy, types, max_restarts)
    for pick, outcome in schedule:
        if not model.active:
            break
        i = sorted(model.active)[pick % len(model.active)]
        decision = core.exited(i, outcome, 0.0)  # type: ignore[arg-type]
        expected = model.ended(i, outcome)
        if isinstance(expected, str):
            assert decision == expected
            if expected == "give_up":
                return
        else:
            stopped, started = expected
            assert isinstance(decision, _Restart)
            # Siblings stop in reverse order; the children start afresh in order.
            assert decision.stop == tuple(sorted(stopped, reverse=True))
            assert decision.start == tuple(sorted(started))
        assert {j for j, a in enumerate(core.active) if a} == model.active
        assert core.restarts == model.restarts
        assert core.done() == (not model.active)


@given(
    max_restarts=st.integers(0, 5),
    within=st.integers(1, 100),
    backoff=st.sampled_from([0.0, 0.25, 1.0, 3.0]),
    gaps=st.lists(st.integers(0, 60), min_size=1, max_size=30),
)
def test_intensity_gives_up_at_the_first_restart_beyond_max_restarts_in_the_window(
    max_restarts: int, within: int, backoff: float, gaps: list[int]
) -> None:
    intensity = _Intensity(max_restarts, float(within), backoff)
    times: list[int] = []
    now = 0
    for gap in gaps:
        now += gap
        times.append(now)
        # OTP: a restart at `then` is in the window while now <= then + within.
        in_window = sum(1 for then in times if now <= then + within)
        delay = intensity.add(float(now))
        if in_window > max_restarts:
            assert delay is None
            return
        assert delay == min(float(within), backoff * 2 ** (in_window - 1))


def test_intensity_examples() -> None:
    # max_restarts=2: the third failure inside the window gives up.
    intensity = _Intensity(2, 5.0, 0.1)
    assert intensity.add(0.0) == 0.1
    assert intensity.add(1.0) == 0.2
    assert intensity.add(5.0) is None  # 0.0 is still in the window: 5.0 <= 0.0 + 5.0
    intensity = _Intensity(2, 5.0, 0.1)
    assert intensity.add(0.0) == 0.1
    assert intensity.add(1.0) == 0.2
    assert intensity.add(5.5) == 0.2  # 0.0 has left the window
    assert _Intensity(0, 5.0, 0.1).add(0.0) is None
    huge = _Intensity(2000, 1.0, 1.0)
    delays = [huge.add(0.0) for _ in range(1500)]
    assert delays[-1] == 1.0  # capped at `within`, never an overflow


# -- the same prescription, with threads ------------------------------------------------------


@pytest.mark.shake
@given(
    strategy=st.sampled_from(STRATEGIES),
    types=st.lists(st.sampled_from(RESTART_TYPES), min_size=1, max_size=4),
    max_restarts=st.integers(0, 4),
    schedule=st.lists(st.tuples(st.integers(0, 100), st.sampled_from(OUTCOMES)), max_size=6),
)
def test_supervisors_restart_what_the_strategy_prescribes_with_threads(
    strategy: Strategy,
    types: list[RestartType],
    max_restarts: int,
    schedule: list[tuple[int, str]],
) -> None:
    # A supervisor that gives up reports to threading.excepthook (a function-scoped
    # monkeypatch fixture would be shared by every example, so swap the hook here).
    reported: list[threading.ExceptHookArgs] = []
    saved, threading.excepthook = threading.excepthook, reported.append
    try:
        gave_up = run_schedule(strategy, types, max_restarts, schedule)
    finally:
        threading.excepthook = saved
    assert len(reported) == int(gave_up)


def run_schedule(
    strategy: Strategy,
    types: list[RestartType],
    max_restarts: int,
    schedule: list[tuple[int, str]],
) -> bool:
    """Run a supervisor of Harness children through ``schedule``; True if it gave up."""
    n = len(types)
    h = Harness(n)
    model = Model(strategy, types, max_restarts)
    sup = Supervisor(
        [ChildSpec(h.factory(i), restart=t) for i, t in enumerate(types)],
        strategy=strategy,
        max_restarts=max_restarts,
        within=3600,
        backoff=0,
        name="sup",
    )
    sup.start()
    try:
        return check_schedule(sup, h, model, schedule)
    finally:
        sup.cancel()  # a no-op unless a check failed halfway
        sup.join(WAIT)


def check_schedule(
    sup: Supervisor, h: Harness, model: Model, schedule: list[tuple[int, str]]
) -> bool:
    n = len(model.types)
    gens = [1] * n  # threads each child has had
    h.wait_logged(*(("start", i, 0) for i in range(n)))
    last: tuple[int, str] | None = None
    for pick, outcome in schedule:
        if not model.active:
            break
        i = sorted(model.active)[pick % len(model.active)]
        thread = h.newest(i)
        if outcome == "cancelled":
            thread.cancel()
        else:
            h.tell(i, "fail" if outcome == "failed" else "return")
        # Its end is reported to the supervisor before the thread ends: events stay in order.
        thread.join(WAIT)
        last = (i, outcome)
        expected = model.ended(i, outcome)
        if expected == "give_up":
            break
        if isinstance(expected, tuple):
            _, started = expected
            for j in started:
                h.wait_logged(("start", j, gens[j]))
                gens[j] += 1
    gave_up = model.decisions > model.max_restarts
    if gave_up:
        # It gave up: every other child was stopped, and it failed with the last error.
        sup.join(WAIT)
        assert sup.state is ThreadState.FAILED
        assert last is not None
        i, outcome = last
        error = sup.exception()
        if outcome == "failed":
            assert error is h.errors[i, gens[i] - 1]
            assert isinstance(error, Boom)
        else:
            assert isinstance(error, RuntimeError)
        final_active = model.active - {i}
    elif not model.active:
        sup.join(WAIT)  # nothing left to supervise: it ends by itself
        assert sup.state is ThreadState.SUCCEEDED
        final_active = set()
    else:
        sup.cancel()
        sup.join(WAIT)
        assert sup.state is ThreadState.CANCELLED
        final_active = model.active
    assert not sup.is_alive()
    assert h.generations() == gens
    # The children still running at the end were stopped in reverse order.
    stops = [e for e in h.log if e[0] == "end" and e[1] in final_active and e[2] == gens[e[1]] - 1]
    assert [e[1] for e in stops] == sorted(final_active, reverse=True)
    stats = sup.statistics()
    assert [c.restarts for c in stats.children] == model.restarts
    assert not any(c.alive for c in stats.children)
    return gave_up
