"""The release note of one model version, filled from a ModelDeployment's spec and status. Pure.

It follows the release-note template of the MLOps checklists our users keep ("Model ID fraud-v12 — Code
git 1a2b3c4 — Data snapshot ... — Primary metric AUC 0.941 (+0.012 vs baseline) — Notable tradeoff p95
latency +8ms — Rollback: switch to fraud-v11"), with what only the cluster knows: the outcome of the
rollout and its duration, the live analysis it passed or failed, and the exact rollback command.

Everything comes from the status the engine wrote (its history is the audit trail), never re-derived from
the cluster's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canaria.core.api import HistoryEntry, Lineage, ModelDeployment, Phase, describe_bounds
from canaria.core.durations import format_duration

#: Transitions after which the entry's version is the one serving.
SERVING_REASONS = frozenset({"Available", "Promoted", "BakeCompleted", "RolledBack", "Aborted"})
#: Transitions that end a version's rollout, with the outcome they mean.
OUTCOMES = {
    "BakeCompleted": "promoted and baked",
    "GateFailed": "refused by its gates",
    "ProgressDeadlineExceeded": "never became ready",
    "RolloutAbandoned": "abandoned (the spec moved on)",
}


class UnknownVersion(ValueError):
    """The version never appears in this ModelDeployment's spec, status or history."""


@dataclass(frozen=True)
class LiveCheck:
    """One analysis result recorded for the version: what it measured against its bound."""

    metric: str
    value: float | None
    bound: str
    verdict: str
    detail: str | None = None


