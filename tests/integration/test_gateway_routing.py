"""Gateway API routing on the real API server: an HTTPRoute CRD (tests/integration/gatewayapi.py), a route
the user owns, and the real operator setting its weights, mirror and header rule through every stage.

Every stage is a manual step, so the test checks what the route holds at each one, then promotes. At each
check the user's fields (parentRefs, hostnames, the rule's matches and filters, the other rule) are
unchanged, and managedFields shows who owns what: the user keeps parentRefs and hostnames, Canaria owns the
rules list (atomic in the Gateway API, see canaria.routers.gatewayapi)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from canaria.core.commands import COMMAND_ANNOTATION, new_command
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator, VersionServer

from .gatewayapi import USER, Routes
from .harness import REPO, ModelDeployments, load_example, model_deployment, wait_for
from .testgateway import NginxGateway

ROUTE = "fraud-route"
HEADER = {"name": "x-canary", "value": "true"}
DOCS_RULE = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
    "backendRefs": [{"group": "", "kind": "Service", "name": "docs", "port": 80, "weight": 1}],
}
USER_FILTER = {
    "type": "RequestHeaderModifier",
    "requestHeaderModifier": {"set": [{"name": "x-team", "value": "risk"}]},
}
PREDICT = [{"path": {"type": "PathPrefix", "value": "/predict"}}]


def user_route(service: str = "fraud") -> dict[str, Any]:
    """The route as its owner writes it: one rule to the model's Service, one to something else."""
    return {
        "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway"}],
        "hostnames": ["fraud.example.com"],
        "rules": [
            {"matches": PREDICT, "filters": [USER_FILTER], "backendRefs": [{"name": service, "port": 80}]},
            DOCS_RULE,
        ],
    }


@pytest.fixture
def routes(httproute_crd: str, admin_api: client.ApiClient, namespace: str) -> Iterator[Routes]:
    yield Routes(admin_api, namespace)


def ref(version: str, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": f"fraud-{version}", "port": 80, "weight": weight}


def command(mds: ModelDeployments, action: str) -> None:
    annotation = new_command(action, user="alice", reason="checked the stage").to_annotation()
    mds.patch("fraud", {"metadata": {"annotations": {COMMAND_ANNOTATION: annotation}}})


def routed(mds: ModelDeployments, step: int | None, **traffic: Any) -> Callable[[], dict[str, Any] | None]:
    """A probe: the canary is ready at `step` (None: no canary) and status.traffic holds `traffic`."""

    def probe() -> dict[str, Any] | None:
        status = mds.status("fraud")
        canary = status.get("canary")
        if (step is None and canary is not None) or (
            step is not None and (canary is None or canary.get("step") != step or not canary.get("readyAt"))
        ):
            return None
        condition = next((c for c in status.get("conditions") or [] if c["type"] == "TrafficRouted"), None)
        if condition is None or condition["status"] != "True":
            return None
        got = status.get("traffic") or {}
        return status if all(got.get(k) == v for k, v in traffic.items()) else None

    return probe


def assert_user_fields_kept(routes: Routes, rules: list[dict[str, Any]]) -> None:
    route = routes.get(ROUTE)
    spec = route["spec"]
    assert spec["parentRefs"] == user_route()["parentRefs"]
    assert spec["hostnames"] == ["fraud.example.com"]
    assert spec["rules"] == rules
    owners = routes.owners(ROUTE)
    assert {"parentRefs", "hostnames"} <= owners[USER]
    assert "rules" in owners["canaria"] and "rules" not in owners[USER]
    assert not owners["canaria"] - {"rules"}, "Canaria owns nothing but the rules"


def model_rule(backend_refs: list[dict[str, Any]], *extra_filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
        "filters": [USER_FILTER, *extra_filters],
        "backendRefs": backend_refs,
    }


def gateway_md(**extra: Any) -> dict[str, Any]:
    steps = [
        {"mirror": 100, "manual": True},
        {"match": {"headers": [HEADER]}, "manual": True},
        {"weight": 10, "manual": True},
        {"weight": 50, "manual": True},
    ]
    return model_deployment(
        "fraud",
        "v1",
        replicas=4,
        steps=steps,
        rollout={"trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}}},
        **extra,
    )


def test_every_stage_sets_the_route_and_leaves_the_users_fields(
    mds: ModelDeployments,
    routes: Routes,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    routes.apply(ROUTE, user_route())
    start_operator()
    mds.create(gateway_md())
    mds.wait_phase("fraud", "Healthy", stable="v1")
    wait_for("the route on v1", routed(mds, None, stable="v1", canary=None))
    assert_user_fields_kept(routes, [model_rule([ref("v1", 100)]), DOCS_RULE])
    service = mds.core.read_namespaced_service("fraud-v1", mds.namespace)
    assert service.spec.selector == {"canaria.dev/model-deployment": "fraud", "canaria.dev/version": "v1"}
    assert service.metadata.owner_references[0].kind == "ModelDeployment"

    mds.set_version("fraud", "v2")
    status = wait_for("the shadow stage", routed(mds, 0, mirror=100, weight=0))
    assert status["traffic"]["description"] == "0% live, 100% mirrored"
    mirror = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "fraud-v2", "port": 80}},
    }
    assert_user_fields_kept(routes, [model_rule([ref("v1", 100)], mirror), DOCS_RULE])
    assert mds.replicas("fraud") == {"v1": 4, "v2": 4}  # a full copy of the requests: a full share

    command(mds, "promote")
    wait_for("the header-matched stage", routed(mds, 1, weight=0, match=[HEADER]))
    header_rule = {
        "matches": [
            {"path": {"type": "PathPrefix", "value": "/predict"}, "headers": [{"type": "Exact", **HEADER}]}
        ],
        "filters": [USER_FILTER],
        "backendRefs": [ref("v2", 100)],
    }
    assert_user_fields_kept(routes, [model_rule([ref("v1", 100)]), header_rule, DOCS_RULE])
    assert mds.replicas("fraud") == {"v1": 4, "v2": 1}

    command(mds, "promote")
    status = wait_for("10% on the canary", routed(mds, 2, weight=10, effectiveWeight=10))
    assert status["traffic"]["description"] == "10%"  # exact: one replica of four is not 25% here
    assert_user_fields_kept(routes, [model_rule([ref("v1", 90), ref("v2", 10)]), DOCS_RULE])
    assert mds.replicas("fraud") == {"v1": 4, "v2": 1}

    command(mds, "promote")
    wait_for("50% on the canary", routed(mds, 3, weight=50, effectiveWeight=50))
    assert_user_fields_kept(routes, [model_rule([ref("v1", 50), ref("v2", 50)]), DOCS_RULE])
    assert mds.replicas("fraud") == {"v1": 4, "v2": 2}  # the stable version stays full until promotion

    command(mds, "promote")
    mds.wait_phase("fraud", "Healthy", stable="v2")
    wait_for("v1 gone", lambda: mds.replicas("fraud") == {"v2": 4})
    assert_user_fields_kept(routes, [model_rule([ref("v2", 100)]), DOCS_RULE])
    wait_for("v1's Service gone", lambda: "fraud-v1" not in services(mds))


