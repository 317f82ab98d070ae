"""Prometheus analysis gating canary steps, end to end: the real operator process (under its own RBAC)
against the real control plane, querying a real Prometheus that scrapes a simulated model server.

No Pod really runs here (the test kubelet only marks Pods Ready), so `ModelServerSimulator` stands in for
the model servers and `TrafficFollower` routes its traffic by the ready replicas of each version's
Deployment, the way one Service over every version would. A canary's behaviour (error rate, drift, ...)
is configured in the simulator before the spec names it; its series then exist (at zero traffic) before
it gets Pods, and its counters move as soon as its Pods are Ready.

One simulator and one Prometheus serve the module (Prometheus needs ~6 s for its first sample); every
test uses its own canary version name, so no test reads another's series. The test that stops
Prometheus gets its own pair.

Timing asserts are deliberately loose (an interval plus slack); the sequence of verdicts, the values and
what lands in status and Events are asserted exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.localprom import LocalPrometheus, PrometheusNotFound
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator
from tests.fixtures_prometheus import SIMULATED_SERVICE

from .harness import ModelDeployments, model_deployment, wait_for
from .traffic import TrafficFollower

NAME = SIMULATED_SERVICE  # the ModelDeployment's name is the service label its queries select
OWNER = "ml-team@example.com"
INTERVAL = 1.0  # seconds: spec.rollout.analysis.interval in every test
SLACK = 1.5  # seconds of scheduling slack allowed on top of an interval in timing asserts
DEADLINE = 45.0  # seconds any single phase may take before a test fails

SELECTOR = 'service="{{service}}",version="{{version}}"'
ERROR_RATE = {
    "name": "error-rate",
    "query": f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[5s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[5s]))",
    "max": 0.01,
}
P95_LATENCY = {
    "name": "p95-latency",
    "query": "histogram_quantile(0.95, sum by (le) "
    f"(rate(http_request_duration_seconds_bucket{{{SELECTOR}}}[5s])))",
    "max": 0.25,
}
FEATURE_DRIFT = {
    "name": "feature-drift-psi",
    "query": f"max(model_feature_drift_psi{{{SELECTOR}}})",
    "max": 0.2,
}
COST = {  # the simulator's cost per prediction is 0.0001: this dry-run check always fails, never gates
    "name": "cost-per-prediction",
    "query": f"sum(rate(model_inference_cost_total{{{SELECTOR}}}[5s]))"
    f" / sum(rate(model_predictions_total{{{SELECTOR}}}[5s]))",
    "max": 0.00005,
    "dryRun": True,
}
NOTHING = {  # a metric no model server exports (e.g. a typo, or an exporter that is not deployed)
    "name": "online-accuracy",
    "query": f"avg(model_online_accuracy{{{SELECTOR}}})",
    "min": 0.9,
}

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[tuple[ModelServerSimulator, LocalPrometheus]]:
    """One simulator and one Prometheus scraping it for the module (control plane first: skips first)."""
    simulator = ModelServerSimulator(SIMULATED_SERVICE, requests_per_second=200.0).start()
    try:
        try:
            prometheus = LocalPrometheus([simulator.target])
        except PrometheusNotFound as error:
            pytest.skip(str(error))
        prometheus.start()
        try:
            yield simulator, prometheus
        finally:
            prometheus.stop()
    finally:
        simulator.stop()


@pytest.fixture
def follow_traffic(
    control_plane: ControlPlane, namespace: str
) -> Iterator[Callable[[ModelServerSimulator], TrafficFollower]]:
    """Start a TrafficFollower for ModelDeployment NAME in the test's namespace; stopped after the test."""
    api = control_plane.api_client()
    followers: list[TrafficFollower] = []

    def start(simulator: ModelServerSimulator) -> TrafficFollower:
        follower = TrafficFollower(api, namespace, NAME, simulator).start()
        followers.append(follower)
        return follower

    try:
        yield start
    finally:
        for follower in followers:
            follower.stop()
        api.close()


