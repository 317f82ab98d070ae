"""The data the dashboard's pages are built from, as plain JSON-ready dicts.

Built from `Resource`s (the API server's objects read through the core's models) and the core's rules: the
overview row, the page of one ModelDeployment (versions with lineage and evaluation, the step timeline, the
audit trail merged with Events as `canaria history` does), and, for each analysis metric, the queries to
plot — rendered with the same template variables the operator used, once for the analysed version and
once for the stable one. Nothing here talks to a server.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from canaria.cli.explain import next_step, step_text
from canaria.cli.history import merge_history, parse_time
from canaria.cli.render import list_rows, status_document
from canaria.cli.session import Resource
from canaria.core.api import VersionRef
from canaria.core.engine import analysed_version, analysis_variables, command_refusal
from canaria.core.templating import render

#: Commands the dashboard can issue (the CLI's, minus rollback, which edits the spec).
ACTIONS = ("promote", "pause", "resume", "abort", "retry")
#: How far back a plot reaches when no rollout start is recorded.
DEFAULT_WINDOW = timedelta(minutes=30)
#: Transitions drawn as markers on every plot.
MARKED = ("RolloutStarted", "StepAdvanced", "Promoted", "BakeCompleted", "RolledBack", "Aborted", "Paused")


def _last_verdict(res: Resource) -> str | None:
    verdict = res.status.analysis.verdict
    return verdict.value if verdict is not None else None


def overview(resources: list[Resource]) -> list[dict[str, Any]]:
    """One row per ModelDeployment: the `canaria list` columns plus step, owner and last verdict."""
    rows = list_rows(resources)
    for row, res in zip(rows, resources, strict=True):
        row["step"] = step_text(res.spec, res.status)
        row["owner"] = res.spec.model.owner if res.spec is not None else None
        row["verdict"] = _last_verdict(res)
        row["ready"] = next((c.status for c in res.status.conditions if c.type == "Ready"), None)
    return rows


def _version(
    ref: VersionRef | None, role: str, evaluations: dict[str, dict[str, float]]
) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {
        "role": role,
        "version": ref.version,
        "uri": ref.uri,
        "lineage": ref.lineage.dump() if ref.lineage is not None else {},
        "evaluation": evaluations.get(ref.version, {}),
        "since": ref.since.isoformat() if ref.since else None,
    }


def window_start(history: list[dict[str, Any]], now: datetime) -> datetime:
    starts = [parse_time(h.get("time")) for h in history if h.get("reason") == "RolloutStarted"]
    start = next((s for s in reversed(starts) if s is not None), None)
    return min(start, now - timedelta(minutes=1)) if start is not None else now - DEFAULT_WINDOW


def metric_queries(res: Resource) -> list[dict[str, Any]]:
    """For each analysis metric: its bounds and the queries for the analysed and the stable version."""
    spec, status = res.spec, res.status
    if spec is None:
        return []
    variables = analysis_variables(spec, status, name=res.name, namespace=res.namespace)
    version = analysed_version(status) or spec.model.version
    stable = str(variables.get("stableVersion") or "")
    out = []
    for metric in spec.rollout.analysis.metrics:
        queries = {version: render(metric.query, {**variables, "version": version})}
        if stable and stable != version:
            queries[stable] = render(metric.query, {**variables, "version": stable})
        out.append(
            {
                "name": metric.name,
                "min": metric.min,
                "max": metric.max,
                "dryRun": bool(metric.dry_run),
                "queries": queries,
                "analysed": version,
            }
        )
    return out


def detail(
    res: Resource, events: list[dict[str, Any]], now: datetime, *, allow_actions: bool
) -> dict[str, Any]:
    """Everything one ModelDeployment's page shows."""
    status, spec = res.status, res.spec
    evaluations = {e.version: dict(e.evaluation) for e in status.evaluations}
    if spec is not None and spec.model.evaluation:
        evaluations.setdefault(spec.model.version, dict(spec.model.evaluation))
    history = merge_history(res.body, events)
    document = status_document(res, now)
    versions = [
        v
        for v in (
            _version(status.stable, "stable", evaluations),
            _version(status.canary, "canary", evaluations),
            _version(status.last_known_good, "last known good", evaluations),
        )
        if v is not None
    ]
    actions = {}
    if allow_actions and spec is not None:
        actions = {a: command_refusal(a, spec, status, full=False) for a in ACTIONS}
    results = [
        {
            "name": r.name,
            "verdict": r.verdict.value,
            "value": r.value,
            "min": r.min,
            "max": r.max,
            "reason": r.reason,
            "at": r.at.isoformat() if r.at else None,
        }
        for r in status.analysis.results
    ]
    return {
        "name": res.name,
        "namespace": res.namespace,
        "phase": document["phase"],
        "message": document["message"],
        "specProblem": document["specProblem"],
        "step": document["step"],
        "stepText": step_text(spec, status),
        "next": next_step(res, now),
        "owner": spec.model.owner if spec is not None else None,
        "intendedUse": spec.model.intended_use if spec is not None else None,
        "desired": document["desired"],
        "versions": versions,
        "conditions": [c.dump() for c in status.conditions],
        "steps": [s.dump() for s in spec.rollout.steps] if spec is not None else [],
        "history": history,
        "markers": [
            {"time": h["time"], "reason": h["reason"], "version": h.get("version")}
            for h in history
            if h.get("reason") in MARKED
        ],
        "results": results,
        "metrics": metric_queries(res),
        "window": {"start": window_start(history, now).isoformat(), "end": now.isoformat()},
        "actions": actions,  # action -> None (allowed) or why not; empty when read-only
    }
