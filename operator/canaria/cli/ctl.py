"""Day-2 controls from the client side: `canaria status|list|history|promote|abort|pause|resume|retry|
rollback` (also `kubectl canaria ...`).

Three layers, so the interesting parts are unit-testable without a cluster:

- pure functions over resource dicts (camelCase, as the API server returns them): what happens next,
  command preconditions and patch bodies, rollback target selection, the merged audit trail;
- pure renderers: dicts in, rich renderables out (no I/O, no clock: `now` is a parameter);
- the shell: kubeconfig, API calls, error translation (404/403/401 become one line on stderr, exit 1).

Commands never edit the spec except `rollback`, which is a spec change by definition (and says so, since a
GitOps tool owns the spec). The others write the `canaria.dev/command` annotation that the operator
carries out exactly once and acknowledges in `status.lastCommand`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import yaml
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.core.commands import CHANGE_REASON_ANNOTATION, COMMAND_ANNOTATION, new_command, parse_command
from canaria.core.durations import format_duration, parse_duration

RESOURCE = f"{PLURAL}.{GROUP}"
IN_ROLLOUT = ("Progressing", "Paused", "Baking")
URI_ANNOTATION = f"{GROUP}/model-uri"
LINEAGE_ANNOTATION = f"{GROUP}/lineage"
MD_LABEL = f"{GROUP}/model-deployment"
VERSION_LABEL = f"{GROUP}/version"
REQUEST_TIMEOUT = 15
PHASE_STYLE = {
    "Healthy": "green",
    "Progressing": "cyan",
    "Baking": "cyan",
    "Gating": "cyan",
    "Paused": "yellow",
    "Pending": "dim",
    "Reverted": "bold red",
    "Failed": "bold red",
}
VERDICT_STYLE = {"Pass": "green", "Fail": "red", "Error": "bold red", "Inconclusive": "yellow"}


class CtlError(Exception):
    """A one-line, user-facing error: printed on stderr, exit code 1, no traceback."""


def prog_name(argv0: str | None = None) -> str:
    """`kubectl canaria` when run as the kubectl plugin (`kubectl-canaria`), else `canaria`."""
    base = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if base.startswith("kubectl-"):
        return "kubectl " + base[len("kubectl-") :].replace("_", "-")
    return "canaria"


# ---------------------------------------------------------------------------------------- small pure


def _get(data: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return default
        data = data.get(key)
    return default if data is None else data


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601, possibly with Z) as an aware datetime; None when absent or bad."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_clock(moment: datetime, tz: tzinfo = UTC) -> str:
    return moment.astimezone(tz).strftime("%H:%M:%S")


def fmt_time(moment: datetime | None, tz: tzinfo = UTC) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def fmt_age(seconds: float) -> str:
    """kubectl-style age: 45s, 3m20s, 2h5m, 3d4h, 12d."""
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d{hours % 24}h" if days < 8 else f"{days}d"


def _in(seconds: float) -> str:
    return format_duration(max(seconds, 0)) if seconds >= 0.5 else "now"


def lineage_text(lineage: dict[str, Any] | None) -> str:
    if not lineage:
        return ""
    labels = (
        ("codeCommit", "code"),
        ("dataset", "data"),
        ("trainingRun", "run"),
        ("featureSchema", "features"),
    )
    return ", ".join(f"{label} {lineage[key]}" for key, label in labels if lineage.get(key))


def _duration(text: Any, default: float = 0.0) -> float:
    try:
        return parse_duration(text) if text else default
    except ValueError:
        return default


def _steps(md: dict[str, Any]) -> list[dict[str, Any]]:
    return _get(md, "spec", "rollout", "steps") or [{"weight": 100}]


def step_text(md: dict[str, Any]) -> str | None:
    """ "step 2/3 (weight 50%)" for the canary, or None."""
    canary = _get(md, "status", "canary")
    if not canary:
        return None
    return f"step {int(canary.get('step', 0)) + 1}/{len(_steps(md))} (weight {canary.get('weight', 0)}%)"


def bound_text(low: Any, high: Any) -> str:
    parts = [
        f">= {low:g}" if isinstance(low, int | float) else "",
        f"<= {high:g}" if isinstance(high, int | float) else "",
    ]
    return " and ".join(p for p in parts if p) or "-"


def pending_command(md: dict[str, Any]) -> dict[str, Any] | None:
    """The command annotation when the operator has not acknowledged it yet."""
    try:
        command = parse_command(_get(md, "metadata", "annotations"))
    except ValueError:
        return None
    if command is None or _get(md, "status", "lastCommand", "id") == command.id:
        return None
    return {"id": command.id, "action": command.action, "user": command.user, "reason": command.reason}


# -------------------------------------------------------------------------------------- next step


def next_step(md: dict[str, Any], now: datetime, *, prog: str = "canaria", tz: tzinfo = UTC) -> str:
    """What happens next, in one sentence a person can act on."""
    meta, spec, status = md.get("metadata") or {}, md.get("spec") or {}, md.get("status") or {}
    name = meta.get("name", "?")
    phase = status.get("phase")
    desired = _get(spec, "model", "version")
    stable = _get(status, "stable", "version")
    lkg = _get(status, "lastKnownGood", "version")
    canary = status.get("canary")
    rejected = status.get("rejected")
    analysis_spec = _get(spec, "rollout", "analysis") or {}
    metrics = analysis_spec.get("metrics") or []
    prefix = ""
    if pending := pending_command(md):
        prefix = f"command {pending['action']} ({pending['id']}) waits for the operator; "
    if not status or phase is None:
        return prefix + "waiting for the operator to pick it up (is `canaria run` watching this namespace?)"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        prefix += f"the operator has not acted on generation {generation} yet (saw {observed}); "

    def next_analysis() -> str:
        last = parse_time(_get(status, "analysis", "lastRunAt"))
        interval = _duration(analysis_spec.get("interval"), 60.0)
        due = now if last is None else last + timedelta(seconds=interval)
        return f"next analysis in {_in((due - now).total_seconds())}"

    if phase == "Paused":
        if spec.get("paused"):
            return prefix + "paused by spec.paused: set it to false in the spec to continue"
        return (
            prefix + f"paused by a command: `{prog} resume {name}` continues, `{prog} abort {name}` "
            f"reverts to {lkg or 'the last known good version'}"
        )
    if rejected and rejected.get("version") == desired and canary is None:
        what = "refused by gates" if rejected.get("reason") == "GateFailed" else "reverted"
        serving = f"{stable} keeps serving; " if stable else ""
        return (
            prefix + f"{what}: spec still names {desired}; {serving}change the spec "
            f"(or `{prog} rollback {name}`) or `{prog} retry {name}`"
        )
    if canary:
        steps = _steps(md)
        index = min(int(canary.get("step", 0)), len(steps) - 1)
        step = steps[index]
        where = f"step {index + 1}/{len(steps)}"
        version = canary.get("version")
        ready_at = parse_time(canary.get("readyAt"))
        if ready_at is None:
            started = parse_time(canary.get("stepStartedAt")) or now
            deadline = started + timedelta(seconds=_duration(_get(spec, "rollout", "progressDeadline"), 600))
            return prefix + (
                f"waiting for canary {version} to be ready at {where} (weight {canary.get('weight')}%); "
                f"reverted if not ready by {fmt_clock(deadline, tz)}"
            )
        parts = []
        if step.get("manual"):
            parts.append(f"{where} holds until `{prog} promote {name}`")
        else:
            until = ready_at + timedelta(seconds=_duration(step.get("pause")))
            if until > now:
                parts.append(
                    f"{where} holds until {fmt_clock(until, tz)} (in {_in((until - now).total_seconds())})"
                )
            elif metrics:
                parts.append(f"{where} waits for a passing analysis")
            else:
                parts.append(f"{where} is done")
        if metrics:
            parts.append(next_analysis())
        if index + 1 < len(steps):
            parts.append(f"then step {index + 2}/{len(steps)} at weight {steps[index + 1].get('weight')}%")
        else:
            bake = _get(spec, "rollout", "bake")
            parts.append(f"then {version} is promoted" + (f" and bakes {bake}" if bake else ""))
        return prefix + "; ".join(parts)
    bake_started = parse_time(status.get("bakeStartedAt"))
    if bake_started is not None:
        until = bake_started + timedelta(seconds=_duration(_get(spec, "rollout", "bake")))
        parts = [f"baking {stable} until {fmt_clock(until, tz)} (in {_in((until - now).total_seconds())})"]
        if metrics:
            parts.append(next_analysis())
        parts.append(f"a failure reverts to {lkg}")
        return prefix + "; ".join(parts)
    if phase in ("Progressing", "Pending") and stable and stable != lkg:
        return prefix + f"waiting for {stable} to become ready (first deployment)"
    if phase == "Healthy":
        if desired == stable:
            return prefix + f"nothing to do: {stable} is serving; a new spec.model.version starts a rollout"
        return prefix + f"spec names {desired}: a rollout starts at the operator's next reconcile"
    return prefix + (status.get("message") or f"phase {phase}")


# ---------------------------------------------------------------------------------- day-2 commands


def check_command(action: str, md: dict[str, Any], *, full: bool = False, force: bool = False) -> None:
    """Refuse a command the operator would ignore (or, for promote, silently drop)."""
    meta, spec, status = md.get("metadata") or {}, md.get("spec") or {}, md.get("status") or {}
    name = meta.get("name", "?")
    phase = status.get("phase")
    stable = _get(status, "stable", "version")
    canary = status.get("canary")
    baking = bool(status.get("bakeStartedAt"))
    where = f"{name} is {phase or 'not reconciled yet'}" + (f", serving {stable}" if stable else "")
    if not force and (pending := pending_command(md)):
        raise CtlError(
            f"a {pending['action']} command ({pending['id']}) on {name} still waits for the operator "
            "(is it running?); --force replaces it"
        )
    in_rollout = phase in IN_ROLLOUT and (canary is not None or baking)
    if action in ("promote", "abort", "pause") and not in_rollout:
        raise CtlError(f"no rollout in progress: {where}")
    if action == "promote":
        if status.get("controlPaused") or spec.get("paused"):
            by = "spec.paused" if spec.get("paused") else "a pause command"
            raise CtlError(f"{name} is paused by {by}: resume it first, then promote")
        if canary is not None and not canary.get("readyAt"):
            raise CtlError(
                f"canary {canary.get('version')} is not ready yet at {step_text(md)}: "
                "a promote now would be dropped; wait until it is ready"
            )
    elif action == "pause":
        if status.get("controlPaused"):
            raise CtlError(f"{name} is already paused by a command")
    elif action == "resume":
        if not status.get("controlPaused"):
            if spec.get("paused"):
                raise CtlError(f"{name} is held by spec.paused, not by a command: set spec.paused to false")
            raise CtlError(f"nothing paused: {where}")
    elif action == "retry":
        rejected = status.get("rejected")
        if not rejected:
            raise CtlError(f"nothing rejected: {where}")
        desired = _get(spec, "model", "version")
        if rejected.get("version") != desired:
            raise CtlError(
                f"nothing to retry: the rejected version {rejected.get('version')} is no longer named by "
                f"the spec ({desired})"
            )


def command_patch(annotation: str) -> dict[str, Any]:
    """The merge patch that hands a command to the operator."""
    return {"metadata": {"annotations": {COMMAND_ANNOTATION: annotation}}}


# ----------------------------------------------------------------------------------------- rollback


@dataclass(frozen=True)
class RollbackTarget:
    version: str
    uri: str
    lineage: dict[str, Any] | None
    note: str


def known_versions(
    status: dict[str, Any], deployments: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """version → {uri, lineage} from the status records, then the surviving Deployments' annotations."""
    known: dict[str, dict[str, Any]] = {}
    for version, record in (deployments or {}).items():
        if record.get("uri"):
            known[version] = {"uri": record["uri"], "lineage": record.get("lineage")}
    for role in ("rejected", "canary", "stable", "lastKnownGood"):  # later roles win
        record = status.get(role) or {}
        if record.get("version") and record.get("uri"):
            previous = known.get(record["version"], {})
            known[record["version"]] = {
                "uri": record["uri"],
                "lineage": record.get("lineage") or previous.get("lineage"),
            }
    return known


