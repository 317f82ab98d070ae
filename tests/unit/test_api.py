"""Validation users can rely on: each rule of the ModelDeployment API rejects bad input with a message that
names the field (its path) and, for templates, the offending variable."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from canaria.core.api import (
    Metric,
    MetricResult,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Step,
    Threshold,
    Verdict,
)
from canaria.core.durations import format_duration, parse_duration
from canaria.core.templating import TEMPLATE_VARIABLES, check_template, render, template_variables

from .world import base_spec


def errors(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted path, message) of every error pydantic reports for a spec."""
    with pytest.raises(ValidationError) as info:
        ModelDeploymentSpec.model_validate(spec)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def assert_rejected(spec: dict[str, Any], path: str, *needles: str) -> None:
    found = errors(spec)
    messages = [msg for loc, msg in found if loc == path]
    assert messages, f"no error at {path}; got {found}"
    for needle in needles:
        assert any(needle in m for m in messages), f"{needle!r} not in {messages}"


def metric(**fields: Any) -> dict[str, Any]:
    return {"name": "error-rate", "query": 'errors{version="{{version}}"}', "max": 0.01} | fields


def with_metrics(*metrics: dict[str, Any]) -> dict[str, Any]:
    return base_spec(rollout={"analysis": {"metrics": list(metrics)}})


def with_steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return base_spec(rollout={"steps": list(steps)})


def test_the_base_spec_is_valid_and_defaults_are_filled() -> None:
    spec = ModelDeploymentSpec.model_validate(base_spec(rollout=None, gates=None, service=None))
    assert [s.weight for s in spec.rollout.steps] == [100]
    assert spec.rollout.analysis.interval_seconds == 60
    assert spec.rollout.progress_deadline_seconds == 600
    assert (spec.service.port, spec.service.target_port) == (80, 8080)
    assert spec.paused is False and spec.rollout.bake is None
    assert spec.dump()["model"]["version"] == "v1"


# ------------------------------------------------------------------------------------ versions


@pytest.mark.parametrize("version", ["v1", "2026-01-15", "fraud-v12", "a", "0", "x" * 40])
def test_dns_label_versions_are_accepted(version: str) -> None:
    ModelDeploymentSpec.model_validate(base_spec(model={"version": version}))


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        ("V2", "'V2' is not a DNS label"),
        ("v2_final", "is not a DNS label"),
        ("-v2", "starting and ending with a letter or digit"),
        ("v2-", "starting and ending with a letter or digit"),
        ("v2.1", "is not a DNS label"),
        ("", "is not a DNS label"),
        ("x" * 41, "at most 40 characters"),
    ],
)
def test_versions_must_be_dns_labels(version: str, needle: str) -> None:
    assert_rejected(base_spec(model={"version": version}), "model.version", needle)


def test_model_name_must_be_a_dns_label() -> None:
    assert_rejected(base_spec(model={"name": "Fraud Model"}), "model.name", "not a DNS label")


def test_uri_is_required_and_not_empty() -> None:
    assert_rejected(base_spec(model={"uri": ""}), "model.uri", "at least 1 character")
    spec = base_spec()
    del spec["model"]["uri"]
    assert_rejected(spec, "model.uri", "Field required")


# --------------------------------------------------------------------------------------- steps


@pytest.mark.parametrize("weight", [0, 101, -5])
def test_step_weights_are_1_to_100(weight: int) -> None:
    assert_rejected(with_steps({"weight": weight}), "rollout.steps.0.weight")


@pytest.mark.parametrize(
    "weights",
    [[50, 10], [10, 10], [10, 50, 50, 100], [10, 60, 40]],
)
def test_step_weights_strictly_increase(weights: list[int]) -> None:
    assert_rejected(
        with_steps(*({"weight": w} for w in weights)),
        "rollout.steps",
        "step weights must be strictly increasing",
        str(weights),
    )


def test_steps_need_at_least_one_and_at_most_twenty() -> None:
    assert_rejected(with_steps(), "rollout.steps", "at least 1 item")
    assert_rejected(with_steps(*({"weight": w} for w in range(1, 23))), "rollout.steps", "at most 20 items")


def test_a_step_waits_for_a_pause_or_a_promote_not_both() -> None:
    assert_rejected(
        with_steps({"weight": 10, "pause": "5m", "manual": True}, {"weight": 100}),
        "rollout.steps.0",
        "a step waits for a pause duration or for a manual promote, not both",
    )
    Step(weight=10, pause="5m", manual=False)  # explicit false is fine


