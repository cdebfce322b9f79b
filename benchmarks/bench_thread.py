"""Cost of ManagedThread start+join against plain threading.Thread start+join."""

from __future__ import annotations

import threading

from benchmarks._util import Row, median_seconds, print_table
from threadkit import ManagedThread

N = 500


def _noop() -> None:
    pass


def plain_threads() -> None:
    for _ in range(N):
        t = threading.Thread(target=_noop)
        t.start()
        t.join()


def managed_threads() -> None:
    for _ in range(N):
        t: ManagedThread[None] = ManagedThread(target=_noop)
        t.start()
        t.join()


def managed_threads_result() -> None:
    for _ in range(N):
        t: ManagedThread[None] = ManagedThread(target=_noop)
        t.start()
        t.result()


def main() -> None:
    # Interleave the cases across rounds so machine noise hits all of them alike.
    rounds = 7
    results: dict[str, list[float]] = {"plain": [], "managed": [], "managed+result": []}
    for _ in range(rounds):
        results["plain"].append(median_seconds(plain_threads, repeat=1))
        results["managed"].append(median_seconds(managed_threads, repeat=1))
        results["managed+result"].append(median_seconds(managed_threads_result, repeat=1))
    med = {k: sorted(v)[len(v) // 2] / N for k, v in results.items()}
    base = med["plain"]
    print_table(
        f"thread start+join, per thread (median of {rounds} rounds of {N})",
        [
            Row("threading.Thread", base, 1.0),
            Row("ManagedThread", med["managed"], med["managed"] / base, "target <= 1.3x"),
            Row("ManagedThread + result()", med["managed+result"], med["managed+result"] / base),
        ],
        baseline="threading.Thread",
    )


if __name__ == "__main__":
    main()
