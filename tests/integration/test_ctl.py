"""The day-2 commands in-process (`canaria.cli.main`) against the real control plane and the real operator
(a process under least-privilege RBAC): each command's effect on the rollout, its audit trail, and the
one-line errors. No metrics: steps advance on their pause or on a manual promote, which keeps it fast."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaria.cli import main as cli
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for


class Ctl:
    """Runs `canaria ...` in-process as the admin user of the test namespace."""

    def __init__(self, capsys: pytest.CaptureFixture[str], kubeconfig: Path, namespace: str) -> None:
        self.capsys, self.kubeconfig, self.namespace = capsys, kubeconfig, namespace

    def __call__(self, *args: str, kubeconfig: Path | None = None, ns: bool = True) -> tuple[int, str, str]:
        argv = [*args, "--kubeconfig", str(kubeconfig or self.kubeconfig)]
        if ns:
            argv += ["-n", self.namespace]
        self.capsys.readouterr()
        code = cli.main(argv)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str, **kw: Any) -> str:
        code, out, err = self(*args, **kw)
        assert code == 0, f"canaria {' '.join(args)} failed: {err}"
        return out

    def fails(self, *args: str, **kw: Any) -> str:
        code, out, err = self(*args, **kw)
        assert code == 1, f"canaria {' '.join(args)} should fail; out: {out} err: {err}"
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
        return err.strip()


@pytest.fixture
def ctl(capsys: pytest.CaptureFixture[str], control_plane: ControlPlane, namespace: str) -> Ctl:
    return Ctl(capsys, control_plane.kubeconfig, namespace)


def canary_ready(mds: ModelDeployments, name: str, step: int) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = mds.status(name)
        canary = status.get("canary") or {}
        return status if canary.get("step") == step and canary.get("readyAt") else None

    return probe


def history_entry(mds: ModelDeployments, name: str, reason: str) -> dict[str, Any]:
    return [h for h in mds.status(name).get("history", []) if h["reason"] == reason][-1]


def test_promote_pause_resume_rollback_with_status_list_history(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    ctl: Ctl,
) -> None:
    ns = mds.namespace
    start_operator()
    steps = [{"weight": 50, "manual": True}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=2, steps=steps, rollout={"bake": "1h"}))
    mds.wait_phase("fraud", "Healthy", stable="v1", lastKnownGood="v1")

    # errors: nothing in progress, nothing to roll back to, unknown names and versions
    assert ctl.fails("promote", "fraud") == "error: fraud: no rollout in progress (Healthy, serving v1)"
    assert ctl.fails("rollback", "fraud").startswith(
        "error: nothing to roll back to: v1 is the last known good"
    )
    assert ctl.fails("rollback", "fraud", "--to", "v9") == (
        "error: version v9 not in the history of fraud (known: v1)"
    )
    assert ctl.fails("status", "nope") == f"error: modeldeployment nope not found in namespace {ns}"
    assert ctl.fails("history", "nope") == f"error: modeldeployment nope not found in namespace {ns}"

    mds.set_version("fraud", "v2", reason="retrained on January data")
    wait_for("canary v2 ready at step 1", canary_ready(mds, "fraud", 0), timeout=30)

    out = ctl.ok("status", "fraud")
    for needle in (
        "phase Progressing",
        "desired          v2  s3://models/fraud/v2",
        "step 1/2 (weight 50%)",
        "code 1a2b3c4, data snapshot-1, run run-1",
        "analysis: no metrics",
        "next: step 1/2 holds until `canaria promote fraud`; then step 2/2 at weight 100%",
    ):
        assert needle in out, f"{needle!r} not in:\n{out}"
    for role in ("stable", "canary", "lastKnownGood"):
        assert any(line.split()[:1] == [role] for line in out.splitlines()), out
    listed = [line.split() for line in ctl.ok("list").splitlines()]
    assert listed[0] == ["NAME", "PHASE", "DESIRED", "STABLE", "CANARY", "WEIGHT", "AGE"]
    assert listed[1][:7] == ["fraud", "Progressing", "v2", "v1", "v2", "50%", "(1/2)"]
    everywhere = [line.split() for line in ctl.ok("list", "-A", ns=False).splitlines()]
    assert everywhere[0][0] == "NAMESPACE" and [ns, "fraud", "Progressing"] in [r[:3] for r in everywhere]

    # pause / resume, recorded with who and why
    out = ctl.ok("pause", "fraud", "--user", "alice", "--reason", "checking dashboards", "--wait")
    assert "→ paused; phase Paused" in out
    paused = history_entry(mds, "fraud", "Paused")
    assert paused["user"] == "alice" and "checking dashboards" in paused["message"]
    assert "resume it first" in ctl.fails("promote", "fraud")
    assert ctl.fails("pause", "fraud") == "error: fraud: already paused by a command"
    assert "→ resumed; phase Progressing" in ctl.ok("resume", "fraud", "--user", "alice", "--wait")
    assert mds.status("fraud")["phase"] == "Progressing"

    # promote: the manual step advances, then the last step promotes into the bake
    out = ctl.ok("promote", "fraud", "--user", "alice", "--reason", "dashboards green", "--wait")
    assert "promote (command " in out and "→ promote requested" in out
    status = mds.wait_phase("fraud", "Baking", stable="v2", lastKnownGood="v1", timeout=30)
    command = status["lastCommand"]
    assert (command["action"], command["user"], command["reason"]) == ("promote", "alice", "dashboards green")
    advanced = history_entry(mds, "fraud", "StepAdvanced")
    assert advanced["user"] == "alice" and "promoted by alice" in advanced["message"]
    assert "next: baking v2 until" in ctl.ok("status", "fraud")

    # rollback during the bake: the spec goes back to v1, the operator scales v1 back up
    code, out, err = ctl("rollback", "fraud", "--user", "alice", "--reason", "v2 misroutes EU traffic")
    assert code == 0, err
    assert "fraud: spec.model.version v2 → v1 (s3://models/fraud/v1)" in out
    assert "rolling back to v1, the last known good version" in err and "GitOps" in err
    committed = yaml.safe_load(out[out.index("spec:") :])
    assert committed["spec"]["model"]["version"] == "v1"
    assert committed["spec"]["model"]["uri"] == "s3://models/fraud/v1"
    assert committed["spec"]["model"]["lineage"]["codeCommit"] == "1a2b3c4"
    md = mds.get("fraud")
    assert md["spec"]["model"]["version"] == "v1"
    assert md["metadata"]["annotations"]["canaria.dev/change-reason"] == "v2 misroutes EU traffic"
    mds.wait_phase("fraud", "Healthy", stable="v1", lastKnownGood="v1", timeout=30)
    wait_for("replicas back on v1", lambda: mds.replicas("fraud") == {"v1": 2}, timeout=30)
    rolled = history_entry(mds, "fraud", "RolledBack")
    assert rolled["version"] == "v1" and rolled["user"] == "alice"
    assert rolled["changeReason"] == "v2 misroutes EU traffic"
    event = wait_for(
        "a RolledBack Event",
        lambda: next((e for e in mds.events("fraud") if e.reason == "RolledBack"), None),
    )
    assert "rolled back to v1" in event.message and "v2 misroutes EU traffic" in event.message

    # the audit trail, for people and for machines
    out = ctl.ok("history", "fraud")
    for needle in (
        "RolloutStarted",
        "Available",
        "Paused",
        "Resumed",
        "StepAdvanced",
        "Promoted",
        "RolledBack",
    ):
        assert needle in out, f"{needle} not in:\n{out}"
    assert "alice" in out and "v2 misroutes EU traffic" in out and "Baking → Healthy" in out
    trail = yaml.safe_load(ctl.ok("history", "fraud", "-o", "yaml"))
    reasons = [e["reason"] for e in trail]
    assert reasons == [
        "RolloutStarted",
        "Available",
        "RolloutStarted",
        "Paused",
        "Resumed",
        "StepAdvanced",
        "Promoted",
        "RolledBack",
    ]
    assert len({e["seq"] for e in trail}) == len(trail)  # status entries and their Events merged once
    assert {e["source"] for e in trail} <= {"status", "status+event"}
    doc = json.loads(ctl.ok("status", "fraud", "-o", "json"))
    assert doc["phase"] == "Healthy" and doc["status"]["stable"]["version"] == "v1"
    assert doc["next"].startswith("nothing to do: v1 is serving")

    # the next spec change (a GitOps sync of v3, the annotation left as it was) is not explained by the
    # rollback's reason
    mds.set_version("fraud", "v3")
    started = wait_for(
        "v3's rollout in the history",
        lambda: next((h for h in mds.status("fraud").get("history", []) if h.get("version") == "v3"), None),
    )
    assert started["reason"] == "RolloutStarted" and started.get("changeReason") is None, started


def test_abort_retry_and_forbidden(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    ctl: Ctl,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    ns = mds.namespace
    start_operator()
    steps = [{"weight": 25, "pause": "1s"}, {"weight": 50, "manual": True}, {"weight": 100}]
    mds.create(model_deployment("fraud", "v1", replicas=4, steps=steps))
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2", reason="retrained on January data")
    wait_for("canary v2 ready at step 2", canary_ready(mds, "fraud", 1), timeout=30)

    # a user who may read but not patch: status works (namespace from the context), commands do not
    viewer = control_plane.service_account_kubeconfig(
        ns,
        "viewer",
        [{"apiGroups": ["canaria.dev"], "resources": ["modeldeployments"], "verbs": ["get", "list"]}],
        tmp_path / "viewer.kubeconfig",
    )
    assert "step 2/3 (weight 50%)" in ctl.ok("status", "fraud", kubeconfig=viewer, ns=False)
    assert ctl.fails("pause", "fraud", kubeconfig=viewer, ns=False) == (
        f"error: forbidden: you need patch on modeldeployments.canaria.dev in {ns}"
    )

    # abort during step 2: reverted to v1, with who and why
    out = ctl.ok("abort", "fraud", "--user", "bob", "--reason", "p99 latency spike", "--wait")
    assert "→ aborted; phase Reverted" in out
    status = mds.wait_phase("fraud", "Reverted", stable="v1", lastKnownGood="v1")
    assert status["rejected"]["version"] == "v2"
    aborted = history_entry(mds, "fraud", "Aborted")
    assert aborted["user"] == "bob" and "p99 latency spike" in aborted["message"]
    wait_for("replicas back on v1", lambda: mds.replicas("fraud") == {"v1": 4}, timeout=30)
    out = ctl.ok("status", "fraud")
    assert (
        "rejected" in out and "next: reverted: spec still names v2" in out and "`canaria retry fraud`" in out
    )
    assert ctl.fails("resume", "fraud") == "error: fraud: nothing paused (Reverted, serving v1)"
    assert ctl.fails("abort", "fraud") == "error: fraud: no rollout in progress (Reverted, serving v1)"

    # retry (user from the kubeconfig context): the rollout of v2 starts again
    out = ctl.ok("retry", "fraud", "--reason", "feature store fixed", "--wait")
    assert "→ retrying v2" in out
    wait_for("v2 rolling out again", lambda: (mds.status("fraud").get("canary") or {}).get("version") == "v2")
    status = mds.status("fraud")
    assert status["phase"] in ("Progressing", "Paused") and "rejected" not in status
    assert status["lastCommand"]["user"].endswith("@admin")
    restarted = history_entry(mds, "fraud", "RolloutStarted")
    assert "(retry)" in restarted["message"] and restarted["user"].endswith("@admin")
    assert ctl.fails("retry", "fraud") == "error: fraud: nothing rejected (Progressing, serving v1)"
    trail = yaml.safe_load(ctl.ok("history", "fraud", "-o", "yaml"))
    assert [e["reason"] for e in trail][-3:] == ["StepAdvanced", "Aborted", "RolloutStarted"]
    assert trail[-2]["user"] == "bob" and trail[-2]["type"] == "Warning"
