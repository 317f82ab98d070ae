"""Least privilege, for real: the operator under the RBAC that the install paths create, not under a copy.

For each install path (the Helm chart for all namespaces, the chart with ``watchNamespaces``, and
``kubectl apply -k manifests``) the test installs it, mints a token for the ServiceAccount it created
(TokenRequest API) and runs the operator locally with that token and with the container args of the
Deployment it created (the image cannot run here: there is no container runtime). Then:

- one rollout reaches Healthy (first deployment, then a canary promoted, with an analysis that reads the
  Prometheus bearer token from a Secret, and the old version's Deployment deleted), one reaches Reverted (a
  canary that never becomes ready, past its progress deadline), and the ModelDeployment is deleted (kopf
  removes its finalizer): not one request is denied;
- each rule of the installed ClusterRole (and Role), removed in turn, makes the operator report a 403 that
  names that permission: Canaria's own ``forbidden to <verb> <resource> in <ns>: the operator's RBAC needs
  it (...)``, or kopf's failed request for the list/watch/patch calls it makes itself. One operator
  process per rule, stopped as soon as its 403 is in the log;
- each verb of a rule with several, removed in turn, is reported the same way (so no verb is granted for
  nothing either).

What removing each rule and each verb taught (and ``canaria.kube.rbac`` now declares):

- Removed because nothing used them: the whole ``events.k8s.io`` rule (Canaria and kopf post core/v1
  Events), ``get`` on ``modeldeployments/status`` (status is replaced, never read through the
  subresource), ``get`` on ``deployments`` (they are listed), ``patch`` on ``events`` (a repeated Event is
  a 409, never a patch), ``get`` on ``namespaces`` and on CRDs (kopf only lists and watches them).
- ``namespaces`` list/watch: kopf uses it only when the operator watches given namespaces (to resolve
  globs); denied, it retries the listing for about a minute before serving anything. An operator watching
  all namespaces never asks, so the all-namespaces ClusterRole (chart default, kustomize) leaves it out
  (``canaria.rbac.rules(all_namespaces=True)``); the rule test skips it for those paths.
- ``customresourcedefinitions`` list/watch: kopf lists and watches CRDs at every start and re-reads API
  discovery on each CRD event; denied, it logs an error per attempt for about a minute, then serves only
  what existed at startup. The last test shows what it buys: a CRD that appears after the operator
  started is served without a restart (at the first CRD event once discovery lists it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.core.policy import CREDENTIALS_LABEL
from canaria.kube import rbac
from canaria.sandbox.controlplane import ControlPlane, write_kubeconfig
from canaria.sandbox.kubelet import RUN_LABEL, Kubelet
from canaria.sandbox.processes import OperatorProcess

from .gatewayapi import Routes
from .harness import ModelDeployments, install_crd, model_deployment, wait_for
from .test_install import (
    CHART,
    KUSTOMIZE_NAMESPACE,
    MANIFESTS,
    chart_cluster_role_name,
    chart_fullname,
    chart_service_account_kubeconfig,
)

CHART_RULES = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
KUSTOMIZE_RULES = yaml.safe_load((MANIFESTS / "rbac" / "cluster-role.yaml").read_text())["rules"]
#: Every rule some install path creates (a path watching all namespaces leaves out namespace listing).
RULES: list[dict[str, Any]] = []
for _rule in [
    *CHART_RULES["clusterRole"],
    *CHART_RULES["role"],
    *CHART_RULES["clusterScoped"],
    *KUSTOMIZE_RULES,
]:
    if _rule not in RULES:
        RULES.append(_rule)

#: The API server's RBAC denial, as it appears in Canaria's Forbidden message and in kopf's request error.
DENIED = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)" in API group '
    r'"(?P<group>[^"]*)" (?:in the namespace "(?P<namespace>[^"]+)"|at the cluster scope)'
)
#: Canaria's report (canaria.cluster.Forbidden), and kopf's for the requests it makes itself
#: ("Request attempt #1/9 failed; will retry: GET ... -> APIForbiddenError(...)").
OURS, KOPFS = "the operator's RBAC needs it", "APIForbiddenError"
#: How `canaria run` leads the one line it prints when a denial stops it at start.
STARTUP = "canaria run: cannot start: "


# ---------------------------------------------------------------------------------------------- helpers


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule['resources'][0]}.{rule['apiGroups'][0] or 'core'}"


def access_review(user: str, rule: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """A SubjectAccessReview of the rule's first verb, as the ServiceAccount ``user``."""
    resource, _, subresource = rule["resources"][0].partition("/")
    attrs: dict[str, Any] = {"group": rule["apiGroups"][0], "resource": resource, "verb": rule["verbs"][0]}
    if subresource:
        attrs["subresource"] = subresource
    if namespace:
        attrs["namespace"] = namespace
    sa_namespace = user.split(":")[2]
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attrs,
        },
    }


