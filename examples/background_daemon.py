"""A daemon that buffers records and flushes them in ``finally:`` loses none at exit."""

from __future__ import annotations

import sys
import threading

import threadkit


def record_events(path: str, started: threading.Event) -> None:
    """Write a record every millisecond until cancelled, then a summary line."""
    count = 0
    # A large buffer: nothing reaches the file until it is flushed or closed.
    with open(path, "w", buffering=1 << 20) as out:
        try:
            while True:
                out.write(f"record {count}\n")
                count += 1
                if count == 100:
                    started.set()
                threadkit.sleep(0.001)  # raises Cancelled once the daemon is cancelled
        finally:
            out.write(f"end: {count} records\n")
        # Leaving the `with` block flushes the buffer and closes the file.


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "records.txt"
    started = threading.Event()
    threadkit.spawn_daemon(record_events, path, started, name="recorder")
    started.wait()
    print("main returns while the recorder is still writing")
    # No join and no shutdown call: at exit the recorder is cancelled, and its finally:
    # block runs. A plain daemon thread would be killed with its buffer unwritten.


if __name__ == "__main__":
    main()