@dataclass(frozen=True)
class ReleaseNote:
    name: str
    namespace: str
    version: str
    uri: str | None
    lineage: Lineage | None
    owner: str | None
    intended_use: str | None
    evaluation: dict[str, float]
    replaced: str | None
    replaced_evaluation: dict[str, float]
    primary_metric: str | None
    outcome: str
    started_at: datetime | None
    ended_at: datetime | None
    live: tuple[LiveCheck, ...] = field(default_factory=tuple)
    change_reason: str | None = None
    started_by: str | None = None

    @property
    def model_id(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def primary_delta(self) -> float | None:
        metric = self.primary_metric
        if metric is None or metric not in self.evaluation or metric not in self.replaced_evaluation:
            return None
        return self.evaluation[metric] - self.replaced_evaluation[metric]

    @property
    def rollback_command(self) -> str | None:
        if self.replaced is None:
            return None
        return f"canaria rollback {self.name} -n {self.namespace} --to {self.replaced}"


def _lineage_of(md: ModelDeployment, version: str) -> tuple[str | None, Lineage | None]:
    spec, status = md.spec, md.status
    if spec.model.version == version:
        return spec.model.uri, spec.model.lineage
    for ref in (status.canary, status.stable, status.last_known_good):
        if ref is not None and ref.version == version:
            return ref.uri, ref.lineage
    return None, None


def _evaluation_of(md: ModelDeployment, version: str | None) -> dict[str, float]:
    """The offline evaluation of a version: the spec's for the version it names, else the one the status
    recorded when that version was gated."""
    if version is None:
        return {}
    if md.spec.model.version == version and md.spec.model.evaluation:
        return dict(md.spec.model.evaluation)
    for recorded in md.status.evaluations:
        if recorded.version == version:
            return dict(recorded.evaluation)
    return {}


def _serving_before(history: list[HistoryEntry], index: int) -> str | None:
    for entry in reversed(history[:index]):
        if entry.reason in SERVING_REASONS:
            return entry.version
    return None


def _rollout_of(md: ModelDeployment, version: str) -> tuple[int | None, list[HistoryEntry]]:
    """Index of the version's last rollout start in the history and the entries of that rollout."""
    history = md.status.history
    starts = [i for i, h in enumerate(history) if h.version == version and h.reason == "RolloutStarted"]
    if not starts:
        mentions = [i for i, h in enumerate(history) if h.version == version]
        return None, [history[i] for i in mentions]
    start = starts[-1]
    following = history[start:]
    end = next(
        (j for j, h in enumerate(following[1:], 1) if h.reason == "RolloutStarted" and h.version != version),
        len(following),
    )
    return start, following[:end]


def _outcome(md: ModelDeployment, version: str, entries: list[HistoryEntry]) -> tuple[str, datetime | None]:
    status = md.status
    for entry in reversed(entries):
        if entry.reason in ("RolledBack", "Aborted") and entry.version != version:
            return f"reverted to {entry.version}: {entry.message}", entry.time
        if entry.reason in OUTCOMES:
            return OUTCOMES[entry.reason], entry.time
        if entry.reason == "Promoted":
            baking = status.phase == Phase.BAKING and status.stable is not None
            if baking and status.stable.version == version:
                return "promoted, baking", entry.time
            return "promoted", entry.time
        if entry.reason == "Available":
            return "first deployment, serving", entry.time
    if status.canary is not None and status.canary.version == version:
        return f"in progress: step {status.canary.step + 1} at weight {status.canary.weight}%", None
    if status.phase == Phase.BAKING and status.stable is not None and status.stable.version == version:
        return "promoted, baking", None
    if status.stable is not None and status.stable.version == version:
        return "serving", None
    return "not serving", None


def _live_checks(md: ModelDeployment, version: str, started_at: datetime | None) -> tuple[LiveCheck, ...]:
    """The last analysis results, when they were made on this version during this rollout."""
    status = md.status
    analysed = status.canary.version if status.canary is not None else None
    if analysed is None and status.bake_started_at is not None and status.stable is not None:
        analysed = status.stable.version
    rejected = status.rejected.version if status.rejected is not None else None
    last = status.analysis.last_run_at
    if version not in (analysed, rejected) and not (
        status.stable is not None and status.stable.version == version and status.phase == Phase.HEALTHY
    ):
        return ()
    if last is None or (started_at is not None and last < started_at):
        return ()
    return tuple(
        LiveCheck(
            metric=r.name,
            value=r.value,
            bound=describe_bounds(r.min, r.max),
            verdict=r.verdict.value,
            detail=r.reason,
        )
        for r in status.analysis.results
    )


def release_note(md: ModelDeployment, version: str | None = None) -> ReleaseNote:
    """The note of ``version`` (default: the version the spec names)."""
    meta = md.metadata
    name, namespace = meta.get("name") or md.spec.model.name, meta.get("namespace") or "default"
    version = version or md.spec.model.version
    uri, lineage = _lineage_of(md, version)
    start, entries = _rollout_of(md, version)
    if uri is None and not entries:
        raise UnknownVersion(f"{name} has no record of version {version!r}")
    history = md.status.history
    replaced = _serving_before(history, start) if start is not None else None
    if replaced is None and md.status.canary is not None and md.status.canary.version == version:
        replaced = md.status.stable.version if md.status.stable else None
    started = entries[0] if entries and entries[0].reason == "RolloutStarted" else None
    outcome, ended_at = _outcome(md, version, entries)
    evaluation = _evaluation_of(md, version)
    primary = md.spec.gates[0].metric if md.spec.gates else next(iter(evaluation), None)
    return ReleaseNote(
        name=name,
        namespace=namespace,
        version=version,
        uri=uri,
        lineage=lineage,
        owner=md.spec.model.owner,
        intended_use=md.spec.model.intended_use,
        evaluation=evaluation,
        replaced=replaced if replaced != version else None,
        replaced_evaluation=_evaluation_of(md, replaced),
        primary_metric=primary,
        outcome=outcome,
        started_at=started.time if started else None,
        ended_at=ended_at,
        live=_live_checks(md, version, started.time if started else None),
        change_reason=started.change_reason if started else None,
        started_by=started.user if started else None,
    )


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    """A table cell: a '|' in user text (a change reason) must not end the cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(note: ReleaseNote) -> str:
    """Markdown fit for a pull request or a changelog."""
    lineage = note.lineage or Lineage()
    lines = [f"## Release note: {note.model_id}", ""]
    rows: list[tuple[str, str]] = [
        ("Model ID", f"`{note.model_id}`" + (f" ({note.uri})" if note.uri else "")),
        ("Code", f"git {lineage.code_commit}" if lineage.code_commit else "not recorded"),
        ("Data", lineage.dataset or "not recorded"),
        ("Training run", lineage.training_run or "not recorded"),
    ]
    if lineage.feature_schema:
        rows.append(("Feature schema", lineage.feature_schema))
    if note.primary_metric is not None:
        value = note.evaluation.get(note.primary_metric)
        shown = f"{note.primary_metric} {_number(value)}"
        delta = note.primary_delta
        if delta is not None:
            shown += f" ({delta:+.4g} vs {note.replaced})"
        elif note.replaced is not None:
            shown += f" (no recorded evaluation of {note.replaced} to compare)"
        else:
            shown += " (first version: nothing to compare)"
        rows.append(("Primary metric", shown))
    others = {k: v for k, v in note.evaluation.items() if k != note.primary_metric}
    if others:
        rows.append(("Other offline metrics", ", ".join(f"{k} {_number(v)}" for k, v in others.items())))
    if note.live:
        rows.append(
            (
                "Live analysis",
                "; ".join(
                    f"{c.metric} {_number(c.value)} ({c.bound}) {c.verdict}"
                    + (f": {c.detail}" if c.detail else "")
                    for c in note.live
                ),
            )
        )
    rows.append(("Owner", note.owner or "not named"))
    if note.intended_use:
        rows.append(("Intended use", note.intended_use))
    outcome = note.outcome
    if note.duration is not None:
        outcome += f" in {format_duration(note.duration)}"
    if note.started_at is not None:
        outcome += f" (started {note.started_at:%Y-%m-%d %H:%M:%S}Z"
        outcome += f" by {note.started_by})" if note.started_by else ")"
    rows.append(("Rollout", outcome))
    if note.change_reason:
        rows.append(("Why", note.change_reason))
    if note.rollback_command:
        rows.append(("Rollback", f"switch to `{note.name}-{note.replaced}`: `{note.rollback_command}`"))
    else:
        rows.append(("Rollback", "no earlier version recorded"))
    lines += ["| | |", "|---|---|", *(f"| **{k}** | {_cell(v)} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def to_json(note: ReleaseNote) -> dict[str, Any]:
    """The note as plain data (`-o json`)."""
    lineage = note.lineage.dump() if note.lineage is not None else {}
    return {
        "modelId": note.model_id,
        "name": note.name,
        "namespace": note.namespace,
        "version": note.version,
        "uri": note.uri,
        "lineage": lineage,
        "owner": note.owner,
        "intendedUse": note.intended_use,
        "evaluation": note.evaluation,
        "primaryMetric": note.primary_metric,
        "primaryDelta": note.primary_delta,
        "replaced": note.replaced,
        "replacedEvaluation": note.replaced_evaluation,
        "outcome": note.outcome,
        "startedAt": note.started_at.isoformat() if note.started_at else None,
        "endedAt": note.ended_at.isoformat() if note.ended_at else None,
        "durationSeconds": note.duration,
        "live": [c.__dict__ for c in note.live],
        "changeReason": note.change_reason,
        "startedBy": note.started_by,
        "rollbackCommand": note.rollback_command,
    }
