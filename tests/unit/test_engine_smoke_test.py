"""Smoke tests (`rollout.smokeTest`) in the engine: before a canary gets any traffic, and after a revert or
rollback against the restored version; Jobs named by version and attempt, created once.

Driven in the simulated `World`: a Job runs `smoke_seconds` (5 s) and ends with the exit code the test
set for its version (default 0); "no traffic" is the Service selecting the stable version alone.
"""

from __future__ import annotations

from typing import Any

from canaria.core.api import ConditionType

from .world import BAD, World, healthy_world

OWNER = "fraud-team@example.com"
SMOKE = {
    "smokeTest": {"template": {"spec": {"containers": [{"name": "t", "image": "curl", "command": ["t"]}]}}}
}


def smoke_world(**rollout: Any) -> World:
    return healthy_world(rollout={**SMOKE, **rollout})


def condition(world: World, kind: str) -> tuple[str, str] | None:
    found = next((c for c in world.status.conditions if c.type == kind), None)
    return (found.status, found.reason) if found else None


def test_a_failing_smoke_test_refuses_the_canary_before_any_traffic() -> None:
    world = smoke_world()
    world.smoke_exit["v2"] = 3
    world.release("v2")
    selected = []
    world.on_decision = lambda w, *_: selected.append(w.service_version)
    world.run_until(lambda w: w.phase == "Failed", step=1, limit=120)
    assert set(selected) == {"v1"}, "the Service left the stable version while the canary was tested"
    assert world.stable == "v1" and world.status.canary is None
    assert world.status.rejected.reason == "SmokeTestFailed" and world.replicas() == {"v1": 4}
    record = world.status.smoke_test
    assert (record.purpose, record.phase, record.exit_code, record.version) == (
        "BeforeTraffic",
        "Failed",
        3,
        "v2",
    )
    assert "model failed to load" in record.log
    event = world.event("SmokeTestFailed")
    assert event.type == "Warning" and OWNER in event.message and "exit code 3" in event.message
    assert "model failed to load" in event.message and "v1 keeps serving" in event.message
    assert condition(world, ConditionType.STALLED) == ("True", "SmokeTestFailed")
    assert world.job_creates == [("v2", 1)]
    assert not world.analysis_runs, "a canary with no traffic is not analysed"


def test_a_passing_smoke_test_lets_the_canary_take_its_first_step() -> None:
    world = smoke_world()
    world.release("v2")
    world.tick(1)
    world.run_until(lambda w: w.status.canary.ready_at is not None, step=1, limit=120)
    assert world.service_version is None  # now every version: the replica split
    passed = world.event("SmokeTestPassed")
    assert "v2" in passed.message and "before any traffic" in passed.message
    assert world.status.smoke_test.phase == "Passed"
    # the step's pause counts from the pass, not from the Pods being ready
    assert world.status.canary.ready_at == world.status.smoke_test.finished_at
    world.run_until(lambda w: w.phase == "Healthy", step=30)
    assert world.stable == "v2" and world.job_creates == [("v2", 1)]


def test_a_job_not_seen_yet_is_created_again_under_the_same_name_never_a_second_one() -> None:
    world = smoke_world()
    world.release("v2")
    world.run_until(lambda w: w.job_creates, step=1, limit=60)
    world.jobs.clear()  # e.g. created, then the operator restarted before the API server answered
    world.tick(1)
    world.run_until(lambda w: w.status.smoke_test.phase == "Passed", step=1, limit=60)
    assert set(world.job_creates) == {("v2", 1)}


def test_after_a_revert_the_restored_version_is_tested_and_the_verdict_is_a_condition() -> None:
    world = smoke_world(bake="30m")
    world.release("v2")
    world.run_until(lambda w: w.phase == "Baking", step=5)
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    world.run_until(lambda w: w.status.smoke_test.phase == "Passed", step=1, limit=60)
    record = world.status.smoke_test
    assert (record.purpose, record.version, record.attempt) == ("AfterRollback", "v1", 2)
    assert condition(world, ConditionType.ROLLBACK_VERIFIED) == ("True", "SmokeTestPassed")
    assert "proven by its smoke test" in world.event("RollbackVerified").message


def test_a_failing_test_of_the_restored_version_is_a_warning_naming_the_owner() -> None:
    world = smoke_world()
    world.release("v2")
    world.run_until(lambda w: w.status.canary is not None and w.status.canary.ready_at is not None, step=1)
    world.smoke_exit["v1"] = 1
    world.send("abort", id="a")
    world.run_until(lambda w: w.status.smoke_test.phase == "Failed", step=1, limit=60)
    assert world.phase == "Reverted" and world.stable == "v1"
    assert condition(world, ConditionType.ROLLBACK_VERIFIED) == ("False", "SmokeTestFailed")
    event = world.event("RollbackNotVerified")
    assert event.type == "Warning" and OWNER in event.message and "exit code 1" in event.message


def test_a_retried_version_is_tested_again_under_a_new_attempt() -> None:
    world = smoke_world()
    world.smoke_exit["v2"] = 3
    world.release("v2")
    world.run_until(lambda w: w.phase == "Failed", step=1, limit=60)
    world.smoke_exit["v2"] = 0
    world.send("retry", id="r")
    world.run_until(lambda w: w.status.smoke_test.phase == "Passed", step=1, limit=60)
    assert world.job_creates == [("v2", 1), ("v2", 2)]
