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


@pytest.fixture
def prometheus(model_simulator: ModelServerSimulator) -> Iterator[LocalPrometheus]:
    """A real Prometheus on a free 127.0.0.1 port scraping ``model_simulator`` every second.

    First samples arrive 5-6 s after start (Prometheus 2.x applies scrape targets on a 5 s tick); use
    ``prometheus.wait_for_series`` rather than sleeping.
    """
    try:
        server = LocalPrometheus([model_simulator.target])
    except PrometheusNotFound as error:
        pytest.skip(str(error))
    server.start()
    try:
        yield server
    finally:
        server.stop()
