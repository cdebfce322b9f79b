"""A thread blocked in ``recv()`` on a TCP connection, woken by cancelling it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

import threadkit


def shut_down(conn: socket.socket) -> None:
    """Wake every thread blocked on ``conn``: ``recv()`` returns ``b""`` at once."""
    # close() is not enough: on Linux a thread blocked in recv() on a closed socket stays
    # blocked. shutdown() ends the connection, which wakes it.
    with contextlib.suppress(OSError):  # already shut down or closed: nobody to wake
        conn.shutdown(socket.SHUT_RDWR)


def read_lines(conn: socket.socket, on_line: Callable[[str], object]) -> int:
    """Call ``on_line`` for each line received until the peer closes; return the count.

    Raises:
        threadkit.Cancelled: the task was cancelled while it waited for data.
    """
    unregister = threadkit.current_token().on_cancel(lambda: shut_down(conn))
    count = 0
    buffer = b""
    try:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                threadkit.check_cancelled()  # the socket failed because we shut it down
                raise
            if not data:
                threadkit.check_cancelled()  # cancelled, or else the peer closed the connection
                return count
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                count += 1
                on_line(line.decode())
    finally:
        unregister()  # the callback must not outlive the loop that needs it


def main() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        peer, _ = server.accept()
        with peer:
            two_lines = threading.Event()

            def show(line: str) -> None:
                print("received", line)
                if line == "tick 2":
                    two_lines.set()

            reader: threadkit.ManagedThread[int] = threadkit.ManagedThread(
                target=read_lines, args=(client, show), name="reader"
            )
            reader.start()
            peer.sendall(b"tick 1\ntick 2\n")
            two_lines.wait()
            # The reader now waits in recv() for a third line that never comes.
            reader.cancel("shutting down")
            reader.join()
            print("reader:", reader.state.name, repr(reader.exception()))


if __name__ == "__main__":
    main()
