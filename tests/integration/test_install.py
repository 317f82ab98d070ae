"""The install paths against the real control plane: Helm (install, upgrade, uninstall), `kubectl apply -k`,
and server-side dry runs of the rendered chart.

The control plane is shared by the whole session: every test uses its own release name and namespaces, and
deletes the cluster-scoped objects it created (ClusterRoles, bindings), except the CRD, which is the same
for everyone and which other tests rely on.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.kube import rbac
from canaria.kube.crd import render_crd
from canaria.sandbox.controlplane import ControlPlane, write_kubeconfig

from .harness import absent, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "canaria"
MANIFESTS = ROOT / "manifests"
CRD_NAME = f"{PLURAL}.{GROUP}"
KUSTOMIZE_NAMESPACE = "canaria-system"


# ---------------------------------------------------------------------------------------------- helpers


def chart_fullname(release: str) -> str:
    """The chart's object name prefix for ``release`` (templates/_helpers.tpl, without overrides)."""
    return (release if "canaria" in release else f"{release}-canaria")[:63].rstrip("-")


def chart_cluster_role_name(release: str, namespace: str) -> str:
    return f"{chart_fullname(release)}-{namespace}"[:63].rstrip("-")


def as_dicts(api: client.ApiClient, rules: list[Any] | None) -> list[dict[str, Any]]:
    """RBAC rules as read from the API (V1PolicyRule) in the shape canaria.kube.rbac declares them."""
    return [api.sanitize_for_serialization(rule) for rule in rules or []]


def kubectl(
    kubectl_bin: str, control_plane: ControlPlane, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kubectl as the admin of the test control plane (never the ambient KUBECONFIG)."""
    return subprocess.run(
        [kubectl_bin, "--kubeconfig", str(control_plane.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def helm_config(helm: ModuleType, control_plane: ControlPlane, namespace: str) -> Iterator[Any]:
    cfg = helm.Config(kubeconfig_path=str(control_plane.kubeconfig), namespace=namespace)
    try:
        yield cfg
    finally:
        cfg.close()


@contextlib.contextmanager
def cleanup_release(cfg: Any, release: str, admin_api: client.ApiClient, namespace: str) -> Iterator[None]:
    """Uninstall ``release`` whatever happens, and make sure its cluster-scoped RBAC is gone too."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            cfg.uninstall(release, ignore_not_found=True)
        rbac_api = client.RbacAuthorizationV1Api(admin_api)
        name = chart_cluster_role_name(release, namespace)
        for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
            with contextlib.suppress(ApiException):
                delete(name)


@pytest.fixture
def extra_namespaces(admin_api: client.ApiClient, namespace: str) -> Iterator[Callable[[int], list[str]]]:
    """Factory of more fresh namespaces (named after the test's one), deleted after the test."""
    core = client.CoreV1Api(admin_api)
    made: list[str] = []

    def make(count: int) -> list[str]:
        names = [f"{namespace}-w{len(made) + i}" for i in range(count)]
        for name in names:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            made.append(name)
        return names

    try:
        yield make
    finally:
        for name in made:
            with contextlib.suppress(ApiException):
                core.delete_namespace(name, propagation_policy="Background")


def chart_service_account_kubeconfig(
    control_plane: ControlPlane,
    release: str,
    namespace: str,
    *,
    watch_namespaces: list[str] | None = None,
    path: str | Path | None = None,
    expiration_seconds: int = 3600,
) -> Path:
    """A kubeconfig authenticating as the ServiceAccount that chart release ``release`` runs the operator as.

    The ServiceAccount is found by the chart's labels in the release ``namespace``; its token is minted with
    the TokenRequest API, so the holder has exactly the (Cluster)Roles the chart created, nothing more: run
    the operator with it (``canaria run --kubeconfig PATH``) to prove the chart grants what the operator
    uses. Returns only once the API server's authorizer enforces the grants (cluster-scoped rules, and the
    namespaced ones in each of ``watch_namespaces``, default the release namespace), so a first request
    cannot race the RBAC informer.
    """
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/name=canaria"
        accounts = core.list_namespaced_service_account(namespace, label_selector=selector).items
        if len(accounts) != 1:
            raise LookupError(
                f"release {release} in {namespace} has {len(accounts)} ServiceAccounts, not one"
            )
        name = accounts[0].metadata.name
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        user = f"system:serviceaccount:{namespace}:{name}"
        authz = client.AuthorizationV1Api(api)
        granted = rbac.permissions(all_namespaces=True)  # what either mode grants
        checks: list[tuple[rbac.Permission, str | None]] = [
            (perm, None) for perm in granted if perm.cluster_scoped
        ] + [
            (perm, ns)
            for ns in (watch_namespaces or [namespace])
            for perm in granted
            if not perm.cluster_scoped
        ]
        for perm, ns in checks:
            resource, _, subresource = perm.resource.partition("/")
            attrs = {"group": perm.group, "resource": resource, "verb": perm.verbs[0]}
            if subresource:
                attrs["subresource"] = subresource
            if ns:
                attrs["namespace"] = ns
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                    "resourceAttributes": attrs,
                },
            }
            deadline = time.monotonic() + 10
            while not authz.create_subject_access_review(review).status.allowed:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{user} is not granted {attrs} 10 s after the release was installed")
                time.sleep(0.05)
    target = Path(path) if path else control_plane.work_dir / f"sa-{namespace}-{release}.kubeconfig"
    return write_kubeconfig(
        target,
        server=control_plane.server,
        ca_file=control_plane.ca_file,
        user=user,
        token=token,
        namespace=namespace,
    )


