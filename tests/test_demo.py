"""Tests for the command line and its demo."""

from __future__ import annotations

import subprocess
import sys

import pytest

from threadkit import _demo
from threadkit.__main__ import main


def test_demo_runs_end_to_end_in_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "threadkit", "demo", "--pages", "6", "--latency", "0.02"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("serving 6 pages on http://127.0.0.1:")
    assert lines[1].startswith("one by one:")
    assert lines[2].startswith("fan_out_and_join:")
    assert lines[3].startswith("compiled pages:    identical")
    assert lines[4].startswith("speedup:")
    assert "6/6" in done.stderr  # the progress bar


def test_help_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "threadkit", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "demo" in done.stdout
    assert "download pages one by one" in done.stdout


def test_run_demo_compiles_identical_pages(capsys: pytest.CaptureFixture[str]) -> None:
    result = _demo.run_demo(pages=5, latency=0.0, workers=3)
    assert result.identical
    assert result.pages == 5
    assert result.sequential > 0
    assert result.parallel > 0
    assert "identical" in capsys.readouterr().out


def test_a_failing_download_exits_non_zero_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(url: str) -> bytes:
        msg = "connection refused"
        raise OSError(msg)

    monkeypatch.setattr(_demo, "_fetch", refuse)
    assert main(["demo", "--pages", "2", "--latency", "0"]) == 1
    assert capsys.readouterr().err == "threadkit demo failed: OSError: connection refused\n"


def test_different_pages_exit_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = iter(range(1000))

    def fetch(url: str) -> bytes:
        return str(next(calls)).encode()  # a different page every time

    monkeypatch.setattr(_demo, "_fetch", fetch)
    assert main(["demo", "--pages", "3", "--latency", "0"]) == 1
    assert capsys.readouterr().err.endswith("threadkit demo failed: the compiled pages differ\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--pages", "0"], "argument --pages: expected a whole number >= 1, got '0'"),
        (["demo", "--latency", "-1"], "argument --latency: expected a number of seconds >= 0"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
