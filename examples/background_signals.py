"""A service that shuts down gracefully on SIGTERM (``kill``) or SIGINT (Ctrl-C)."""

from __future__ import annotations

import os

import threadkit


def work() -> None:
    """Process batches until cancelled; flush what is pending on the way out."""
    batches = 0
    try:
        while True:
            batches += 1
            threadkit.sleep(0.1)
    finally:
        print("worker: flushed and closed", flush=True)


def main() -> None:
    # SIGTERM now raises SystemExit(143) in the main thread, SIGINT KeyboardInterrupt: the
    # program unwinds and exits the ordinary way, which shuts the daemons down gracefully.
    threadkit.handle_signals()
    worker = threadkit.spawn_daemon(work, name="worker", grace=5.0)
    try:
        print(f"service running as pid {os.getpid()}; stop it with Ctrl-C or kill", flush=True)
        worker.join()  # the signal interrupts this wait
    finally:
        print("main: unwinding", flush=True)


if __name__ == "__main__":
    main()