def can_i(
    api: client.ApiClient, verb: str, resource: str, group: str = "", namespace: str | None = None
) -> bool:
    """SelfSubjectAccessReview as whoever ``api`` authenticates as."""
    name, _, subresource = resource.partition("/")
    attrs: dict[str, Any] = {"group": group, "resource": name, "verb": verb}
    if subresource:
        attrs["subresource"] = subresource
    if namespace:
        attrs["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }
    return bool(client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed)


def crd_established(admin_api: client.ApiClient) -> bool:
    crd = client.ApiextensionsV1Api(admin_api).read_custom_resource_definition(CRD_NAME)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def render_chart(helm: ModuleType, release: str, namespace: str, values: dict[str, Any] | None = None) -> str:
    """CRDs + templates of the chart as one YAML stream (what `helm template --include-crds` prints)."""
    with helm.Chart.load(str(CHART)) as chart:
        crds = [c["data"] for c in chart.crds]
        rendered = chart.render(values, name=release, namespace=namespace)
    templates = [
        text for path, text in sorted(rendered.items()) if not path.endswith(".txt") and text.strip()
    ]
    return "\n---\n".join([*crds, *templates])


# ---------------------------------------------------------------------------------------------- Helm


def test_helm_install_upgrade_uninstall(
    helm: ModuleType, control_plane: ControlPlane, admin_api: client.ApiClient, namespace: str
) -> None:
    release = f"inst-{secrets.token_hex(3)}"
    fullname, cluster_role = chart_fullname(release), chart_cluster_role_name(release, namespace)
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    with (
        helm_config(helm, control_plane, namespace) as cfg,
        cleanup_release(cfg, release, admin_api, namespace),
    ):
        installed = cfg.install(str(CHART), release, None, namespace=namespace)
        assert (installed["status"], installed["revision"], installed["namespace"]) == (
            "deployed",
            1,
            namespace,
        )
        assert [(r["name"], r["status"]) for r in cfg.list()] == [(release, "deployed")]

        # The CRD (from the chart's crds/, or already there: then Helm leaves it alone) is served.
        wait_for("the CRD to be established", lambda: crd_established(admin_api), timeout=30, interval=0.1)
        crd = client.ApiextensionsV1Api(admin_api).read_custom_resource_definition(CRD_NAME)
        assert crd.spec.names.short_names == ["md"] and crd.spec.versions[0].name == VERSION

        role = rbac_api.read_cluster_role(cluster_role)
        assert as_dicts(admin_api, role.rules) == rbac.rules(all_namespaces=True)
        binding = rbac_api.read_cluster_role_binding(cluster_role)
        assert binding.role_ref.name == cluster_role
        assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
            ("ServiceAccount", fullname, namespace)
        ]
        core.read_namespaced_service_account(fullname, namespace)
        core.read_namespaced_service(f"{fullname}-metrics", namespace)
        deployment = apps.read_namespaced_deployment(fullname, namespace)
        (container,) = deployment.spec.template.spec.containers
        assert "--all-namespaces" in container.args and "--log-format=json" in container.args
        assert container.security_context.read_only_root_filesystem is True
        assert deployment.spec.template.spec.service_account_name == fullname
        assert rbac_api.list_namespaced_role(namespace).items == []

        upgraded = cfg.upgrade(
            str(CHART),
            release,
            {"logFormat": "plain", "prometheusAddress": "http://prometheus.monitoring:9090"},
            namespace=namespace,
        )
        assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
        assert [h["revision"] for h in cfg.history(release)] == [1, 2]
        (container,) = apps.read_namespaced_deployment(fullname, namespace).spec.template.spec.containers
        assert "--log-format=plain" in container.args
        assert "--prometheus-address=http://prometheus.monitoring:9090" in container.args

        cfg.uninstall(release)
        assert cfg.list(all_states=True) == []
        assert absent(lambda: apps.read_namespaced_deployment(fullname, namespace))
        assert absent(lambda: core.read_namespaced_service_account(fullname, namespace))
        assert absent(lambda: rbac_api.read_cluster_role(cluster_role))
        assert absent(lambda: rbac_api.read_cluster_role_binding(cluster_role))
        assert crd_established(admin_api), "helm uninstall keeps the CRD (and so every ModelDeployment)"


