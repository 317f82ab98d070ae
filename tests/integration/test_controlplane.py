"""Smoke tests of the integration harness itself: the real controllers + the test kubelet + RBAC.

If these fail, every operator integration test would fail for reasons unrelated to Canaria.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaria.sandbox.controlplane import ControlPlane, ControlPlaneError
from canaria.sandbox.kubelet import NODE_NAME, Kubelet

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def deployment(name: str, version: str, replicas: int = 3) -> dict[str, Any]:
    labels = {"app": name, "canaria.dev/version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": f"registry.invalid/model:{version}"}]},
            },
        },
    }


def ready_replicas(apps: client.AppsV1Api, namespace: str, name: str) -> int:
    return apps.read_namespaced_deployment_status(name, namespace).status.ready_replicas or 0


def pods(core: client.CoreV1Api, namespace: str, app: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector=f"app={app}").items


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_deployment_becomes_ready(admin_api: client.ApiClient, kubelet: Kubelet, namespace: str) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    apps.create_namespaced_deployment(namespace, deployment("web", "v1"))

    wait_for(lambda: ready_replicas(apps, namespace, "web") == 3, "readyReplicas == 3")

    live = pods(core, namespace, "web")
    assert len(live) == 3
    for pod in live:
        assert pod.spec.node_name == NODE_NAME
        assert pod.status.phase == "Running"
        assert pod.status.container_statuses[0].ready
        assert pod.status.container_statuses[0].image == "registry.invalid/model:v1"


def test_scaled_down_pods_are_deleted(admin_api: client.ApiClient, kubelet: Kubelet, namespace: str) -> None:
    """Graceful deletion needs a kubelet to finish it; without that, Pods would stay Terminating."""
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    apps.create_namespaced_deployment(namespace, deployment("web", "v1"))
    wait_for(lambda: ready_replicas(apps, namespace, "web") == 3, "readyReplicas == 3")

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})

    wait_for(lambda: len(pods(core, namespace, "web")) == 1, "scaled-down Pods to be gone")
    wait_for(lambda: ready_replicas(apps, namespace, "web") == 1, "readyReplicas == 1")


def test_never_ready_pods_run_but_stay_unready(
    admin_api: client.ApiClient, kubelet: Kubelet, namespace: str
) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v2"
    apps.create_namespaced_deployment(namespace, deployment("stable", "v1"))
    apps.create_namespaced_deployment(namespace, deployment("canary", "v2"))

    # Control: the same kubelet makes v1 Ready, so a 0 below is the predicate, not a stalled harness.
    wait_for(lambda: ready_replicas(apps, namespace, "stable") == 3, "stable readyReplicas == 3")
    wait_for(
        lambda: [p.status.phase for p in pods(core, namespace, "canary")] == ["Running"] * 3,
        "3 canary Pods Running",
    )
    wait_for(
        lambda: apps.read_namespaced_deployment_status("canary", namespace).status.replicas == 3,
        "the Deployment controller to observe the canary Pods",
    )

    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert ready_replicas(apps, namespace, "canary") == 0
        time.sleep(0.2)
    canary = pods(core, namespace, "canary")
    assert all(p.status.phase == "Running" and not is_ready(p) for p in canary)
    assert all(s.started and not s.ready for p in canary for s in p.status.container_statuses)


def test_service_account_kubeconfig_enforces_rules(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    path = control_plane.service_account_kubeconfig(
        namespace, "reader", rules, tmp_path / "reader.kubeconfig"
    )

    with config.new_client_from_config(config_file=str(path)) as api:
        core = client.CoreV1Api(api)
        names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
        assert "kube-root-ca.crt" in names  # published by the controller manager into every namespace
        with pytest.raises(ApiException) as denied:
            core.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}})
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied:
            core.list_namespaced_secret(namespace)
        assert denied.value.status == 403


def test_failed_start_reports_log_tail_and_stop_is_idempotent(tmp_path: Path) -> None:
    """Needs no real binaries: a fake etcd that dies must surface its log, and cleanup must not fail."""
    assets = tmp_path / "bin"
    assets.mkdir()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        script = assets / name
        script.write_text("#!/bin/sh\necho 'fake failure: bad flag --name' >&2\nexit 3\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    cp = ControlPlane(assets, tmp_path / "cp")

    with pytest.raises(ControlPlaneError, match=r"(?s)etcd exited with code 3.*fake failure: bad flag"):
        cp.start()

    assert cp.pids == {}
    cp.stop()
    cp.stop()
