"""Candidates must beat the serving model, end to end: the real operator process (under its own RBAC)
against the real control plane.

- relative gates: a candidate whose offline AUC is below the serving version's recorded one is refused
  before any traffic moves.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for

NAME = "fraud"
DEADLINE = 45.0

pytestmark = pytest.mark.integration


def test_a_candidate_with_a_lower_auc_than_serving_is_refused_before_any_traffic(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    start_operator()
    body = model_deployment(NAME, "v1", gates=[{"metric": "auc", "minDelta": 0.0}])
    body["spec"]["model"]["evaluation"] = {"auc": 0.94}
    mds.create(body)
    status = mds.wait_phase(NAME, "Healthy", stable="v1", lastKnownGood="v1", timeout=DEADLINE)
    assert status["evaluations"][0]["version"] == "v1"
    assert status["evaluations"][0]["evaluation"] == {"auc": 0.94}
    first = next(e for e in mds.events(NAME) if e.reason == "GatePassed")
    assert "first deployment, nothing to compare with" in first.message

    mds.set_version(NAME, "v2", reason="retrained", evaluation={"auc": 0.93})
    status = mds.wait_phase(NAME, "Failed", stable="v1", timeout=DEADLINE)
    assert status["rejected"]["version"] == "v2" and status["rejected"]["reason"] == "GateFailed"
    assert "canary" not in status
    assert mds.replicas(NAME) == {"v1": 2}, "stable untouched, no canary Deployment"
    refused = wait_for(
        "a GateFailed Event",
        lambda: next((e for e in mds.events(NAME) if e.reason == "GateFailed"), None),
        timeout=15,
    )
    assert refused.type == "Warning"
    assert "auc=0.93 vs 0.94 on serving v1 (delta -0.01, needs >= 0): regresses" in refused.message
    assert "delta -0.01" in status["history"][-1]["message"]
