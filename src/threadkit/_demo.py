"""Implements the demo: download pages one by one, then with fan_out_and_join, and compare."""

from __future__ import annotations

import http.server
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import TextIO, cast

from ._fanout import fan_out_and_join

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured: both times, and whether the compiled pages matched."""

    pages: int
    sequential: float
    parallel: float
    identical: bool

    @property
    def speedup(self) -> float:
        """How many times faster the fan-out was than the loop."""
        return self.sequential / self.parallel if self.parallel > 0 else float("inf")


def _page(number: int) -> bytes:
    return (
        f"<section id='page-{number}'><h2>Page {number}</h2>"
        f"<p>{'threads ' * (number % 7 + 1)}</p></section>\n"
    ).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves /page/<n> after the server's latency; anything else is a 404."""

    def do_GET(self) -> None:
        prefix = "/page/"
        if not self.path.startswith(prefix) or not self.path[len(prefix) :].isdigit():
            self.send_error(404)
            return
        time.sleep(cast(_Server, self.server).latency)
        body = _page(int(self.path[len(prefix) :]))
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the stdlib's signature
        pass  # keep the demo's output clean


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog of 5 drops concurrent connections, and the client
    # then retries only a second later.
    request_queue_size = 128
    latency = 0.0


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def _compile(pages: list[bytes]) -> bytes:
    return b"<html><body>\n" + b"".join(pages) + b"</body></html>\n"


def run_demo(
    *, pages: int = 20, latency: float = 0.15, workers: int = 20, out: TextIO | None = None
) -> DemoResult:
    """Serve ``pages`` pages locally with ``latency``; fetch them serially, then in parallel.

    Starts a :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 (a free
    port), downloads every page one by one with :mod:`urllib`, then with
    :func:`~threadkit.fan_out_and_join` (a progress bar on stderr), compiles
    each set into one page, and prints both times and the speedup to ``out``
    (default: :data:`sys.stdout`).

    Returns:
        The measurements; ``identical`` says whether both compiled pages matched.

    Raises:
        OSError: the local server could not be started or a download failed.
    """
    if out is None:
        out = sys.stdout
    server = _Server(("127.0.0.1", 0), _Handler)
    server.latency = latency
    serving = threading.Thread(target=server.serve_forever, name="demo-http-server", daemon=True)
    serving.start()
    try:
        host, port = server.server_address[:2]
        urls = [f"http://{host!s}:{port}/page/{n}" for n in range(pages)]
        print(f"serving {pages} pages on http://{host!s}:{port} with {latency} s latency", file=out)

        start = time.perf_counter()
        sequential = _compile([_fetch(url) for url in urls])
        one_by_one = time.perf_counter() - start
        print(f"one by one:        {one_by_one:7.3f} s", file=out)

        start = time.perf_counter()
        parallel = _compile(
            fan_out_and_join(_fetch, urls, max_workers=workers, progress=True, name="download")
        )
        fanned = time.perf_counter() - start
        print(f"fan_out_and_join:  {fanned:7.3f} s  ({workers} workers)", file=out)
    finally:
        server.shutdown()
        server.server_close()
        serving.join()
    result = DemoResult(pages, one_by_one, fanned, sequential == parallel)
    verdict = "identical" if result.identical else "DIFFERENT"
    print(f"compiled pages:    {verdict} ({len(parallel):,} bytes)", file=out)
    print(f"speedup:           {result.speedup:7.1f}x", file=out)
    return result
