"""Shared fixtures: every test must leave no thread behind; optional race shaking."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Thread timing makes per-example deadlines meaningless; examples are bounded by the pytest
# timeout instead. THREADKIT_STRESS=1 (make stress) runs many more examples.
settings.register_profile(
    "threadkit",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(
        os.environ.get("THREADKIT_EXAMPLES", "1000" if os.environ.get("THREADKIT_STRESS") else "60")
    ),
    print_blob=True,
)
settings.load_profile("threadkit")

#: How long a thread that is already on its way out may take to end before it is a leak.
LEAK_GRACE = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shake",
        action="store_true",
        help="run with sys.setswitchinterval(1e-6) so rare thread interleavings happen constantly",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--shake"):
        sys.setswitchinterval(1e-6)


@pytest.fixture(autouse=True)
def no_thread_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves a thread running that was not running before it."""
    before = set(threading.enumerate())
    yield
    if request.node.get_closest_marker("allow_threads"):
        return
    leaked = [t for t in threading.enumerate() if t not in before]
    for thread in leaked:
        thread.join(LEAK_GRACE)
    alive = [t for t in leaked if t.is_alive()]
    if alive:
        names = ", ".join(repr(t) for t in alive)
        pytest.fail(f"test left {len(alive)} thread(s) running: {names}", pytrace=False)
