"""Property tests of the rollout engine: random histories of time, verdicts, readiness, commands and spec
changes, with invariants checked at every single decision.

Invariants:
- nothing is promoted without a passing analysis at the last step: the latest analysis run handed in for
  the canary (in this rollout attempt) was made at the last step and passed; `promote --full` is a human
  override and is exempt;
- the canary's weight never exceeds its current step's, nor its Deployment the replicas of that weight;
- a revert always restores lastKnownGood (status and Deployments) and leaves lastKnownGood unchanged;
- decide is deterministic, and deciding again on the same inputs once its actions were applied (pods not
  yet ready, nothing new from Prometheus or the user) yields no new actions (idempotence);
- the audit trail is numbered without gaps, bounded, and matches the Events; the status always round-trips
  through the API form; a Healthy rollout serves its last known good version.

Runtime is kept modest and reproducible (derandomized); CANARIA_PROPERTY_EXAMPLES raises the count locally.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaria.core.api import ModelDeploymentStatus, Phase, Verdict
from canaria.core.commands import ACTIONS
from canaria.core.engine import (
    ApplyService,
    ApplyWorkload,
    Decision,
    DeleteWorkload,
    EmitEvent,
    ScaleWorkload,
    analysed_version,
    decide,
    split_replicas,
)
from canaria.core.observations import Observations, WorkloadObservation

from .world import BAD, ERROR, GOOD, NO_DATA, World

EXAMPLES = int(os.environ.get("CANARIA_PROPERTY_EXAMPLES", "200"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VERSIONS = ["v1", "v2", "v3", "v4"]
STEP_VARIANTS = [
    [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}, {"weight": 100}],
    [{"weight": 20}, {"weight": 60, "manual": True}, {"weight": 100}],
    [{"weight": 50, "pause": "1m"}],
    [{"weight": 5, "pause": "30s"}, {"weight": 25}, {"weight": 75, "pause": "3m"}],
]
METRICS = [
    {"name": "error-rate", "query": 'e{version="{{version}}"}', "max": 0.01},
    {"name": "p95-latency", "query": 'l{version="{{version}}"}', "max": 0.25},
    {"name": "cost", "query": 'c{version="{{version}}"}', "max": 0.002, "dryRun": True},
]

# -- the operations a history is made of --------------------------------------------------------------

seconds = st.sampled_from([1, 5, 10, 30, 60, 61, 120, 301, 700])
health = st.sampled_from([GOOD, GOOD, GOOD, BAD, NO_DATA, ERROR])
operation = st.one_of(
    st.tuples(st.just("tick"), st.none(), seconds),
    st.tuples(st.just("health"), st.tuples(st.sampled_from(VERSIONS), health), seconds),
    st.tuples(
        st.just("readiness"),
        st.tuples(st.sampled_from(VERSIONS), st.sampled_from([0, 45, 400, math.inf])),
        seconds,
    ),
    st.tuples(
        st.just("command"),
        st.tuples(st.sampled_from(ACTIONS), st.sampled_from(["c1", "c2", "c3", "c4", "c5"]), st.booleans()),
        seconds,
    ),
    st.tuples(
        st.just("release"), st.tuples(st.sampled_from(VERSIONS), st.sampled_from([0.95, 0.95, 0.5])), seconds
    ),
    st.tuples(st.just("replicas"), st.integers(1, 6), seconds),
    st.tuples(st.just("paused"), st.booleans(), seconds),
    st.tuples(st.just("steps"), st.integers(0, len(STEP_VARIANTS) - 1), seconds),
    st.tuples(st.just("bake"), st.sampled_from([None, "5m"]), seconds),
    st.tuples(st.just("deadline"), st.sampled_from(VERSIONS), seconds),
)
histories = st.lists(operation, min_size=5, max_size=45)
configs = st.fixed_dictionaries(
    {
        "on_inconclusive": st.sampled_from(["revert", "pause"]),
        "failure_limit": st.integers(0, 2),
        "inconclusive_limit": st.integers(0, 2),
        "bake": st.sampled_from([None, "5m"]),
        "steps": st.integers(0, len(STEP_VARIANTS) - 1),
    }
)


def make_world(config: dict[str, Any]) -> World:
    rollout: dict[str, Any] = {
        "steps": STEP_VARIANTS[config["steps"]],
        "analysis": {
            "interval": "1m",
            "failureLimit": config["failure_limit"],
            "inconclusiveLimit": config["inconclusive_limit"],
            "onInconclusive": config["on_inconclusive"],
            "metrics": METRICS,
        },
        "progressDeadline": "10m",
    }
    if config["bake"]:
        rollout["bake"] = config["bake"]
    return World.create(rollout=rollout)


def apply_operation(world: World, kind: str, payload: Any) -> None:
    if kind == "health":
        version, value = payload
        world.health[version] = value
    elif kind == "readiness":
        version, delay = payload
        world.readiness[version] = delay
    elif kind == "command":
        action, command_id, full = payload
        world.send(action, id=command_id, full=full)
    elif kind == "release":
        version, auc = payload
        world.release(version, auc=auc)
    elif kind == "replicas":
        world.edit(replicas=payload)
    elif kind == "paused":
        world.edit(paused=payload)
    elif kind == "steps":
        world.edit(rollout={"steps": STEP_VARIANTS[payload]})
    elif kind == "bake":
        world.edit(rollout={"bake": payload})
    elif kind == "deadline" and payload in world.workloads:
        world.workloads[payload].deadline_exceeded = True


# -- the invariants ----------------------------------------------------------------------------------


@dataclass
class RunRecord:
    at: datetime
    version: str
    attempt: datetime | None  # canary.since: one rollout attempt of the version
    step: int | None  # canary step the run judged (None: during bake)
    verdict: Verdict


class Checker:
    """Called after every decision; keeps the log of analysis runs handed to the engine."""

    def __init__(self) -> None:
        self.runs: list[RunRecord] = []
        self.decisions = 0
        self.seen_reasons: set[str] = set()

    def __call__(
        self, world: World, before: ModelDeploymentStatus, obs: Observations, decision: Decision
    ) -> None:
        self.decisions += 1
        spec = world.spec
        after = decision.status
        steps = spec.rollout.steps
        transitions = [a for a in decision.actions if isinstance(a, EmitEvent) and a.key.isdigit()]
        reasons = [t.reason for t in transitions]
        self.seen_reasons.update(reasons)
        if obs.analysis is not None and before.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.BAKING):
            canary = before.canary
            version = analysed_version(before)
            if version is not None:
                step = None if canary is None else min(canary.step, len(steps) - 1)
                self.runs.append(
                    RunRecord(
                        obs.analysis.at, version, canary.since if canary else None, step, obs.analysis.verdict
                    )
                )

        # determinism: the same inputs give the same decision
        again = decide(spec, before, obs, world.now)
        assert again.status.dump() == after.dump()
        assert again.actions == decision.actions
        assert again.requeue_after == decision.requeue_after

        # idempotence: decide again once the actions took effect (new pods not ready yet, no new inputs)
        applied = _applied(obs, decision)
        settled = decide(spec, after, applied, world.now)
        assert settled.actions == (), (
            f"second decision acted again: {settled.actions} after {decision.actions}"
        )
        first, second = after.dump(), settled.status.dump()
        for status in (first, second):
            status.pop("conditions", None)  # readiness of a freshly scaled Deployment may read differently
            for key in ("effectiveWeight", "description"):  # as the replicas the router reports
                (status.get("traffic") or {}).pop(key, None)
        assert first == second

        # no promotion without a passing analysis at the last step (a full promote is a human override)
        full_promote = (
            obs.command is not None
            and obs.command.action == "promote"
            and obs.command.full
            and (before.last_command is None or before.last_command.id != obs.command.id)
        )
        if "Promoted" in reasons and not full_promote:
            canary = before.canary
            assert canary is not None
            last = len(steps) - 1
            assert min(canary.step, last) == last, f"promoted from step {canary.step} of {len(steps)}"
            mine = [r for r in self.runs if r.version == canary.version and r.attempt == canary.since]
            assert mine, "promoted without any analysis"
            assert mine[-1].verdict == Verdict.PASS, f"promoted after a {mine[-1].verdict} run"
            assert mine[-1].step == last, "the passing run was not made at the last step"
            if canary.ready_at is not None:
                assert mine[-1].at >= canary.ready_at

        # the canary never carries more than its current step's weight
        if after.canary is not None:
            assert after.canary.step < len(steps)
            assert after.canary.weight == steps[after.canary.step].weight
            cap = split_replicas(spec.replicas, after.canary.weight)[0]
            workload = world.workloads.get(after.canary.version)
            assert workload is None or workload.replicas <= cap
            assert after.phase in (Phase.PROGRESSING, Phase.PAUSED)

        # a revert restores lastKnownGood, in status and in Deployments
        if (after.phase == Phase.REVERTED and before.phase != Phase.REVERTED) or "Aborted" in reasons:
            lkg = before.last_known_good
            assert lkg is not None
            assert after.stable.version == lkg.version
            assert after.last_known_good.version == lkg.version
            assert after.canary is None and after.bake_started_at is None
            assert world.replicas() == {lkg.version: spec.replicas}
            assert after.rejected is not None and after.rejected.version == spec.model.version

        # audit trail: numbered without gaps, bounded, one Event per entry with its number
        seqs = [h.seq for h in after.history]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True
        assert len(seqs) <= 50
        new_entries = [h for h in after.history if not before.history or h.seq > before.history[-1].seq]
        assert [(str(h.seq), h.reason) for h in new_entries] == [(t.key, t.reason) for t in transitions]
        for event in decision.actions:
            if isinstance(event, EmitEvent) and event.type == "Warning":
                assert "fraud-team@example.com" in event.message

        # coherent status
        if after.phase == Phase.HEALTHY:
            assert after.canary is None and after.bake_started_at is None
            assert after.stable is not None and after.last_known_good is not None
            assert after.stable.version == after.last_known_good.version, "Healthy on an unproven version"
        if after.phase == Phase.BAKING:
            assert after.bake_started_at is not None
        if after.control_paused:
            assert analysed_version(after) is not None, "a hold outlived the rollout it held"
        if after.last_known_good is not None:
            assert after.stable is not None
        ModelDeploymentStatus.model_validate(after.dump())

        # what GitOps tools read: one of Ready / Reconciling / Stalled, for this generation; Ready only
        # when the spec's version serves at full size, Stalled exactly when a person must act
        conditions = {c.type: c for c in after.conditions}
        release = [conditions[t] for t in ("Ready", "Reconciling", "Stalled")]
        assert [c.status for c in release].count("True") == 1, release
        assert {c.observed_generation for c in after.conditions} == {obs.generation}
        if conditions["Ready"].status == "True":
            desired = spec.model.version
            assert after.stable.version == desired and after.canary is None
            assert after.bake_started_at is None, "Ready during a bake without readyWhileBaking"
            seen = obs.workloads.get(desired)
            assert seen is not None and seen.ready() and seen.replicas == spec.replicas
        stuck = after.phase == Phase.FAILED or (
            after.rejected is not None and after.rejected.version == spec.model.version
        )
        assert (conditions["Stalled"].status == "True") == stuck


def _applied(obs: Observations, decision: Decision) -> Observations:
    """The observations once the decision's actions took effect, before any new pod became ready."""
    workloads = dict(obs.workloads)
    ports, pinned = obs.service_ports, obs.service_version
    for action in decision.actions:
        if isinstance(action, ApplyWorkload):
            # the Deployment controller has not caught up yet: status.observedGeneration lags behind
            old = workloads.get(action.version)
            ready = min(old.ready_replicas, action.replicas) if old is not None else 0
            workloads[action.version] = WorkloadObservation(
                action.version,
                action.replicas,
                ready_replicas=ready,
                updated=False,
                template_hash=action.template_hash,
            )
        elif isinstance(action, ScaleWorkload):
            old = workloads[action.version]
            workloads[action.version] = dataclasses.replace(
                old,
                replicas=action.replicas,
                ready_replicas=min(old.ready_replicas, action.replicas),
                updated=False,
            )
        elif isinstance(action, DeleteWorkload):
            workloads.pop(action.version, None)
        elif isinstance(action, ApplyService):
            ports, pinned = (action.port, action.target_port), action.version
    return Observations(
        generation=obs.generation,
        workloads=workloads,
        service_ports=ports,
        service_version=pinned,
        analysis=None,
        command=obs.command,
        change_reason=obs.change_reason,
        changed_by=obs.changed_by,
    )


