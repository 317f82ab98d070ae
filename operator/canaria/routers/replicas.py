"""The replica-ratio router: one Service over every version, so the canary's share of callers is its share
of ready replicas. Nothing to set beyond the Deployments' sizes (which the engine decides); it reports the
weight that ratio really gives, e.g. 25% when one of four replicas serves a 10% step."""

from __future__ import annotations

from canaria.core.actions import TrafficSplit
from canaria.core.api import ModelDeployment
from canaria.core.observations import Observations, TrafficObservation


class ReplicaRouter:
    version_services = False
    resource = "deployments.apps"
    target = "*"  # every Deployment of the model

    def observe(self, md: ModelDeployment, observations: Observations) -> TrafficObservation:
        status = md.status
        if status.stable is None:
            return TrafficObservation()
        ready = {v: w.ready_replicas for v, w in observations.workloads.items()}
        canary = status.canary.version if status.canary is not None else None
        serving = sum(ready.values())
        effective = round(100 * ready.get(canary, 0) / serving) if canary and serving else None
        return TrafficObservation(effective_weight=effective)

    def apply(self, md: ModelDeployment, split: TrafficSplit) -> None:
        """Nothing to do: the replicas are the split."""