def wait_until_allowed(
    api: client.ApiClient, user: str, rule: dict[str, Any], namespace: str | None, allowed: bool
) -> None:
    """RBAC changes reach the authorizer through an informer: wait until they are in force."""
    authz = client.AuthorizationV1Api(api)
    review = access_review(user, rule, namespace)
    wait_for(
        f"{user} {'allowed' if allowed else 'denied'} {rule}",
        lambda: authz.create_subject_access_review(review).status.allowed is allowed,
        timeout=10,
        interval=0.05,
    )


def log_messages(path: Path) -> list[str]:
    """The operator's log messages (``--log-format=json`` lines, or plain lines)."""
    messages = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                messages.append(line)
                continue
            messages.append(record.get("message", line) if isinstance(record, dict) else line)
    return messages


def denials(path: Path, user: str) -> list[tuple[str, re.Match[str]]]:
    """(message, match) of every RBAC denial of ``user`` the operator logged."""
    return [
        (message, match)
        for message in log_messages(path)
        for match in DENIED.finditer(message)
        if match["user"] == user
    ]


def named_denials(path: Path, user: str, rule: dict[str, Any], namespace: str) -> list[str]:
    """Log messages that report a 403 for exactly ``rule``'s permission, Canaria's or kopf's."""
    (group,), (resource,) = rule["apiGroups"], rule["resources"]
    return [
        message
        for message, match in denials(path, user)
        if match["group"] == group
        and match["resource"] == resource
        and match["verb"] in rule["verbs"]
        and match["namespace"] in (None, namespace)
        and (OURS in message or KOPFS in message)
    ]


def purge(api: client.ApiClient, namespace: str) -> None:
    """Empty ``namespace`` of what a test made, at once: ModelDeployments (finalizers too: no operator runs
    any more), their Deployments and Services, the Secret, the HTTPRoute. The watched namespace is reused by
    the next test."""
    custom, apps, core = client.CustomObjectsApi(api), client.AppsV1Api(api), client.CoreV1Api(api)
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        name = item["metadata"]["name"]
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    selector = "canaria.dev/model-deployment"
    with contextlib.suppress(ApiException):
        apps.delete_collection_namespaced_deployment(namespace, label_selector=selector)
    for service in core.list_namespaced_service(namespace, label_selector=selector).items:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_service(service.metadata.name, namespace)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_secret("prometheus", namespace)
    with contextlib.suppress(ApiException):
        custom.delete_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "fraud"
        )
    wait_for(
        f"{namespace} emptied",
        lambda: (
            not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            and not apps.list_namespaced_deployment(namespace, label_selector=selector).items
            and not core.list_namespaced_secret(namespace, field_selector="metadata.name=prometheus").items
        ),
        timeout=20,
    )


def make_namespace(core: client.CoreV1Api, name: str) -> str:
    """Create ``name`` and wait for its ``default`` ServiceAccount (the ReplicaSet controller needs it)."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def has_default_account() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False
        return True

    wait_for(f"the default ServiceAccount of {name}", has_default_account, timeout=30, interval=0.05)
    return name


def wait_namespace_gone(core: client.CoreV1Api, name: str, timeout: float = 90) -> None:
    """Wait out a namespace of that name still terminating (an earlier test's kustomize install)."""

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"namespace {name} to be gone", gone, timeout=timeout, interval=0.2)


