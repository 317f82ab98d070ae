"""The rollout decision: a pure function of (spec, status, observations, now).

Everything Canaria decides happens here and nowhere else: which version serves, how many replicas each
version gets, when a step advances, when a canary is promoted or reverted, and what the audit trail
says about it. No clock, no I/O, no kopf, so every transition is a table-driven test and the operator
resumes exactly where status says it was.

Conventions: the incoming status is never mutated. Nested status objects are treated as immutable and
replaced when they change (a shallow copy of the top level is all `decide` pays for), which keeps a
decision in the tens of microseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from canaria.core.actions import (
    Action,
    ApplyService,
    ApplyWorkload,
    Decision,
    DeleteWorkload,
    EmitEvent,
    RunSmokeTest,
    ScaleWorkload,
    SetTraffic,
    TrafficSplit,
)
from canaria.core.api import (
    HISTORY_BYTES,
    HISTORY_LIMIT,
    MAX_MESSAGE,
    AnalysisStatus,
    CanaryStatus,
    CommandRecord,
    Condition,
    ConditionType,
    HeaderMatch,
    HistoryEntry,
    Metric,
    MetricResult,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    PromoteRequest,
    RecordedEvaluation,
    Refusal,
    Rejection,
    SmokeTestStatus,
    Step,
    TrafficStatus,
    Verdict,
    VersionRef,
    WarmStatus,
    clip,
)
from canaria.core.commands import Command
from canaria.core.durations import format_duration
from canaria.core.gates import check_gates
from canaria.core.observations import AnalysisRun, Observations

# ------------------------------------------------------------------------------------- pure helpers

IN_ROLLOUT = (Phase.PROGRESSING, Phase.PAUSED, Phase.BAKING)
WAIT_FOR_READY = 2.0  # seconds between checks while a Deployment comes up (its watch events wake us sooner)
ROUTE_SETTLE = 0.5  # seconds until a route just set is read back (routes are not watched)
ROUTE_RECHECK = 5.0  # seconds between reads of the route during a rollout: a change by someone else shows


def split_replicas(replicas: int, weight: int) -> tuple[int, int]:
    """(canary, stable) replicas for a weight: a weight above 0 gets at least one canary replica."""
    if weight <= 0:
        return 0, replicas
    canary = replicas if weight >= 100 else min(replicas, max(1, math.ceil(replicas * weight / 100)))
    return canary, replicas - canary


def current_step(spec: ModelDeploymentSpec, canary: CanaryStatus) -> Step:
    steps = spec.rollout.steps
    return steps[min(canary.step, len(steps) - 1)]


def step_sizes(spec: ModelDeploymentSpec, step: Step) -> tuple[int, int]:
    """(canary, stable) replicas at a step. Replica routing: the weight is the replica ratio. A router that
    splits requests itself: the canary gets its share of the replicas (of the weight, or of the mirrored
    requests; at least one) or the explicit count, and the stable version stays full until promotion."""
    routing = spec.rollout.routing
    if not routing.exact:
        return split_replicas(spec.replicas, step.live_weight)
    share = step.weight or step.mirror or 0
    canary = routing.canary_replicas or max(1, math.ceil(spec.replicas * share / 100))
    return canary, spec.replicas


def step_split(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> TrafficSplit | None:
    """What the router must set for the current stage: the stable version alone, or the canary's share."""
    if status.stable is None:
        return None
    canary = status.canary
    if canary is None:
        return TrafficSplit(status.stable.version)
    step = current_step(spec, canary)
    headers = tuple((h.name, h.value) for h in step.match.headers) if step.match else ()
    return TrafficSplit(status.stable.version, canary.version, step.live_weight, step.mirror, headers)


def describe_stage(step: Step) -> str:
    """How a step sends traffic, for messages: "at weight 10", "shadow (100% mirrored)"."""
    if step.mirror:
        return f"shadow ({step.mirror}% mirrored)"
    if step.match:
        return "header-matched (" + ", ".join(f"{h.name}: {h.value}" for h in step.match.headers) + ")"
    return f"at weight {step.weight}"


# template_hash memo: serialising the pod template is most of a decision's cost, and a decision hashes
# the same template two or three times (once per version, and the canary's check). Keyed by the template
# object's identity, which the entry keeps alive so the id cannot be reused; like every input of the
# engine, a spec's template is never mutated in place (a changed spec is a new object).
_HASHES: dict[tuple[int, str, str, str, int], tuple[object, str]] = {}
_HASHES_MAX = 512


