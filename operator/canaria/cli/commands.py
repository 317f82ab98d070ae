"""The day-2 commands' rules and patch bodies: promote, abort, pause, resume, retry and rollback.

Whether a command may run now is the engine's answer (`command_refusal`), asked before anything is written,
so the CLI refuses with the words the operator would record. Commands never edit the spec except
`rollback`, which is a spec change by definition (and says so, since a GitOps tool owns the spec); the
others write the `canaria.dev/command` annotation that the operator carries out exactly once and
acknowledges in `status.lastCommand`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from canaria.cli.explain import pending_command
from canaria.cli.session import CtlError, Resource, get
from canaria.core.api import HistoryEntry, ModelDeploymentStatus, Phase
from canaria.core.commands import (
    CHANGE_REASON_ANNOTATION,
    CHANGE_REASON_FOR_ANNOTATION,
    COMMAND_ANNOTATION,
    reason_scope,
)
from canaria.core.engine import command_refusal


def check_command(action: str, res: Resource, *, full: bool = False, force: bool = False) -> None:
    """Refuse a command the operator would ignore, or one that would replace a command not yet handled."""
    if not force and (pending := pending_command(res)):
        raise CtlError(
            f"a {pending['action']} command ({pending['id']}) on {res.name} still waits for the operator "
            "(is it running?); --force replaces it"
        )
    if res.spec is None:
        raise CtlError(f"the operator refuses the spec of {res.name}: {res.spec_problem}")
    if refusal := command_refusal(action, res.spec, res.status, full=full):
        raise CtlError(f"{res.name}: {refusal}")


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
    status: ModelDeploymentStatus, deployments: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """version → {uri, lineage} from the status records, then the surviving Deployments' annotations."""
    known: dict[str, dict[str, Any]] = {}
    for version, record in (deployments or {}).items():
        if record.get("uri"):
            known[version] = {"uri": record["uri"], "lineage": record.get("lineage")}
    for ref in (status.canary, status.stable, status.last_known_good):  # later roles win
        if ref is not None and ref.uri:
            lineage = ref.lineage.dump() if ref.lineage else None
            known[ref.version] = {
                "uri": ref.uri,
                "lineage": lineage or known.get(ref.version, {}).get("lineage"),
            }
    return known


def previous_healthy(history: Iterable[HistoryEntry], exclude: str | None) -> str | None:
    """The most recent version that reached Healthy, other than `exclude`."""
    for entry in reversed(list(history)):
        if entry.to_phase == Phase.HEALTHY and entry.version and entry.version != exclude:
            return entry.version
    return None


def rollback_target(
    res: Resource,
    *,
    to: str | None = None,
    uri: str | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
) -> RollbackTarget:
    """Where `rollback` takes the spec: lastKnownGood, the previous healthy version, or `--to`."""
    name, status, desired = res.name, res.status, res.desired_version
    lkg = status.last_known_good.version if status.last_known_good else None
    if to is None:
        if not lkg:
            raise CtlError(f"{name} has no last known good version yet: nothing to roll back to")
        if lkg != desired:
            version, note = lkg, f"rolling back to {lkg}, the last known good version"
        else:
            previous = previous_healthy(status.history, exclude=desired)
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
        seen = [h.version for h in status.history] + [
            ref.version for ref in (status.stable, status.last_known_good, status.canary) if ref
        ]
        known = sorted({v for v in seen if v})
        if to not in known:
            raise CtlError(f"version {to} not in the history of {name} (known: {', '.join(known) or 'none'})")
        version, note = to, f"rolling back to {to}"
        if status.rejected is not None and status.rejected.version == to:
            note += f" (warning: {to} was rejected: {status.rejected.reason})"
    record = known_versions(status, deployments).get(version, {})
    final_uri = uri or record.get("uri")
    if not final_uri:
        raise CtlError(
            f"the URI of {version} is not recorded in the status of {name} nor on a Deployment: pass --uri"
        )
    return RollbackTarget(version, final_uri, record.get("lineage"), note)


def rollback_patch(target: RollbackTarget, reason: str) -> dict[str, Any]:
    """Merge patch of the spec: version, uri and lineage (null removes a lineage that is not known), and
    the reason, scoped to the version it explains."""
    return {
        "metadata": {
            "annotations": {
                CHANGE_REASON_ANNOTATION: reason,
                CHANGE_REASON_FOR_ANNOTATION: reason_scope(reason, target.version),
            }
        },
        "spec": {"model": {"version": target.version, "uri": target.uri, "lineage": target.lineage or None}},
    }


def model_block_yaml(res: Resource, target: RollbackTarget) -> str:
    """The spec.model block to commit to the repository, so GitOps keeps the rollback."""
    model = copy.deepcopy(get(res.body, "spec", "model") or {})
    model["version"], model["uri"] = target.version, target.uri
    if target.lineage:
        model["lineage"] = target.lineage
    else:
        model.pop("lineage", None)
    return yaml.safe_dump({"spec": {"model": model}}, sort_keys=False)
