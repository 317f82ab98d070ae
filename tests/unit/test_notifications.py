"""What is owed to whom (canaria.core.notifications), on statuses the engine produced."""

from __future__ import annotations

from datetime import timedelta

import pytest

from canaria.core.api import ModelDeployment, ModelDeploymentSpec
from canaria.core.notifications import (
    BACKOFF,
    FRESH,
    Policy,
    Receiver,
    delivered,
    due,
    failed,
    merged,
    owed,
    payload,
    receivers_for,
    record_of,
)
from tests.unit.world import BAD, NAME, NAMESPACE, World, healthy_world

POLICY = Policy((Receiver("oncall", "slack"), Receiver("audit", "json")))


def _md(world: World, **spec: object) -> ModelDeployment:
    body = world.spec.dump() | spec
    return ModelDeployment(
        metadata={"name": NAME, "namespace": NAMESPACE, "uid": "u-1"},
        spec=ModelDeploymentSpec.model_validate(body),
        status=world.status,
    )


@pytest.fixture
def reverted() -> World:
    world = healthy_world()
    world.health["v2"] = BAD
    world.release("v2")
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    return world


def test_only_warnings_are_owed_by_default_and_promotions_on_request(reverted: World) -> None:
    md = _md(reverted)
    warnings = [h.reason for h in reverted.status.history if h.warning]
    assert warnings == ["RolledBack"]
    assert [h.reason for h in owed(md, "audit", POLICY, reverted.now)] == ["RolledBack"]
    world = healthy_world()
    world.release("v2")
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == "v2", step=30)
    assert owed(_md(world), "audit", POLICY, world.now) == []
    asked = _md(world, notifications={"promotions": True})
    assert [h.reason for h in owed(asked, "audit", POLICY, world.now)] == ["Promoted"]
    operator_wide = Policy(POLICY.receivers, promotions=True)
    assert [h.reason for h in owed(_md(world), "audit", operator_wide, world.now)] == ["Promoted"]


def test_the_cursor_makes_a_delivery_happen_once(reverted: World) -> None:
    md = _md(reverted)
    (entry,) = owed(md, "audit", POLICY, reverted.now)
    reverted.status = reverted.status.model_copy(
        update={"notifications": merged([], delivered("audit", entry, reverted.now))}
    )
    again = _md(reverted)
    assert owed(again, "audit", POLICY, reverted.now) == []
    assert [h.reason for h in owed(again, "oncall", POLICY, reverted.now)] == ["RolledBack"]


def test_an_old_history_is_not_replayed_to_a_new_receiver(reverted: World) -> None:
    later = reverted.now + FRESH + timedelta(seconds=1)
    assert owed(_md(reverted), "audit", POLICY, later) == []


def test_failures_back_off_and_keep_the_cursor(reverted: World) -> None:
    md = _md(reverted)
    (entry,) = owed(md, "audit", POLICY, reverted.now)
    record = None
    for attempt, wait in enumerate(BACKOFF, start=1):
        record = failed(record, "audit", entry, "HTTP 503", reverted.now)
        assert record.attempts == attempt and record.failing_seq == entry.seq
        assert record.delivered_seq == entry.seq - 1 and record.last_error == "HTTP 503"
        assert record.next_attempt_at == reverted.now + timedelta(seconds=wait)
        assert not due(record, reverted.now) and due(record, record.next_attempt_at)
    assert failed(
        record, "audit", entry, "timed out", reverted.now
    ).next_attempt_at == reverted.now + timedelta(seconds=BACKOFF[-1])


def test_receivers_named_by_the_spec_and_unknown_ones(reverted: World) -> None:
    assert [r.name for r in receivers_for(_md(reverted), POLICY)[0]] == ["oncall", "audit"]
    chosen, unknown = receivers_for(_md(reverted, notifications={"receivers": ["audit", "pager"]}), POLICY)
    assert [r.name for r in chosen] == ["audit"] and unknown == ["pager"]
    defaults = Policy(POLICY.receivers, default_receivers=("oncall",))
    assert [r.name for r in receivers_for(_md(reverted), defaults)[0]] == ["oncall"]
    assert record_of(_md(reverted), "audit") is None


def test_the_payloads_name_owner_versions_and_the_failing_value(reverted: World) -> None:
    md = _md(reverted)
    (entry,) = owed(md, "audit", POLICY, reverted.now)
    generic = payload(md, entry, "json")
    assert generic["id"] == f"u-1/{entry.seq}" and generic["severity"] == "warning"
    assert generic["owner"] == "fraud-team@example.com"
    assert {v["version"] for v in generic["versions"]} == {"v1", "v2"}
    assert "error-rate" in generic["transition"]["message"]
    assert generic["command"] == f"canaria history {NAME} -n {NAMESPACE}"
    slack = payload(md, entry, "slack")
    assert slack["text"].startswith(":rotating_light: *ml/fraud* RolledBack")
    assert "fraud-team@example.com" in slack["text"] and "c0ffee-v2" in slack["text"]
