"""How fast is one rollout decision? `engine.decide` on a realistic mid-rollout resource, on one core.

The operator calls `decide` on every event and every requeue of every ModelDeployment, so its cost bounds
how many rollouts one process follows. The resource here is what a busy one looks like: 4 replicas, 3
steps, 4 health metrics (one dry-run), a gate, a bake, lineage, and a status with 40 history entries and
the latest analysis results, parsed from its API form as the operator reads it.

Scenarios (each decided from the same inputs in a loop; `decide` never mutates them):
- idle healthy:       nothing to do (the most common call: a periodic resync);
- mid-step waiting:   canary ready at step 2/3, pause not over, no new analysis;
- analysis consumed:  a new passing run of the 4 metrics is counted, pause not over;
- step advance:       the pause is over and the last run passed: StepAdvanced, replicas re-split;
- revert:             a failing run past the limit: RolledBack to the last known good.

Target: >= 20,000 decisions/s (<= 50 us each) on one core, for every scenario.

Usage: python benchmarks/engine.py [--seconds 1.0] [--profile SCENARIO] [--check]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from canaria.core.api import MetricResult, ModelDeploymentSpec, ModelDeploymentStatus, Phase, Verdict
from canaria.core.engine import decide, split_replicas, template_hash
from canaria.core.observations import AnalysisRun, Observations, WorkloadObservation

TARGET_PER_SECOND = 20_000
NOW = datetime(2026, 2, 14, 10, 0, tzinfo=UTC)
SELECTOR = 'service="{{service}}",version="{{version}}"'

SPEC: dict[str, Any] = {
    "model": {
        "name": "fraud",
        "version": "v2",
        "uri": "s3://models/fraud/v2",
        "lineage": {"codeCommit": "5d6e7f8", "dataset": "snapshot 2026-02", "trainingRun": "run-840"},
        "evaluation": {"auc": 0.948},
        "owner": "fraud-team@example.com",
    },
    "template": {
        "metadata": {"labels": {"app.kubernetes.io/name": "fraud"}},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "docker.io/seldonio/mlserver:1.6.1",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}},
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                }
            ]
        },
    },
    "replicas": 4,
    "gates": [{"metric": "auc", "min": 0.93}],
    "rollout": {
        "steps": [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}, {"weight": 100}],
        "analysis": {
            "interval": "1m",
            "failureLimit": 1,
            "inconclusiveLimit": 3,
            "metrics": [
                {
                    "name": "error-rate",
                    "query": f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[1m]))'
                    f" / sum(rate(http_requests_total{{{SELECTOR}}}[1m]))",
                    "max": 0.01,
                },
                {
                    "name": "p95-latency",
                    "query": "histogram_quantile(0.95, sum by (le) "
                    f"(rate(http_request_duration_seconds_bucket{{{SELECTOR}}}[1m])))",
                    "max": 0.25,
                },
                {
                    "name": "feature-drift-psi",
                    "query": f"max(model_feature_drift_psi{{{SELECTOR}}})",
                    "max": 0.2,
                },
                {
                    "name": "cost-per-prediction",
                    "query": f"sum(rate(model_inference_cost_total{{{SELECTOR}}}[1m]))"
                    f" / sum(rate(model_predictions_total{{{SELECTOR}}}[1m]))",
                    "max": 0.002,
                    "dryRun": True,
                },
            ],
        },
        "bake": "30m",
    },
}


def _results(at: datetime, *, error_rate: float = 0.002) -> list[dict[str, Any]]:
    verdict = "Pass" if error_rate <= 0.01 else "Fail"
    return [
        {"name": "error-rate", "verdict": verdict, "value": error_rate, "max": 0.01, "at": at.isoformat()},
        {"name": "p95-latency", "verdict": "Pass", "value": 0.081, "max": 0.25, "at": at.isoformat()},
        {"name": "feature-drift-psi", "verdict": "Pass", "value": 0.03, "max": 0.2, "at": at.isoformat()},
        {
            "name": "cost-per-prediction",
            "verdict": "Pass",
            "value": 0.0001,
            "max": 0.002,
            "dryRun": True,
            "at": at.isoformat(),
        },
    ]


def _history(entries: int) -> list[dict[str, Any]]:
    reasons = ["RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted", "BakeCompleted"]
    start = NOW - timedelta(days=30)
    return [
        {
            "seq": i + 1,
            "time": (start + timedelta(hours=12 * i)).isoformat(),
            "from": "Progressing",
            "to": "Healthy" if reasons[i % 5] == "BakeCompleted" else "Progressing",
            "reason": reasons[i % 5],
            "version": f"v{i // 5}",
            "message": f"fraud v{i // 5}: step {i % 3 + 1}/3 at weight 50; error-rate=0.002 [<= 0.01] Pass; "
            "p95-latency=0.081 [<= 0.25] Pass",
            "changeReason": "retrained on last month's data",
        }
        for i in range(entries)
    ]


def _conditions() -> list[dict[str, Any]]:
    at = (NOW - timedelta(hours=1)).isoformat()
    return [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": "",
            "lastTransitionTime": at,
            "observedGeneration": 7,
        }
        for t, s, r in (
            ("Ready", "True", "StableServing"),
            ("Progressing", "True", "Progressing"),
            ("Healthy", "False", "Progressing"),
        )
    ]


def _mid_rollout_status(*, ready_since: datetime, last_run: datetime) -> ModelDeploymentStatus:
    ref = {"version": "v1", "uri": "s3://models/fraud/v1", "since": (NOW - timedelta(days=3)).isoformat()}
    return ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "message": "fraud v2: step 2/3 at weight 50",
            "observedGeneration": 7,
            "stable": ref,
            "lastKnownGood": ref,
            "canary": {
                "version": "v2",
                "uri": "s3://models/fraud/v2",
                "lineage": SPEC["model"]["lineage"],
                "since": (NOW - timedelta(minutes=20)).isoformat(),
                "step": 1,
                "weight": 50,
                "stepStartedAt": (ready_since - timedelta(seconds=30)).isoformat(),
                "readyAt": ready_since.isoformat(),
            },
            "analysis": {
                "failures": 0,
                "inconclusive": 0,
                "lastRunAt": last_run.isoformat(),
                "verdict": "Pass",
                "results": _results(last_run),
            },
            "conditions": _conditions(),
            "history": _history(40),
        }
    )


def _workloads(spec: ModelDeploymentSpec, weight: int) -> dict[str, WorkloadObservation]:
    canary, stable = split_replicas(spec.replicas, weight)
    out = {
        "v1": WorkloadObservation(
            "v1", stable, stable, True, template_hash(spec, "v1", "s3://models/fraud/v1")
        )
    }
    if weight:
        out["v2"] = WorkloadObservation(
            "v2", canary, canary, True, template_hash(spec, "v2", "s3://models/fraud/v2")
        )
    return out


def _run(at: datetime, error_rate: float = 0.002) -> AnalysisRun:
    return AnalysisRun(
        at=at, results=tuple(MetricResult.model_validate(r) for r in _results(at, error_rate=error_rate))
    )


def scenarios() -> dict[str, tuple[ModelDeploymentSpec, ModelDeploymentStatus, Observations, datetime]]:
    spec = ModelDeploymentSpec.model_validate(SPEC)
    healthy_spec = ModelDeploymentSpec.model_validate(
        {**SPEC, "model": {**SPEC["model"], "version": "v1", "uri": "s3://models/fraud/v1"}}
    )
    healthy = _mid_rollout_status(ready_since=NOW, last_run=NOW).model_copy(
        update={"phase": Phase.HEALTHY, "canary": None, "message": "fraud v1 is serving"}
    )
    healthy_obs = Observations(generation=7, workloads=_workloads(healthy_spec, 0), service_ports=(80, 8080))
    mid_obs = Observations(generation=7, workloads=_workloads(spec, 50), service_ports=(80, 8080))
    waiting = _mid_rollout_status(
        ready_since=NOW - timedelta(minutes=4), last_run=NOW - timedelta(seconds=20)
    )
    consuming = _mid_rollout_status(
        ready_since=NOW - timedelta(minutes=4), last_run=NOW - timedelta(seconds=60)
    )
    advancing = _mid_rollout_status(
        ready_since=NOW - timedelta(minutes=10), last_run=NOW - timedelta(seconds=60)
    )
    failing = consuming.model_copy(
        update={"analysis": consuming.analysis.model_copy(update={"failures": 1, "verdict": Verdict.FAIL})}
    )
    cases = {
        "idle healthy": (healthy_spec, healthy, healthy_obs, NOW),
        "mid-step waiting": (spec, waiting, mid_obs, NOW),
        "analysis consumed": (
            spec,
            consuming,
            Observations(**{**mid_obs.__dict__, "analysis": _run(NOW)}),
            NOW,
        ),
        "step advance": (spec, advancing, Observations(**{**mid_obs.__dict__, "analysis": _run(NOW)}), NOW),
        "revert": (spec, failing, Observations(**{**mid_obs.__dict__, "analysis": _run(NOW, 0.05)}), NOW),
    }
    # steady state: the stored conditions are the ones the previous decision wrote
    for name, (s, status, obs, now) in cases.items():
        settled = decide(
            s, status, Observations(**{**obs.__dict__, "analysis": None}), now - timedelta(seconds=1)
        )
        cases[name] = (s, status.model_copy(update={"conditions": settled.status.conditions}), obs, now)
    return cases


def expected(name: str, decision: Any) -> None:
    """Each scenario does what it says (so the benchmark measures the path it names)."""
    reasons = [a.reason for a in decision.actions if hasattr(a, "reason")]
    want = {
        "idle healthy": [],
        "mid-step waiting": [],
        "analysis consumed": [],
        "step advance": ["StepAdvanced"],
        "revert": ["AnalysisFail", "RolledBack"],
    }[name]
    if reasons != want:
        raise SystemExit(f"scenario {name!r} emitted {reasons}, expected {want}")


def measure(fn: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """(median, best) microseconds per call over repeated batches lasting ~`seconds` in all."""
    batch = 1
    while True:  # size a batch to ~20 ms
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - start > 0.02:
            break
        batch *= 2
    samples = []
    deadline = time.perf_counter() + seconds
    gc.collect()
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    return statistics.median(samples), min(samples)


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per scenario")
    parser.add_argument("--profile", metavar="SCENARIO", help="print a cProfile of one scenario instead")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_PER_SECOND}/s")
    args = parser.parse_args(argv)

    cases = scenarios()
    for name, (spec, status, obs, now) in cases.items():
        expected(name, decide(spec, status, obs, now))

    if args.profile:
        spec, status, obs, now = cases[args.profile]
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20_000):
            decide(spec, status, obs, now)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0

    print(
        f"engine.decide, Python {sys.version.split()[0]}, {pin_one_core()}; target >= {TARGET_PER_SECOND:,}/s"
    )
    print(f"{'scenario':<20} {'decisions/s':>12} {'us/decision':>12} {'best us':>9}")
    worst = float("inf")
    for name, (spec, status, obs, now) in cases.items():
        median, best = measure(lambda s=spec, st=status, o=obs, n=now: decide(s, st, o, n), args.seconds)
        rate = 1e6 / median
        worst = min(worst, rate)
        print(f"{name:<20} {rate:>12,.0f} {median:>12.1f} {best:>9.1f}")
    verdict = "meets" if worst >= TARGET_PER_SECOND else "BELOW"
    print(f"slowest scenario: {worst:,.0f} decisions/s ({1e6 / worst:.1f} us) - {verdict} the target")
    return 0 if worst >= TARGET_PER_SECOND or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
