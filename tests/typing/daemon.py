"""Type-checked by mypy and pyright (never run): daemon mode gets precise types without casts."""

from __future__ import annotations

import signal
from typing import Any, assert_type

import threadkit


def f(a: int, b: str) -> float:
    return a * len(b) / 2


def daemons() -> None:
    t = threadkit.spawn_daemon(f, 1, "x", name="d", grace=1.0)
    assert_type(t, threadkit.ManagedThread[float])
    threadkit.spawn_daemon(f, 1, 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(threadkit.shutdown_daemons(timeout=1.0), list[threadkit.ManagedThread[Any]])
    restore = threadkit.handle_signals(signal.SIGTERM)
    restore()


def periodic() -> None:
    p = threadkit.PeriodicThread(0.5, f, 1, "x", on_error="stop")
    threadkit.PeriodicThread(0.5, f, "x", 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    threadkit.PeriodicThread(0.5, f, 1, "x", on_error="ignore")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    threadkit.PeriodicThread(0.5, print, on_error=lambda exc: print(exc.args))
    assert_type(p.statistics(), threadkit.PeriodicStatistics)
    assert_type(p.result(), threadkit.PeriodicStatistics)
    assert_type(p.statistics().last_error, Exception | None)
    p.stop(timeout=1.0)


def supervision() -> None:
    sup = threadkit.Supervisor(
        [
            lambda: threadkit.ManagedThread(target=f, args=(1, "x")),
            threadkit.ChildSpec(lambda: threadkit.PeriodicThread(1.0, print), restart="transient"),
            lambda: threadkit.Supervisor([]),
        ],
        strategy="rest_for_one",
        max_restarts=2,
        within=5.0,
        backoff=0.1,
    )
    threadkit.Supervisor([], strategy="one_for_none")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    threadkit.ChildSpec(threadkit.ManagedThread, restart="sometimes")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(sup.result(), threadkit.SupervisorStatistics)
    assert_type(sup.statistics().children[0], threadkit.ChildStatistics)
    assert_type(sup.statistics().children[0].restarts, int)
