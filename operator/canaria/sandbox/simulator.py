"""A simulated model server's /metrics: the stand-in for real model servers in tests and the sandbox.

A canary analysis is only meaningful against the metrics a model server really exposes, so this module
produces the same families, with the same labels, that the analysis queries in the docs and examples read:

- ``http_requests_total{service,version,code}`` — counter, code "200" or "500" by the version's error rate;
- ``http_request_duration_seconds{service,version}`` — histogram whose p95 is the version's ``latency``;
- ``model_feature_drift_psi{service,version}`` and ``model_prediction_psi{service,version}`` — gauges
  (population stability index of inputs and of predictions against the training data);
- ``model_predictions_total{service,version}`` and ``model_inference_cost_total{service,version}`` —
  counters whose rate ratio is the version's cost per prediction.

Every series also carries ``role``: empty (no label, to Prometheus) for a version's own pods, "baseline" for
the pods of its baseline Deployment, which the simulator keys as ``"<version>@baseline"`` (`workload_key`).

Nothing is random. Request counts and error counts carry their fractional remainders from one tick to the
next, so over any window the share of 500s equals the configured error rate to within one request, and
latencies follow an exponential distribution sampled along a low-discrepancy sequence, so
``histogram_quantile(0.95, ...)`` lands close to the configured p95 within a second of traffic. Tests can
therefore assert on values ("error rate ~0.08") and poll with short deadlines instead of sleeping.

Traffic follows the canary's routing: either explicit shares (`set_traffic`) or replica counts
(`set_replicas`, the default replica-ratio routing of one Service over every version). Everything can be
changed while the simulator runs, which is how a test or the sandbox turns a healthy version bad.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Histogram buckets fine enough around common latency SLOs (50-500 ms) for histogram_quantile to land
#: within a few percent of the configured p95.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_GOLDEN = (math.sqrt(5) - 1) / 2  # step of the low-discrepancy (Weyl) sequence of latency quantiles
_LN_P95 = math.log(0.05)  # exponential distribution: P(X > x) = exp(-x / mean); p95 = -ln(0.05) * mean
_MAX_QUANTILE = 0.999  # caps the tail so one sample never lands at +Inf


@dataclass(frozen=True)
class VersionSettings:
    """How one model version behaves.

    ``latency`` is the p95 request duration in seconds; ``psi`` the prediction drift and ``feature_psi``
    the input drift (same as ``psi`` unless set); ``cost`` the cost of one successful prediction.
    """

    error_rate: float = 0.0
    latency: float = 0.05
    psi: float = 0.02
    feature_psi: float | None = None
    cost: float = 0.0001

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        if self.latency <= 0:
            raise ValueError(f"latency must be positive, got {self.latency}")
        if self.cost < 0:
            raise ValueError(f"cost must not be negative, got {self.cost}")


@dataclass
class _VersionState:
    """Per-version carries that make the counts exact over any window."""

    settings: VersionSettings
    request_carry: float = 0.0
    error_carry: float = 0.0
    latency_index: int = 0


class ModelServerSimulator:
    """Exporter for the model servers of one service, on a free 127.0.0.1 port.

    Usage::

        with ModelServerSimulator("fraud", requests_per_second=200) as sim:
            sim.set_version("v1")
            sim.set_version("v2", error_rate=0.08, latency=0.3)
            sim.set_replicas({"v1": 3, "v2": 1})
            LocalPrometheus([sim.target]) ...

    A background thread advances the simulation every ``tick`` seconds by the wall-clock time elapsed
    (so a late tick does not lose traffic). ``stop()`` ends the thread and the HTTP server; it is
    idempotent. Each simulator has its own CollectorRegistry, so several can run in one process.
    """

    def __init__(
        self,
        service: str = "model",
        *,
        requests_per_second: float = 200.0,
        tick: float = 0.2,
        versions: Mapping[str, VersionSettings] | None = None,
    ) -> None:
        if requests_per_second < 0:
            raise ValueError(f"requests_per_second must not be negative, got {requests_per_second}")
        self.service = service
        self.requests_per_second = requests_per_second
        self.tick = tick
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._versions: dict[str, _VersionState] = {}
        self._weights: dict[str, float] | None = None  # None: traffic split evenly over the versions
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._last_tick: float | None = None
        self.port: int | None = None

        labels = ("service", "version", "role")
        self.requests = Counter(
            "http_requests", "HTTP requests served.", (*labels, "code"), registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Request duration.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feature_psi = Gauge(
            "model_feature_drift_psi",
            "Input drift (PSI) against the training data.",
            labels,
            registry=self.registry,
        )
        self.prediction_psi = Gauge(
            "model_prediction_psi",
            "Prediction drift (PSI) against the training data.",
            labels,
            registry=self.registry,
        )
        self.predictions = Counter(
            "model_predictions", "Predictions returned.", labels, registry=self.registry
        )
        self.cost = Counter(
            "model_inference_cost", "Inference cost (currency units).", labels, registry=self.registry
        )
        for version, settings in (versions or {}).items():
            self._versions[version] = _VersionState(settings)
            self._export_version(version, settings)

    # ---------------------------------------------------------------------------------- lifecycle

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``, as a Prometheus scrape target."""
        if self.port is None:
            raise RuntimeError("ModelServerSimulator is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The /metrics URL."""
        return f"http://{self.target}/metrics"

    def start(self) -> ModelServerSimulator:
        """Serve /metrics on a free loopback port and start advancing the simulation."""
        if self._server is not None:
            raise RuntimeError("ModelServerSimulator is already started")
        self._server, self._server_thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)
        self._stopping.clear()
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"simulator-{self.service}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the simulation thread and the HTTP server (closing its socket). Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None

    def __enter__(self) -> ModelServerSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.wait(self.tick):
            now = time.monotonic()
            elapsed = now - (self._last_tick or now)
            self._last_tick = now
            self.advance(elapsed)

    # ------------------------------------------------------------------------------------- control

    def set_version(
        self,
        version: str,
        *,
        error_rate: float | None = None,
        latency: float | None = None,
        psi: float | None = None,
        feature_psi: float | None = None,
        cost: float | None = None,
    ) -> VersionSettings:
        """Add a version (healthy defaults) or change some of its settings; returns the settings in force."""
        changes = {
            k: v
            for k, v in {
                "error_rate": error_rate,
                "latency": latency,
                "psi": psi,
                "feature_psi": feature_psi,
                "cost": cost,
            }.items()
            if v is not None
        }
        with self._lock:
            state = self._versions.get(version)
            settings = replace(state.settings if state else VersionSettings(), **changes)
            if state is None:
                self._versions[version] = _VersionState(settings)
            else:
                state.settings = settings
            self._export_version(version, settings)
        return settings

    def settings(self, version: str) -> VersionSettings:
        with self._lock:
            return self._versions[version].settings

    @property
    def versions(self) -> list[str]:
        with self._lock:
            return list(self._versions)

    def remove_version(self, version: str) -> None:
        """Forget a version and drop its series, as when its Deployment is scaled away."""
        with self._lock:
            self._versions.pop(version, None)
            if self._weights is not None:
                self._weights.pop(version, None)
            for metric in (self.duration, self.feature_psi, self.prediction_psi, self.predictions, self.cost):
                _remove(metric, *_labels(self.service, version))
            for code in ("200", "500"):
                _remove(self.requests, *_labels(self.service, version), code)

    def set_traffic(self, shares: Mapping[str, float]) -> None:
        """Split traffic by relative shares (normalised; zero allowed). Unknown versions are added healthy.

        Versions not named get no traffic.
        """
        if any(s < 0 for s in shares.values()):
            raise ValueError(f"traffic shares must not be negative: {dict(shares)}")
        for version in shares:
            if version not in self.versions:
                self.set_version(version)
        with self._lock:
            self._weights = dict(shares)

    def serve(self, version: str) -> VersionServer:
        """A real HTTP server for one version, on a free 127.0.0.1 port, for a data plane (nginx, a Gateway)
        to send requests to: each request is answered with the version's name and counted in the version's
        metrics as served traffic, on top of the simulated rate."""
        if version not in self.versions:
            self.set_version(version)
        return VersionServer(self, version).start()

    def record_request(self, version: str) -> None:
        """Count one real request served by `version` (its metrics, as a simulated one)."""
        with self._lock:
            state = self._versions.get(version)
            if state is not None:
                self._serve(version, state, 1.0)

    def set_replicas(self, replicas: Mapping[str, int]) -> None:
        """Split traffic by replica counts, like one Service selecting the Pods of every version."""
        self.set_traffic({v: float(n) for v, n in replicas.items()})

    def shares(self) -> dict[str, float]:
        """Current traffic share of each version (sums to 1, or all zero)."""
        with self._lock:
            return self._shares()

    def _shares(self) -> dict[str, float]:
        weights = self._weights if self._weights is not None else dict.fromkeys(self._versions, 1.0)
        weights = {v: w for v, w in weights.items() if v in self._versions}
        total = sum(weights.values())
        return {v: (weights.get(v, 0.0) / total if total > 0 else 0.0) for v in self._versions}

    # ---------------------------------------------------------------------------------- simulation

    def advance(self, seconds: float) -> None:
        """Simulate ``seconds`` of traffic now (the background thread calls this every tick; tests
        without a thread may call it directly)."""
        if seconds <= 0:
            return
        with self._lock:
            shares = self._shares()
            for version, state in self._versions.items():
                self._serve(version, state, self.requests_per_second * shares[version] * seconds)
                self._export_version(version, state.settings)

    def _serve(self, version: str, state: _VersionState, expected: float) -> None:
        settings = state.settings
        state.request_carry += expected
        count = math.floor(state.request_carry)
        state.request_carry -= count
        if count == 0:
            return
        state.error_carry += count * settings.error_rate
        errors = min(count, math.floor(state.error_carry))
        state.error_carry -= errors
        ok = count - errors
        if ok:
            self.requests.labels(*_labels(self.service, version), "200").inc(ok)
            self.predictions.labels(*_labels(self.service, version)).inc(ok)
            self.cost.labels(*_labels(self.service, version)).inc(ok * settings.cost)
        if errors:
            self.requests.labels(*_labels(self.service, version), "500").inc(errors)
        mean = settings.latency / -_LN_P95
        histogram = self.duration.labels(*_labels(self.service, version))
        for _ in range(count):
            state.latency_index += 1
            quantile = min((state.latency_index * _GOLDEN) % 1.0, _MAX_QUANTILE)
            histogram.observe(-math.log1p(-quantile) * mean)

    def _export_version(self, version: str, settings: VersionSettings) -> None:
        """Create every series of a version (so queries see zeros, not absence) and set its gauges."""
        self.requests.labels(*_labels(self.service, version), "200")
        self.requests.labels(*_labels(self.service, version), "500")
        self.duration.labels(*_labels(self.service, version))
        self.predictions.labels(*_labels(self.service, version))
        self.cost.labels(*_labels(self.service, version))
        self.prediction_psi.labels(*_labels(self.service, version)).set(settings.psi)
        feature = settings.feature_psi if settings.feature_psi is not None else settings.psi
        self.feature_psi.labels(*_labels(self.service, version)).set(feature)


def workload_key(version: str, role: str | None = None) -> str:
    """The simulator's name for the pods of one version in one role: "v1", or "v1@baseline" for the
    baseline Deployment's pods (exported with role="baseline"; '@' never occurs in a version)."""
    return f"{version}@{role}" if role else version


def _labels(service: str, key: str) -> tuple[str, str, str]:
    """(service, version, role) of a workload key; an empty role is no label at all in Prometheus."""
    version, _, role = key.partition("@")
    return service, version, role


class VersionServer:
    """One version's model server answering real requests: any GET or POST gets
    ``{"model": service, "version": version}``. `received` counts what reached it, mirrored copies too."""

    def __init__(self, simulator: ModelServerSimulator, version: str) -> None:
        self.simulator, self.version = simulator, version
        self.received = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("VersionServer is not started")
        return int(self._server.server_port)

    def start(self) -> VersionServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with server._lock:
                    server.received += 1
                server.simulator.record_request(server.version)
                body = json.dumps({"model": server.simulator.service, "version": server.version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: a data plane test sends thousands of requests."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"version-server-{self.version}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _remove(metric: Any, *labels: str) -> None:
    """Drop one labelled series if it exists (prometheus_client raises KeyError otherwise)."""
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
