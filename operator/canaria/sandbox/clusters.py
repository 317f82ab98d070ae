"""The sandbox's Kubernetes: a real control plane when one is at hand, else the emulator.

A real kube-apiserver (with etcd, the controller manager and a fake kubelet) behaves as a cluster does for
free: `kubectl explain`, `kubectl create namespace`, CEL and schema validation of every ModelDeployment at
apply time, real Deployments and ReplicaSets. Its binaries come from `$KUBEBUILDER_ASSETS` or from
setup-envtest's cache (`~/.local/share/kubebuilder-envtest/k8s/<version>`). On a machine with neither,
the kmock emulator stands in (`canaria.sandbox.emulator`).

Either way the simulated model servers must learn how many replicas of each version are ready, and which
version a `sandbox.canaria.dev/simulate` annotation makes misbehave: the emulator tells its listeners;
on a real control plane a poller reads the same from the API.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config

from canaria import GROUP, PLURAL, VERSION
from canaria.kube.workloads import MD_LABEL
from canaria.sandbox.controlplane import REQUIRED_BINARIES, ControlPlane, missing_binaries
from canaria.sandbox.controlplane import write_kubeconfig as write_token_kubeconfig
from canaria.sandbox.emulator import DEPLOYMENTS, SERVICES, EmulatorThread
from canaria.sandbox.emulator import write_kubeconfig as write_emulator_kubeconfig
from canaria.sandbox.kubelet import Kubelet

ENVTEST_CACHE = Path("~/.local/share/kubebuilder-envtest/k8s")
CLUSTERS = ("auto", "control-plane", "emulator")
POLL_INTERVAL = 0.25  # seconds between reads of the Deployments' ready replicas (the emulator pushes them)


class Listener(Protocol):
    """What the sandbox's simulated traffic needs to hear about (`runner.Traffic`)."""

    def deployment(self, kind: str, body: dict[str, Any]) -> None: ...
    def service(self, kind: str, body: dict[str, Any]) -> None: ...
    def model(self, body: dict[str, Any]) -> None: ...
    def service_address(self, namespace: str, name: str) -> str | None: ...
    async def run_job(self, job: dict[str, Any]) -> tuple[int, str]: ...


class NoControlPlane(RuntimeError):
    """`--cluster control-plane` was asked for and no control plane binaries were found."""


def find_control_plane(environ: dict[str, str] | None = None) -> Path | None:
    """The folder with etcd, kube-apiserver and kube-controller-manager: `$KUBEBUILDER_ASSETS`, else the
    newest complete version in setup-envtest's cache; None when there is none."""
    env = os.environ if environ is None else environ
    candidates = []
    if env.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(env["KUBEBUILDER_ASSETS"]))
    cache = ENVTEST_CACHE.expanduser()
    if cache.is_dir():
        candidates += sorted((d for d in cache.iterdir() if d.is_dir()), key=_version_key, reverse=True)
    return next((c for c in candidates if not missing_binaries(c, REQUIRED_BINARIES)), None)


def _version_key(path: Path) -> tuple[int, ...]:
    """'1.30.0-linux-amd64' → (1, 30, 0), so 1.30 sorts after 1.9."""
    numbers = path.name.split("-")[0].split(".")
    return tuple(int(n) if n.isdigit() else -1 for n in numbers)


@dataclass(frozen=True)
class SandboxCluster:
    """What the sandbox needs of its Kubernetes: where it is, what it is, and a kubeconfig for it."""

    url: str
    what: str
    write_kubeconfig: Callable[[Path, str], Path]  # (path, namespace) → path
    emulated: bool  # Deployments become ready after the emulator's fixed delay