def test_the_last_step_need_not_be_100() -> None:
    spec = ModelDeploymentSpec.model_validate(with_steps({"weight": 10}, {"weight": 50}))
    assert [s.weight for s in spec.rollout.steps] == [10, 50]


# ----------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("500ms", 0.5),
        ("1d", 86400),
        ("2m30s", 150),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    spec = ModelDeploymentSpec.model_validate(base_spec(rollout={"bake": text}))
    assert spec.rollout.bake_seconds == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 minutes", "5", "m", "-5m", "", "5M", "1h 30m", "five minutes", "PT5M"])
def test_bad_durations_say_what_a_duration_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert "e.g. '30s', '5m', '1h30m'" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"rollout": {"steps": [{"weight": 10, "pause": "5 minutes"}]}}, "rollout.steps.0.pause"),
        ({"rollout": {"bake": "half an hour"}}, "rollout.bake"),
        ({"rollout": {"progressDeadline": "10"}}, "rollout.progressDeadline"),
        ({"rollout": {"analysis": {"interval": "1 min"}}}, "rollout.analysis.interval"),
        ({"prometheus": {"timeout": "soon"}}, "prometheus.timeout"),
    ],
)
def test_every_duration_field_is_checked(overrides: dict[str, Any], path: str) -> None:
    assert_rejected(base_spec(**overrides), path, "invalid duration")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45, "45s"), (90, "1m30s"), (5400, "1h30m"), (3600, "1h")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ------------------------------------------------------------------------------------- metrics


def test_a_metric_needs_min_or_max() -> None:
    assert_rejected(with_metrics(metric(max=None)), "rollout.analysis.metrics.0", "set min, max, compare or")


def test_min_must_not_exceed_max() -> None:
    assert_rejected(
        with_metrics(metric(min=0.5, max=0.1)),
        "rollout.analysis.metrics.0",
        "min (0.5) must not exceed max (0.1)",
    )


def test_a_gate_needs_min_or_max() -> None:
    assert_rejected(base_spec(gates=[{"metric": "auc"}]), "gates.0", "set min, max, minDelta or maxDelta")


def test_metric_names_are_unique_dns_labels() -> None:
    assert_rejected(
        with_metrics(metric(), metric()), "rollout.analysis.metrics", "duplicate metric name(s): error-rate"
    )
    assert_rejected(
        with_metrics(metric(name="Error Rate")), "rollout.analysis.metrics.0.name", "not a DNS label"
    )


def test_aggregate_is_one_of_four() -> None:
    assert_rejected(with_metrics(metric(aggregate="median")), "rollout.analysis.metrics.0.aggregate")
    ModelDeploymentSpec.model_validate(with_metrics(metric(aggregate="avg")))


@pytest.mark.parametrize(
    ("field", "value"),
    [("failureLimit", -1), ("inconclusiveLimit", 101), ("onInconclusive", "ignore")],
)
def test_analysis_limits(field: str, value: Any) -> None:
    assert_rejected(base_spec(rollout={"analysis": {field: value}}), f"rollout.analysis.{field}")


def test_threshold_verdict_is_inclusive() -> None:
    bound = Threshold(min=0.1, max=0.2)
    assert bound.verdict(0.1) and bound.verdict(0.2) and not bound.verdict(0.21) and not bound.verdict(0.09)
    assert bound.describe() == ">= 0.1 and <= 0.2"
    assert Threshold(max=1).describe() == "<= 1"


# ---------------------------------------------------------------------------------- templates


def test_every_documented_variable_is_allowed() -> None:
    query = " ".join(f"{{{{{name}}}}}" for name in TEMPLATE_VARIABLES)
    ModelDeploymentSpec.model_validate(with_metrics(metric(query=query)))
    assert template_variables(query) == list(TEMPLATE_VARIABLES)
    assert set(TEMPLATE_VARIABLES) == {
        "name",
        "namespace",
        "service",
        "version",
        "stableVersion",
        "canaryWeight",
        "interval",
        "role",
    }


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ('rate(http_requests_total{version="{{verison}}"}[1m])', "verison"),
        ('x{service="{{svc}}"}', "svc"),
        ('x{version="{{Version}}"}', "Version"),
        ('x{a="{{stable_version}}",b="{{canary}}"}', "canary, stable_version"),
    ],
)
def test_a_typo_in_a_template_variable_is_an_error_naming_it(query: str, named: str) -> None:
    assert_rejected(
        with_metrics(metric(query=query)),
        "rollout.analysis.metrics.0.query",
        f"unknown template variable(s) {named}",
        "allowed: name, namespace, service, version, stableVersion, canaryWeight, interval",
    )


