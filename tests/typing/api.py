"""Type-checked by mypy and pyright (never run): user code gets precise types without casts."""

from __future__ import annotations

from typing import assert_type

import threadkit


def f(a: int, b: str) -> float:
    return a * len(b) / 2


class Fetcher(threadkit.ManagedThread[int]):
    # typeshed types Thread.run() as returning None and mypy checks overrides against every
    # base class, so mypy (not pyright) needs this ignore on a run() that returns a value.
    def run(self) -> int:  # type: ignore[override]
        return 42

    def on_success(self, result: int) -> None:
        assert_type(result, int)


def managed_thread_results() -> None:
    t: threadkit.ManagedThread[int] = threadkit.ManagedThread(target=len, args=("abc",))
    assert_type(t.result(), int)
    assert_type(t.exception(), BaseException | None)
    assert_type(t.state, threadkit.ThreadState)
    assert_type(Fetcher().result(timeout=1.0), int)


def group_spawn_is_typed_from_fn() -> None:
    with threadkit.ThreadGroup(name="g", timeout=3) as g:
        h = g.spawn(f, 1, "x")
        assert_type(h, threadkit.ManagedThread[float])
        assert_type(h.result(), float)
        g.spawn(f, 1, 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def tokens() -> None:
    token = threadkit.CancelToken()
    child = token.child()
    assert_type(child, threadkit.CancelToken)
    unregister = token.on_cancel(lambda: None)
    unregister()
    assert_type(token.wait(0.1), bool)
    assert_type(threadkit.current_token(), threadkit.CancelToken)
