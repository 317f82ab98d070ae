"""One reconcile of one ModelDeployment: read, observe, analyse if due, decide, act, record.

This is the whole imperative shell around `engine.decide`. It holds no state between calls: a fresh
read of the resource and its Deployments is the input every time, so a restarted operator carries on
from the status, and running it twice in a row does nothing the second time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from canaria.core.actions import ApplyWorkload, Decision, EmitEvent
from canaria.core.api import MetricResult, ModelDeployment, ModelDeploymentStatus, Verdict
from canaria.core.engine import analysis_due, analysis_variables, decide, invalid_spec_status
from canaria.core.notifications import Policy
from canaria.core.observations import AnalysisRun
from canaria.core.problems import describe_errors
from canaria.kube import telemetry as metrics
from canaria.kube.cluster import Cluster, Conflict
from canaria.kube.notify import Notifier
from canaria.providers import prometheus as prometheus_analysis

log = logging.getLogger("canaria.kube.reconciler")

MAX_CONFLICT_RETRIES = 5


@dataclasses.dataclass
class Settings:
    """Operator-wide options (from `canaria run`)."""

    prometheus_address: str | None = None
    notification_policy: Policy = dataclasses.field(default_factory=Policy)
    notifications_secret: tuple[str, str] | None = None  # (namespace, name): one webhook URL per receiver


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        cluster: Cluster,
        settings: Settings,
        clock: Callable[[], datetime] = _utcnow,
        notifier: Notifier | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.notifier = notifier

    def reconcile(self, namespace: str, name: str) -> Decision | None:
        """Reconcile until the status write lands; conflicts (someone changed the object) are redone
        from a fresh read, with a short backoff, so no update is lost."""
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                return self._reconcile_once(namespace, name)
            except Conflict as exc:
                log.info("%s/%s: %s; retrying from a fresh read", namespace, name, exc)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        return self._reconcile_once(namespace, name)

    def _reconcile_once(self, namespace: str, name: str) -> Decision | None:
        body = self.cluster.read(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone or going: garbage collection removes what it owned
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError as exc:
            self._report_invalid(body, exc)
            return None
        command, command_error = self.cluster.command_of(body)
        observations = self.cluster.observe(body, command)
        now = self.clock()
        if analysis_due(md.spec, md.status, observations, now):
            observations = dataclasses.replace(observations, analysis=self._analyse(md, now))
        decision = decide(md.spec, md.status, observations, now)
        self.cluster.carry_out(md, decision.actions)
        new_status = decision.status.dump()
        if command_error:
            new_status["message"] = f"ignored {command_error}"
        if new_status != body.get("status"):
            self.cluster.write_status(body, new_status)
        for action in decision.actions:
            if isinstance(action, EmitEvent):
                self.cluster.post_event(body, action, related_version=action.version)
                metrics.TRANSITIONS.labels(namespace=namespace, name=name, reason=action.reason).inc()
        if self.notifier is not None:
            after = ModelDeployment(metadata=md.metadata, spec=md.spec, status=decision.status)
            if self.notifier.owes(after):
                self.notifier.kick(namespace, name)
        if any(isinstance(a, ApplyWorkload) for a in decision.actions):
            log.info(
                "%s/%s: %s", namespace, name, [a for a in decision.actions if not isinstance(a, EmitEvent)]
            )
        return decision

    def _analyse(self, md: ModelDeployment, now: datetime) -> AnalysisRun:
        """Run every health query; a connection problem is an inconclusive result, never an exception."""
        meta = md.metadata
        metrics_spec = md.spec.rollout.analysis.metrics
        try:
            target = prometheus_analysis.target_from_spec(
                md.spec.prometheus,
                self.settings.prometheus_address,
                lambda ref: self.cluster.read_secret(meta["namespace"], ref),
            )
        except (ValueError, ApiException) as exc:
            reason = f"Prometheus not usable: {exc}"
            return AnalysisRun(
                at=now,
                results=tuple(
                    MetricResult(
                        name=m.name,
                        verdict=Verdict.INCONCLUSIVE,
                        reason=reason,
                        at=now,
                        min=m.min,
                        max=m.max,
                        dry_run=m.dry_run,
                    )
                    for m in metrics_spec
                ),
            )
        variables = analysis_variables(md.spec, md.status, name=meta["name"], namespace=meta["namespace"])
        return prometheus_analysis.run_analysis(metrics_spec, variables, target, now=now)

    def _report_invalid(self, body: dict[str, Any], exc: ValidationError) -> None:
        """A spec the operator cannot read (e.g. applied with validation off): say so, touch nothing."""
        problems = describe_errors(exc)
        generation = body["metadata"].get("generation") or 0
        try:
            status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        except ValidationError:
            status = ModelDeploymentStatus()
        new_status = invalid_spec_status(status, problems, generation, self.clock()).dump()
        if new_status == body.get("status"):
            return
        self.cluster.write_status(body, new_status)
        self.cluster.post_event(
            body, EmitEvent("Warning", "InvalidSpec", new_status["message"], key=f"invalid-{generation}")
        )
