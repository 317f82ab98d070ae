"""Routers: how a traffic split the engine decided becomes objects a data plane follows.

The engine (canaria.core.engine, pure) decides per step the canary's weight, the share of requests mirrored
to it and the headers that send a request to it, and says what must be set (a `SetTraffic` action holding
a `TrafficSplit`). A router turns that into objects and reports back what they hold and what callers
really get (`TrafficObservation`: the split, the effective weight, a problem). Like Argo Rollouts'
`trafficrouting/<router>` and Flagger's `pkg/router`, each router is one module; adding one (Istio
VirtualService, SMI) is a new module here, a field in `spec.rollout.trafficRouting` (core/api.py) and a line
in `router_for`, not an engine change.
"""

from __future__ import annotations

from typing import Protocol

from kubernetes import client

from canaria.core.actions import TrafficSplit
from canaria.core.api import ModelDeployment
from canaria.core.observations import Observations, TrafficObservation


class Router(Protocol):
    #: Whether the split needs a Service per version (`<name>-<version>`) for the router to point at; the
    #: shell applies them before the router references them, and deletes them with the version.
    version_services: bool
    #: What the router reads and writes, as RBAC names it ("httproutes.gateway.networking.k8s.io"), for
    #: messages such as a 403's.
    resource: str
    #: The object it steers ("<namespace>/<target>" in messages): the HTTPRoute's name.
    target: str

    def observe(self, md: ModelDeployment, observations: Observations) -> TrafficObservation:
        """What the router's objects send where now, and anything wrong with them (never raises for a
        missing or refused object: that is a problem to report, not a crash)."""
        ...

    def apply(self, md: ModelDeployment, split: TrafficSplit) -> None:
        """Set the split, touching only the fields the router owns."""
        ...


def router_for(md: ModelDeployment, api: client.ApiClient) -> Router:
    """The router the ModelDeployment's spec names (replica ratio by default)."""
    from canaria.routers.gatewayapi import GatewayAPIRouter
    from canaria.routers.replicas import ReplicaRouter

    routing = md.spec.rollout.routing
    if routing.gateway_api is not None:
        return GatewayAPIRouter(api, routing.gateway_api.http_route)
    return ReplicaRouter()
