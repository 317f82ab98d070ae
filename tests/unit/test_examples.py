"""manifests/examples/: the good ones validate against the generated CRD schema, pass every CEL rule and
parse with the operator's models; the invalid ones are rejected by the schema or a CEL rule with a message
naming the field their header comment names ("Rejected at <field>"), and by the operator's models too.
The fraud examples 01 → 02 → 03 are also played through the engine: v1 deployed, v2 promoted, v3 reverted.
(The integration tier sends the same files to a real API server.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from canaria.core.api import Metric, ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from canaria.core.commands import CHANGE_REASON_ANNOTATION
from canaria.core.engine import analysis_variables
from canaria.core.templating import render

from .test_crd import cel_errors, schema_errors, validate
from .world import World

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
GOOD = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))

#: Metric families the simulated model server (and a real one) exports, with the labels queries may use.
EXPORTED = {
    "http_requests_total": {"service", "version", "code", "role"},
    "http_request_duration_seconds_bucket": {"service", "version", "le", "role"},
    "model_feature_drift_psi": {"service", "version"},
    "model_prediction_psi": {"service", "version"},
    "model_inference_cost_total": {"service", "version"},
    "model_predictions_total": {"service", "version"},
}


def documents(path: Path) -> list[dict[str, Any]]:
    """The ModelDeployments of an example (an example may also hold the HTTPRoute it routes through)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert all(d.get("kind") in ("ModelDeployment", "HTTPRoute") for d in docs), path.name
    mds = [d for d in docs if d["kind"] == "ModelDeployment"]
    assert mds, path.name
    return mds


def rejected_at(path: Path) -> str:
    match = re.search(r"^# Rejected at ([\w.\[\]]+)", path.read_text(), re.MULTILINE)
    assert match, f"{path.name}: say in a header comment '# Rejected at <field path>.'"
    return match.group(1).rstrip(".")


