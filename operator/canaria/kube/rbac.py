"""The exact Kubernetes permissions the operator uses, as data.

The Helm chart's ClusterRole/Role and the kustomize RBAC are generated from (and tested against) this
one list, and the integration tier runs the operator under a token bound to exactly these rules, so a
call the operator makes without declaring it fails a test instead of a user's install.

No verb is here that the operator never uses: tests/integration/test_least_privilege.py removes each
rule, and each verb, in turn from the installed RBAC and expects a 403 naming it. Two rules serve kopf,
not Canaria: ``namespaces`` list/watch, used only when the operator watches given namespaces
(``--namespace``; denied, kopf retries the listing for about a minute before serving anything), never
when it watches all of them; and ``customresourcedefinitions`` list/watch, called at every start (denied:
an error per retry for about a minute), which lets a CRD that appears after the operator started be
served without a restart (at the CRD's first change once API discovery lists it).
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
    named_namespaces_only: bool = False  # needed only when the operator watches given namespaces

    def rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": list(self.verbs)}


PERMISSIONS: tuple[Permission, ...] = (
    Permission(GROUP, PLURAL, ("get", "list", "watch", "patch"), "read ModelDeployments; kopf finalizers"),
    Permission(GROUP, f"{PLURAL}/status", ("update",), "report status through the subresource"),
    Permission(
        "apps",
        "deployments",
        ("list", "watch", "create", "patch", "delete"),
        "one Deployment per model version (server-side apply: create and patch)",
    ),
    Permission(
        "",
        "services",
        ("get", "create", "patch"),
        "one Service over every version; one per version (owned by its Deployment) for smoke tests and "
        "Gateway API routing",
    ),
    Permission(
        "gateway.networking.k8s.io",
        "httproutes",
        ("get", "patch"),
        "read the HTTPRoute named by trafficRouting.gatewayAPI and set its weights (server-side apply)",
    ),
    Permission("", "secrets", ("get",), "Prometheus bearer token and CA referenced by the spec"),
    Permission("batch", "jobs", ("get", "create"), "smoke-test Jobs (spec.rollout.smokeTest), by name"),
    Permission(
        "", "pods", ("list",), "a finished smoke test's exit code and output tail (termination message)"
    ),
    Permission("", "events", ("create",), "audit trail (core/v1 Events, Canaria's and kopf's)"),
    Permission(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf namespace discovery when watching given namespaces",
        cluster_scoped=True,
        named_namespaces_only=True,
    ),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices the CRD appearing or changing",
        cluster_scoped=True,
    ),
)


def permissions(*, all_namespaces: bool = False) -> list[Permission]:
    """What an operator needs: watching all namespaces (`canaria run` without --namespace) it never
    lists namespaces, so that rule is left out there."""
    return [p for p in PERMISSIONS if not (all_namespaces and p.named_namespaces_only)]


def rules(*, include_cluster_scoped: bool = True, all_namespaces: bool = False) -> list[dict[str, Any]]:
    """RBAC rules: all of them for a ClusterRole (an operator given --namespace needs every one; one
    watching all namespaces passes all_namespaces=True); the namespaced ones for a per-namespace Role."""
    return [
        p.rule()
        for p in permissions(all_namespaces=all_namespaces)
        if include_cluster_scoped or not p.cluster_scoped
    ]