class DeployedOperator(OperatorProcess):
    """`canaria run` with the args of an installed operator Deployment, as its container would run it
    (the image's ENTRYPOINT is `canaria run`; the Deployment gives only args). Only the endpoints change:
    they are off, so processes never collide."""

    def __init__(self, kubeconfig: Path, deployment_args: list[str], log_path: Path) -> None:
        super().__init__(kubeconfig, log_path, args=deployment_args, verbose=True)


@dataclass
class Install:
    """One install path, installed: who the operator runs as, how, and where its rules live."""

    name: str
    api: client.ApiClient  # admin
    user: str  # system:serviceaccount:<ns>:<name>
    kubeconfig: Path  # a token of that ServiceAccount
    args: list[str]  # the operator container's args
    cluster_role: str
    generated: list[dict[str, Any]]  # the rules the generated files say this path installs
    role: tuple[str, str] | None = None  # (namespace, name) of the per-namespace Role (watchNamespaces)
    watched: str | None = None  # the one watched namespace, if not all

    def holder(self, rule: dict[str, Any]) -> tuple[str, str, str | None]:
        """("ClusterRole"|"Role", name, namespace) of the installed object holding ``rule``."""
        if self.role and rule not in CHART_RULES["clusterScoped"]:
            return "Role", self.role[1], self.role[0]
        return "ClusterRole", self.cluster_role, None

    def rules(self, kind: str, name: str, namespace: str | None) -> list[dict[str, Any]]:
        api = client.RbacAuthorizationV1Api(self.api)
        obj = api.read_namespaced_role(name, namespace) if kind == "Role" else api.read_cluster_role(name)
        return [self.api.sanitize_for_serialization(r) for r in obj.rules or []]

    def _set_rules(self, kind: str, name: str, namespace: str | None, rules: list[dict[str, Any]]) -> None:
        api = client.RbacAuthorizationV1Api(self.api)
        patch = {"rules": rules}  # a list without a merge key: replaced as a whole
        if kind == "Role":
            api.patch_namespaced_role(name, namespace, patch)
        else:
            api.patch_cluster_role(name, patch)

    @contextlib.contextmanager
    def without(self, rule: dict[str, Any], namespace: str) -> Iterator[None]:
        """The installed RBAC minus ``rule`` (in force when entered), restored afterwards."""
        kind, name, role_namespace = self.holder(rule)
        installed = self.rules(kind, name, role_namespace)
        assert rule in installed, f"{rule} is not in the installed {kind} {name}: {installed}"
        probe_namespace = None if rule in CHART_RULES["clusterScoped"] else namespace
        self._set_rules(kind, name, role_namespace, [r for r in installed if r != rule])
        try:
            wait_until_allowed(self.api, self.user, rule, probe_namespace, allowed=False)
            yield
        finally:
            self._set_rules(kind, name, role_namespace, installed)
            wait_until_allowed(self.api, self.user, rule, probe_namespace, allowed=True)

    def operator(self, log_path: Path) -> DeployedOperator:
        # The installed args, with the policy widened to the address the scenarios name, as an
        # administrator would (chart value analysisPolicy.allowedPrometheus).
        args = [*self.args, f"--allowed-prometheus={PROMETHEUS['address']}"]
        return DeployedOperator(self.kubeconfig, args, log_path).start()


def operator_args(api: client.ApiClient, namespace: str, name: str) -> tuple[list[str], str]:
    """The installed operator Deployment's container args, and its ServiceAccount's name."""
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    (container,) = deployment.spec.template.spec.containers
    assert not container.command, "the image's entrypoint (`canaria run`) is what runs"
    return list(container.args), deployment.spec.template.spec.service_account_name


def mint_token(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str, account: str, path: Path
) -> tuple[str, Path]:
    """A TokenRequest token for ServiceAccount ``namespace/account``, once every declared rule is in force."""
    core = client.CoreV1Api(api)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=3600))
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    user = f"system:serviceaccount:{namespace}:{account}"
    for perm in rbac.permissions(all_namespaces=True):  # what every install grants
        wait_until_allowed(api, user, perm.rule(), None if perm.cluster_scoped else "default", allowed=True)
    kubeconfig = write_kubeconfig(
        path,
        server=control_plane.server,
        ca_file=control_plane.ca_file,
        user=user,
        token=token,
        namespace=namespace,
    )
    return user, kubeconfig


