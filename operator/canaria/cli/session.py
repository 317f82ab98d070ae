"""Talking to the cluster for `canaria status|list|history|...`, and reading what it returns.

`Session`: a kubeconfig context's API client, namespace and user, with API errors translated into one line
(404/403/401 become `CtlError`). `Resource`: a ModelDeployment as the CLI reads it, spec and status through
the core's API models, so the defaults, phases and rules are the operator's own and never re-declared here.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.core.api import ModelDeploymentSpec, ModelDeploymentStatus
from canaria.core.problems import describe_errors
from canaria.kube.workloads import LINEAGE_ANNOTATION, MD_LABEL, URI_ANNOTATION, VERSION_LABEL

RESOURCE = f"{PLURAL}.{GROUP}"
REQUEST_TIMEOUT = 15


class CtlError(Exception):
    """A one-line, user-facing error: printed on stderr, exit code 1, no traceback."""


class NotFound(Exception):
    pass


def get(data: Any, *path: str, default: Any = None) -> Any:
    """`data[path[0]][path[1]]...` through dicts that may lack a key; `default` when absent or None."""
    for key in path:
        if not isinstance(data, dict):
            return default
        data = data.get(key)
    return default if data is None else data


@dataclass(frozen=True)
class Resource:
    """A ModelDeployment as returned by the API server, read through the core's models.

    The spec may be one the operator rejected (applied with validation off, or from an older version):
    then `spec` is None and `spec_problem` says what is wrong, in the same words as the operator's status.
    """

    body: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.body.get("metadata") or {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "?"))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "?"))

    @cached_property
    def _spec(self) -> tuple[ModelDeploymentSpec | None, str | None]:
        try:
            return ModelDeploymentSpec.model_validate(self.body.get("spec") or {}), None
        except ValidationError as exc:
            return None, describe_errors(exc, prefix="spec")

    @property
    def spec(self) -> ModelDeploymentSpec | None:
        return self._spec[0]

    @property
    def spec_problem(self) -> str | None:
        return self._spec[1]

    @cached_property
    def status(self) -> ModelDeploymentStatus:
        """The status as the operator wrote it (a status it could not have written reads as empty)."""
        try:
            return ModelDeploymentStatus.model_validate(self.body.get("status") or {})
        except ValidationError:
            return ModelDeploymentStatus()

    @property
    def desired_version(self) -> str | None:
        """spec.model.version, even from a spec the operator rejected."""
        return get(self.body, "spec", "model", "version")


@dataclass
class Session:
    """An API client for one kubeconfig context, with the namespace and user that context implies."""

    api: Any
    namespace: str
    kube_user: str | None
    context: str | None
    host: str

    @classmethod
    def open(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
        from kubernetes import config

        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        files = [p for p in path.split(os.pathsep) if p and os.path.exists(os.path.expanduser(p))]
        if not files:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
                return cls._in_cluster(namespace)
            raise CtlError(f"no kubeconfig at {path}: pass --kubeconfig or set KUBECONFIG")
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
            chosen = current
            if context:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(c.get("name", "?") for c in contexts)
                    raise CtlError(f"context {context} not found in {path} (contexts: {names})")
            api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
        except config.ConfigException as exc:
            raise CtlError(f"kubeconfig {path}: {str(exc).splitlines()[0]}") from exc
        ctx = (chosen or {}).get("context") or {}
        return cls(
            api=api,
            namespace=namespace or ctx.get("namespace") or "default",
            kube_user=ctx.get("user"),
            context=(chosen or {}).get("name"),
            host=api.configuration.host,
        )

    @classmethod
    def _in_cluster(cls, namespace: str | None) -> Session:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.ApiClient()
        if namespace is None:
            with (
                contextlib.suppress(OSError),
                open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f,
            ):
                namespace = f.read().strip()
        return cls(api, namespace or "default", None, None, api.configuration.host)

    def default_user(self) -> str:
        try:
            local = os.environ.get("USER") or getpass.getuser()
        except (KeyError, OSError):
            local = "unknown"
        return f"{local}@{self.kube_user}" if self.kube_user else local

    # -- API calls, errors translated ----------------------------------------------------------------

    def call(
        self, verb: str, resource: str, namespace: str | None, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f"in {namespace}" if namespace else "in any namespace"
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kw)
        except ApiException as exc:
            body = _api_body(exc)
            if exc.status == 403:
                raise CtlError(f"forbidden: you need {verb} on {resource} {where}") from exc
            if exc.status == 401:
                raise CtlError(
                    f"unauthorized: the API server at {self.host} rejected the credentials of context "
                    f"{self.context or '?'}"
                ) from exc
            if exc.status == 404 and resource == RESOURCE and not get(body, "details", "name"):
                raise CtlError(
                    f"the ModelDeployment API ({RESOURCE}) is not installed on {self.host}: "
                    "`canaria crd | kubectl apply -f -`"
                ) from exc
            if exc.status == 404:
                raise NotFound(str(body.get("message") or exc.reason)) from exc
            message = body.get("message") or exc.reason or ""
            raise CtlError(
                f"the API server refused to {verb} {resource} {where}: {message} ({exc.status})"
            ) from exc
        except HTTPError as exc:
            raise CtlError(f"cannot reach the API server at {self.host}: {type(exc).__name__}") from exc

    def get(self, name: str) -> Resource:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        try:
            body = self.call(
                "get",
                RESOURCE,
                self.namespace,
                custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
            )
        except NotFound as exc:
            raise CtlError(f"modeldeployment {name} not found in namespace {self.namespace}") from exc
        return Resource(body)

    def list(self, all_namespaces: bool) -> list[Resource]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        if all_namespaces:
            result = self.call(
                "list", RESOURCE, None, custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        else:
            result = self.call(
                "list",
                RESOURCE,
                self.namespace,
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
            )
        return [Resource(item) for item in result.get("items") or []]

    def patch(self, name: str, body: dict[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        extra = {"field_manager": field_manager} if field_manager else {}
        try:
            return self.call(
                "patch",
                RESOURCE,
                self.namespace,
                custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body,
                _content_type="application/merge-patch+json",
                **extra,
            )
        except NotFound as exc:
            raise CtlError(f"modeldeployment {name} not found in namespace {self.namespace}") from exc

    def events(self, name: str) -> list[dict[str, Any]]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        result = self.call(
            "list",
            "events",
            self.namespace,
            core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind={KIND}",
        )
        return [self.api.sanitize_for_serialization(e) for e in result.items]

    def deployments(self, name: str) -> dict[str, dict[str, Any]]:
        """version → {uri, lineage} from the annotations of the model's surviving Deployments."""
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        try:
            result = self.call(
                "list",
                "deployments.apps",
                self.namespace,
                apps.list_namespaced_deployment,
                self.namespace,
                label_selector=f"{MD_LABEL}={name}",
            )
        except (CtlError, NotFound):
            return {}
        return deployed_versions(result.items)


def _api_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def deployed_versions(deployments: list[Any]) -> dict[str, dict[str, Any]]:
    """version → {uri, lineage} from the labels and annotations the operator puts on its Deployments."""
    found = {}
    for deployment in deployments:
        labels = deployment.metadata.labels or {}
        annotations = deployment.metadata.annotations or {}
        if VERSION_LABEL not in labels or URI_ANNOTATION not in annotations:
            continue
        lineage = None
        with contextlib.suppress(ValueError, TypeError):
            lineage = json.loads(annotations.get(LINEAGE_ANNOTATION) or "null")
        found[labels[VERSION_LABEL]] = {"uri": annotations[URI_ANNOTATION], "lineage": lineage}
    return found
