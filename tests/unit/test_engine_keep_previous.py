"""The previous version kept warm (`rollout.keepPrevious`, and during every bake): a revert or rollback
moves traffic (the Service's selector), never waits for pods; past the window the version is scaled away.

Driven in the simulated `World` (fraud v1, 4 replicas, steps 10/50/100); "no pod start" is checked on the
world's Deployments: the restored version's ready replicas never drop and nothing scales it up.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from canaria.core.actions import Decision, EmitEvent
from canaria.core.api import ModelDeploymentSpec
from canaria.core.engine import ApplyService, ApplyWorkload, DeleteWorkload, ScaleWorkload

from .world import BAD, World, base_spec, healthy_world

KEEP = {"keepPrevious": {"for": "30m"}}


def promoted(rollout: dict[str, Any], **spec: Any) -> World:
    """v1 healthy, then v2 rolled out and promoted."""
    world = healthy_world(rollout=rollout, **spec)
    world.release("v2")
    world.run_until(lambda w: w.stable == "v2" and w.status.canary is None, step=5)
    world.tick(1)
    return world


def effects(decision: Decision) -> list[object]:
    """The actions that change objects, in the order the shell carries them out (Events are posted after)."""
    return [a for a in decision.actions if not isinstance(a, EmitEvent)]


def starts_of(world: World, version: str, since: int) -> list[object]:
    """Actions after decision `since` that would start pods of `version` (apply or scale up)."""
    return [
        a
        for d in world.decisions[since:]
        for a in d.actions
        if isinstance(a, ApplyWorkload | ScaleWorkload) and a.version == version
    ]


def test_after_a_promotion_the_previous_version_stays_ready_with_no_traffic_until_the_window_ends() -> None:
    world = promoted(KEEP)
    warm = world.status.warm
    assert (world.phase, world.stable, warm.version, warm.replicas) == ("Healthy", "v2", "v1", 4)
    assert warm.until == world.status.stable.since + timedelta(minutes=30)
    assert "v1 kept warm (4 replicas, no traffic)" in world.event("Promoted").message
    # the Service selects v2 alone, and only then is v1 back at its full count
    assert world.service_version == "v2" and world.replicas() == {"v1": 4, "v2": 4}
    assert world.workloads["v1"].ready_replicas == 4
    # the engine wakes at the window's end and scales v1 away then, not before
    decision = world.tick(60)
    assert decision.requeue_after == pytest.approx((warm.until - world.now).total_seconds())
    world.now = warm.until - timedelta(seconds=1)
    world.tick()
    assert "v1" in world.workloads
    world.tick(1)
    assert world.replicas() == {"v2": 4} and world.status.warm is None
    assert "window ended" in world.event("PreviousReleased").message
    assert world.phase == "Healthy" and world.service_version == "v2"


def test_a_rollback_within_the_window_moves_traffic_first_and_starts_no_pod() -> None:
    world = promoted(KEEP)
    since = len(world.decisions)
    world.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"})
    decision = world.tick(1)
    assert (world.phase, world.stable, world.lkg) == ("Healthy", "v1", "v1")
    assert "kept warm" in world.event("RolledBack").message
    assert effects(decision)[0] == ApplyService(80, 8080, version="v1")  # traffic first
    assert DeleteWorkload("v2") in decision.actions
    assert starts_of(world, "v1", since) == [] and world.workloads["v1"].ready_replicas == 4
    assert world.status.warm is None and world.replicas() == {"v1": 4}


def test_a_bake_revert_is_instant_because_the_bake_keeps_the_previous_version_warm() -> None:
    world = promoted({"bake": "30m"})
    assert world.phase == "Baking" and world.status.warm.version == "v1"
    assert world.status.warm.until is None  # no keepPrevious: warm for the bake only
    ready_before = world.workloads["v1"].ready_replicas
    since = len(world.decisions)
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    assert world.stable == "v1" and world.service_version == "v1"
    assert ready_before == 4 and starts_of(world, "v1", since) == []
    assert world.replicas() == {"v1": 4}


def test_a_bake_without_keep_previous_releases_the_previous_version_when_it_completes() -> None:
    world = promoted({"bake": "30m"})
    world.run_until(lambda w: w.phase == "Healthy", step=60)
    assert world.status.warm is None and world.replicas() == {"v2": 4}


def test_keep_previous_outlasts_the_bake_when_its_window_is_longer() -> None:
    world = promoted({"bake": "10m", "keepPrevious": {"for": "1h", "replicas": 2}})
    world.run_until(lambda w: w.phase == "Healthy", step=60)
    assert world.status.warm.version == "v1" and world.replicas() == {"v1": 2, "v2": 4}
    assert "v1 kept warm until" in world.event("BakeCompleted").message


def test_fewer_warm_replicas_still_move_traffic_at_once_on_abort_and_scale_up_after() -> None:
    world = promoted({"bake": "30m", "keepPrevious": {"for": "30m", "replicas": 1}})
    assert world.replicas() == {"v1": 1, "v2": 4}
    world.send("abort", id="a")
    decision = world.tick(1)
    assert world.phase == "Reverted" and world.service_version == "v1"
    assert effects(decision)[0] == ApplyService(80, 8080, version="v1")
    assert ScaleWorkload("v1", 4) in decision.actions and DeleteWorkload("v2") in decision.actions


def test_a_new_canary_ends_the_window_and_gets_traffic_only_once_the_warm_version_is_gone() -> None:
    world = promoted(KEEP)
    world.release("v3")
    world.tick(1)
    assert world.status.canary.version == "v3" and world.status.warm is None
    assert "v1" not in world.workloads  # nothing serves from it: it goes at once
    world.run_until(lambda w: w.status.canary.ready_at is not None, step=5)
    assert world.service_version is None  # every version: the replica-ratio split
    assert set(world.replicas()) == {"v2", "v3"}


def test_during_a_canary_the_service_selects_every_version_and_otherwise_the_stable_alone() -> None:
    world = healthy_world()
    assert world.service_version == "v1"
    world.release("v2")
    world.run_until(lambda w: w.status.canary is not None and w.status.canary.ready_at is not None, step=5)
    assert world.service_version is None


@pytest.mark.parametrize(
    ("keep", "needle"),
    [
        ({"for": "soon"}, "rollout.keepPrevious.for"),
        ({"for": "1m", "replicas": -1}, "rollout.keepPrevious.replicas"),
        ({"replicas": 1}, "rollout.keepPrevious.for"),
    ],
)
def test_bad_keep_previous_is_refused_naming_the_field(keep: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as error:
        ModelDeploymentSpec.model_validate(base_spec(rollout={"keepPrevious": keep}))
    assert needle in str(error.value).replace("\n", ".")