# ---------------------------------------------------------------------------------------------- installs


INSTALLS = ("helm", "helm-watch", "kustomize")


def _install_helm(
    helm: ModuleType, control_plane: ControlPlane, api: client.ApiClient, tmp: Path, *, watch: bool
) -> Iterator[Install]:
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    tag = secrets.token_hex(3)
    release, namespace = f"lp-{tag}", make_namespace(core, f"lp-{tag}")
    watched = make_namespace(core, f"lp-{tag}-w") if watch else None
    values = {"watchNamespaces": [watched]} if watched else None
    fullname, cluster_role = chart_fullname(release), chart_cluster_role_name(release, namespace)
    cfg = helm.Config(kubeconfig_path=str(control_plane.kubeconfig), namespace=namespace)
    try:
        assert cfg.install(str(CHART), release, values, namespace=namespace)["status"] == "deployed"
        kubeconfig = chart_service_account_kubeconfig(
            control_plane,
            release,
            namespace,
            watch_namespaces=[watched] if watched else None,
            path=tmp / f"{release}.kubeconfig",
        )
        args, account = operator_args(api, namespace, fullname)
        yield Install(
            name="helm-watch" if watch else "helm",
            api=api,
            user=f"system:serviceaccount:{namespace}:{account}",
            kubeconfig=kubeconfig,
            args=args,
            cluster_role=cluster_role,
            generated=CHART_RULES["clusterScoped"] + CHART_RULES["role"]
            if watch
            else CHART_RULES["clusterRole"],
            role=(watched, fullname) if watched else None,
            watched=watched,
        )
    finally:
        with contextlib.suppress(Exception):
            cfg.uninstall(release, ignore_not_found=True)
        cfg.close()
        for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
            with contextlib.suppress(ApiException):
                delete(cluster_role)
        for ns in filter(None, (watched, namespace)):
            with contextlib.suppress(ApiException):
                purge(api, ns)
                core.delete_namespace(ns, propagation_policy="Background")


