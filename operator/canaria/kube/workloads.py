"""The objects a ModelDeployment owns, built as plain manifests (pure: no API calls).

One Deployment per model version, named `<name>-<version>`, and one Service over the model: during a
canary it selects every version, so that with replica-ratio routing the traffic split is the replica split
and needs no mesh; otherwise it selects the stable version alone, so a previous version kept warm (ready
for an instant revert) takes no traffic. Switching the selector moves traffic without starting a Pod.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from canaria import GROUP, KIND, VERSION
from canaria.core.api import Lineage, ModelDeploymentSpec

MD_LABEL = f"{GROUP}/model-deployment"
VERSION_LABEL = f"{GROUP}/version"
TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"
URI_ANNOTATION = f"{GROUP}/model-uri"
LINEAGE_ANNOTATION = f"{GROUP}/lineage"
ROLE_LABEL = f"{GROUP}/role"
BASELINE_ROLE = "baseline"
FIELD_MANAGER = "canaria"


def deployment_name(md_name: str, version: str, *, baseline: bool = False) -> str:
    return f"{md_name}-{version}-{BASELINE_ROLE}" if baseline else f"{md_name}-{version}"


def owner_reference(md_name: str, md_uid: str) -> dict[str, Any]:
    """Makes the ModelDeployment the controller of what it creates, so deleting it garbage-collects them."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": md_name,
        "uid": md_uid,
        "controller": True,
    }


def owner_deployment(name: str, uid: str) -> dict[str, Any]:
    """Makes a version's Deployment the owner of what exists only for that version (its own Service), so
    the garbage collector removes it with the Deployment."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid}


def _with_model_env(container: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The container's env with MODEL_* set by Canaria (a user value of the same name is overridden:
    the served model must be the one the status reports)."""
    kept = [e for e in container.get("env") or [] if e.get("name") not in env]
    return {**container, "env": [*kept, *({"name": k, "value": v} for k, v in env.items())]}


def deployment_manifest(
    *,
    md_name: str,
    md_uid: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    version: str,
    uri: str,
    replicas: int,
    template_hash: str,
    lineage: Lineage | None,
) -> dict[str, Any]:
    """The Deployment serving one model version."""
    selector = {MD_LABEL: md_name, VERSION_LABEL: version}
    labels = {
        "app.kubernetes.io/name": spec.model.name,
        "app.kubernetes.io/instance": md_name,
        "app.kubernetes.io/managed-by": "canaria",
        **selector,
    }
    template = copy.deepcopy(spec.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    env = {"MODEL_NAME": spec.model.name, "MODEL_VERSION": version, "MODEL_URI": uri}
    pod = template.setdefault("spec", {})
    pod["containers"] = [_with_model_env(c, env) for c in pod.get("containers") or []]
    annotations = {TEMPLATE_HASH_ANNOTATION: template_hash, URI_ANNOTATION: uri}
    if lineage is not None:
        annotations[LINEAGE_ANNOTATION] = json.dumps(lineage.dump(), sort_keys=True)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(md_name, version),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(md_name, md_uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": max(int(spec.rollout.progress_deadline_seconds), 1),
            "template": template,
        },
    }


def baseline_manifest(stable: dict[str, Any], *, replicas: int) -> dict[str, Any]:
    """The baseline: a fresh Deployment of the stable version, built from the stable Deployment as it runs
    (its pod template may predate the spec's, which belongs to the canary). Its pods carry
    canaria.dev/role=baseline (and MODEL_ROLE=baseline) so that metrics tell them from the stable's; they
    keep the model-deployment label, so the Service routes to them like to any version."""
    meta, spec = stable["metadata"], stable["spec"]
    version = meta["labels"][VERSION_LABEL]
    selector = {**spec["selector"]["matchLabels"], ROLE_LABEL: BASELINE_ROLE}
    labels = {**meta["labels"], ROLE_LABEL: BASELINE_ROLE}
    template = copy.deepcopy(spec["template"])
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), ROLE_LABEL: BASELINE_ROLE}
    pod = template["spec"]
    pod["containers"] = [_with_model_env(c, {"MODEL_ROLE": BASELINE_ROLE}) for c in pod["containers"]]
    kept = (TEMPLATE_HASH_ANNOTATION, URI_ANNOTATION, LINEAGE_ANNOTATION)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(labels[MD_LABEL], version, baseline=True),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k in kept},
            "ownerReferences": meta["ownerReferences"],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": spec.get("progressDeadlineSeconds"),
            "template": template,
        },
    }