def test_helm_install_watch_namespaces(
    helm: ModuleType,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    namespace: str,
    extra_namespaces: Callable[[int], list[str]],
) -> None:
    release = f"watch-{secrets.token_hex(3)}"
    watched = extra_namespaces(2)
    fullname, cluster_role = chart_fullname(release), chart_cluster_role_name(release, namespace)
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    with (
        helm_config(helm, control_plane, namespace) as cfg,
        cleanup_release(cfg, release, admin_api, namespace),
    ):
        installed = cfg.install(str(CHART), release, {"watchNamespaces": watched}, namespace=namespace)
        assert installed["status"] == "deployed"

        for ns in watched:
            role = rbac_api.read_namespaced_role(fullname, ns)
            assert as_dicts(admin_api, role.rules) == rbac.rules(include_cluster_scoped=False)
            binding = rbac_api.read_namespaced_role_binding(fullname, ns)
            assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", fullname)
            assert [(s.name, s.namespace) for s in binding.subjects] == [(fullname, namespace)]
        assert rbac_api.list_namespaced_role(namespace).items == [], "the release namespace is not watched"
        cluster_rules = as_dicts(admin_api, rbac_api.read_cluster_role(cluster_role).rules)
        assert cluster_rules == [p.rule() for p in rbac.PERMISSIONS if p.cluster_scoped]
        (container,) = (
            client.AppsV1Api(admin_api)
            .read_namespaced_deployment(fullname, namespace)
            .spec.template.spec.containers
        )
        assert [a for a in container.args if a.startswith("--namespace")] == [
            f"--namespace={ns}" for ns in watched
        ]
        assert "--all-namespaces" not in container.args

        cfg.uninstall(release)
        for ns in watched:
            assert absent(lambda ns=ns: rbac_api.read_namespaced_role(fullname, ns))
        assert absent(lambda: rbac_api.read_cluster_role(cluster_role))


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces"])
def test_chart_service_account_has_exactly_the_declared_permissions(
    helm: ModuleType,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    namespace: str,
    extra_namespaces: Callable[[int], list[str]],
    tmp_path: Path,
    mode: str,
) -> None:
    """The token the operator will run with: every declared verb allowed where it should be, nothing else."""
    release = f"sa-{secrets.token_hex(3)}"
    (watched, unwatched) = extra_namespaces(2)
    values = {"watchNamespaces": [watched]} if mode == "watch-namespaces" else None
    with (
        helm_config(helm, control_plane, namespace) as cfg,
        cleanup_release(cfg, release, admin_api, namespace),
    ):
        cfg.install(str(CHART), release, values, namespace=namespace)
        path = chart_service_account_kubeconfig(
            control_plane, release, namespace, watch_namespaces=[watched], path=tmp_path / "sa.kubeconfig"
        )
        assert path.is_file() and (path.stat().st_mode & 0o077) == 0
        with config.new_client_from_config(config_file=str(path)) as sa_api:
            for perm in rbac.permissions(all_namespaces=mode == "all-namespaces"):
                for verb in perm.verbs:
                    ns = None if perm.cluster_scoped else watched
                    assert can_i(sa_api, verb, perm.resource, perm.group, ns), (
                        f"{verb} {perm.resource} in {ns}"
                    )
                    if not perm.cluster_scoped:
                        expected = mode == "all-namespaces"
                        assert can_i(sa_api, verb, perm.resource, perm.group, unwatched) is expected
            # Not declared, so not granted (a sample of what an over-broad role would allow).
            for verb, resource, group in [
                ("list", "secrets", ""),
                ("delete", "services", ""),
                ("update", "modeldeployments", GROUP),
                ("delete", "modeldeployments", GROUP),
                ("create", "pods", ""),
                ("create", "customresourcedefinitions", "apiextensions.k8s.io"),
                ("create", "clusterroles", "rbac.authorization.k8s.io"),
                ("escalate", "roles", "rbac.authorization.k8s.io"),
            ]:
                assert not can_i(sa_api, verb, resource, group, watched), f"{verb} {resource} is granted"
            # And for real: a list it may do, one it may not.
            custom = client.CustomObjectsApi(sa_api)
            custom.list_namespaced_custom_object(GROUP, VERSION, watched, PLURAL)
            with pytest.raises(ApiException) as forbidden:
                client.CoreV1Api(sa_api).list_namespaced_secret(watched)
            assert forbidden.value.status == 403


