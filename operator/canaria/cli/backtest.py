"""`canaria backtest -f model.yaml --from T1 --to T2`: replay a spec's analysis over past Prometheus data.

The replay itself is the core's (`canaria.core.backtest`, the same `decide` the operator runs); this module
reads the file, queries Prometheus at past instants through the same provider the operator uses, and prints
the timeline and the per-metric summaries (or JSON for scripts).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from canaria.core.api import ModelDeployment, ModelDeploymentSpec
from canaria.core.backtest import BacktestReport, MetricSummary, backtest
from canaria.core.durations import format_duration, parse_duration
from canaria.core.observations import AnalysisRun
from canaria.core.problems import describe_errors
from canaria.providers.prometheus import PrometheusTarget, run_analysis


class BacktestError(Exception):
    """A problem with the command's input: one line on stderr, exit 2."""


def parse_time(text: str) -> datetime:
    """An RFC 3339 time ("2026-01-02T03:00:00Z"), a date, or "now-6h"-style relative time, in UTC."""
    text = text.strip()
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return datetime.now(UTC)
        if rest[0] != "-":
            raise BacktestError(f"{text!r}: relative times look like now-6h")
        return datetime.now(UTC) - timedelta(seconds=parse_duration(rest[1:]))
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise BacktestError(f"{text!r} is not a time (use 2026-01-02T03:00:00Z or now-6h)") from error
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def load_model(path: str) -> tuple[str, str, ModelDeploymentSpec]:
    """Name, namespace and spec of the first ModelDeployment in a YAML file."""
    try:
        documents = list(yaml.safe_load_all(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise BacktestError(f"{path}: {error}") from error
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "ModelDeployment":
            try:
                md = ModelDeployment.model_validate(document)
            except ValidationError as error:
                raise BacktestError(f"{path}: {describe_errors(error)}") from error
            meta = document.get("metadata") or {}
            return meta.get("name") or md.spec.model.name, meta.get("namespace") or "default", md.spec
    raise BacktestError(f"{path}: no ModelDeployment in it")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _summary_row(summary: MetricSummary) -> dict[str, Any]:
    failure = summary.first_failure
    return {
        "metric": summary.name,
        "bounds": summary.bounds,
        "instants": summary.instants,
        "min": min(summary.values, default=None),
        "p50": summary.quantile(0.5),
        "p95": summary.quantile(0.95),
        "max": max(summary.values, default=None),
        "passed": summary.passed,
        "failed": summary.failed,
        "noValue": summary.no_value,
        "firstFailure": {"at": failure[0].isoformat(), "value": failure[1]} if failure else None,
    }


def report_json(report: BacktestReport) -> dict[str, Any]:
    """The report as plain data (`-o json`)."""
    reverted = report.reverted_at
    return {
        "version": report.version,
        "stableVersion": report.stable_version,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "step": report.step.total_seconds(),
        "outcome": report.outcome.value if report.outcome else None,
        "revertedAt": reverted.time.isoformat() if reverted else None,
        "timeline": [entry.dump() for entry in report.timeline],
        "metrics": [_summary_row(s) for s in report.metrics],
    }


def report_text(report: BacktestReport) -> str:
    """A timeline ("would have ...") and a table per metric, for a person tuning bounds."""
    lines = [
        f"backtest of {report.version} (stable {report.stable_version})"
        f" from {report.start:%Y-%m-%d %H:%M:%S}Z to {report.end:%Y-%m-%d %H:%M:%S}Z,"
        f" every {format_duration(report.step.total_seconds())}",
        "",
    ]
    for entry in report.timeline:
        lines.append(f"  {entry.time:%Y-%m-%d %H:%M:%S}Z  {entry.reason:<18} {entry.message}")
    reverted = report.reverted_at
    if reverted is not None:
        verdict = f"would have reverted at {reverted.time:%Y-%m-%d %H:%M:%S}Z: {reverted.message}"
    elif report.outcome is not None and report.outcome.value in ("Healthy", "Baking"):
        verdict = f"would have promoted {report.version} ({report.outcome.value} at the end of the window)"
    else:
        phase = report.outcome.value if report.outcome else "not started"
        verdict = f"still {phase} at the end of the window (no revert)"
    lines += ["", verdict, "", "metric values over the window:"]
    header = ("metric", "bounds", "min", "p50", "p95", "max", "pass", "fail", "no value", "first failure")
    rows = [header]
    for s in report.metrics:
        first = s.first_failure
        rows.append(
            (
                s.name,
                s.bounds,
                _number(min(s.values, default=None)),
                _number(s.quantile(0.5)),
                _number(s.quantile(0.95)),
                _number(max(s.values, default=None)),
                str(s.passed),
                str(s.failed),
                str(s.no_value),
                f"{first[0]:%H:%M:%S}Z ({first[1]:.4g})" if first else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    try:
        name, namespace, spec = load_model(args.file)
        start, end = parse_time(args.start), parse_time(args.end)
        step = timedelta(seconds=parse_duration(args.step or spec.rollout.analysis.interval))
        address = args.prometheus_address or spec.prometheus.address
        if not address:
            raise BacktestError(
                "no Prometheus address: pass --prometheus-address or set spec.prometheus.address"
            )
        target = PrometheusTarget(
            address=address.rstrip("/"), timeout=parse_duration(spec.prometheus.timeout)
        )
        metrics = spec.rollout.analysis.metrics
        if not metrics:
            raise BacktestError(f"{args.file}: spec.rollout.analysis.metrics is empty: nothing to replay")

        def analyse(at: datetime, variables: Mapping[str, object]) -> AnalysisRun:
            return run_analysis(metrics, variables, target, now=at)

        report = backtest(
            spec,
            stable_version=args.stable_version,
            start=start,
            end=end,
            step=step,
            analyse=analyse,
            name=name,
            namespace=namespace,
        )
    except (BacktestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output == "json":
        sys.stdout.write(json.dumps(report_json(report), indent=2) + "\n")
    else:
        sys.stdout.write(report_text(report))
    return 0


def add_parser(commands: Any) -> None:
    """Register `canaria backtest`."""
    parser = commands.add_parser(
        "backtest",
        help="replay a ModelDeployment's analysis over past Prometheus data",
        description="Replay the spec's canary analysis at past instants through the operator's own engine: "
        "which step would have advanced when, whether it would have reverted (and on which value), and "
        "each metric's distribution over the window, to tune bounds on data. Every Deployment is taken as "
        "ready at once; the stable version's name fills {{stableVersion}}.",
        epilog="example: canaria backtest -f model.yaml --from now-6h --to now --step 1m "
        "--stable-version v11",
    )
    parser.add_argument(
        "-f", "--filename", dest="file", required=True, metavar="FILE", help="ModelDeployment YAML"
    )
    parser.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="window start (RFC 3339 or now-6h)"
    )
    parser.add_argument("--to", dest="end", default="now", metavar="TIME", help="window end (default now)")
    parser.add_argument(
        "--step", metavar="DURATION", help="time between instants (default: the analysis interval)"
    )
    parser.add_argument(
        "--stable-version",
        default="stable",
        metavar="VERSION",
        help="the version serving before the candidate, for {{stableVersion}} (default 'stable')",
    )
    parser.add_argument(
        "--prometheus-address", metavar="URL", help="Prometheus to query (default: the spec's)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.set_defaults(func=_run)
