"""The Kubernetes side of the shell: read what is there, carry out the engine's actions.

Every write is idempotent: Deployments and the Service by server-side apply, Events under names derived
from the transition they record (a second post is a harmless 409), status by a replace guarded by the
resourceVersion that was read (a stale write is a 409 and the whole reconcile is redone).
API errors are translated once, here: 403 names the permission that is missing, 409 is redone from a
fresh read, an answer that says the object itself can never be accepted is `Refused` (permanent for this
spec), and everything else (429, 5xx, connection errors, timeouts) is retried by the caller with backoff.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.core.actions import (
    ApplyService,
    ApplyWorkload,
    DeleteWorkload,
    EmitEvent,
    RunSmokeTest,
    ScaleWorkload,
    SetTraffic,
)
from canaria.core.api import ModelDeployment, SecretKeyRef
from canaria.core.commands import Command, change_reason, parse_command
from canaria.core.observations import Observations, SmokeTestObservation, WorkloadObservation
from canaria.core.policy import CREDENTIALS_LABEL, PolicyError
from canaria.kube import telemetry
from canaria.kube.workloads import (
    BASELINE_ROLE,
    FIELD_MANAGER,
    MD_LABEL,
    ROLE_LABEL,
    TEMPLATE_HASH_ANNOTATION,
    VERSION_LABEL,
    baseline_manifest,
    deployment_manifest,
    deployment_name,
    owner_deployment,
    owner_reference,
    service_manifest,
    smoke_job_manifest,
    smoke_job_name,
    version_service_manifest,
)
from canaria.routers import Router
from canaria.routers.replicas import ReplicaRouter

log = logging.getLogger("canaria.kube.cluster")
T = TypeVar("T")
APPLY = "application/apply-patch+yaml"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class Forbidden(Exception):
    """The operator's RBAC lacks a permission; the message names it."""


class NamespaceTerminating(Exception):
    """The namespace is being deleted: nothing to do there any more."""


class Conflict(Exception):
    """The object changed since it was read; redo the reconcile from a fresh read."""


class Refused(Exception):
    """The API server will never accept an object built from this spec (or it cannot even be built):
    retrying the same spec cannot help. The message is the API server's own, naming the field."""


#: 4xx answers that a later attempt can get past: a conflict, throttling, a request timeout.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 409, 425, 429})
#: 500s the API server gives for an object its schema cannot hold (server-side apply of a field of the
#: wrong type, a quantity that does not parse).
PERMANENT_SERVER_MESSAGES = ("failed to create typed patch object", "unable to convert unstructured object")


def is_permanent(exc: ApiException) -> bool:
    """True for an answer about the object itself: a 4xx other than 403/404/408/409/425/429, or a 500
    whose message says the object cannot be built. 403 (RBAC) and 404 are about the cluster, not the spec."""
    status = exc.status or 0
    if 400 <= status < 500:
        return status not in TRANSIENT_CLIENT_STATUSES and status not in (403, 404)
    return status == 500 and any(m in _api_message(exc) for m in PERMANENT_SERVER_MESSAGES)


def describe_error(exc: BaseException) -> str:
    """One line for a log or a status: an API error as `<status> <reason>: <the API server's message>`."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {_api_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API call, turning 403, 409 and permanent refusals into errors that say what to do."""
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        telemetry.API_ERRORS.labels(status=str(exc.status)).inc()
        if exc.status == 403:
            detail = _api_message(exc)
            if "being terminated" in detail:  # a 403 that is not about RBAC: the namespace is going away
                raise NamespaceTerminating(f"cannot {what}: {detail}") from exc
            raise Forbidden(f"forbidden to {what}: the operator's RBAC needs it ({detail})") from exc
        if exc.status == 409:
            raise Conflict(f"conflict on {what}: {_api_message(exc)}") from exc
        if is_permanent(exc):
            raise Refused(f"cannot {what}: {_api_message(exc)}") from exc
        raise


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _changed_by(metadata: dict[str, Any]) -> str | None:
    """The field manager that last wrote the spec, as the audit trail's 'who' when nobody else says."""
    latest: tuple[str, str] | None = None
    for entry in metadata.get("managedFields") or []:
        if "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("subresource") is None:
            stamp = entry.get("time") or ""
            if latest is None or stamp >= latest[0]:
                latest = (stamp, entry.get("manager") or "unknown")
    return latest[1] if latest else None


