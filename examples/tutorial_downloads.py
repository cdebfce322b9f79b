"""Download a set of pages: with plain threads, with a ThreadGroup, with fan_out_and_join."""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import threadkit


class Pages(http.server.BaseHTTPRequestHandler):
    """Serves /page/<n>; anything else is a 404."""

    def do_GET(self) -> None:
        if not self.path.startswith("/page/"):
            self.send_error(404)
            return
        body = f"<h1>{self.path}</h1>".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the output quiet


@contextlib.contextmanager
def local_site() -> Iterator[str]:
    """A local web server standing in for the internet; yields its base URL."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages) as server:
        # A short poll interval: shutdown() waits up to one interval for the loop to notice.
        serving = threading.Thread(target=server.serve_forever, args=(0.01,))
        serving.start()
        try:
            host, port = server.server_address[:2]
            yield f"http://{host!s}:{port}"
        finally:
            server.shutdown()
            serving.join()


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the response open
        raise


def with_threads(urls: list[str]) -> None:
    pages: dict[str, bytes] = {}

    def download_into(url: str) -> None:
        pages[url] = download(url)

    threads = [threading.Thread(target=download_into, args=(url,)) for url in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The 404 was printed on stderr by threading.excepthook; here nothing says it happened.
    print(f"threads: {len(pages)} of {len(urls)} pages, no error")


def with_group(urls: list[str]) -> None:
    try:
        with threadkit.ThreadGroup(name="downloads") as g:
            for url in urls:
                g.spawn(download, url)
    except* urllib.error.HTTPError as group:
        for exc in group.exceptions:
            print(f"group: {exc.url} failed: {exc}")


def with_fan_out(urls: list[str]) -> None:
    try:
        pages = threadkit.fan_out_and_join(download, urls, max_workers=8, fail_fast=False)
    except threadkit.FanOutError as exc:
        for index, error in exc.failed.items():
            print(f"fan-out: {urls[index]} failed: {error}")
        pages = [page for page in exc.results if page is not None]
    print(f"fan-out: {len(pages)} of {len(urls)} pages")


def main() -> None:
    with local_site() as site:
        urls = [f"{site}/page/1", f"{site}/missing", f"{site}/page/3"]
        with_threads(urls)
        with_group(urls)
        with_fan_out(urls)


if __name__ == "__main__":
    main()