def _install_kustomize(
    kubectl_bin: str, control_plane: ControlPlane, api: client.ApiClient, tmp: Path
) -> Iterator[Install]:
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    wait_namespace_gone(core, KUSTOMIZE_NAMESPACE)
    apply = [kubectl_bin, "--kubeconfig", str(control_plane.kubeconfig), "apply", "--server-side"]
    # The session's CRD is owned by another field manager already: take it over, as GitOps tools do.
    done = subprocess.run(
        [*apply, "--force-conflicts", "-k", str(MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert done.returncode == 0, done.stderr
        args, account = operator_args(api, KUSTOMIZE_NAMESPACE, "canaria")
        user, kubeconfig = mint_token(
            control_plane, api, KUSTOMIZE_NAMESPACE, account, tmp / "kustomize.kubeconfig"
        )
        yield Install(
            name="kustomize",
            api=api,
            user=user,
            kubeconfig=kubeconfig,
            args=args,
            cluster_role="canaria",
            generated=KUSTOMIZE_RULES,
        )
    finally:
        for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
            with contextlib.suppress(ApiException):
                delete("canaria")
        with contextlib.suppress(ApiException):
            core.delete_namespace(KUSTOMIZE_NAMESPACE, propagation_policy="Background")


@pytest.fixture(scope="module")
def install(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    crd: str,
    _session_kubelet: Kubelet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    """One install path, installed for every test of this module that uses it (pytest groups them)."""
    tmp = tmp_path_factory.mktemp(f"install-{request.param}")
    if request.param == "kustomize":
        yield from _install_kustomize(request.getfixturevalue("kubectl_bin"), control_plane, admin_api, tmp)
    else:
        helm = request.getfixturevalue("helm")
        yield from _install_helm(helm, control_plane, admin_api, tmp, watch=request.param == "helm-watch")


@pytest.fixture
def target(install: Install, control_plane: ControlPlane, admin_api: client.ApiClient) -> Iterator[str]:
    """The namespace a test's ModelDeployments go to: a fresh one, or the one the install watches."""
    core = client.CoreV1Api(admin_api)
    name = install.watched or make_namespace(core, f"t-{secrets.token_hex(4)}")
    try:
        yield name
    finally:
        purge(admin_api, name)
        if name != install.watched:
            with contextlib.suppress(ApiException):
                core.delete_namespace(name, propagation_policy="Background")


# ---------------------------------------------------------------------------------------------- scenarios


# Nothing listens on port 9: the token is read (the Secret consents by its label) and the connection refused.
PROMETHEUS = {
    "address": "https://127.0.0.1:9",
    "bearerTokenSecretRef": {"name": "prometheus", "key": "token"},
}
DRY_RUN_METRIC = {
    "name": "error-rate",
    "query": 'sum(rate(http_requests_total{service="{{service}}",code=~"5.."}[1m]))',
    "max": 0.05,
    "dryRun": True,  # Prometheus is unreachable: the run is recorded (the token was read), never gating
}


# run by the test kubelet as a local process: the canary's Job (get, create) and its Pod (list) are used
SMOKE_TEST = {
    "template": {
        "metadata": {"labels": {RUN_LABEL: "local"}},
        "spec": {
            "containers": [{"name": "t", "image": "t", "command": [sys.executable, "-c", "print('ok')"]}]
        },
    }
}


def model(version: str = "v1") -> dict[str, Any]:
    """Routed by a Gateway API HTTPRoute: its calls (the route, a Service per version, deleted with the
    version) are a superset of the replica router's."""
    return model_deployment(
        "fraud",
        version,
        replicas=2,
        progress_deadline="4s",
        metrics=[DRY_RUN_METRIC],
        prometheus=PROMETHEUS,
        rollout={"smokeTest": SMOKE_TEST, "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}}},
    )


@pytest.fixture(autouse=True)
def _httproutes(httproute_crd: str) -> None:
    """Every scenario routes through an HTTPRoute."""


def with_secret(mds: ModelDeployments) -> None:
    """The Secret holding the Prometheus bearer token that ``model()`` refers to, and the HTTPRoute."""
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="prometheus", labels={CREDENTIALS_LABEL: "true"}),
        string_data={"token": "s3cr3t"},
    )
    mds.core.create_namespaced_secret(mds.namespace, secret)
    Routes(mds.core.api_client, mds.namespace).apply(
        "fraud",
        {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [{"name": "fraud", "port": 80}]}]},
    )


@pytest.mark.parametrize("install", INSTALLS, indirect=True)
def test_rollouts_run_under_the_installed_rbac(
    install: Install, target: str, admin_api: client.ApiClient, kubelet: Kubelet, tmp_path: Path
) -> None:
    """Healthy, promoted (with an analysis reading a Secret), reverted, deleted: not one request denied."""
    installed = install.rules("ClusterRole", install.cluster_role, None)
    if install.role:
        installed += install.rules("Role", install.role[1], install.role[0])
    assert sorted(map(json.dumps, installed)) == sorted(map(json.dumps, install.generated)), (
        "the installed rules are the generated ones, which the next test removes one by one"
    )
    mds = ModelDeployments(admin_api, target)
    with_secret(mds)
    operator = install.operator(tmp_path / "operator.log")
    try:
        mds.create(model("v1"))
        mds.wait_phase("fraud", "Healthy", timeout=30, stable="v1")

        mds.set_version("fraud", "v2", reason="retrained")
        status = mds.wait_phase("fraud", "Healthy", timeout=30, stable="v2")
        (result,) = status["analysis"]["results"]
        assert "unreachable" in result["reason"], "the analysis ran with the token read from the Secret"
        wait_for("v1's Deployment deleted", lambda: mds.replicas("fraud") == {"v2": 2}, timeout=20)

        kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get("canaria.dev/version") == "v3"
        mds.set_version("fraud", "v3", reason="a canary that never becomes ready")
        status = mds.wait_phase("fraud", "Reverted", timeout=30, stable="v2")
        assert status["rejected"]["reason"] == "ProgressDeadlineExceeded"
        wait_for("v3's Deployment deleted", lambda: mds.replicas("fraud") == {"v2": 2}, timeout=20)
        wait_for("a RolledBack Event", lambda: "RolledBack" in mds.reasons("fraud"), timeout=20)
        assert mds.core.read_namespaced_service("fraud", target).spec.selector

        mds.custom.delete_namespaced_custom_object(GROUP, VERSION, target, PLURAL, "fraud")
        wait_for(
            "the operator to release its finalizer",
            lambda: not mds.custom.list_namespaced_custom_object(GROUP, VERSION, target, PLURAL)["items"],
            timeout=20,
        )
        denied = [message for message, _ in denials(operator.log_path, install.user)]
        assert not denied, "\n".join(denied)
    except BaseException:
        print(f"--- operator log ({install.name}) ---\n{operator.log_tail(80)}")
        raise
    finally:
        operator.kill()


def _provoke(mds: ModelDeployments, named: Callable[[], list[str]]) -> None:
    """A first deployment, then a canary promoted, stopping as soon as a 403 names the permission.

    kopf's own calls fail at startup, most of Canaria's on the first deployment; reading the Prometheus
    token waits for the canary's first analysis, deleting a Deployment for the promotion.
    """
    with_secret(mds)
    mds.create(model("v1"))

    def healthy(version: str) -> bool:
        status = mds.status("fraud")
        return status.get("phase") == "Healthy" and (status.get("stable") or {}).get("version") == version

    wait_for("a 403, or v1 Healthy", lambda: named() or healthy("v1"), timeout=30, interval=0.1)
    if not named():
        mds.set_version("fraud", "v2")
        wait_for(
            "a 403, or v2 Healthy without v1",
            lambda: named() or (healthy("v2") and mds.replicas("fraud") == {"v2": 2}),
            timeout=30,
            interval=0.1,
        )


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
@pytest.mark.parametrize("install", INSTALLS, indirect=True)
def test_removing_a_rule_is_reported_by_name(
    install: Install,
    rule: dict[str, Any],
    target: str,
    admin_api: client.ApiClient,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The installed RBAC minus one rule: the operator's log names exactly that permission in a 403."""
    if rule not in install.generated:
        pytest.skip(f"the {install.name} install does not grant {rule_id(rule)}")
    mds = ModelDeployments(admin_api, target)
    log_path = tmp_path / "operator.log"
    with install.without(rule, target):
        operator = install.operator(log_path)
        try:
            named = lambda: named_denials(log_path, install.user, rule, target)  # noqa: E731
            _provoke(mds, named)
            reports = wait_for(f"a 403 naming {rule_id(rule)}", named, timeout=3, interval=0.1)
        except BaseException:
            print(f"--- operator log ({install.name} without {rule_id(rule)}) ---\n{operator.log_tail(60)}")
            raise
        finally:
            operator.kill()
    # Canaria's own message leads with what was refused, where (after the object it reconciled, or at start
    # after "cannot start" and in all namespaces when it watches them all); kopf's names the failed request.
    resource = rule["resources"][0].split("/")[0]
    for message in (m for m in reports if OURS in m):
        head = re.sub(rf"^({re.escape(STARTUP)}|{target}/[\w.-]+: )", "", message).split(":")[0]
        assert head.startswith("forbidden to ") and resource in head, message
        assert head.endswith((f" in {target}", " in all namespaces")), message


VERBS = [
    pytest.param(rule, verb, id=f"{rule_id(rule)}-{verb}")
    for rule in RULES
    if len(rule["verbs"]) > 1
    for verb in rule["verbs"]
]


@pytest.mark.parametrize(("rule", "verb"), VERBS)
def test_removing_a_verb_is_reported_by_name(
    rule: dict[str, Any],
    verb: str,
    namespace: str,
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
) -> None:
    """Each verb of a rule is used too: the declared rules minus one verb, bound to a ServiceAccount of
    their own, and the operator watching one namespace (as with ``watchNamespaces``, where kopf lists and
    watches namespaces), names exactly that verb in a 403."""
    rules = [{**r, "verbs": [v for v in r["verbs"] if v != verb]} if r == rule else r for r in RULES]
    operator = start_operator(rules=rules, args=[f"--allowed-prometheus={PROMETHEUS['address']}"])
    user = f"system:serviceaccount:{namespace}:canaria-limited"
    named = lambda: named_denials(operator.log_path, user, {**rule, "verbs": [verb]}, namespace)  # noqa: E731
    try:
        _provoke(mds, named)
        wait_for(f"a 403 naming {verb} {rule_id(rule)}", named, timeout=3, interval=0.1)
    finally:
        operator.kill()


# ---------------------------------------------------------------------------------------------- the CRD rule


def test_crd_watch_lets_the_operator_serve_a_crd_that_appears_after_it_started(tmp_path: Path) -> None:
    """What ``customresourcedefinitions`` list/watch buys: a CRD appearing later is served without restart.

    On a private control plane (the session's CRD cannot be deleted under the other tests), two operators
    start before the CRD exists, one with every rule and one without the CRD rule; then the CRD and one
    ModelDeployment for each are created. kopf re-reads API discovery on every event of a CRD it watches.
    The events of a CRD's creation usually come before the API server lists it in discovery (kopf loses
    that race here nearly every time), so the test waits for discovery and changes the CRD once more, as
    the next `kubectl apply` or GitOps sync would. Then only the operator with the rule serves it.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS", "")
    if not assets:
        pytest.skip("KUBEBUILDER_ASSETS is not set")
    cp = ControlPlane(assets, tmp_path / "cp", controllers=False).start()
    operators: list[OperatorProcess] = []
    try:
        with cp.api_client() as api:
            core = client.CoreV1Api(api)
            crd_rule = next(p.rule() for p in rbac.PERMISSIONS if p.resource == "customresourcedefinitions")
            variants = {
                "with-crd-rule": rbac.rules(),
                "without-crd-rule": [r for r in rbac.rules() if r != crd_rule],
            }
            for namespace, rules in variants.items():
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
                kubeconfig = cp.service_account_kubeconfig(
                    namespace, "canaria", rules, tmp_path / f"{namespace}.kubeconfig"
                )
                operators.append(
                    OperatorProcess(
                        kubeconfig, tmp_path / f"{namespace}.log", namespaces=[namespace], verbose=True
                    ).start()
                )
            with_rule, without_rule = operators
            user = "system:serviceaccount:without-crd-rule:canaria"
            wait_for(
                "both operators to have looked for CRDs",
                lambda: (
                    "Starting the watch-stream for customresourcedefinitions" in with_rule.log_tail(200)
                    and named_denials(without_rule.log_path, user, crd_rule, "without-crd-rule")
                ),
                timeout=30,
            )
            install_crd(api)
            wait_for(
                "API discovery to list modeldeployments",
                lambda: any(
                    r.name == PLURAL
                    for r in client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources
                ),
                timeout=30,
            )
            client.ApiextensionsV1Api(api).patch_custom_resource_definition(
                f"{PLURAL}.{GROUP}", {"metadata": {"annotations": {"example.com/synced": "again"}}}
            )
            for namespace in variants:
                ModelDeployments(api, namespace).create(model_deployment("fraud", "v1"))

            served = ModelDeployments(api, "with-crd-rule")
            nudges = iter(range(1_000))

            def served_yet() -> object:
                """Served, or change the CRD again (as a later sync would) in case kopf lost the race."""
                phase = served.status("fraud").get("phase")
                if not phase:
                    client.ApiextensionsV1Api(api).patch_custom_resource_definition(
                        f"{PLURAL}.{GROUP}",
                        {"metadata": {"annotations": {"example.com/synced": str(next(nudges))}}},
                    )
                return phase

            wait_for("the operator with the rule to serve the new CRD", served_yet, timeout=45, interval=1.0)
            time.sleep(3)  # as long again as the first one needed, and more
            unserved = ModelDeployments(api, "without-crd-rule")
            assert unserved.status("fraud") == {}, "without the rule, a CRD that appears later is not served"
            assert unserved.replicas("fraud") == {}
    except BaseException:
        for operator in operators:
            print(f"--- {operator.log_path.name} ---\n{operator.log_tail(40)}")
        raise
    finally:
        for operator in operators:
            operator.kill()
        cp.stop()