def _workload(deployment: Any) -> WorkloadObservation:
    meta, spec = deployment.metadata, deployment.spec
    status = deployment.status or client.V1DeploymentStatus()  # a brand-new object may have none yet
    replicas = spec.replicas or 0
    caught_up = (status.observed_generation or 0) >= (meta.generation or 0)
    updated = caught_up and (status.updated_replicas or 0) >= replicas
    exceeded = any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in status.conditions or []
    )
    return WorkloadObservation(
        version=meta.labels[VERSION_LABEL],
        replicas=replicas,
        ready_replicas=status.ready_replicas or 0,
        updated=updated,
        template_hash=(meta.annotations or {}).get(TEMPLATE_HASH_ANNOTATION),
        deadline_exceeded=exceeded,
    )


class _Utf8Apply(rest.RESTClientObject):
    """Sends server-side apply bodies as UTF-8 JSON. The client's own encoding escapes non-ASCII as
    `\\uXXXX`, surrogate pairs for an emoji, which the API server's YAML decoder (apply patches are YAML)
    refuses with a 400: an emoji in a model URI must not stop a rollout."""

    def request(self, method: str, url: str, headers: Any = None, body: Any = None, **kwargs: Any) -> Any:
        if isinstance(body, dict) and (headers or {}).get("Content-Type") == APPLY:
            body = json.dumps(body, ensure_ascii=False).encode()
        return super().request(method, url, headers=headers, body=body, **kwargs)


