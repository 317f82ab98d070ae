"""A tiny simulated cluster for engine tests.

`World` holds what the operator's shell would see and touch: the spec (as the user wrote it), the status
(as last patched), a clock, one Deployment per model version, the Service's ports and the version it
selects, and the Events posted.
`tick()` does what one reconciliation does, with no I/O:

1. advance the clock; Deployments whose pods had time to start become ready (per-version policy);
2. build `Observations`; ask `analysis_due` and, when due, make an `AnalysisRun` from the per-version
   value function the test set (a number is classified against the metric's bounds, `None` is "no data",
   a `Verdict` is forced);
3. call `decide`, apply its actions (ApplyWorkload / DeleteWorkload / ApplyService / EmitEvent) and store
   the new status - through `dump()` and `model_validate()` by default, as a status patch and a later read
   would, so a status the API server could not store fails the test.

Nothing here decides anything: assertions belong to the tests.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from canaria import GROUP, KIND, VERSION
from canaria.core.actions import SetTraffic, TrafficSplit
from canaria.core.api import (
    Metric,
    MetricResult,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Verdict,
)
from canaria.core.commands import COMMAND_ANNOTATION, Command
from canaria.core.engine import (
    ApplyService,
    ApplyWorkload,
    Decision,
    DeleteWorkload,
    EmitEvent,
    RunSmokeTest,
    ScaleWorkload,
    analysed_version,
    analysis_due,
    analysis_metrics,
    decide,
)
from canaria.core.observations import (
    AnalysisRun,
    Observations,
    SmokeTestObservation,
    TrafficObservation,
    WorkloadObservation,
)
from canaria.routers.replicas import ReplicaRouter

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)

NAME = "fraud"
NAMESPACE = "ml"
UID = "0a1b2c3d-0000-4000-8000-000000000000"

#: What a metric reads for a version: a number (classified against the bounds), None (no data), or a
#: forced verdict (INCONCLUSIVE: NaN / Prometheus down; ERROR: the query can never pass).
Reading = float | Verdict | None
ValueFn = Callable[[str, Metric], Reading]

GOOD, BAD, NO_DATA, ERROR = "good", "bad", "nodata", "error"


def good_value(metric: Metric) -> float:
    """A value comfortably inside the bounds."""
    if metric.min is not None and metric.max is not None:
        return (metric.min + metric.max) / 2
    if metric.max is not None:
        return metric.max / 2 if metric.max > 0 else metric.max - 1
    return metric.min * 2 if metric.min > 0 else metric.min + 1


def bad_value(metric: Metric) -> float:
    """A value clearly outside the bounds."""
    if metric.max is not None:
        return metric.max * 3 if metric.max > 0 else metric.max + 1
    return metric.min / 3 if metric.min > 0 else metric.min - 1


def base_spec(**overrides: Any) -> dict[str, Any]:
    """A complete spec in resource form (camelCase): fraud v1, 4 replicas, steps 10/50/100, 2 metrics."""
    spec: dict[str, Any] = {
        "model": {
            "name": NAME,
            "version": "v1",
            "uri": "s3://models/fraud/v1",
            "lineage": {"codeCommit": "1a2b3c4", "trainingRun": "run-811"},
            "evaluation": {"auc": 0.94},
            "owner": "fraud-team@example.com",
        },
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "ghcr.io/example/model-server:1.4",
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            }
        },
        "replicas": 4,
        "service": {"port": 80, "targetPort": 8080},
        "gates": [{"metric": "auc", "min": 0.9}],
        "rollout": {
            "steps": [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}, {"weight": 100}],
            "analysis": {
                "interval": "1m",
                "failureLimit": 1,
                "inconclusiveLimit": 2,
                "metrics": [
                    {"name": "error-rate", "query": 'errors{version="{{version}}"}', "max": 0.01},
                    {"name": "p95-latency", "query": 'p95{version="{{version}}"}', "max": 0.25},
                ],
            },
            "progressDeadline": "10m",
        },
    }
    return merge(spec, overrides)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` into a copy of `base`; a None value removes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Workload:
    """One version's Deployment: what was applied and how many pods are ready."""

    version: str
    uri: str
    replicas: int
    template_hash: str
    ready_replicas: int = 0
    changed_at: datetime = T0
    deadline_exceeded: bool = False

    def observe(self) -> WorkloadObservation:
        return WorkloadObservation(
            version=self.version,
            replicas=self.replicas,
            ready_replicas=self.ready_replicas,
            updated=True,
            template_hash=self.template_hash,
            deadline_exceeded=self.deadline_exceeded,
        )