def services(mds: ModelDeployments) -> set[str]:
    return {s.metadata.name for s in mds.core.list_namespaced_service(mds.namespace).items}


def traffic_condition(mds: ModelDeployments) -> dict[str, Any]:
    status = mds.status("fraud")
    return next((c for c in status.get("conditions") or [] if c["type"] == "TrafficRouted"), {})


def test_abort_puts_the_route_back_on_stable_and_the_canary_goes(
    mds: ModelDeployments,
    routes: Routes,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    routes.apply(ROUTE, user_route())
    start_operator()
    mds.create(gateway_md())
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2")
    wait_for("the shadow stage", routed(mds, 0, mirror=100))
    command(mds, "promote")
    wait_for("the header stage", routed(mds, 1, match=[HEADER]))
    command(mds, "abort")
    mds.wait_phase("fraud", "Reverted", stable="v1")
    assert_user_fields_kept(routes, [model_rule([ref("v1", 100)]), DOCS_RULE])
    wait_for("v2 gone", lambda: mds.replicas("fraud") == {"v1": 4})
    wait_for("v2's Service gone", lambda: "fraud-v2" not in services(mds))
    assert "Aborted" in mds.reasons("fraud")


def test_a_missing_changed_or_refused_route_is_reported_and_never_promotes(
    mds: ModelDeployments,
    routes: Routes,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    start_operator()
    mds.create(gateway_md())
    mds.wait_phase("fraud", "Healthy", stable="v1")  # a first deployment needs no route
    wait_for("RouteNotFound", lambda: traffic_condition(mds).get("reason") == "RouteNotFound")
    assert f"HTTPRoute {ROUTE} not found" in traffic_condition(mds)["message"]
    mds.set_version("fraud", "v2")
    wait_for("the canary's pods", lambda: mds.replicas("fraud") == {"v1": 4, "v2": 4})
    canary = wait_for("the canary in status", lambda: mds.status("fraud").get("canary"))
    assert canary.get("readyAt") is None  # no route: the stage never starts

    routes.apply(ROUTE, user_route())
    wait_for("the shadow stage", routed(mds, 0, mirror=100))

    routes.apply(ROUTE, user_route())  # its owner applies the route as written: weights and mirror go
    wait_for("RouteChanged", lambda: "RouteChanged" in mds.reasons("fraud"))
    warning = next(e for e in mds.events("fraud") if e.reason == "RouteChanged")
    assert warning.type == "Warning" and f"changed by {USER}" in warning.message
    wait_for("the shadow stage again", routed(mds, 0, mirror=100))  # set again; the stage starts afresh

    routes.set_accepted(ROUTE, False, "listener http does not allow routes from this namespace")
    wait_for("RouteNotAccepted", lambda: traffic_condition(mds).get("reason") == "RouteNotAccepted")
    assert "does not allow routes" in traffic_condition(mds)["message"]
    command(mds, "promote")
    wait_for(
        "the command handled", lambda: mds.status("fraud").get("lastCommand", {}).get("action") == "promote"
    )
    time.sleep(2)  # a negative: several reconciles (every 0.5-2 s while a stage waits) and no step advanced
    status = mds.status("fraud")
    assert status["canary"]["step"] == 0 and status["phase"] == "Progressing"  # refused: never advances
    routes.set_accepted(ROUTE, True)
    wait_for("the header stage", routed(mds, 1, match=[HEADER]))
    assert "RouteNotAccepted" in mds.reasons("fraud") and "RouteNotFound" in mds.reasons("fraud")


# ------------------------------------------------------------------------------------- a real data plane


@pytest.fixture
def dataplane(
    admin_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[tuple[NginxGateway, dict[str, VersionServer]]]:
    """nginx (Debian's) configured from the route by the test gateway, in front of a simulated model
    server per version; every process stopped after the test."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed: .ci/run installs Debian's nginx-light")
    with ModelServerSimulator("fraud", requests_per_second=0) as simulator:
        servers = {v: simulator.serve(v) for v in ("v1", "v2")}
        backends = {f"fraud-{v}": server.port for v, server in servers.items()}
        try:
            with NginxGateway(admin_api, namespace, ROUTE, backends, tmp_path / "nginx") as gateway:
                yield gateway, servers
        finally:
            for server in servers.values():
                server.stop()


def received(servers: dict[str, VersionServer]) -> dict[str, int]:
    return {v: s.received for v, s in servers.items()}


def test_requests_through_nginx_follow_every_stage_and_none_reach_the_canary_after_abort(
    mds: ModelDeployments,
    routes: Routes,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    dataplane: tuple[NginxGateway, dict[str, VersionServer]],
) -> None:
    gateway, servers = dataplane
    routes.apply(ROUTE, user_route())
    start_operator()
    mds.create(gateway_md())
    mds.wait_phase("fraud", "Healthy", stable="v1")
    wait_for("the route on v1", routed(mds, None, stable="v1"))
    routes.set_accepted(ROUTE, True)  # the gateway accepts the route, as its controller would say
    gateway.sync()
    assert gateway.send(100) == {"v1": 100}

    mds.set_version("fraud", "v2")
    wait_for("the shadow stage", routed(mds, 0, mirror=100))
    gateway.sync()
    before = received(servers)
    assert gateway.send(200) == {"v1": 200}, "callers get only stable's answers"
    wait_for("every request mirrored to v2", lambda: received(servers)["v2"] - before["v2"] == 200)

    command(mds, "promote")
    wait_for("the header stage", routed(mds, 1, match=[HEADER]))
    gateway.sync()
    assert gateway.send(100) == {"v1": 100}
    assert gateway.send(50, headers={"x-canary": "true"}) == {"v2": 50}

    command(mds, "promote")
    wait_for("10% on the canary", routed(mds, 2, weight=10))
    gateway.sync()
    answers = gateway.send(1000)
    assert 80 <= answers.get("v2", 0) <= 120, f"10% asked, got {answers}"

    command(mds, "abort")
    mds.wait_phase("fraud", "Reverted", stable="v1")
    wait_for("the route back on v1", routed(mds, None, stable="v1", canary=None))
    gateway.sync()
    before = received(servers)
    assert gateway.send(300) == {"v1": 300}
    assert received(servers)["v2"] == before["v2"], "after the abort no request reaches the canary"


def test_example_04_is_applied_and_routed(
    mds: ModelDeployments,
    routes: Routes,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    """manifests/examples/04-gateway-api-ready.yaml as a user applies it: the route, then the
    ModelDeployment; its first version is served through per-version weights, the user's fields kept."""
    route, md = load_example(REPO / "manifests" / "examples" / "04-gateway-api-ready.yaml")
    assert (route["kind"], md["kind"]) == ("HTTPRoute", "ModelDeployment")
    routes.apply(route["metadata"]["name"], route["spec"])
    start_operator()
    mds.create(md)
    name, version = md["metadata"]["name"], md["spec"]["model"]["version"]
    mds.wait_phase(name, "Healthy", timeout=90, stable=version)
    applied = wait_for(
        "the route on the first version",
        lambda: (
            (r := routes.get("ranking"))["spec"]["rules"][0]["backendRefs"][0]["name"] == f"{name}-{version}"
            and r
        ),
    )
    assert applied["spec"]["hostnames"] == route["spec"]["hostnames"]
    assert applied["spec"]["rules"][0]["matches"] == route["spec"]["rules"][0]["matches"]
    assert applied["spec"]["rules"][0]["backendRefs"][0]["weight"] == 100
