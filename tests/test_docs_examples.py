"""The example programs the documentation includes run, and print what the documentation shows.

Each ``examples/tutorial_*.py`` and ``examples/howto_*.py`` file is run here, in this process
(with :func:`runpy.run_path`, so the thread-leak check applies) or, when it needs signals or
its own interpreter exit, in a child process.

A page that shows what an example prints marks the block with a MyST comment directly above
a ```text fence: ``% output of examples/NAME.py [ARGS]`` (``stderr of`` for what it writes
to stderr; `` (lines in any order)`` at the end when threads print in any order). The test
of that example checks every such block against what the example printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import threadkit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
SRC = str(ROOT / "src")

#: The example files this module runs; checked against the examples/ folder and the docs.
TESTED = {
    "howto_cancel_queue.py",
    "howto_cancel_socket.py",
    "howto_contextvars.py",
    "howto_ctrl_c.py",
    "howto_migrate.py",
    "howto_progress.py",
    "howto_timeouts.py",
    "tutorial_daemon.py",
    "tutorial_downloads.py",
}

_OUTPUT_BLOCK = re.compile(
    r"^% (?P<stream>output|stderr) of examples/(?P<name>\S+\.py)(?P<args>(?: [^\s(]\S*)*)"
    r"(?P<any_order> \(lines in any order\))?\n```text\n(?P<text>.*?)^```",
    flags=re.DOTALL | re.MULTILINE,
)
_INCLUDE = re.compile(r"^```\{literalinclude\} (?P<path>\S+)", flags=re.MULTILINE)
_PORT = re.compile(r"127\.0\.0\.1:\d+")


def doc_pages() -> Iterator[Path]:
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" not in page.parts:
            yield page


def run_example(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run examples/NAME as ``__main__`` in this process; return its stdout and stderr."""
    argv = sys.argv
    sys.argv = [str(EXAMPLES / name)]
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return captured.out, captured.err


