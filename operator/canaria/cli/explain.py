"""What happens next, in one sentence a person can act on (the `next:` line of `canaria status`).

Everything is read from the resource through the core's models: steps, pauses, the analysis interval and
the progress deadline are the spec's values or the API's defaults, never numbers of the CLI's own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from canaria.cli.session import Resource
from canaria.core.api import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from canaria.core.commands import parse_command
from canaria.core.durations import format_duration
from canaria.core.engine import describe_stage


def fmt_clock(moment: datetime, tz: tzinfo = UTC) -> str:
    return moment.astimezone(tz).strftime("%H:%M:%S")


def in_(seconds: float) -> str:
    """ "in 4m", or "now" when it is due (never "in now")."""
    return f"in {format_duration(seconds)}" if seconds >= 0.5 else "now"


def pending_command(res: Resource) -> dict[str, Any] | None:
    """The command annotation when the operator has not acknowledged it yet."""
    try:
        command = parse_command(res.metadata.get("annotations"))
    except ValueError:
        return None
    last = res.status.last_command
    if command is None or (last is not None and last.id == command.id):
        return None
    return {"id": command.id, "action": command.action, "user": command.user, "reason": command.reason}


def step_text(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus) -> str | None:
    """ "step 2/3 (weight 50%)" for the canary, or None."""
    canary = status.canary
    if canary is None:
        return None
    of = f"/{len(spec.rollout.steps)}" if spec is not None else ""
    return f"step {canary.step + 1}{of} (weight {canary.weight}%)"


def _next_analysis(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> str:
    last = status.analysis.last_run_at
    left = 0.0
    if last is not None:
        left = (last - now).total_seconds() + spec.rollout.analysis.interval_seconds
    if left >= 0.5:
        return f"next analysis in {format_duration(left)}"
    return ("next" if last else "first") + " analysis at the operator's next reconcile"


def next_step(res: Resource, now: datetime, *, prog: str = "canaria", tz: tzinfo = UTC) -> str:
    """What happens next, in one sentence a person can act on."""
    prefix = ""
    if pending := pending_command(res):
        prefix = f"command {pending['action']} ({pending['id']}) waits for the operator; "
    spec, status = res.spec, res.status
    if spec is None:
        return prefix + f"the operator refuses this spec ({res.spec_problem}): fix it and apply it again"
    generation, observed = res.metadata.get("generation"), status.observed_generation
    if status.phase is None:
        return prefix + "waiting for the operator to pick it up (is `canaria run` watching this namespace?)"
    if isinstance(generation, int) and observed is not None and observed < generation:
        prefix += f"the operator has not acted on generation {generation} yet (saw {observed}); "
    return prefix + _what_next(res, spec, status, now, prog, tz)


def _what_next(
    res: Resource,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    now: datetime,
    prog: str,
    tz: tzinfo,
) -> str:
    name = res.name
    desired = spec.model.version
    stable = status.stable.version if status.stable else None
    lkg = status.last_known_good.version if status.last_known_good else None
    metrics = spec.rollout.analysis.metrics
    canary, rejected = status.canary, status.rejected
    if status.phase == Phase.PAUSED:
        if spec.paused:
            return "paused by spec.paused: set it to false in the spec to continue"
        return (
            f"paused by a command: `{prog} resume {name}` continues, `{prog} abort {name}` "
            f"reverts to {lkg or 'the last known good version'}"
        )
    if rejected is not None and rejected.version == desired and canary is None:
        what = {"GateFailed": "refused by gates", "SmokeTestFailed": "refused by its smoke test"}.get(
            rejected.reason, "reverted"
        )
        serving = f"{stable} keeps serving; " if stable else ""
        return (
            f"{what}: spec still names {desired}; {serving}change the spec "
            f"(or `{prog} rollback {name}`) or `{prog} retry {name}`"
        )
    if canary is not None:
        steps = spec.rollout.steps
        index = min(canary.step, len(steps) - 1)
        step = steps[index]
        where = f"step {index + 1}/{len(steps)}"
        if canary.ready_at is None:
            started = canary.step_started_at or now
            deadline = started + timedelta(seconds=spec.rollout.progress_deadline_seconds)
            return (
                f"waiting for canary {canary.version} to be ready at {where} (weight {canary.weight}%); "
                f"reverted if not ready by {fmt_clock(deadline, tz)}"
            )
        parts = []
        if step.manual:
            parts.append(f"{where} holds until `{prog} promote {name}`")
        else:
            until = canary.ready_at + timedelta(seconds=step.pause_seconds)
            if until > now:
                parts.append(
                    f"{where} holds until {fmt_clock(until, tz)} ({in_((until - now).total_seconds())})"
                )
            elif metrics:
                parts.append(f"{where} waits for a passing analysis")
            else:
                parts.append(f"{where} is done")
        if metrics:
            parts.append(_next_analysis(spec, status, now))
        if index + 1 < len(steps):
            nxt = steps[index + 1]
            stage = f"at weight {nxt.weight}%" if nxt.weight else describe_stage(nxt)
            parts.append(f"then step {index + 2}/{len(steps)} {stage}")
        else:
            bake = spec.rollout.bake
            parts.append(f"then {canary.version} is promoted" + (f" and bakes {bake}" if bake else ""))
        return "; ".join(parts)
    if status.bake_started_at is not None:
        until = status.bake_started_at + timedelta(seconds=spec.rollout.bake_seconds)
        parts = [f"baking {stable} until {fmt_clock(until, tz)} ({in_((until - now).total_seconds())})"]
        if metrics:
            parts.append(_next_analysis(spec, status, now))
        parts.append(f"a failure reverts to {lkg}")
        return "; ".join(parts)
    if status.phase in (Phase.PROGRESSING, Phase.PENDING) and stable and stable != lkg:
        return f"waiting for {stable} to become ready (first deployment)"
    if status.phase == Phase.HEALTHY:
        if desired == stable:
            return f"nothing to do: {stable} is serving; a new spec.model.version starts a rollout"
        return f"spec names {desired}: a rollout starts at the operator's next reconcile"
    return status.message or f"phase {status.phase.value}"
