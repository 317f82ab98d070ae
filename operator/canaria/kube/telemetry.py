"""The operator's own Prometheus metrics (scraped by the chart's ServiceMonitor, used by its alerts)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "canaria_transitions",
    "Rollout transitions and analysis Events, by reason (RolledBack, Promoted, ...)",
    ["namespace", "name", "reason"],
)
RECONCILE_ERRORS = Counter("canaria_reconcile_errors", "Reconciles that raised, by kind", ["kind"])
UP = Gauge("canaria_up", "1 while the operator runs")