def previous_healthy(history: Iterable[dict[str, Any]], exclude: str | None) -> str | None:
    """The most recent version that reached Healthy, other than `exclude`."""
    for entry in reversed(list(history)):
        if entry.get("to") == "Healthy" and entry.get("version") and entry.get("version") != exclude:
            return entry["version"]
    return None


def rollback_target(
    md: dict[str, Any],
    *,
    to: str | None = None,
    uri: str | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
) -> RollbackTarget:
    """Where `rollback` takes the spec: lastKnownGood, the previous healthy version, or `--to`."""
    name = _get(md, "metadata", "name", default="?")
    status = md.get("status") or {}
    desired = _get(md, "spec", "model", "version")
    history = status.get("history") or []
    lkg = _get(status, "lastKnownGood", "version")
    if to is None:
        if not lkg:
            raise CtlError(f"{name} has no last known good version yet: nothing to roll back to")
        if lkg != desired:
            version, note = lkg, f"rolling back to {lkg}, the last known good version"
        else:
            previous = previous_healthy(history, exclude=desired)
            if previous is None:
                raise CtlError(
                    f"nothing to roll back to: {desired} is the last known good version and the history of "
                    f"{name} has no earlier healthy version; name one with --to"
                )
            version = previous
            note = (
                f"{desired} is the last known good version: defaulting to {previous}, "
                "the previous healthy version"
            )
    else:
        if to == desired:
            raise CtlError(f"the spec of {name} already names {to}")
        seen = [h.get("version") for h in history] + [
            _get(status, role, "version") for role in ("stable", "lastKnownGood", "canary")
        ]
        known = sorted({v for v in seen if v})
        if to not in known:
            raise CtlError(f"version {to} not in the history of {name} (known: {', '.join(known) or 'none'})")
        version, note = to, f"rolling back to {to}"
        if _get(status, "rejected", "version") == to:
            note += f" (warning: {to} was rejected: {_get(status, 'rejected', 'reason')})"
    record = known_versions(status, deployments).get(version, {})
    final_uri = uri or record.get("uri")
    if not final_uri:
        raise CtlError(
            f"the URI of {version} is not recorded in the status of {name} nor on a Deployment: pass --uri"
        )
    return RollbackTarget(version, final_uri, record.get("lineage"), note)


