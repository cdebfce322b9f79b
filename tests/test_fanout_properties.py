"""Hypothesis properties of fan_out and fan_out_and_join over items, delays and failures."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

import threadkit
from threadkit import FanOutError, fan_out, fan_out_and_join

pytestmark = pytest.mark.shake


@dataclass(frozen=True)
class Case:
    """Item i sleeps delays[i] seconds (0 or a fraction of a millisecond) and fails if fails[i]."""

    delays: list[float]
    fails: list[bool]
    workers: int


cases = st.integers(min_value=0, max_value=40).flatmap(
    lambda n: st.builds(
        Case,
        delays=st.lists(st.sampled_from([0.0, 0.0, 0.0, 1e-4, 5e-4]), min_size=n, max_size=n),
        fails=st.lists(st.booleans(), min_size=n, max_size=n),
        workers=st.integers(min_value=1, max_value=6),
    )
)


@dataclass
class Recorder:
    """Runs the tasks of a case and records, in one sequence, when each started and failed."""

    case: Case
    # Reentrant: the on_cancel callback runs at once when registered on a cancelled token.
    lock: threading.RLock = field(default_factory=threading.RLock)
    events: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])
    watching: bool = False

    def task(self, i: int) -> int:
        with self.lock:
            if not self.watching:
                # Record the moment the call's token is cancelled, in the same sequence.
                self.watching = True
                threadkit.current_token().on_cancel(self._cancelled)
            self.events.append(("start", i))
        if self.case.delays[i]:
            time.sleep(self.case.delays[i])  # only to vary the interleavings
        if self.case.fails[i]:
            with self.lock:
                self.events.append(("fail", i))
            raise ValueError(i)
        return i * 10

    def _cancelled(self) -> None:
        with self.lock:
            self.events.append(("cancelled", -1))

    def started(self) -> list[int]:
        return [i for kind, i in self.events if kind == "start"]


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _check_error(error: FanOutError, case: Case, recorder: Recorder) -> None:
    # Every failure reported is a real one, with its note; every result kept is right.
    for index, exc in error.failed.items():
        assert case.fails[index]
        assert exc.args == (index,)
        assert exc.__notes__ == [f"fan-out item {index}: {index}"]
    assert list(error.exceptions) == list(error.failed.values())
    assert sorted(error.failed) == list(error.failed)
    started = set(recorder.started())
    assert set(error.failed) <= started


@given(cases, st.booleans())
def test_join_returns_every_result_once_in_order(case: Case, ordered: bool) -> None:
    before = _threads()
    n = len(case.delays)
    recorder = Recorder(case)
    error: FanOutError | None = None
    results: list[int] = []
    try:
        results = fan_out_and_join(
            recorder.task, range(n), max_workers=case.workers, ordered=ordered, fail_fast=False
        )
    except FanOutError as exc:
        error = exc
    if error is not None:
        assert any(case.fails)
        assert sorted(error.failed) == [i for i in range(n) if case.fails[i]]
        assert error.results == [None if case.fails[i] else i * 10 for i in range(n)]
        _check_error(error, case, recorder)
    else:
        assert not any(case.fails)
        expected = [i * 10 for i in range(n)]
        assert results == expected if ordered else sorted(results) == expected
    # fail_fast=False: every item ran exactly once.
    assert sorted(recorder.started()) == list(range(n))
    assert _threads() == before  # structured: nothing of the call is left running


@given(cases, st.booleans())
def test_stream_yields_every_success_once(case: Case, ordered: bool) -> None:
    before = _threads()
    n = len(case.delays)
    recorder = Recorder(case)
    got: list[int] = []
    error: FanOutError | None = None
    try:
        for value in fan_out(
            recorder.task,
            iter(range(n)),
            max_workers=case.workers,
            ordered=ordered,
            fail_fast=False,
        ):
            got.append(value)
    except FanOutError as exc:
        error = exc
    if error is not None:
        assert sorted(error.failed) == [i for i in range(n) if case.fails[i]]
        assert error.results == []
        _check_error(error, case, recorder)
    else:
        assert not any(case.fails)
    expected = [i * 10 for i in range(n) if not case.fails[i]]
    assert got == expected if ordered else sorted(got) == expected
    assert sorted(recorder.started()) == list(range(n))
    assert _threads() == before


@given(cases, st.booleans())
def test_fail_fast_starts_nothing_after_a_failure_beyond_the_tasks_in_flight(
    case: Case, stream: bool
) -> None:
    before = _threads()
    n = len(case.delays)
    recorder = Recorder(case)
    got: list[int] = []
    error: FanOutError | None = None
    try:
        if stream:
            got.extend(fan_out(recorder.task, range(n), max_workers=case.workers))
        else:
            got = fan_out_and_join(recorder.task, range(n), max_workers=case.workers)
    except FanOutError as exc:
        error = exc
    if error is not None:
        assert any(case.fails)
        _check_error(error, case, recorder)
        if not stream:
            # Results that were kept are right; the slot of every failure is empty.
            for i, value in enumerate(error.results):
                assert value is None or value == i * 10
            assert all(error.results[i] is None for i in error.failed)
            assert len(error.results) <= n
        # The failure is observed when the failing worker cancels the call's token.
        observed = next(k for k, e in enumerate(recorder.events) if e[0] == "cancelled")
        late_starts = [e for e in recorder.events[observed:] if e[0] == "start"]
        # Each other worker may have been about to start one task when that happened.
        assert len(late_starts) <= case.workers - 1
    else:
        assert not any(case.fails)
        assert got == [i * 10 for i in range(n)]
    # No item ran twice.
    started = recorder.started()
    assert len(started) == len(set(started))
    assert _threads() == before


@given(
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=5),
    st.booleans(),
)
def test_leaving_an_infinite_stream_early_leaves_nothing_behind(
    take: int, workers: int, ordered: bool
) -> None:
    before = _threads()
    it = fan_out(lambda x: x, itertools.count(), max_workers=workers, ordered=ordered)
    got = [next(it) for _ in range(take)]
    it.close()
    if ordered:
        assert got == list(range(take))
    else:
        assert len(set(got)) == take
    assert _threads() == before