def test_rendered_chart_passes_server_dry_run(
    helm: ModuleType,
    kubectl_bin: str,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    namespace: str,
) -> None:
    """`kubectl apply --dry-run=server` of `helm template --include-crds`: schemas, RBAC and Pod Security."""
    # warn (not enforce) so that the Deployment itself, not only its Pods, is checked against "restricted".
    client.CoreV1Api(admin_api).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/warn": "restricted"}}}
    )
    for values in (None, {"watchNamespaces": [namespace], "prometheusAddress": "http://prom:9090"}):
        manifest = render_chart(helm, f"dry-{secrets.token_hex(3)}", namespace, values)
        done = kubectl(kubectl_bin, control_plane, "apply", "--dry-run=server", "-f", "-", stdin=manifest)
        assert done.returncode == 0, done.stderr
        kinds = {line.split("/", 1)[0] for line in done.stdout.splitlines()}
        assert {
            "customresourcedefinition.apiextensions.k8s.io",
            "deployment.apps",
            "clusterrole.rbac.authorization.k8s.io",
        } <= kinds, done.stdout
        assert "(server dry run)" in done.stdout
        assert "PodSecurity" not in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------- kustomize


@pytest.fixture
def kustomize_install(
    kubectl_bin: str, control_plane: ControlPlane, admin_api: client.ApiClient
) -> Iterator[None]:
    """Delete what `kubectl apply -k manifests` created, except the shared CRD."""
    yield
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    with contextlib.suppress(ApiException):
        rbac_api.delete_cluster_role_binding("canaria")
    with contextlib.suppress(ApiException):
        rbac_api.delete_cluster_role("canaria")
    with contextlib.suppress(ApiException):
        client.CoreV1Api(admin_api).delete_namespace(KUSTOMIZE_NAMESPACE, propagation_policy="Background")