class Cluster:
    """One ModelDeployment's view of the API server."""

    def __init__(self, api: client.ApiClient, *, instance: str | None = None) -> None:
        if type(api.rest_client) is rest.RESTClientObject:
            api.rest_client = _Utf8Apply(api.configuration)
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self._deployment_uids: dict[tuple[str, str], str] = {}  # (namespace, Deployment) → uid, last seen
        self.instance = instance or socket.gethostname()

    # -- reading ----------------------------------------------------------------------------------

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return call(
                f"get {PLURAL}.{GROUP} in {namespace}",
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def observe(self, body: dict[str, Any], command: Command | None) -> Observations:
        meta = body["metadata"]
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        deployments = call(
            f"list deployments.apps in {namespace}",
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=f"{MD_LABEL}={name}",
        )
        workloads, baseline = {}, None
        for deployment in deployments.items:
            owners = deployment.metadata.owner_references or []
            labels = deployment.metadata.labels or {}
            if any(o.uid == uid for o in owners) and VERSION_LABEL in labels:
                observed = _workload(deployment)
                if labels.get(ROLE_LABEL) == BASELINE_ROLE:
                    baseline = observed
                else:
                    workloads[observed.version] = observed
                self._deployment_uids[(namespace, deployment.metadata.name)] = deployment.metadata.uid
        service_ports, service_version = self._service(namespace, name, uid)
        return Observations(
            generation=meta.get("generation") or 1,
            workloads=workloads,
            baseline=baseline,
            service_ports=service_ports,
            service_version=service_version,
            smoke_test=self._smoke_test(namespace, name, uid, body.get("status") or {}),
            command=command,
            change_reason=change_reason(meta.get("annotations"), body["spec"]["model"]["version"]),
            changed_by=_changed_by(meta),
        )

    def _service(self, namespace: str, name: str, uid: str) -> tuple[tuple[int, int] | None, str | None]:
        """(port, targetPort) of the model's Service and the one version it selects (None: all)."""
        try:
            service = call(f"get services in {namespace}", self.core.read_namespaced_service, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        if not any(o.uid == uid for o in service.metadata.owner_references or []):
            return None, None  # not ours (yet): applying it will say so if someone else owns it
        port = service.spec.ports[0]
        version = (service.spec.selector or {}).get(VERSION_LABEL)
        return (port.port, port.target_port if isinstance(port.target_port, int) else -1), version

    def _smoke_test(
        self, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> SmokeTestObservation | None:
        """The Job of the smoke test status says is running: its outcome, and the test container's exit
        code and output tail (its termination message) once it ended."""
        record = status.get("smokeTest") or {}
        if record.get("phase") != "Running":
            return None
        version, attempt = record["version"], int(record["attempt"])
        job_name = smoke_job_name(name, version, attempt)
        seen = SmokeTestObservation(version=version, attempt=attempt, job=job_name, outcome="Absent")
        try:
            job = call(f"get jobs.batch in {namespace}", self.batch.read_namespaced_job, job_name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return seen
            raise
        if not any(o.uid == uid for o in job.metadata.owner_references or []):
            return seen  # a Job of an earlier ModelDeployment of this name, not yet garbage-collected
        done = {c.type: c for c in (job.status and job.status.conditions) or [] if c.status == "True"}
        if "Complete" in done:
            outcome = "Succeeded"
        elif "Failed" in done:
            outcome = "Failed"
        else:
            return dataclasses.replace(seen, outcome="Running")
        exit_code, log_tail = None, None
        reason = done["Failed"].reason if outcome == "Failed" else None  # e.g. DeadlineExceeded
        pods = call(
            f"list pods in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/job-name={job_name}",
        )
        for pod in pods.items:
            for container in (pod.status and pod.status.container_statuses) or []:
                ended = container.state and container.state.terminated
                if ended is not None:
                    exit_code, log_tail = ended.exit_code, ended.message
                    if outcome == "Failed" and reason in (None, "BackoffLimitExceeded"):
                        reason = ended.reason  # the container's own (Error, OOMKilled) says more
        return dataclasses.replace(seen, outcome=outcome, exit_code=exit_code, reason=reason, log=log_tail)

    def read_secret(self, namespace: str, ref: SecretKeyRef, field: str) -> str:
        """One key of a Secret, only if the Secret consents to Prometheus use (`CREDENTIALS_LABEL`).

        The metadata is read first (as PartialObjectMetadata: no data crosses the wire), so a Secret
        without the label is never read in full: naming it in a ModelDeployment gets a refusal, not its
        content. Both reads are a plain `get`, the only verb the operator holds on Secrets.
        """
        import base64

        what = f"get secrets in {namespace}"
        meta = call(
            what,
            self.core.read_namespaced_secret,
            ref.name,
            namespace,
            _headers={"Accept": METADATA_ONLY},
            _preload_content=False,
        )
        labels = (json.loads(meta.data).get("metadata") or {}).get("labels") or {}
        if labels.get(CREDENTIALS_LABEL) != "true":
            raise PolicyError(
                field,
                f'Secret {ref.name} lacks the label {CREDENTIALS_LABEL}="true": the operator uses a Secret '
                "for Prometheus only when whoever may write Secrets in the namespace labelled it so",
            )
        secret = call(what, self.core.read_namespaced_secret, ref.name, namespace)
        data = (secret.data or {}).get(ref.key)
        if data is None:
            raise ValueError(f"secret {ref.name} has no key {ref.key}")
        return base64.b64decode(data).decode()

    @staticmethod
    def command_of(body: dict[str, Any]) -> tuple[Command | None, str | None]:
        """The pending command, or the reason the annotation is unusable."""
        try:
            return parse_command(body["metadata"].get("annotations")), None
        except ValueError as exc:
            return None, str(exc)

    # -- acting -----------------------------------------------------------------------------------

    def validate(self, md: ModelDeployment, actions: Iterable[Any]) -> None:
        """Server-side dry run of every Deployment and Service the actions would apply, before any of
        them changes anything: a pod template the apps API refuses is `Refused` with its message while
        the serving version is still untouched."""
        for action in actions:
            if isinstance(action, ApplyWorkload) and not action.baseline:  # a baseline copies an applied one
                self._apply_workload(md, action, dry_run=True)
            elif isinstance(action, ApplyService):
                self._apply_service(md, action, dry_run=True)

    def carry_out(self, md: ModelDeployment, actions: Iterable[Any], router: Router | None = None) -> None:
        """Apply workload, Service and traffic actions in the engine's order (Events are posted separately,
        after the status)."""
        meta = md.metadata
        name, namespace = meta["name"], meta["namespace"]
        router = router or ReplicaRouter()
        for action in actions:
            if isinstance(action, SetTraffic):
                if router.version_services:  # each exists before the route names it
                    for version in sorted(action.split.versions()):
                        self._apply_version_service(md, version)
                call(f"patch {router.resource} {namespace}/{router.target}", router.apply, md, action.split)
            if isinstance(action, ApplyWorkload) and action.baseline:
                self._apply_baseline(namespace, name, action)
            elif isinstance(action, ApplyWorkload):
                self._apply_workload(md, action, dry_run=False)
            elif isinstance(action, ScaleWorkload):
                call(
                    f"patch deployments.apps {namespace}/{deployment_name(name, action.version)}",
                    self.apps.patch_namespaced_deployment,
                    deployment_name(name, action.version, baseline=action.baseline),
                    namespace,
                    {"spec": {"replicas": action.replicas}},
                    field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                )
            elif isinstance(action, DeleteWorkload):
                try:
                    call(
                        f"delete deployments.apps {namespace}/{deployment_name(name, action.version)}",
                        self.apps.delete_namespaced_deployment,
                        deployment_name(name, action.version, baseline=action.baseline),
                        namespace,
                        propagation_policy="Background",
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            elif isinstance(action, RunSmokeTest):
                self._run_smoke_test(md, action)
            elif isinstance(action, ApplyService):
                self._apply_service(md, action, dry_run=False)

    def _apply_workload(self, md: ModelDeployment, action: ApplyWorkload, *, dry_run: bool) -> None:
        meta = md.metadata
        name, namespace = meta["name"], meta["namespace"]
        lineage = None
        if md.status.canary and md.status.canary.version == action.version:
            lineage = md.status.canary.lineage
        elif action.version == md.spec.model.version:
            lineage = md.spec.model.lineage
        target = f"deployments.apps {namespace}/{deployment_name(name, action.version)}"
        try:
            manifest = deployment_manifest(
                md_name=name,
                md_uid=meta["uid"],
                namespace=namespace,
                spec=md.spec,
                version=action.version,
                uri=action.uri,
                replicas=action.replicas,
                template_hash=action.template_hash,
                lineage=lineage,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a template no Deployment fits
            raise Refused(f"cannot build {target} from spec.template: {exc}") from exc
        self._apply(f"apply {target}", self.apps.patch_namespaced_deployment, manifest, dry_run=dry_run)

    def _apply_service(self, md: ModelDeployment, action: ApplyService, *, dry_run: bool) -> None:
        meta = md.metadata
        manifest = service_manifest(
            md_name=meta["name"],
            md_uid=meta["uid"],
            namespace=meta["namespace"],
            spec=md.spec,
            version=action.version,
        )
        what = f"apply services {meta['namespace']}/{meta['name']}"
        self._apply(what, self.core.patch_namespaced_service, manifest, dry_run=dry_run)

    def _apply_version_service(self, md: ModelDeployment, version: str) -> None:
        """The version's own Service `<name>-<version>`, owned by its Deployment, so it goes with it."""
        meta = md.metadata
        name, namespace = meta["name"], meta["namespace"]
        deployment = deployment_name(name, version)
        deployment_uid = self._deployment_uids.get((namespace, deployment))
        owner = (
            owner_deployment(deployment, deployment_uid)
            if deployment_uid
            else owner_reference(name, meta["uid"])
        )
        service = version_service_manifest(
            md_name=name, namespace=namespace, spec=md.spec, version=version, owner=owner
        )
        what = f"apply services {namespace}/{service['metadata']['name']}"
        self._apply(what, self.core.patch_namespaced_service, service, dry_run=False)

    @staticmethod
    def _apply(what: str, patch: Callable[..., Any], manifest: dict[str, Any], *, dry_run: bool) -> None:
        """Server-side apply (the body goes out as UTF-8: see `_Utf8Apply`)."""
        extra = {"dry_run": "All"} if dry_run else {}
        call(
            ("dry-run " if dry_run else "") + what,
            patch,
            manifest["metadata"]["name"],
            manifest["metadata"]["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            **extra,
        )

    def _apply_baseline(self, namespace: str, name: str, action: ApplyWorkload) -> None:
        """Copy the stable version's Deployment as it runs into the baseline (list, not get: the operator's
        RBAC lists Deployments already); with no stable Deployment to copy, the next reconcile retries."""
        found = call(
            f"list deployments.apps in {namespace}",
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=f"{MD_LABEL}={name},{VERSION_LABEL}={action.version},!{ROLE_LABEL}",
        ).items
        if not found:
            log.info(
                "%s/%s: no Deployment of %s to copy into the baseline yet", namespace, name, action.version
            )
            return
        stable = self.apps.api_client.sanitize_for_serialization(found[0])
        manifest = baseline_manifest(stable, replicas=action.replicas)
        what = f"apply deployments.apps {namespace}/{manifest['metadata']['name']}"
        self._apply(what, self.apps.patch_namespaced_deployment, manifest, dry_run=False)

    def _run_smoke_test(self, md: ModelDeployment, action: RunSmokeTest) -> None:
        """The version's own Service (owned by its Deployment, so it goes with it), then the Job, created
        once: its name comes from version and attempt, so a second create (a retry, a restarted operator)
        is a 409 that leaves the running Job alone."""
        meta = md.metadata
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        self._apply_version_service(md, action.version)
        job = smoke_job_manifest(
            md_name=name,
            md_uid=uid,
            namespace=namespace,
            spec=md.spec,
            version=action.version,
            uri=action.uri,
            attempt=action.attempt,
        )
        try:
            call(f"create jobs.batch in {namespace}", self.batch.create_namespaced_job, namespace, job)
        except Conflict:
            log.info("smoke test job %s already exists: following it", job["metadata"]["name"])

    def write_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Replace the status, guarded by the resourceVersion read: a concurrent change is a Conflict."""
        meta = body["metadata"]
        new_body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": body.get("spec", {}),
            "status": status,
        }
        return call(
            f"update {PLURAL}.{GROUP}/status in {meta['namespace']}",
            self.custom.replace_namespaced_custom_object_status,
            GROUP,
            VERSION,
            meta["namespace"],
            PLURAL,
            meta["name"],
            new_body,
        )

    def post_event(
        self, body: dict[str, Any], event: EmitEvent, *, related_version: str | None = None
    ) -> None:
        """Post one Event; its name comes from the transition, so posting it again changes nothing."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        now = datetime.now(UTC)
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{name}.{meta['uid'][:8]}.{event.key}".lower(),
                "namespace": namespace,
                "labels": {MD_LABEL: name},
                "annotations": {VERSION_LABEL: event.version or ""},
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": name,
                "namespace": namespace,
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "action": event.reason,
            "source": {"component": "canaria"},
            "reportingComponent": "canaria",
            "reportingInstance": self.instance,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "eventTime": now.isoformat(timespec="microseconds"),
            "count": 1,
        }
        if related_version:
            manifest["related"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "namespace": namespace,
                "name": deployment_name(name, related_version),
            }
        try:
            call(f"create events in {namespace}", self.core.create_namespaced_event, namespace, manifest)
        except Conflict:
            log.debug("event %s already posted", manifest["metadata"]["name"])
