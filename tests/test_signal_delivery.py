"""Ctrl-C reaches the main thread's waits even when the kernel hands SIGINT to another thread.

A process-directed signal goes to any thread that does not block it. When a worker thread
takes SIGINT, CPython's C handler only records it: the main thread, asleep on a lock, is not
woken, and the ``KeyboardInterrupt`` is raised only when it next runs Python code. So every
wait of the main thread that Ctrl-C must end waits in short slices (as does the stdlib's
``Thread.join`` on Windows). These tests deliver SIGINT to a helper thread (``pthread_kill``)
while the main thread is blocked on a lock in each such wait; a watchdog ends the wait
after :data:`WAIT` seconds if the interrupt never arrives, and the test then fails.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import pytest

import threadkit
from threadkit import CancelToken, ManagedThread, ThreadGroup

pytestmark = [
    pytest.mark.shake,
    pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill"),
    pytest.mark.skipif(
        threading.current_thread() is not threading.main_thread(),
        reason="signals are handled in the main thread",
    ),
]

#: How long the watchdog lets a wait go on before it ends it: a failure, not a timing.
WAIT = 20.0


def _blocks(fn: object) -> bool:
    """Whether ``fn`` (a C function the profiler saw called) is one a wait blocks in."""
    name = getattr(fn, "__name__", None)
    if name == "acquire":
        return True
    # fan_out's caller sleeps on a queue.SimpleQueue, whose get() blocks in C.
    return name == "get" and isinstance(getattr(fn, "__self__", None), queue.SimpleQueue)


class MainBlocked:
    """Set while the main thread is inside a blocking C call (published by a profile hook)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def _hook(self, frame: FrameType, event: str, arg: object) -> None:
        if not _blocks(arg):
            return
        if event == "c_call":
            self.event.set()
        elif event in ("c_return", "c_exception"):
            self.event.clear()

    def arm(self) -> None:
        """Start watching (in the main thread): the next blocking call sets the event."""
        sys.setprofile(self._hook)

    def __enter__(self) -> MainBlocked:
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.setprofile(None)


def interrupted_via_another_thread(
    body: Callable[[Callable[[], None]], object], release: Callable[[], object]
) -> bool:
    """Run ``body(arm)`` in the main thread; SIGINT goes to a helper thread once it blocks.

    ``body`` calls ``arm()`` just before the wait under test: the next blocking call of
    the main thread sends the signal. ``body`` must raise the KeyboardInterrupt. Returns whether
    it did so by itself; ``False`` means the watchdog had to call ``release`` to end the wait
    after WAIT seconds.
    """
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fired = threading.Event()
    blocked = MainBlocked()
    done = threading.Event()

    def thief() -> None:
        # The signal lands in this thread: its C handler runs here, and only records it.
        if blocked.event.wait(WAIT) and not done.is_set():
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    def watchdog() -> None:
        if not done.wait(WAIT):
            fired.set()
            release()

    threads = [threading.Thread(target=thief), threading.Thread(target=watchdog)]
    for t in threads:
        t.start()
    try:
        with blocked, pytest.raises(KeyboardInterrupt):
            body(blocked.arm)
    finally:
        done.set()
        blocked.event.set()
        for t in threads:
            t.join(WAIT)
    return not fired.is_set()


def _until_cancelled_or(release: threading.Event) -> None:
    """A task that ends when cancelled, or when the watchdog releases it."""
    token = threadkit.current_token()
    unregister = token.on_cancel(release.set)
    try:
        release.wait()
    finally:
        unregister()
    token.raise_if_cancelled()


def test_the_exit_of_a_thread_group() -> None:
    release = threading.Event()

    def body(arm: Callable[[], None]) -> None:
        with ThreadGroup(name="stolen") as g:
            g.spawn(_until_cancelled_or, release)
            arm()  # the group waits for its task as the block ends

    assert interrupted_via_another_thread(body, release.set), "the KeyboardInterrupt never came"


@pytest.mark.parametrize("api", ["fan_out_and_join", "fan_out"])
def test_a_fan_out(api: str) -> None:
    release = threading.Event()

    def task(i: int) -> None:
        if i:  # item 0 ends at once; the call then waits for item 1
            _until_cancelled_or(release)

    def body(arm: Callable[[], None]) -> None:
        if api == "fan_out_and_join":
            # on_progress runs in the calling thread, after item 0 is collected.
            threadkit.fan_out_and_join(task, range(2), max_workers=2, on_progress=lambda *_: arm())
        else:
            for _ in threadkit.fan_out(task, range(2), max_workers=2):
                arm()

    assert interrupted_via_another_thread(body, release.set), "the KeyboardInterrupt never came"


@pytest.mark.parametrize("method", ["result", "exception"])
def test_waiting_for_a_managed_thread(method: str) -> None:
    release = threading.Event()
    thread = ManagedThread(target=release.wait)
    thread.start()

    def body(arm: Callable[[], None]) -> None:
        arm()
        getattr(thread, method)()

    try:
        arrived = interrupted_via_another_thread(body, release.set)
    finally:
        release.set()
        thread.join()
    assert arrived, "the KeyboardInterrupt never came"


def test_waiting_on_a_token() -> None:
    token = CancelToken()

    def body(arm: Callable[[], None]) -> None:
        arm()
        token.wait()

    assert interrupted_via_another_thread(body, token.cancel), "the KeyboardInterrupt never came"


def test_threadkit_sleep_in_the_body_of_a_group() -> None:
    groups: list[ThreadGroup] = []

    def body(arm: Callable[[], None]) -> None:
        with ThreadGroup(name="sleeper") as g:  # the group's token is current in its body
            groups.append(g)
            arm()
            threadkit.sleep(WAIT * 2)

    def release() -> None:
        groups[0].cancel()

    assert interrupted_via_another_thread(body, release), "the KeyboardInterrupt never came"
