"""A plain daemon thread is killed at exit: its ``finally:`` block never runs."""

from __future__ import annotations

import threading
import time


def flush_periodically(started: threading.Event) -> None:
    try:
        started.set()
        while True:
            time.sleep(0.1)  # buffer some records...
    finally:
        print("flushed the buffer")  # ...and write them out on the way out: never happens


def main() -> None:
    started = threading.Event()
    threading.Thread(target=flush_periodically, args=(started,), daemon=True).start()
    started.wait()
    print("main thread done")
    # The interpreter now exits. It does not wait for daemon threads, and does not unwind
    # them either: the daemon stops wherever it stands.


if __name__ == "__main__":
    main()
