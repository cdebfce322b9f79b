"""Poll a sensor every 50 ms with a drift-free PeriodicThread; a failed reading is logged."""

from __future__ import annotations

import logging
import queue

import threadkit


class Sensor:
    """A stand-in for real hardware: reading n is 20.0 + n, and reading 1 fails."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> float:
        n = self.reads
        self.reads += 1
        if n == 1:
            raise ValueError("sensor offline")
        return 20.0 + n


def main() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sensor = Sensor()
    readings: queue.Queue[tuple[int, float]] = queue.Queue()

    def poll() -> None:
        n = sensor.reads
        readings.put((n, sensor.read()))

    # Tick k is due at start + k * 0.05 s however long poll() takes; on_error="log" (the
    # default) logs a failed tick and carries on.
    poller = threadkit.PeriodicThread(0.05, poll, name="poller")
    poller.start()
    for _ in range(5):
        n, value = readings.get(timeout=10)
        print(f"reading {n}: {value}")
    poller.stop()  # the normal end: waits for the tick in progress, then the thread returns
    stats = poller.result()  # the final statistics
    print(
        f"stopped after {stats.ticks} ticks, {stats.overruns} overruns, "
        f"{stats.errors} error: {stats.last_error}"
    )


if __name__ == "__main__":
    main()
