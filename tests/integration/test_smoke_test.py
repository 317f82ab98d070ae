"""Smoke tests with the real operator, the real Job controller and a real test process.

The smoke Job's Pod carries the label that makes the test kubelet run its command as a local process:
`smoke_check.py` GETs TARGET_URL (the version's own Service, which the kubelet maps to the simulated model
server) and exits by the drift the version reports. The Job controller completes or fails the Job from the
Pod's phase; nothing about the outcome is mocked.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from canaria.core.commands import COMMAND_ANNOTATION, new_command
from canaria.sandbox.kubelet import RUN_LABEL, Kubelet
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator

from .harness import ModelDeployments, Sampler, model_deployment, wait_for

SCRIPT = Path(__file__).with_name("smoke_check.py")
VERSION_LABEL = "canaria.dev/version"


def smoke_test(max_psi: float = 0.2, hold: float = 0.0) -> dict[str, Any]:
    command = [sys.executable, str(SCRIPT), str(max_psi), str(hold)]
    template = {
        "metadata": {"labels": {RUN_LABEL: "local"}},
        "spec": {"containers": [{"name": "smoke", "image": "example.com/smoke:1", "command": command}]},
    }
    return {"template": template, "timeout": "60s", "cleanupAfter": "10m"}


@pytest.fixture
def server(kubelet: Kubelet, namespace: str) -> Iterator[ModelServerSimulator]:
    """The simulated model server, reachable from a local test process as every version's Service."""
    with ModelServerSimulator("fraud") as simulator:
        for version in ("v1", "v2", "v3"):
            simulator.set_version(version, psi=0.05)
            kubelet.services[(namespace, f"fraud-{version}")] = simulator.target
        yield simulator


def jobs(mds: ModelDeployments, version: str) -> list[Any]:
    return (
        client.BatchV1Api(mds.core.api_client)
        .list_namespaced_job(mds.namespace, label_selector=f"{VERSION_LABEL}={version}")
        .items
    )


def test_a_failing_smoke_test_refuses_before_traffic_a_passing_one_proceeds_even_across_a_restart(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    server: ModelServerSimulator,
) -> None:
    operator = start_operator()
    steps = [{"weight": 50, "pause": "1s"}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=2, steps=steps, rollout={"smokeTest": smoke_test()}))
    mds.wait_phase("fraud", "Healthy", stable="v1")

    server.set_version("v2", psi=0.5)

    def selected() -> str | None:
        return mds.core.read_namespaced_service("fraud", mds.namespace).spec.selector.get(VERSION_LABEL)

    with Sampler(selected) as sampler:
        mds.set_version("fraud", "v2")
        status = mds.wait_phase("fraud", "Failed", timeout=60)
    assert set(sampler.values) == {"v1"}, f"the Service selected {set(sampler.values)} while v2 was tested"
    assert status["stable"]["version"] == "v1" and status["rejected"]["reason"] == "SmokeTestFailed"
    record = status["smokeTest"]
    assert (record["purpose"], record["phase"], record["exitCode"]) == ("BeforeTraffic", "Failed", 3)
    assert "v2 prediction psi 0.5 (max 0.2)" in record["log"]
    assert record["job"] == f"fraud-v2-smoke-{record['attempt']}"
    refused = next(e for e in mds.events("fraud") if e.reason == "SmokeTestFailed")
    assert refused.type == "Warning" and "ml-team@example.com" in refused.message
    assert "exit code 3" in refused.message and "psi 0.5" in refused.message
    (job,) = jobs(mds, "v2")
    assert job.spec.active_deadline_seconds == 60 and job.spec.ttl_seconds_after_finished == 600
    assert job.metadata.owner_references[0].kind == "ModelDeployment"
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["TARGET_URL"] == f"http://fraud-v2.{mds.namespace}.svc:80" and env["MODEL_VERSION"] == "v2"
    wait_for("v2 scaled away", lambda: mds.replicas("fraud") == {"v1": 2})

    # v3 passes, slowly: the operator is killed while its Job runs and resumes without a second Job
    mds.patch("fraud", {"spec": {"rollout": {"smokeTest": smoke_test(hold=3)}}})
    mds.set_version("fraud", "v3")
    wait_for(
        "v3's smoke test running",
        lambda: (mds.status("fraud").get("smokeTest") or {}).get("version") == "v3" and jobs(mds, "v3"),
    )
    operator.kill()
    start_operator()
    status = mds.wait_phase("fraud", "Healthy", stable="v3", lastKnownGood="v3", timeout=60)
    assert len(jobs(mds, "v3")) == 1
    assert sum(name.startswith("fraud-v3-smoke-") for name in kubelet.started) == 1
    assert status["smokeTest"]["phase"] == "Passed" and "v3 prediction psi 0.05" in status["smokeTest"]["log"]
    reasons = mds.reasons("fraud")
    assert reasons.index("SmokeTestPassed") < reasons.index("StepAdvanced", reasons.index("SmokeTestPassed"))


def test_after_a_forced_revert_the_restored_version_is_proven_by_its_smoke_test(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    server: ModelServerSimulator,
) -> None:
    start_operator()
    body = model_deployment(
        "fraud", "v1", replicas=2, steps=[{"weight": 100}], rollout={"smokeTest": smoke_test(), "bake": "1h"}
    )
    mds.create(body)
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2")
    mds.wait_phase("fraud", "Baking", stable="v2")
    command = new_command("abort", user="alice", reason="forced revert")
    mds.patch("fraud", {"metadata": {"annotations": {COMMAND_ANNOTATION: command.to_annotation()}}})
    mds.wait_phase("fraud", "Reverted", stable="v1")

    def verified() -> dict[str, Any] | None:
        status = mds.status("fraud")
        record = status.get("smokeTest") or {}
        return status if (record.get("purpose"), record.get("phase")) == ("AfterRollback", "Passed") else None

    status = wait_for("the rollback proven", verified, timeout=60)
    assert status["smokeTest"]["version"] == "v1" and "v1 prediction psi 0.05" in status["smokeTest"]["log"]
    condition = next(c for c in status["conditions"] if c["type"] == "RollbackVerified")
    assert (condition["status"], condition["reason"]) == ("True", "SmokeTestPassed")
    wait_for("a RollbackVerified Event", lambda: "RollbackVerified" in mds.reasons("fraud"))
    assert len(jobs(mds, "v1")) == 1
