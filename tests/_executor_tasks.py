"""Tasks for test_executor.py, in a module of their own so that worker processes import them.

A ProcessPoolExecutor (spawned workers) and Dask workers unpickle these functions by
reference, by importing this module: the workers inherit ``sys.path``, which includes
``tests/`` when pytest imports the test modules.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: How long a task waits for something that happens at once unless the code is broken.
SAFETY = 10.0


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        msg = f"bad item {x}"
        raise ValueError(msg)
    return x


def key_error_every_ten(x: int) -> int:
    if x % 10 == 3:
        raise KeyError(x)
    return x


def exit_on_two(x: int) -> int:
    if x == 2:
        raise SystemExit(3)
    return x


def process_id(_: object) -> int:
    return os.getpid()


def hold(gate: str, x: int) -> int:
    """Return ``x`` once the file ``gate`` exists (the test creates it to release the task).

    Raises:
        TimeoutError: the gate did not open within SAFETY seconds.
    """
    path = Path(gate)
    deadline = time.monotonic() + SAFETY
    while not path.exists():
        if time.monotonic() > deadline:
            msg = f"gate {gate} never opened"
            raise TimeoutError(msg)
        time.sleep(0.002)
    return x


def hold_from(start: int, gate: str, x: int) -> int:
    """Return ``x`` at once if ``x < start``, else as :func:`hold` does."""
    return x if x < start else hold(gate, x)


def spin(n: int) -> int:
    """A CPU-bound task: a pure-Python loop of ``n`` steps."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def mark_and_hold(started: str, gate: str, x: int) -> int:
    """Create the file ``started/x``, then wait for the gate as :func:`hold` does."""
    Path(started, str(x)).touch()
    return hold(gate, x)
