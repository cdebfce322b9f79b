"""Every Python example in README.md runs, top to bottom, as a reader would paste it."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_has_examples() -> None:
    assert len(python_blocks(README.read_text())) >= 5


def test_readme_examples_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "errors are never lost" example's thread also reports to threading.excepthook.
    reports: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", reports.append)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in python_blocks(README.read_text()):
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert [type(r.exc_value) for r in reports] == [ValueError]
    assert "[1, 2, None, 4]" in out
    assert "{2: ValueError(\"invalid literal for int() with base 10: 'x'\")}" in out
    assert "the thread failed: invalid literal for int() with base 10: 'not a number'" in out
