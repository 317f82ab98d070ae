"""Traffic routing in the engine: what each router is asked to set, in which order, and what status says.

The replica router is the real one (canaria.routers.replicas, pure); the Gateway API route is played by
the `World` (tests/unit/world.py): SetTraffic changes it at once, and a test can break it (missing, not
accepted, rewritten by someone else). The invariant checked after every decision of every test here: the
route never sends requests (or mirrored copies) to a version without a Deployment with pods, so no step,
revert, abort or promotion strands traffic.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from canaria.cli.render import render_status
from canaria.cli.session import Resource
from canaria.core.actions import Decision, DeleteWorkload, EmitEvent, ScaleWorkload, SetTraffic, TrafficSplit
from canaria.core.api import ModelDeploymentSpec, ModelDeploymentStatus, Rollout
from canaria.core.observations import Observations

from .test_ctl import text
from .world import BAD, World, base_spec, healthy_world

GATEWAY = {"trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}}}
HEADERS = {"headers": [{"name": "x-canary", "value": "true"}]}


def never_strands(world: World, before: ModelDeploymentStatus, obs: Observations, decision: Decision) -> None:
    route = world.route
    if route is None:
        return
    for version in route.versions():
        workload = world.workloads.get(version)
        assert workload is not None and workload.replicas > 0, (
            f"the route sends requests to {version}, which has no pods: {route.describe()}; "
            f"actions {decision.actions}"
        )


def gateway_world(steps: list[dict[str, Any]], **rollout: Any) -> World:
    world = World.create(rollout={**GATEWAY, "steps": steps, "analysis": {"metrics": []}, **rollout})
    world.on_decision = never_strands
    world.run_until(lambda w: w.phase == "Healthy", step=5)
    return world


def at_step(step: int) -> Any:
    return lambda w: w.status.canary is not None and w.status.canary.step == step and w.status.canary.ready_at


def test_replica_routing_reports_the_weight_the_replicas_really_give() -> None:
    world = healthy_world()
    world.release("v2")
    world.run_until(at_step(0), step=5)
    world.tick(1)
    traffic = world.status.traffic
    assert (traffic.router, traffic.weight, traffic.effective_weight) == ("replicas", 10, 25)
    assert traffic.description == "25% (10% asked)"  # one pod of four
    assert not any(isinstance(a, SetTraffic) for d in world.decisions for a in d.actions)


def test_gateway_stages_set_exact_weights_mirror_and_headers_with_their_own_replicas() -> None:
    steps = [
        {"mirror": 100, "manual": True},
        {"match": HEADERS, "manual": True},
        {"weight": 10, "manual": True},
        {"weight": 50, "manual": True},
    ]
    world = gateway_world(steps)
    assert world.route == TrafficSplit("v1")
    world.release("v2")
    seen = []
    for step in range(4):
        world.run_until(at_step(step), step=1)
        seen.append((world.route, world.replicas(), world.status.traffic.description))
        world.send("promote", id=f"p{step}")
    assert seen == [
        (TrafficSplit("v1", "v2", 0, 100), {"v1": 4, "v2": 4}, "0% live, 100% mirrored"),
        (
            TrafficSplit("v1", "v2", 0, None, (("x-canary", "true"),)),
            {"v1": 4, "v2": 1},
            "header-matched only (x-canary: true)",
        ),
        (TrafficSplit("v1", "v2", 10), {"v1": 4, "v2": 1}, "10%"),
        (TrafficSplit("v1", "v2", 50), {"v1": 4, "v2": 2}, "50%"),
    ]
    world.run_until(lambda w: w.phase == "Healthy", step=1)
    assert world.route == TrafficSplit("v1", "v2", 50)  # until v2 serves at full size
    world.run_until(lambda w: w.route == TrafficSplit("v2"), step=1)
    world.tick(1)
    assert world.replicas() == {"v2": 4}
    started = next(h for h in world.status.history if h.reason == "RolloutStarted" and h.version == "v2")
    assert "step 1/4 shadow (100% mirrored)" in started.message


def test_a_step_starts_once_the_route_holds_it() -> None:
    world = gateway_world([{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}])
    world.release("v2")
    world.run_until(lambda w: w.replicas().get("v2") == 1 and w.workloads["v2"].ready_replicas == 1, step=1)
    world.route_problem = ("RouteNotAccepted", "Gateway gw does not accept the HTTPRoute: NotAllowed")
    decision = world.tick(1)
    assert world.status.canary.ready_at is None  # the route is refused: the step never starts...
    warning = next(a for a in decision.actions if isinstance(a, EmitEvent) and a.type == "Warning")
    assert warning.reason == "RouteNotAccepted" and "does not accept" in warning.message
    condition = next(c for c in world.status.conditions if c.type == "TrafficRouted")
    assert (condition.status, condition.reason) == ("False", "RouteNotAccepted")
    world.run(60, step=5)
    assert world.status.canary.step == 0 and world.status.canary.ready_at is None  # ...nor advances
    assert [e.reason for e in world.events].count("RouteNotAccepted") == 1  # one Warning, not one a tick
    world.route_problem = None
    world.run_until(at_step(1), step=5)
    condition = next(c for c in world.status.conditions if c.type == "TrafficRouted")
    assert (condition.status, condition.message) == ("True", "50%")


@pytest.mark.parametrize("how", ["analysis", "abort"])
def test_revert_and_abort_move_the_route_back_before_any_replica_goes(how: str) -> None:
    world = gateway_world([{"weight": 50, "pause": "10m"}, {"weight": 100}])
    world.edit(
        rollout={"analysis": {"metrics": base_spec()["rollout"]["analysis"]["metrics"], "failureLimit": 0}}
    )
    world.release("v2")
    world.run_until(at_step(0), step=1)
    assert world.route == TrafficSplit("v1", "v2", 50)
    if how == "abort":
        world.send("abort")
    else:
        world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=5)
    reverted = world.decisions[-1]
    assert SetTraffic(TrafficSplit("v1")) in reverted.actions
    assert not any(isinstance(a, DeleteWorkload | ScaleWorkload) for a in reverted.actions)
    assert "v2" in world.workloads  # still there while the route was last seen sending it requests
    world.tick(1)
    assert "v2" not in world.workloads and world.route == TrafficSplit("v1")


def test_promotion_moves_all_traffic_before_the_old_version_goes() -> None:
    world = gateway_world([{"weight": 50, "pause": "1m"}])
    world.readiness["v2"] = 30  # the new stable needs time to scale up to full size
    world.release("v2")
    world.run_until(lambda w: w.phase == "Healthy" and w.status.stable.version == "v2", step=5)
    assert world.route == TrafficSplit("v1", "v2", 50)  # v2 is not full yet: the split is kept
    world.run_until(lambda w: w.route == TrafficSplit("v2"), step=5)
    assert world.workloads["v1"].replicas == 4  # moved first...
    world.tick(1)
    assert "v1" not in world.workloads  # ...then the old version goes


def test_a_route_changed_by_another_writer_is_set_again_and_the_step_restarts() -> None:
    world = gateway_world([{"weight": 10, "pause": "10m"}, {"weight": 100}])
    world.release("v2")
    world.run_until(at_step(0), step=5)
    world.run(120, step=30)
    world.route, world.route_writer = TrafficSplit("v1"), "kubectl-client-side-apply"
    decision = world.tick(1)
    assert SetTraffic(TrafficSplit("v1", "v2", 10)) in decision.actions
    warning = next(a for a in decision.actions if isinstance(a, EmitEvent) and a.reason == "RouteChanged")
    assert "changed by kubectl-client-side-apply" in warning.message
    assert warning.type == "Warning" and "owner: fraud-team@example.com" in warning.message
    assert world.status.canary.ready_at is None  # 2 minutes of the pause do not count: traffic went elsewhere
    world.tick(1)
    assert world.status.canary.ready_at == world.now


def test_a_missing_route_never_promotes() -> None:
    world = World.create(rollout={**GATEWAY, "steps": [{"weight": 50}], "analysis": {"metrics": []}})
    world.route_problem = ("RouteNotFound", "HTTPRoute fraud not found in ml")
    world.run_until(lambda w: w.phase == "Healthy", step=5)  # a first deployment needs no route
    world.release("v2")
    world.run(9 * 60, step=10)
    assert world.phase == "Progressing" and world.status.stable.version == "v1"
    assert world.reasons().count("RouteNotFound") == 1
    world.run_until(lambda w: w.phase == "Reverted", step=10)  # past the progress deadline, as any step
    assert world.status.rejected.reason == "ProgressDeadlineExceeded"


def test_shadow_and_header_steps_need_a_router_that_routes_requests() -> None:
    with pytest.raises(ValidationError, match=r"mirror and match steps need trafficRouting\.gatewayAPI"):
        Rollout.model_validate({"steps": [{"mirror": 100}, {"weight": 50}]})
    with pytest.raises(ValidationError, match="exactly one of weight, mirror or match"):
        Rollout.model_validate({**GATEWAY, "steps": [{"mirror": 100, "weight": 10}]})
    with pytest.raises(ValidationError, match="not an HTTP header name"):
        Rollout.model_validate(
            {**GATEWAY, "steps": [{"match": {"headers": [{"name": "x canary", "value": "1"}]}}]}
        )
    spec = ModelDeploymentSpec.model_validate(
        base_spec(rollout={**GATEWAY, "steps": [{"mirror": 20}, {"weight": 30}, {"weight": 60}]})
    )
    assert [s.live_weight for s in spec.rollout.steps] == [0, 30, 60]


def test_canaria_status_shows_what_callers_get_from_either_router() -> None:
    """`canaria status` on statuses the engine produced: the replica ratio's rounding, a shadow stage."""
    world = healthy_world()
    world.release("v2")
    world.run_until(at_step(0), step=5)
    world.tick(1)
    out = text(render_status(Resource(world.body()), world.now))
    assert "traffic (replicas): 25% (10% asked) on v2" in out
    world = gateway_world([{"mirror": 100, "manual": True}, {"weight": 50}])
    world.release("v2")
    world.run_until(at_step(0), step=1)
    out = text(render_status(Resource(world.body()), world.now))
    assert "traffic (gatewayAPI): 0% live, 100% mirrored on v2" in out
    assert "then step 2/2 at weight 50%" in out
