"""Reliability rules: refused specs hold instead of looping, history stays small, every history entry's
Event survives a crash, API errors are classified once, odd Prometheus answers are Errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from canaria.core.actions import ApplyWorkload, EmitEvent
from canaria.core.api import HISTORY_BYTES, HISTORY_LIMIT, Metric, ModelDeploymentSpec, Verdict
from canaria.core.engine import _entry_size, bounded_history, history_event
from canaria.core.verdicts import classify
from canaria.kube.cluster import describe_error, is_permanent
from canaria.kube.reconciler import Reconciler, Settings

from .world import World, base_spec, healthy_world

REFUSAL = 'Deployment.apps "fraud-v1" is invalid: spec.template.spec.containers[0].image: Required value'


def _refuse_without_image(spec: ModelDeploymentSpec) -> str | None:
    """The apps API's answer to a container without an image (what the dry run returns)."""
    return None if spec.template["spec"]["containers"][0].get("image") else REFUSAL


def _no_image() -> dict[str, Any]:
    return {"template": {"spec": {"containers": [{"name": "server"}]}}}


# ------------------------------------------------------------------------------------------- refusal


def test_a_refused_template_changes_nothing_and_is_not_retried() -> None:
    world = healthy_world()
    world.refuse = _refuse_without_image
    replicas, seen = world.replicas(), len(world.events)
    world.edit(change_reason="new server build", **_no_image())
    world.tick(1)
    assert world.replicas() == replicas  # v1 keeps serving, untouched
    assert world.phase == "Healthy" and world.status.refused.generation == world.generation
    [event] = world.events_since(seen)
    assert (event.type, event.reason) == ("Warning", "SpecRefused")
    assert (
        "containers[0].image: Required value" in event.message and "fraud-team@example.com" in event.message
    )
    stalled = next(c for c in world.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == (
        "True",
        "SpecRefused",
    ) and "containers[0].image" in stalled.message
    for _ in range(20):  # no hot loop: the same generation is held without a single action
        decision = world.tick(30)
        assert decision.actions == () and decision.requeue_after is None
    world.edit(template=base_spec()["template"] | {"metadata": {"labels": {"fixed": "yes"}}})
    decision = world.tick(1)
    assert world.status.refused is None and any(isinstance(a, ApplyWorkload) for a in decision.actions)
    assert next(c for c in world.status.conditions if c.type == "Stalled").status == "False"


def test_a_refused_first_deployment_fails_with_nothing_created() -> None:
    world = World.create(**_no_image())
    world.refuse = _refuse_without_image
    world.tick()
    assert world.phase == "Failed" and world.workloads == {} and world.status.stable is None
    assert world.history_reasons() == ["SpecRefused"]
    assert "nothing deployed" in world.status.message and REFUSAL in world.status.message
    world.edit(**base_spec())
    world.run_until(lambda w: w.phase == "Healthy", step=5)
    assert world.history_reasons() == ["SpecRefused", "RolloutStarted", "Available"]


def test_a_command_retries_a_refused_spec_once() -> None:
    world = World.create(**_no_image())
    world.refuse = _refuse_without_image
    world.tick()
    world.send("retry", reason="try again")
    world.tick(1)
    assert world.status.last_command.result == f"ignored: spec generation {world.generation} is refused"
    assert world.history_reasons() == ["SpecRefused", "SpecRefused"]
    for _ in range(5):
        assert world.tick(10).actions == ()  # the command stays on the object but is not run again


# ------------------------------------------------------------------------------------------ history


def test_history_is_bounded_in_bytes_and_the_event_has_the_longer_reason() -> None:
    world = World.create()
    huge = "because " * 32_000  # 255 kB change reason
    world.change_reason = huge
    world.run_until(lambda w: w.phase == "Healthy", step=5)
    for n in range(2, 12):
        world.release(f"v{n}", change_reason=huge + str(n))
        world.run_until(lambda w, n=n: w.phase == "Healthy" and w.stable == f"v{n}", step=30)
    history = world.status.history
    assert sum(_entry_size(e) for e in history) <= HISTORY_BYTES
    assert len(json.dumps(world.status.dump())) < 64 * 1024  # the whole status, far below etcd's limit
    assert all(len(e.change_reason or "") <= 256 for e in history)
    started = world.event("RolloutStarted")
    assert len(started.message) > 10_000  # the Event carries it (the cluster caps what it posts)


def test_long_messages_keep_fewer_entries_the_newest_always() -> None:
    world = healthy_world()
    entry = world.status.history[-1]
    big = [entry.model_copy(update={"seq": n, "message": "x" * 1024}) for n in range(1, 2 * HISTORY_LIMIT)]
    kept = bounded_history(big)
    assert kept[-1].seq == 2 * HISTORY_LIMIT - 1 and 1 < len(kept) < HISTORY_LIMIT
    assert sum(_entry_size(e) for e in kept) <= HISTORY_BYTES
    assert len(bounded_history(big[:3])) == 3


def test_the_event_rebuilt_from_history_is_the_one_posted() -> None:
    world = healthy_world()
    world.release("v2", change_reason="retrained")
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == "v2", step=30)
    owner = world.spec.model.owner
    posted = {e.key: e for e in world.events if e.key.isdigit()}
    assert [history_event(h, owner) for h in world.status.history] == [
        posted[str(h.seq)] for h in world.status.history
    ]