@pytest.mark.parametrize("query", ["x{a='{{ver-sion}}'}", "x{{{version}}}", "x{{", "{{ }}"])
def test_a_malformed_placeholder_is_an_error(query: str) -> None:
    assert_rejected(
        with_metrics(metric(query=query)), "rollout.analysis.metrics.0.query", "malformed placeholder"
    )


@pytest.mark.parametrize(
    "query",
    [
        'sum(rate(http_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[1m]))',
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{version="{{ version }}"}[{{interval}}])))',
        "vector(1)",
        "x{",  # a lone brace is PromQL's business
    ],
)
def test_plain_promql_braces_are_fine(query: str) -> None:
    check_template(query)


def test_render_fills_every_placeholder_and_refuses_missing_values() -> None:
    assert render('x{v="{{ version }}",w="{{canaryWeight}}"}', {"version": "v2", "canaryWeight": 10}) == (
        'x{v="v2",w="10"}'
    )
    with pytest.raises(ValueError, match="'stableVersion' has no value"):
        render("{{stableVersion}}", {"version": "v2"})
    with pytest.raises(ValueError, match="unknown template variable"):
        render("{{verison}}", {"version": "v2"})


def test_query_length_is_bounded() -> None:
    assert_rejected(
        with_metrics(metric(query="x" * 4097)), "rollout.analysis.metrics.0.query", "at most 4096"
    )


# ----------------------------------------------------------------------------------- the rest


def test_unknown_fields_are_typos_and_rejected() -> None:
    assert_rejected(base_spec(replcas=3), "replcas", "Extra inputs are not permitted")
    assert_rejected(base_spec(rollout={"step": []}), "rollout.step", "Extra inputs are not permitted")


def test_template_needs_a_container() -> None:
    assert_rejected(base_spec(template={"spec": {"containers": []}}), "template", "at least one container")


@pytest.mark.parametrize(("field", "value"), [("replicas", -1), ("replicas", 1001)])
def test_replicas_bounds(field: str, value: int) -> None:
    assert_rejected(base_spec(**{field: value}), field)


def test_service_ports_bounds() -> None:
    assert_rejected(base_spec(service={"port": 0}), "service.port")
    assert_rejected(base_spec(service={"targetPort": 70000}), "service.targetPort")


def test_prometheus_address_must_be_http() -> None:
    assert_rejected(base_spec(prometheus={"address": "prometheus:9090"}), "prometheus.address", "https?://")


def test_a_whole_resource_parses_with_status_ignoring_unknown_fields() -> None:
    resource = {
        "apiVersion": "canaria.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": base_spec(),
        "status": {"phase": "Healthy", "futureField": 1, "stable": {"version": "v1", "uri": "s3://x"}},
    }
    parsed = ModelDeployment.model_validate(resource)
    assert parsed.status.phase == "Healthy" and parsed.status.stable.version == "v1"


def test_status_round_trips_through_its_api_form() -> None:
    status = ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "canary": {"version": "v2", "uri": "s3://x", "step": 1, "weight": 50},
            "history": [
                {
                    "seq": 1,
                    "time": "2026-01-15T09:00:00Z",
                    "from": "Healthy",
                    "to": "Progressing",
                    "reason": "RolloutStarted",
                }
            ],
        }
    )
    assert ModelDeploymentStatus.model_validate(status.dump()) == status
    assert status.dump()["history"][0]["from"] == "Healthy"


def test_metric_result_describes_value_bound_and_verdict() -> None:
    result = MetricResult(name="error-rate", verdict=Verdict.FAIL, value=0.034, max=0.01)
    assert result.describe() == "error-rate=0.034 [<= 0.01] Fail"
    nodata = MetricResult(name="p95", verdict=Verdict.INCONCLUSIVE, max=0.25, reason="no data")
    assert nodata.describe() == "p95=no value [<= 0.25] Inconclusive (no data)"


def test_metric_model_names_the_variable_directly() -> None:
    with pytest.raises(ValidationError, match="verison"):
        Metric(name="m", query="{{verison}}", max=1)
