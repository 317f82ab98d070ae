"""What GitOps pipelines read, on the real control plane with the real operator: `kubectl wait` on the
Ready and Stalled conditions, observedGeneration through every phase (a restart included), the deploy step
docs/install.md shows, and Argo CD's health check and actions (manifests/argocd, in a real Lua) on the
objects as the API server returns them.

`kubectl wait` is the real kubectl against the real API server, so its own rules apply: it ignores a
condition whose observedGeneration is older than metadata.generation, which is what keeps a pipeline that
applies v2 and waits at once from reading v1's Ready.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from canaria.core.commands import COMMAND_ANNOTATION
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess
from tests.argocd import ArgoCD, kstatus

from .harness import ModelDeployments, model_deployment, wait_for

RELEASE_CONDITIONS = ("Ready", "Reconciling", "Stalled")
DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"
#: what Argo CD and kstatus must say for each (true condition, reason)
TOOLS = {
    "Ready": ("Healthy", "Current"),
    "Stalled": ("Degraded", "Failed"),
    "Reconciling": ("Progressing", "InProgress"),
}
ARGOCD = ArgoCD()


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


def settled(mds: ModelDeployments, expected: tuple[str, str], timeout: float = 90) -> dict[str, Any]:
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

    md = wait_for(f"fraud {expected} for its generation", probe, timeout=timeout, interval=0.1)
    health, flux = TOOLS[expected[0]]
    if expected == ("Reconciling", "Paused"):
        health = "Suspended"
    assert (ARGOCD.health(md)["status"], kstatus(md)) == (health, flux)
    return md


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
    ready = kubectl_wait(kubectl_bin, control_plane, mds.namespace, "Ready", "10s")
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
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    kubectl_bin: str,
    control_plane: ControlPlane,
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
    # Reconciling is True, but for generation 4: kubectl, Argo CD and kstatus all wait for the operator
    code, output = finished(kubectl_wait(kubectl_bin, control_plane, mds.namespace, "Reconciling", "2s"))
    assert code != 0 and "timed out" in output, output
    assert ARGOCD.health(stale) == {
        "status": "Progressing",
        "message": "Waiting for Canaria to act on generation 5",
    }
    assert kstatus(stale) == "InProgress"
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


def documented_deploy_step() -> str:
    """The deploy step of docs/install.md, as written."""
    text = DOC.read_text()
    after = text[text.index("<!-- tested by tests/integration/test_gitops.py -->") :]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "no sh block after the marker"
    return match.group(1)


def test_the_documented_deploy_step_passes_a_release_and_fails_a_revert(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    kubectl_bin: str,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    start_operator()
    body = model_deployment("fraud", "v1", replicas=2, progress_deadline="4s")
    mds.create(body)
    settled(mds, ("Ready", "Serving"))
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(control_plane.kubeconfig, kubeconfig)
    subprocess.run(
        [
            kubectl_bin,
            "--kubeconfig",
            str(kubeconfig),
            "config",
            "set-context",
            "--current",
            f"--namespace={mds.namespace}",
        ],
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{Path(kubectl_bin).parent}:{os.environ['PATH']}",
    }
    step = documented_deploy_step()

    def deploy(version: str) -> subprocess.CompletedProcess[str]:
        manifest = model_deployment("fraud", version, replicas=2, progress_deadline="4s")
        manifest.update(apiVersion="canaria.dev/v1alpha1", kind="ModelDeployment")
        (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(manifest))
        return subprocess.run(
            ["bash", "-e", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    done = deploy("v2")
    assert done.returncode == 0, done.stdout + done.stderr
    status = mds.status("fraud")
    assert (status["phase"], status["stable"]["version"]) == ("Healthy", "v2")
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v3"
    done = deploy("v3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "v3 was reverted (ProgressDeadlineExceeded)" in done.stdout
    assert mds.status("fraud")["stable"]["version"] == "v2"


def test_an_argocd_action_is_carried_out_by_the_operator(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    """The promote action offered on a canary waiting at a manual step, applied as Argo CD applies it (a
    patch of the annotations the action set), ends the step: v2 is promoted and the audit trail says by
    whom."""
    start_operator()
    steps = [{"weight": 50, "manual": True}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=2, steps=steps))
    settled(mds, ("Ready", "Serving"))
    mds.set_version("fraud", "v2")
    md = wait_for(
        "v2 ready at its manual step",
        lambda: (m := mds.get("fraud"))["status"].get("canary", {}).get("readyAt") and m,
    )
    assert ARGOCD.enabled_actions(md) == {"promote", "promote-full", "pause", "abort"}, md["status"]
    acted = ARGOCD.act("promote", md)
    mds.patch(
        "fraud",
        {
            "metadata": {
                "annotations": {COMMAND_ANNOTATION: acted["metadata"]["annotations"][COMMAND_ANNOTATION]}
            }
        },
    )
    md = settled(mds, ("Ready", "Serving"))
    status = md["status"]
    assert status["stable"]["version"] == "v2" and status["lastCommand"]["user"] == "argocd", status
    assert ("StepAdvanced", "argocd") in [(h["reason"], h.get("user")) for h in status["history"]], status