def test_kubectl_apply_kustomize(
    kubectl_bin: str, control_plane: ControlPlane, admin_api: client.ApiClient, kustomize_install: None
) -> None:
    # The CRD is shared by the session and may already be owned by another field manager (Helm, the
    # harness): take it over, as Argo CD and Flux do when they apply server-side.
    apply = ("apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS))
    done = kubectl(kubectl_bin, control_plane, *apply)
    assert done.returncode == 0, done.stderr
    core, apps = client.CoreV1Api(admin_api), client.AppsV1Api(admin_api)
    rbac_api = client.RbacAuthorizationV1Api(admin_api)

    ns = core.read_namespace(KUSTOMIZE_NAMESPACE)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_for("the CRD to be established", lambda: crd_established(admin_api), timeout=30, interval=0.1)
    raw = client.ApiextensionsV1Api(admin_api).read_custom_resource_definition(
        CRD_NAME, _preload_content=False
    )
    served, generated = json.loads(raw.data)["spec"], yaml.safe_load(render_crd())["spec"]
    assert served["names"] == generated["names"]
    properties = generated["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert served["versions"][0]["schema"]["openAPIV3Schema"]["properties"].keys() == properties.keys()
    assert as_dicts(admin_api, rbac_api.read_cluster_role("canaria").rules) == rbac.rules(all_namespaces=True)
    binding = rbac_api.read_cluster_role_binding("canaria")
    assert [(s.name, s.namespace) for s in binding.subjects] == [("canaria", KUSTOMIZE_NAMESPACE)]
    core.read_namespaced_service_account("canaria", KUSTOMIZE_NAMESPACE)
    deployment = apps.read_namespaced_deployment("canaria", KUSTOMIZE_NAMESPACE)
    assert deployment.spec.template.spec.service_account_name == "canaria"

    # The namespace enforces the "restricted" Pod Security Standard: the ReplicaSet controller can only
    # create the operator's Pod if its spec complies (no kubelet here: it stays Pending, which is fine).
    def pod_created() -> bool:
        return bool(core.list_namespaced_pod(KUSTOMIZE_NAMESPACE).items)

    wait_for(
        "the operator Pod to be admitted under Pod Security 'restricted'",
        pod_created,
        timeout=30,
        interval=0.1,
    )

    # Idempotent, and without conflicts for the same manager: GitOps controllers re-apply all the time.
    again = kubectl(kubectl_bin, control_plane, "apply", "--server-side", "-k", str(MANIFESTS))
    assert again.returncode == 0, again.stderr


def differences(stored: Any, applied: Any, path: str = "") -> list[str]:
    """Paths where the API server's stored form differs from what was applied."""
    if isinstance(stored, dict) and isinstance(applied, dict):
        return [
            d
            for key in sorted(stored.keys() | applied.keys())
            for d in (
                [f"{path}.{key}: only {'stored' if key in stored else 'applied'}"]
                if (key in stored) != (key in applied)
                else differences(stored[key], applied[key], f"{path}.{key}")
            )
        ]
    if isinstance(stored, list) and isinstance(applied, list) and len(stored) == len(applied):
        return [
            d
            for i, (s, a) in enumerate(zip(stored, applied, strict=True))
            for d in differences(s, a, f"{path}[{i}]")
        ]
    return [] if stored == applied else [f"{path}: stored {stored!r}, applied {applied!r}"]


_EMPTY_PROPERTIES = "properties: {}" in render_crd()


@pytest.mark.xfail(
    _EMPTY_PROPERTIES,
    reason="canaria.kube.crd emits `properties: {}`, which the API server drops: the stored CRD then differs"
    " from"
    " the applied one, so a second field manager (Helm, then kubectl/Argo CD/Flux) gets an SSA conflict on"
    " .spec.versions and GitOps diffs never settle",
    strict=True,
)
def test_generated_crd_is_stored_as_generated(kubectl_bin: str, control_plane: ControlPlane) -> None:
    """The API server stores the CRD exactly as generated (no normalisation), so appliers never fight."""
    crd_file = ROOT / "crds" / f"{CRD_NAME}.yaml"
    done = kubectl(
        kubectl_bin,
        control_plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        str(crd_file),
    )
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)["spec"]["versions"]
    applied = yaml.safe_load(crd_file.read_text())["spec"]["versions"]
    assert not differences(stored, applied)
