"""The real operator against a real kube-apiserver, controller manager and garbage collector."""

from __future__ import annotations

from collections.abc import Callable

from .harness import ModelDeployments, OperatorProcess, model_deployment, wait_for
from .kubelet import TestKubelet


def test_first_deployment_becomes_healthy(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: TestKubelet
) -> None:
    start_operator()
    mds.create(model_deployment("fraud", "v1", replicas=3))
    status = mds.wait_phase("fraud", "Healthy", stable="v1", lastKnownGood="v1")
    assert mds.replicas("fraud") == {"v1": 3}
    deployment = mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace)
    assert deployment.status.ready_replicas == 3
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MODEL_URI"] == "s3://models/fraud/v1" and env["MODEL_VERSION"] == "v1"
    assert deployment.metadata.owner_references[0].kind == "ModelDeployment"
    service = mds.core.read_namespaced_service("fraud", mds.namespace)
    assert service.spec.selector == {"canaria.dev/model-deployment": "fraud"}
    assert [h["reason"] for h in status["history"]] == ["RolloutStarted", "Available"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert status["observedGeneration"] == 1
    wait_for(
        "Events RolloutStarted and Available", lambda: mds.reasons("fraud") == ["RolloutStarted", "Available"]
    )
    started = mds.events("fraud")[0]
    assert "initial release" in started.message and started.reporting_component == "canaria"
