"""Pytest fixtures for a real Prometheus scraping a simulated model server (registered in conftest.py).

Both fixtures are function-scoped so that one test's version settings or stopped server never leak into
the next, and each stops exactly what it started. Without the ``prometheus`` binary the ``prometheus``
fixture skips with a one-line reason naming the install command, so a laptop without it still runs the
rest of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from canaria.sandbox.localprom import LocalPrometheus, PrometheusNotFound
from canaria.sandbox.simulator import ModelServerSimulator

#: The service label every simulated series carries in tests.
SIMULATED_SERVICE = "fraud"


@pytest.fixture
def model_simulator() -> Iterator[ModelServerSimulator]:
    """A running simulator for service "fraud" with no versions yet; the test adds them."""
    simulator = ModelServerSimulator(SIMULATED_SERVICE, requests_per_second=200.0)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def started_prometheus(targets: list[str], **kwargs: object) -> LocalPrometheus:
    """A started LocalPrometheus, or a skip naming the install command when the binary is missing."""
    try:
        server = LocalPrometheus(targets, **kwargs)  # type: ignore[arg-type]
    except PrometheusNotFound as error:
        pytest.skip(str(error))
    return server.start()


@pytest.fixture
def constant_prometheus() -> Iterator[LocalPrometheus]:
    """A real Prometheus with no targets, for queries that compute their own answer (`vector(0.05)`)."""
    server = started_prometheus([])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(model_simulator: ModelServerSimulator) -> Iterator[LocalPrometheus]:
    """A real Prometheus on a free 127.0.0.1 port scraping ``model_simulator`` every second.

    First samples arrive 5-6 s after start (Prometheus 2.x applies scrape targets on a 5 s tick); use
    ``prometheus.wait_for_series`` rather than sleeping.
    """
    server = started_prometheus([model_simulator.target])
    try:
        yield server
    finally:
        server.stop()