def template_hash(spec: ModelDeploymentSpec, version: str, uri: str) -> str:
    """Fingerprint of everything a version's Deployment is built from; a change means re-apply it."""
    template = spec.template
    key = (id(template), spec.model.name, version, uri, spec.service.target_port)
    hit = _HASHES.get(key)
    if hit is not None and hit[0] is template:
        return hit[1]
    payload = json.dumps([template, spec.model.name, version, uri, spec.service.target_port], sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    if len(_HASHES) >= _HASHES_MAX:
        del _HASHES[next(iter(_HASHES))]
    _HASHES[key] = (template, digest)
    return digest


def warm_replicas(spec: ModelDeploymentSpec) -> int:
    """Replicas the previous version is kept ready with: keepPrevious.replicas, else the full count."""
    keep = spec.rollout.keep_previous
    return spec.replicas if keep is None or keep.replicas is None else keep.replicas


def analysed_version(status: ModelDeploymentStatus) -> str | None:
    """The version under analysis: the canary during steps, the new stable during bake."""
    if status.canary is not None:
        return status.canary.version
    if status.bake_started_at is not None and status.stable is not None:
        return status.stable.version
    return None


def analysis_due(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observations: Observations, now: datetime
) -> bool:
    """Whether the shell should query Prometheus before deciding: a version is under analysis, it is
    ready (an unready canary has no traffic to judge), and an interval has passed since the last run."""
    version = analysed_version(status)
    if version is None or status.phase not in IN_ROLLOUT or not analysis_metrics(spec, status):
        return False
    workload = observations.workloads.get(version)
    if workload is None or not workload.ready() or smoke_pending(spec, status):
        return False  # no traffic to judge yet
    baseline = observations.baseline
    if desired_baseline(spec, status) is not None and (baseline is None or not baseline.ready()):
        return False  # the comparison's other side is not serving yet
    last = status.analysis.last_run_at
    return last is None or (now - last).total_seconds() >= spec.rollout.analysis.interval_seconds


def smoke_pending(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool:
    """A canary at its first step that has not passed its smoke test yet: it gets no traffic."""
    canary, record = status.canary, status.smoke_test
    if spec.rollout.smoke_test is None or canary is None or canary.step > 0:
        return False
    return not (
        record is not None
        and (record.purpose, record.version, record.phase) == ("BeforeTraffic", canary.version, "Passed")
        and record.started_at is not None
        and (canary.since is None or record.started_at >= canary.since)
    )


def analysis_variables(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, *, name: str, namespace: str
) -> dict[str, object]:
    """Values for the documented query template variables."""
    stable = status.last_known_good if status.canary is None else status.stable
    return {
        "name": name,
        "namespace": namespace,
        "service": name,
        "version": analysed_version(status) or spec.model.version,
        "stableVersion": stable.version if stable else "",
        "canaryWeight": status.canary.weight if status.canary else 100,
        "interval": spec.rollout.analysis.interval,
        "role": "",  # only a baseline's pods carry a role (see comparison_variables)
    }


def analysis_metrics(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> list[Metric]:
    """The metrics to run now: comparisons need a canary beside the stable version (not during a bake)."""
    metrics = spec.rollout.analysis.metrics
    if status.canary is not None:
        return metrics
    return [m for m in metrics if m.against is None]


def _results_text(results: tuple[MetricResult, ...] | list[MetricResult], *, only_bad: bool = False) -> str:
    shown = [r for r in results if not only_bad or r.verdict != Verdict.PASS]
    return "; ".join(r.describe() for r in shown)


# ------------------------------------------------------------------------------------------- engine


@dataclass
class _Run:
    """The working state of one decision."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    obs: Observations
    now: datetime
    actions: list[Action] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    promote: PromoteRequest | None = None  # a promote command during a bake (a canary keeps it in status)
    retry_by: str | None = None  # who asked to retry a rejected version (recorded on RolloutStarted)
    bad_results: str = ""  # the gating results of a new run that did not pass, as text
    gates_passed: str = ""  # what the gates checked, with values, when a candidate passed them
    route_changed: str | None = None  # another writer changed the route Canaria set, as text

    # -- audit trail ------------------------------------------------------------------------------

    def transition(
        self,
        to: Phase,
        reason: str,
        message: str,
        *,
        version: str | None,
        warning: bool = False,
        user: str | None = None,
        change_reason: str | None = None,
        command: PromoteRequest | CommandRecord | None = None,
    ) -> None:
        """Record a transition in status.history and as an Event with the same number.

        The "why" is the command's reason when a command caused it, else the spec's change reason."""
        status = self.status
        if command is not None:
            user, change_reason = command.user, command.reason
        else:
            change_reason = change_reason or self.obs.change_reason
        seq = status.history[-1].seq + 1 if status.history else 1
        message = clip(message, MAX_MESSAGE)
        entry = HistoryEntry.model_construct(
            seq=seq,
            time=self.now,
            from_phase=status.phase.value if status.phase else None,
            to_phase=to.value,
            reason=reason,
            version=version,
            message=message,
            user=clip(user) if user else user,
            change_reason=clip(change_reason) if change_reason else change_reason,
            warning=warning or None,
        )
        status.history = bounded_history([*status.history, entry])
        status.phase = to
        status.message = message
        # the Event carries the change reason in full (up to the Event's own limit), history a clip of it
        self.actions.append(
            history_event(entry.model_copy(update=dict(change_reason=change_reason)), self.spec.model.owner)
        )

    def ref(self, version: str, uri: str) -> VersionRef:
        lineage = self.spec.model.lineage if version == self.spec.model.version else None
        return VersionRef.model_construct(version=version, uri=uri, lineage=lineage, since=self.now)

    @property
    def name(self) -> str:
        return self.spec.model.name


def _entry_size(entry: HistoryEntry) -> int:
    """Bytes an entry takes in status, estimated from its free text (the rest is a fixed ~200)."""
    return 200 + sum(
        len(t) for t in (entry.message, entry.user or "", entry.change_reason or "", entry.version or "")
    )


def bounded_history(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """The most recent entries that fit both HISTORY_LIMIT and HISTORY_BYTES (the newest always stays)."""
    kept = history[-HISTORY_LIMIT:]
    total = sum(_entry_size(e) for e in kept)
    while len(kept) > 1 and total > HISTORY_BYTES:
        total -= _entry_size(kept[0])
        kept = kept[1:]
    return kept


def history_event(entry: HistoryEntry, owner: str | None) -> EmitEvent:
    """The Event that records one history entry. Its key is the entry's seq, so posting it again (after
    a crash lost the first post, or did not) names the same Event and changes nothing."""
    text = entry.message
    if entry.change_reason:
        text += f" (change reason: {entry.change_reason})"
    if entry.user:
        text += f" [by {entry.user}]"
    if entry.warning and owner:
        text += f"; owner: {owner}"
    kind = "Warning" if entry.warning else "Normal"
    return EmitEvent(kind, entry.reason, text, key=str(entry.seq), version=entry.version)


def decide(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observations: Observations, now: datetime
) -> Decision:
    """Decide the next status and the actions that bring the cluster there."""
    run = _Run(spec, status.model_copy(), observations, now)
    run.status.observed_generation = observations.generation
    if observations.refusal is not None:
        _refuse(run, observations.refusal)
        _set_conditions(run)
        return Decision(run.status, tuple(run.actions), None)
    refused = status.refused
    if refused is not None:
        if refused.generation == observations.generation and not _new_command(run):
            # held: the same spec would be refused again, so nothing is retried until it or a command changes
            return Decision(run.status, (), None)
        run.status.refused = None
    _handle_command(run)
    _advance(run)
    _release_warm_when_due(run)
    _verify_rollback(run)
    if run.status.phase == Phase.PAUSED and analysed_version(run.status) and spec.rollout.analysis.metrics:
        run.requeue.append(_next_analysis_in(run))  # a held rollout is still analysed on its interval
    _reconcile_traffic(run)
    _reconcile_workloads(run)
    _set_conditions(run)
    return Decision(run.status, tuple(run.actions), min(run.requeue) if run.requeue else None)


def _refuse(run: _Run, message: str) -> None:
    """The API server refused the objects this spec generation needs (or they could not be built): keep
    everything as it was, say why, and hold until the spec or a command changes. A command that came
    with it is recorded as ignored, so it is not retried on its own."""
    status, generation = run.status, run.obs.generation
    message = clip(message, MAX_MESSAGE)
    command = run.obs.command
    if _new_command(run) and command is not None:
        status.last_command = _command_record(
            run, command, f"ignored: spec generation {generation} is refused"
        )
    status.refused = Refusal.model_construct(generation=generation, message=message, at=run.now)
    serving = f"; {status.stable.version} keeps serving" if status.stable else "; nothing deployed"
    run.transition(
        status.phase if status.phase not in (None, Phase.PENDING) else Phase.FAILED,
        "SpecRefused",
        f"{run.name} spec generation {generation} refused, nothing changed{serving}: {message}",
        version=run.spec.model.version,
        warning=True,
    )


def _new_command(run: _Run) -> bool:
    command = run.obs.command
    return command is not None and not _already_handled(run.status.last_command, command)


# ---------------------------------------------------------------------------------------- commands


def command_refusal(
    action: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus, *, full: bool = False
) -> str | None:
    """Why a day-2 command would do nothing now, or None when it runs.

    The one answer to "may this command run now": the engine records a refusal as the command's result
    ("ignored: ..."), and `canaria <command>` refuses with the same words before writing anything."""
    phase = status.phase.value if status.phase else "not reconciled yet"
    where = phase + (f", serving {status.stable.version}" if status.stable else "")
    if action in ("promote", "abort", "pause") and (
        status.phase not in IN_ROLLOUT or analysed_version(status) is None
    ):
        return f"no rollout in progress ({where})"  # a first deployment has no steps to act on
    if action == "pause" and status.control_paused:
        return "already paused by a command"
    if action == "promote" and not full and (spec.paused or status.control_paused):
        by = "spec.paused" if spec.paused else "a pause command"
        return f"paused by {by}: resume it first, then promote (or promote --full)"
    if action == "resume" and not status.control_paused:
        if spec.paused:
            return "held by spec.paused, not by a command: set spec.paused to false"
        return f"nothing paused ({where})"
    if action == "retry":
        if status.rejected is None:
            return f"nothing rejected ({where})"
        if status.rejected.version != spec.model.version:
            return (
                f"nothing to retry: the rejected version {status.rejected.version} is no longer named by "
                f"the spec ({spec.model.version})"
            )
    return None


def _handle_command(run: _Run) -> None:
    """Carry out a day-2 command once: its id is remembered in status.lastCommand."""
    command = run.obs.command
    status = run.status
    if command is None or _already_handled(status.last_command, command):
        return
    refusal = command_refusal(command.action, run.spec, status, full=command.full)
    record = _command_record(run, command, f"ignored: {refusal}")
    result = record.result if refusal is not None else _carry_out(run, command, record)
    status.last_command = record.model_copy(update=dict(result=result))


def _carry_out(run: _Run, command: Command, record: CommandRecord) -> str:
    """Do what a command that may run asks (see `command_refusal`); its result, for status.lastCommand."""
    status = run.status
    suffix = f": {command.reason}" if command.reason else ""
    version = analysed_version(status)
    if command.action == "pause":
        status.control_paused = True
        run.transition(Phase.PAUSED, "Paused", f"{run.name} paused{suffix}", version=version, command=record)
        return "paused"
    if command.action == "resume":
        status.control_paused = None
        status.analysis = status.analysis.model_copy(update=dict(inconclusive=0))
        held = " (spec.paused still holds it)" if run.spec.paused else ""
        phase = Phase.PAUSED if run.spec.paused else _running_phase(status)
        run.transition(phase, "Resumed", f"{run.name} resumed{held}{suffix}", version=version, command=record)
        return "resumed" + held
    if command.action == "abort":
        _revert(run, "Aborted", f"aborted{suffix}", command=record)
        return "aborted"
    if command.action == "retry":  # the rejected version is the one the spec names (command_refusal)
        status.rejected = None
        run.retry_by = command.user or "unknown"
        return f"retrying {run.spec.model.version}"
    request = PromoteRequest.model_construct(
        user=command.user, reason=record.reason, full=command.full or None
    )
    if status.canary is None:  # baking
        run.promote = request
        return "bake ended early"
    status.canary = status.canary.model_copy(update=dict(promote_request=request))
    if command.full:
        return "promote requested: to 100% once the canary is ready"
    return "promote requested: ends the step once the canary is ready and an analysis run passes"


def _command_record(run: _Run, command: Command, result: str) -> CommandRecord:
    """What status.lastCommand says of a command handled now (its reason clipped like every reason)."""
    return CommandRecord.model_construct(
        id=command.id,
        action=command.action,
        user=command.user,
        reason=clip(command.reason) if command.reason else None,
        at=run.now,
        issued_at=_issued_at(command),
        result=result,
    )


def _issued_at(command: Command) -> datetime | None:
    try:
        return datetime.fromisoformat(command.issued_at) if command.issued_at else None
    except ValueError:
        return None


def _already_handled(last: CommandRecord | None, command: Command) -> bool:
    """Same id, or issued before the last one handled (an old annotation put back, e.g. by a sync)."""
    if last is None:
        return False
    issued = _issued_at(command)
    return last.id == command.id or (
        issued is not None and last.issued_at is not None and issued <= last.issued_at
    )


def _running_phase(status: ModelDeploymentStatus) -> Phase:
    """The phase a rollout is in when nothing holds it."""
    return Phase.PROGRESSING if status.canary is not None else Phase.BAKING


# ----------------------------------------------------------------------------------- state machine


def _advance(run: _Run) -> None:
    spec, status = run.spec, run.status
    desired = spec.model.version
    if status.canary is not None and status.canary.version != desired:
        _abandon(run)
    if status.rejected is not None and status.rejected.version != desired:
        status.rejected = None  # a person moved on: the spec names another version now
    if status.stable is None or status.last_known_good is None:
        _first_deployment(run)
    elif status.canary is not None:
        _progress_canary(run)
    elif desired != status.stable.version:
        if status.rejected is not None:
            if status.bake_started_at is not None:
                _bake(run)  # a version refused by its gates changes nothing: the bake goes on
            return  # reverted or refused; waits for a new version or `retry`
        if desired == status.last_known_good.version:
            serving = status.stable.version
            status.bake_started_at = None  # a person moved the spec back: nothing is rejected
            _revert(
                run,
                "RolledBack",
                f"spec names {desired}, the last known good version (was serving {serving})",
                user=run.obs.changed_by,
            )
        elif _is_warm(status, spec):
            _rollback_to_warm(run)
        else:
            _start_rollout(run)
    elif status.bake_started_at is not None:
        _bake(run)
    elif status.phase != Phase.HEALTHY:
        _settle_healthy(run)


def _first_deployment(run: _Run) -> None:
    """No version has been proven here yet: deploy the desired one directly; there is nothing to
    compare it with and nothing to revert to."""
    spec, status, obs = run.spec, run.status, run.obs
    version = spec.model.version
    if status.rejected is not None:
        return
    if status.stable is None or status.stable.version != version:
        if not _gates_hold(run):
            return
        previous = status.stable.version if status.stable else None
        status.stable = run.ref(version, spec.model.uri)
        status.analysis = AnalysisStatus()
        what = f"replacing {previous}, which never became ready" if previous else "first deployment"
        run.transition(
            Phase.PROGRESSING,
            "RolloutStarted",
            f"{run.name} {version}: {what}{_gates_note(run)}",
            version=version,
            user=obs.changed_by,
            change_reason=obs.change_reason,
        )
        run.requeue.append(WAIT_FOR_READY)
        return
    workload = obs.workloads.get(version)
    if workload is not None and workload.ready() and workload.replicas == spec.replicas:
        status.last_known_good = status.stable
        run.transition(
            Phase.HEALTHY,
            "Available",
            f"{run.name} {version} is serving: {workload.ready_replicas} ready",
            version=version,
        )
        return
    if status.phase == Phase.FAILED:
        return
    waited = (run.now - (status.stable.since or run.now)).total_seconds()
    deadline = spec.rollout.progress_deadline_seconds
    if (workload is not None and workload.deadline_exceeded) or waited >= deadline:
        run.transition(
            Phase.FAILED,
            "ProgressDeadlineExceeded",
            f"{run.name} {version} not ready after {format_duration(waited)}; "
            "no earlier version to revert to",
            version=version,
            warning=True,
        )
        return
    run.requeue.append(min(WAIT_FOR_READY, max(deadline - waited, 0.1)))


def _gates_hold(run: _Run) -> bool:
    """Pre-deploy gates on the candidate's offline evaluation; a failure refuses the version."""
    spec, status = run.spec, run.status
    serving = status.stable.version if status.stable is not None else None
    recorded = next((e.evaluation for e in status.evaluations if e.version == serving), None)
    checks = check_gates(spec.gates, spec.model.evaluation, serving_version=serving, serving=recorded)
    failed = [c.text for c in checks if not c.passed]
    version = spec.model.version
    if failed:
        message = f"{run.name} {version} refused by gates: " + "; ".join(failed)
        run.status.rejected = Rejection.model_construct(
            version=version, reason="GateFailed", message=message, at=run.now
        )
        baking = run.status.bake_started_at is not None
        if run.status.stable is not None:
            message += f"; {run.status.stable.version} keeps serving" + (" and baking" if baking else "")
        if not baking:
            target = Phase.FAILED
        else:  # the refused version changes nothing: the bake goes on (held, if it was)
            target = Phase.PAUSED if run.status.phase == Phase.PAUSED else Phase.BAKING
        run.transition(
            target,
            "GateFailed",
            message,
            version=version,
            warning=True,
            change_reason=run.obs.change_reason,
        )
        return False
    if checks:
        run.gates_passed = "; ".join(c.text for c in checks)
        run.actions.append(
            EmitEvent(
                "Normal",
                "GatePassed",
                f"{run.name} {version} passed gates: {run.gates_passed}",
                key=f"gate-{version}-{run.obs.generation}",
                version=version,
            )
        )
    _record_evaluation(run)
    return True


def _gates_note(run: _Run) -> str:
    """The gates' values and deltas, for the history entry of the rollout they let start."""
    return f"; gates: {run.gates_passed}" if run.gates_passed else ""


def _record_evaluation(run: _Run) -> None:
    """Keep the candidate's evaluation in status for when it serves; only the versions that serve or may
    serve again (stable, last known good, the candidate) are kept, so the list stays small."""
    status, model = run.status, run.spec.model
    keep = {model.version} | {ref.version for ref in (status.stable, status.last_known_good) if ref}
    entry = RecordedEvaluation.model_construct(
        version=model.version, evaluation=dict(model.evaluation or {}), at=run.now
    )
    status.evaluations = [
        *(e for e in status.evaluations if e.version in keep and e.version != model.version),
        entry,
    ]


def _start_rollout(run: _Run) -> None:
    spec, status, obs = run.spec, run.status, run.obs
    if not _gates_hold(run):
        return
    version, first = spec.model.version, spec.rollout.steps[0]
    status.canary = CanaryStatus.model_construct(
        version=version,
        uri=spec.model.uri,
        lineage=spec.model.lineage,
        since=run.now,
        step=0,
        weight=first.live_weight,
        step_started_at=run.now,
        ready_at=None,
        promote_request=None,
    )
    seen = obs.workloads.get(version)
    if (  # its Deployment is still there (an abandoned attempt not yet removed) and already fits
        seen is not None
        and seen.template_hash == template_hash(spec, version, spec.model.uri)
        and _canary_ready(run, status.canary)
    ):
        status.canary = status.canary.model_copy(update=dict(ready_at=run.now))
    status.analysis = AnalysisStatus()
    status.bake_started_at = None
    # a canary's revert goes back to the stable, which serves; a version kept warm would also take a
    # share of the replica-ratio split, so it goes before the canary gets traffic
    status.warm = None
    retry = " (retry)" if run.retry_by else ""
    run.transition(
        Phase.PROGRESSING,
        "RolloutStarted",
        f"{run.name} {status.stable.version} → {version}{retry}: step 1/{len(spec.rollout.steps)} "
        f"{describe_stage(first)}{_gates_note(run)}",
        version=version,
        user=run.retry_by or obs.changed_by,
        change_reason=obs.change_reason,
    )
    _hold_if_paused(run)
    run.requeue.append(WAIT_FOR_READY)


def _abandon(run: _Run) -> None:
    old = run.status.canary
    run.status.canary = None
    run.status.control_paused = None  # a hold ends with the rollout it held; the new one starts unheld
    run.transition(
        Phase.PROGRESSING,
        "RolloutAbandoned",
        f"{run.name} canary {old.version} abandoned at step {old.step + 1}: spec now names "
        f"{run.spec.model.version}",
        version=old.version,
        user=run.obs.changed_by,
    )


def _hold_if_paused(run: _Run) -> bool:
    """Enter or stay in Paused while spec.paused or a pause command holds the rollout."""
    status = run.status
    held = run.spec.paused or bool(status.control_paused)
    if held and status.phase != Phase.PAUSED:
        who = "spec.paused" if run.spec.paused else "a pause command"
        run.transition(
            Phase.PAUSED, "Paused", f"{run.name} paused by {who}", version=analysed_version(status)
        )
    elif not held and status.phase == Phase.PAUSED:
        run.transition(
            _running_phase(status), "Resumed", f"{run.name} resumed", version=analysed_version(status)
        )
    return held


def _consume_analysis(run: _Run) -> AnalysisRun | None:
    """Count a new analysis run once; a run not newer than the last one recorded is ignored."""
    analysis = run.obs.analysis
    status = run.status
    last = status.analysis.last_run_at
    if analysis is None or (last is not None and analysis.at <= last):
        return None
    verdict = analysis.verdict
    counts = status.analysis
    passed = verdict == Verdict.PASS
    failures = 0 if passed else counts.failures + (verdict == Verdict.FAIL)
    inconclusive = 0 if passed else counts.inconclusive + (verdict == Verdict.INCONCLUSIVE)
    status.analysis = AnalysisStatus.model_construct(
        failures=failures,
        inconclusive=inconclusive,
        last_run_at=analysis.at,
        verdict=verdict,
        results=list(analysis.results),
    )
    if not passed:
        run.bad_results = _results_text(analysis.gating, only_bad=True)
        version = analysed_version(status)
        limits = run.spec.rollout.analysis
        if verdict == Verdict.FAIL:
            count, limit = failures, limits.failure_limit
        else:
            count, limit = inconclusive, limits.inconclusive_limit
        run.actions.append(
            EmitEvent(
                "Warning",
                f"Analysis{verdict.value}",
                f"{run.name} {version}: {run.bad_results} ({count} in a row, limit {limit})"
                + (
                    f"; owner: {run.spec.model.owner}" if run.spec.model.owner else ""
                ),  # every Warning names it
                key=f"analysis-{int(analysis.at.timestamp() * 1000)}",
                version=version,
            )
        )
    return analysis


def _judge_analysis(run: _Run) -> bool:
    """Apply a new analysis run; True when it ended the rollout (revert) or held it (pause)."""
    analysis = _consume_analysis(run)
    if analysis is None:
        return False
    limits, counts = run.spec.rollout.analysis, run.status.analysis
    if counts.verdict == Verdict.PASS:
        return False  # the common case: nothing to say about a passing run
    bad = run.bad_results
    version = analysed_version(run.status)
    if any(r.verdict == Verdict.ERROR for r in analysis.results if not r.dry_run):
        _revert(run, "AnalysisError", f"a query can never pass: {bad}")
        return True
    if counts.failures > limits.failure_limit:
        _revert(run, "AnalysisFailed", f"{bad} ({counts.failures} failed runs, limit {limits.failure_limit})")
        return True
    if counts.inconclusive > limits.inconclusive_limit:
        detail = f"{bad} ({counts.inconclusive} inconclusive runs, limit {limits.inconclusive_limit})"
        if limits.on_inconclusive == "revert":
            _revert(run, "AnalysisInconclusive", detail)
        elif not run.status.control_paused:  # already held: the hold is recorded once, not every run
            run.status.control_paused = True
            run.transition(
                Phase.PAUSED,
                "AnalysisInconclusive",
                f"{run.name} {version} held for a person: {detail}; run `canaria resume` or `canaria abort`",
                version=version,
                warning=True,
            )
        return True
    return False


def _analysis_passed_since(run: _Run, since: datetime | None, began: datetime | None) -> bool:
    """A stage may end only on a passing run made after it began (strictly: the run that ended the previous
    stage judged that stage, even when the next one needs no scaling and is ready at the same instant) and
    once it was ready (`since`); no metrics means nothing to wait for."""
    if not analysis_metrics(run.spec, run.status):
        return True
    counts = run.status.analysis
    last = counts.last_run_at
    return (
        since is not None
        and counts.verdict == Verdict.PASS
        and last is not None
        and last >= since
        and (began is None or last > began)
    )


def _next_analysis_in(run: _Run) -> float:
    last = run.status.analysis.last_run_at
    interval = run.spec.rollout.analysis.interval_seconds
    return interval if last is None else max(interval - (run.now - last).total_seconds(), 0.1)


def _canary_sized(run: _Run, canary: CanaryStatus) -> bool:
    """The canary, and its baseline when there is one, run at this step's size: a step is judged (and its
    pause counted) only when both sides of the comparison serve, and the progress deadline covers both."""
    want = step_sizes(run.spec, current_step(run.spec, canary))[0]
    workload = run.obs.workloads.get(canary.version)
    if workload is None or not workload.ready() or workload.replicas != want:
        return False
    baseline = run.obs.baseline
    return desired_baseline(run.spec, run.status) is None or (
        baseline is not None and baseline.ready() and baseline.replicas == want
    )


def _route_holds(run: _Run, split: TrafficSplit | None) -> bool:
    """Whether the router's objects send traffic as `split` says (always, with replica routing: the
    replicas are the split)."""
    if not run.spec.rollout.routing.exact:
        return True
    seen = run.obs.traffic
    return seen is not None and seen.problem is None and split is not None and seen.split == split


def _canary_ready(run: _Run, canary: CanaryStatus) -> bool:
    """Ready at its step: sized and ready, and the route gives it the step's traffic."""
    if not _canary_sized(run, canary):
        return False
    status = run.status
    split = step_split(run.spec, status.model_copy(update=dict(canary=canary))) if status.stable else None
    return _route_holds(run, split)


def _progress_canary(run: _Run) -> None:
    spec, status = run.spec, run.status
    steps = spec.rollout.steps
    canary = status.canary
    edited: dict[str, int] | None = None
    if canary.step >= len(steps):  # steps were shortened mid-rollout
        edited = {"step": len(steps) - 1, "weight": steps[-1].live_weight}
    elif canary.weight != steps[canary.step].live_weight:  # a step's weight was edited mid-rollout
        edited = {"weight": steps[canary.step].live_weight}
    seen = run.obs.workloads.get(canary.version)
    if edited is not None or (
        canary.ready_at is not None
        and seen is not None
        and (
            seen.replicas != step_sizes(spec, current_step(spec, canary))[0]
            or (
                seen.template_hash is not None
                and seen.template_hash != template_hash(spec, canary.version, canary.uri)
            )
        )
    ):
        # The current step was edited, or replicas or the template changed under a canary that was ready
        # at this step: the step starts again (readiness, pause, and a passing run of its own), rather than
        # counting from its old start (and reverting at once on the progress deadline) or ending on a run
        # made at another weight.
        canary = canary.model_copy(update=dict(**(edited or {}), step_started_at=run.now, ready_at=None))
    if canary.ready_at is not None and (
        (seen is not None and seen.updated and seen.ready_replicas < seen.replicas)
        or not _route_holds(run, step_split(spec, status))
    ):
        # it was ready at this step and lost it (a pod restarted, or the route was changed by someone
        # else: not a change of ours): the step waits afresh from now, instead of being judged against a
        # deadline counted from its start, or on analysis made while traffic went elsewhere
        canary = canary.model_copy(update=dict(step_started_at=run.now, ready_at=None))
    status.canary = canary
    if not _canary_ready(run, canary):
        _wait_for_canary(run, canary)
        return
    if smoke_pending(spec, status) and not _smoke_before_traffic(run, canary):
        return
    if canary.ready_at is None:
        canary = canary.model_copy(update=dict(ready_at=run.now))
        status.canary = canary
    if _judge_analysis(run):
        return
    promote = canary.promote_request
    if promote is not None and promote.full:
        _promote(run, f"promoted fully by command, skipping {len(steps) - canary.step - 1} step(s)", promote)
        return
    if _hold_if_paused(run):
        return
    step = steps[canary.step]
    held_for = (run.now - canary.ready_at).total_seconds()
    pause_over = promote is not None or (not step.manual and held_for >= step.pause_seconds)
    if not (pause_over and _analysis_passed_since(run, canary.ready_at, canary.step_started_at)):
        if spec.rollout.analysis.metrics:
            run.requeue.append(_next_analysis_in(run))
        if not step.manual and not pause_over:
            run.requeue.append(step.pause_seconds - held_for)
        return
    passed = _results_text(status.analysis.results) or "no metrics"
    if canary.step + 1 == len(steps):
        _promote(run, f"all {len(steps)} steps passed; {passed}", promote)
        return
    nxt = steps[canary.step + 1]
    advanced = canary.model_copy(
        update=dict(
            step=canary.step + 1, weight=nxt.live_weight, step_started_at=run.now, promote_request=None
        )
    )
    # when the next stage needs no more replicas (and no route change), the canary is ready for it at once
    status.canary = advanced.model_copy(
        update=dict(ready_at=run.now if _canary_ready(run, advanced) else None)
    )
    by = f" (promoted by {promote.user or 'unknown'})" if promote else ""
    run.transition(
        Phase.PROGRESSING,
        "StepAdvanced",
        f"{run.name} {canary.version}: step {canary.step + 2}/{len(steps)} {describe_stage(nxt)}{by}; "
        f"{passed}",
        version=canary.version,
        command=promote,
    )
    run.requeue.append(WAIT_FOR_READY)


def _wait_for_canary(run: _Run, canary: CanaryStatus) -> None:
    """An unready canary gets no traffic to judge; past the progress deadline it is reverted."""
    workload = run.obs.workloads.get(canary.version)
    waited = (run.now - (canary.step_started_at or run.now)).total_seconds()
    deadline = run.spec.rollout.progress_deadline_seconds
    if (workload is not None and workload.deadline_exceeded) or waited >= deadline:
        want = step_sizes(run.spec, current_step(run.spec, canary))[0]
        have = workload.ready_replicas if workload else 0
        _revert(
            run,
            "ProgressDeadlineExceeded",
            f"canary not ready after {format_duration(waited)} ({have}/{want} replicas ready)",
        )
        return
    run.requeue.append(min(WAIT_FOR_READY, max(deadline - waited, 0.1)))
    _hold_if_paused(run)


def _promote(run: _Run, detail: str, command: PromoteRequest | None) -> None:
    spec, status = run.spec, run.status
    canary = status.canary
    previous = status.stable.version
    status.warm = _keep_warm(run, status.last_known_good, canary.version)
    status.stable = VersionRef.model_construct(
        version=canary.version, uri=canary.uri, lineage=canary.lineage, since=run.now
    )
    status.canary = None
    status.analysis = status.analysis.model_copy(update=dict(failures=0, inconclusive=0))
    message = f"{run.name} {previous} → {canary.version} promoted: {detail}"
    if status.warm is not None:
        message += f"; {status.warm.version} kept warm ({status.warm.replicas} replicas, no traffic)"
    if spec.rollout.bake:
        status.bake_started_at = run.now
        run.transition(
            Phase.BAKING,
            "Promoted",
            f"{message}; baking {spec.rollout.bake}",
            version=canary.version,
            command=command,
        )
        run.requeue.append(spec.rollout.bake_seconds)
        _hold_if_paused(run)
    else:
        status.last_known_good = status.stable
        status.control_paused = None  # the rollout is over: a hold of it must not outlive it
        run.transition(Phase.HEALTHY, "Promoted", message, version=canary.version, command=command)


def _bake(run: _Run) -> None:
    """After promotion the new version keeps being analysed; a failure reverts to the previous one."""
    spec, status = run.spec, run.status
    if _judge_analysis(run):
        return
    if run.promote is not None:
        _finish_bake(run, "bake ended early by command", run.promote)
        return
    if _hold_if_paused(run):
        return
    baked = (run.now - status.bake_started_at).total_seconds()
    started = status.bake_started_at
    if baked >= spec.rollout.bake_seconds and _analysis_passed_since(run, started, started):
        _finish_bake(
            run, f"baked {spec.rollout.bake}; {_results_text(status.analysis.results) or 'no metrics'}"
        )
        return
    run.requeue.append(max(spec.rollout.bake_seconds - baked, 0.1))
    if spec.rollout.analysis.metrics:
        run.requeue.append(_next_analysis_in(run))


def _finish_bake(run: _Run, detail: str, command: PromoteRequest | None = None) -> None:
    status = run.status
    status.bake_started_at = None
    status.control_paused = None  # the rollout is over: a hold of it must not outlive it
    status.last_known_good = status.stable
    warm = status.warm
    if warm is not None and (warm.until is None or warm.until <= run.now):
        status.warm = None  # kept for the bake only (or its keepPrevious window is over)
    elif warm is not None:
        detail += f"; {warm.version} kept warm until {warm.until.isoformat()}"
    run.transition(
        Phase.HEALTHY,
        "BakeCompleted",
        f"{run.name} {status.stable.version} is now the last known good: {detail}",
        version=status.stable.version,
        command=command,
    )


def _revert(
    run: _Run, cause: str, detail: str, *, user: str | None = None, command: CommandRecord | None = None
) -> None:
    """Traffic and replicas back on lastKnownGood. The failed version is remembered as rejected, so it
    is not rolled out again until a person changes the spec or retries."""
    status = run.status
    target = status.last_known_good
    failed = analysed_version(status)
    if failed == target.version:
        failed = None
    if failed is not None:
        status.rejected = Rejection.model_construct(version=failed, reason=cause, message=detail, at=run.now)
    status.stable = target.model_copy(update=dict(since=run.now))
    status.canary = None
    status.warm = None  # it serves now (the usual case), or it is not where a revert goes
    status.bake_started_at = None
    status.control_paused = None
    status.analysis = status.analysis.model_copy(update=dict(failures=0, inconclusive=0))
    _plan_rollback_smoke(run, target)
    if failed is None:  # a requested rollback to the last known good version (the spec names it)
        run.transition(
            Phase.HEALTHY,
            "RolledBack",
            f"{run.name} rolled back to {target.version}: {detail}",
            version=target.version,
            user=user,
            command=command,
        )
        return
    run.transition(
        Phase.REVERTED,
        "Aborted" if cause == "Aborted" else "RolledBack",
        f"{run.name} reverted {failed} → {target.version} ({cause}): {detail}; the spec still names {failed}",
        version=target.version,
        warning=True,
        user=user,
        command=command,
    )


def _keep_warm(run: _Run, previous: VersionRef | None, promoted: str) -> WarmStatus | None:
    """What stays ready after a promotion: the version a revert or rollback goes back to, during the
    bake (at the full count unless keepPrevious says otherwise) and for keepPrevious.for after it."""
    spec = run.spec
    keep, replicas = spec.rollout.keep_previous, warm_replicas(spec)
    if (
        previous is None
        or previous.version == promoted
        or replicas == 0
        or (keep is None and not spec.rollout.bake)
    ):
        return None
    until = run.now + timedelta(seconds=keep.for_seconds) if keep is not None else None
    return WarmStatus.model_construct(
        version=previous.version,
        uri=previous.uri,
        lineage=previous.lineage,
        since=run.now,
        replicas=replicas,
        until=until,
    )


def _is_warm(status: ModelDeploymentStatus, spec: ModelDeploymentSpec) -> bool:
    """The spec names the version kept warm, as it was deployed (same URI)."""
    warm = status.warm
    return warm is not None and (warm.version, warm.uri) == (spec.model.version, spec.model.uri)


def _rollback_to_warm(run: _Run) -> None:
    """The spec names the previous version again while it is kept warm: traffic moves to it at once; it
    served before and was the last known good, so it is not rolled out again as a canary."""
    status, warm = run.status, run.status.warm
    serving = status.stable.version
    status.stable = VersionRef.model_construct(
        version=warm.version, uri=warm.uri, lineage=warm.lineage, since=run.now
    )
    status.last_known_good = status.stable
    status.warm = None
    status.bake_started_at = None
    status.control_paused = None
    _plan_rollback_smoke(run, status.stable)
    run.transition(
        Phase.HEALTHY,
        "RolledBack",
        f"{run.name} rolled back {serving} → {warm.version}, kept warm: traffic moved, no pod started",
        version=warm.version,
        user=run.obs.changed_by,
    )


def _release_warm_when_due(run: _Run) -> None:
    """Past keepPrevious.for (and after the bake) the previous version is scaled away."""
    status = run.status
    warm = status.warm
    if warm is None or warm.until is None:
        return
    if status.bake_started_at is not None:
        return  # the bake keeps it; the bake's end decides
    left = (warm.until - run.now).total_seconds()
    if left > 0:
        run.requeue.append(left)
        return
    status.warm = None
    run.actions.append(
        EmitEvent(
            "Normal",
            "PreviousReleased",
            f"{run.name} {warm.version} no longer kept warm: its keepPrevious window ended "
            f"{warm.until.isoformat()}",
            key=f"warm-{warm.version}-{int(warm.until.timestamp())}",
            version=warm.version,
        )
    )


# -------------------------------------------------------------------------------------- smoke tests

SMOKE_POLL = 1.0  # seconds between looks at a running smoke-test Job (Job events do not wake us)


def _smoke_record(run: _Run, version: str, uri: str, purpose: str, phase: str) -> SmokeTestStatus:
    """A new smoke test; its attempt number counts every test of this resource, so a Job name (version
    and attempt) is never reused for another test."""
    previous = run.status.smoke_test
    return SmokeTestStatus.model_construct(
        version=version,
        uri=uri,
        purpose=purpose,
        attempt=previous.attempt + 1 if previous is not None else 1,
        phase=phase,
        job=None,
        started_at=None,
        finished_at=None,
        exit_code=None,
        reason=None,
        log=None,
    )


def _start_smoke(run: _Run, record: SmokeTestStatus) -> None:
    run.status.smoke_test = record.model_copy(update=dict(phase="Running", started_at=run.now))
    run.actions.append(RunSmokeTest(record.version, record.uri, record.attempt))
    run.requeue.append(SMOKE_POLL)


def _follow_smoke(run: _Run) -> str:
    """Follow the running smoke test: 'Running', or its verdict ('Passed', 'Failed') recorded in status.
    A Job not found is created again under the same name (the create is idempotent: never a second Job)."""
    record = run.status.smoke_test
    seen = run.obs.smoke_test
    if seen is None or (seen.version, seen.attempt) != (record.version, record.attempt):
        seen = None
    if seen is None or seen.outcome in ("Absent", "Running"):
        if seen is None or seen.outcome == "Absent":
            run.actions.append(RunSmokeTest(record.version, record.uri, record.attempt))
        run.requeue.append(SMOKE_POLL)
        return "Running"
    phase = "Passed" if seen.outcome == "Succeeded" else "Failed"
    run.status.smoke_test = record.model_copy(
        update=dict(
            phase=phase,
            job=seen.job,
            finished_at=run.now,
            exit_code=seen.exit_code,
            reason=seen.reason,
            log=seen.log,
        )
    )
    return phase


def smoke_verdict_text(record: SmokeTestStatus) -> str:
    """'job J exit code 3 (Error): <last line of its output>' for messages."""
    code = f"exit code {record.exit_code}" if record.exit_code is not None else "no exit code"
    why = f" ({record.reason})" if record.reason else ""
    lines = [line for line in (record.log or "").splitlines() if line.strip()]
    tail = f": {lines[-1].strip()[:300]}" if lines else ""
    return f"job {record.job}, {code}{why}{tail}"


def _smoke_before_traffic(run: _Run, canary: CanaryStatus) -> bool:
    """The canary is ready but gets no traffic until its smoke test passes; a failure refuses it.
    True when it passed (the step goes on in this decision)."""
    status = run.status
    record = status.smoke_test
    if not (
        record is not None
        and (record.purpose, record.version) == ("BeforeTraffic", canary.version)
        and record.started_at is not None
        and (canary.since is None or record.started_at >= canary.since)
    ):
        _start_smoke(run, _smoke_record(run, canary.version, canary.uri, "BeforeTraffic", "Pending"))
        return False
    verdict = record.phase if record.phase != "Running" else _follow_smoke(run)
    if verdict == "Running":
        return False
    record = status.smoke_test
    if verdict == "Passed":
        run.actions.append(
            EmitEvent(
                "Normal",
                "SmokeTestPassed",
                f"{run.name} {canary.version} passed its smoke test before any traffic "
                f"({smoke_verdict_text(record)})",
                key=f"smoke-{record.attempt}",
                version=canary.version,
            )
        )
        return True
    message = (
        f"{run.name} {canary.version} refused by its smoke test before any traffic: "
        f"{smoke_verdict_text(record)}; {status.stable.version} keeps serving"
    )
    status.rejected = Rejection.model_construct(
        version=canary.version, reason="SmokeTestFailed", message=message, at=run.now
    )
    status.canary = None
    run.transition(Phase.FAILED, "SmokeTestFailed", message, version=canary.version, warning=True)
    return False


def _plan_rollback_smoke(run: _Run, restored: VersionRef) -> None:
    """After a revert or rollback the restored version is tested once it serves at full size."""
    if run.spec.rollout.smoke_test is not None:
        run.status.smoke_test = _smoke_record(run, restored.version, restored.uri, "AfterRollback", "Pending")


def _verify_rollback(run: _Run) -> None:
    """Run the smoke test against the version a revert or rollback restored; the verdict is an Event and
    the RollbackVerified condition (a failure is a Warning naming the owner: nothing is left to revert
    to, a person decides)."""
    status, record = run.status, run.status.smoke_test
    if record is None or record.purpose != "AfterRollback" or record.phase in ("Passed", "Failed"):
        return
    if status.stable is None or status.stable.version != record.version:
        return  # another version serves now; a newer test replaces this one
    if record.phase == "Pending":
        if _serves_fully(run.obs, record.version, run.spec.replicas):
            _start_smoke(run, record)
        else:
            run.requeue.append(WAIT_FOR_READY)
        return
    verdict = _follow_smoke(run)
    if verdict == "Running":
        return
    record = status.smoke_test
    owner = f"; owner: {run.spec.model.owner}" if run.spec.model.owner else ""
    passed = verdict == "Passed"
    run.actions.append(
        EmitEvent(
            "Normal" if passed else "Warning",
            "RollbackVerified" if passed else "RollbackNotVerified",
            f"{run.name} {record.version} restored"
            + (" and proven by its smoke test" if passed else ", but its smoke test failed")
            + f" ({smoke_verdict_text(record)})"
            + ("" if passed else owner),
            key=f"smoke-{record.attempt}",
            version=record.version,
        )
    )


def _settle_healthy(run: _Run) -> None:
    """The spec names the serving version again (e.g. a person rolled the spec back after a revert)."""
    status = run.status
    status.rejected = None
    status.control_paused = None
    stable, bake = status.stable, run.spec.rollout.bake
    if status.last_known_good.version != stable.version:
        # it serves again, but its bake was cut short by a newer version that was then abandoned: it is
        # not proven, so it bakes again before it becomes the last known good (and Healthy)
        if bake:
            status.bake_started_at = run.now
            run.transition(
                Phase.BAKING,
                "BakeRestarted",
                f"{run.name} spec names {stable.version} again, whose bake was interrupted: baking {bake}",
                version=stable.version,
                user=run.obs.changed_by,
            )
            run.requeue.append(run.spec.rollout.bake_seconds)
            _hold_if_paused(run)
            return
        status.last_known_good = stable
    run.transition(
        Phase.HEALTHY,
        "Reconciled",
        f"{run.name} spec names {status.stable.version}, which is serving",
        version=status.stable.version,
        user=run.obs.changed_by,
    )


# ---------------------------------------------------------------------------------------- workloads


def desired_workloads(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, obs: Observations
) -> dict[str, tuple[str, int]]:
    """version → (uri, replicas) for every Deployment that should exist."""
    stable = status.stable
    if stable is None:
        return {}
    desired = {stable.version: (stable.uri, spec.replicas)}
    canary = status.canary
    if canary is not None:
        steps = spec.rollout.steps
        want, rest = step_sizes(spec, current_step(spec, canary))
        workload = obs.workloads.get(canary.version)
        if workload is None or not workload.ready() or workload.replicas != want:
            # keep the previous step's serving capacity until the canary has taken its new share
            rest = (
                step_sizes(spec, steps[canary.step - 1])[1] if 0 < canary.step < len(steps) else spec.replicas
            )
        baseline = obs.baseline
        if spec.rollout.baseline_enabled and baseline is not None and baseline.version == stable.version:
            # the baseline serves the stable version: its ready pods take from the stable's share
            rest = max(rest - min(baseline.ready_replicas, want), 0)
        desired = {stable.version: (stable.uri, rest), canary.version: (canary.uri, want)}
    lkg, warm = status.last_known_good, status.warm
    if warm is not None and warm.version not in desired:
        # ready with no traffic: it scales up to its warm count once the Service selects the stable alone
        # (see service_version; until then it is the version leaving, serving at the size it had)
        seen = obs.workloads.get(warm.version)
        pinned = canary is None and (
            obs.service_version == stable.version or _serves_fully(obs, stable.version, spec.replicas)
        )
        desired[warm.version] = (warm.uri, warm.replicas if pinned else (seen.replicas if seen else 0))
    elif status.bake_started_at is not None and lkg is not None and lkg.version != stable.version:
        desired[lkg.version] = (lkg.uri, 0)  # kept, scaled to zero, during bake: a revert is a scale-up
    return desired


def service_version(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    obs: Observations,
    *,
    leaving: Iterable[str] = (),
) -> str | None:
    """The one version the model's Service selects, or None for every version of the model.

    With replica-ratio routing a Pod takes traffic as soon as the Service selects it, so "ready with no
    traffic" needs a Service that selects only what serves. Outside a canary it selects the stable
    alone, once the stable serves at full size or it already did (until then a version leaving keeps
    serving, as before); a rejected version never holds it back. During a canary it selects every version
    (the split is the replica ratio), except while a version that has no role any more still has ready
    Pods: they would take a share, so the Service stays on the stable until they are gone (`leaving`:
    versions being deleted by this decision, which count as gone).
    """
    stable = status.stable
    if stable is None:
        return None
    canary = status.canary
    roles = {stable.version, canary.version if canary is not None else None}
    rejected = status.rejected.version if status.rejected else None
    gone = set(leaving)
    others = {v for v, w in obs.workloads.items() if v not in roles | gone and w.ready_replicas > 0}
    if canary is not None:
        return stable.version if others or smoke_pending(spec, status) else None
    if obs.service_version == stable.version or _serves_fully(obs, stable.version, spec.replicas):
        return stable.version
    return None if others - {rejected} else stable.version


def desired_baseline(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> tuple[str, str, int] | None:
    """(version, uri, replicas) of the baseline Deployment: the stable version, sized like the canary,
    while a canary runs with rollout.baseline enabled; None otherwise."""
    canary, stable = status.canary, status.stable
    if canary is None or stable is None or not spec.rollout.baseline_enabled:
        return None
    return stable.version, stable.uri, step_sizes(spec, current_step(spec, canary))[0]


def _routed(run: _Run) -> frozenset[str]:
    """Versions the router's objects still send requests to (a router that splits requests itself)."""
    seen = run.obs.traffic
    if not run.spec.rollout.routing.exact or seen is None or seen.split is None:
        return frozenset()
    return seen.split.versions()


def _traffic_target(run: _Run, wanted: TrafficSplit) -> TrafficSplit:
    """The split to set now. A stage's split once the canary is sized and ready for it, the stable version
    alone once it serves at full size; meanwhile the route keeps what it holds (while every version it
    names has ready replicas), so no request is sent to a version that cannot answer."""
    status, obs = run.status, run.obs
    canary, stable = status.canary, status.stable
    if canary is not None and _canary_sized(run, canary):
        return wanted
    if canary is None and _serves_fully(obs, stable.version, run.spec.replicas):
        return wanted
    held = obs.traffic.split if obs.traffic is not None else None
    if held is not None and all(
        v in obs.workloads and obs.workloads[v].ready_replicas > 0 for v in held.versions()
    ):
        return held
    return TrafficSplit(stable.version)


def _describe_traffic(split: TrafficSplit, effective: int | None) -> str:
    if split.mirror:
        return f"0% live, {split.mirror}% mirrored"
    if split.headers:
        return "header-matched only (" + ", ".join(f"{k}: {v}" for k, v in split.headers) + ")"
    if effective is None or split.canary is None:
        return f"{split.weight}%" if split.canary else ""
    return f"{effective}%" if effective == split.weight else f"{effective}% ({split.weight}% asked)"


def _reconcile_traffic(run: _Run) -> None:
    """Tell the router what to set, and report the split and the weight it achieves. The route moves
    before any replica leaves (deletes and scale-downs wait until the router reports that no request goes
    to the version any more): a revert or an abort puts traffic back on stable first, a promotion moves
    all of it to the new version before the old one is scaled down."""
    spec, status, seen = run.spec, run.status, run.obs.traffic
    wanted = step_split(spec, status)
    if wanted is None:
        return
    routing = spec.rollout.routing
    effective = seen.effective_weight if seen is not None else None
    target = wanted
    if routing.exact:
        target = _traffic_target(run, wanted)
        last = (
            status.traffic if status.traffic is not None and status.traffic.router == routing.router else None
        )
        if seen is not None and seen.reason is None and seen.split != target:
            if last is not None and seen.split != _as_split(last) and seen.writer:
                held = seen.split.describe() if seen.split else "no split of Canaria's"
                run.route_changed = (
                    f"{run.name}: the route was changed by {seen.writer} (it holds {held}; Canaria set "
                    f"{_as_split(last).describe()}); setting {target.describe()} again"
                )
            run.actions.append(SetTraffic(target))
            run.requeue.append(ROUTE_SETTLE)
        elif status.phase in IN_ROLLOUT or (seen is not None and seen.problem):
            run.requeue.append(ROUTE_RECHECK)  # watching routes would need the Gateway API CRDs installed
        elif seen is None or seen.split != target:
            if last is None:
                return  # nothing set yet (the route is missing or refused): nothing to report
            target = _as_split(last)  # what was set last, and stays until the router can set more
    status.traffic = TrafficStatus.model_construct(
        router=routing.router,
        stable=target.stable,
        canary=target.canary,
        weight=target.weight,
        mirror=target.mirror,
        match=[HeaderMatch.model_construct(name=k, value=v) for k, v in target.headers] or None,
        effective_weight=effective,
        description=_describe_traffic(target, effective),
    )


def _as_split(traffic: TrafficStatus) -> TrafficSplit:
    headers = tuple((h.name, h.value) for h in traffic.match or ())
    return TrafficSplit(traffic.stable, traffic.canary, traffic.weight, traffic.mirror, headers)


def _serves_fully(obs: Observations, version: str, replicas: int) -> bool:
    workload = obs.workloads.get(version)
    return workload is not None and workload.replicas == replicas and workload.ready()


def _reconcile_workloads(run: _Run) -> None:
    spec, obs = run.spec, run.obs
    desired = desired_workloads(spec, run.status, obs)
    changes: list[Action] = []
    routed = _routed(run)
    for version, (uri, replicas) in desired.items():
        seen = obs.workloads.get(version)
        if seen is not None and version in routed and replicas == 0 < seen.replicas:
            run.requeue.append(WAIT_FOR_READY)  # the route still sends it requests: scaled away once moved
            continue
        if seen is not None and version != spec.model.version:
            if seen.replicas != replicas:
                changes.append(ScaleWorkload(version, replicas))
            continue
        digest = template_hash(spec, version, uri)
        if seen is None or seen.replicas != replicas or seen.template_hash != digest:
            changes.append(ApplyWorkload(version, uri, replicas, digest))
    stable = run.status.stable
    rejected = run.status.rejected.version if run.status.rejected else None
    serving = stable is not None and (
        _serves_fully(obs, stable.version, desired[stable.version][1])
        or (run.status.canary is None and obs.service_version == stable.version)
    )
    leaving = []
    for version in sorted(set(obs.workloads) - set(desired)):
        # a version leaving (the old stable at promotion, an abandoned canary) keeps serving until the
        # stable serves at full size (or the Service selects the stable alone); a rejected one, or one
        # with nothing ready, goes at once; with a router that splits requests, none goes while the route
        # still sends it requests
        if version in routed:
            run.requeue.append(WAIT_FOR_READY)
        elif serving or version == rejected or obs.workloads[version].ready_replicas == 0:
            leaving.append(version)
        else:
            run.requeue.append(WAIT_FOR_READY)
    pin = service_version(spec, run.status, obs, leaving=leaving)
    ports = (spec.service.port, spec.service.target_port)
    if stable is not None and (obs.service_ports != ports or obs.service_version != pin):
        # first: a revert to a warm version moves traffic before anything is deleted, and a version
        # kept warm scales up only once the Service no longer selects it
        run.actions.append(ApplyService(*ports, version=pin))
    run.actions.extend(changes)
    run.actions.extend(DeleteWorkload(version) for version in leaving)
    _reconcile_baseline(run, serving)


def _reconcile_baseline(run: _Run, stable_serving: bool) -> None:
    """Create, resize or remove the baseline. It copies the stable version's running Deployment (the
    shell reads its template; the hash is the stable's), and outlives the canary only until the stable
    serves at full size again, like any version leaving."""
    want, seen = desired_baseline(run.spec, run.status), run.obs.baseline
    if seen is not None and (want is None or seen.version != want[0]):
        if stable_serving or seen.ready_replicas == 0 or want is not None:
            run.actions.append(DeleteWorkload(seen.version, baseline=True))
        else:
            run.requeue.append(WAIT_FOR_READY)
        return
    if want is None:
        return
    version, uri, replicas = want
    stable = run.obs.workloads.get(version)
    if stable is None or stable.template_hash is None:
        run.requeue.append(WAIT_FOR_READY)  # nothing to copy yet
    elif seen is None or seen.template_hash != stable.template_hash:
        run.actions.append(ApplyWorkload(version, uri, replicas, stable.template_hash, baseline=True))
    elif seen.replicas != replicas:
        run.actions.append(ScaleWorkload(version, replicas, baseline=True))


# --------------------------------------------------------------------------------------- conditions
#
# What GitOps tools read. kstatus (Flux's health checks, `kpt live status`) decides from Reconciling and
# Stalled (InProgress / Failed, else Current once status.observedGeneration caught up), `kubectl wait`
# from one condition and its observedGeneration, Argo CD from the Lua health check in manifests/argocd/,
# which reads these same conditions. So the answer is decided once, here: exactly one of Ready,
# Reconciling and Stalled is True, and each names the generation it describes.


@dataclass(frozen=True)
class ReleaseState:
    """Where the version the spec names stands: "ready", "reconciling" or "stalled", and why."""

    state: Literal["ready", "reconciling", "stalled"]
    reason: str
    message: str


def release_state(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, obs: Observations
) -> ReleaseState:
    """Ready only when the spec's version serves at full weight (its bake passed, unless
    spec.rollout.readyWhileBaking): an old version serving, a canary at any weight, a revert, never are."""
    desired = spec.model.version
    stable, rejected = status.stable, status.rejected
    if status.refused is not None:
        serving = f"; {stable.version} serves" if stable is not None else ""
        return ReleaseState("stalled", "SpecRefused", f"{status.refused.message}{serving}")
    if rejected is not None and rejected.version == desired:
        serving = f"; {stable.version} serves" if stable is not None and stable.version != desired else ""
        if rejected.reason in ("GateFailed", "SmokeTestFailed"):  # refused before any traffic
            return ReleaseState("stalled", rejected.reason, f"{rejected.message}{serving}")
        return ReleaseState(
            "stalled",
            "Reverted",
            f"{desired} was reverted ({rejected.reason}): {rejected.message}{serving}; "
            "name another version in the spec, or retry it (`canaria retry`)",
        )
    if status.phase == Phase.FAILED:  # a first deployment past its deadline: nothing to revert to
        reason = status.history[-1].reason if status.history else "Failed"
        return ReleaseState("stalled", reason, status.message or "")
    if stable is not None and stable.version == desired and status.canary is None:
        if not _serves_fully(obs, desired, spec.replicas):
            if status.phase in IN_ROLLOUT or status.phase == Phase.PENDING:
                return ReleaseState("reconciling", status.phase.value, status.message or "")
            seen = obs.workloads.get(desired)
            ready = seen.ready_replicas if seen is not None else 0
            return ReleaseState(
                "reconciling", "WaitingForReplicas", f"{desired}: {ready}/{spec.replicas} replicas ready"
            )
        if status.bake_started_at is not None and not spec.rollout.ready_while_baking:
            return ReleaseState("reconciling", status.phase.value, status.message or "")
        baking = ", baking" if status.bake_started_at is not None else ""
        return ReleaseState(
            "ready", "Serving", f"{desired} serves at full weight ({spec.replicas} replicas{baking})"
        )
    phase = status.phase or Phase.PENDING
    return ReleaseState("reconciling", phase.value, status.message or f"{desired} not deployed yet")


def _condition(
    old: list[Condition], kind: str, ok: bool, reason: str, message: str, now: datetime, generation: int
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if ok else "False"
    previous = next((c for c in old if c.type == kind), None)
    if previous is not None and (
        previous.status,
        previous.reason,
        previous.message,
        previous.observed_generation,
    ) == (status, reason, message, generation):
        return previous
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    return Condition.model_construct(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _release_conditions(
    old: list[Condition], release: ReleaseState, now: datetime, generation: int
) -> list[Condition]:
    """Ready, Reconciling and Stalled: one True, all three with the same reason and message."""
    return [
        _condition(old, kind, release.state == state, release.reason, release.message[:1000], now, generation)
        for kind, state in (
            (ConditionType.READY, "ready"),
            (ConditionType.RECONCILING, "reconciling"),
            (ConditionType.STALLED, "stalled"),
        )
    ]


def _set_conditions(run: _Run) -> None:
    status, obs = run.status, run.obs
    if status.phase is None:
        status.phase = Phase.PENDING
    stable = status.stable
    serving = stable is not None and stable.version in obs.workloads and obs.workloads[stable.version].ready()
    if stable is None:
        available_message = "no version deployed yet"
    else:
        available_message = f"{stable.version} {'ready' if serving else 'not ready'}"
    release = release_state(run.spec, status, obs)
    status.conditions = [
        *_release_conditions(status.conditions, release, run.now, obs.generation),
        _condition(
            status.conditions,
            ConditionType.AVAILABLE,
            serving,
            "StableServing" if serving else "NotServing",
            available_message,
            run.now,
            obs.generation,
        ),
        *_traffic_condition(run),
    ]
    record = status.smoke_test
    if record is not None and record.purpose == "AfterRollback" and record.phase in ("Passed", "Failed"):
        passed = record.phase == "Passed"
        status.conditions.append(
            _condition(
                status.conditions,
                ConditionType.ROLLBACK_VERIFIED,
                passed,
                "SmokeTestPassed" if passed else "SmokeTestFailed",
                f"{record.version}: {smoke_verdict_text(record)}",
                run.now,
                obs.generation,
            )
        )


def refused_status(
    status: ModelDeploymentStatus, reason: str, message: str, generation: int, now: datetime
) -> ModelDeploymentStatus:
    """The status for a spec the operator will not act on (unreadable, or refused by the analysis policy):
    Stalled with ``reason`` for this generation, so a pipeline waiting on it fails fast; nothing else
    changes (the version that served keeps serving, Available stays as it was)."""
    release = ReleaseState("stalled", reason, message)
    kept = [c for c in status.conditions if c.type == ConditionType.AVAILABLE]
    return status.model_copy(
        update=dict(
            message=message,
            observed_generation=generation,
            conditions=[*_release_conditions(status.conditions, release, now, generation), *kept],
        )
    )


def _traffic_condition(run: _Run) -> list[Condition]:
    """TrafficRouted, for a router that splits requests itself: False (with a Warning when it becomes so)
    while its objects are missing, refused by the data plane, or changed by another writer."""
    if not run.spec.rollout.routing.exact or run.status.stable is None:
        return []
    seen = run.obs.traffic
    if run.route_changed:
        reason, message = "RouteChanged", run.route_changed
    elif seen is not None and seen.problem:
        reason, message = seen.reason or "RouteProblem", f"{run.name}: {seen.problem}"
    elif seen is None or run.status.traffic is None or seen.split != _as_split(run.status.traffic):
        return [_traffic_routed(run, False, "Routing", "waiting for the router to hold the split")]
    else:
        return [_traffic_routed(run, True, "Routed", run.status.traffic.description or "routed")]
    condition = _traffic_routed(run, False, reason, message)
    old = next((c for c in run.status.conditions if c.type == ConditionType.TRAFFIC_ROUTED), None)
    if old is None or (old.reason, old.message) != (reason, message):
        owner = run.spec.model.owner
        text = message + (f"; owner: {owner}" if owner else "")
        key = f"route-{reason.lower()}-{hashlib.sha256(message.encode()).hexdigest()[:10]}"
        run.actions.append(EmitEvent("Warning", reason, text, key=key, version=analysed_version(run.status)))
    return [condition]


def _traffic_routed(run: _Run, ok: bool, reason: str, message: str) -> Condition:
    return _condition(
        run.status.conditions, ConditionType.TRAFFIC_ROUTED, ok, reason, message, run.now, run.obs.generation
    )
