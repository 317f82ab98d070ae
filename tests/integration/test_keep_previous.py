"""keepPrevious with the real operator: a rollback within the window moves traffic, not pods.

"Traffic" is what the real control plane says: the EndpointSlices the endpoint-slice controller builds for
the model's Service. "No pod start" is the previous Deployment's readyReplicas, sampled all along, never
dropping, and its Pods being the very same ones (same UIDs) before and after.
"""

from __future__ import annotations

from collections.abc import Callable

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, Sampler, absent, model_deployment, wait_for

VERSION_LABEL = "canaria.dev/version"


def pod_uids(mds: ModelDeployments, version: str) -> set[str]:
    pods = mds.core.list_namespaced_pod(mds.namespace, label_selector=f"{VERSION_LABEL}={version}").items
    return {p.metadata.uid for p in pods if p.metadata.deletion_timestamp is None}


def test_rollback_within_the_window_moves_traffic_with_no_pod_start_and_after_the_window_it_is_gone(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    body = model_deployment("fraud", "v1", replicas=2, steps=[{"weight": 100}])
    body["spec"]["rollout"]["keepPrevious"] = {"for": "10m"}
    mds.create(body)
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2")
    status = mds.wait_phase("fraud", "Healthy", stable="v2", lastKnownGood="v2")
    assert status["warm"]["version"] == "v1" and status["warm"]["replicas"] == 2
    assert "until" in status["warm"]

    # v1 is ready at full size and gets no traffic
    wait_for("v1 warm: 2 ready", lambda: mds.replicas("fraud") == {"v1": 2, "v2": 2} and pod_uids(mds, "v1"))
    wait_for(
        "v1 Deployment ready",
        lambda: mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace).status.ready_replicas == 2,
    )
    wait_for("traffic on v2 alone", lambda: mds.serving("fraud") == {"v2": 2})
    warm_pods = pod_uids(mds, "v1")
    assert len(warm_pods) == 2

    def v1_ready() -> int:
        return (
            mds.apps.read_namespaced_deployment_status("fraud-v1", mds.namespace).status.ready_replicas or 0
        )

    with Sampler(v1_ready) as sampler:
        mds.set_version("fraud", "v1")
        status = mds.wait_phase("fraud", "Healthy", stable="v1", lastKnownGood="v1")
        wait_for("traffic on v1 alone", lambda: mds.serving("fraud") == {"v1": 2}, interval=0.05)
    assert sampler.values and min(sampler.values) == 2, f"v1's readyReplicas dropped: {sampler.values}"
    assert pod_uids(mds, "v1") == warm_pods, "v1's Pods were replaced"
    rolled_back = status["history"][-1]
    assert rolled_back["reason"] == "RolledBack" and "kept warm" in rolled_back["message"]
    assert "warm" not in status
    wait_for("v2 scaled away", lambda: mds.replicas("fraud") == {"v1": 2})

    # a window of a few seconds: past it the previous version is scaled away
    mds.patch("fraud", {"spec": {"rollout": {"keepPrevious": {"for": "3s", "replicas": 1}}}})
    mds.set_version("fraud", "v3")
    status = mds.wait_phase("fraud", "Healthy", stable="v3", lastKnownGood="v3")
    assert status["warm"]["version"] == "v1" and status["warm"]["replicas"] == 1
    wait_for(
        "v1 gone after the window",
        lambda: (
            absent(lambda: mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace))
            and "warm" not in mds.status("fraud")
        ),
        timeout=30,
    )
    wait_for("Event PreviousReleased", lambda: "PreviousReleased" in mds.reasons("fraud"))
    assert mds.serving("fraud") == {"v3": 2}
