"""Candidates must beat the serving model, end to end: the real operator process (under its own RBAC)
against the real control plane and, for live checks, a real Prometheus scraping the simulated model
servers (the module's simulator and Prometheus come from test_rollout_analysis).

- relative gates: a candidate whose offline AUC is below the serving version's recorded one is refused
  before any traffic moves;
- a baseline Deployment of the stable version runs beside the canary, and a two-proportion test compares
  their error rates: Inconclusive below the minimum sample, then Fail for a canary at 2% against a
  baseline at 1%, Pass (and promotion) for a canary equal to its baseline.

Every test uses its own stable and canary version names: the simulator's counters are per version, and
the queries' window must not see another test's traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.localprom import LocalPrometheus
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator, workload_key

from .harness import ModelDeployments, model_deployment, wait_for
from .test_rollout_analysis import NAME, events_until, follow_traffic, world
from .traffic import TrafficFollower

DEADLINE = 45.0
MIN_SAMPLES = 1500
#: every side's requests over the window; the metric's query counts the 5xx among them
SELECTOR = 'service="{{service}}",version="{{version}}",role="{{role}}"'
ERRORS_VS_BASELINE = {
    "name": "errors-vs-baseline",
    "query": f'sum(increase(http_requests_total{{{SELECTOR},code=~"5.."}}[30s]))',
    "proportionTest": {
        "against": "baseline",
        "total": f"sum(increase(http_requests_total{{{SELECTOR}}}[30s]))",
        "confidence": 0.95,
        "minSamples": MIN_SAMPLES,
    },
}

__all__ = ["follow_traffic", "world"]  # module fixtures shared with test_rollout_analysis

pytestmark = pytest.mark.integration


def test_a_candidate_with_a_lower_auc_than_serving_is_refused_before_any_traffic(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    body = model_deployment(NAME, "v1", gates=[{"metric": "auc", "minDelta": 0.0}])
    body["spec"]["model"]["evaluation"] = {"auc": 0.94}
    mds.create(body)
    status = mds.wait_phase(NAME, "Healthy", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    assert status["evaluations"][0]["version"] == "v1"
    assert status["evaluations"][0]["evaluation"] == {"auc": 0.94}
    first = next(e for e in mds.events(NAME) if e.reason == "GatePassed")
    assert "first deployment, nothing to compare with" in first.message

    mds.set_version(NAME, "v2", reason="retrained", evaluation={"auc": 0.93})
    status = mds.wait_phase(NAME, "Failed", stable="v1", timeout=DEADLINE)
    assert status["rejected"]["version"] == "v2" and status["rejected"]["reason"] == "GateFailed"
    assert "canary" not in status
    assert mds.replicas(NAME) == {"v1": 2}, "stable untouched, no canary Deployment"
    refused = wait_for(
        "a GateFailed Event",
        lambda: next((e for e in mds.events(NAME) if e.reason == "GateFailed"), None),
        timeout=15,
    )
    assert refused.type == "Warning"
    assert "auc=0.93 vs 0.94 on serving v1 (delta -0.01, needs >= 0): regresses" in refused.message
    assert "delta -0.01" in status["history"][-1]["message"]


# ------------------------------------------------------------------------------- baseline, live test


@pytest.fixture
def busy(
    world: tuple[ModelServerSimulator, LocalPrometheus],
) -> Iterator[tuple[ModelServerSimulator, LocalPrometheus]]:
    """The module's simulator at 300 requests/s (150 a side at 50%): a test reaches the minimum sample in
    about 10 s, long enough for runs below it to be seen even on a loaded machine; restored afterwards."""
    simulator, _ = world
    before = simulator.requests_per_second
    simulator.requests_per_second = 300.0
    try:
        yield world
    finally:
        simulator.requests_per_second = before


def baseline_deployments(mds: ModelDeployments) -> dict[str, int]:
    """name → replicas of the ModelDeployment's baseline Deployments."""
    items = mds.apps.list_namespaced_deployment(
        mds.namespace, label_selector=f"canaria.dev/model-deployment={NAME},canaria.dev/role=baseline"
    ).items
    return {d.metadata.name: d.spec.replicas for d in items}


