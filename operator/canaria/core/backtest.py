"""Backtest: what the engine would have done with a spec's analysis over a past window. Pure.

A backtest replays the rollout the spec describes as if it had started at ``start``: every Deployment is
taken as ready at once (the question is the analysis, not pod start-up), and at each instant of the window
the caller's ``analyse`` function answers with an `AnalysisRun` made *at that instant* (the shell queries
Prometheus with ``time=at``). The very same `decide` that runs in the operator turns those runs into steps,
promotions and reverts, so a threshold tuned here behaves the same in the cluster.

Besides the timeline, every metric's values over the whole window are summarised (min / p50 / p95 / max
and how many instants passed its bounds), so a bound can be set from what normal looked like.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from canaria.core.actions import ApplyWorkload, ScaleWorkload
from canaria.core.api import (
    HistoryEntry,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    Verdict,
    VersionRef,
)
from canaria.core.engine import analysis_due, analysis_variables, decide
from canaria.core.observations import AnalysisRun, Observations, WorkloadObservation

#: How many decisions one instant may take to settle (apply, see ready, decide again).
_SETTLE = 6
#: The most instants a backtest walks: a week at one-minute steps.
MAX_INSTANTS = 7 * 24 * 60

#: Runs the spec's queries at an instant with the given template variables.
Analyse = Callable[[datetime, Mapping[str, object]], AnalysisRun]


@dataclass(frozen=True)
class MetricSummary:
    """One metric's values over the window, and how its bounds fared."""

    name: str
    bounds: str
    instants: int
    values: tuple[float, ...]
    passed: int
    failed: int
    no_value: int  # inconclusive or error: no number to judge
    first_failure: tuple[datetime, float] | None = None

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile of the values seen (None when there were none)."""
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class BacktestReport:
    """The replayed rollout (its history, as the operator would have written it) and the metric summaries."""

    version: str
    stable_version: str
    start: datetime
    end: datetime
    step: timedelta
    timeline: tuple[HistoryEntry, ...]
    outcome: Phase | None
    metrics: tuple[MetricSummary, ...] = field(default_factory=tuple)

    @property
    def reverted_at(self) -> HistoryEntry | None:
        """The transition that would have reverted the candidate, if any."""
        return next((h for h in self.timeline if h.to_phase == Phase.REVERTED.value), None)


def _serving_status(spec: ModelDeploymentSpec, stable_version: str, at: datetime) -> ModelDeploymentStatus:
    """A Healthy status with ``stable_version`` serving: the spec's version then starts a canary."""
    ref = VersionRef(version=stable_version, uri=f"(backtest) {stable_version}", since=at)
    return ModelDeploymentStatus(phase=Phase.HEALTHY, stable=ref, last_known_good=ref)


def _workloads_after(
    workloads: dict[str, WorkloadObservation], actions: Sequence[object]
) -> dict[str, WorkloadObservation]:
    """Every applied or scaled Deployment is ready at once in a backtest."""
    out = dict(workloads)
    for action in actions:
        if isinstance(action, ApplyWorkload):
            out[action.version] = WorkloadObservation(
                action.version, action.replicas, action.replicas, template_hash=action.template_hash
            )
        elif isinstance(action, ScaleWorkload):
            known = out.get(action.version)
            out[action.version] = WorkloadObservation(
                action.version,
                action.replicas,
                action.replicas,
                template_hash=known.template_hash if known else None,
            )
    return out


def _summaries(spec: ModelDeploymentSpec, runs: Sequence[AnalysisRun]) -> tuple[MetricSummary, ...]:
    out = []
    for metric in spec.rollout.analysis.metrics:
        results = [(run.at, r) for run in runs for r in run.results if r.name == metric.name]
        values = tuple(r.value for _, r in results if r.value is not None)
        failures = [(at, r.value) for at, r in results if r.verdict == Verdict.FAIL and r.value is not None]
        out.append(
            MetricSummary(
                name=metric.name,
                bounds=metric.describe(),
                instants=len(results),
                values=values,
                passed=sum(1 for _, r in results if r.verdict == Verdict.PASS),
                failed=len(failures),
                no_value=sum(1 for _, r in results if r.value is None),
                first_failure=failures[0] if failures else None,
            )
        )
    return tuple(out)


def backtest(
    spec: ModelDeploymentSpec,
    *,
    stable_version: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    analyse: Analyse,
    name: str,
    namespace: str,
) -> BacktestReport:
    """Replay the spec's rollout from ``start`` to ``end``, one instant every ``step``.

    ``analyse`` is called once per instant (with the rollout's template variables, or the canary's once
    the replayed rollout has ended), so the summaries cover the whole window while the engine sees the
    runs it would have asked for.
    """
    if step.total_seconds() <= 0:
        raise ValueError("step must be positive")
    if end <= start:
        raise ValueError("the window must end after it starts")
    instants = int((end - start) / step) + 1
    if instants > MAX_INSTANTS:
        raise ValueError(
            f"{instants} instants: at most {MAX_INSTANTS} (use a larger step or a shorter window)"
        )
    if stable_version == spec.model.version:
        raise ValueError("the stable version must differ from the spec's version (the candidate)")
    status = _serving_status(spec, stable_version, start)
    workloads = {
        stable_version: WorkloadObservation(stable_version, spec.replicas, spec.replicas),
    }
    ports = (spec.service.port, spec.service.target_port)
    runs: list[AnalysisRun] = []
    rolling = True
    last_variables: Mapping[str, object] = {}
    for i in range(instants):
        now = start + i * step
        for _ in range(_SETTLE if rolling else 0):
            obs = Observations(workloads=workloads, service_ports=ports)
            if analysis_due(spec, status, obs, now):
                break
            decision = decide(spec, status, obs, now)
            settled = decision.status == status and not any(
                isinstance(a, ApplyWorkload | ScaleWorkload) for a in decision.actions
            )
            status, workloads = decision.status, _workloads_after(workloads, decision.actions)
            if settled:
                break
        if rolling:
            last_variables = analysis_variables(spec, status, name=name, namespace=namespace)
        run = analyse(now, last_variables)
        runs.append(run)
        if rolling:
            obs = Observations(workloads=workloads, service_ports=ports)
            if analysis_due(spec, status, obs, now):
                decision = decide(
                    spec, status, Observations(workloads=workloads, service_ports=ports, analysis=run), now
                )
                status, workloads = decision.status, _workloads_after(workloads, decision.actions)
            rolling = status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.BAKING) or status.phase is None
    return BacktestReport(
        version=spec.model.version,
        stable_version=stable_version,
        start=start,
        end=end,
        step=step,
        timeline=tuple(status.history),
        outcome=status.phase,
        metrics=_summaries(spec, runs),
    )
