"""The public namespace: every promised name is exported, resolves, and shows as threadkit's."""

from __future__ import annotations

import importlib
import pkgutil

import threadkit

DESIGN_NAMES = {
    "CancelToken",
    "Cancelled",
    "current_token",
    "check_cancelled",
    "sleep",
    "ManagedThread",
    "ThreadState",
    "ThreadGroup",
    "fan_out",
    "fan_out_and_join",
    "FanOutError",
    "spawn_daemon",
    "shutdown_daemons",
    "PeriodicThread",
    "Supervisor",
}


def test_all_is_sorted_and_resolves() -> None:
    assert list(threadkit.__all__) == sorted(threadkit.__all__)
    for name in threadkit.__all__:
        assert hasattr(threadkit, name), name


def test_design_names_are_exported() -> None:
    assert set(threadkit.__all__) >= DESIGN_NAMES


def test_public_objects_show_the_public_module() -> None:
    for name in threadkit.__all__:
        obj = getattr(threadkit, name)
        if hasattr(obj, "__module__") and not isinstance(obj, str):
            assert obj.__module__ == "threadkit", name


def test_every_private_module_has_all() -> None:
    for info in pkgutil.iter_modules(threadkit.__path__):
        if info.name in {"__main__", "_version"}:
            continue
        module = importlib.import_module(f"threadkit.{info.name}")
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), (info.name, name)


def test_version() -> None:
    assert isinstance(threadkit.__version__, str)
    assert threadkit.__version__.count(".") == 2