def release_beside_a_baseline(
    busy: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
    *,
    stable: str,
    canary: str,
    canary_errors: float,
) -> TrafficFollower:
    """Serve `stable` (1% errors, and so its baseline), then name `canary` in the spec."""
    simulator, prometheus = busy
    simulator.set_version(stable, error_rate=0.01)
    simulator.set_version(workload_key(stable, "baseline"), error_rate=0.01)
    simulator.set_version(canary, error_rate=canary_errors)
    start_operator(prometheus=prometheus.url)
    traffic = follow_traffic(simulator)
    body = model_deployment(
        NAME,
        stable,
        steps=[{"weight": 50, "pause": "1s"}, {"weight": 100}],
        metrics=[ERRORS_VS_BASELINE],
        rollout={"baseline": {"enabled": True}},
    )
    body["spec"]["rollout"]["analysis"].update(failureLimit=0, inconclusiveLimit=60)
    mds.create(body)
    mds.wait_phase(NAME, "Healthy", stable=stable, timeout=DEADLINE)
    assert baseline_deployments(mds) == {}, "no baseline without a canary"
    prometheus.wait_for_series(f'http_requests_total{{version="{stable}",role="baseline"}}', timeout=DEADLINE)
    prometheus.wait_for_series(f'http_requests_total{{version="{canary}"}}', timeout=DEADLINE)
    mds.set_version(NAME, canary, reason=f"release {canary}")
    return traffic


def analysis_events(mds: ModelDeployments, reason: str) -> list[Any]:
    return [e for e in mds.events(NAME) if e.reason == reason]


def test_a_canary_at_2_percent_errors_against_its_baseline_at_1_percent_is_inconclusive_then_fails(
    busy: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    traffic = release_beside_a_baseline(
        busy, mds, start_operator, follow_traffic, stable="s1", canary="c1-errors", canary_errors=0.02
    )
    wait_for(
        "canary and baseline serving side by side, the stable's pods given up to them",
        lambda: traffic.split == {"s1": 0, "s1@baseline": 1, "c1-errors": 1},
        timeout=DEADLINE,
    )
    assert baseline_deployments(mds) == {f"{NAME}-s1-baseline": 1}

    status = mds.wait_phase(NAME, "Reverted", stable="s1", timeout=DEADLINE)
    assert [h["reason"] for h in status["history"]] == [
        "RolloutStarted",
        "Available",
        "RolloutStarted",
        "RolledBack",
    ]
    assert status["rejected"]["reason"] == "AnalysisFailed"
    [result] = status["analysis"]["results"]
    assert result["verdict"] == "Fail" and result["against"] == "baseline", result
    assert result["samples"] >= MIN_SAMPLES and result["againstSamples"] >= MIN_SAMPLES, result
    assert result["value"] == pytest.approx(0.02, abs=0.004), result
    assert result["againstValue"] == pytest.approx(0.01, abs=0.003), result
    assert result["pValue"] < 0.05, result
    assert "canary's rate higher than the baseline's at 95% confidence" in result["reason"]

    # before enough requests were seen the runs were Inconclusive (counted, never passing), not Pass
    events_until(mds, "RolledBack")  # Events follow the status write
    early = analysis_events(mds, "AnalysisInconclusive")
    assert early, "no run was made below the minimum sample"
    assert any(f"needs {MIN_SAMPLES} on each" in e.message for e in early), [e.message for e in early]
    assert not analysis_events(mds, "StepAdvanced")
    failed = analysis_events(mds, "AnalysisFail")
    assert len(failed) == 1 and "errors-vs-baseline=0.0" in failed[0].message
    wait_for(
        "the baseline removed with the canary", lambda: baseline_deployments(mds) == {}, timeout=DEADLINE
    )


def test_a_canary_equal_to_its_baseline_passes_and_is_promoted_and_the_baseline_goes(
    busy: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    traffic = release_beside_a_baseline(
        busy, mds, start_operator, follow_traffic, stable="s2", canary="c2-same", canary_errors=0.01
    )
    wait_for("a baseline beside the canary", lambda: baseline_deployments(mds) == {f"{NAME}-s2-baseline": 1})
    wait_for(
        "the baseline sized like the canary at 100%",
        lambda: baseline_deployments(mds) == {f"{NAME}-s2-baseline": 2},
        timeout=DEADLINE,
    )
    status = mds.wait_phase(NAME, "Healthy", stable="c2-same", timeout=DEADLINE)
    assert [h["reason"] for h in status["history"]][-2:] == ["StepAdvanced", "Promoted"]
    [result] = status["analysis"]["results"]
    assert result["verdict"] == "Pass" and result["samples"] >= MIN_SAMPLES, result
    assert result["value"] == pytest.approx(0.01, abs=0.003) and result["pValue"] > 0.05, result
    wait_for(
        "the baseline removed after promotion", lambda: baseline_deployments(mds) == {}, timeout=DEADLINE
    )
    wait_for("all traffic on the promoted version", lambda: traffic.split == {"c2-same": 2}, timeout=DEADLINE)