@contextlib.contextmanager
def start_example(name: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run examples/NAME in a child Python that shows ResourceWarnings, as `-X dev` would.

    The child never outlives the block: if it is still running when the block ends (the
    test failed, or the child hangs), it gets SIGABRT, and faulthandler's dump of its
    threads' stacks becomes the error, so that a hang is reported and can be diagnosed.
    """
    child = subprocess.Popen(
        [sys.executable, "-W", "default::ResourceWarning", str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            if sys.platform != "win32":
                child.send_signal(signal.SIGABRT)
            try:
                out, err = child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
            msg = f"examples/{name} {' '.join(args)} was still running; it printed:\n{out}{err}"
            raise AssertionError(msg)


def check_docs(name: str, output: str, *args: str, stream: str = "output") -> None:
    """Compare ``output`` with every block the docs show as the output (or stderr) of NAME."""
    # Paths as in a run from the repository's root; any local port.
    output = _PORT.sub("PORT", output.replace(f"{ROOT}{os.sep}", ""))
    shown_anywhere = False
    for page in doc_pages():
        for block in _OUTPUT_BLOCK.finditer(page.read_text()):
            if (block["stream"], block["name"], block["args"].split()) != (stream, name, [*args]):
                continue
            shown_anywhere = True
            shown, got = _PORT.sub("PORT", block["text"]), output
            if block["any_order"]:
                shown, got = sorted(shown.splitlines()), sorted(got.splitlines())
            assert got == shown, f"{page.relative_to(ROOT)} shows another output for {name}"
    assert shown_anywhere, f"no page shows the output of {name} {' '.join(args)}"


# -- the meta checks: every example is tested, every include and output block is real --------


def test_every_example_file_is_tested() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py") if p.name.startswith(("howto_", "tutorial_"))}
    assert found == TESTED


def test_docs_include_only_tested_examples() -> None:
    included = set()
    for page in doc_pages():
        for include in _INCLUDE.finditer(page.read_text()):
            path = (page.parent / include["path"]).resolve()
            assert path.is_file(), f"{page.relative_to(ROOT)} includes missing {path}"
            if path.parent == EXAMPLES and path.name.startswith(("howto_", "tutorial_")):
                included.add(path.name)
    assert included == TESTED  # every example is shown somewhere, and tested


def test_output_blocks_name_tested_examples() -> None:
    blocks = [b["name"] for page in doc_pages() for b in _OUTPUT_BLOCK.finditer(page.read_text())]
    assert blocks
    assert set(blocks) <= TESTED


# -- the tutorial -----------------------------------------------------------------------------


def test_tutorial_downloads(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plain threads' HTTPError goes to threading.excepthook, as the tutorial says.
    reports: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", reports.append)
    out, _ = run_example("tutorial_downloads.py", capsys)
    assert [type(r.exc_value).__name__ for r in reports] == ["HTTPError"]
    check_docs("tutorial_downloads.py", out)
    assert out.startswith("threads: 2 of 3 pages, no error\n")


def test_tutorial_daemon_is_killed_without_its_finally() -> None:
    with start_example("tutorial_daemon.py") as child:
        out, err = child.communicate(timeout=30)
    assert (child.returncode, err) == (0, "")
    check_docs("tutorial_daemon.py", out)
    assert out == "main thread done\n"


# -- cancelling blocking I/O ------------------------------------------------------------------


def test_cancel_socket(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_example("howto_cancel_socket.py", capsys)
    check_docs("howto_cancel_socket.py", out)
    assert out.endswith("reader: CANCELLED Cancelled('shutting down')\n")


def test_cancel_queue(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_example("howto_cancel_queue.py", capsys)
    check_docs("howto_cancel_queue.py", out)
    assert out.startswith("pipeline failed: ConnectionError('feed lost')\n")


# -- timeouts ---------------------------------------------------------------------------------


def test_timeouts(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_example("howto_timeouts.py", capsys)
    check_docs("howto_timeouts.py", out)
    assert "abandoned 1 task(s) still running after cancellation (grace 0.1 s): 'stuck-task'" in out


# -- Ctrl-C -----------------------------------------------------------------------------------

posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Interrupted(NamedTuple):
    out: str
    err: str
    code: int
    seconds: float  # from the first SIGINT to the end of the process


def interrupt(mode: str, *cues: str) -> Interrupted:
    """Run the Ctrl-C example and send SIGINT as each cue is printed."""
    with start_example("howto_ctrl_c.py", mode) as child:
        assert child.stdout is not None
        seen = ""
        first = None
        for cue in cues:
            while cue not in seen:
                line = child.stdout.readline()
                assert line, f"the example ended before printing {cue!r}"
                seen += line
            child.send_signal(signal.SIGINT)
            first = first or time.monotonic()
        out, err = child.communicate(timeout=30)
    assert first is not None
    return Interrupted(seen + out, err, child.returncode, time.monotonic() - first)


@posix_signals
def test_ctrl_c_cancels_the_tasks_of_a_group() -> None:
    out, err, code, _ = interrupt("group", "press Ctrl-C")
    assert (code, err) == (130, "")
    check_docs("howto_ctrl_c.py", out, "group")
    lines = out.splitlines()
    assert lines[0] == "crawling; press Ctrl-C to stop"
    assert sorted(lines[1:4]) == [f"{s}.example: cleaned up" for s in "abc"]
    assert lines[4:] == ["interrupted; threads left: 0"]


@posix_signals
def test_ctrl_c_stops_an_endless_fan_out() -> None:
    out, err, code, _ = interrupt("fan-out", "press Ctrl-C")
    assert (code, err) == (130, "")
    check_docs("howto_ctrl_c.py", out, "fan-out")
    assert out == "crawling; press Ctrl-C to stop\ninterrupted; threads left: 0\n"


@posix_signals
def test_ctrl_c_with_a_standalone_thread() -> None:
    out, err, code, _ = interrupt("thread", "press Ctrl-C")
    assert (code, err) == (130, "")
    check_docs("howto_ctrl_c.py", out, "thread")
    assert out.endswith("a.example: cleaned up\ninterrupted; threads left: 0\n")


@posix_signals
def test_ctrl_c_abandons_a_stubborn_task_after_the_grace_period() -> None:
    out, err, code, seconds = interrupt("stubborn", "press Ctrl-C")
    assert code == 130
    assert seconds >= 0.5  # the grace period
    check_docs("howto_ctrl_c.py", out, "stubborn")
    assert out.endswith("interrupted; threads left: 1\n")
    assert "c.example: cancelled, but carrying on\n" in out
    check_docs("howto_ctrl_c.py", err, "stubborn", stream="stderr")
    assert (
        "ResourceWarning: thread group 'crawl' abandoned 1 task(s) still running after "
        "cancellation (grace 0.5 s): 'stubborn'"
    ) in err


@posix_signals
def test_second_ctrl_c_stops_waiting_at_once() -> None:
    # The example's main thread sleeps in the body of the group, so the first Ctrl-C always
    # arrives there.
    out, err, code, _ = interrupt("stubborn", "press Ctrl-C", "carrying on")
    # That the grace period is not waited out is checked where it can be told apart from a
    # loaded machine: tests/test_group.py uses a 60 s grace (this example's is 0.5 s).
    assert code == 130
    # The second Ctrl-C abandons at once every task still running: the stubborn one, and
    # perhaps the others that are still finishing their clean-up.
    assert re.search(r"interrupted; threads left: [123]\n$", out)
    assert "abandoned" in err


# -- progress, contextvars, migrating ---------------------------------------------------------


def test_progress(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    out, err = run_example("howto_progress.py", capsys)
    check_docs("howto_progress.py", out)
    assert out == "25% done\n50% done\n75% done\n100% done\n1000 checksums\n1000 checksums\n"
    assert "checksums: 100%" in err
    assert "1000/1000" in err


def test_progress_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    with pytest.raises(ImportError) as caught:
        threadkit.fan_out_and_join(abs, [1], progress=True)
    # The how-to page quotes this message.
    page = (DOCS / "howto" / "progress.md").read_text()
    assert str(caught.value) in page.replace("\n", " ")


def test_contextvars(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        out, _ = run_example("howto_contextvars.py", capsys)
    finally:
        logging.getLogger("shop").handlers.clear()  # the handler wrote to the captured stdout
    check_docs("howto_contextvars.py", out)
    assert "[-] pricing apple\n[req-42] pricing pear\n" in out


def test_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_example("howto_migrate.py", capsys)
    check_docs("howto_migrate.py", out)
    assert out.startswith("same results: [4, 2, 3]\n")
