"""Range queries for the dashboard's plots: the operator's rendered queries over the rollout's window.

Prometheus is asked with the user's own network position (the dashboard runs on their machine), at the
address the spec names unless `canaria dashboard --prometheus-address` says otherwise (a cluster-internal
name does not resolve on a laptop; a port-forward does). A failure is one short reason per metric, never an
exception and never a response body.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

#: Points per plot: the step is the window divided by this (at least one second).
POINTS = 240
TIMEOUT = 10.0


def _step(start: datetime, end: datetime) -> str:
    return f"{max(1, math.ceil((end - start).total_seconds() / POINTS))}s"


def _points(result: list[dict[str, Any]]) -> list[list[float]]:
    """The first series of a matrix as [[unix seconds, value], ...], non-finite values dropped."""
    if not result:
        return []
    points = []
    for stamp, raw in result[0].get("values", []):
        value = float(raw)
        if math.isfinite(value):
            points.append([float(stamp), value])
    return points


def query_series(
    address: str, metrics: list[dict[str, Any]], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """For each metric (as `views.metric_queries` describes it): its points per version, or an error."""
    prom = PrometheusConnect(url=address.rstrip("/"), disable_ssl=False, timeout=TIMEOUT)
    step = _step(start, end)
    out = []
    try:
        for metric in metrics:
            series: dict[str, Any] = {}
            for version, query in metric["queries"].items():
                try:
                    result = prom.custom_query_range(query, start_time=start, end_time=end, step=step)
                    series[version] = _points(result)
                except PrometheusApiClientException:
                    series[version] = {"error": "Prometheus refused the query"}
                except requests.RequestException:
                    series[version] = {"error": f"Prometheus at {address} did not answer"}
            out.append({"name": metric["name"], "series": series, "step": step})
    finally:
        prom.close()
    return out
