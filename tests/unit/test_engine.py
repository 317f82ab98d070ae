"""Table-driven tests of every transition of the rollout engine, run in the simulated `World`.

Each case drives a world to a situation, does one thing (a tick, a spec edit, a command, a verdict) and
checks the resulting phase, versions, replica counts per version, Events (reason, type, what the message
names) and history entries. The defaults of `world.base_spec`: fraud v1, 4 replicas, steps 10% (5m) /
50% (10m) / 100%, analysis every 1m with error-rate <= 0.01 and p95-latency <= 0.25, failureLimit 1,
inconclusiveLimit 2, progressDeadline 10m, a gate auc >= 0.9, owner fraud-team@example.com.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from canaria.core.api import Metric, ModelDeploymentStatus, Phase, Verdict
from canaria.core.commands import COMMAND_ANNOTATION, parse_command
from canaria.core.engine import (
    ApplyService,
    ApplyWorkload,
    DeleteWorkload,
    EmitEvent,
    ScaleWorkload,
    analysis_due,
    decide,
    desired_workloads,
    refused_status,
    split_replicas,
    template_hash,
)
from canaria.core.observations import AnalysisRun, Observations, WorkloadObservation

from .world import BAD, ERROR, GOOD, NO_DATA, T0, World, healthy_world
from .world import rolled_out_to as world_rolled_out_to

OWNER = "fraud-team@example.com"
REASON = "retrained on January data"


def rolled_out_to(world: World, version: str, *, step: int, ready: bool = True) -> World:
    """Release `version` (with a change reason) and tick until its canary is at `step`."""
    return world_rolled_out_to(world, version, step=step, ready=ready, change_reason=REASON)


def new_events(world: World, action: Callable[[], Any]) -> list[EmitEvent]:
    start = len(world.events)
    action()
    return world.events[start:]


def assert_names(event: EmitEvent, *needles: str) -> None:
    for needle in needles:
        assert needle in event.message, f"{needle!r} not in {event.reason} message {event.message!r}"


# ------------------------------------------------------------------------------------ the table


@dataclass
class Case:
    """A situation (`given`), one thing happening (`when`), and what must follow."""

    id: str
    given: Callable[[], World]
    when: Callable[[World], Any]
    phase: str
    stable: str | None
    canary: str | None
    lkg: str | None
    replicas: dict[str, int]
    events: list[tuple[str, str]]  # (type, reason) of the Events `when` emitted, in order
    mentions: dict[str, list[str]] = field(default_factory=dict)  # reason → what its message names
    transition: bool = True  # False: Events only (e.g. a failed run within the limit), no phase change


def _fresh() -> World:
    return World.create()


def _at_step(step: int, *, ready: bool = True, **spec: Any) -> Callable[[], World]:
    return lambda: rolled_out_to(healthy_world(**spec), "v2", step=step, ready=ready)


def _with(world_fn: Callable[[], World], **attrs: Any) -> Callable[[], World]:
    def build() -> World:
        world = world_fn()
        for key, value in attrs.items():
            getattr(world, key).update(value)
        return world

    return build


def _baking() -> World:
    world = healthy_world(rollout={"bake": "30m"})
    world.release("v2", change_reason=REASON)
    world.run_until(lambda w: w.phase == "Baking", step=5)
    return world


def _reverted() -> World:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    return world


def _paused_inconclusive() -> World:
    world = rolled_out_to(healthy_world(rollout={"analysis": {"onInconclusive": "pause"}}), "v2", step=0)
    world.health["v2"] = NO_DATA
    world.run_until(lambda w: w.phase == "Paused", step=30)
    return world


def _tick_until(predicate: Callable[[World], bool], step: float = 10) -> Callable[[World], None]:
    return lambda w: w.run_until(predicate, step=step)


def _command(action: str, **kwargs: Any) -> Callable[[World], None]:
    def do(world: World) -> None:
        world.send(action, **kwargs)
        world.tick(1)

    return do


def _release(version: str, **kwargs: Any) -> Callable[[World], None]:
    def do(world: World) -> None:
        world.release(version, change_reason=REASON, **kwargs)
        world.tick(1)

    return do


def _set_health(version: str, health: str, seconds: float = 60) -> Callable[[World], None]:
    def do(world: World) -> None:
        world.health[version] = health
        world.tick(seconds)

    return do


CASES = [
    # -- first deployment ------------------------------------------------------------------------
    Case(
        "first-deployment-starts",
        _fresh,
        lambda w: w.tick(),
        "Progressing",
        "v1",
        None,
        None,
        {"v1": 4},
        [("Normal", "GatePassed"), ("Normal", "RolloutStarted")],
        {"GatePassed": ["v1", "auc=0.94"], "RolloutStarted": ["v1", "first deployment"]},
    ),
    Case(
        "first-deployment-available",
        lambda: (w := World.create(), w.tick())[0],
        lambda w: w.tick(5),
        "Healthy",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Normal", "Available")],
        {"Available": ["v1", "4 ready"]},
    ),
    Case(
        "first-deployment-progress-deadline",
        _with(_fresh, readiness={"v1": math.inf}),
        _tick_until(lambda w: w.phase == "Failed", step=30),
        "Failed",
        "v1",
        None,
        None,
        {"v1": 4},
        [("Normal", "GatePassed"), ("Normal", "RolloutStarted"), ("Warning", "ProgressDeadlineExceeded")],
        {"ProgressDeadlineExceeded": ["v1", "not ready after 10m", "no earlier version", OWNER]},
    ),
    Case(
        "first-deployment-gate-failed",
        lambda: World.create(model={"evaluation": {"auc": 0.81}}),
        lambda w: w.tick(),
        "Failed",
        None,
        None,
        None,
        {},
        [("Warning", "GateFailed")],
        {"GateFailed": ["v1", "auc=0.81", ">= 0.9", OWNER]},
    ),
    # -- a new version: gates, steps, promotion ----------------------------------------------------
    Case(
        "rollout-started",
        healthy_world,
        _release("v2"),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 4, "v2": 1},
        [("Normal", "GatePassed"), ("Normal", "RolloutStarted")],
        {"RolloutStarted": ["v1 → v2", "step 1/3", "weight 10", REASON], "GatePassed": ["v2", "auc=0.95"]},
    ),
    Case(
        "gate-failed-keeps-stable",
        healthy_world,
        _release("v2", auc=0.7),
        "Failed",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "GateFailed")],
        {"GateFailed": ["v2", "auc=0.7", "v1 keeps serving", REASON, OWNER]},
    ),
    Case(
        "step-advanced-after-pause",
        _at_step(0),
        _tick_until(lambda w: w.status.canary.step == 1),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 2},
        [("Normal", "StepAdvanced")],
        {"StepAdvanced": ["v2", "step 2/3", "weight 50", "error-rate=0.005", "p95-latency=0.125", REASON]},
    ),
    Case(
        "promoted-after-last-step",
        _at_step(2),
        _tick_until(lambda w: w.phase == "Healthy"),
        "Healthy",
        "v2",
        None,
        "v2",
        {"v2": 4},
        [("Normal", "Promoted")],
        {"Promoted": ["v1 → v2", "all 3 steps passed", "error-rate=0.005", REASON]},
    ),
    Case(
        "promoted-into-bake",
        _at_step(2, rollout={"bake": "30m"}),
        _tick_until(lambda w: w.phase == "Baking"),
        "Baking",
        "v2",
        None,
        "v1",
        {"v1": 4, "v2": 4},  # v1 kept warm for the bake, no longer selected by the Service
        [("Normal", "Promoted")],
        {"Promoted": ["v1 → v2", "baking 30m", "v1 kept warm"]},
    ),
    Case(
        "bake-completed",
        _baking,
        _tick_until(lambda w: w.phase == "Healthy", step=60),
        "Healthy",
        "v2",
        None,
        "v2",
        {"v2": 4},
        [("Normal", "BakeCompleted")],
        {"BakeCompleted": ["v2", "last known good", "baked 30m", "error-rate="]},
    ),
    Case(
        "bake-failed-reverts-to-previous",
        _baking,
        _tick_until(lambda w: (w.health.update({"v2": BAD}), w.phase)[1] == "Reverted", step=30),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "AnalysisFail"), ("Warning", "AnalysisFail"), ("Warning", "RolledBack")],
        {
            "RolledBack": [
                "v2 → v1",
                "AnalysisFailed",
                "error-rate=0.03",
                "spec still names v2",
                REASON,
                OWNER,
            ]
        },
    ),
    # -- analysis verdicts -------------------------------------------------------------------------
    Case(
        "analysis-failure-within-limit",
        _at_step(0),
        _set_health("v2", BAD),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 1},
        [("Warning", "AnalysisFail")],
        {"AnalysisFail": ["v2", "error-rate=0.03", "<= 0.01", "1 in a row, limit 1"]},
        transition=False,
    ),
    Case(
        "analysis-failed-reverts",
        _at_step(1),
        _tick_until(lambda w: (w.health.update({"v2": BAD}), w.phase)[1] == "Reverted"),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "AnalysisFail"), ("Warning", "AnalysisFail"), ("Warning", "RolledBack")],
        {"RolledBack": ["v2 → v1", "error-rate=0.03", "p95-latency=0.75", "2 failed runs, limit 1", OWNER]},
    ),
    Case(
        "analysis-inconclusive-reverts",
        _at_step(0),
        _tick_until(lambda w: (w.health.update({"v2": NO_DATA}), w.phase)[1] == "Reverted"),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "AnalysisInconclusive")] * 3 + [("Warning", "RolledBack")],
        {"RolledBack": ["AnalysisInconclusive", "no data", "3 inconclusive runs, limit 2"]},
    ),
    Case(
        "analysis-inconclusive-pauses",
        _at_step(0, rollout={"analysis": {"onInconclusive": "pause"}}),
        _tick_until(lambda w: (w.health.update({"v2": NO_DATA}), w.phase)[1] == "Paused"),
        "Paused",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 1},
        [("Warning", "AnalysisInconclusive")] * 4,
        {"AnalysisInconclusive": ["v2 held for a person", "no data", "canaria resume", OWNER]},
    ),
    Case(
        "analysis-error-reverts-at-once",
        _at_step(0, rollout={"analysis": {"failureLimit": 5}}),
        _set_health("v2", ERROR),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "AnalysisFail"), ("Warning", "RolledBack")],
        {"RolledBack": ["AnalysisError", "can never pass", "bad_data"]},
    ),
    # -- readiness and deadlines -------------------------------------------------------------------
    Case(
        "canary-progress-deadline",
        _with(_at_step(0, ready=False), readiness={"v2": math.inf}),
        _tick_until(lambda w: w.phase == "Reverted", step=30),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "RolledBack")],
        {"RolledBack": ["ProgressDeadlineExceeded", "not ready after 10m", "0/1 replicas ready"]},
    ),
    # -- a new version mid-rollout, rollback by spec -----------------------------------------------
    Case(
        "new-version-mid-rollout",
        _at_step(1),
        _release("v3"),
        "Progressing",
        "v1",
        "v3",
        "v1",
        {"v1": 4, "v2": 2, "v3": 1},  # v2 serves on until v1 is back at full size
        [("Normal", "RolloutAbandoned"), ("Normal", "GatePassed"), ("Normal", "RolloutStarted")],
        {"RolloutAbandoned": ["v2", "step 2", "v3"], "RolloutStarted": ["v1 → v3", "step 1/3"]},
    ),
    Case(
        "spec-back-to-stable-mid-rollout",
        _at_step(1),
        lambda w: (w.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"}), w.tick(1)),
        "Healthy",
        "v1",
        None,
        "v1",
        {"v1": 4, "v2": 2},  # v2 serves on until v1 is back at full size
        [("Normal", "RolloutAbandoned"), ("Normal", "Reconciled")],
        {"Reconciled": ["v1", "serving"]},
    ),
    Case(
        "rollback-by-spec-during-bake",
        _baking,
        lambda w: (w.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"}), w.tick(1)),
        "Healthy",
        "v1",
        None,
        "v1",
        {"v1": 4},  # v1 was kept warm for the bake: back at full size at once, v2 goes
        [("Normal", "RolledBack")],
        {"RolledBack": ["rolled back to v1", "last known good", "was serving v2"]},
    ),
    Case(
        "spec-back-to-lkg-after-revert",
        _reverted,
        lambda w: (w.edit(model={"version": "v1", "uri": "s3://models/fraud/v1"}), w.tick(1)),
        "Healthy",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Normal", "Reconciled")],
        {"Reconciled": ["v1"]},
    ),
    Case(
        "new-version-after-revert",
        _reverted,
        _release("v3"),
        "Progressing",
        "v1",
        "v3",
        "v1",
        {"v1": 4, "v3": 1},
        [("Normal", "GatePassed"), ("Normal", "RolloutStarted")],
    ),
    # -- pause -------------------------------------------------------------------------------------
    Case(
        "spec-paused",
        _at_step(0),
        lambda w: (w.edit(paused=True), w.tick(1)),
        "Paused",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 1},
        [("Normal", "Paused")],
        {"Paused": ["spec.paused"]},
    ),
    # -- commands ----------------------------------------------------------------------------------
    Case(
        "command-pause",
        _at_step(0),
        _command("pause", reason="checking dashboards"),
        "Paused",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 1},
        [("Normal", "Paused")],
        {"Paused": ["paused: checking dashboards", "[by alice]"]},
    ),
    Case(
        "command-resume-after-inconclusive-pause",
        _paused_inconclusive,
        lambda w: (w.health.update({"v2": GOOD}), w.send("resume"), w.tick(1)),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 1},
        [("Normal", "Resumed")],
        {"Resumed": ["resumed", "[by alice]"]},
    ),
    Case(
        "command-abort",
        _at_step(1),
        _command("abort", reason="latency complaints"),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "Aborted")],
        {"Aborted": ["v2 → v1", "aborted: latency complaints", "[by alice]", OWNER]},
    ),
    Case(
        "command-abort-during-bake",
        _baking,
        _command("abort"),
        "Reverted",
        "v1",
        None,
        "v1",
        {"v1": 4},
        [("Warning", "Aborted")],
        {"Aborted": ["v2 → v1"]},
    ),
    Case(
        "command-promote-step",
        _at_step(0),
        _command("promote"),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 3, "v2": 2},
        [("Normal", "StepAdvanced")],
        {"StepAdvanced": ["step 2/3", "promoted by alice"]},
    ),
    Case(
        "command-promote-full",
        _at_step(0),
        _command("promote", full=True),
        "Healthy",
        "v2",
        None,
        "v2",
        {"v1": 3, "v2": 4},  # v1 serves on until v2 is ready at full size
        [("Normal", "Promoted")],
        {"Promoted": ["v1 → v2", "promoted fully by command, skipping 2 step(s)", "[by alice]"]},
    ),
    Case(
        "command-promote-during-bake",
        _baking,
        _command("promote"),
        "Healthy",
        "v2",
        None,
        "v2",
        {"v2": 4},
        [("Normal", "BakeCompleted")],
        {"BakeCompleted": ["bake ended early by command", "[by alice]"]},
    ),
    Case(
        "command-retry-after-revert",
        _reverted,
        _command("retry", reason="threshold was too tight"),
        "Progressing",
        "v1",
        "v2",
        "v1",
        {"v1": 4, "v2": 1},
        [("Normal", "GatePassed"), ("Normal", "RolloutStarted")],
        {"RolloutStarted": ["v1 → v2 (retry)", "[by alice]"]},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_transition(case: Case) -> None:
    world = case.given()
    seq_before = world.status.history[-1].seq if world.status.history else 0
    events = new_events(world, lambda: case.when(world))
    assert (world.phase, world.stable, world.canary, world.lkg) == (
        case.phase,
        case.stable,
        case.canary,
        case.lkg,
    )
    assert world.replicas() == case.replicas
    assert [(e.type, e.reason) for e in events] == case.events
    for reason, needles in case.mentions.items():
        matching = [e for e in events if e.reason == reason]
        assert matching, f"no {reason} event"
        assert_names(matching[-1], *needles)
    # every transition is a history entry numbered like its Event (Events keyed by seq)
    transitions = [e for e in events if e.key.isdigit()]
    entries = [h for h in world.status.history if h.seq > seq_before]
    assert [h.seq for h in entries] == list(range(seq_before + 1, seq_before + 1 + len(entries)))
    assert [(str(h.seq), h.reason) for h in entries] == [(e.key, e.reason) for e in transitions]
    assert bool(entries) == case.transition, "a transition leaves a history entry; nothing else does"
    if entries:
        assert entries[-1].to_phase == case.phase
    for event in events:
        if event.type == "Warning":
            assert OWNER in event.message, event
        assert event.reason[0].isupper() and " " not in event.reason


# ----------------------------------------------------------------------------- the whole journey


def test_canary_journey_replicas_and_events() -> None:
    """Every reconciliation of a healthy rollout, with the replica split at each moment."""
    world = healthy_world()
    world.release("v2", change_reason=REASON)
    seen: list[tuple[str, dict[str, int], tuple[str, ...]]] = []
    for _ in range(400):
        decision = world.tick(5)
        reasons = tuple(a.reason for a in decision.actions if isinstance(a, EmitEvent))
        if not seen or seen[-1][1] != world.replicas() or reasons:
            seen.append((world.phase, world.replicas(), reasons))
        if world.phase == "Healthy":
            break
    assert seen == [
        ("Progressing", {"v1": 4, "v2": 1}, ("GatePassed", "RolloutStarted")),  # stable keeps capacity
        ("Progressing", {"v1": 3, "v2": 1}, ()),  # canary ready: stable gives up its share
        ("Progressing", {"v1": 3, "v2": 2}, ("StepAdvanced",)),
        ("Progressing", {"v1": 2, "v2": 2}, ()),
        ("Progressing", {"v1": 2, "v2": 4}, ("StepAdvanced",)),
        ("Progressing", {"v1": 0, "v2": 4}, ()),
        ("Healthy", {"v2": 4}, ("Promoted",)),
    ]
    assert world.history_reasons() == [
        "RolloutStarted",
        "Available",
        "RolloutStarted",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    assert [h.seq for h in world.status.history] == [1, 2, 3, 4, 5, 6]
    started = world.status.history[2]
    assert (started.from_phase, started.to_phase, started.version) == ("Healthy", "Progressing", "v2")
    assert started.change_reason == REASON
    assert world.status.stable.lineage.training_run == "run-v2"  # lineage travels with the version
    assert world.status.last_known_good.version == "v2"
    assert world.status.rejected is None


def test_first_deployment_waits_for_readiness_without_a_deadline_hit() -> None:
    world = World.create()
    world.readiness["v1"] = 90
    world.tick()
    decisions = world.run(80, step=10)
    assert world.phase == "Progressing"
    assert all(d.requeue_after is not None and 0 < d.requeue_after <= 2.0 for d in decisions)
    world.run_until(lambda w: w.phase == "Healthy")
    assert world.lkg == "v1"
    assert world.reasons() == ["GatePassed", "RolloutStarted", "Available"]


def test_first_deployment_deadline_from_the_deployment_condition() -> None:
    world = World.create()
    world.readiness["v1"] = math.inf
    world.tick()
    world.workloads["v1"].deadline_exceeded = True
    world.tick(5)
    assert world.phase == "Failed"
    assert world.event("ProgressDeadlineExceeded").type == "Warning"
    # once the pods come up after all, the version is serving: failure is not forever
    world.readiness["v1"] = 0
    world.workloads["v1"].deadline_exceeded = False
    world.tick(5)
    assert (world.phase, world.lkg) == ("Healthy", "v1")


def test_first_deployment_replaced_before_it_was_ready() -> None:
    world = World.create()
    world.readiness["v1"] = math.inf
    world.tick()
    world.release("v2")
    world.tick(5)
    assert (world.phase, world.stable, world.lkg) == ("Progressing", "v2", None)
    assert world.replicas() == {"v2": 4}
    assert_names(world.event("RolloutStarted"), "replacing v1, which never became ready")


def test_first_deployment_gate_failure_then_a_fixed_version() -> None:
    world = World.create(model={"evaluation": {"auc": 0.5}})
    world.run(60)
    assert world.phase == "Failed" and world.reasons() == ["GateFailed"]  # refused once, not every tick
    assert world.status.rejected.version == "v1" and world.workloads == {}
    world.release("v2", auc=0.97)
    world.run_until(lambda w: w.phase == "Healthy")
    assert (world.stable, world.lkg, world.status.rejected) == ("v2", "v2", None)


def test_missing_evaluation_metric_fails_the_gate() -> None:
    world = healthy_world()
    world.edit(
        model={"version": "v2", "uri": "s3://models/fraud/v2", "evaluation": {"auc": None, "precision": 0.9}}
    )
    world.tick(1)
    assert world.phase == "Failed"
    assert_names(world.event("GateFailed"), "auc missing from spec.model.evaluation")


# ----------------------------------------------------------------------------- steps and pauses


def test_pause_counts_only_once_the_canary_is_ready() -> None:
    world = healthy_world()
    world.readiness["v2"] = 120  # pods take two minutes to start
    world.release("v2")
    world.tick(1)
    started = world.now
    world.run_until(lambda w: w.status.canary.ready_at is not None, step=10)
    assert (world.status.canary.ready_at - started).total_seconds() >= 120
    assert world.replicas() == {"v1": 3, "v2": 1}
    ready_at = world.status.canary.ready_at
    world.run_until(lambda w: w.status.canary.step == 1, step=10)
    advanced = world.now - ready_at
    assert timedelta(minutes=5) <= advanced < timedelta(minutes=5, seconds=70)
    assert world.now - started >= timedelta(minutes=7)


def test_no_analysis_while_the_canary_is_not_ready() -> None:
    world = healthy_world()
    world.readiness["v2"] = 300
    world.release("v2")
    world.run(240, step=10)
    assert world.analysis_runs == [] or all(
        r.at < world.now - timedelta(minutes=4) for r in world.analysis_runs
    )
    assert world.status.analysis.last_run_at is None


def test_step_without_pause_advances_on_one_passing_analysis() -> None:
    world = healthy_world(rollout={"steps": [{"weight": 25}, {"weight": 100}]})
    world.release("v2")
    world.tick(1)
    world.tick(5)  # canary ready; analysis due at once
    assert world.status.canary.step == 1
    assert_names(world.event("StepAdvanced"), "step 2/2", "error-rate=0.005")


def test_a_failing_analysis_never_advances_a_step() -> None:
    world = rolled_out_to(healthy_world(rollout={"analysis": {"failureLimit": 100}}), "v2", step=0)
    world.health["v2"] = BAD
    world.run(3600, step=30)
    assert world.status.canary.step == 0 and world.phase == "Progressing"


def test_step_pause_requeue_is_the_shorter_of_pause_and_next_analysis() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    decision = world.tick(1)
    assert decision.requeue_after is not None and 0 < decision.requeue_after <= 60
    world.edit(rollout={"analysis": {"interval": "10m"}})
    decision = world.tick(1)
    assert decision.requeue_after == pytest.approx(300 - (world.now - world.status.canary.ready_at).seconds)


def test_requeue_is_none_when_only_events_can_change_things() -> None:
    world = healthy_world()
    assert world.tick(60).requeue_after is None
    world = _reverted()
    assert world.tick(60).requeue_after is None


def test_manual_step_waits_for_promote_and_a_passing_analysis() -> None:
    world = healthy_world(
        rollout={"steps": [{"weight": 20, "manual": True}, {"weight": 100}], "analysis": {"interval": "2m"}}
    )
    world.release("v2")
    world.tick(1)
    world.run(3600, step=60)
    assert world.status.canary.step == 0, "a manual step never advances on its own"
    world.send("promote", id="p1")
    world.tick(1)
    assert world.status.canary.step == 1
    assert world.status.last_command.result.startswith("promote requested")


def test_steps_edited_mid_rollout() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=1)
    assert world.replicas() == {"v1": 2, "v2": 2}
    world.run(20 * 60 - 60, step=60, analysis=False)  # held long past the progress deadline (no analysis)
    # the current step's weight is lowered: the canary shrinks, no revert, the wait starts again
    world.edit(
        rollout={"steps": [{"weight": 10, "pause": "5m"}, {"weight": 25, "pause": "10m"}, {"weight": 100}]}
    )
    world.tick(1)
    assert (world.phase, world.status.canary.step, world.status.canary.weight) == ("Progressing", 1, 25)
    world.tick(5)
    assert world.replicas() == {"v1": 3, "v2": 1}
    assert "RolledBack" not in world.reasons()
    # steps shortened below the current index: the canary moves to the (new) last step
    world.edit(rollout={"steps": [{"weight": 100}]})
    world.tick(1)
    assert (world.status.canary.step, world.status.canary.weight) == (0, 100)
    world.run_until(lambda w: w.phase == "Healthy")
    assert (world.stable, world.replicas()) == ("v2", {"v2": 4})


# ----------------------------------------------------------------------------------- analysis


def test_failures_must_be_consecutive() -> None:
    world = rolled_out_to(
        healthy_world(rollout={"steps": [{"weight": 10, "manual": True}, {"weight": 100}]}), "v2", step=0
    )
    for health in [BAD, GOOD, BAD, GOOD, BAD]:
        world.health["v2"] = health
        world.tick(60)
    assert world.phase == "Progressing"
    assert world.reasons().count("AnalysisFail") == 3
    world.health["v2"] = BAD
    world.tick(60)
    assert world.phase == "Reverted"


def test_inconclusive_counter_is_separate_and_reset_by_a_pass() -> None:
    world = rolled_out_to(
        healthy_world(rollout={"steps": [{"weight": 10, "manual": True}, {"weight": 100}]}), "v2", step=0
    )
    for health in [NO_DATA, NO_DATA, GOOD, NO_DATA, NO_DATA, BAD]:
        world.health["v2"] = health
        world.tick(60)
    assert world.phase == "Progressing"
    assert (world.status.analysis.failures, world.status.analysis.inconclusive) == (1, 2)


def test_inconclusive_pause_never_promotes_and_resume_restarts_the_count() -> None:
    world = _paused_inconclusive()
    assert world.status.control_paused is True
    world.run(3 * 3600, step=60)
    assert (world.phase, world.canary) == ("Paused", "v2"), "inconclusive never promotes"
    world.send("resume", id="r1")
    world.tick(1)
    assert world.phase == "Progressing" and world.status.analysis.inconclusive == 0
    world.health["v2"] = GOOD
    world.run_until(lambda w: w.phase == "Healthy")
    assert world.stable == "v2"


def test_inconclusive_pause_then_abort() -> None:
    world = _paused_inconclusive()
    world.send("abort", id="a1", reason="no metrics from the canary")
    world.tick(1)
    assert (world.phase, world.stable, world.replicas()) == ("Reverted", "v1", {"v1": 4})
    assert world.status.rejected.version == "v2" and world.status.rejected.reason == "Aborted"


def test_dry_run_metrics_are_recorded_but_never_gate() -> None:
    metrics = [
        {"name": "error-rate", "query": "e", "max": 0.01},
        {"name": "cost-per-prediction", "query": "c", "max": 0.002, "dryRun": True},
    ]
    world = healthy_world(rollout={"analysis": {"metrics": metrics}})

    def values(version: str, metric: Metric) -> float | Verdict | None:
        if metric.dry_run:
            return 0.5 if version == "v2" else Verdict.ERROR  # way over, or a broken query
        return 0.001

    world.health["v2"] = values
    world.release("v2")
    world.tick(1)
    world.run_until(lambda w: w.phase == "Healthy")
    assert world.stable == "v2"
    assert not [e for e in world.events if e.reason.startswith("Analysis")]
    cost = next(r for r in world.status.analysis.results if r.name == "cost-per-prediction")
    assert (cost.verdict, cost.value, cost.dry_run) == (Verdict.FAIL, 0.5, True)
    assert_names(world.event("Promoted"), "cost-per-prediction=0.5")


def test_an_old_analysis_run_is_not_counted_twice() -> None:
    world = rolled_out_to(healthy_world(rollout={"analysis": {"failureLimit": 1}}), "v2", step=0)
    world.health["v2"] = BAD
    world.tick(60)
    stale = world.analysis_runs[-1]
    assert world.status.analysis.failures == 1
    for _ in range(3):
        world.tick(1, analysis=stale)
    assert world.phase == "Progressing" and world.status.analysis.failures == 1


def test_analysis_due_only_for_a_ready_version_under_analysis_every_interval() -> None:
    world = healthy_world()
    obs = world.observe()
    assert not analysis_due(world.spec, world.status, obs, world.now)  # healthy: nothing under analysis
    rolled_out_to(world, "v2", step=0)
    obs = world.observe()
    last = world.status.analysis.last_run_at
    assert not analysis_due(world.spec, world.status, obs, last + timedelta(seconds=59))
    assert analysis_due(world.spec, world.status, obs, last + timedelta(seconds=60))
    unready = {**obs.workloads, "v2": WorkloadObservation("v2", replicas=1, ready_replicas=0)}
    obs = Observations(workloads=unready)
    assert not analysis_due(world.spec, world.status, obs, last + timedelta(hours=1))


# ------------------------------------------------------------------------------------- reverts


def test_revert_restores_last_known_good_with_its_lineage_and_keeps_spec_untouched() -> None:
    world = _reverted()
    spec_before = world.spec.dump()
    assert world.status.stable.version == world.status.last_known_good.version == "v1"
    assert world.status.stable.lineage.code_commit == "1a2b3c4"
    assert world.status.rejected.version == "v2" and world.status.rejected.reason == "AnalysisFailed"
    assert "error-rate=0.03" in world.status.rejected.message
    assert "spec still names v2" in world.status.message
    history = world.status.history[-1]
    assert (history.reason, history.to_phase, history.version) == ("RolledBack", "Reverted", "v1")
    assert history.change_reason == REASON
    # stays reverted: the rejected version is not rolled out again on its own
    count = len(world.events)
    world.run(3600, step=60)
    assert world.phase == "Reverted" and len(world.events) == count
    assert world.spec.dump() == spec_before


def test_reverted_then_retry_with_the_same_id_runs_once() -> None:
    world = _reverted()
    world.health["v2"] = GOOD
    world.send("retry", id="retry-1")
    world.tick(1)
    assert world.canary == "v2"
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    # the same annotation is still on the resource: it must not start a third rollout
    world.run(600, step=30)
    assert world.phase == "Reverted" and world.reasons().count("RolloutStarted") == 3
    assert world.status.last_command.id == "retry-1"


def test_canary_progress_deadline_from_the_deployment_condition() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0, ready=False)
    world.readiness["v2"] = math.inf
    world.tick(5)
    world.workloads["v2"].deadline_exceeded = True
    world.tick(5)
    assert world.phase == "Reverted"
    assert world.status.rejected.reason == "ProgressDeadlineExceeded"


def test_bake_with_nothing_kept_warm_keeps_previous_at_zero_and_revert_scales_it_up() -> None:
    world = healthy_world(rollout={"bake": "30m", "keepPrevious": {"for": "1h", "replicas": 0}})
    world.release("v2", change_reason=REASON)
    world.run_until(lambda w: w.phase == "Baking", step=5)
    assert world.replicas() == {"v1": 0, "v2": 4} and world.status.warm is None
    applied = desired_workloads(world.spec, world.status, world.observe())
    assert applied == {"v2": ("s3://models/fraud/v2", 4), "v1": ("s3://models/fraud/v1", 0)}
    world.send("abort", id="a")
    decision = world.tick(1)
    # v1 keeps the template it served with: only its replicas change
    assert ScaleWorkload("v1", 4) in decision.actions
    assert not any(isinstance(a, ApplyWorkload) and a.version == "v1" for a in decision.actions)
    assert DeleteWorkload("v2") in decision.actions


def test_stable_keeps_its_own_template_while_a_canary_with_a_new_image_rolls_out() -> None:
    world = healthy_world()
    v1_hash = world.workloads["v1"].template_hash
    world.spec.template["spec"]["containers"][0]["image"] = "example.com/model-server:2.0"
    world.release("v2")
    world.run(30, step=1)
    assert world.workloads["v1"].template_hash == v1_hash or "v1" not in world.workloads


def test_gate_failure_during_bake_keeps_baking() -> None:
    world = _baking()
    world.release("v3", auc=0.5)
    world.tick(1)
    assert (world.phase, world.stable, world.status.rejected.version) == ("Baking", "v2", "v3")
    assert_names(world.event("GateFailed"), "v3", "auc=0.5", "v2 keeps serving and baking")
    world.run_until(lambda w: w.lkg == "v2", step=60)
    assert world.phase == "Healthy" and world.replicas() == {"v2": 4}


def test_spec_back_to_a_version_whose_bake_was_interrupted_bakes_it_again() -> None:
    world = _baking()
    world.release("v3")
    world.tick(1)
    world.edit(model={"version": "v2", "uri": "s3://models/fraud/v2"})
    events = new_events(world, lambda: world.tick(1))
    assert [e.reason for e in events] == ["RolloutAbandoned", "BakeRestarted"]
    assert (world.phase, world.stable, world.lkg) == ("Baking", "v2", "v1"), "not Healthy: never proven"
    assert world.replicas() == {"v1": 0, "v2": 4}
    world.run_until(lambda w: w.phase == "Healthy", step=60)
    assert (world.lkg, world.history_reasons()[-1]) == ("v2", "BakeCompleted")


def test_one_analysis_run_never_ends_two_steps() -> None:
    """Weights 5 and 25 of 4 replicas are both one canary pod: the second step needs no scaling and is
    ready at once, but it still waits for a run of its own."""
    world = healthy_world(rollout={"steps": [{"weight": 5}, {"weight": 25}, {"weight": 100}]})
    world.release("v2")
    world.tick(1)
    world.tick(5)
    assert world.status.canary.step == 1
    assert world.status.canary.ready_at == world.now  # no scaling needed: its wait is over
    for _ in range(5):
        world.tick(0)
    assert world.status.canary.step == 1
    world.tick(60)
    assert world.status.canary.step == 2


def test_new_version_during_bake_rolls_out_against_the_baking_version() -> None:
    world = _baking()
    world.release("v3")
    world.tick(1)
    assert (world.stable, world.canary, world.lkg) == ("v2", "v3", "v1")
    world.health["v3"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    world.run(30, step=5)  # v2 (serving during its bake) leaves once v1 is back at full size
    assert (world.stable, world.replicas()) == ("v1", {"v1": 4}), "a revert goes to the last known good"


def test_a_departing_version_serves_until_the_stable_one_is_ready_at_full_size() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("promote", id="full", full=True)
    world.tick(1)
    assert world.phase == "Healthy" and world.replicas() == {"v1": 3, "v2": 4}
    assert world.workloads["v2"].ready_replicas < 4, "v2 is still scaling up"
    world.run_until(lambda w: w.workloads["v2"].ready_replicas == 4, step=1)
    world.tick(1)
    assert world.replicas() == {"v2": 4}


# ------------------------------------------------------------------ spec changes without a rollout


def test_replicas_change_when_healthy_is_applied_without_a_rollout() -> None:
    world = healthy_world()
    world.edit(replicas=6)
    decision = world.tick(1)
    assert [type(a) for a in decision.actions] == [ApplyWorkload]
    assert world.replicas() == {"v1": 6} and world.phase == "Healthy"
    assert world.status.observed_generation == world.generation


def test_template_change_when_healthy_reapplies_the_stable_deployment() -> None:
    world = healthy_world()
    old_hash = world.workloads["v1"].template_hash
    template = world.spec.template | {"metadata": {"labels": {"team": "fraud"}}}
    world.edit(template=template)
    decision = world.tick(1)
    (apply,) = decision.actions
    assert isinstance(apply, ApplyWorkload) and apply.template_hash != old_hash and apply.replicas == 4
    assert world.phase == "Healthy" and world.history_reasons()[-1] == "Available"


def test_service_port_change_reapplies_the_service_only() -> None:
    world = healthy_world()
    world.edit(service={"port": 8000})
    decision = world.tick(1)
    assert decision.actions == (ApplyService(8000, 8080, version="v1"),)


def test_replicas_change_mid_step_rescales_without_reverting() -> None:
    world = rolled_out_to(
        healthy_world(rollout={"steps": [{"weight": 50, "manual": True}, {"weight": 100}]}), "v2", step=0
    )
    world.run(30 * 60, step=60)  # a long hold at a manual step
    world.readiness["v2"] = 60
    world.edit(replicas=8)
    world.tick(1)
    # the canary grows to its new share; the stable keeps full capacity until the canary has it
    assert world.phase == "Progressing" and world.replicas() == {"v1": 8, "v2": 4}
    world.run(120, step=10)
    assert world.phase == "Progressing" and world.replicas() == {"v1": 4, "v2": 4}
    assert not [e for e in world.events if e.type == "Warning"]


def test_template_change_mid_rollout_does_not_revert() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=1)
    world.run(20 * 60, step=60, analysis=False)
    world.readiness["v2"] = 60
    world.edit(template=world.spec.template | {"metadata": {"annotations": {"x": "y"}}})
    world.tick(1)
    world.run(120, step=10)
    assert world.phase == "Progressing" and world.canary == "v2"


# ------------------------------------------------------------------------------------ pausing


def test_spec_paused_holds_steps_but_analysis_still_reverts() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.edit(paused=True)
    world.run(3600, step=60)
    assert (world.phase, world.status.canary.step) == ("Paused", 0)
    world.edit(paused=False)
    world.tick(1)  # resumed; the pause and a passing analysis are long over, so the step advances too
    assert world.phase == "Progressing" and world.history_reasons()[-2:] == ["Resumed", "StepAdvanced"]
    assert world.status.canary.step == 1
    world.edit(paused=True)
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)


def test_resume_command_while_spec_paused_stays_paused() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("pause", id="p")
    world.tick(1)
    world.edit(paused=True)
    world.send("resume", id="r")
    world.tick(1)
    assert world.phase == "Paused"
    assert world.status.last_command.result == "resumed (spec.paused still holds it)"


# ----------------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("given", "action", "result"),
    [
        (healthy_world, "pause", "ignored: no rollout in progress (Healthy, serving v1)"),
        (healthy_world, "resume", "ignored: nothing paused (Healthy, serving v1)"),
        (healthy_world, "abort", "ignored: no rollout in progress (Healthy, serving v1)"),
        (healthy_world, "promote", "ignored: no rollout in progress (Healthy, serving v1)"),
        (healthy_world, "retry", "ignored: nothing rejected (Healthy, serving v1)"),
        (_reverted, "abort", "ignored: no rollout in progress (Reverted, serving v1)"),
        (_reverted, "retry", "retrying v2"),
        (_at_step(0), "retry", "ignored: nothing rejected (Progressing, serving v1)"),
        (_at_step(0), "pause", "paused"),
        (_at_step(0), "abort", "aborted"),
    ],
)
def test_command_results_are_recorded(given: Callable[[], World], action: str, result: str) -> None:
    world = given()
    world.send(action, id="c-1", user="bob", reason="because")
    world.tick(1)
    record = world.status.last_command
    assert (record.id, record.action, record.user, record.reason, record.result) == (
        "c-1",
        action,
        "bob",
        "because",
        result,
    )


def test_same_command_id_twice_runs_once() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("pause", id="same")
    world.tick(1)
    world.tick(1)  # the annotation is still there: not paused "again"
    world.send("resume", id="r1")
    world.tick(1)
    assert world.phase == "Progressing"
    world.send("abort", id="a1")
    world.send("abort", id="a1")  # written twice (a retried kubectl annotate): handled once
    world.tick(1)
    world.tick(1)
    assert world.reasons().count("Aborted") == 1
    assert world.history_reasons()[-3:] == ["Paused", "Resumed", "Aborted"]


def test_an_older_command_replayed_after_another_does_not_run_again() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    old = world.send("pause", id="old")
    world.tick(1)
    world.send("resume", id="new")
    world.tick(1)
    world.command = old  # the same annotation put back, e.g. by a GitOps sync of an old manifest
    world.tick(1)
    assert world.phase == "Progressing"


def test_a_promote_before_the_first_passing_analysis_is_not_lost() -> None:
    world = healthy_world(
        rollout={"steps": [{"weight": 10}, {"weight": 50, "manual": True}, {"weight": 100}]}
    )
    world.release("v2")
    world.run_until(
        lambda w: (
            w.status.canary is not None and w.status.canary.ready_at is not None and w.status.canary.step == 1
        ),
        step=5,
    )
    world.send("promote", id="early")  # the last run (at step 1's start) is older than the canary's readiness
    world.tick(1)
    world.run(300, step=30)
    assert world.phase == "Healthy"


def test_commands_are_handled_once_across_ticks() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("promote", id="once")
    world.tick(1)
    assert world.status.canary.step == 1
    world.run(600, step=5)  # the annotation stays; the second step must still wait its 10 minutes
    assert world.status.canary.step == 1 or world.now - world.status.canary.ready_at >= timedelta(minutes=10)
    assert world.reasons().count("StepAdvanced") == 1


def test_pause_during_a_first_deployment_is_ignored() -> None:
    world = World.create()
    world.readiness["v1"] = 30
    world.tick()
    world.send("pause", id="p")
    world.tick(1)
    assert world.status.last_command.result.startswith("ignored: no rollout in progress (Progressing")
    world.run_until(lambda w: w.phase == "Healthy")
    world.send("resume", id="r")
    world.tick(1)
    assert world.phase == "Healthy" and not world.status.control_paused


def test_a_hold_ends_with_the_rollout_it_held() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("pause", id="p")
    world.tick(1)
    world.send("promote", id="f", full=True)
    world.tick(1)
    assert (world.phase, world.status.control_paused) == ("Healthy", None)
    world.send("resume", id="r")
    world.tick(1)
    assert world.phase == "Healthy"
    assert world.status.last_command.result == "ignored: nothing paused (Healthy, serving v2)"


def test_a_hold_does_not_carry_over_to_the_next_version() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.send("pause", id="p")
    world.tick(1)
    world.release("v3")
    world.tick(1)
    assert (world.phase, world.canary, world.status.control_paused) == ("Progressing", "v3", None)


def test_promote_full_from_a_paused_rollout() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.edit(paused=True)
    world.tick(1)
    world.send("promote", id="f", full=True)
    world.tick(1)
    assert (world.phase, world.stable) == ("Healthy", "v2")


# ----------------------------------------------------------------------------- audit and status


def test_history_is_bounded_and_keeps_numbering() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=0)
    for i in range(60):
        world.send("pause" if i % 2 == 0 else "resume", id=f"c{i}")
        world.tick(1)
    history = world.status.history
    assert len(history) == 50
    assert [h.seq for h in history] == list(range(history[0].seq, history[0].seq + 50))
    assert history[-1].seq == len(world.events) - world.reasons().count("GatePassed")


def test_event_keys_are_unique() -> None:
    world = _reverted()
    keys = [e.key for e in world.events]
    assert len(keys) == len(set(keys))


#: (which of Ready / Reconciling / Stalled is True, its reason) after each case of the table
RELEASE_STATES = {
    "first-deployment-starts": ("Reconciling", "Progressing"),
    "first-deployment-available": ("Ready", "Serving"),
    "first-deployment-progress-deadline": ("Stalled", "ProgressDeadlineExceeded"),
    "first-deployment-gate-failed": ("Stalled", "GateFailed"),
    "rollout-started": ("Reconciling", "Progressing"),
    "gate-failed-keeps-stable": ("Stalled", "GateFailed"),
    "step-advanced-after-pause": ("Reconciling", "Progressing"),
    "promoted-after-last-step": ("Ready", "Serving"),
    "promoted-into-bake": ("Reconciling", "Baking"),
    "bake-completed": ("Ready", "Serving"),
    "bake-failed-reverts-to-previous": ("Stalled", "Reverted"),
    "analysis-failure-within-limit": ("Reconciling", "Progressing"),
    "analysis-failed-reverts": ("Stalled", "Reverted"),
    "analysis-inconclusive-reverts": ("Stalled", "Reverted"),
    "analysis-inconclusive-pauses": ("Reconciling", "Paused"),
    "analysis-error-reverts-at-once": ("Stalled", "Reverted"),
    "canary-progress-deadline": ("Stalled", "Reverted"),
    "new-version-mid-rollout": ("Reconciling", "Progressing"),
    # the spec names v1 again: it serves, but not at full size until its new replicas are ready
    "spec-back-to-stable-mid-rollout": ("Reconciling", "WaitingForReplicas"),
    # the bake kept v1 warm at full size: it serves fully at once
    "rollback-by-spec-during-bake": ("Ready", "Serving"),
    "spec-back-to-lkg-after-revert": ("Ready", "Serving"),
    "new-version-after-revert": ("Reconciling", "Progressing"),
    "spec-paused": ("Reconciling", "Paused"),
    "command-pause": ("Reconciling", "Paused"),
    "command-resume-after-inconclusive-pause": ("Reconciling", "Progressing"),
    "command-abort": ("Stalled", "Reverted"),
    "command-abort-during-bake": ("Stalled", "Reverted"),
    "command-promote-step": ("Reconciling", "Progressing"),
    "command-promote-full": ("Reconciling", "WaitingForReplicas"),  # v2 scales from 1 to 4
    "command-promote-during-bake": ("Ready", "Serving"),
    "command-retry-after-revert": ("Reconciling", "Progressing"),
}


def release_conditions(world: World) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in world.status.conditions}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conditions_after_each_transition(case: Case) -> None:
    """One of Ready, Reconciling and Stalled is True, with the reason the table gives, for this generation."""
    world = case.given()
    case.when(world)
    true_one, reason = RELEASE_STATES[case.id]
    conditions = release_conditions(world)
    assert {t: conditions[t] for t in ("Ready", "Reconciling", "Stalled")} == {
        t: ("True" if t == true_one else "False", reason) for t in ("Ready", "Reconciling", "Stalled")
    }
    assert {c.observed_generation for c in world.status.conditions} == {world.generation}
    stable, seen = world.status.stable, world.last_observations.workloads
    serving = stable is not None and stable.version in seen and seen[stable.version].ready()
    assert conditions["Available"][0] == ("True" if serving else "False")  # as the decision saw it


def test_every_case_has_its_release_state() -> None:
    assert set(RELEASE_STATES) == {c.id for c in CASES}


def test_ready_only_once_the_new_version_serves_and_flips_once() -> None:
    """A new version: Ready goes False at once (v1 still serves: Available stays True) and True again only
    at promotion; lastTransitionTime moves only on those flips, observedGeneration on every spec change."""
    world = healthy_world()
    assert release_conditions(world)["Ready"] == ("True", "Serving")
    world.release("v2")
    world.tick(1)
    conditions = {c.type: c for c in world.status.conditions}
    assert (conditions["Ready"].status, conditions["Reconciling"].status) == ("False", "True")
    assert conditions["Available"].status == "True" and conditions["Available"].message == "v1 ready"
    went_false = conditions["Ready"].last_transition_time
    world.run_until(lambda w: w.status.canary is not None and w.status.canary.step == 2)
    assert {c.type: c for c in world.status.conditions}["Ready"].last_transition_time == went_false
    world.edit(paused=False, replicas=4)  # a spec change that changes nothing else: a new generation
    world.tick(1)
    assert {c.observed_generation for c in world.status.conditions} == {world.generation}
    world.run_until(lambda w: w.phase == "Healthy")
    ready = {c.type: c for c in world.status.conditions}["Ready"]
    assert (ready.status, ready.reason, ready.message) == (
        "True",
        "Serving",
        "v2 serves at full weight (4 replicas)",
    )
    assert ready.last_transition_time == world.now


def test_ready_while_baking_is_opt_in() -> None:
    for opt_in, expected in ((False, ("Reconciling", "Baking")), (True, ("Ready", "Serving"))):
        world = healthy_world(rollout={"bake": "30m", "readyWhileBaking": opt_in})
        world.release("v2")
        world.run_until(lambda w: w.phase == "Baking")
        world.tick(1)  # v2 at full size: the departing v1 is gone
        conditions = release_conditions(world)
        assert [t for t in ("Ready", "Reconciling", "Stalled") if conditions[t][0] == "True"] == [expected[0]]
        assert conditions[expected[0]][1] == expected[1]


def test_stalled_message_says_what_failed_and_what_to_do() -> None:
    world = _reverted()
    stalled = {c.type: c for c in world.status.conditions}["Stalled"]
    assert stalled.status == "True" and stalled.reason == "Reverted"
    for needle in ("v2 was reverted (AnalysisFailed)", "error-rate=", "v1 serves", "canaria retry"):
        assert needle in stalled.message


def test_invalid_spec_is_stalled_for_its_generation() -> None:
    world = healthy_world()
    later = world.now + timedelta(seconds=5)
    status = refused_status(world.status, "InvalidSpec", "spec rejected: spec.replicas: too big", 9, later)
    conditions = {c.type: c for c in status.conditions}
    assert (conditions["Stalled"].status, conditions["Stalled"].reason) == ("True", "InvalidSpec")
    assert (conditions["Ready"].status, conditions["Ready"].last_transition_time) == ("False", later)
    assert conditions["Reconciling"].status == "False" and "spec.replicas: too big" in status.message
    assert {conditions[t].observed_generation for t in ("Ready", "Reconciling", "Stalled")} == {9}
    assert status.observed_generation == 9
    assert conditions["Available"] == next(c for c in world.status.conditions if c.type == "Available")
    assert world.status.observed_generation == 1, "the input status is not mutated"


def test_status_survives_a_restart_mid_rollout() -> None:
    """The status is the only state: a new operator deciding from the stored status carries on."""
    world = rolled_out_to(healthy_world(rollout={"bake": "10m"}), "v2", step=1)
    stored = world.status.dump()
    obs = world.observe()
    later = world.now + timedelta(seconds=30)
    a = decide(world.spec, ModelDeploymentStatus.model_validate(stored), obs, later)
    b = decide(world.spec, world.status, obs, later)
    assert a.status.dump() == b.status.dump() and a.actions == b.actions


def test_decide_does_not_mutate_its_inputs() -> None:
    world = rolled_out_to(healthy_world(), "v2", step=2)
    before = world.status.dump()
    world.health["v2"] = BAD
    run = world.run_analysis("v2")
    decide(
        world.spec, world.status, Observations(workloads=world.observe().workloads, analysis=run), world.now
    )
    assert world.status.dump() == before


def test_observed_generation_and_pending_phase() -> None:
    world = World.create(model={"evaluation": {"auc": 0.1}})
    world.generation = 7
    decision = decide(world.spec, ModelDeploymentStatus(), world.observe(), T0)
    assert decision.status.observed_generation == 7
    empty = World.create()
    status = ModelDeploymentStatus(phase=Phase.FAILED)
    assert decide(empty.spec, status, empty.observe(), T0).status.phase is not None


# ------------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("replicas", "weight", "expected"),
    [
        (4, 0, (0, 4)),
        (4, 10, (1, 3)),
        (4, 50, (2, 2)),
        (4, 99, (4, 0)),
        (4, 100, (4, 0)),
        (10, 33, (4, 6)),
        (1, 1, (1, 0)),
        (0, 50, (0, 0)),
    ],
)
def test_split_replicas(replicas: int, weight: int, expected: tuple[int, int]) -> None:
    assert split_replicas(replicas, weight) == expected


def test_template_hash_tracks_what_a_deployment_is_built_from() -> None:
    world = World.create()
    spec = world.spec
    base = template_hash(spec, "v1", "s3://a")
    assert base == template_hash(spec, "v1", "s3://a")
    assert base != template_hash(spec, "v2", "s3://a")
    assert base != template_hash(spec, "v1", "s3://b")
    world.edit(service={"targetPort": 9000})
    assert base != template_hash(world.spec, "v1", "s3://a")
    world2 = World.create()
    world2.edit(replicas=9)  # replicas are not part of the template
    assert base == template_hash(world2.spec, "v1", "s3://a")


def test_a_command_in_its_oldest_shape_is_still_carried_out() -> None:
    """`kubectl annotate ... canaria.dev/command='{"action":"pause","id":"x"}'`: no user, reason, time."""
    command = parse_command({COMMAND_ANNOTATION: '{"action": "pause", "id": "x"}'})
    assert command is not None
    world = rolled_out_to(healthy_world(), "v2", step=0)
    world.command = command
    world.tick(1)
    assert world.phase == "Paused" and world.status.last_command.result == "paused"
    assert world.status.history[-1].user is None


def test_analysis_run_verdict_ignores_dry_run_and_prefers_failure() -> None:
    world = World.create()
    metric = world.spec.rollout.analysis.metrics[0]
    run = AnalysisRun(at=T0, results=())
    assert run.verdict == Verdict.PASS
    world.health["v9"] = lambda v, m: Verdict.INCONCLUSIVE if m is metric else 99.0
    run = world.run_analysis("v9")
    assert run.verdict == Verdict.FAIL


def test_a_canary_that_loses_readiness_late_in_a_manual_step_waits_afresh() -> None:
    world = healthy_world(rollout={"steps": [{"weight": 25, "manual": True}, {"weight": 100}]})
    rolled_out_to(world, "v2", step=0)
    world.run(25 * 60, step=60)  # 25 minutes into a step held for a person (deadline: 10m)
    assert world.phase == "Progressing"
    world.workloads["v2"].ready_replicas = 0  # a pod restarted; the Deployment is up to date
    world.readiness["v2"] = 30.0
    world.workloads["v2"].changed_at = world.now  # it comes back in 30 s
    world.tick(1)
    assert world.phase == "Progressing", "not reverted for a deadline counted from the step's start"
    assert world.status.canary.ready_at is None and world.status.canary.step_started_at == world.now
    world.run(60, step=5)
    assert world.phase == "Progressing" and world.status.canary.ready_at is not None