def rollback_patch(target: RollbackTarget, reason: str) -> dict[str, Any]:
    """Merge patch of the spec: version, uri and lineage (null removes a lineage that is not known)."""
    return {
        "metadata": {"annotations": {CHANGE_REASON_ANNOTATION: reason}},
        "spec": {"model": {"version": target.version, "uri": target.uri, "lineage": target.lineage or None}},
    }


def model_block_yaml(md: dict[str, Any], target: RollbackTarget) -> str:
    """The spec.model block to commit to the repository, so GitOps keeps the rollback."""
    model = copy.deepcopy(_get(md, "spec", "model") or {})
    model["version"], model["uri"] = target.version, target.uri
    if target.lineage:
        model["lineage"] = target.lineage
    else:
        model.pop("lineage", None)
    return yaml.safe_dump({"spec": {"model": model}}, sort_keys=False)


# ------------------------------------------------------------------------------------------ history

_BY = re.compile(r" \[by (?P<user>[^\]]*)\]")
_CHANGE = re.compile(r" \(change reason: (?P<why>.*?)\)(?= \[by |; owner: |$)")
_OWNER = re.compile(r"; owner: [^;]*$")


def _event_time(event: dict[str, Any], key: str) -> datetime | None:
    if key.startswith("analysis-") and key[len("analysis-") :].isdigit():
        return datetime.fromtimestamp(int(key[len("analysis-") :]) / 1000, UTC)  # the run's own time
    for field_ in ("eventTime", "lastTimestamp", "firstTimestamp"):
        if moment := parse_time(event.get(field_)):
            return moment
    return parse_time(_get(event, "metadata", "creationTimestamp"))


