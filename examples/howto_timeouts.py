"""Timeouts and deadlines: for a group, a fan-out, one result, and a polling loop."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

import threadkit


def slow_lookup(key: str) -> str:
    """Stands for a call that takes far longer than anyone wants to wait."""
    threadkit.sleep(60)  # wakes up (by raising Cancelled) when the task is cancelled
    return key.upper()


def group_deadline() -> None:
    try:
        with threadkit.ThreadGroup(name="lookups", timeout=0.05) as g:
            g.spawn(slow_lookup, "a")
            g.spawn(slow_lookup, "b")
    except TimeoutError as exc:
        print(exc)


def fan_out_deadline() -> None:
    try:
        threadkit.fan_out_and_join(slow_lookup, ["a", "b", "c"], timeout=0.05, name="lookups")
    except TimeoutError as exc:
        print(exc)


def fan_out_partial_results() -> None:
    def lookup(key: str) -> str:
        if key == "slow":
            return slow_lookup(key)
        return key.upper()

    found = []
    try:
        for value in threadkit.fan_out(lookup, ["a", "b", "slow", "c"], timeout=0.25):
            found.append(value)
    except TimeoutError:
        print("timed out; found so far:", found)


def result_timeout() -> None:
    t = threadkit.ManagedThread(target=slow_lookup, args=("a",), name="lookup-a")
    t.start()
    try:
        t.result(timeout=0.01)
    except TimeoutError as exc:
        print(exc)
    print("still running:", t.is_alive())  # result(timeout=) does not stop the thread
    t.cancel("gave up")
    t.join()
    print("after cancel:", t.state.name)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False).

    Raises:
        threadkit.Cancelled: the current task was cancelled while waiting.
    """
    token = threadkit.current_token()
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if token.wait(min(interval, left)):  # True: cancelled, not timed out
            raise threadkit.Cancelled(token.reason)
    return True


def polling() -> None:
    ready = threading.Event()
    print("ready in time:", wait_until(ready.is_set, timeout=0.02))
    ready.set()
    print("ready in time:", wait_until(ready.is_set, timeout=0.02))


def nested_deadline() -> None:
    def crawl(site: str) -> list[str]:
        # The fan-out's token is a child of this task's, so the group's deadline reaches it.
        return threadkit.fan_out_and_join(slow_lookup, [f"{site}/{n}" for n in range(5)])

    try:
        with threadkit.ThreadGroup(name="crawl", timeout=0.05) as g:
            g.spawn(crawl, "example.org")
    except TimeoutError as exc:
        print(exc)


def abandoned_task() -> None:
    release = threading.Event()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # ResourceWarning is hidden by default
        try:
            with threadkit.ThreadGroup(name="stuck", timeout=0.05, grace=0.1) as g:
                # Event.wait() knows nothing of cancellation: this task cannot be stopped.
                stuck = g.spawn(release.wait, name="stuck-task")
        except TimeoutError as exc:
            print(exc)
    print(caught[0].category.__name__, caught[0].message)
    print("still running:", stuck.is_alive())
    release.set()
    stuck.join()


def main() -> None:
    group_deadline()
    fan_out_deadline()
    fan_out_partial_results()
    result_timeout()
    polling()
    nested_deadline()
    abandoned_task()


if __name__ == "__main__":
    main()
