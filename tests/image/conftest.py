"""The image tier: the operator image built from the Dockerfile, checked, and run against the session's
control plane (tests/fixtures_cluster.py). Skips with one line where no builder exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from .building import Build, build, missing_tools

_HERE = Path(__file__).resolve().parent
_BUILDS: list[Build] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``image`` so ``-m 'not image'`` deselects them."""
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.image)


@pytest.fixture(scope="session")
def image() -> Build:
    """The image, built once per session (the base comes from the cache after the first run)."""
    if reason := missing_tools():
        pytest.skip(reason)
    built = build()
    _BUILDS.append(built)
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for built in _BUILDS:
        terminalreporter.write_line(built.summary())
