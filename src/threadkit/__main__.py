"""Implements the command line: ``python -m threadkit demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._demo import run_demo
from ._version import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a whole number >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"expected a whole number >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"expected a number of seconds >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not value >= 0:  # also rejects NaN
        msg = f"expected a number of seconds >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m threadkit", description="threadkit's command line."
    )
    parser.add_argument("--version", action="version", version=f"threadkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="download pages one by one, then with fan_out_and_join, and compare",
        description=(
            "Serve pages from a local HTTP server with latency, download them one by one "
            "and then with fan_out_and_join, check that the compiled pages are identical, "
            "and print both times and the speedup."
        ),
    )
    demo.add_argument("--pages", type=_positive_int, default=20, help="pages (default: 20)")
    demo.add_argument(
        "--latency",
        type=_seconds,
        default=0.15,
        help="seconds the server waits before each page (default: 0.15)",
    )
    demo.add_argument(
        "--workers", type=_positive_int, default=20, help="download threads (default: 20)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            result = run_demo(pages=args.pages, latency=args.latency, workers=args.workers)
        except Exception as exc:  # report any failure plainly, with a non-zero status
            print(f"threadkit demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        if not result.identical:
            print("threadkit demo failed: the compiled pages differ", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
