"""A supervision tree: a connection and its consumer under rest_for_one, beside a heartbeat."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import threadkit

# Per generation n: the connection is up; the first consumer started; the second one did.
connected = [threading.Event() for _ in range(4)]
first_consumer, second_consumer = threading.Event(), threading.Event()


def connection(n: int) -> None:
    print(f"connection {n}: open", flush=True)
    connected[n].set()
    try:
        if n == 1:
            first_consumer.wait()
            raise ConnectionError("connection 1 lost")
        threadkit.sleep(3600)  # serve until the supervisor stops us (sleep raises Cancelled)
    finally:
        print(f"connection {n}: closed", flush=True)


def consumer(n: int) -> None:
    connected[n].wait()
    print(f"consumer {n}: started", flush=True)
    (first_consumer if n == 1 else second_consumer).set()
    try:
        threadkit.sleep(3600)
    finally:
        print(f"consumer {n}: stopped", flush=True)


def numbered(target: Callable[[int], None]) -> Callable[[], threadkit.ManagedThread[None]]:
    """A factory: each call makes a new, unstarted thread running target(1), target(2), ..."""
    numbers = itertools.count(1)

    def factory() -> threadkit.ManagedThread[None]:
        n = next(numbers)
        return threadkit.ManagedThread(target=target, args=(n,), name=f"{target.__name__}-{n}")

    return factory


pipelines: list[threadkit.Supervisor] = []


def pipeline() -> threadkit.Supervisor:
    # The consumer needs the connection: rest_for_one restarts the consumer (the children
    # after the connection) whenever the connection fails, stopping it first.
    supervisor = threadkit.Supervisor(
        [
            threadkit.ChildSpec(numbered(connection), name="connection"),
            threadkit.ChildSpec(numbered(consumer), name="consumer"),
        ],
        strategy="rest_for_one",
        max_restarts=3,
        within=10.0,
        backoff=0.05,
        name="pipeline",
    )
    pipelines.append(supervisor)
    return supervisor


def main() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    beats: list[int] = []
    root = threadkit.Supervisor(
        [
            pipeline,  # a supervisor supervising a supervisor
            threadkit.ChildSpec(
                lambda: threadkit.PeriodicThread(0.1, beats.append, 1, name="heartbeat"),
                name="heartbeat",
            ),
        ],
        strategy="one_for_one",
        name="root",
    )
    root.start()
    second_consumer.wait(timeout=10)
    root.cancel()  # stops the children in reverse order: the heartbeat, then the pipeline
    root.join()
    print(f"root: {root.state.name.lower()}")
    for child in pipelines[0].statistics().children:
        print(f"{child.name}: {child.restarts} restart(s), last error {child.last_error!r}")


if __name__ == "__main__":
    main()
