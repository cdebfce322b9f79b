"""A request id in a ContextVar, added to every log record, in every kind of thread."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading

import threadkit

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Put the current request id on each record, for the formatter's ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


log = logging.getLogger("shop")


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("[%(request_id)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def price(item: str) -> int:
    log.info("pricing %s", item)
    return len(item)


def handle_request() -> None:
    request_id.set("req-42")
    log.info("request started")

    # A plain Thread starts in an empty context: the request id is lost.
    plain = threading.Thread(target=price, args=("apple",))
    plain.start()
    plain.join()

    # A ManagedThread runs in a copy of the context of the caller of start().
    managed = threadkit.ManagedThread(target=price, args=("pear",))
    managed.start()
    managed.join()

    # context= chooses the context instead; here an empty one, like a plain Thread's.
    detached = threadkit.ManagedThread(target=price, args=("kiwi",), context=contextvars.Context())
    detached.start()
    detached.join()

    # The tasks of a ThreadGroup and of a fan-out run in a copy of the caller's context too.
    with threadkit.ThreadGroup() as g:
        g.spawn(price, "plum")
    threadkit.fan_out_and_join(price, ["fig"])


def isolation() -> None:
    # Each task runs in its own copy: what one task sets, no other task and not the
    # caller sees, even when two tasks run one after the other on the same worker thread.
    def tag(n: int) -> str:
        before = request_id.get()
        request_id.set(f"task-{n}")
        return before

    request_id.set("req-43")
    seen = threadkit.fan_out_and_join(tag, range(100), max_workers=2)
    print("every task saw the caller's id:", set(seen) == {"req-43"})
    print("the caller's id afterwards:", request_id.get())


def main() -> None:
    setup_logging()
    # Each request runs in a context of its own, as a web framework would arrange.
    contextvars.copy_context().run(handle_request)
    contextvars.copy_context().run(isolation)


if __name__ == "__main__":
    main()