def pydantic_paths(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ModelDeploymentSpec.model_validate(spec)
    paths = []
    for error in info.value.errors():
        path = "spec"
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        paths.append(path)
    return paths


def test_there_are_good_and_invalid_examples() -> None:
    assert [p.name for p in GOOD] == [
        "01-first-deployment.yaml",
        "02-canary-upgrade.yaml",
        "03-bad-version.yaml",
        "04-gateway-api-ready.yaml",
        "05-beat-the-baseline.yaml",
    ]
    assert {p.stem for p in INVALID} >= {
        "uppercase-version",
        "decreasing-weights",
        "bad-duration",
        "metric-without-bounds",
        "query-typo",
        "pause-and-manual",
    }


# ------------------------------------------------------------------------------------------- good


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example_validates_against_the_crd_schema(path: Path) -> None:
    for doc in documents(path):
        assert schema_errors(doc) == []


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example_passes_every_cel_rule(path: Path) -> None:
    for doc in documents(path):
        assert cel_errors(doc) == []


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example_parses_with_the_operator_models(path: Path) -> None:
    for doc in documents(path):
        parsed = ModelDeployment.model_validate(doc)
        assert parsed.spec.model.owner and parsed.spec.model.lineage
        assert doc["metadata"]["annotations"][CHANGE_REASON_ANNOTATION]
        containers = parsed.spec.template["spec"]["containers"]
        assert all(c.get("readinessProbe") for c in containers), (
            "a canary is ready only when its probe says so"
        )
        assert "namespace" not in doc["metadata"], "examples are applied with -n <namespace>"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_queries_read_exported_metrics_and_render(path: Path) -> None:
    for doc in documents(path):
        spec = ModelDeploymentSpec.model_validate(doc["spec"])
        variables = analysis_variables(
            spec, ModelDeploymentStatus(), name=doc["metadata"]["name"], namespace="ml"
        )
        queries = [
            (m, q)
            for m in spec.rollout.analysis.metrics
            for q in (m.query, m.proportion_test and m.proportion_test.total)
            if q
        ]
        for metric, template in queries:
            query = render(template, variables)
            assert "{{" not in query
            for family, labels in re.findall(r"([a-z_]+)\{([^}]*)\}", query):
                assert family in EXPORTED, f"{metric.name}: {family} is not exported by the model server"
                used = {label.split("=")[0].strip().rstrip("!~") for label in labels.split(",")}
                assert used <= EXPORTED[family], (
                    f"{metric.name}: {family} has no label(s) {used - EXPORTED[family]}"
                )


def test_the_canary_upgrade_example_has_the_documented_checks() -> None:
    (doc,) = documents(EXAMPLES / "02-canary-upgrade.yaml")
    spec = ModelDeploymentSpec.model_validate(doc["spec"])
    metrics = {m.name: m for m in spec.rollout.analysis.metrics}
    assert list(metrics) == [
        "error-rate",
        "p95-latency",
        "feature-drift-psi",
        "prediction-drift-psi",
        "cost-per-prediction",
    ]
    assert "histogram_quantile(0.95" in metrics["p95-latency"].query
    assert [m.name for m in metrics.values() if m.dry_run] == ["cost-per-prediction"]
    assert [(s.weight, s.pause) for s in spec.rollout.steps] == [(10, "5m"), (50, "10m"), (100, None)]
    assert [(g.metric, g.min) for g in spec.gates] == [("auc", 0.93)]
    assert spec.rollout.bake and spec.model.evaluation["auc"] >= 0.93


def test_the_fraud_examples_tell_one_story() -> None:
    docs = [
        documents(EXAMPLES / name)[0]
        for name in ("01-first-deployment.yaml", "02-canary-upgrade.yaml", "03-bad-version.yaml")
    ]
    assert {d["metadata"]["name"] for d in docs} == {"fraud"}
    assert [d["spec"]["model"]["version"] for d in docs] == ["v1", "v2", "v3"]
    first = ModelDeploymentSpec.model_validate(docs[0]["spec"])
    assert first.replicas == 4 and first.model.lineage.training_run and first.model.evaluation


# ---------------------------------------------------------------------------------------- invalid


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected_by_schema_or_cel_naming_the_field(path: Path) -> None:
    field = rejected_at(path)
    for doc in documents(path):
        errors = validate(doc)
        assert errors, f"{path.name} was accepted"
        assert any(e.startswith(f"{field}:") for e in errors), f"{path.name}: expected {field}, got {errors}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected_by_the_operator_models_too(path: Path) -> None:
    field = rejected_at(path)
    for doc in documents(path):
        assert pydantic_paths(doc["spec"]) == [field]


def test_the_query_typo_is_named_by_the_operator() -> None:
    (doc,) = documents(EXAMPLES / "invalid" / "query-typo.yaml")
    with pytest.raises(ValidationError, match=r"unknown template variable\(s\) verison"):
        ModelDeploymentSpec.model_validate(doc["spec"])


# -------------------------------------------------------------------------- the story, in the engine


SIMULATED = {  # what the model server reports per version (as the sandbox simulates it)
    "v1": {"error-rate": 0.002, "p95-latency": 0.08, "feature-drift-psi": 0.03, "prediction-drift-psi": 0.03},
    "v2": {"error-rate": 0.001, "p95-latency": 0.07, "feature-drift-psi": 0.02, "prediction-drift-psi": 0.02},
    "v3": {"error-rate": 0.12, "p95-latency": 0.09, "feature-drift-psi": 0.31, "prediction-drift-psi": 0.04},
}


def _reading(version: str, metric: Metric) -> float:
    return SIMULATED[version].get(metric.name, 0.0001)


def test_examples_played_through_the_engine() -> None:
    docs = [
        documents(EXAMPLES / name)[0]
        for name in ("01-first-deployment.yaml", "02-canary-upgrade.yaml", "03-bad-version.yaml")
    ]
    world = World(spec=ModelDeploymentSpec.model_validate(docs[0]["spec"]))
    world.health = {v: _reading for v in SIMULATED}
    world.change_reason = docs[0]["metadata"]["annotations"][CHANGE_REASON_ANNOTATION]
    world.tick()
    world.run_until(lambda w: w.phase == "Healthy")
    assert (world.stable, world.replicas()) == ("v1", {"v1": 4})

    for doc in docs[1:]:
        world.spec = ModelDeploymentSpec.model_validate(doc["spec"])
        world.generation += 1
        world.change_reason = doc["metadata"]["annotations"][CHANGE_REASON_ANNOTATION]
        world.tick(1)
        world.run_until(lambda w: w.phase in ("Healthy", "Reverted"), step=30)

    assert (world.phase, world.stable, world.lkg, world.replicas()) == ("Reverted", "v2", "v2", {"v2": 4})
    promoted = world.event("Promoted")
    assert "v1 → v2" in promoted.message and "retrained on February data" in promoted.message
    reverted = world.event("RolledBack")
    assert reverted.type == "Warning"
    for needle in ("v3 → v2", "error-rate=0.12", "feature-drift-psi=0.31", "fraud-team@example.com"):
        assert needle in reverted.message
    assert "new merchant-category features" in reverted.message
    assert world.status.rejected.version == "v3"
