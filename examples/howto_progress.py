"""Progress of a fan-out: a callback of your own, and a tqdm bar."""

from __future__ import annotations

import hashlib

import threadkit


def checksum(n: int) -> str:
    """Stands for one unit of real work (a download, a file to parse)."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:8]


class Milestones:
    """An ``on_progress`` callback that prints each quarter of the work once."""

    def __init__(self) -> None:
        self.next_quarter = 1

    def __call__(self, done: int, total: int | None) -> None:
        if total is None:  # items without a len(): no percentage to show
            return
        # Several tasks can finish between two calls: print every quarter passed since.
        while self.next_quarter <= 4 and done * 4 >= total * self.next_quarter:
            print(f"{25 * self.next_quarter}% done")
            self.next_quarter += 1


def with_callback() -> None:
    sums = threadkit.fan_out_and_join(checksum, range(1000), on_progress=Milestones())
    print(len(sums), "checksums")


def with_tqdm() -> None:
    # Needs tqdm: pip install 'threadkit[progress]'. The bar goes to stderr.
    sums = threadkit.fan_out_and_join(checksum, range(1000), progress=True, name="checksums")
    print(len(sums), "checksums")


def main() -> None:
    with_callback()
    with_tqdm()


if __name__ == "__main__":
    main()
