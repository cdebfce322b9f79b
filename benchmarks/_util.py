"""Timing helpers shared by the benchmarks: medians of repeated runs and ratio tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def median_seconds(fn: Callable[[], object], *, repeat: int = 7, warmup: int = 1) -> float:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; return the median wall time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Row:
    """One line of a results table: a case, its median time, and its ratio to the baseline."""

    case: str
    seconds: float
    ratio: float | None = None
    note: str = ""


def print_table(title: str, rows: Sequence[Row], *, baseline: str = "") -> None:
    """Print ``rows`` as an aligned table under ``title``."""
    print(f"\n## {title}" + (f"  (ratio = time / {baseline})" if baseline else ""))
    width = max(len(r.case) for r in rows)
    for r in rows:
        ratio = f"{r.ratio:8.3f}x" if r.ratio is not None else " " * 9
        print(f"  {r.case:<{width}}  {_fmt(r.seconds):>10}  {ratio}  {r.note}")


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
