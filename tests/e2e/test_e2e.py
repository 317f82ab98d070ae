"""The operator scenarios against a real cluster: real kubelets pull a real image and run real probes.

Runs only with ``CANARIA_E2E_KUBECONFIG`` set (see docs/e2e.md); the operator is ``canaria run`` as a
subprocess watching one fresh namespace per test. No Prometheus is assumed in the cluster, so the rollouts
here are gated by readiness and pauses; the Prometheus analysis is covered end to end by
tests/integration/test_rollout_analysis.py.

Timeouts are generous: the first test may wait for the image pull on every node.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.sandbox.processes import OperatorProcess
from tests.integration.harness import ModelDeployments, model_deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAME = "fraud"
OWNER = "ml-team@example.com"
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.39"
MISSING_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:0.0.0-canaria-e2e-does-not-exist"
PULL = 300.0  # seconds: first readiness, including an image pull
SETTLE = 180.0  # seconds: later transitions (pods of a pulled image start in seconds)


def server_template(image: str = IMAGE) -> dict[str, Any]:
    """A small real HTTP server (agnhost netexec) with a readiness probe, standing in for a model server."""
    return {
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "args": ["netexec", "--http-port=8080"],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": 8080},
                        "periodSeconds": 2,
                        "failureThreshold": 1,
                    },
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        }
    }


def body(version: str = "v1", **kwargs: Any) -> dict[str, Any]:
    md = model_deployment(NAME, version, **kwargs)
    md["spec"]["template"] = server_template()
    md["spec"]["service"] = {"port": 80, "targetPort": 8080}
    return md


def reasons(status: dict[str, Any]) -> list[str]:
    return [h["reason"] for h in status["history"]]


def ready_replicas(mds: ModelDeployments) -> dict[str, int]:
    items = mds.apps.list_namespaced_deployment(
        mds.namespace, label_selector=f"canaria.dev/model-deployment={NAME}"
    ).items
    return {d.metadata.labels["canaria.dev/version"]: d.status.ready_replicas or 0 for d in items}


def serving_v1(mds: ModelDeployments, **kwargs: Any) -> dict[str, Any]:
    mds.create(body("v1", **kwargs))
    return mds.wait_phase(NAME, "Healthy", stable="v1", lastKnownGood="v1", timeout=PULL)


def test_first_deployment_becomes_healthy(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    e2e_operator()
    status = serving_v1(mds, replicas=2)
    assert reasons(status) == ["RolloutStarted", "Available"]
    assert ready_replicas(mds) == {"v1": 2}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    deployment = mds.apps.read_namespaced_deployment(f"{NAME}-v1", mds.namespace)
    assert deployment.metadata.owner_references[0].kind == "ModelDeployment"
    pods = mds.core.list_namespaced_pod(mds.namespace, label_selector="canaria.dev/version=v1").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    env = {e.name: e.value for e in pods[0].spec.containers[0].env}
    assert env["MODEL_VERSION"] == "v1" and env["MODEL_URI"] == f"s3://models/{NAME}/v1"

    service = mds.core.read_namespaced_service(NAME, mds.namespace)
    assert service.spec.selector == {"canaria.dev/model-deployment": NAME}
    endpoints = wait_for(
        "the Service's endpoints to list both Pods",
        lambda: (lambda e: e if e.subsets and sum(len(s.addresses or []) for s in e.subsets) == 2 else None)(
            mds.core.read_namespaced_endpoints(NAME, mds.namespace)
        ),
        timeout=60,
    )
    assert endpoints.subsets[0].ports[0].port == 8080
    wait_for(
        "Events RolloutStarted and Available",
        lambda: mds.reasons(NAME) == ["RolloutStarted", "Available"],
        timeout=30,
    )


def test_new_version_walks_the_steps_and_is_promoted(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    e2e_operator()
    steps = [{"weight": 50, "pause": "5s"}, {"weight": 100}]
    serving_v1(mds, replicas=2, steps=steps)
    mds.set_version(NAME, "v2", reason="retrained on January data")

    def at_first_step() -> bool:
        canary = mds.status(NAME).get("canary") or {}
        return (
            canary.get("step") == 0
            and bool(canary.get("readyAt"))
            and mds.replicas(NAME)
            == {
                "v1": 1,
                "v2": 1,
            }
        )

    wait_for("step 1: one replica of each version", at_first_step, timeout=SETTLE, interval=0.5)
    assert ready_replicas(mds)["v2"] == 1
    status = mds.wait_phase(NAME, "Healthy", stable="v2", lastKnownGood="v2", timeout=SETTLE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "StepAdvanced", "Promoted"]
    assert status["history"][2]["changeReason"] == "retrained on January data"
    wait_for("v1 removed, v2 serving 2", lambda: ready_replicas(mds) == {"v2": 2}, timeout=SETTLE)
    events = wait_for(
        "five Events", lambda: (lambda e: e if len(e) >= 5 else None)(mds.events(NAME)), timeout=30
    )
    assert [e.reason for e in events] == reasons(status)
    assert "v1 → v2 promoted" in events[-1].message


def test_canary_that_never_becomes_ready_is_reverted_after_its_deadline(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    e2e_operator()
    serving_v1(mds, replicas=2, progress_deadline="30s")
    template = server_template(MISSING_IMAGE)
    mds.patch(
        NAME,
        {
            "spec": {
                "model": {"version": "v2", "uri": f"s3://models/{NAME}/v2"},
                "template": template,
            }
        },
    )
    status = mds.wait_phase(NAME, "Reverted", stable="v1", timeout=SETTLE)
    assert status["rejected"]["version"] == "v2"
    assert status["rejected"]["reason"] == "ProgressDeadlineExceeded"
    assert reasons(status)[-1] == "RolledBack"
    assert "Promoted" not in reasons(status)
    wait_for("v2 removed, v1 back at 2", lambda: mds.replicas(NAME) == {"v1": 2}, timeout=SETTLE)
    assert ready_replicas(mds)["v1"] == 2, "v1 kept serving throughout"
    warning = wait_for(
        "a RolledBack Warning",
        lambda: [e for e in mds.events(NAME) if e.reason == "RolledBack"],
        timeout=30,
    )[0]
    assert warning.type == "Warning" and "not ready" in warning.message and OWNER in warning.message


def test_stable_version_keeps_its_own_image_while_a_canary_with_a_new_image_rolls_out(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    e2e_operator()
    serving_v1(mds, replicas=2, steps=[{"weight": 50, "manual": True}, {"weight": 100}])
    template = copy.deepcopy(server_template())
    template["spec"]["containers"][0]["args"] = ["netexec", "--http-port=8080", "--udp-port=8081"]
    mds.patch(
        NAME, {"spec": {"model": {"version": "v2", "uri": f"s3://models/{NAME}/v2"}, "template": template}}
    )
    wait_for(
        "the canary ready at step 1",
        lambda: (mds.status(NAME).get("canary") or {}).get("readyAt"),
        timeout=SETTLE,
    )
    stable = mds.apps.read_namespaced_deployment(f"{NAME}-v1", mds.namespace)
    assert stable.spec.template.spec.containers[0].args == ["netexec", "--http-port=8080"]


def test_deleting_the_model_deployment_removes_what_it_owns(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    e2e_operator()
    serving_v1(mds, replicas=1)
    mds.custom.delete_namespaced_custom_object(GROUP, VERSION, mds.namespace, PLURAL, NAME)

    def gone() -> bool:
        try:
            mds.get(NAME)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for("the ModelDeployment gone (finalizer released)", gone, timeout=SETTLE)
    wait_for("Deployments garbage-collected", lambda: mds.replicas(NAME) == {}, timeout=SETTLE)
    wait_for(
        "Pods gone",
        lambda: (
            not mds.core.list_namespaced_pod(
                mds.namespace, label_selector=f"canaria.dev/model-deployment={NAME}"
            ).items
        ),
        timeout=SETTLE,
    )

    def service_gone() -> bool:
        try:
            mds.core.read_namespaced_service(NAME, mds.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("Service garbage-collected", service_gone, timeout=SETTLE)


def test_operator_killed_mid_rollout_resumes_at_the_same_step(
    e2e_mds: ModelDeployments, e2e_operator: Callable[[], OperatorProcess]
) -> None:
    mds = e2e_mds
    operator = e2e_operator()
    steps = [{"weight": 50, "pause": "10s"}, {"weight": 100}]
    serving_v1(mds, replicas=2, steps=steps)
    mds.set_version(NAME, "v2")
    wait_for(
        "canary ready at step 1",
        lambda: (mds.status(NAME).get("canary") or {}).get("readyAt"),
        timeout=SETTLE,
        interval=0.5,
    )
    operator.kill()
    before = mds.status(NAME)
    assert before["canary"]["step"] == 0 and before["phase"] == "Progressing"
    assert ready_replicas(mds) == {"v1": 1, "v2": 1}, "the split holds while no operator runs"
    e2e_operator()
    status = mds.wait_phase(NAME, "Healthy", stable="v2", timeout=SETTLE)
    assert reasons(status) == ["RolloutStarted", "Available", "RolloutStarted", "StepAdvanced", "Promoted"]
    assert [h["seq"] for h in status["history"]] == [1, 2, 3, 4, 5]
    events = wait_for(
        "five Events", lambda: (lambda e: e if len(e) >= 5 else None)(mds.events(NAME)), timeout=30
    )
    assert [e.reason for e in events] == reasons(status), "an Event was repeated or lost across the restart"
