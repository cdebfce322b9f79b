"""ThreadPoolExecutor code and its threadkit equivalent, side by side."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

import threadkit

DOCUMENTS = {
    "a.txt": "the quick brown fox",
    "b.txt": "jumps over",
    "c.txt": "",
    "d.txt": "the lazy dog",
    "e.txt": "",
}


def word_count(name: str) -> int:
    """Stands for real I/O: an empty document is an error."""
    text = DOCUMENTS[name]
    if not text:
        msg = f"{name} is empty"
        raise ValueError(msg)
    return len(text.split())


GOOD = ["a.txt", "b.txt", "d.txt"]
ALL = sorted(DOCUMENTS)


# -- submit and result ---------------------------------------------------------------------


def submit_with_executor() -> list[int]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        futures = [executor.submit(word_count, name) for name in GOOD]
        return [f.result() for f in futures]


def spawn_with_threadkit() -> list[int]:
    with threadkit.ThreadGroup(name="count") as g:
        threads = [g.spawn(word_count, name) for name in GOOD]
    return [t.result() for t in threads]


# -- map -------------------------------------------------------------------------------------


def map_with_executor() -> list[int]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        return list(executor.map(word_count, GOOD))


def map_with_threadkit() -> list[int]:
    return threadkit.fan_out_and_join(word_count, GOOD, max_workers=4)


# -- as_completed ----------------------------------------------------------------------------


def as_completed_with_executor() -> dict[str, int]:
    counts = {}
    with ThreadPoolExecutor(max_workers=4) as executor:
        futures = {executor.submit(word_count, name): name for name in GOOD}
        for future in as_completed(futures):
            counts[futures[future]] = future.result()
    return counts


def as_completed_with_threadkit() -> dict[str, int]:
    def count(name: str) -> tuple[str, int]:
        return name, word_count(name)

    counts = {}
    for name, n in threadkit.fan_out(count, GOOD, max_workers=4, ordered=False):
        counts[name] = n
    return counts


# -- errors ----------------------------------------------------------------------------------


def errors_with_executor() -> None:
    with ThreadPoolExecutor(max_workers=4) as executor:
        counts = []
        try:
            for n in executor.map(word_count, ALL):
                counts.append(n)
        except ValueError as exc:
            # Only the first failure, in input order; "e.txt is empty" is never seen, and
            # the result of d.txt, which came after c.txt, is lost with it.
            print("executor:", counts, repr(exc))


def errors_with_threadkit() -> None:
    try:
        threadkit.fan_out_and_join(word_count, ALL, fail_fast=False)
    except threadkit.FanOutError as exc:
        print("threadkit:", exc.results, exc.failed)
        for error in exc.exceptions:
            print("  ", repr(error), error.__notes__)


# -- cancelling the rest ---------------------------------------------------------------------


def first_result_with_executor() -> int:
    with ThreadPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(word_count, name) for name in GOOD * 100]
        first = futures[0].result()
        # Drops the futures that have not started; the running ones run to the end.
        executor.shutdown(cancel_futures=True)
    return first


def first_result_with_threadkit() -> int:
    for n in threadkit.fan_out(word_count, GOOD * 100, max_workers=2):
        # Leaving the loop cancels the rest, running tasks included, and joins the workers.
        return n
    msg = "no documents"
    raise LookupError(msg)


# -- a task that should stop when asked ------------------------------------------------------


def long_task_with_threadkit() -> str:
    started = threading.Event()

    def poll_forever() -> None:
        started.set()
        while True:
            threadkit.sleep(0.5)  # a future could not stop this loop; a token can

    with threadkit.ThreadGroup(name="poll") as g:
        poller = g.spawn(poll_forever)
        started.wait()
        g.cancel("no longer needed")
    return poller.state.name


def main() -> None:
    assert submit_with_executor() == spawn_with_threadkit() == [4, 2, 3]
    assert map_with_executor() == map_with_threadkit() == [4, 2, 3]
    assert as_completed_with_executor() == as_completed_with_threadkit()
    print("same results:", map_with_threadkit())
    errors_with_executor()
    errors_with_threadkit()
    assert first_result_with_executor() == first_result_with_threadkit() == 4
    print("long task:", long_task_with_threadkit())


if __name__ == "__main__":
    main()
