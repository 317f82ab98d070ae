"""`canaria release-note` on a rollout the real operator carried out (its status, not a hand-built one)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment


def _release_note(
    control_plane: ControlPlane, namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    canaria = Path(sys.executable).with_name("canaria")
    return subprocess.run(
        [str(canaria), "release-note", *args, "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_release_note_of_a_promoted_version(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    control_plane: ControlPlane,
) -> None:
    start_operator()
    body = model_deployment("fraud", "v1", steps=[{"weight": 50, "pause": "1s"}, {"weight": 100}])
    body["spec"]["model"]["evaluation"] = {"auc": 0.93}
    body["spec"]["gates"] = [{"metric": "auc", "min": 0.9}]
    mds.create(body)
    mds.wait_phase("fraud", "Healthy", stable="v1")
    first = _release_note(control_plane, mds.namespace, "fraud", "-o", "json")
    as_json = json.loads(first.stdout)
    assert as_json["modelId"] == "fraud-v1" and as_json["outcome"] == "first deployment, serving"
    assert as_json["lineage"]["codeCommit"] == "1a2b3c4" and as_json["rollbackCommand"] is None
    mds.set_version("fraud", "v2", reason="retrained on January data", evaluation={"auc": 0.95})
    mds.wait_phase("fraud", "Healthy", stable="v2")

    done = _release_note(control_plane, mds.namespace, "fraud")
    assert done.returncode == 0, done.stderr
    note = done.stdout
    assert note.startswith("## Release note: fraud-v2")
    assert "auc 0.95 (+0.02 vs v1)" in note
    assert "| **Why** | retrained on January data |" in note
    assert f"`canaria rollback fraud -n {mds.namespace} --to v1`" in note
    assert "| **Rollout** | promoted in " in note

    missing = _release_note(control_plane, mds.namespace, "fraud", "--version", "v9")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "v9" in missing.stderr
