"""The session's real control plane (etcd + kube-apiserver + controller manager) and test kubelet, shared by
every tier that runs the operator against it (tests/integration, tests/image); registered in conftest.py.

A start costs seconds (apiserver ready, then the controller manager's informers), so the cluster and the
test kubelet are session-scoped; isolation comes from a fresh namespace per test.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria.sandbox.controlplane import ControlPlane, missing_binaries
from canaria.sandbox.kubelet import Kubelet
from tests.integration.harness import ModelDeployments, install_crd

_SKIP_UNSET = (
    "KUBEBUILDER_ASSETS is not set: the integration tier needs a real kube-apiserver (see ../shared/envtest)"
)


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
