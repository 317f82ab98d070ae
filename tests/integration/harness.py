"""Running the real operator (`canaria run`, a separate process) against the test control plane.

The operator runs under a ServiceAccount token bound to exactly `canaria.kube.rbac` — not as admin — so an
undeclared API call fails a test. It runs as a process so a test can kill it at any moment.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.kube.crd import custom_resource_definition

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll until probe() returns something truthy; fail with `what` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Sampler:
    """Calls `probe` every 50 ms in a thread while in its `with` block; `values` holds what it returned
    (what a poll in the test's own thread could miss between two of its steps)."""

    def __init__(self, probe: Callable[[], Any]) -> None:
        self.probe, self.values = probe, list[Any]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(self.probe())
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def absent(read: Callable[[], Any]) -> bool:
    """True when reading the object answers 404."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def install_crd(api: client.ApiClient, crd: dict[str, Any] | None = None) -> None:
    """Create or replace a CRD (by default the generated one) and wait until it is served."""
    ext = client.ApiextensionsV1Api(api)
    crd = crd or custom_resource_definition()
    name = crd["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, crd)

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(f"the CRD {name} to be established", established, timeout=30)


def release_finalizers(api: client.ApiClient, namespace: str) -> None:
    """With the operator gone, nobody would remove kopf's finalizer: the namespace would stay
    Terminating for the rest of the session. Drop it, as an uninstall runbook would."""
    custom = client.CustomObjectsApi(api)
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        if item["metadata"].get("finalizers"):
            with contextlib.suppress(ApiException):
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json",
                )


class ModelDeployments:
    """Small typed helpers over the custom objects API, for readable tests."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", "ModelDeployment")
        body["metadata"]["namespace"] = self.namespace
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch, _content_type="application/merge-patch+json"
        )

    def set_version(self, name: str, version: str, *, reason: str | None = None, **model: Any) -> None:
        patch: dict[str, Any] = {
            "spec": {"model": {"version": version, "uri": f"s3://models/{name}/{version}", **model}}
        }
        if reason:
            patch["metadata"] = {"annotations": {"canaria.dev/change-reason": reason}}
        self.patch(name, patch)

    def wait_phase(self, name: str, phase: str, timeout: float = 60.0, **expected: Any) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            if status.get("phase") != phase:
                return None
            for key, value in expected.items():
                if ((status.get(key) or {}).get("version")) != value:
                    return None
            return status

        return wait_for(f"{name} phase {phase} {expected}", probe, timeout=timeout)

    def replicas(self, name: str) -> dict[str, int]:
        """version → spec.replicas of every Deployment the ModelDeployment owns."""
        items = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"canaria.dev/model-deployment={name}"
        ).items
        return {d.metadata.labels["canaria.dev/version"]: d.spec.replicas for d in items}

    def serving(self, name: str) -> dict[str, int]:
        """version → ready endpoints of the model's Service: the EndpointSlices the real endpoint-slice
        controller built, i.e. where kube-proxy would send traffic."""
        slices = client.DiscoveryV1Api(self.core.api_client).list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={name}"
        )
        pods = {
            p.metadata.name: p.metadata.labels.get("canaria.dev/version")
            for p in self.core.list_namespaced_pod(self.namespace).items
        }
        counts: dict[str, int] = {}
        for piece in slices.items:
            for endpoint in piece.endpoints or []:
                if endpoint.conditions.ready and endpoint.target_ref is not None:
                    version = pods.get(endpoint.target_ref.name, "?")
                    counts[version] = counts.get(version, 0) + 1
        return counts

    def events(self, name: str) -> list[Any]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment"
        ).items
        return sorted(items, key=lambda e: (e.metadata.creation_timestamp, e.metadata.name))

    def reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.events(name)]


def model_deployment(
    name: str,
    version: str = "v1",
    *,
    replicas: int = 2,
    steps: list[dict[str, Any]] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    interval: str = "1s",
    **extra: Any,
) -> dict[str, Any]:
    """A ModelDeployment body with a tiny server template (the test kubelet never runs images)."""
    rollout: dict[str, Any] = {
        "steps": steps or [{"weight": 50, "pause": "1s"}, {"weight": 100}],
        "progressDeadline": extra.pop("progress_deadline", "60s"),
        "analysis": {"interval": interval, "metrics": metrics or []},
    }
    rollout.update(extra.pop("rollout", {}))
    body: dict[str, Any] = {
        "metadata": {"name": name, "annotations": {"canaria.dev/change-reason": "initial release"}},
        "spec": {
            "model": {
                "name": name,
                "version": version,
                "uri": f"s3://models/{name}/{version}",
                "owner": "ml-team@example.com",
                "lineage": {"codeCommit": "1a2b3c4", "dataset": "snapshot-1", "trainingRun": "run-1"},
            },
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "example.com/model-server:1.0",
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                }
            },
            "rollout": rollout,
            **extra,
        },
    }
    return body


def load_example(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