class _Recorder:
    """The two calls the Event re-post makes, recorded (the API server's side is in tests/integration)."""

    def __init__(self) -> None:
        self.posted: list[EmitEvent] = []
        self.written: list[dict[str, Any]] = []

    def post_event(self, body: dict[str, Any], event: EmitEvent, *, related_version: str | None) -> None:
        self.posted.append(event)

    def write_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.written.append(status)
        return {**body, "status": status}


def _confirm(status: Any, posted: set[str]) -> _Recorder:
    recorder = _Recorder()
    body = {"metadata": {"name": "fraud", "namespace": "ml"}, "status": status.dump()}
    Reconciler(recorder, Settings())._confirm_events(body, status, "owner@example.com", posted)  # type: ignore[arg-type]
    return recorder


def test_events_of_unconfirmed_entries_are_posted_again_then_confirmed() -> None:
    world = healthy_world()
    world.release("v2")
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == "v2", step=30)
    status = world.status.model_copy(update={"events_through": 3})  # a crash after seq 3 was confirmed
    recorder = _confirm(status, posted={str(status.history[-1].seq)})  # this reconcile posted the last
    last = status.history[-1].seq
    assert [e.key for e in recorder.posted] == [str(s) for s in range(4, last)]
    assert recorder.written[-1]["eventsThrough"] == last
    confirmed = status.model_copy(update={"events_through": last})
    assert _confirm(confirmed, posted=set()).posted == [] and _confirm(confirmed, set()).written == []


# ---------------------------------------------------------------------------------- classification


def _api_error(status: int, message: str = "boom") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"message": message})
    return exc


@pytest.mark.parametrize(
    ("status", "message", "permanent"),
    [
        (400, "bad request", True),
        (413, "too large", True),
        (422, "spec.template.spec.containers[0].image: Required value", True),
        (500, "failed to create typed patch object (/v1, Kind=Service): .spec.ports: ...", True),
        (500, "etcdserver: leader changed", False),
        (503, "unavailable", False),
        (409, "conflict", False),
        (429, "too many requests", False),
        (408, "timeout", False),
        (403, "forbidden", False),
        (404, "not found", False),
    ],
)
def test_api_errors_are_permanent_only_when_about_the_object(
    status: int, message: str, permanent: bool
) -> None:
    exc = _api_error(status, message)
    assert is_permanent(exc) is permanent
    assert describe_error(exc) == f"{status} Reason: {message}"


# ------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"spec": {"containers": [None]}}, "template.spec.containers[0] must be an object"),
        ({"spec": {"containers": [{"name": "s", "env": ["A=1"]}]}}, "containers[0].env[0] must be an object"),
        ({"spec": {"containers": [{"name": "s", "env": "A=1"}]}}, "containers[0].env must be a list"),
        ({"spec": "x"}, "template.spec must be an object"),
        ({"metadata": {"labels": ["a"]}, "spec": {"containers": [{}]}}, "template.metadata.labels"),
    ],
)
def test_templates_the_deployment_builder_cannot_use_are_refused_by_field(template: Any, field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ModelDeploymentSpec.model_validate(base_spec(template=None) | {"template": template})


@pytest.mark.parametrize("duration", ["31d", "99999999999999999999d", "720h1s"])
def test_durations_have_a_maximum(duration: str) -> None:
    with pytest.raises(ValidationError, match="maximum of 30d"):
        ModelDeploymentSpec.model_validate(base_spec(rollout={"progressDeadline": duration}))


@pytest.mark.parametrize(
    ("result_type", "samples", "verdict"),
    [
        ("string", [1700000000, "0.001"], Verdict.ERROR),  # the PromQL "0.001": never a measurement
        ("histogram", [1700000000, "0.001"], Verdict.ERROR),  # a type Prometheus might add
        ("scalar", [1700000000, "0.001"], Verdict.PASS),
        ("vector", [{"metric": {}, "value": [1700000000, "0.001"]}], Verdict.PASS),
    ],
)
def test_only_numeric_result_types_can_pass(result_type: str, samples: Any, verdict: Verdict) -> None:
    metric = Metric(name="error-rate", query="q", max=0.01)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    got = classify(metric, samples, query="q", at=at, result_type=result_type)
    assert got.verdict == verdict
    if verdict == Verdict.ERROR:
        assert result_type in (got.reason or "")