# ------------------------------------------------------------------------------------------- helpers


def analysed(
    metrics: list[dict[str, Any]],
    *,
    steps: list[dict[str, Any]],
    failure_limit: int,
    inconclusive_limit: int,
    **analysis: Any,
) -> dict[str, Any]:
    """ModelDeployment NAME at v1 (2 replicas) whose rollouts are gated by ``metrics`` every INTERVAL."""
    body = model_deployment(NAME, "v1", replicas=2, steps=steps, metrics=metrics, interval=f"{INTERVAL:g}s")
    body["spec"]["rollout"]["analysis"].update(
        failureLimit=failure_limit, inconclusiveLimit=inconclusive_limit, **analysis
    )
    return body


def serve_v1_then_release(
    mds: ModelDeployments, prometheus: LocalPrometheus, body: dict[str, Any], canary: str
) -> None:
    """Create the ModelDeployment, wait for v1 to serve and for the canary's (idle) series to be scraped,
    then name the canary in the spec."""
    mds.create(body)
    mds.wait_phase(NAME, "Healthy", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    prometheus.wait_for_series(f'model_feature_drift_psi{{version="{canary}"}}', timeout=DEADLINE)
    mds.set_version(NAME, canary, reason=f"release {canary}")


def reasons(status: dict[str, Any]) -> list[str]:
    return [h["reason"] for h in status["history"]]


def results_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in status["analysis"]["results"]}


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def events_until(mds: ModelDeployments, reason: str) -> list[Any]:
    """The ModelDeployment's Events once one with ``reason`` was posted (Events follow the status write)."""
    return wait_for(
        f"a {reason} Event",
        lambda: (lambda events: events if any(e.reason == reason for e in events) else None)(
            mds.events(NAME)
        ),
        timeout=15,
    )


def value_in(message: str, metric: str) -> float:
    """The value a message reports for ``metric`` (as MetricResult.describe writes it)."""
    match = re.search(rf"{re.escape(metric)}=([-+0-9.e]+) ", message)
    assert match, f"no value for {metric} in {message!r}"
    return float(match.group(1))


def assert_recorded(result: dict[str, Any], *, canary: str, metric: dict[str, Any], verdict: str) -> None:
    """A status result carries name, verdict, the bound, the rendered query and when it ran."""
    assert result["name"] == metric["name"] and result["verdict"] == verdict, result
    assert result.get("max") == metric.get("max") and result.get("min") == metric.get("min"), result
    rendered = metric["query"].replace("{{service}}", NAME).replace("{{version}}", canary)
    assert result["query"] == rendered, result
    assert when(result["at"]).tzinfo is not None, result


# ------------------------------------------------------------------------------------------ scenarios


