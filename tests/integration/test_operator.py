"""The real operator against a real kube-apiserver, controller manager and garbage collector."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.kube.cluster import Cluster
from canaria.kube.rbac import rules as rbac_rules
from canaria.kube.reconciler import Reconciler, Settings
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for


def test_first_deployment_becomes_healthy(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
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
    # outside a canary the Service selects the stable version alone (a version kept warm takes no traffic)
    assert service.spec.selector == {"canaria.dev/model-deployment": "fraud", "canaria.dev/version": "v1"}
    assert [h["reason"] for h in status["history"]] == ["RolloutStarted", "Available"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert status["observedGeneration"] == 1
    wait_for(
        "Events RolloutStarted and Available", lambda: mds.reasons("fraud") == ["RolloutStarted", "Available"]
    )
    started = mds.events("fraud")[0]
    assert "initial release" in started.message and started.reporting_component == "canaria"


def _healthy_v1(mds: ModelDeployments, name: str = "fraud", **kwargs: object) -> None:
    mds.create(model_deployment(name, "v1", **kwargs))
    mds.wait_phase(name, "Healthy", stable="v1")


def test_new_version_walks_the_steps_with_the_right_replicas(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    steps = [{"weight": 25, "pause": "3s"}, {"weight": 50, "pause": "3s"}, {"weight": 100}]
    _healthy_v1(mds, replicas=4, steps=steps)
    mds.set_version("fraud", "v2", reason="retrained on January data")

    def at_step(step: int, expected: dict[str, int]) -> bool:
        canary = mds.status("fraud").get("canary") or {}
        return canary.get("step") == step and canary.get("readyAt") and mds.replicas("fraud") == expected

    wait_for(
        "step 1: 1 of 4 replicas on v2", lambda: at_step(0, {"v1": 3, "v2": 1}), timeout=30, interval=0.1
    )
    wait_for(
        "step 2: 2 of 4 replicas on v2", lambda: at_step(1, {"v1": 2, "v2": 2}), timeout=30, interval=0.1
    )
    status = mds.wait_phase("fraud", "Healthy", stable="v2", lastKnownGood="v2")
    wait_for("v1's Deployment removed", lambda: mds.replicas("fraud") == {"v2": 4})
    reasons = [h["reason"] for h in status["history"]]
    assert reasons == [
        "RolloutStarted",
        "Available",
        "RolloutStarted",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    assert status["history"][2]["changeReason"] == "retrained on January data"
    assert status["stable"]["lineage"]["codeCommit"] == "1a2b3c4"
    events = wait_for("six Events", lambda: (lambda e: e if len(e) == 6 else None)(mds.events("fraud")))
    assert [e.reason for e in events] == reasons
    assert "v1 → v2" in events[2].message and "January data" in events[2].message
    assert "v1 → v2 promoted" in events[-1].message


def test_replica_change_is_applied_without_a_rollout(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    _healthy_v1(mds, replicas=2)
    mds.patch("fraud", {"spec": {"replicas": 5}})
    wait_for("v1 scaled to 5", lambda: mds.replicas("fraud") == {"v1": 5})
    status = wait_for(
        "observedGeneration 2", lambda: (s := mds.status("fraud")).get("observedGeneration") == 2 and s
    )
    assert status["phase"] == "Healthy" and "canary" not in status
    assert [h["reason"] for h in status["history"]] == ["RolloutStarted", "Available"]


def test_canary_that_never_becomes_ready_is_reverted_after_its_deadline(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    _healthy_v1(mds, replicas=2, progress_deadline="4s")
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v2"
    mds.set_version("fraud", "v2")
    status = mds.wait_phase("fraud", "Reverted", stable="v1", timeout=40)
    assert status["rejected"]["version"] == "v2"
    assert status["rejected"]["reason"] == "ProgressDeadlineExceeded"
    wait_for("v2 removed, v1 back at 2", lambda: mds.replicas("fraud") == {"v1": 2})
    warning = wait_for(
        "a RolledBack Warning", lambda: [e for e in mds.events("fraud") if e.reason == "RolledBack"]
    )[0]
    assert (
        warning.type == "Warning"
        and "not ready" in warning.message
        and "ml-team@example.com" in warning.message
    )


def test_deleting_the_model_deployment_removes_what_it_owns(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    _healthy_v1(mds)
    mds.custom.delete_namespaced_custom_object(GROUP, VERSION, mds.namespace, PLURAL, "fraud")
    wait_for("Deployments garbage-collected", lambda: mds.replicas("fraud") == {}, timeout=60)

    def service_gone() -> bool:
        try:
            mds.core.read_namespaced_service("fraud", mds.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("Service garbage-collected", service_gone, timeout=60)


def test_operator_killed_mid_rollout_resumes_at_the_same_step_without_repeating_events(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    operator = start_operator()
    steps = [{"weight": 50, "pause": "4s"}, {"weight": 100}]
    _healthy_v1(mds, replicas=2, steps=steps)
    mds.set_version("fraud", "v2")
    wait_for("canary ready at step 1", lambda: (mds.status("fraud").get("canary") or {}).get("readyAt"))
    operator.kill()
    before = mds.status("fraud")
    assert before["canary"]["step"] == 0 and before["phase"] == "Progressing"
    start_operator()
    status = mds.wait_phase("fraud", "Healthy", stable="v2", timeout=60)
    reasons = [h["reason"] for h in status["history"]]
    assert reasons == ["RolloutStarted", "Available", "RolloutStarted", "StepAdvanced", "Promoted"]
    assert [h["seq"] for h in status["history"]] == [1, 2, 3, 4, 5]
    events = wait_for("five Events", lambda: (lambda e: e if len(e) >= 5 else None)(mds.events("fraud")))
    assert [e.reason for e in events] == reasons, "an Event was repeated or lost across the restart"


def test_stale_write_is_retried_not_lost(
    mds: ModelDeployments, control_plane: ControlPlane, kubelet: Kubelet, tmp_path: Path
) -> None:
    """A change landing between the operator's read and its status write is a real 409; the reconcile
    is redone from a fresh read and nothing is lost."""
    mds.create(model_deployment("fraud", "v1"))
    api = control_plane.api_client()
    cluster = Cluster(api)
    interfered: list[int] = []
    real_write = cluster.write_status

    def write_after_interference(body: dict, status: dict) -> dict:
        if not interfered:
            mds.patch("fraud", {"metadata": {"annotations": {"touched": "yes"}}, "spec": {"replicas": 3}})
            interfered.append(1)
        return real_write(body, status)

    cluster.write_status = write_after_interference  # type: ignore[method-assign]
    decision = Reconciler(cluster, Settings()).reconcile(mds.namespace, "fraud")
    assert interfered and decision is not None
    status = mds.status("fraud")
    assert status["phase"] == "Progressing" and status["observedGeneration"] == 2
    assert mds.replicas("fraud") == {"v1": 3}, "the second read saw replicas: 3"
    assert [h["reason"] for h in status["history"]] == ["RolloutStarted"]
    api.close()


def test_operator_restricted_to_one_namespace_ignores_the_others(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    admin_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(admin_api)
    other = f"{mds.namespace}-other"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        others = ModelDeployments(admin_api, other)
        others.create(model_deployment("ignored", "v1"))
        start_operator()
        _healthy_v1(mds)
        time.sleep(1.0)  # the watched one is done; give the other every chance to be (wrongly) touched
        assert others.status("ignored") == {}
        assert others.replicas("ignored") == {}
    finally:
        core.delete_namespace(other, propagation_policy="Background")


def test_a_missing_permission_is_reported_by_name(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    without_events = [r for r in rbac_rules() if r["resources"] != ["events"] or r["apiGroups"] != [""]]
    operator = start_operator(rules=without_events)
    mds.create(model_deployment("fraud", "v1"))
    wait_for(
        "a 403 naming the permission in the operator's log",
        lambda: "forbidden to create events in " + mds.namespace in operator.log_tail(400),
        timeout=30,
    )
    assert "the operator's RBAC needs it" in operator.log_tail(400)


def test_stable_keeps_its_image_while_a_canary_with_a_new_image_is_tried_and_reverted(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    _healthy_v1(mds, replicas=2, progress_deadline="4s")

    def image(version: str) -> str:
        deployment = mds.apps.read_namespaced_deployment(f"fraud-{version}", mds.namespace)
        return deployment.spec.template.spec.containers[0].image

    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v2"
    containers = [
        {"name": "server", "image": "example.com/model-server:2.0", "ports": [{"containerPort": 8080}]}
    ]
    mds.patch(
        "fraud",
        {
            "spec": {
                "model": {"version": "v2", "uri": "s3://models/fraud/v2"},
                "template": {"spec": {"containers": containers}},
            }
        },
    )
    wait_for("v2's Deployment", lambda: "v2" in mds.replicas("fraud"))
    assert image("v2") == "example.com/model-server:2.0"
    assert image("v1") == "example.com/model-server:1.0", "the canary's image reached the stable version"
    mds.wait_phase("fraud", "Reverted", stable="v1", timeout=40)
    wait_for("v1 back at 2 replicas", lambda: mds.replicas("fraud") == {"v1": 2})
    assert image("v1") == "example.com/model-server:1.0"
