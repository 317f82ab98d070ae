"""Fixtures for the integration tier: one real control plane per session, one namespace per test.

A start costs seconds (apiserver ready, then the controller manager's informers), so the cluster and the
test kubelet are session-scoped; isolation comes from a fresh namespace per test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.kube.rbac import rules as rbac_rules
from canaria.sandbox.controlplane import ControlPlane, missing_binaries
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, install_crd

_HERE = Path(__file__).resolve().parent
_SKIP_UNSET = (
    "KUBEBUILDER_ASSETS is not set: the integration tier needs a real kube-apiserver (see ../shared/envtest)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``integration`` so ``-m 'not integration'`` deselects them."""
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver + kube-controller-manager; skips when the binaries are absent."""
    assets = os.environ.get("KUBEBUILDER_ASSETS", "")
    if not assets:
        pytest.skip(_SKIP_UNSET)
    if missing := missing_binaries(assets):
        pytest.skip(
            f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}: the integration tier needs a real"
            " kube-apiserver (see ../shared/envtest)"
        )
    cp = ControlPlane(assets, tmp_path_factory.mktemp("controlplane"))
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An ApiClient with the admin (system:masters) kubeconfig, built explicitly, never from KUBECONFIG."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def _session_kubelet(control_plane: ControlPlane) -> Iterator[Kubelet]:
    """One kubelet thread for the session, with its own ApiClient (it runs concurrently with tests)."""
    api = control_plane.api_client()
    kubelet = Kubelet(api).start()
    try:
        yield kubelet
    finally:
        kubelet.stop()
        api.close()


@pytest.fixture
def kubelet(_session_kubelet: Kubelet) -> Iterator[Kubelet]:
    """The running test kubelet; ``never_ready`` set by a test is reset afterwards."""
    try:
        yield _session_kubelet
    finally:
        _session_kubelet.reset()


@pytest.fixture
def namespace(control_plane: ControlPlane, admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace ``t-<random>`` whose ``default`` ServiceAccount exists (Pod creation needs it).

    Deleted afterwards without waiting: the namespace controller finishes in the background.
    """
    core = client.CoreV1Api(admin_api)
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        # The first namespace of a session waits for the controller manager's informers (~4 s).
        deadline = time.monotonic() + 30
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                break
            except ApiException as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no ServiceAccount default in {name} after 30 s: is kube-controller-manager running?"
                    f" (logs: {control_plane.log_dir})"
                )
            time.sleep(0.05)
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane, admin_api: client.ApiClient) -> str:
    """The generated ModelDeployment CRD, applied for real (the API server enforces its schema and CEL)."""
    install_crd(admin_api)
    return "modeldeployments.canaria.dev"


@pytest.fixture
def mds(crd: str, admin_api: client.ApiClient, namespace: str) -> ModelDeployments:
    """ModelDeployments of the test's namespace, as admin (the user's side)."""
    return ModelDeployments(admin_api, namespace)


@pytest.fixture
def start_operator(
    crd: str,
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `canaria run` watching the test namespace, under a token bound to exactly canaria.rbac.

    Returns a factory so a test can start it again after killing it; every process is stopped after.
    """
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "canaria", rbac_rules(), tmp_path / "operator.kubeconfig"
    )
    started: list[OperatorProcess] = []

    def start(
        *,
        prometheus: str | None = None,
        namespaces: list[str] | None = None,
        rules: list[dict[str, Any]] | None = None,
        args: list[str] | None = None,
    ) -> OperatorProcess:
        """`rules` runs it under another ServiceAccount granted exactly those rules instead; `args` are
        more flags of `canaria run` (e.g. the analysis policy)."""
        config = kubeconfig
        if rules is not None:
            config = control_plane.service_account_kubeconfig(
                namespace, "canaria-limited", rules, tmp_path / "limited.kubeconfig"
            )
        process = OperatorProcess(
            config,
            tmp_path / "operator.log",
            namespaces=namespaces or [namespace],
            prometheus=prometheus,
            args=args or (),
            verbose=True,
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    _release_finalizers(admin_api, namespace)
    report = getattr(request.node, "rep_call", None)
    if started and (report is None or report.failed):
        print(f"--- operator log ({started[-1].log_path}) ---\n{started[-1].log_tail()}")


def _release_finalizers(api: client.ApiClient, namespace: str) -> None:
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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can show logs only for failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
