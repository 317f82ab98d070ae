"""What `canaria status|list|history` print: resources in, rich renderables or documents out.

Pure (no I/O, no clock: `now` and the time zone are parameters), so every view is a unit test on a status
the engine produced.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from canaria.cli.explain import fmt_clock, next_step, pending_command, step_text
from canaria.cli.history import parse_time
from canaria.cli.session import Resource
from canaria.core.api import (
    Lineage,
    Metric,
    MetricResult,
    Phase,
    Verdict,
    VersionRef,
    conditions_summary,
    describe_bounds,
)
from canaria.core.engine import smoke_verdict_text

PHASE_STYLE = {
    Phase.HEALTHY: "green",
    Phase.PROGRESSING: "cyan",
    Phase.BAKING: "cyan",
    Phase.PAUSED: "yellow",
    Phase.PENDING: "dim",
    Phase.REVERTED: "bold red",
    Phase.FAILED: "bold red",
}
#: the style of the conditions line, by which of Ready / Reconciling / Stalled is True
CONDITION_STYLE = {"Ready": "green", "Reconciling": "cyan", "Stalled": "bold red"}
VERDICT_STYLE = {
    Verdict.PASS: "green",
    Verdict.FAIL: "red",
    Verdict.ERROR: "bold red",
    Verdict.INCONCLUSIVE: "yellow",
}


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


def lineage_text(lineage: Lineage | None) -> str:
    if lineage is None:
        return ""
    labels = (
        (lineage.code_commit, "code"),
        (lineage.dataset, "data"),
        (lineage.training_run, "run"),
        (lineage.feature_schema, "features"),
    )
    return ", ".join(f"{label} {value}" for value, label in labels if value)


def _phase_text(phase: Phase | None) -> Text:
    return Text(phase.value if phase else "-", style=PHASE_STYLE.get(phase, "") if phase else "")


def _text(value: Any, style: str = "") -> Text:
    return Text("-" if value is None or value == "" else str(value), style=style)


def status_document(res: Resource, now: datetime, *, prog: str = "canaria") -> dict[str, Any]:
    """The machine form of `status`: the status as stored, plus the desired model, the step and next."""
    canary, spec = res.status.canary, res.spec
    step = None
    if canary is not None:
        step = {
            "index": canary.step + 1,
            "of": len(spec.rollout.steps) if spec is not None else None,
            "weight": canary.weight,
        }
    model = (res.body.get("spec") or {}).get("model") or {}
    return {
        "name": res.metadata.get("name"),
        "namespace": res.metadata.get("namespace"),
        "generation": res.metadata.get("generation"),
        "desired": {k: v for k, v in model.items() if k in ("version", "uri", "lineage")},
        "phase": res.status.phase.value if res.status.phase else None,
        "message": res.status.message,
        "specProblem": res.spec_problem,
        "step": step,
        "next": next_step(res, now, prog=prog),
        "pendingCommand": pending_command(res),
        "status": res.body.get("status") or {},
    }


def conditions_text(res: Resource) -> Text:
    """The conditions GitOps tools read, and whether they describe the applied generation (kubectl wait
    and Flux ignore them until they do)."""
    conditions = res.status.conditions
    true = next((c.type for c in conditions if c.status == "True" and c.type in CONDITION_STYLE), None)
    line = Text(conditions_summary(conditions), style=CONDITION_STYLE.get(true or "", ""))
    generation = res.metadata.get("generation")
    seen = max((c.observed_generation or 0 for c in conditions), default=0)
    if isinstance(generation, int) and seen < generation:
        line.append(
            f"  (for generation {seen}; the operator has not acted on {generation} yet)", style="yellow"
        )
    return line


def _version_row(role: str, record: VersionRef, tz: tzinfo) -> list[Text]:
    return [
        Text(role),
        Text(record.version, style="bold"),
        _text(record.uri),
        _text(lineage_text(record.lineage)),
        Text(fmt_time(record.since, tz)),
    ]


def render_status(res: Resource, now: datetime, *, prog: str = "canaria", tz: tzinfo = UTC) -> RenderableType:
    """Everything `canaria status NAME` shows, from the resource alone."""
    spec, status = res.spec, res.status
    model = (res.body.get("spec") or {}).get("model") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    title = Text.assemble((res.name, "bold"), f"  namespace {res.namespace}  phase ")
    title.append_text(_phase_text(status.phase))
    head.add_row(Text("ModelDeployment"), title)
    head.add_row(Text("desired"), Text(f"{model.get('version', '?')}  {model.get('uri', '')}"))
    if res.spec_problem:
        head.add_row(Text("spec", style="red"), Text(f"refused: {res.spec_problem}", style="red"))
    if status.message:
        head.add_row(Text("message"), Text(status.message))
    if status.conditions:
        head.add_row(Text("conditions"), conditions_text(res))
    if (text := step_text(spec, status)) and status.canary is not None:
        canary = status.canary
        since = f", started {fmt_clock(canary.step_started_at, tz)}" if canary.step_started_at else ""
        ready = canary.ready_at
        readiness = f", ready since {fmt_clock(ready, tz)}" if ready else ", canary not ready yet"
        head.add_row(Text("rollout"), Text(f"{text}{since}{readiness}"))
    elif status.bake_started_at:
        head.add_row(Text("rollout"), Text(f"baking since {fmt_clock(status.bake_started_at, tz)}"))

    versions = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ROLE", "VERSION", "URI", "LINEAGE", "SINCE"):
        versions.add_column(column)
    for role, record in (
        ("stable", status.stable),
        ("canary", status.canary),
        ("lastKnownGood", status.last_known_good),
    ):
        if record is not None:
            versions.add_row(*_version_row(role, record, tz))
    if (warm := status.warm) is not None:
        until = f"until {fmt_time(warm.until, tz)}" if warm.until else "until the bake ends"
        versions.add_row(
            Text("warm"),
            Text(warm.version, style="bold"),
            _text(warm.uri),
            Text(f"{warm.replicas} replicas ready, no traffic, {until}"),
            Text(fmt_time(warm.since, tz)),
        )
    if (rejected := status.rejected) is not None:
        versions.add_row(
            Text("rejected", style="red"),
            Text(rejected.version, style="bold red"),
            Text(f"{rejected.reason}: {rejected.message}", style="red"),
            Text(""),
            Text(fmt_time(rejected.at, tz)),
        )
    parts: list[RenderableType] = [head]
    if versions.row_count:
        parts += [Text(""), versions]
    if (traffic := status.traffic) is not None and traffic.canary is not None and traffic.description:
        # what callers get from the router (a replica ratio rounds a weight up to whole pods)
        parts += [Text(""), Text(f"traffic ({traffic.router}): {traffic.description} on {traffic.canary}")]
    parts += [Text(""), *_analysis_view(res, tz)]
    if (smoke := status.smoke_test) is not None:
        what = "before traffic" if smoke.purpose == "BeforeTraffic" else "after the rollback"
        line = Text(f"smoke test {what}: {smoke.version} ")
        line.append(smoke.phase, style={"Passed": "green", "Failed": "red"}.get(smoke.phase, ""))
        if smoke.phase in ("Passed", "Failed"):
            line.append(f" ({smoke_verdict_text(smoke)}) at {fmt_time(smoke.finished_at, tz)}")
        elif smoke.started_at is not None:
            line.append(f" since {fmt_time(smoke.started_at, tz)}")
        parts += [Text(""), line]
    if (command := status.last_command) is not None:
        line = Text(f"last command: {command.action} by {command.user or 'unknown'}")
        if command.reason:
            line.append(f' ("{command.reason}")')
        line.append(f" at {fmt_time(command.at, tz)} → {command.result or '-'}")
        parts += [Text(""), line]
    nxt = Text("next: ", style="bold")
    nxt.append(next_step(res, now, prog=prog, tz=tz))
    parts += [Text(""), nxt]
    return Group(*parts)


def _analysis_view(res: Resource, tz: tzinfo) -> list[RenderableType]:
    """The latest analysis run against the limits that judge it; the counters of a rollout that ended
    (reverted, promoted) are not shown as if they still counted."""
    spec, status = res.spec, res.status
    analysis = status.analysis
    if not analysis.results and analysis.last_run_at is None:
        if spec is not None and spec.rollout.analysis.metrics:
            return [Text(f"analysis: {len(spec.rollout.analysis.metrics)} metric(s), no run yet")]
        return [Text("analysis: no metrics")]
    summary = Text("analysis: last run ")
    summary.append(fmt_time(analysis.last_run_at, tz))
    summary.append(" ")
    verdict = analysis.verdict
    summary.append(verdict.value if verdict else "-", style=VERDICT_STYLE.get(verdict, "") if verdict else "")
    counting = status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.BAKING)
    if spec is not None and counting:
        limits = spec.rollout.analysis
        summary.append(
            f"  (failures {analysis.failures}/{limits.failure_limit}, "
            f"inconclusive {analysis.inconclusive}/{limits.inconclusive_limit} in a row)"
        )
    table = Table(box=None, pad_edge=False, header_style="bold")
    compared = any(r.against for r in analysis.results)
    columns = ("METRIC", "VALUE", "COMPARED WITH", "THRESHOLD", "VERDICT", "REASON")
    for column in columns if compared else tuple(c for c in columns if c != "COMPARED WITH"):
        table.add_column(column)
    metrics = {m.name: m for m in spec.rollout.analysis.metrics} if spec is not None else {}
    for result in analysis.results:
        row = [
            Text(result.name + (" (dry run)" if result.dry_run else "")),
            Text(f"{result.value:.6g}" if result.value is not None else "no value"),
            Text(_threshold(result, metrics.get(result.name)) or "-"),
            Text(result.verdict.value, style=VERDICT_STYLE.get(result.verdict, "")),
            _text(result.reason),
        ]
        if compared:
            row.insert(2, Text(_compared_with(result)))
        table.add_row(*row)
    return [summary, table]


def _compared_with(result: MetricResult) -> str:
    """The other side of a comparison: whose value, the value and the ratio (and trials of a test)."""
    if result.against is None:
        return "-"
    shown = f"{result.against} " + (
        f"{result.against_value:.6g}" if result.against_value is not None else "-"
    )
    if result.ratio is not None:
        shown += f" (x{result.ratio:.3g})"
    if result.samples is not None and result.against_samples is not None:
        shown += f", n={result.samples:.0f}/{result.against_samples:.0f}"
    return shown


def _threshold(result: MetricResult, metric: Metric | None) -> str:
    """The bounds that judged the result, a comparison's and a proportion test's included."""
    bounds = [describe_bounds(result.min, result.max)]
    if metric is not None and metric.compare is not None:
        bounds += [f"ratio <= {metric.compare.max_ratio:g}" if metric.compare.max_ratio is not None else ""]
        bounds += [f"delta <= {metric.compare.max_delta:g}" if metric.compare.max_delta is not None else ""]
    if metric is not None and metric.proportion_test is not None:
        test = metric.proportion_test
        bounds += [f"not higher at {test.confidence:.0%}, n >= {test.min_samples}"]
    return ", ".join(b for b in bounds if b)


def render_list(items: list[Resource], now: datetime, *, all_namespaces: bool = False) -> RenderableType:
    """One line per ModelDeployment, kubectl-style."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAME", "PHASE", "DESIRED", "STABLE", "CANARY", "WEIGHT", "AGE"]
    if all_namespaces:
        columns.insert(0, "NAMESPACE")
    for column in columns:
        table.add_column(column)
    for res in sorted(items, key=lambda r: (r.namespace, r.name)):
        status = res.status
        canary = status.canary
        weight = "-"
        if canary is not None:
            of = f"/{len(res.spec.rollout.steps)}" if res.spec is not None else ""
            weight = f"{canary.weight}% ({canary.step + 1}{of})"
        created = parse_time(res.metadata.get("creationTimestamp"))
        row = [
            Text(res.name),
            _phase_text(status.phase),
            _text(res.desired_version),
            _text(status.stable.version if status.stable else None),
            _text(canary.version if canary else None),
            Text(weight),
            Text(fmt_age((now - created).total_seconds()) if created else "-"),
        ]
        if all_namespaces:
            row.insert(0, Text(res.namespace))
        table.add_row(*row)
    return table


def list_rows(items: list[Resource]) -> list[dict[str, Any]]:
    """`canaria list -o json|yaml`: the columns of the table, as data."""
    return [
        {
            "namespace": res.metadata.get("namespace"),
            "name": res.metadata.get("name"),
            "phase": res.status.phase.value if res.status.phase else None,
            "desired": res.desired_version,
            "stable": res.status.stable.version if res.status.stable else None,
            "canary": res.status.canary.version if res.status.canary else None,
            "weight": res.status.canary.weight if res.status.canary else None,
            "created": res.metadata.get("creationTimestamp"),
        }
        for res in items
    ]


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
