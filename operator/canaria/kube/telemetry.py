"""The operator's own Prometheus metrics (scraped by the chart's ServiceMonitor, used by its alerts and by
the Grafana dashboard the chart ships). Every name here is checked against that dashboard's queries."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

TRANSITIONS = Counter(
    "canaria_transitions",
    "Rollout transitions and analysis Events, by reason (RolledBack, Promoted, ...)",
    ["namespace", "name", "reason"],
)
RECONCILE_ERRORS = Counter("canaria_reconcile_errors", "Reconciles that raised, by kind", ["kind"])
UP = Gauge("canaria_up", "1 while the operator runs")
ROLLOUTS = Gauge("canaria_rollouts", "ModelDeployments handled by this operator, by phase", ["phase"])
RECONCILE_SECONDS = Histogram(
    "canaria_reconcile_duration_seconds",
    "Wall time of one reconcile (read, observe, analyse when due, decide, act, write status)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ANALYSIS_VERDICTS = Counter(
    "canaria_analysis_verdicts", "Analysis results, by metric and verdict", ["metric", "verdict"]
)
API_ERRORS = Counter(
    "canaria_api_errors", "Kubernetes API errors the operator met, by HTTP status", ["status"]
)

_phases: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def record_phase(namespace: str, name: str, phase: str | None) -> None:
    """Count the object under its phase (None: it is gone): the gauge of its old phase goes down and its
    new one up, so a reconcile costs the same whatever the number of objects."""
    with _lock:
        key = (namespace, name)
        old = _phases.pop(key, None) if phase is None else _phases.get(key)
        if old == phase:
            return
        if old is not None:
            ROLLOUTS.labels(phase=old).dec()
        if phase is not None:
            _phases[key] = phase
            ROLLOUTS.labels(phase=phase).inc()
