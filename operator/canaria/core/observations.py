"""What the imperative shell saw, handed to the engine as plain data.

Nothing here talks to a server: the handlers fill these from the API server and Prometheus, the tests
build them by hand, and the engine decides from them alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from canaria.core.actions import TrafficSplit
from canaria.core.api import MetricResult, Verdict
from canaria.core.commands import Command


@dataclass(frozen=True)
class WorkloadObservation:
    """One version's Deployment as the API server reports it."""

    version: str
    replicas: int  # spec.replicas
    ready_replicas: int = 0
    updated: bool = True  # status.observedGeneration caught up and every replica runs the current template
    template_hash: str | None = None  # canaria.dev/template-hash annotation it was applied with
    deadline_exceeded: bool = False  # Progressing condition reason ProgressDeadlineExceeded

    def ready(self) -> bool:
        return self.updated and self.ready_replicas >= self.replicas


@dataclass(frozen=True)
class SmokeTestObservation:
    """The smoke-test Job status names (by version and attempt), as the API server reports it."""

    version: str
    attempt: int
    job: str
    outcome: Literal["Running", "Succeeded", "Failed", "Absent"]
    exit_code: int | None = None
    reason: str | None = None  # the container's (Error, ...) or the Job's (DeadlineExceeded, ...)
    log: str | None = None  # the tail of its output (the container's termination message)


@dataclass(frozen=True)
class AnalysisRun:
    """One run of every health query against Prometheus."""

    at: datetime
    results: tuple[MetricResult, ...]

    @property
    def gating(self) -> tuple[MetricResult, ...]:
        return tuple(r for r in self.results if not r.dry_run)

    @property
    def verdict(self) -> Verdict:
        """Fail (or Error) if any gating metric fails; else Inconclusive if any is; else Pass."""
        verdicts = {r.verdict for r in self.gating}
        if verdicts & {Verdict.FAIL, Verdict.ERROR}:
            return Verdict.FAIL
        if Verdict.INCONCLUSIVE in verdicts:
            return Verdict.INCONCLUSIVE
        return Verdict.PASS


@dataclass(frozen=True)
class TrafficObservation:
    """What a router saw: the split its objects hold now, what callers get, and what is wrong."""

    split: TrafficSplit | None = None  # None: the router's objects hold no split of this model (yet)
    effective_weight: int | None = None  # percent of callers the canary answers now
    problem: str | None = None  # e.g. the HTTPRoute is missing, or no Gateway accepts it
    reason: str | None = None  # CamelCase reason of the problem (RouteNotFound, RouteNotAccepted, ...)
    writer: str | None = None  # the last field manager other than Canaria that wrote the routing fields


@dataclass(frozen=True)
class Observations:
    """Everything the engine may look at besides spec, status and the clock."""

    generation: int = 1
    workloads: dict[str, WorkloadObservation] = field(default_factory=dict)
    baseline: WorkloadObservation | None = None  # the baseline Deployment (of the stable version), if any
    service_ports: tuple[int, int] | None = None  # (port, targetPort) of the model's Service, if it exists
    service_version: str | None = None  # the one version the Service selects; None: every version
    analysis: AnalysisRun | None = None
    smoke_test: SmokeTestObservation | None = None
    command: Command | None = None
    change_reason: str | None = None
    changed_by: str | None = None  # manager that last wrote the spec (managedFields)
    # The API server refused (or the shell could not build) an object this generation needs; permanent
    # until the spec changes, so the engine holds instead of retrying
    refusal: str | None = None
    traffic: TrafficObservation | None = None  # what the router reports; None: not observed