@dataclass
class World:
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: datetime = T0
    generation: int = 1
    workloads: dict[str, Workload] = field(default_factory=dict)
    baseline: Workload | None = None  # the baseline Deployment (rollout.baseline), kept apart from versions
    service_ports: tuple[int, int] | None = None
    service_version: str | None = None  # the one version the Service selects (None: every version)
    events: list[EmitEvent] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    analysis_runs: list[AnalysisRun] = field(default_factory=list)
    #: seconds a version's new pods take to become ready (math.inf: never); default 0: ready at the next tick
    readiness: dict[str, float] = field(default_factory=dict)
    #: per-version health, GOOD / BAD / NO_DATA / ERROR, or a ValueFn for full control
    health: dict[str, str | ValueFn] = field(default_factory=dict)
    command: Command | None = None  # the canaria.dev/command annotation (stays until replaced)
    change_reason: str | None = None  # the canaria.dev/change-reason annotation
    changed_by: str | None = None
    roundtrip: bool = True  # store status as the API server would (dump + validate)
    #: called after every decision is applied, with (world, status before, observations, decision)
    on_decision: Callable[[World, ModelDeploymentStatus, Observations, Decision], None] | None = None
    last_observations: Observations | None = None
    #: the API server's dry run, as the reconciler asks it: a message when it refuses this spec's objects
    refuse: Callable[[ModelDeploymentSpec], str | None] | None = None
    #: smoke tests: version → exit code its test ends with (default 0), seconds a test runs, the Jobs
    #: created ((version, attempt) → when), and every create asked for (a repeat is a no-op, as a 409)
    smoke_exit: dict[str, int] = field(default_factory=dict)
    smoke_seconds: float = 5.0
    jobs: dict[tuple[str, int], datetime] = field(default_factory=dict)
    job_creates: list[tuple[str, int]] = field(default_factory=list)
    #: with a router that splits requests (Gateway API): what the route holds, None while nothing is set
    route: TrafficSplit | None = None
    #: (reason, message) the router reports instead (route missing, not accepted); SetTraffic then fails
    route_problem: tuple[str, str] | None = None
    route_writer: str | None = None  # a field manager other than Canaria that last wrote the route

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def create(cls, **spec_overrides: Any) -> World:
        return cls(spec=ModelDeploymentSpec.model_validate(base_spec(**spec_overrides)))

    # -- user actions ------------------------------------------------------------------------------

    def edit(self, change_reason: str | None = None, **overrides: Any) -> None:
        """Change the spec as `kubectl apply` would: deep-merged camelCase overrides, generation + 1."""
        self.spec = ModelDeploymentSpec.model_validate(merge(self.spec.dump(), overrides))
        self.generation += 1
        if change_reason is not None:
            self.change_reason = change_reason

    def release(
        self, version: str, *, change_reason: str | None = None, auc: float = 0.95, **overrides: Any
    ) -> None:
        """A new model version in the spec (new URI, lineage and evaluation)."""
        model = {
            "version": version,
            "uri": f"s3://models/{NAME}/{version}",
            "lineage": {"codeCommit": f"c0ffee-{version}", "trainingRun": f"run-{version}"},
            "evaluation": {"auc": auc},
        }
        self.edit(change_reason=change_reason, model=model, **overrides)

    def send(
        self,
        action: str,
        id: str | None = None,
        *,
        user: str | None = "alice",
        reason: str | None = None,
        full: bool = False,
    ) -> Command:
        """Put a command annotation on the resource (it stays there, as an annotation does)."""
        self.command = Command(
            action=action,
            id=id or f"{action}-{len(self.decisions)}",
            user=user,
            reason=reason,
            full=full,
            issued_at=self.now.isoformat(),  # as `canaria promote` and friends stamp it
        )
        return self.command

    # -- observation -------------------------------------------------------------------------------

    def _settle(self) -> None:
        for workload in [*self.workloads.values(), *([self.baseline] if self.baseline else [])]:
            delay = self.readiness.get(workload.version, 0.0)
            if (self.now - workload.changed_at).total_seconds() >= delay:
                workload.ready_replicas = workload.replicas
            else:
                workload.ready_replicas = min(workload.ready_replicas, workload.replicas)

    def observe(self, *, command: Command | None = None) -> Observations:
        obs = Observations(
            generation=self.generation,
            workloads={v: w.observe() for v, w in self.workloads.items()},
            baseline=self.baseline.observe() if self.baseline else None,
            service_ports=self.service_ports,
            service_version=self.service_version,
            smoke_test=self._smoke_observation(),
            analysis=None,
            command=command if command is not None else self.command,
            change_reason=self.change_reason,
            changed_by=self.changed_by,
        )
        return replace(obs, traffic=self.observe_traffic(obs))

    def observe_traffic(self, obs: Observations) -> TrafficObservation:
        """What the router reports: the replica router itself, or a route as a Gateway API one reads it."""
        if not self.spec.rollout.routing.exact:
            return ReplicaRouter().observe(ModelDeployment(spec=self.spec, status=self.status), obs)
        reason, problem = self.route_problem or (None, None)
        route = None if reason == "RouteNotFound" else self.route
        effective = route.weight if route is not None and route.canary is not None else None
        return TrafficObservation(route, effective, problem, reason, self.route_writer)

    def _smoke_observation(self) -> SmokeTestObservation | None:
        record = self.status.smoke_test
        if record is None or record.phase != "Running":
            return None
        key = (record.version, record.attempt)
        seen = SmokeTestObservation(
            record.version, record.attempt, f"job-{record.version}-{record.attempt}", "Absent"
        )
        if key not in self.jobs:
            return seen
        if (self.now - self.jobs[key]).total_seconds() < self.smoke_seconds:
            return replace(seen, outcome="Running")
        code = self.smoke_exit.get(record.version, 0)
        log = f"GET /predict -> {'200 ok' if code == 0 else '500: model failed to load'}"
        return replace(
            seen,
            outcome="Succeeded" if code == 0 else "Failed",
            exit_code=code,
            reason=None if code == 0 else "Error",
            log=log,
        )

    def reading(self, version: str, metric: Metric) -> Reading:
        health = self.health.get(version, GOOD)
        if callable(health):
            return health(version, metric)
        if health == GOOD:
            return good_value(metric)
        if health == BAD:
            return bad_value(metric)
        if health == NO_DATA:
            return None
        if health == ERROR:
            return Verdict.ERROR
        raise ValueError(f"unknown health {health!r}")

    def run_analysis(self, version: str, value_fn: ValueFn | None = None) -> AnalysisRun:
        """What the analysis runner would return for `version` now."""
        results = []
        for metric in analysis_metrics(self.spec, self.status):
            reading = value_fn(version, metric) if value_fn else self.reading(version, metric)
            value, reason = None, None
            if isinstance(reading, Verdict):
                verdict = reading
                reason = {
                    Verdict.ERROR: "bad_data: parse error",
                    Verdict.INCONCLUSIVE: "value is NaN (0/0: no traffic?)",
                }.get(reading)
            elif reading is None or (isinstance(reading, float) and math.isnan(reading)):
                verdict, reason = Verdict.INCONCLUSIVE, "no data"
            else:
                value = float(reading)
                verdict = Verdict.PASS if metric.verdict(value) else Verdict.FAIL
            results.append(
                MetricResult(
                    name=metric.name,
                    verdict=verdict,
                    value=value,
                    min=metric.min,
                    max=metric.max,
                    reason=reason,
                    query=metric.query,
                    dry_run=metric.dry_run,
                    at=self.now,
                )
            )
        return AnalysisRun(at=self.now, results=tuple(results))

    # -- one reconciliation ------------------------------------------------------------------------

    def tick(
        self,
        seconds: float = 0.0,
        *,
        analysis: bool | ValueFn | AnalysisRun = True,
        command: Command | None = None,
    ) -> Decision:
        """Advance the clock, observe, analyse when due, decide, apply.

        `analysis`: True runs the analysis when `analysis_due` says so, with the world's health; a ValueFn
        does the same with that function; an AnalysisRun is handed in as is (due or not); False skips it.
        """
        self.now += timedelta(seconds=seconds)
        self._settle()
        obs = self.observe(command=command)
        if isinstance(analysis, AnalysisRun):
            obs = replace(obs, analysis=analysis)
        elif analysis is not False and analysis_due(self.spec, self.status, obs, self.now):
            version = analysed_version(self.status)
            run = self.run_analysis(version, analysis if callable(analysis) else None)
            obs = replace(obs, analysis=run)
        if obs.analysis is not None:
            self.analysis_runs.append(obs.analysis)
        self.last_observations = obs
        before = self.status
        decision = decide(self.spec, before, obs, self.now)
        applies = any(isinstance(a, (ApplyWorkload, ApplyService)) for a in decision.actions)
        if applies and self.refuse is not None and (refusal := self.refuse(self.spec)) is not None:
            obs = replace(obs, refusal=refusal)  # what the reconciler does with a Refused dry run
            self.last_observations = obs
            decision = decide(self.spec, before, obs, self.now)
        self.apply(decision)
        if self.on_decision is not None:
            self.on_decision(self, before, obs, decision)
        return decision

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, ApplyWorkload | ScaleWorkload | DeleteWorkload) and action.baseline:
                self._apply_baseline(action)
            elif isinstance(action, ApplyWorkload):
                old = self.workloads.get(action.version)
                workload = Workload(
                    action.version, action.uri, action.replicas, action.template_hash, changed_at=self.now
                )
                if old is not None:
                    workload.ready_replicas = min(old.ready_replicas, action.replicas)
                    if old.template_hash != action.template_hash:
                        workload.ready_replicas = 0  # a new template rolls every pod
                    elif action.replicas <= old.replicas:
                        workload.changed_at = old.changed_at  # scaling down starts nothing new
                self.workloads[action.version] = workload
            elif isinstance(action, ScaleWorkload):
                old = self.workloads[action.version]
                workload = Workload(
                    action.version, old.uri, action.replicas, old.template_hash, changed_at=self.now
                )
                workload.ready_replicas = min(old.ready_replicas, action.replicas)
                if action.replicas <= old.replicas:
                    workload.changed_at = old.changed_at  # scaling down starts nothing new
                self.workloads[action.version] = workload
            elif isinstance(action, DeleteWorkload):
                self.workloads.pop(action.version, None)
            elif isinstance(action, ApplyService):
                self.service_ports = (action.port, action.target_port)
                self.service_version = action.version
            elif isinstance(action, EmitEvent):
                self.events.append(action)
            elif isinstance(action, RunSmokeTest):
                self.job_creates.append((action.version, action.attempt))
                self.jobs.setdefault((action.version, action.attempt), self.now)
            elif isinstance(action, SetTraffic):
                if self.route_problem is None or self.route_problem[0] != "RouteNotFound":
                    self.route, self.route_writer = action.split, None
            else:  # pragma: no cover - a new action kind needs a line here
                raise AssertionError(f"unknown action {action!r}")
        status = decision.status
        if self.roundtrip:
            status = ModelDeploymentStatus.model_validate(status.dump())
        self.status = status
        self.decisions.append(decision)

    def _apply_baseline(self, action: ApplyWorkload | ScaleWorkload | DeleteWorkload) -> None:
        """The baseline starts its pods like any Deployment; the shell copies the stable's template."""
        old = self.baseline
        if isinstance(action, DeleteWorkload):
            self.baseline = None
            return
        digest = action.template_hash if isinstance(action, ApplyWorkload) else old.template_hash
        self.baseline = Workload(
            action.version, old.uri if old else "", action.replicas, digest, changed_at=self.now
        )
        if old is not None and old.template_hash == digest:
            self.baseline.ready_replicas = min(old.ready_replicas, action.replicas)
            if action.replicas <= old.replicas:
                self.baseline.changed_at = old.changed_at  # scaling down starts nothing new

    def run(self, seconds: float, step: float = 10.0, **tick_kwargs: Any) -> list[Decision]:
        """Tick every `step` seconds for `seconds`."""
        decisions = []
        elapsed = 0.0
        while elapsed < seconds:
            decisions.append(self.tick(step, **tick_kwargs))
            elapsed += step
        return decisions

    def run_until(
        self, predicate: Callable[[World], bool], *, step: float = 10.0, limit: float = 6 * 3600
    ) -> None:
        """Tick every `step` seconds until `predicate(world)` holds (or fail after `limit` seconds)."""
        start = self.now
        while not predicate(self):
            if (self.now - start).total_seconds() > limit:
                raise AssertionError(
                    f"condition not reached after {limit}s; phase {self.status.phase}, "
                    f"message {self.status.message!r}"
                )
            self.tick(step)

    # -- views for assertions ----------------------------------------------------------------------

    def body(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """The resource as the API server returns it: the spec as written, the status as last stored, and
        the command annotation when one was sent (or `annotations` as given)."""
        if annotations is None:
            annotations = {COMMAND_ANNOTATION: self.command.to_annotation()} if self.command else {}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": UID,
                "generation": self.generation,
                "creationTimestamp": T0.isoformat(),
                "annotations": annotations,
            },
            "spec": self.spec.dump(),
            "status": self.status.dump(),
        }

    def replicas(self) -> dict[str, int]:
        """version → replicas of its Deployment."""
        return {v: w.replicas for v, w in sorted(self.workloads.items())}

    def reasons(self, events: Iterable[EmitEvent] | None = None) -> list[str]:
        return [e.reason for e in (self.events if events is None else events)]

    def events_since(self, index: int) -> list[EmitEvent]:
        return self.events[index:]

    def event(self, reason: str) -> EmitEvent:
        """The latest Event with this reason."""
        for event in reversed(self.events):
            if event.reason == reason:
                return event
        raise AssertionError(f"no {reason} event among {self.reasons()}")

    def history_reasons(self) -> list[str]:
        return [h.reason for h in self.status.history]

    @property
    def phase(self) -> str | None:
        return self.status.phase.value if self.status.phase else None

    @property
    def stable(self) -> str | None:
        return self.status.stable.version if self.status.stable else None

    @property
    def canary(self) -> str | None:
        return self.status.canary.version if self.status.canary else None

    @property
    def lkg(self) -> str | None:
        return self.status.last_known_good.version if self.status.last_known_good else None


def rolled_out_to(
    world: World, version: str, *, step: int, ready: bool = True, change_reason: str | None = None
) -> World:
    """Release `version` and tick until its canary is at `step` (and ready there, unless ready=False)."""
    world.release(version, change_reason=change_reason)

    def there(w: World) -> bool:
        canary = w.status.canary
        return canary is not None and canary.step == step and (not ready or canary.ready_at is not None)

    world.run_until(there, step=5)
    return world


def healthy_world(**spec_overrides: Any) -> World:
    """A world where v1 was deployed and is Healthy (the last known good)."""
    world = World.create(**spec_overrides)
    world.run_until(lambda w: w.phase == "Healthy", step=5)
    return world
