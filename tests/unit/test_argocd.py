"""Argo CD's health check and resource actions (manifests/argocd, run in a real Lua 5.1) and kstatus's rules
(what Flux waits on), held against statuses the engine produced in rollouts driven through every phase.

Argo CD's health statuses, as Argo CD defines them: Healthy (the version the spec names serves), Progressing
(on its way), Degraded (failed: here reverted, refused, or past its deadline), Suspended (held, waiting for
a person or spec.paused). kstatus: Current, InProgress, Failed. The expected value of each is worked out
from what the status says happened (phase, rejected version, readiness), not from the conditions the Lua
reads, so a wrong condition fails here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from scripts.generate import ARGOCD_ACTIONS

from canaria.core.api import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from canaria.core.commands import COMMAND_ANNOTATION, new_command, parse_command
from canaria.core.engine import Decision, command_refusal
from canaria.core.observations import Observations
from tests.argocd import ArgoCD, kstatus

from .world import BAD, NO_DATA, World, healthy_world

KSTATUS_OF = {
    "Healthy": "Current",
    "Progressing": "InProgress",
    "Suspended": "InProgress",
    "Degraded": "Failed",
}


@pytest.fixture(scope="module")
def argocd() -> ArgoCD:
    return ArgoCD()


def resource(world: World, status: ModelDeploymentStatus) -> dict[str, Any]:
    """The ModelDeployment as the API server would return it."""
    annotations = {COMMAND_ANNOTATION: world.command.to_annotation()} if world.command else {}
    return {
        "apiVersion": "canaria.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "generation": world.generation,
            "annotations": annotations,
        },
        "spec": world.spec.dump(),
        "status": status.dump(),
    }


@dataclasses.dataclass
class Seen:
    resource: dict[str, Any]
    expected: str  # Argo CD health worked out from what happened


def expected_health(world: World, status: ModelDeploymentStatus, obs: Observations) -> str:
    desired = world.spec.model.version
    if status.phase in (Phase.REVERTED, Phase.FAILED) or (
        status.rejected is not None and status.rejected.version == desired
    ):
        return "Degraded"
    if status.phase == Phase.PAUSED:
        return "Suspended"
    seen = obs.workloads.get(desired)
    serving = seen is not None and seen.ready() and seen.replicas == world.spec.replicas
    if status.phase == Phase.HEALTHY and status.stable.version == desired and serving:
        return "Healthy"
    return "Progressing"


def journeys() -> list[Seen]:
    """Every status the engine decided along rollouts through every phase."""
    seen: list[Seen] = []

    def record(world: World, _before: ModelDeploymentStatus, obs: Observations, decision: Decision) -> None:
        seen.append(Seen(resource(world, decision.status), expected_health(world, decision.status, obs)))

    def drive(world: World, *steps: Callable[[World], Any]) -> None:
        world.on_decision = record
        for step in steps:
            step(world)

    def until(phase: str, step: float = 10) -> Callable[[World], None]:
        return lambda w: w.run_until(lambda x: x.phase == phase, step=step)

    # first deployment, then v2 through its steps, a pause command, its bake, Healthy
    drive(
        World.create(rollout={"bake": "10m"}),
        until("Healthy", 5),
        lambda w: (
            w.release("v2"),
            w.run_until(lambda x: x.status.canary and x.status.canary.ready_at, step=5),
        ),
        lambda w: (w.send("pause"), w.tick(1), w.run(120)),
        lambda w: (w.send("resume"), w.tick(1)),
        until("Baking"),
        until("Healthy", 60),
    )
    # reverted, then a person names v1 again in the spec
    drive(
        healthy_world(),
        lambda w: (w.release("v2"), w.tick(5), w.health.update({"v2": BAD})),
        until("Reverted", 30),
        lambda w: w.run(60),
        lambda w: (w.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"}), w.run(30)),
    )
    # the spec goes back to v1 mid-rollout: Healthy, but not at full size until v1 has scaled up again
    drive(
        healthy_world(),
        lambda w: (w.release("v2"), w.run_until(lambda x: x.status.canary and x.status.canary.step == 1)),
        lambda w: (w.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"}), w.run(30)),
    )
    drive(healthy_world(), lambda w: (w.release("v2", auc=0.5), w.tick(1), w.run(30)))  # refused by its gates
    drive(World.create(), lambda w: w.readiness.update({"v1": math.inf}), until("Failed", 60))
    drive(
        healthy_world(rollout={"analysis": {"onInconclusive": "pause"}}),
        lambda w: (w.release("v2"), w.tick(5), w.health.update({"v2": NO_DATA})),
        until("Paused", 30),
    )
    drive(healthy_world(), lambda w: (w.release("v2", paused=True), w.tick(5), w.run(30)))
    return seen


@pytest.fixture(scope="module")
def seen() -> list[Seen]:
    return journeys()


def test_the_journeys_reach_every_argocd_health(argocd: ArgoCD, seen: list[Seen]) -> None:
    assert {s.expected for s in seen} == {"Healthy", "Progressing", "Suspended", "Degraded"}
    degraded = {argocd.health(s.resource)["message"].split(":")[0] for s in seen if s.expected == "Degraded"}
    assert degraded == {"Reverted", "GateFailed", "ProgressDeadlineExceeded"}


def test_argocd_health_kstatus_and_kubectl_wait_agree_on_every_status(
    argocd: ArgoCD, seen: list[Seen]
) -> None:
    for s in seen:
        health = argocd.health(s.resource)
        assert health["status"] == s.expected, (health, s.resource["status"]["phase"])
        assert kstatus(s.resource) == KSTATUS_OF[s.expected], s.resource["status"]["conditions"]
        ready = next(c for c in s.resource["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"] == "True") == (s.expected == "Healthy"), "kubectl wait --for=condition=Ready"
        stalled = next(c for c in s.resource["status"]["conditions"] if c["type"] == "Stalled")
        assert (stalled["status"] == "True") == (s.expected == "Degraded"), (
            "kubectl wait --for=condition=Stalled"
        )
        assert health["message"]


def test_a_spec_not_yet_acted_on_is_progressing_everywhere(argocd: ArgoCD, seen: list[Seen]) -> None:
    """Right after `kubectl apply`, generation is ahead of what status describes: no tool may read the old
    conditions as the answer for the new spec."""
    for s in seen:
        stale = {
            **s.resource,
            "metadata": {**s.resource["metadata"], "generation": s.resource["metadata"]["generation"] + 1},
        }
        assert argocd.health(stale) == {
            "status": "Progressing",
            "message": f"Waiting for Canaria to act on generation {stale['metadata']['generation']}",
        }
        assert kstatus(stale) == "InProgress"
    assert argocd.health({"metadata": {"name": "fraud", "generation": 1}})["status"] == "Progressing"
    assert (
        kstatus({**seen[0].resource, "metadata": {"deletionTimestamp": "2026-01-15T09:00:00Z"}})
        == "Terminating"
    )


def test_offered_actions_are_the_commands_the_operator_would_run(argocd: ArgoCD, seen: list[Seen]) -> None:
    offered: set[str] = set()
    for s in seen:
        spec = ModelDeploymentSpec.model_validate(s.resource["spec"])
        status = ModelDeploymentStatus.model_validate(s.resource["status"])
        runnable = {
            name
            for name, (action, full) in ARGOCD_ACTIONS.items()
            if command_refusal(action, spec, status, full=full) is None
        }
        enabled = argocd.enabled_actions(s.resource)
        assert enabled == runnable, (status.phase, status.control_paused, status.rejected)
        offered |= enabled
    assert offered == set(ARGOCD_ACTIONS)


def without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def _at_first_step() -> World:
    world = healthy_world()
    world.release("v2")
    world.run_until(lambda w: w.status.canary is not None and w.status.canary.ready_at is not None, step=5)
    return world


def _paused() -> World:
    world = _at_first_step()
    world.send("pause")
    world.tick(1)
    return world


def _reverted() -> World:
    world = _at_first_step()
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    return world


@pytest.mark.parametrize(
    ("given", "name", "result"),
    [
        (_at_first_step, "promote", "promote requested"),
        (_at_first_step, "promote-full", "promote requested: to 100%"),
        (_at_first_step, "pause", "paused"),
        (_at_first_step, "abort", "aborted"),
        (_paused, "resume", "resumed"),
        (_reverted, "retry", "retrying v2"),
    ],
)
def test_each_action_writes_the_cli_command_and_the_operator_runs_it(
    argocd: ArgoCD, given: Callable[[], World], name: str, result: str
) -> None:
    world = given()
    before = resource(world, world.status)
    assert name in argocd.enabled_actions(before)
    after = argocd.act(name, before)
    annotation = after["metadata"]["annotations"][COMMAND_ANNOTATION]
    command = parse_command(after["metadata"]["annotations"])
    action, full = ARGOCD_ACTIONS[name]
    # what `canaria <action>` writes for the same user, moment and id, byte for byte
    cli = new_command(
        action, user="argocd", reason=None, full=full, now=datetime.fromisoformat(command.issued_at)
    )
    assert dataclasses.replace(cli, id=command.id).to_annotation() == annotation
    assert len(command.id) == 12
    # nothing else changes (Lua cannot tell an empty list from an empty map: compare without them)
    before["metadata"]["annotations"][COMMAND_ANNOTATION] = annotation
    assert without_empty(after) == without_empty(before)
    world.command = command
    world.tick(1)
    handled = world.status.last_command
    assert (handled.id, handled.user) == (command.id, "argocd")
    assert handled.result.startswith(result), handled.result


def test_two_actions_get_two_ids(argocd: ArgoCD) -> None:
    world = _at_first_step()
    ids = {
        parse_command(argocd.act("pause", resource(world, world.status))["metadata"]["annotations"]).id
        for _ in range(20)
    }
    assert len(ids) == 20
