"""fan_out_and_join on threads, a process pool and a Dask cluster: speedup and cost per task."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Generator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from benchmarks._util import Row, print_table
from threadkit import fan_out_and_join

#: Worker processes of the process pool and of the Dask cluster.
WORKERS = 2

# -- workloads (module level: worker processes import them from here) -----------------------


def spin(n: int) -> int:
    """A CPU-bound task: a pure-Python loop of ``n`` steps (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def noop(x: int) -> int:
    return x


def _steps_for(seconds: float) -> int:
    """How many steps of :func:`spin` take ``seconds`` on this machine (medians of 5)."""
    n = 10_000
    for _ in range(3):  # the time per step settles as n grows to the target
        took = statistics.median(_timed(spin, n) for _ in range(5))
        n = max(1, int(n * seconds / took))
    return n


def _timed(fn: Callable[[int], object], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def _rounds(cases: dict[str, Callable[[int], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each case, interleaved; each call gets the round number."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn(-1)  # warm-up
    for r in range(rounds):
        for name, fn in cases.items():
            times[name].append(_timed(fn, r))
    return {name: statistics.median(t) for name, t in times.items()}


# -- the engines ----------------------------------------------------------------------------


@contextlib.contextmanager
def _process_pool() -> Generator[ProcessPoolExecutor, None, None]:
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(noop, range(4 * WORKERS)))  # start the processes before timing
        yield pool


@contextlib.contextmanager
def _dask() -> Generator[Any, None, None]:
    """A Client of a local cluster of WORKERS single-threaded processes, or None."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        yield None
        return
    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.submit(noop, 0).result()
        yield client


def _items(steps: int, tasks: int, round_number: int) -> list[int]:
    # Distinct items in every round: nothing can be served from a cache.
    return [steps + tasks * (round_number + 1) + i for i in range(tasks)]


# -- the benchmarks -------------------------------------------------------------------------


def cpu_bound(
    pool: Executor, client: Any, *, tasks: int, seconds: float, rounds: int, dask_in_flight: int = 0
) -> None:
    """The same fan_out_and_join call on each engine, against a plain loop.

    ``dask_in_flight``: also run Dask with that many futures in flight (``max_workers``).
    """
    steps = _steps_for(seconds)
    cases: dict[str, Callable[[int], object]] = {
        "sequential (list comprehension)": lambda r: [spin(x) for x in _items(steps, tasks, r)],
        "threads (fan_out_and_join default)": lambda r: fan_out_and_join(
            spin, _items(steps, tasks, r)
        ),
        f"ProcessPoolExecutor({WORKERS})": lambda r: fan_out_and_join(
            spin, _items(steps, tasks, r), executor=pool
        ),
    }
    if client is not None:
        # pure=False: no hashing of every call, and no result reused from an earlier round.
        dask = client.get_executor(pure=False)
        cases[f"Dask LocalCluster ({WORKERS} processes)"] = lambda r: fan_out_and_join(
            spin, _items(steps, tasks, r), executor=dask
        )
        if dask_in_flight:
            cases[f"  same, max_workers={dask_in_flight}"] = lambda r: fan_out_and_join(
                spin, _items(steps, tasks, r), executor=dask, max_workers=dask_in_flight
            )
    med = _rounds(cases, rounds=rounds)
    base = med["sequential (list comprehension)"]
    counter = getattr(os, "process_cpu_count", os.cpu_count)
    cores = min(WORKERS, counter() or 1)
    rows = [Row(name, took, took / base) for name, took in med.items()]
    rows.append(Row(f"floor: sequential / {cores} cores", base / cores, 1 / cores))
    print_table(
        f"{tasks} CPU-bound tasks of {base / tasks * 1e3:.1f} ms (pure Python), {counter()} CPUs "
        f"(median of {rounds} rounds)",
        rows,
        baseline="sequential",
    )
    if client is None:
        print("  Dask: not installed (pip install 'threadkit[dask]'), skipped")


def per_task_overhead(pool: Executor, client: Any) -> None:
    """Seconds per no-op task through each path, against the engine's own map."""

    def per_item(fn: Callable[[int], object], n: int, rounds: int) -> float:
        return statistics.median(_timed(fn, n) / n for _ in range(rounds))

    rows = [
        Row("plain loop, per item", per_item(lambda n: [noop(x) for x in range(n)], 100_000, 5)),
        Row(
            "fan_out_and_join, threads",
            per_item(lambda n: fan_out_and_join(noop, range(n)), 100_000, 5),
        ),
        Row(
            f"fan_out_and_join, ProcessPoolExecutor({WORKERS})",
            per_item(lambda n: fan_out_and_join(noop, range(n), executor=pool), 2000, 3),
        ),
        Row(
            f"  ProcessPoolExecutor({WORKERS}).map, same pool",
            per_item(lambda n: list(pool.map(noop, range(n))), 2000, 3),
        ),
    ]
    if client is not None:
        dask = client.get_executor(pure=False)
        rows.append(
            Row(
                f"fan_out_and_join, Dask ({WORKERS} processes)",
                per_item(lambda n: fan_out_and_join(noop, range(n), executor=dask), 200, 3),
                note="default in flight: bound by the round trip",
            )
        )
        rows.append(
            Row(
                "  same, every item in flight (max_workers=n)",
                per_item(
                    lambda n: fan_out_and_join(noop, range(n), executor=dask, max_workers=n),
                    200,
                    3,
                ),
            )
        )
        rows.append(
            Row(
                "  Client.map + gather, same cluster",
                per_item(lambda n: client.gather(client.map(noop, range(n), pure=False)), 200, 3),
            )
        )
    print_table("per-task overhead: no-op tasks, wall time per item (median)", rows)


def main() -> None:
    with _process_pool() as pool, _dask() as client:
        cpu_bound(pool, client, tasks=200, seconds=0.005, rounds=5, dask_in_flight=16)
        # Where the engines' cost per task stops mattering.
        cpu_bound(pool, client, tasks=20, seconds=0.05, rounds=3)
        per_task_overhead(pool, client)


if __name__ == "__main__":
    main()
