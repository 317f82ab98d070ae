"""What GitOps pipelines read, on the real control plane with the real operator: `kubectl wait` on the
Ready and Stalled conditions, and observedGeneration through every phase, a restart included.

`kubectl wait` is the real kubectl against the real API server, so its own rules apply: it ignores a
condition whose observedGeneration is older than metadata.generation, which is what keeps a pipeline that
applies v2 and waits at once from reading v1's Ready.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for

RELEASE_CONDITIONS = ("Ready", "Reconciling", "Stalled")


def kubectl_wait(
    kubectl_bin: str, control_plane: ControlPlane, namespace: str, condition: str, timeout: str
) -> subprocess.Popen[str]:
    """`kubectl wait --for=condition=<condition> md/fraud`, started in the background."""
    return subprocess.Popen(
        [
            kubectl_bin,
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--namespace",
            namespace,
            "wait",
            f"--for=condition={condition}",
            "md/fraud",
            f"--timeout={timeout}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def release(md: dict[str, Any]) -> tuple[str, str]:
    """(the one True condition of Ready / Reconciling / Stalled, its reason), after checking that every
    condition and the status describe the resource's current generation."""
    status, generation = md.get("status") or {}, md["metadata"]["generation"]
    assert status.get("observedGeneration") == generation, status
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    assert {c["observedGeneration"] for c in conditions.values()} == {generation}, conditions
    true = [t for t in RELEASE_CONDITIONS if conditions[t]["status"] == "True"]
    assert len(true) == 1, conditions
    return true[0], conditions[true[0]]["reason"]


def settled(mds: ModelDeployments, expected: tuple[str, str], timeout: float = 45) -> dict[str, Any]:
    """Wait until the operator acted on the current generation and reports `expected`."""

    def probe() -> dict[str, Any] | None:
        md = mds.get("fraud")
        status = md.get("status") or {}
        if status.get("observedGeneration") != md["metadata"]["generation"]:
            return None
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if any(c.get("observedGeneration") != md["metadata"]["generation"] for c in conditions.values()):
            return None
        return md if release(md) == expected else None

    return wait_for(f"fraud {expected} for its generation", probe, timeout=timeout, interval=0.1)


def test_kubectl_wait_ready_returns_only_once_the_new_version_is_promoted(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    kubectl_bin: str,
    control_plane: ControlPlane,
) -> None:
    start_operator()
    steps = [{"weight": 50, "pause": "3s"}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=2, steps=steps))
    settled(mds, ("Ready", "Serving"))
    mds.set_version("fraud", "v2")
    waiting = kubectl_wait(kubectl_bin, control_plane, mds.namespace, "Ready", "60s")  # as a pipeline does
    code, output = finished(waiting)
    status = mds.status("fraud")
    assert code == 0, output
    assert (status["phase"], status["stable"]["version"]) == ("Healthy", "v2"), output
    assert [h["reason"] for h in status["history"]][-2:] == ["StepAdvanced", "Promoted"]
    assert mds.replicas("fraud") == {"v2": 2}


def test_kubectl_wait_fails_fast_on_a_reverted_version(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    kubectl_bin: str,
    control_plane: ControlPlane,
) -> None:
    """A pipeline waits for Stalled and Ready together: Stalled returns when v2 is reverted, Ready never
    does (it times out, it does not succeed on v1 serving again)."""
    start_operator()
    mds.create(model_deployment("fraud", "v1", replicas=2, progress_deadline="4s"))
    settled(mds, ("Ready", "Serving"))
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v2"
    mds.set_version("fraud", "v2")
    started = time.monotonic()
    ready = kubectl_wait(kubectl_bin, control_plane, mds.namespace, "Ready", "15s")
    stalled = kubectl_wait(kubectl_bin, control_plane, mds.namespace, "Stalled", "60s")
    code, output = finished(stalled)
    assert code == 0, output
    assert time.monotonic() - started < 30
    md = mds.get("fraud")
    assert release(md) == ("Stalled", "Reverted")
    assert md["status"]["phase"] == "Reverted" and md["status"]["stable"]["version"] == "v1"
    code, output = finished(ready)
    assert code != 0 and "timed out" in output, output
    available = next(c for c in md["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True", "v1 serves again: dashboards still see the model answering"


def test_conditions_and_observed_generation_through_every_phase_and_a_restart(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    operator = start_operator()
    steps = [{"weight": 50, "pause": "2s"}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=2, steps=steps, rollout={"bake": "3s"}))
    settled(mds, ("Ready", "Serving"))
    mds.patch("fraud", {"spec": {"paused": True}})  # generation 2: nothing to hold, still Ready
    settled(mds, ("Ready", "Serving"))
    mds.set_version("fraud", "v2")  # generation 3: starts held
    settled(mds, ("Reconciling", "Paused"))
    mds.patch("fraud", {"spec": {"paused": False}})  # generation 4
    settled(mds, ("Reconciling", "Progressing"))
    operator.kill()
    mds.patch("fraud", {"spec": {"replicas": 4}})  # generation 5, while nobody is watching
    stale = mds.get("fraud")
    assert stale["metadata"]["generation"] == 5 and stale["status"]["observedGeneration"] == 4
    assert {c["observedGeneration"] for c in stale["status"]["conditions"]} == {4}
    start_operator()
    md = wait_for(
        "the restarted operator to act on generation 5",
        lambda: (m := mds.get("fraud"))["status"]["observedGeneration"] == 5 and m,
    )
    assert release(md)[0] == "Reconciling"
    settled(mds, ("Reconciling", "Baking"))
    md = settled(mds, ("Ready", "Serving"))
    assert md["status"]["phase"] == "Healthy" and md["status"]["stable"]["version"] == "v2"
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v3"
    mds.patch("fraud", {"spec": {"rollout": {"progressDeadline": "3s"}}})  # generation 6
    settled(mds, ("Ready", "Serving"))
    mds.set_version("fraud", "v3")  # generation 7
    md = settled(mds, ("Stalled", "Reverted"))
    assert "v3 was reverted (ProgressDeadlineExceeded)" in next(
        c["message"] for c in md["status"]["conditions"] if c["type"] == "Stalled"
    )
    mds.set_version("fraud", "v2")  # generation 8: a person names the serving version again
    md = settled(mds, ("Ready", "Serving"))
    assert md["metadata"]["generation"] == 8
