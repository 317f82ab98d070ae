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
from canaria.core.engine import (
    analysis_due,
    analysis_metrics,
    analysis_variables,
    decide,
    history_event,
    refused_status,
)
from canaria.core.notifications import Policy
from canaria.core.observations import AnalysisRun
from canaria.core.policy import AnalysisPolicy, PolicyError
from canaria.core.problems import describe_errors
from canaria.kube import telemetry as metrics
from canaria.kube.cluster import Cluster, Conflict, Refused, call
from canaria.kube.notify import Notifier
from canaria.providers import prometheus as prometheus_analysis
from canaria.routers import router_for

log = logging.getLogger("canaria.kube.reconciler")

MAX_CONFLICT_RETRIES = 5


@dataclasses.dataclass
class Settings:
    """Operator-wide options (from `canaria run`); the analysis policy holds the default Prometheus."""

    analysis_policy: AnalysisPolicy = dataclasses.field(default_factory=AnalysisPolicy)
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
        with metrics.RECONCILE_SECONDS.time():
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
            metrics.record_phase(namespace, name, None)
            return None  # gone or going: garbage collection removes what it owned
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError as exc:
            self._refuse(body, "InvalidSpec", f"spec rejected, nothing changed: {describe_errors(exc)}")
            return None
        command, command_error = self.cluster.command_of(body)
        try:
            # Before any request: an address, credential or load the operator-wide policy refuses stops
            # here, and so does a Secret without the consent label (read while resolving the target).
            self.settings.analysis_policy.check(md.spec)
            observations = self.cluster.observe(body, command)
            router = router_for(md, self.cluster.api)
            traffic = call(f"get {router.resource} in {namespace}", router.observe, md, observations)
            observations = dataclasses.replace(observations, traffic=traffic)
            now = self.clock()
            if analysis_due(md.spec, md.status, observations, now):
                observations = dataclasses.replace(observations, analysis=self._analyse(md, now))
        except PolicyError as exc:
            self._refuse(body, "RefusedByPolicy", f"refused by the operator's analysis policy: {exc}")
            return None
        decision = decide(md.spec, md.status, observations, now)
        try:
            self.cluster.validate(md, decision.actions)  # dry run: nothing changes if the spec is refused
            self.cluster.carry_out(md, decision.actions, router)
        except Refused as exc:
            # permanent for this generation: the engine records it and holds; what served keeps serving
            log.warning(
                "%s/%s: spec generation %s refused: %s", namespace, name, observations.generation, exc
            )
            observations = dataclasses.replace(observations, refusal=str(exc))
            decision = decide(md.spec, md.status, observations, now)
        new_status = decision.status.dump()
        if command_error:
            new_status["message"] = f"ignored {command_error}"
        if new_status != body.get("status"):
            body = self.cluster.write_status(body, new_status)
        posted = set()
        for action in decision.actions:
            if isinstance(action, EmitEvent):
                self.cluster.post_event(body, action, related_version=action.version)
                posted.add(action.key)
                metrics.TRANSITIONS.labels(namespace=namespace, name=name, reason=action.reason).inc()
        self._confirm_events(body, decision.status, md.spec.model.owner, posted)
        phase = decision.status.phase
        metrics.record_phase(namespace, name, phase.value if phase else None)
        if self.notifier is not None:
            after = ModelDeployment(metadata=md.metadata, spec=md.spec, status=decision.status)
            if self.notifier.owes(after):
                self.notifier.kick(namespace, name)
        if any(isinstance(a, ApplyWorkload) for a in decision.actions):
            log.info(
                "%s/%s: %s", namespace, name, [a for a in decision.actions if not isinstance(a, EmitEvent)]
            )
        return decision

    def _confirm_events(
        self, body: dict[str, Any], status: ModelDeploymentStatus, owner: str | None, posted: set[str]
    ) -> None:
        """Every history entry gets exactly one Event, whatever crash came between the status write and
        the post: entries newer than status.eventsThrough are (re-)posted under their deterministic
        names (a repeat is a 409, ignored), then eventsThrough moves up in one more status write."""
        through = status.events_through or 0
        pending = [e for e in status.history if e.seq > through]
        if not pending:
            return
        for entry in pending:
            event = history_event(entry, owner)
            if event.key not in posted:
                log.info(
                    "%s: re-posting the Event of history entry %s (%s)", _ref(body), entry.seq, entry.reason
                )
                self.cluster.post_event(body, event, related_version=event.version)
        confirmed = {**(body.get("status") or {}), "eventsThrough": pending[-1].seq}
        self.cluster.write_status(body, confirmed)

    def _analyse(self, md: ModelDeployment, now: datetime) -> AnalysisRun:
        """Run every health query; a connection problem is an inconclusive result, never an exception."""
        meta = md.metadata
        metrics_spec = analysis_metrics(md.spec, md.status)
        try:
            target = prometheus_analysis.target_from_spec(
                md.spec.prometheus,
                self.settings.analysis_policy.default_address,
                lambda ref, field: self.cluster.read_secret(meta["namespace"], ref, field),
            )
        except PolicyError:
            raise
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
        run = prometheus_analysis.run_analysis(metrics_spec, variables, target, now=now)
        for result in run.results:
            metrics.ANALYSIS_VERDICTS.labels(metric=result.name, verdict=result.verdict.value).inc()
        return run

    def _refuse(self, body: dict[str, Any], reason: str, message: str) -> None:
        """A spec the operator will not act on (unreadable, or outside the analysis policy): say so in
        status (Stalled with ``reason``, Ready False) and a Warning Event, and touch nothing else."""
        generation = body["metadata"].get("generation") or 0
        try:
            status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        except ValidationError:
            status = ModelDeploymentStatus()
        new_status = refused_status(status, reason, message, generation, self.clock()).dump()
        if new_status == body.get("status"):
            return
        self.cluster.write_status(body, new_status)
        self.cluster.post_event(
            body, EmitEvent("Warning", reason, message, key=f"{reason.lower()}-{generation}")
        )


def _ref(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"
