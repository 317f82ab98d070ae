"""How long until a revert has restored service? Warm (the previous version kept ready) vs cold (at zero).

On the real control plane (`../shared/envtest`: kube-apiserver, etcd, kube-controller-manager with its
Deployment, ReplicaSet and EndpointSlice controllers), the test kubelet of the integration tier and the
real operator (`canaria run`), a ModelDeployment of 4 replicas promotes v2 into a 10-minute bake and is
then aborted (`canaria.dev/command` abort, as `canaria abort` sends it). Time-to-restored runs from the
moment the engine decided the revert (the `Aborted` history entry's time) to the first moment the
Service's EndpointSlices hold exactly the previous version's 4 Pods, all ready, and nothing else: all
traffic on the previous version.

- warm: `keepPrevious: {for: 30m}` (the bake keeps v1 ready at 4 replicas with no traffic): the revert
  changes the Service's selector.
- cold: `keepPrevious: {for: 30m, replicas: 0}` (v1 at zero during the bake, as before): the revert scales
  v1 up and waits for its Pods.

The test kubelet starts a Pod in one poll (0.1 s here) with no image pull, no process start and no
readiness probe, so the cold figure is a floor: a real model server loading its weights adds seconds to
minutes to it, and nothing to the warm one.

Usage: KUBEBUILDER_ASSETS=/work/shared/envtest/bin python benchmarks/restore.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the integration tier's control plane, kubelet and helpers

from kubernetes import client  # noqa: E402
from tests.integration.harness import ModelDeployments, install_crd, model_deployment, wait_for  # noqa: E402

from canaria.core.commands import COMMAND_ANNOTATION, new_command  # noqa: E402
from canaria.kube.rbac import rules as rbac_rules  # noqa: E402
from canaria.sandbox.controlplane import ControlPlane  # noqa: E402
from canaria.sandbox.kubelet import Kubelet  # noqa: E402
from canaria.sandbox.processes import OperatorProcess  # noqa: E402

NAME, REPLICAS = "fraud", 4
VERSION_LABEL = "canaria.dev/version"


def new_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(
        f"ServiceAccount default in {name}",
        lambda: any(s.metadata.name == "default" for s in core.list_namespaced_service_account(name).items),
    )


def one_revert(mds: ModelDeployments, version: str, warm: bool) -> float:
    """Promote `version` into the bake, abort, and time the restore (seconds)."""
    mds.set_version(NAME, version)
    mds.wait_phase(NAME, "Baking", stable=version)
    if warm:
        wait_for("v1 warm and ready", lambda: mds.replicas(NAME).get("v1") == REPLICAS, timeout=60)
        wait_for(
            "v1 Pods ready",
            lambda: (
                mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace).status.ready_replicas
                == REPLICAS
            ),
        )
    wait_for(f"traffic on {version}", lambda: mds.serving(NAME) == {version: REPLICAS}, timeout=60)
    command = new_command("abort", user="benchmark", reason="time-to-restored")
    mds.patch(NAME, {"metadata": {"annotations": {COMMAND_ANNOTATION: command.to_annotation()}}})
    restored = wait_for(
        "all traffic on v1", lambda: time.time() if mds.serving(NAME) == {"v1": REPLICAS} else None, 60, 0.01
    )
    status = mds.wait_phase(NAME, "Reverted", stable="v1")
    decided = next(h for h in reversed(status["history"]) if h["reason"] == "Aborted")["time"]
    seconds = restored - datetime.fromisoformat(decided).timestamp()
    mds.set_version(NAME, "v1")  # the spec back on v1 (Reconciled), ready for the next run
    mds.wait_phase(NAME, "Healthy", stable="v1")
    wait_for("v1 alone", lambda: mds.replicas(NAME) == {"v1": REPLICAS}, timeout=60)
    return seconds


def measure(cp: ControlPlane, api: Any, work: Path, *, warm: bool, runs: int) -> list[float]:
    namespace = f"bench-{'warm' if warm else 'cold'}"
    new_namespace(client.CoreV1Api(api), namespace)
    kubeconfig = cp.service_account_kubeconfig(
        namespace, "canaria", rbac_rules(), work / f"{namespace}.kubeconfig"
    )
    operator = OperatorProcess(kubeconfig, work / f"{namespace}.log", namespaces=[namespace]).start()
    try:
        mds = ModelDeployments(api, namespace)
        keep: dict[str, Any] = {"for": "30m"} if warm else {"for": "30m", "replicas": 0}
        body = model_deployment(
            NAME,
            "v1",
            replicas=REPLICAS,
            steps=[{"weight": 100}],
            rollout={"bake": "10m", "keepPrevious": keep},
        )
        mds.create(body)
        mds.wait_phase(NAME, "Healthy", stable="v1")
        return [one_revert(mds, f"v{run + 2}", warm) for run in range(runs)]
    finally:
        operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="reverts per mode")
    args = parser.parse_args()
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        print("KUBEBUILDER_ASSETS is not set: point it at ../shared/envtest/bin", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with ControlPlane(assets, work / "cp") as cp:
            api = cp.api_client()
            install_crd(api)
            with Kubelet(cp.api_client(), interval=0.1):
                figures = {
                    mode: measure(cp, api, work, warm=mode == "warm", runs=args.runs)
                    for mode in ("warm", "cold")
                }
    print(
        f"time-to-restored after a revert decided during the bake, {REPLICAS} replicas, "
        f"{args.runs} runs each:"
    )
    for mode, seconds in figures.items():
        print(
            f"  {mode:4}: median {statistics.median(seconds) * 1000:7.0f} ms   "
            f"max {max(seconds) * 1000:7.0f} ms   ({', '.join(f'{s * 1000:.0f}' for s in seconds)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