# -- the properties ----------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(config=configs, history=histories)
def test_invariants_hold_along_any_history(
    config: dict[str, Any], history: list[tuple[str, Any, int]]
) -> None:
    world = make_world(config)
    checker = Checker()
    world.on_decision = checker
    world.tick()
    for kind, payload, wait in history:
        apply_operation(world, kind, payload)
        world.tick(wait)
    assert checker.decisions == len(history) + 1


@PROPERTY_SETTINGS
@given(config=configs, history=st.lists(st.tuples(health, seconds), min_size=1, max_size=30))
def test_a_rollout_ends_promoted_or_reverted_or_held(
    config: dict[str, Any], history: list[tuple[str, int]]
) -> None:
    """Whatever Prometheus says, a rollout of v2 over a healthy v1 never ends anywhere unexplained: after the
    history and an hour of good data it is Healthy on v2, Reverted to v1, or held Paused for a person."""
    world = make_world(config)
    world.on_decision = Checker()
    world.run_until(lambda w: w.phase == "Healthy", step=5)
    world.release("v2")
    world.tick(1)
    for value, wait in history:
        world.health["v2"] = value
        world.tick(wait)
    world.health["v2"] = GOOD
    for _ in range(60):
        world.tick(60)
        if (
            world.status.canary is not None
            and world.status.canary.step is not None
            and world.phase == "Progressing"
        ):
            step = world.spec.rollout.steps[world.status.canary.step]
            if step.manual:
                world.send("promote", id=f"p-{world.now.timestamp()}")
    outcome = (world.phase, world.stable)
    assert outcome in {("Healthy", "v2"), ("Reverted", "v1"), ("Paused", "v1"), ("Paused", "v2")}, outcome
    if world.phase == "Paused":
        assert world.status.control_paused and config["on_inconclusive"] == "pause"
