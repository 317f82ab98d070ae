"""Relative gates: a candidate must beat the serving model's recorded offline evaluation.

The engine is driven through `World` (status stored through dump/validate after every decision, as the API
server would store it), so "the recorded evaluation survives a restart" means: it is in the stored status.
"""

from __future__ import annotations

from typing import Any

import pytest

from canaria.core.api import Gate, ModelDeploymentStatus
from canaria.core.gates import check_gates

from .world import World, healthy_world

BEAT_SERVING = [
    {"metric": "auc", "min": 0.9, "minDelta": 0.0, "slices": True},
    {"metric": "p95-latency-ms", "maxDelta": 10},
]
V1 = {"auc": 0.94, "auc@new-users": 0.91, "p95-latency-ms": 40.0}


def serving_v1() -> World:
    return healthy_world(gates=BEAT_SERVING, model={"evaluation": V1})


def candidate(world: World, version: str, evaluation: dict[str, float], **overrides: Any) -> None:
    """The spec names a new version with exactly this evaluation."""
    # evaluation None first: the new evaluation replaces the old one instead of merging into it
    world.edit(model={"version": version, "uri": f"s3://models/fraud/{version}", "evaluation": None})
    world.generation -= 1  # one spec change, written in two merges
    world.edit(model={"evaluation": evaluation}, **overrides)


def gates(*specs: dict[str, Any]) -> list[Gate]:
    return [Gate.model_validate(s) for s in specs]


# ------------------------------------------------------------------------------------------ pure


def test_deltas_against_known_values() -> None:
    checks = check_gates(
        gates(*BEAT_SERVING),
        {"auc": 0.95, "auc@new-users": 0.905, "p95-latency-ms": 52.0},
        serving_version="v1",
        serving=V1,
    )
    assert [(c.key, c.passed) for c in checks] == [
        ("auc", True),
        ("auc@new-users", False),
        ("p95-latency-ms", False),
    ]
    assert checks[0].text == "auc=0.95 vs 0.94 on serving v1 (delta +0.01, needs >= 0) [>= 0.9]"
    assert checks[1].text == (
        "auc@new-users=0.905 vs 0.91 on serving v1 (delta -0.005, needs >= 0) [>= 0.9]: regresses"
    )
    assert checks[2].text == "p95-latency-ms=52 vs 40 on serving v1 (delta +12, needs <= 10): regresses"


def test_a_slice_may_regress_within_its_allowance() -> None:
    gate = gates({"metric": "auc", "minDelta": -0.01, "slices": True})
    ok = check_gates(gate, {"auc": 0.94, "auc@new-users": 0.902}, serving_version="v1", serving=V1)
    assert all(c.passed for c in ok)
    worse = check_gates(gate, {"auc": 0.94, "auc@new-users": 0.89}, serving_version="v1", serving=V1)
    assert [c.key for c in worse if not c.passed] == ["auc@new-users"]


def test_a_slice_the_serving_model_had_must_not_vanish() -> None:
    [_, vanished] = check_gates(
        gates({"metric": "auc", "minDelta": 0, "slices": True}),
        {"auc": 0.95},
        serving_version="v1",
        serving=V1,
    )
    assert not vanished.passed
    assert vanished.text == "auc@new-users missing from spec.model.evaluation"


def test_nothing_to_compare_with_passes_with_a_note() -> None:
    [first] = check_gates(
        gates({"metric": "auc", "minDelta": 0}), {"auc": 0.5}, serving_version=None, serving=None
    )
    assert first.passed and "first deployment, nothing to compare with" in first.text
    [unrecorded] = check_gates(
        gates({"metric": "auc", "minDelta": 0}), {"auc": 0.5}, serving_version="v1", serving={}
    )
    assert unrecorded.passed and "no auc recorded for serving v1" in unrecorded.text


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"metric": "auc"}, "set min, max, minDelta or maxDelta"),
        ({"metric": "auc", "minDelta": 1, "maxDelta": 0}, "minDelta (1.0) must not exceed maxDelta (0.0)"),
    ],
)
def test_bad_gates_are_refused_with_the_reason(gate: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Gate.model_validate(gate)


# ---------------------------------------------------------------------------------------- engine


def test_first_deployment_passes_relative_gates_with_a_note() -> None:
    world = World.create(gates=BEAT_SERVING, model={"evaluation": V1})
    world.tick()
    assert world.phase == "Progressing"
    assert "first deployment, nothing to compare with" in world.event("GatePassed").message
    assert "nothing to compare with" in world.status.history[-1].message  # RolloutStarted
    assert [(e.version, e.evaluation) for e in world.status.evaluations] == [("v1", V1)]


def test_a_candidate_worse_than_serving_is_refused_before_any_traffic() -> None:
    world = serving_v1()
    candidate(world, "v2", {"auc": 0.93, "auc@new-users": 0.92, "p95-latency-ms": 41.0})
    world.tick(1)
    assert world.phase == "Failed"
    assert world.replicas() == {"v1": 4}  # no canary Deployment, the stable untouched
    refused = world.event("GateFailed")
    assert refused.type == "Warning"
    assert "auc=0.93 vs 0.94 on serving v1 (delta -0.01, needs >= 0) [>= 0.9]: regresses" in refused.message
    assert world.status.history[-1].reason == "GateFailed"
    assert "delta -0.01" in world.status.history[-1].message
    assert world.status.rejected.version == "v2"


def test_a_candidate_that_beats_serving_starts_with_values_and_deltas_in_history() -> None:
    world = serving_v1()
    candidate(world, "v2", {"auc": 0.95, "auc@new-users": 0.92, "p95-latency-ms": 45.0})
    world.tick(1)
    assert world.phase == "Progressing" and world.canary == "v2"
    started = world.status.history[-1]
    assert started.reason == "RolloutStarted"
    assert "auc=0.95 vs 0.94 on serving v1 (delta +0.01" in started.message
    assert "p95-latency-ms=45 vs 40 on serving v1 (delta +5, needs <= 10)" in started.message
    assert "GatePassed" in world.reasons()


def test_the_recorded_evaluation_survives_restarts_spec_edits_and_rollbacks() -> None:
    world = healthy_world(gates=BEAT_SERVING, model={"evaluation": V1}, rollout={"bake": "30m"})
    # a person edits the serving version's evaluation in the spec: the record of what was gated stays
    world.edit(model={"evaluation": {"auc": 0.5}})
    world.tick(1)
    # a restart: a fresh operator reads only the stored status
    restarted = World(spec=world.spec, status=ModelDeploymentStatus.model_validate(world.status.dump()))
    restarted.workloads, restarted.now, restarted.generation = world.workloads, world.now, world.generation
    candidate(restarted, "v2", {"auc": 0.96, "auc@new-users": 0.92, "p95-latency-ms": 40.0})
    restarted.run_until(lambda w: w.phase == "Baking" and w.stable == "v2", step=30)
    assert {e.version for e in restarted.status.evaluations} == {"v1", "v2"}
    # during the bake, roll back to v1 by naming it again (no gates: it is the last known good); a v3 is
    # then judged against v1's recorded values, not v2's and not the edited spec's
    candidate(restarted, "v1", {"auc": 0.5})
    restarted.run_until(lambda w: w.phase == "Healthy" and w.stable == "v1", step=30)
    assert "RolledBack" in restarted.reasons()
    candidate(restarted, "v3", {"auc": 0.945, "auc@new-users": 0.91, "p95-latency-ms": 40.0})
    restarted.tick(1)
    assert restarted.canary == "v3"
    assert "auc=0.945 vs 0.94 on serving v1" in restarted.event("GatePassed").message
