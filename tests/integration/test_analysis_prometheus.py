"""The analysis runner against a real Prometheus scraping a simulated model server.

What only a real server can tell: that the documented queries (rate ratios, histogram_quantile, gauges)
yield the values the simulator was set to, that Prometheus' own error bodies end up in ``reason``, and that
a dead, slow or picky server gives a verdict instead of an exception. Tiny 127.0.0.1 stand-ins cover what a
healthy Prometheus will not do on demand (hang, 5xx, check a bearer token).

Data arrives 5-6 s after Prometheus starts (its scrape manager's 5 s tick), so tests poll with a deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from canaria.core.api import Metric, Verdict
from canaria.core.observations import AnalysisRun
from canaria.providers.prometheus import PrometheusTarget, run_analysis
from canaria.sandbox.localprom import LocalPrometheus
from canaria.sandbox.simulator import ModelServerSimulator
from tests.fixtures_prometheus import SIMULATED_SERVICE

pytestmark = pytest.mark.integration

SELECTOR = 'service="{{service}}",version="{{version}}"'
ERROR_RATE = Metric(
    name="error-rate",
    query=f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[10s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[10s]))",
    max=0.01,
)
P95_LATENCY = Metric(
    name="p95-latency",
    query="histogram_quantile(0.95, sum by (le) "
    f"(rate(http_request_duration_seconds_bucket{{{SELECTOR}}}[10s])))",
    max=0.25,
)
DRIFT = Metric(name="feature-drift-psi", query=f"max(model_feature_drift_psi{{{SELECTOR}}})", max=0.2)
COST = Metric(
    name="cost-per-prediction",
    query=f"sum(rate(model_inference_cost_total{{{SELECTOR}}}[10s]))"
    f" / sum(rate(model_predictions_total{{{SELECTOR}}}[10s]))",
    max=0.002,
    dry_run=True,
)
HEALTH = [ERROR_RATE, P95_LATENCY, DRIFT, COST]
DATA_DEADLINE = 20.0


def variables(version: str) -> dict[str, object]:
    return {"service": SIMULATED_SERVICE, "version": version, "name": "fraud", "namespace": "ml"}


def analyse(address: str, metrics: list[Metric], version: str, **target: Any) -> AnalysisRun:
    return run_analysis(
        metrics, variables(version), PrometheusTarget(address=address, **target), now=datetime.now(UTC)
    )


def analyse_when_data(prometheus: LocalPrometheus, metrics: list[Metric], version: str) -> AnalysisRun:
    """Re-run the analysis until no metric is Inconclusive (data still arriving), within a deadline."""
    deadline = time.monotonic() + DATA_DEADLINE
    while True:
        run = analyse(prometheus.url, metrics, version)
        if all(r.verdict is not Verdict.INCONCLUSIVE for r in run.results):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"still inconclusive after {DATA_DEADLINE:g}s: {[r.describe() for r in run.results]}")
        time.sleep(0.2)


def by_name(run: AnalysisRun) -> dict[str, Any]:
    return {r.name: r for r in run.results}


# ------------------------------------------------------------------------------ against Prometheus


def test_healthy_version_passes(model_simulator: ModelServerSimulator, prometheus: LocalPrometheus) -> None:
    model_simulator.set_version("v1", error_rate=0.0, latency=0.1, psi=0.05, cost=0.0004)

    run = analyse_when_data(prometheus, HEALTH, "v1")

    results = by_name(run)
    assert run.verdict is Verdict.PASS, [r.describe() for r in run.results]
    assert all(r.verdict is Verdict.PASS for r in run.results)
    assert results["error-rate"].value == 0.0
    assert 0.08 <= results["p95-latency"].value <= 0.13  # bucket interpolation around the set 0.1
    assert results["feature-drift-psi"].value == pytest.approx(0.05)
    assert results["cost-per-prediction"].value == pytest.approx(0.0004, rel=0.01)
    assert results["cost-per-prediction"].dry_run is True
    assert results["error-rate"].query == (
        'sum(rate(http_requests_total{service="fraud",version="v1",code=~"5.."}[10s]))'
        ' / sum(rate(http_requests_total{service="fraud",version="v1"}[10s]))'
    )


def test_a_failing_dry_run_metric_is_recorded_but_does_not_gate(
    model_simulator: ModelServerSimulator, prometheus: LocalPrometheus
) -> None:
    model_simulator.set_version("v3", error_rate=0.0, latency=0.1, psi=0.05, cost=0.01)

    run = analyse_when_data(prometheus, HEALTH, "v3")

    cost = by_name(run)["cost-per-prediction"]
    assert (cost.verdict, cost.dry_run) == (Verdict.FAIL, True)
    assert cost.value == pytest.approx(0.01, rel=0.01)
    assert run.verdict is Verdict.PASS, [r.describe() for r in run.results]


def test_erroring_version_fails_error_rate(
    model_simulator: ModelServerSimulator, prometheus: LocalPrometheus
) -> None:
    model_simulator.set_version("v1")
    model_simulator.set_version("v2", error_rate=0.08)
    model_simulator.set_replicas({"v1": 3, "v2": 1})

    run = analyse_when_data(prometheus, [ERROR_RATE, P95_LATENCY], "v2")

    error_rate = by_name(run)["error-rate"]
    assert error_rate.verdict is Verdict.FAIL
    assert error_rate.value == pytest.approx(0.08, abs=0.01)
    assert (error_rate.max, error_rate.min) == (0.01, None)
    assert by_name(run)["p95-latency"].verdict is Verdict.PASS
    assert run.verdict is Verdict.FAIL
    # The stable version, served by the same Prometheus, still passes.
    assert analyse_when_data(prometheus, [ERROR_RATE], "v1").verdict is Verdict.PASS


def test_drifting_version_fails(model_simulator: ModelServerSimulator, prometheus: LocalPrometheus) -> None:
    model_simulator.set_version("v2", psi=0.35)

    run = analyse_when_data(prometheus, [DRIFT], "v2")

    (drift,) = run.results
    assert drift.verdict is Verdict.FAIL
    assert drift.value == pytest.approx(0.35)


def test_query_matching_nothing_is_inconclusive_no_data(
    model_simulator: ModelServerSimulator, prometheus: LocalPrometheus
) -> None:
    model_simulator.set_version("v1")
    analyse_when_data(prometheus, [ERROR_RATE], "v1")  # Prometheus has data, just not for v404

    run = analyse(prometheus.url, [ERROR_RATE, DRIFT], "v404")

    assert [(r.verdict, r.reason) for r in run.results] == [(Verdict.INCONCLUSIVE, "no data")] * 2
    assert run.verdict is Verdict.INCONCLUSIVE


def test_syntax_error_is_error_with_prometheus_message(prometheus: LocalPrometheus) -> None:
    broken = Metric(name="broken", query='sum(rate(http_requests_total{version="{{version}}"}[1m])', max=1)
    fine = Metric(name="fine", query="vector(0)", max=1)

    run = analyse(prometheus.url, [broken, fine], "v1")

    first, second = run.results
    assert first.verdict is Verdict.ERROR
    assert first.reason is not None
    assert first.reason.startswith("bad_data: ")
    assert "parse error" in first.reason and "unclosed left parenthesis" in first.reason
    assert first.query == 'sum(rate(http_requests_total{version="v1"}[1m])'
    assert second.verdict is Verdict.PASS  # one broken query does not stop the others
    assert run.verdict is Verdict.FAIL


def test_prometheus_stopped_is_inconclusive_quickly(prometheus: LocalPrometheus) -> None:
    address = prometheus.url
    prometheus.stop()

    started = time.monotonic()
    run = analyse(address, HEALTH, "v1")
    elapsed = time.monotonic() - started

    assert {r.verdict for r in run.results} == {Verdict.INCONCLUSIVE}
    assert all("connection refused" in (r.reason or "") for r in run.results), run.results[0].reason
    assert elapsed < 1.0


# ------------------------------------------------------------------------------ tiny stand-in servers


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with the server's canned status and body, recording the request."""

    def do_GET(self) -> None:
        server: StandIn = self.server  # type: ignore[assignment]
        server.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        body = json.dumps(server.body).encode()
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: Any = {"status": "success", "data": {"resultType": "vector", "result": []}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def silent_socket() -> Iterator[str]:
    """A 127.0.0.1 port that accepts connections (kernel backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_query_timeout_is_inconclusive(silent_socket: str) -> None:
    started = time.monotonic()
    run = analyse(silent_socket, [ERROR_RATE], "v1", timeout=0.3)
    elapsed = time.monotonic() - started

    (result,) = run.results
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.reason is not None and "did not answer within 0.3s" in result.reason
    assert elapsed < 2.0  # 0.3 s asked of Prometheus + the client's 0.5 s margin, no retries


def test_bearer_token_is_sent(stand_in: StandIn) -> None:
    stand_in.body = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), "0.001"]}]},
    }

    run = analyse(stand_in.url, [ERROR_RATE], "v1", bearer_token="s3cret-token")

    assert run.verdict is Verdict.PASS
    assert [r["authorization"] for r in stand_in.requests] == ["Bearer s3cret-token"]
    assert stand_in.requests[0]["path"].startswith("/api/v1/query?")


@pytest.mark.parametrize(
    ("status", "error_type", "verdict"),
    [
        (503, "timeout", Verdict.INCONCLUSIVE),
        (500, "internal", Verdict.INCONCLUSIVE),
        (429, "unavailable", Verdict.INCONCLUSIVE),
        (422, "execution", Verdict.ERROR),
        (401, "unauthorized", Verdict.ERROR),
    ],
)
def test_http_errors(stand_in: StandIn, status: int, error_type: str, verdict: Verdict) -> None:
    stand_in.status = status
    stand_in.body = {"status": "error", "errorType": error_type, "error": f"something {status}"}

    started = time.monotonic()
    run = analyse(stand_in.url, [ERROR_RATE], "v1")
    elapsed = time.monotonic() - started

    (result,) = run.results
    assert result.verdict is verdict
    assert result.reason is not None and f"{error_type}: something {status}" in result.reason
    assert len(stand_in.requests) == 1  # no retries: the next analysis run is the retry
    assert elapsed < 1.0
