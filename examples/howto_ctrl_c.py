"""Press Ctrl-C while it runs: the tasks are cancelled, clean up, and the program exits.

python examples/howto_ctrl_c.py group       # a ThreadGroup
python examples/howto_ctrl_c.py fan-out     # fan_out over an endless input
python examples/howto_ctrl_c.py stubborn    # one task ignores cancellation
"""

from __future__ import annotations

import itertools
import sys
import threading
import time

import threadkit


def say(line: str) -> None:
    """Print ``line`` in one write, so that lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def crawl(site: str, running: threading.Barrier) -> None:
    """Crawl ``site`` until cancelled, then clean up."""
    running.wait()
    try:
        while True:
            threadkit.sleep(0.5)  # one page's work; raises Cancelled on Ctrl-C
    finally:
        say(f"{site}: cleaned up")


def crawl_with_group() -> None:
    sites = ["a.example", "b.example", "c.example"]
    running = threading.Barrier(len(sites) + 1)
    with threadkit.ThreadGroup(name="crawl") as g:
        for site in sites:
            g.spawn(crawl, site, running)
        running.wait()  # every task is running
        say("crawling; press Ctrl-C to stop")
        # Leaving the block waits for the tasks: that is where Ctrl-C arrives.


def fetch(n: int) -> str:
    threadkit.sleep(0.01)  # one page's download
    return f"page {n}"


def crawl_with_fan_out() -> None:
    # Ctrl-C arrives in the loop or while fan_out waits for a result; either way the
    # running fetches are cancelled and the workers joined before it propagates.
    for i, _page in enumerate(threadkit.fan_out(fetch, itertools.count(), max_workers=4)):
        if i == 0:
            say("crawling; press Ctrl-C to stop")


def stubborn(site: str, running: threading.Barrier) -> None:
    """Notice the cancellation, then ignore it, as a call stuck in C code would."""
    running.wait()
    threadkit.current_token().wait()
    say(f"{site}: cancelled, but carrying on")
    time.sleep(60)  # time.sleep does not see cancellation


def crawl_with_a_stubborn_task() -> None:
    running = threading.Barrier(4)
    with threadkit.ThreadGroup(name="crawl", grace=0.5) as g:
        g.spawn(crawl, "a.example", running)
        g.spawn(crawl, "b.example", running)
        g.spawn(stubborn, "c.example", running, name="stubborn")
        running.wait()
        say("crawling; press Ctrl-C to stop")
        while True:
            threadkit.sleep(1)  # the main thread's own work: here Ctrl-C arrives in the body


def crawl_with_one_thread() -> None:
    running = threading.Barrier(2)
    crawler = threadkit.ManagedThread(target=crawl, args=("a.example", running))
    crawler.start()
    try:
        running.wait()
        say("crawling; press Ctrl-C to stop")
        crawler.result()
    except KeyboardInterrupt:
        crawler.cancel("interrupted")
        crawler.exception()  # waits until it has cleaned up; join() is not reliable here
        raise


def main() -> int:
    modes = {
        "group": crawl_with_group,
        "fan-out": crawl_with_fan_out,
        "stubborn": crawl_with_a_stubborn_task,
        "thread": crawl_with_one_thread,
    }
    run = modes[sys.argv[1] if len(sys.argv) > 1 else "group"]
    try:
        run()
    except KeyboardInterrupt:
        say(f"interrupted; threads left: {threading.active_count() - 1}")
        return 130  # what shells report for a program ended by SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
