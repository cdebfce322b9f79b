"""fan_out / fan_out_and_join against ThreadPoolExecutor, joblib and plain threads."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from benchmarks._util import Row, print_table
from threadkit import fan_out, fan_out_and_join

# -- workloads ------------------------------------------------------------------------------


def _noop(x: int) -> int:
    return x


def _sleep_5ms(_: int) -> None:
    time.sleep(0.005)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- the contenders -------------------------------------------------------------------------


def _tpe_map(fn: Callable[[Any], object], items: Iterable[Any], workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, items))


def _joblib(fn: Callable[[Any], object], items: Iterable[Any], workers: int) -> None:
    from joblib import Parallel, delayed

    Parallel(n_jobs=workers, prefer="threads")(delayed(fn)(x) for x in items)


def _thread_per_item(fn: Callable[[Any], object], items: Iterable[Any]) -> None:
    threads = [threading.Thread(target=fn, args=(x,)) for x in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _rounds(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each case; the cases are interleaved so noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# -- the benchmarks -------------------------------------------------------------------------


def tiny_tasks() -> None:
    n, workers = 100_000, 8
    items = list(range(n))
    fast = _rounds(
        {
            "list comprehension": lambda: [_noop(x) for x in items],
            "fan_out_and_join": lambda: fan_out_and_join(_noop, items, max_workers=workers),
            "fan_out (ordered)": lambda: sum(1 for _ in fan_out(_noop, items, max_workers=workers)),
        },
        rounds=15,
    )
    # The slow ones, fewer rounds (seconds each).
    slow = _rounds(
        {
            "ThreadPoolExecutor(8).map": lambda: _tpe_map(_noop, items, workers),
            "joblib threads (8)": lambda: _joblib(_noop, items, workers),
        },
        rounds=3,
    )
    base = fast["fan_out_and_join"]
    floor = fast["list comprehension"]
    print_table(
        f"{n:,} no-op tasks, {workers} workers (median of 15 rounds; slow ones 3)",
        [
            Row("list comprehension (floor)", floor, floor / base),
            Row("fan_out_and_join", base, 1.0, f"{base / floor:.2f}x the floor (target <= 3x)"),
            Row("fan_out (ordered)", fast["fan_out (ordered)"], fast["fan_out (ordered)"] / base),
            Row(
                "ThreadPoolExecutor(8).map",
                slow["ThreadPoolExecutor(8).map"],
                slow["ThreadPoolExecutor(8).map"] / base,
                "target >= 30x",
            ),
            Row(
                "joblib threads (8)", slow["joblib threads (8)"], slow["joblib threads (8)"] / base
            ),
        ],
        baseline="fan_out_and_join",
    )


def sleeping_tasks() -> None:
    n = 1000
    items = range(n)
    for workers, rounds in ((50, 9), (200, 15)):
        ideal = -(-n // workers) * 0.005
        cases: dict[str, Callable[[], object]] = {
            "fan_out_and_join": lambda w=workers: fan_out_and_join(
                _sleep_5ms, items, max_workers=w
            ),
            "ThreadPoolExecutor.map": lambda w=workers: _tpe_map(_sleep_5ms, items, w),
            "joblib threads": lambda w=workers: _joblib(_sleep_5ms, items, w),
        }
        if workers == 200:
            cases["Thread per item (1000)"] = lambda: _thread_per_item(_sleep_5ms, items)
        med = _rounds(cases, rounds)
        tpe = med["ThreadPoolExecutor.map"]
        target = (
            "target <= 1.10x ideal"
            if workers == 50
            else f"target <= 0.75x ThreadPoolExecutor: {med['fan_out_and_join'] / tpe:.2f}x"
        )
        rows = [Row("ideal ceil(n/workers) * 5 ms", ideal, 1.0)]
        for name, seconds in med.items():
            note = target if name == "fan_out_and_join" else ""
            rows.append(Row(name, seconds, seconds / ideal, note))
        print_table(
            f"{n} tasks sleeping 5 ms, {workers} workers (median of {rounds} rounds)",
            rows,
            baseline="ideal",
        )
    start_cost = _thread_start_cost()
    print(
        f"  thread start+join on this machine: {start_cost * 1e6:.0f} us per thread, so 200 "
        f"threads cost {200 * start_cost * 1e3:.1f} ms of the {0.025 * 1e3:.0f} ms ideal"
    )


def _thread_start_cost() -> float:
    def once() -> float:
        threads = [threading.Thread(target=_noop, args=(0,)) for _ in range(200)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (time.perf_counter() - start) / 200

    return statistics.median(once() for _ in range(5))


def heavy_tail() -> None:
    rng = random.Random(3)
    durations = [0.05 if rng.random() < 0.03 else 0.001 for _ in range(600)]
    workers = 8
    med = _rounds(
        {
            "ThreadPoolExecutor(8).map": lambda: _tpe_map(_sleep, durations, workers),
            "fan_out_and_join": lambda: fan_out_and_join(_sleep, durations, max_workers=workers),
            "fan_out (unordered)": lambda: sum(
                1 for _ in fan_out(_sleep, durations, max_workers=workers, ordered=False)
            ),
            "joblib threads (8)": lambda: _joblib(_sleep, durations, workers),
        },
        rounds=7,
    )
    base = med["ThreadPoolExecutor(8).map"]
    ideal = sum(durations) / workers
    rows = [Row("ideal sum / workers", ideal, ideal / base)]
    for name, seconds in med.items():
        note = "target <= 1.05x" if name == "fan_out_and_join" else ""
        rows.append(Row(name, seconds, seconds / base, note))
    print_table(
        f"heavy tail: {len(durations)} tasks, 97% sleep 1 ms, 3% sleep 50 ms, {workers} workers "
        "(median of 7 rounds)",
        rows,
        baseline="ThreadPoolExecutor(8).map",
    )


def first_result_latency() -> None:
    """ordered=False: time from the fastest task's end to the caller receiving its result."""

    def task(seconds: float) -> float:
        time.sleep(seconds)
        return time.perf_counter()

    def fan() -> float:
        items = [0.05] * 7 + [0.002] + [0.05] * 8
        it = fan_out(task, items, max_workers=16, ordered=False)
        finished = next(it)
        received = time.perf_counter()
        it.close()
        return received - finished

    def tpe() -> float:
        items = [0.05] * 7 + [0.002] + [0.05] * 8
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(task, s) for s in items]
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            received = time.perf_counter()
            return received - next(iter(done)).result()

    fan_lat = statistics.median(fan() for _ in range(15))
    tpe_lat = statistics.median(tpe() for _ in range(15))
    print_table(
        "ordered=False: fastest task's end -> its result in the caller (median of 15)",
        [
            Row("fan_out(ordered=False)", fan_lat, None, "target <= 5 ms"),
            Row("ThreadPoolExecutor + wait(FIRST_COMPLETED)", tpe_lat),
        ],
    )


_MEMORY_SCRIPT = """
import resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import threadkit

def noop(x):
    return x

n = {n}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if "{how}" == "fan_out":
    for _ in threadkit.fan_out(noop, iter(range(n)), max_workers=8):
        pass
else:
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(noop, iter(range(n))):
            pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) * 1024, time.perf_counter() - start)
"""


def memory() -> None:
    n = 1_000_000
    rows = []
    for how in ("fan_out", "ThreadPoolExecutor.map"):
        script = textwrap.dedent(_MEMORY_SCRIPT.format(n=n, how=how))
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        grown, seconds = int(out[0]), float(out[1])
        note = f"{grown / 2**20:.1f} MiB above baseline"
        if how == "fan_out":
            note += " (target <= 30 MB)"
        rows.append(Row(f"{how}, results discarded", seconds, None, note))
    print_table(f"{n:,} items streamed, 8 workers: peak RSS growth (subprocess, ru_maxrss)", rows)


def main() -> None:
    tiny_tasks()
    sleeping_tasks()
    heavy_tail()
    first_result_latency()
    memory()


if __name__ == "__main__":
    main()