def test_healthy_canary_passes_every_step_and_is_promoted(
    world: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    simulator, prometheus = world
    canary = "v2-healthy"
    simulator.set_version(canary, error_rate=0.0, latency=0.05, psi=0.02)
    start_operator(prometheus=prometheus.url)
    traffic = follow_traffic(simulator)
    metrics = [ERROR_RATE, P95_LATENCY, FEATURE_DRIFT, COST]
    steps = [{"weight": 50, "pause": "2s"}, {"weight": 100}]
    body = analysed(metrics, steps=steps, failure_limit=0, inconclusive_limit=2)
    serve_v1_then_release(mds, prometheus, body, canary)

    wait_for(
        "the canary serving half the traffic at step 1",
        lambda: traffic.split == {"v1": 1, canary: 1},
        timeout=DEADLINE,
        interval=0.1,
    )
    status = mds.wait_phase(NAME, "Healthy", stable=canary, lastKnownGood=canary, timeout=DEADLINE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "StepAdvanced", "Promoted"]
    assert "rejected" not in status and "canary" not in status
    wait_for("v1 scaled away", lambda: traffic.split == {canary: 2}, timeout=DEADLINE)

    # status: the run that promoted, every metric with its value, bound, verdict, query and time
    assert status["analysis"]["verdict"] == "Pass"
    results = results_by_name(status)
    assert list(results) == [m["name"] for m in metrics]
    for metric in (ERROR_RATE, P95_LATENCY, FEATURE_DRIFT):
        assert_recorded(results[metric["name"]], canary=canary, metric=metric, verdict="Pass")
    assert results["error-rate"]["value"] == 0.0
    assert 0.02 < results["p95-latency"]["value"] <= 0.1  # the simulator's p95 is 0.05
    assert results["feature-drift-psi"]["value"] == pytest.approx(0.02)
    cost = results["cost-per-prediction"]
    assert cost["dryRun"] is True and cost["verdict"] == "Fail"  # recorded, never gates
    assert cost["value"] == pytest.approx(0.0001, rel=0.05)
    promoted_at = when(status["history"][-1]["time"])
    assert when(status["analysis"]["lastRunAt"]) <= promoted_at
    step_advanced = status["history"][3]
    assert when(status["history"][2]["time"]) < when(step_advanced["time"]) < promoted_at

    # Events of each step carry the passing values; no failure was ever recorded
    events = events_until(mds, "Promoted")
    by_reason = {e.reason: e for e in events}
    for reason in ("StepAdvanced", "Promoted"):
        message = by_reason[reason].message
        assert by_reason[reason].type == "Normal"
        assert "error-rate=0 [<= 0.01] Pass" in message, message
        assert value_in(message, "feature-drift-psi") == pytest.approx(0.02), message
    assert "step 2/2 at weight 100" in by_reason["StepAdvanced"].message
    assert f"v1 → {canary} promoted: all 2 steps passed" in by_reason["Promoted"].message
    assert not {"AnalysisFail", "AnalysisError", "RolledBack"} & {e.reason for e in events}


def test_canary_with_8_percent_errors_fails_its_first_step_and_is_reverted(
    world: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    simulator, prometheus = world
    canary = "v2-errors"
    simulator.set_version(canary, error_rate=0.08)
    start_operator(prometheus=prometheus.url)
    traffic = follow_traffic(simulator)
    steps = [{"weight": 50, "pause": "3s"}, {"weight": 100}]
    body = analysed([ERROR_RATE, FEATURE_DRIFT], steps=steps, failure_limit=1, inconclusive_limit=2)
    serve_v1_then_release(mds, prometheus, body, canary)

    status = mds.wait_phase(NAME, "Reverted", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "RolledBack"]
    assert "canary" not in status, "the canary never left its first step"
    rejected = status["rejected"]
    assert rejected["version"] == canary and rejected["reason"] == "AnalysisFailed"
    assert "2 failed runs, limit 1" in rejected["message"]
    wait_for("traffic back on v1 alone", lambda: traffic.split == {"v1": 2}, timeout=DEADLINE)

    # status: the failing run's results
    assert status["analysis"]["verdict"] == "Fail"
    results = results_by_name(status)
    assert_recorded(results["error-rate"], canary=canary, metric=ERROR_RATE, verdict="Fail")
    assert results["error-rate"]["value"] == pytest.approx(0.08, abs=0.025)
    assert_recorded(results["feature-drift-psi"], canary=canary, metric=FEATURE_DRIFT, verdict="Pass")

    # Events: one Warning per failed run of the step, then the revert, each giving the value
    events = events_until(mds, "RolledBack")
    failed = [e for e in events if e.reason == "AnalysisFail"]
    assert [e.type for e in failed] == ["Warning", "Warning"]
    assert "(1 in a row, limit 1)" in failed[0].message and "(2 in a row, limit 1)" in failed[1].message
    for event in failed:  # the first runs see only a second or two of traffic: roughly 8%, above 1%
        assert 0.03 < value_in(event.message, "error-rate") < 0.15, event.message
        assert "feature-drift-psi" not in event.message, "only the bad checks are named"
        assert event.related.name == f"{NAME}-{canary}"
    reverted = next(e for e in events if e.reason == "RolledBack")
    assert reverted.type == "Warning" and OWNER in reverted.message
    assert f"reverted {canary} → v1 (AnalysisFailed)" in reverted.message
    assert value_in(reverted.message, "error-rate") == pytest.approx(results["error-rate"]["value"], rel=1e-5)

    # timing: the revert follows the run that reached the failure limit by one interval
    revert = status["history"][-1]
    assert when(revert["time"]) == when(status["analysis"]["lastRunAt"]), "reverted by the failing run"
    limit_reached = failed[0].event_time
    elapsed = (when(revert["time"]) - limit_reached).total_seconds()
    assert 0 < elapsed <= INTERVAL + SLACK, f"reverted {elapsed:.2f} s after the failure limit was reached"


def test_prometheus_stopped_mid_rollout_promotes_nothing_and_reverts_past_the_inconclusive_limit(
    model_simulator: ModelServerSimulator,
    prometheus: LocalPrometheus,
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    canary = "v2"
    model_simulator.set_version(canary)
    # No default address: the spec names Prometheus, which the operator's analysis policy allows.
    start_operator(args=[f"--allowed-prometheus={prometheus.url}"])
    follow_traffic(model_simulator)
    # Four inconclusive runs (one interval apart) end the rollout: at least 4 s after the canary was
    # ready, so its 3 s pause runs out while Prometheus is down, and only a passing run could end it.
    steps = [{"weight": 50, "pause": "3s"}, {"weight": 100}]
    body = analysed([ERROR_RATE], steps=steps, failure_limit=0, inconclusive_limit=3)
    body["spec"]["prometheus"] = {"address": prometheus.url, "timeout": "2s"}
    serve_v1_then_release(mds, prometheus, body, canary)

    def passing_at_step_1() -> dict[str, Any] | None:
        status = mds.status(NAME)
        at_step_1 = (status.get("canary") or {}).get("step") == 0
        return status if at_step_1 and (status.get("analysis") or {}).get("verdict") == "Pass" else None

    passing = wait_for("a passing run at step 1", passing_at_step_1, timeout=DEADLINE, interval=0.1)
    prometheus.stop()

    status = mds.wait_phase(NAME, "Reverted", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "RolledBack"], (
        "nothing is promoted or advanced while Prometheus is down, though the step's pause ran out"
    )
    held = when(status["history"][-1]["time"]) - when(passing["canary"]["readyAt"])
    assert held > timedelta(seconds=3), "the pause had run out before the revert"
    rejected = status["rejected"]
    assert rejected["version"] == canary and rejected["reason"] == "AnalysisInconclusive"
    assert "4 inconclusive runs, limit 3" in rejected["message"]
    result = results_by_name(status)["error-rate"]
    assert_recorded(result, canary=canary, metric=ERROR_RATE, verdict="Inconclusive")
    assert "value" not in result
    assert f"Prometheus unreachable at {prometheus.url}" in result["reason"], result

    events = events_until(mds, "RolledBack")
    inconclusive = [e for e in events if e.reason == "AnalysisInconclusive"]
    assert [e.type for e in inconclusive][-4:] == ["Warning"] * 4
    assert "(4 in a row, limit 3)" in inconclusive[-1].message
    assert "unreachable" in inconclusive[-1].message and "connection refused" in inconclusive[-1].message
    reverted = next(e for e in events if e.reason == "RolledBack")
    assert reverted.type == "Warning" and "(AnalysisInconclusive)" in reverted.message
    assert "error-rate=no value" in reverted.message and OWNER in reverted.message
    assert not {"StepAdvanced", "Promoted"} & {e.reason for e in events}


def test_query_matching_nothing_is_inconclusive_never_a_pass(
    world: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    simulator, prometheus = world
    canary = "v2-nodata"
    simulator.set_version(canary)
    start_operator(prometheus=prometheus.url)
    follow_traffic(simulator)
    steps = [{"weight": 50}, {"weight": 100}]  # no pause: one passing run would advance each step
    body = analysed(
        [ERROR_RATE, NOTHING],
        steps=steps,
        failure_limit=0,
        inconclusive_limit=1,
        onInconclusive="pause",
    )
    serve_v1_then_release(mds, prometheus, body, canary)

    status = mds.wait_phase(NAME, "Paused", canary=canary, timeout=DEADLINE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "AnalysisInconclusive"]
    assert status["canary"]["step"] == 0 and status["stable"]["version"] == "v1"
    assert "lastKnownGood" in status and status["lastKnownGood"]["version"] == "v1"
    results = results_by_name(status)
    assert_recorded(results["online-accuracy"], canary=canary, metric=NOTHING, verdict="Inconclusive")
    assert results["online-accuracy"]["reason"] == "no data" and "value" not in results["online-accuracy"]
    assert status["analysis"]["verdict"] == "Inconclusive"

    events = events_until(mds, "AnalysisInconclusive")
    held = wait_for(
        "the held-for-a-person Warning",
        lambda: [e for e in mds.events(NAME) if "held for a person" in e.message],
        timeout=15,
    )
    assert held[0].type == "Warning" and "online-accuracy=no value [>= 0.9] Inconclusive (no data)" in (
        held[0].message
    )
    assert OWNER in held[0].message
    assert all(e.type == "Warning" for e in events if e.reason == "AnalysisInconclusive")

    # held, not promoted, while analysis keeps running: the error rate passes, the missing query never does
    later = wait_for(
        "two more analysis runs while held",
        lambda: (
            (s := mds.status(NAME))["analysis"]["inconclusive"] >= status["analysis"]["inconclusive"] + 2
            and s
        ),
        timeout=DEADLINE,
    )
    assert later["phase"] == "Paused" and later["canary"]["step"] == 0
    assert reasons(later) == reasons(status), "a held rollout records its hold once"
    later_results = results_by_name(later)
    assert later_results["error-rate"]["verdict"] == "Pass"
    assert later_results["online-accuracy"]["verdict"] == "Inconclusive"


def test_drift_gauge_above_its_max_fails_and_reverts(
    world: tuple[ModelServerSimulator, LocalPrometheus],
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    follow_traffic: Callable[[ModelServerSimulator], TrafficFollower],
) -> None:
    simulator, prometheus = world
    canary = "v2-drift"
    simulator.set_version(canary, error_rate=0.0, feature_psi=0.35)
    start_operator(prometheus=prometheus.url)
    traffic = follow_traffic(simulator)
    steps = [{"weight": 50, "pause": "3s"}, {"weight": 100}]
    body = analysed([ERROR_RATE, FEATURE_DRIFT], steps=steps, failure_limit=0, inconclusive_limit=2)
    serve_v1_then_release(mds, prometheus, body, canary)

    status = mds.wait_phase(NAME, "Reverted", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "RolledBack"]
    rejected = status["rejected"]
    assert rejected["version"] == canary and rejected["reason"] == "AnalysisFailed"
    assert "1 failed runs, limit 0" in rejected["message"]
    result = results_by_name(status)["feature-drift-psi"]
    assert_recorded(result, canary=canary, metric=FEATURE_DRIFT, verdict="Fail")
    assert result["value"] == pytest.approx(0.35)
    # failureLimit 0: the first failing run reverts, in the same reconcile
    assert when(status["history"][-1]["time"]) == when(status["analysis"]["lastRunAt"])
    wait_for("traffic back on v1 alone", lambda: traffic.split == {"v1": 2}, timeout=DEADLINE)

    events = events_until(mds, "RolledBack")
    failed = [e for e in events if e.reason == "AnalysisFail"]
    assert len(failed) == 1 and "(1 in a row, limit 0)" in failed[0].message
    assert "feature-drift-psi=0.35 [<= 0.2] Fail" in failed[0].message
    reverted = next(e for e in events if e.reason == "RolledBack")
    assert reverted.type == "Warning" and "feature-drift-psi=0.35 [<= 0.2] Fail" in reverted.message
