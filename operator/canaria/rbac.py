"""The exact Kubernetes permissions the operator uses, as data.

The Helm chart's ClusterRole/Role and the kustomize RBAC are generated from (and tested against) this
one list, and the integration tier runs the operator under a token bound to exactly these rules, so a
call the operator makes without declaring it fails a test instead of a user's install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaria import GROUP, PLURAL


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    cluster_scoped: bool = False

    def rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": list(self.verbs)}


PERMISSIONS: tuple[Permission, ...] = (
    Permission(GROUP, PLURAL, ("get", "list", "watch", "patch"), "read ModelDeployments; kopf finalizers"),
    Permission(GROUP, f"{PLURAL}/status", ("get", "update"), "report status through the subresource"),
    Permission(
        "apps",
        "deployments",
        ("get", "list", "watch", "create", "patch", "delete"),
        "one Deployment per model version",
    ),
    Permission("", "services", ("get", "create", "patch"), "one Service over every version"),
    Permission("", "secrets", ("get",), "Prometheus bearer token and CA referenced by the spec"),
    Permission("", "events", ("create", "patch"), "audit trail (core Events, as kopf posts them)"),
    Permission("events.k8s.io", "events", ("create", "patch"), "audit trail (events.k8s.io)"),
    Permission("", "namespaces", ("get", "list", "watch"), "kopf namespace discovery", cluster_scoped=True),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get", "list", "watch"),
        "kopf resource discovery",
        cluster_scoped=True,
    ),
)


def rules(*, include_cluster_scoped: bool = True) -> list[dict[str, Any]]:
    """RBAC rules: all of them for a ClusterRole; the namespaced ones for a per-namespace Role."""
    return [p.rule() for p in PERMISSIONS if include_cluster_scoped or not p.cluster_scoped]
