"""Fixtures and reporting shared by every tier."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

pytest_plugins = ["tests.fixtures_prometheus", "tests.fixtures_cluster"]


@pytest.fixture(scope="session")
def helm() -> ModuleType:
    """Helm v4 as a library (helm-python-sdk): lint, render, install, upgrade, uninstall, all offline."""
    try:
        import helm_python
    except ImportError:
        pytest.skip("helm_python not importable: pip install -e '.[helm]' (helm-python-sdk, ~244 MB)")
    return helm_python


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl not found: the kubectl install paths are not exercised")
    return found


_integration_wall: dict[str, float] = {"seconds": 0.0, "tests": 0}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Time integration tests including their fixtures (the control plane's start counts too)."""
    if item.get_closest_marker("integration") is None:
        return (yield)
    start = time.monotonic()
    try:
        return (yield)
    finally:
        _integration_wall["seconds"] += time.monotonic() - start
        _integration_wall["tests"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _integration_wall["tests"]:
        terminalreporter.write_line(
            f"integration tier: {int(_integration_wall['tests'])} tests, "
            f"wall time {_integration_wall['seconds']:.1f} s"
        )