def _ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    return [
        {"name": "http", "port": spec.service.port, "targetPort": spec.service.target_port, "protocol": "TCP"}
    ]


def service_manifest(
    *, md_name: str, md_uid: str, namespace: str, spec: ModelDeploymentSpec, version: str | None = None
) -> dict[str, Any]:
    """The model's Service: over every version (the replica ratio is the traffic ratio), or over
    `version` alone."""
    selector = {MD_LABEL: md_name} if version is None else {MD_LABEL: md_name, VERSION_LABEL: version}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": md_name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "canaria", MD_LABEL: md_name},
            "ownerReferences": [owner_reference(md_name, md_uid)],
        },
        "spec": {
            "selector": selector,
            "ports": _ports(spec),
        },
    }


# -------------------------------------------------------------------------------------- smoke tests

SMOKE_LABEL = f"{GROUP}/smoke-test"


def version_service_name(md_name: str, version: str) -> str:
    """One version's own Service: the address a smoke test calls, whatever the traffic split."""
    return deployment_name(md_name, version)


def smoke_job_name(md_name: str, version: str, attempt: int) -> str:
    """`<name>-<version>-smoke-<attempt>`, shortened with a hash to a DNS label when too long."""
    name = f"{md_name}-{version}-smoke-{attempt}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    suffix = f"-smoke-{attempt}-{digest}"
    return f"{md_name}-{version}"[: 63 - len(suffix)].rstrip("-") + suffix


def version_service_manifest(
    *, md_name: str, namespace: str, spec: ModelDeploymentSpec, version: str, owner: dict[str, Any]
) -> dict[str, Any]:
    """The Service selecting one version's Pods only (owned by `owner`: the version's Deployment)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": version_service_name(md_name, version),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "canaria", MD_LABEL: md_name, VERSION_LABEL: version},
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": {MD_LABEL: md_name, VERSION_LABEL: version},
            "ports": _ports(spec),
        },
    }


def smoke_job_manifest(
    *,
    md_name: str,
    md_uid: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    version: str,
    uri: str,
    attempt: int,
) -> dict[str, Any]:
    """The smoke-test Job of one version: the user's Pod template with TARGET_URL (the version's own
    Service) and MODEL_*; one Pod, no retries, time-limited, removed some time after it finished."""
    smoke = spec.rollout.smoke_test
    assert smoke is not None, "a smoke test Job needs spec.rollout.smokeTest"
    labels = {
        "app.kubernetes.io/managed-by": "canaria",
        MD_LABEL: md_name,
        VERSION_LABEL: version,
        SMOKE_LABEL: str(attempt),
    }
    template = copy.deepcopy(smoke.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    target = f"http://{version_service_name(md_name, version)}.{namespace}.svc:{spec.service.port}"
    env = {"TARGET_URL": target, "MODEL_NAME": spec.model.name, "MODEL_VERSION": version, "MODEL_URI": uri}
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    pod["containers"] = [
        {"terminationMessagePolicy": "FallbackToLogsOnError", **_with_model_env(c, env)}
        for c in pod.get("containers") or []
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": smoke_job_name(md_name, version, attempt),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(md_name, md_uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(int(smoke.timeout_seconds), 1),
            "ttlSecondsAfterFinished": int(smoke.cleanup_after_seconds),
            "template": template,
        },
    }