def event_entry(event: dict[str, Any], md_name: str) -> dict[str, Any]:
    """An audit-trail entry from an Event (who and why parsed back out of its message)."""
    name = _get(event, "metadata", "name", default="")
    key = name.rsplit(".", 1)[-1] if name.startswith(f"{md_name}.") else ""
    message = event.get("message") or ""
    user = why = None
    if match := _BY.search(message):
        user = match.group("user")
        message = message[: match.start()] + message[match.end() :]
    if match := _CHANGE.search(message):
        why = match.group("why")
        message = message[: match.start()] + message[match.end() :]
    message = _OWNER.sub("", message)
    moment = _event_time(event, key)
    return {
        "time": moment.isoformat() if moment else None,
        "seq": int(key) if key.isdigit() else None,
        "from": None,
        "to": None,
        "reason": event.get("reason"),
        "version": _get(event, "metadata", "annotations", VERSION_LABEL) or None,
        "message": message,
        "user": user,
        "changeReason": why,
        "type": event.get("type"),
        "source": "event",
    }


def merge_history(md: dict[str, Any], events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """status.history and the ModelDeployment's Events as one time-ordered trail.

    A transition is in both (its Event is named `<name>.<uid>.<seq>`): the status entry wins and gains
    the Event's type. Analysis and gate Events exist only as Events. Events of an older object of the
    same name (another uid) are left out.
    """
    meta, status = md.get("metadata") or {}, md.get("status") or {}
    name, uid = meta.get("name", ""), meta.get("uid")
    last = status.get("lastCommand") or {}
    last_at = parse_time(last.get("at"))
    by_seq: dict[int, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    for item in status.get("history") or []:
        entry = {
            "time": item.get("time"),
            "seq": item.get("seq"),
            "from": item.get("from"),
            "to": item.get("to"),
            "reason": item.get("reason"),
            "version": item.get("version"),
            "message": item.get("message") or "",
            "user": item.get("user"),
            "changeReason": item.get("changeReason"),
            "type": None,
            "source": "status",
        }
        if (
            last.get("reason")
            and item.get("user")
            and item.get("user") == last.get("user")
            and last_at is not None
            and parse_time(item.get("time")) == last_at
        ):
            entry["commandReason"] = last["reason"]
        entries.append(entry)
        if isinstance(item.get("seq"), int):
            by_seq[item["seq"]] = entry
    for event in events:
        event_uid = _get(event, "involvedObject", "uid")
        if uid and event_uid and event_uid != uid:
            continue
        entry = event_entry(event, name)
        known = by_seq.get(entry["seq"]) if entry["seq"] is not None else None
        if known is not None:
            known["type"] = entry["type"]
            known["source"] = "status+event"
            continue
        entries.append(entry)
        if entry["seq"] is not None:
            by_seq[entry["seq"]] = entry
    epoch = datetime.min.replace(tzinfo=UTC)

    def order(entry: dict[str, Any]) -> tuple[datetime, int, int]:
        seq = entry.get("seq")
        return (parse_time(entry.get("time")) or epoch, 0 if seq is None else 1, seq or 0)

    return sorted(entries, key=order)


# ------------------------------------------------------------------------------------------- render


def _phase_text(phase: str | None) -> Text:
    return Text(phase or "-", style=PHASE_STYLE.get(phase or "", ""))


def _text(value: Any, style: str = "") -> Text:
    return Text("-" if value is None or value == "" else str(value), style=style)


def status_document(md: dict[str, Any], now: datetime, *, prog: str = "canaria") -> dict[str, Any]:
    """The machine form of `status`: the status as stored, plus the desired model, the step and next."""
    meta, status = md.get("metadata") or {}, md.get("status") or {}
    canary = status.get("canary")
    step = None
    if canary:
        step = {
            "index": int(canary.get("step", 0)) + 1,
            "of": len(_steps(md)),
            "weight": canary.get("weight"),
        }
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": meta.get("generation"),
        "desired": {
            k: v for k, v in (_get(md, "spec", "model") or {}).items() if k in ("version", "uri", "lineage")
        },
        "phase": status.get("phase"),
        "message": status.get("message"),
        "step": step,
        "next": next_step(md, now, prog=prog),
        "pendingCommand": pending_command(md),
        "status": status,
    }


def render_status(
    md: dict[str, Any], now: datetime, *, prog: str = "canaria", tz: tzinfo = UTC
) -> RenderableType:
    """Everything `canaria status NAME` shows, from the resource alone."""
    meta, spec, status = md.get("metadata") or {}, md.get("spec") or {}, md.get("status") or {}
    model = spec.get("model") or {}
    phase = status.get("phase")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    title = Text.assemble(
        (meta.get("name", "?"), "bold"), f"  namespace {meta.get('namespace', '?')}  phase "
    )
    title.append_text(_phase_text(phase))
    head.add_row(Text("ModelDeployment"), title)
    head.add_row(Text("desired"), Text(f"{model.get('version', '?')}  {model.get('uri', '')}"))
    if status.get("message"):
        head.add_row(Text("message"), Text(status["message"]))
    if text := step_text(md):
        canary = status.get("canary") or {}
        started = parse_time(canary.get("stepStartedAt"))
        since = f", started {fmt_clock(started, tz)}" if started else ""
        ready = parse_time(canary.get("readyAt"))
        readiness = f", ready since {fmt_clock(ready, tz)}" if ready else ", canary not ready yet"
        head.add_row(Text("rollout"), Text(f"{text}{since}{readiness}"))
    elif status.get("bakeStartedAt"):
        head.add_row(
            Text("rollout"), Text(f"baking since {fmt_clock(parse_time(status['bakeStartedAt']), tz)}")
        )

    versions = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ROLE", "VERSION", "URI", "LINEAGE", "SINCE"):
        versions.add_column(column)
    for role in ("stable", "canary", "lastKnownGood"):
        record = status.get(role)
        if record:
            versions.add_row(
                Text(role),
                Text(str(record.get("version", "?")), style="bold"),
                _text(record.get("uri")),
                _text(lineage_text(record.get("lineage"))),
                Text(fmt_time(parse_time(record.get("since")), tz)),
            )
    rejected = status.get("rejected")
    if rejected:
        versions.add_row(
            Text("rejected", style="red"),
            Text(str(rejected.get("version", "?")), style="bold red"),
            Text(f"{rejected.get('reason', '')}: {rejected.get('message', '')}", style="red"),
            Text(""),
            Text(fmt_time(parse_time(rejected.get("at")), tz)),
        )
    parts: list[RenderableType] = [head]
    if versions.row_count:
        parts += [Text(""), versions]

    analysis = status.get("analysis") or {}
    limits = _get(spec, "rollout", "analysis") or {}
    results = analysis.get("results") or []
    if results or analysis.get("lastRunAt"):
        last = parse_time(analysis.get("lastRunAt"))
        summary = Text("analysis: last run ")
        summary.append(fmt_time(last, tz))
        summary.append(" ")
        summary.append(
            analysis.get("verdict") or "-", style=VERDICT_STYLE.get(analysis.get("verdict") or "", "")
        )
        summary.append(
            f"  (failures {analysis.get('failures', 0)}/{limits.get('failureLimit', 0)}, "
            f"inconclusive {analysis.get('inconclusive', 0)}/{limits.get('inconclusiveLimit', 2)} in a row)"
        )
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("METRIC", "VALUE", "THRESHOLD", "VERDICT", "REASON"):
            table.add_column(column)
        for result in results:
            value = result.get("value")
            verdict = result.get("verdict") or "-"
            name = result.get("name", "?") + (" (dry run)" if result.get("dryRun") else "")
            table.add_row(
                Text(name),
                Text(f"{value:.6g}" if isinstance(value, int | float) else "no value"),
                Text(bound_text(result.get("min"), result.get("max"))),
                Text(verdict, style=VERDICT_STYLE.get(verdict, "")),
                _text(result.get("reason")),
            )
        parts += [Text(""), summary, table]
    elif limits.get("metrics"):
        parts += [Text(""), Text(f"analysis: {len(limits['metrics'])} metric(s), no run yet")]
    else:
        parts += [Text(""), Text("analysis: no metrics")]

    command = status.get("lastCommand")
    if command:
        line = Text(f"last command: {command.get('action')} by {command.get('user') or 'unknown'}")
        if command.get("reason"):
            line.append(f' ("{command["reason"]}")')
        at = parse_time(command.get("at"))
        line.append(f" at {fmt_time(at, tz)} → {command.get('result') or '-'}")
        parts += [Text(""), line]
    nxt = Text("next: ", style="bold")
    nxt.append(next_step(md, now, prog=prog, tz=tz))
    parts += [Text(""), nxt]
    return Group(*parts)


def render_list(
    items: list[dict[str, Any]], now: datetime, *, all_namespaces: bool = False
) -> RenderableType:
    """One line per ModelDeployment, kubectl-style."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAME", "PHASE", "DESIRED", "STABLE", "CANARY", "WEIGHT", "AGE"]
    if all_namespaces:
        columns.insert(0, "NAMESPACE")
    for column in columns:
        table.add_column(column)
    for md in sorted(
        items,
        key=lambda m: (_get(m, "metadata", "namespace", default=""), _get(m, "metadata", "name", default="")),
    ):
        meta, status = md.get("metadata") or {}, md.get("status") or {}
        canary = status.get("canary") or {}
        weight = "-"
        if canary:
            weight = f"{canary.get('weight', 0)}% ({int(canary.get('step', 0)) + 1}/{len(_steps(md))})"
        created = parse_time(meta.get("creationTimestamp"))
        row = [
            Text(meta.get("name", "?")),
            _phase_text(status.get("phase")),
            _text(_get(md, "spec", "model", "version")),
            _text(_get(status, "stable", "version")),
            _text(canary.get("version")),
            Text(weight),
            Text(fmt_age((now - created).total_seconds()) if created else "-"),
        ]
        if all_namespaces:
            row.insert(0, Text(meta.get("namespace", "?")))
        table.add_row(*row)
    return table


def render_history(entries: list[dict[str, Any]], *, tz: tzinfo = UTC) -> RenderableType:
    """The audit trail: time, transition, reason, version, who, why, what."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("TIME", "TRANSITION", "REASON", "VERSION", "BY", "WHY", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        transition = "-"
        if entry.get("to"):
            transition = f"{entry.get('from') or '∅'} → {entry['to']}"
        warning = entry.get("type") == "Warning" or str(entry.get("reason", "")).startswith("Analysis")
        table.add_row(
            Text(fmt_time(parse_time(entry.get("time")), tz)),
            Text(transition),
            Text(str(entry.get("reason") or "-"), style="yellow" if warning else ""),
            _text(entry.get("version")),
            _text(entry.get("user")),
            _text(entry.get("commandReason") or entry.get("changeReason")),
            Text(entry.get("message") or ""),
        )
    return table


# ------------------------------------------------------------------------------------------- shell


@dataclass
class Session:
    """An API client for one kubeconfig context, with the namespace and user that context implies."""

    api: Any
    namespace: str
    kube_user: str | None
    context: str | None
    host: str

    @classmethod
    def open(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
        from kubernetes import config

        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        files = [p for p in path.split(os.pathsep) if p and os.path.exists(os.path.expanduser(p))]
        if not files:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
                return cls._in_cluster(namespace)
            raise CtlError(f"no kubeconfig at {path}: pass --kubeconfig or set KUBECONFIG")
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
            chosen = current
            if context:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(c.get("name", "?") for c in contexts)
                    raise CtlError(f"context {context} not found in {path} (contexts: {names})")
            api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
        except config.ConfigException as exc:
            raise CtlError(f"kubeconfig {path}: {str(exc).splitlines()[0]}") from exc
        ctx = (chosen or {}).get("context") or {}
        return cls(
            api=api,
            namespace=namespace or ctx.get("namespace") or "default",
            kube_user=ctx.get("user"),
            context=(chosen or {}).get("name"),
            host=api.configuration.host,
        )

    @classmethod
    def _in_cluster(cls, namespace: str | None) -> Session:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.ApiClient()
        if namespace is None:
            with (
                contextlib.suppress(OSError),
                open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f,
            ):
                namespace = f.read().strip()
        return cls(api, namespace or "default", None, None, api.configuration.host)

    def default_user(self) -> str:
        try:
            local = os.environ.get("USER") or getpass.getuser()
        except (KeyError, OSError):
            local = "unknown"
        return f"{local}@{self.kube_user}" if self.kube_user else local

    # -- API calls, errors translated ----------------------------------------------------------------

    def call(
        self, verb: str, resource: str, namespace: str | None, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f"in {namespace}" if namespace else "in any namespace"
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kw)
        except ApiException as exc:
            body = _api_body(exc)
            if exc.status == 403:
                raise CtlError(f"forbidden: you need {verb} on {resource} {where}") from exc
            if exc.status == 401:
                raise CtlError(
                    f"unauthorized: the API server at {self.host} rejected the credentials of context "
                    f"{self.context or '?'}"
                ) from exc
            if exc.status == 404 and resource == RESOURCE and not _get(body, "details", "name"):
                raise CtlError(
                    f"the ModelDeployment API ({RESOURCE}) is not installed on {self.host}: "
                    "`canaria crd | kubectl apply -f -`"
                ) from exc
            if exc.status == 404:
                raise NotFound(str(body.get("message") or exc.reason)) from exc
            message = body.get("message") or exc.reason or ""
            raise CtlError(
                f"the API server refused to {verb} {resource} {where}: {message} ({exc.status})"
            ) from exc
        except HTTPError as exc:
            raise CtlError(f"cannot reach the API server at {self.host}: {type(exc).__name__}") from exc

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        try:
            return self.call(
                "get",
                RESOURCE,
                self.namespace,
                custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
            )
        except NotFound as exc:
            raise CtlError(f"modeldeployment {name} not found in namespace {self.namespace}") from exc

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        if all_namespaces:
            result = self.call(
                "list", RESOURCE, None, custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        else:
            result = self.call(
                "list",
                RESOURCE,
                self.namespace,
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
            )
        return list(result.get("items") or [])

    def patch(self, name: str, body: dict[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        extra = {"field_manager": field_manager} if field_manager else {}
        try:
            return self.call(
                "patch",
                RESOURCE,
                self.namespace,
                custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body,
                _content_type="application/merge-patch+json",
                **extra,
            )
        except NotFound as exc:
            raise CtlError(f"modeldeployment {name} not found in namespace {self.namespace}") from exc

    def events(self, name: str) -> list[dict[str, Any]]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        result = self.call(
            "list",
            "events",
            self.namespace,
            core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind={KIND}",
        )
        return [self.api.sanitize_for_serialization(e) for e in result.items]

    def deployments(self, name: str) -> dict[str, dict[str, Any]]:
        """version → {uri, lineage} from the annotations of the model's surviving Deployments."""
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        try:
            result = self.call(
                "list",
                "deployments.apps",
                self.namespace,
                apps.list_namespaced_deployment,
                self.namespace,
                label_selector=f"{MD_LABEL}={name}",
            )
        except (CtlError, NotFound):
            return {}
        found = {}
        for deployment in result.items:
            labels = deployment.metadata.labels or {}
            annotations = deployment.metadata.annotations or {}
            if VERSION_LABEL not in labels or URI_ANNOTATION not in annotations:
                continue
            lineage = None
            with contextlib.suppress(ValueError, TypeError):
                lineage = json.loads(annotations.get(LINEAGE_ANNOTATION) or "null")
            found[labels[VERSION_LABEL]] = {"uri": annotations[URI_ANNOTATION], "lineage": lineage}
        return found


class NotFound(Exception):
    pass


def _api_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr); when piped, wide enough that lines do not wrap (like kubectl)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(highlight=False, stderr=stderr)
    return Console(highlight=False, stderr=stderr, width=int(os.environ.get("COLUMNS") or 250))


def _dump(data: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or UTC


def _now() -> datetime:
    return datetime.now(UTC)


def _session(args: argparse.Namespace) -> Session:
    return Session.open(args.kubeconfig, args.context, args.namespace)


# ----------------------------------------------------------------------------------- subcommands


def cmd_status(args: argparse.Namespace) -> int:
    session = _session(args)
    prog = prog_name()
    if args.output:
        if args.watch:
            raise CtlError("--watch shows the table view only; drop -o")
        _dump(status_document(session.get(args.name), _now(), prog=prog), args.output)
        return 0
    console = _console()
    if not args.watch:
        console.print(render_status(session.get(args.name), _now(), prog=prog, tz=_local_tz()))
        return 0
    from rich.live import Live

    def view() -> RenderableType:
        stamp = Text(
            f"every {args.interval:g}s, Ctrl-C stops; at {fmt_clock(_now(), _local_tz())}", style="dim"
        )
        return Group(render_status(session.get(args.name), _now(), prog=prog, tz=_local_tz()), stamp)

    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return 0


def cmd_list(args: argparse.Namespace) -> int:
    session = _session(args)
    items = session.list(args.all_namespaces)
    if args.output:
        rows = [
            {
                "namespace": _get(m, "metadata", "namespace"),
                "name": _get(m, "metadata", "name"),
                "phase": _get(m, "status", "phase"),
                "desired": _get(m, "spec", "model", "version"),
                "stable": _get(m, "status", "stable", "version"),
                "canary": _get(m, "status", "canary", "version"),
                "weight": _get(m, "status", "canary", "weight"),
                "created": _get(m, "metadata", "creationTimestamp"),
            }
            for m in items
        ]
        _dump(rows, args.output)
        return 0
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {session.namespace}"
        print(f"no modeldeployments in {where}", file=sys.stderr)
        return 0
    _console().print(render_list(items, _now(), all_namespaces=args.all_namespaces))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    session = _session(args)
    md = session.get(args.name)
    try:
        events = session.events(args.name)
    except CtlError as exc:  # the audit trail in status is still worth showing
        print(f"warning: {exc}; showing status.history only", file=sys.stderr)
        events = []
    entries = merge_history(md, events)
    if args.output:
        _dump(entries, args.output)
        return 0
    if not entries:
        print(f"no history for {args.name} yet", file=sys.stderr)
        return 0
    _console().print(render_history(entries, tz=_local_tz()))
    return 0


def _wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise CtlError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def cmd_command(args: argparse.Namespace) -> int:
    session = _session(args)
    name, action = args.name, args.action
    md = session.get(name)
    full = bool(getattr(args, "full", False))
    check_command(action, md, full=full, force=args.force)
    user = args.user or session.default_user()
    command = new_command(action, user=user, reason=args.reason, full=full, now=_now())
    session.patch(name, command_patch(command.to_annotation()))
    what = f"{action}{' --full' if full else ''}"
    by = f" by {user}" + (f": {args.reason}" if args.reason else "")
    if not args.wait:
        print(f"{what} requested for {name} (command {command.id}){by}")
        return 0

    def handled() -> dict[str, Any] | None:
        current = session.get(name)
        if _get(current, "status", "lastCommand", "id") == command.id:
            return current
        return None

    current = _wait_for(
        f"the operator to handle command {command.id} (is it running?)", handled, args.timeout
    )
    result = _get(current, "status", "lastCommand", "result", default="-")
    phase = _get(current, "status", "phase", default="-")
    if str(result).startswith("ignored"):
        raise CtlError(f"the operator ignored {what} on {name}: {result} (phase {phase})")
    print(f"{name}: {what} (command {command.id}){by} → {result}; phase {phase}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    session = _session(args)
    name = args.name
    md = session.get(name)
    deployments = session.deployments(name)
    target = rollback_target(md, to=args.to, uri=args.uri, deployments=deployments)
    user = args.user or session.default_user()
    current = _get(md, "spec", "model", "version")
    reason = args.reason or f"rollback {current} → {target.version} by {user}"
    err = _console(stderr=True)
    err.print(Text(target.note))
    if args.dry_run:
        print(f"dry run: would set spec.model.version of {name} {current} → {target.version}")
    else:
        session.patch(name, rollback_patch(target, reason), field_manager=_manager(user))
        print(
            f"{name}: spec.model.version {current} → {target.version} ({target.uri}); change reason: {reason}"
        )
    err.print(
        Text(
            "warning: if a GitOps tool (Argo CD, Flux) applies this ModelDeployment from a repository, it "
            "will undo this change at its next sync unless the repository changes too. Commit:",
            style="yellow",
        )
    )
    sys.stdout.write(model_block_yaml(md, target))
    if _get(md, "spec", "model", "evaluation"):
        err.print(Text(f"note: spec.model.evaluation was left as is; it describes {current}", style="yellow"))
    if args.wait and not args.dry_run:

        def serving() -> bool:
            status = session.get(name).get("status") or {}
            return _get(status, "stable", "version") == target.version and status.get("phase") == "Healthy"

        _wait_for(f"{target.version} to serve {name}", serving, args.timeout)
        print(f"{name}: {target.version} is serving (Healthy)")
    return 0


def _manager(user: str) -> str:
    """The field manager recorded for the spec change, i.e. the 'who' of the RolledBack transition."""
    printable = "".join(ch for ch in user if ch.isprintable()) or "canaria"
    return printable[:128]


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One line on stderr and exit code 1 for every expected failure; never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CtlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


# ------------------------------------------------------------------------------------------ parser


def add_commands(commands: Any) -> None:
    """Register the day-2 subcommands on `canaria`'s subparsers."""
    prog = prog_name()
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_argument_group("cluster")
    group.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    group.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace (default: the context's namespace, else default)"
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=("json", "yaml"), help="machine-readable output")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--reason", help="why: recorded in the audit trail")
    who.add_argument("--user", help="who: recorded in the audit trail (default: $USER@<kubeconfig user>)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait until the operator has carried it out")
    waiting.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="how long --wait waits (default 60)"
    )

    def add(
        name: str,
        help_: str,
        func: Callable[[argparse.Namespace], int],
        *parents: argparse.ArgumentParser,
        example: str,
        **kw: Any,
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            parents=[*parents, target],
            epilog=f"example: {prog} {example}",
            **kw,
        )
        parser.set_defaults(func=_guard(func), action=name)
        return parser

    status = add(
        "status",
        "show a ModelDeployment's rollout: versions, step, analysis, what happens next",
        cmd_status,
        output,
        example="status fraud --watch",
    )
    status.add_argument("name", metavar="NAME")
    status.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh (default 2)"
    )

    listing = add("list", "list ModelDeployments, one line each", cmd_list, output, example="list -A")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    history = add(
        "history",
        "the audit trail: every transition and analysis failure, who and why",
        cmd_history,
        output,
        example="history fraud -o yaml",
    )
    history.add_argument("name", metavar="NAME")

    helps = {
        "promote": (
            "advance the canary one step now (--full: promote it to stable)",
            "promote fraud --reason 'dashboards green'",
        ),
        "abort": (
            "revert the rollout in progress to the last known good version",
            "abort fraud --reason 'p99 spike' --wait",
        ),
        "pause": (
            "hold the rollout where it is (analysis keeps running)",
            "pause fraud --reason 'investigating'",
        ),
        "resume": ("continue a rollout held by `pause`", "resume fraud"),
        "retry": (
            "roll out again the version that was reverted or refused",
            "retry fraud --reason 'feature store fixed'",
        ),
    }
    for action, (help_, example) in helps.items():
        parser = add(action, help_, cmd_command, who, waiting, example=example)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument(
            "--force", action="store_true", help="replace a command the operator has not handled yet"
        )
        if action == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip the remaining steps: promote to stable"
            )

    rollback = add(
        "rollback",
        "change the spec back to the last known good version (or --to an earlier one)",
        cmd_rollback,
        who,
        waiting,
        example="rollback fraud --to v11 --reason 'v12 misroutes EU traffic'",
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument(
        "--to", metavar="VERSION", help="a version from the history (default: last known good)"
    )
    rollback.add_argument("--uri", help="model URI of that version, when Canaria has not recorded it")
    rollback.add_argument("--dry-run", action="store_true", help="print the change, do not make it")
