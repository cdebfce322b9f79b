"""The same fan_out_and_join call on a local process pool, then on a Dask cluster.

Run it as ``python examples/cluster.py``. With THREADKIT_DASK_ADDRESS set to a scheduler's
address (``tcp://scheduler:8786``) the second run uses that cluster; unset, the example
starts a local cluster of two worker processes. Without Dask installed
(``pip install 'threadkit[dask]'``), it runs on the process pool only.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import time
from collections.abc import Generator
from concurrent.futures import Executor, ProcessPoolExecutor

import threadkit


def count_primes(limit: int) -> int:
    """CPU-bound work in pure Python: how many primes are below ``limit``."""
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


def run(where: str, executor: Executor, limits: list[int]) -> list[int]:
    """The part that does not change from one engine to the other."""
    start = time.perf_counter()
    counts = threadkit.fan_out_and_join(
        count_primes, limits, executor=executor, timeout=600, name=where
    )
    print(f"{where}: {len(counts)} tasks in {time.perf_counter() - start:.2f} s")
    return counts


@contextlib.contextmanager
def dask_executor() -> Generator[Executor | None, None, None]:
    """A Dask cluster's executor: the one at THREADKIT_DASK_ADDRESS, or a local one."""
    try:
        from distributed import Client, LocalCluster  # noqa: PLC0415  # an optional extra
    except ImportError:
        print("dask: not installed (pip install 'threadkit[dask]'), skipped")
        yield None
        return
    address = os.environ.get("THREADKIT_DASK_ADDRESS")
    if address:
        print(f"dask: using the cluster at {address}")
        with Client(address) as client:
            yield client.get_executor()
        return
    print("dask: THREADKIT_DASK_ADDRESS is not set: starting a local cluster")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # No dashboard, and the scheduler's HTTP endpoint on any free port, not 8787.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client.get_executor()


def main() -> None:
    parser = argparse.ArgumentParser(description="fan_out_and_join on a process pool and on Dask")
    parser.add_argument("--tasks", type=int, default=40, help="number of tasks (default 40)")
    parser.add_argument("--limit", type=int, default=30_000, help="size of a task (30000)")
    args = parser.parse_args()
    limits = [args.limit + i for i in range(args.tasks)]

    # "spawn" starts each worker from a fresh interpreter: forking a process that already
    # runs threads (threadkit's, a Dask client's) can deadlock the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        local = run("process pool", pool, limits)

    with dask_executor() as executor:
        if executor is not None:
            remote = run("dask", executor, limits)
            print(f"same results: {remote == local}")


if __name__ == "__main__":
    main()
