"""Workers blocked in ``queue.get()``, woken by a sentinel when their group is cancelled."""

from __future__ import annotations

import queue
import threading

import threadkit

#: Put on the queue to wake one blocked worker; never a real job.
WAKE_UP = object()


def consume(jobs: queue.Queue[object], processed: list[object], lock: threading.Lock) -> None:
    """Process jobs until the task is cancelled; most of the time it is blocked in get()."""
    # Each worker registers its own callback, so a cancelled group puts one sentinel per
    # worker and every blocked get() returns.
    unregister = threadkit.current_token().on_cancel(lambda: jobs.put(WAKE_UP))
    try:
        while True:
            job = jobs.get()
            if job is WAKE_UP:
                jobs.task_done()
                threadkit.check_cancelled()  # raises Cancelled
                continue  # not cancelled: a sentinel left over from another worker
            with lock:
                processed.append(job)
            jobs.task_done()
    finally:
        unregister()


def produce(jobs: queue.Queue[object]) -> None:
    """Queue three jobs, wait until they are done, then fail as a real feed sometimes does."""
    for n in range(3):
        jobs.put(f"job {n}")
    jobs.join()
    raise ConnectionError("feed lost")


def main() -> None:
    jobs: queue.Queue[object] = queue.Queue()
    processed: list[object] = []
    lock = threading.Lock()
    try:
        with threadkit.ThreadGroup(name="pipeline") as g:
            for _ in range(3):
                g.spawn(consume, jobs, processed, lock)
            g.spawn(produce, jobs)
    except* ConnectionError as group:
        # The producer failed, the group cancelled the consumers, their sentinels woke them,
        # and the block was left. Without the sentinels it would wait for them forever.
        print("pipeline failed:", repr(group.exceptions[0]))
    print("processed:", processed)


if __name__ == "__main__":
    main()
