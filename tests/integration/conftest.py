"""Fixtures for the integration tier: the operator under a token bound to exactly canaria.rbac.

The control plane, the test kubelet and the per-test namespace are shared with tests/image: they live in
tests/fixtures_cluster.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from canaria.kube.rbac import rules as rbac_rules
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.processes import OperatorProcess

from .gatewayapi import install_httproute_crd
from .harness import release_finalizers

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``integration`` so ``-m 'not integration'`` deselects them."""
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def httproute_crd(control_plane: ControlPlane, admin_api: client.ApiClient) -> str:
    """The Gateway API's HTTPRoute CRD (a structural schema of what Canaria reads and writes)."""
    install_httproute_crd(admin_api)
    return "httproutes.gateway.networking.k8s.io"


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
    release_finalizers(admin_api, namespace)
    report = getattr(request.node, "rep_call", None)
    if started and (report is None or report.failed):
        print(f"--- operator log ({started[-1].log_path}) ---\n{started[-1].log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can show logs only for failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
