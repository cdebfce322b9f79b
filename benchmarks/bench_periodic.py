"""PeriodicThread against the usual sleep loop: tick lateness (drift) and stop latency."""

from __future__ import annotations

import math
import statistics
import threading
import time

from benchmarks._util import Row, print_table
from threadkit import PeriodicThread

TICKS = 200
INTERVAL = 0.010
#: What each tick does: a little CPU work, the same for both loops.
WORK = 0.0003
ROUNDS = 3
STOPS = 40


def _work(calls: list[float]) -> None:
    calls.append(time.monotonic())
    end = time.perf_counter() + WORK
    while time.perf_counter() < end:
        pass


def _lateness(calls: list[float]) -> list[float]:
    """How late each call is behind its due time ``t0 + k * INTERVAL`` (t0: the first call).

    A call more than an interval late belongs to a later slot, as the schedule of a
    PeriodicThread says (the slots in between were overruns); for the sleep loop that never
    happens before its drift reaches a whole interval, which is the drift being measured.
    """
    t0 = calls[0]
    late = []
    slot = -1
    for at in calls:
        slot = max(slot + 1, math.floor((at - t0) / INTERVAL))
        late.append(at - (t0 + slot * INTERVAL))
    return late


def periodic_run() -> tuple[list[float], int]:
    calls: list[float] = []
    done = threading.Event()

    def tick() -> None:
        _work(calls)
        if len(calls) == TICKS:
            done.set()
            t.stop()

    t = PeriodicThread(INTERVAL, tick, name="bench-periodic")
    t.start()
    done.wait()
    t.join()
    return calls, t.result().overruns


def sleep_loop_run() -> list[float]:
    calls: list[float] = []

    def loop() -> None:
        while len(calls) < TICKS:
            _work(calls)
            time.sleep(INTERVAL)

    t = threading.Thread(target=loop, name="bench-sleep-loop")
    t.start()
    t.join()
    return calls


def _seconds_per_slot(calls: list[float]) -> list[float]:
    # The sleep loop has no slots of its own: tick k is simply its k-th call.
    t0 = calls[0]
    return [at - (t0 + k * INTERVAL) for k, at in enumerate(calls)]


def stop_latency(*, cancel: bool) -> list[float]:
    """Seconds from stop() (or cancel() + join()) to the thread's end, thread idle between ticks."""
    latencies = []
    for _ in range(STOPS):
        ticked = threading.Event()
        t = PeriodicThread(1.0, ticked.set, name="bench-stop")
        t.start()
        ticked.wait()
        threading.Event().wait(0.002)  # let it go back to waiting for its next tick
        began = time.perf_counter()
        if cancel:
            t.cancel()
            t.join()
        else:
            t.stop()
        latencies.append(time.perf_counter() - began)
    return latencies


def sleep_loop_stop_latency(interval: float = 0.1, repeat: int = 8) -> list[float]:
    """The same for ``while not stopping: work(); time.sleep(interval)`` with a flag."""
    latencies = []
    for _ in range(repeat):
        stopping = threading.Event()
        ticked = threading.Event()

        def loop(stopping: threading.Event = stopping, ticked: threading.Event = ticked) -> None:
            while not stopping.is_set():
                ticked.set()
                time.sleep(interval)

        t = threading.Thread(target=loop)
        t.start()
        ticked.wait()
        threading.Event().wait(interval * 0.37)  # somewhere inside the sleep
        began = time.perf_counter()
        stopping.set()
        t.join()
        latencies.append(time.perf_counter() - began)
    return latencies


def main() -> None:
    mean_late: dict[str, list[float]] = {"periodic": [], "sleep": []}
    final_late: dict[str, list[float]] = {"periodic": [], "sleep": []}
    worst_late: dict[str, list[float]] = {"periodic": [], "sleep": []}
    overruns = []
    # Interleave the cases across rounds so machine noise hits both alike.
    for _ in range(ROUNDS):
        calls, skipped = periodic_run()
        late = _lateness(calls)
        overruns.append(skipped)
        mean_late["periodic"].append(statistics.fmean(abs(x) for x in late))
        final_late["periodic"].append(late[-1])
        worst_late["periodic"].append(max(late))
        late = _seconds_per_slot(sleep_loop_run())
        mean_late["sleep"].append(statistics.fmean(abs(x) for x in late))
        final_late["sleep"].append(late[-1])
        worst_late["sleep"].append(max(late))
    med = statistics.median
    base_final = med(final_late["periodic"])
    base_mean = med(mean_late["periodic"])
    final_ok = "met" if base_final <= 0.002 else "MISSED"
    print_table(
        f"{TICKS} ticks at {INTERVAL * 1e3:g} ms, {WORK * 1e3:g} ms of work each: lateness of "
        f"tick k behind t0 + k*interval (median of {ROUNDS} rounds)",
        [
            Row("PeriodicThread, mean |lateness|", base_mean, 1.0),
            Row(
                "PeriodicThread, final tick",
                base_final,
                1.0,
                f"target <= 2 ms: {final_ok}; overruns per run: {overruns}",
            ),
            Row("PeriodicThread, worst tick", med(worst_late["periodic"])),
            Row(
                "sleep loop, mean |lateness|",
                med(mean_late["sleep"]),
                med(mean_late["sleep"]) / base_mean,
            ),
            Row(
                "sleep loop, final tick",
                med(final_late["sleep"]),
                med(final_late["sleep"]) / base_final,
                "drift accumulates: work + sleep overshoot every tick",
            ),
            Row("sleep loop, worst tick", med(worst_late["sleep"])),
        ],
        baseline="the PeriodicThread figure",
    )
    stop = stop_latency(cancel=False)
    cancel = stop_latency(cancel=True)
    sleeping = sleep_loop_stop_latency()
    stop_ok = "met" if med(stop) <= 0.005 else "MISSED"
    print_table(
        f"stop latency, thread idle between ticks (median of {STOPS} stops)",
        [
            Row("PeriodicThread.stop()", med(stop), 1.0, f"target <= 5 ms median: {stop_ok}"),
            Row("PeriodicThread stop(), p90", statistics.quantiles(stop, n=10)[-1]),
            Row("PeriodicThread cancel() + join()", med(cancel), med(cancel) / med(stop)),
            Row(
                "sleep loop (0.1 s interval) flag + join()",
                med(sleeping),
                med(sleeping) / med(stop),
                "waits out the sleep in progress",
            ),
        ],
        baseline="PeriodicThread.stop()",
    )


if __name__ == "__main__":
    main()
