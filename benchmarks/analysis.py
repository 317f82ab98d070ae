"""How much does one analysis run cost? Against a real local Prometheus scraping the simulator.

Runs N analysis runs of the four documented health metrics (error rate, p95 latency, drift, cost) and
prints the per-run wall time (render + HTTP query + classify, median and p95), the floor for the same
four queries over one kept-alive raw ``requests`` session (what Prometheus itself costs), and the cost of
classification alone per metric. The operator runs one analysis per ModelDeployment per interval, so these
figures say how many rollouts one operator process can analyse before Prometheus, not Canaria, is the limit.

Usage: ``python benchmarks/analysis.py [--runs 200]`` (needs the ``prometheus`` binary).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from datetime import UTC, datetime

import requests

from canaria.core.api import Metric, Verdict
from canaria.core.templating import render
from canaria.core.verdicts import classify
from canaria.providers.prometheus import PrometheusTarget, run_analysis
from canaria.sandbox.localprom import LocalPrometheus, PrometheusNotFound
from canaria.sandbox.simulator import ModelServerSimulator

SELECTOR = 'service="{{service}}",version="{{version}}"'
METRICS = [
    Metric(
        name="error-rate",
        query=f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[10s]))'
        f" / sum(rate(http_requests_total{{{SELECTOR}}}[10s]))",
        max=0.01,
    ),
    Metric(
        name="p95-latency",
        query="histogram_quantile(0.95, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{SELECTOR}}}[10s])))",
        max=0.25,
    ),
    Metric(name="feature-drift-psi", query=f"max(model_feature_drift_psi{{{SELECTOR}}})", max=0.2),
    Metric(
        name="cost-per-prediction",
        query=f"sum(rate(model_inference_cost_total{{{SELECTOR}}}[10s]))"
        f" / sum(rate(model_predictions_total{{{SELECTOR}}}[10s]))",
        max=0.002,
        dry_run=True,
    ),
]
VARIABLES = {"service": "fraud", "version": "v2", "name": "fraud", "namespace": "ml"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_data(target: PrometheusTarget, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        run = run_analysis(METRICS, VARIABLES, target, now=datetime.now(UTC))
        if all(r.verdict is not Verdict.INCONCLUSIVE for r in run.results):
            return
        time.sleep(0.2)
    raise SystemExit(f"no data after {deadline_s:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="analysis runs to time (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    args = parser.parse_args()

    try:
        prometheus = LocalPrometheus()
    except PrometheusNotFound as error:
        print(error, file=sys.stderr)
        return 2

    with ModelServerSimulator("fraud", requests_per_second=500.0) as simulator:
        simulator.set_version("v1")
        simulator.set_version("v2", error_rate=0.005, latency=0.12, psi=0.05)
        simulator.set_replicas({"v1": 3, "v2": 1})
        prometheus.set_targets([simulator.target])
        with prometheus:
            target = PrometheusTarget(address=prometheus.url, timeout=5.0)
            started = time.monotonic()
            wait_for_data(target)
            print(f"prometheus {prometheus.url}: data after {time.monotonic() - started:.1f}s")

            for _ in range(args.warmup):
                run_analysis(METRICS, VARIABLES, target, now=datetime.now(UTC))
            per_run: list[float] = []
            last = None
            for _ in range(args.runs):
                t0 = time.perf_counter()
                last = run_analysis(METRICS, VARIABLES, target, now=datetime.now(UTC))
                per_run.append((time.perf_counter() - t0) * 1000)

            # Floor: the same four queries over one kept-alive session, no rendering, no classification.
            queries = [render(m.query, VARIABLES) for m in METRICS]
            floor: list[float] = []
            with requests.Session() as session:
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    for query in queries:
                        session.get(
                            f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=5
                        ).json()
                    floor.append((time.perf_counter() - t0) * 1000)

                samples = session.get(f"{prometheus.url}/api/v1/query", params={"query": queries[0]}).json()
            samples = samples["data"]["result"]

    at = datetime.now(UTC)
    loops = 20_000
    classify_us = (
        min(
            timeit.repeat(
                lambda: classify(METRICS[0], samples, query=queries[0], at=at), number=loops, repeat=5
            )
        )
        / loops
        * 1e6
    )
    render_us = (
        min(timeit.repeat(lambda: render(METRICS[0].query, VARIABLES), number=loops, repeat=5)) / loops * 1e6
    )

    assert last is not None
    run_median, run_p95 = statistics.median(per_run), percentile(per_run, 0.95)
    floor_median, floor_p95 = statistics.median(floor), percentile(floor, 0.95)
    n = len(METRICS)
    print(f"last run: {last.verdict.value}; " + "; ".join(r.describe() for r in last.results))
    print(f"{args.runs} runs x {n} metrics (render + query + classify, one session per run):")
    print(f"  per run     median {run_median:6.2f} ms   p95 {run_p95:6.2f} ms")
    print(f"  per metric  median {run_median / n:6.2f} ms   p95 {run_p95 / n:6.2f} ms")
    print(f"floor ({n} raw queries, one kept-alive requests session):")
    print(f"  per run     median {floor_median:6.2f} ms   p95 {floor_p95:6.2f} ms")
    print(f"  Canaria / floor: {run_median / floor_median:.2f}x (median), {run_p95 / floor_p95:.2f}x (p95)")
    print(f"classify only: {classify_us:.2f} µs per metric; render only: {render_us:.2f} µs per metric")
    return 0


if __name__ == "__main__":
    sys.exit(main())