@contextlib.contextmanager
def control_plane_cluster(assets: Path, work: Path, listener: Listener) -> Iterator[SandboxCluster]:
    """etcd, kube-apiserver and kube-controller-manager from `assets`, a fake kubelet, and a poller that
    reports Deployments and ModelDeployments to the sandbox's listeners."""
    plane = ControlPlane(assets, work / "control-plane")
    with contextlib.ExitStack() as stack:
        stack.callback(plane.stop)
        plane.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        stack.callback(api.close)
        # a Job's Pod (a smoke test) runs as a local process, its Service URLs on the simulated servers
        kubelet = Kubelet(api, run_locally=_owned_by_a_job, resolve_service=listener.service_address)
        stack.callback(kubelet.start().stop)
        stack.callback(_Poller(api, listener).start().stop)

        def kubeconfig(path: Path, namespace: str) -> Path:
            return write_token_kubeconfig(
                path,
                server=plane.server,
                ca_file=plane.ca_file,
                user="admin",
                token=plane.admin_token,
                namespace=namespace,
            )

        yield SandboxCluster(
            plane.server,
            f"kube-apiserver, etcd and kube-controller-manager from {assets}",
            kubeconfig,
            emulated=False,
        )


def _owned_by_a_job(pod: Any) -> bool:
    return any(owner.kind == "Job" for owner in pod.metadata.owner_references or [])


class _Poller:
    """Reads the ready replicas of every Canaria Deployment, the selector of every Canaria Service and
    every ModelDeployment's annotations, and hands changes to the listener, as the emulator's events do."""

    def __init__(self, api: client.ApiClient, listener: Listener):
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.listener = listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canaria-sandbox-poller", daemon=True)

    def start(self) -> _Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        seen: dict[tuple[str, str], Any] = {}
        while not self._stop.wait(POLL_INTERVAL):
            with contextlib.suppress(Exception):  # a stopping control plane: the next round or none
                seen = self._poll(seen)

    def _poll(self, seen: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
        now: dict[tuple[str, str], Any] = {}
        deployments = self.apps.list_deployment_for_all_namespaces(
            label_selector=MD_LABEL, _request_timeout=5
        )
        for item in deployments.items:
            body = self.apps.api_client.sanitize_for_serialization(item)
            key = ("deployment", f"{item.metadata.namespace}/{item.metadata.name}")
            now[key] = ((body.get("status") or {}).get("readyReplicas"), body)
            if key not in seen or seen[key][0] != now[key][0]:
                self.listener.deployment("MODIFIED", body)
        for key, (_, body) in seen.items():
            if key[0] == "deployment" and key not in now:
                self.listener.deployment("DELETED", body)
        services = self.core.list_service_for_all_namespaces(label_selector=MD_LABEL, _request_timeout=5)
        for item in services.items:
            body = self.core.api_client.sanitize_for_serialization(item)
            key = ("service", f"{item.metadata.namespace}/{item.metadata.name}")
            now[key] = ((body.get("spec") or {}).get("selector"), body)
            if key not in seen or seen[key][0] != now[key][0]:
                self.listener.service("MODIFIED", body)
        models = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=5)
        for body in models.get("items") or []:
            meta = body.get("metadata") or {}
            key = ("model", f"{meta.get('namespace')}/{meta.get('name')}")
            now[key] = (meta.get("annotations"), body)
            if key not in seen or seen[key][0] != now[key][0]:
                self.listener.model(body)
        return now


@contextlib.contextmanager
def emulated_cluster(ready_delay: float, listener: Listener) -> Iterator[SandboxCluster]:
    """The kmock emulator, for a machine without control plane binaries."""

    def on_event(kind: str, resource: Any, body: dict[str, Any]) -> None:
        if resource == DEPLOYMENTS:
            listener.deployment(kind, body)
        elif resource == SERVICES:
            listener.service(kind, body)
        elif resource.group == GROUP and resource.plural == PLURAL and kind != "DELETED":
            listener.model(body)

    emulator = EmulatorThread(ready_delay=ready_delay, listeners=[on_event], job_runner=listener.run_job)
    try:
        emulator.start()
        yield SandboxCluster(
            emulator.url,
            "kmock emulator; no cluster, nothing outside 127.0.0.1",
            lambda path, namespace: write_emulator_kubeconfig(path, emulator.url, namespace=namespace),
            emulated=True,
        )
    finally:
        emulator.stop()
