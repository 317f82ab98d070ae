"""manifests/examples/ against the real API server: the server itself enforces the generated schema and
CEL rules, and names the field at fault exactly where the operator's own validation does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from canaria.core.api import ModelDeploymentSpec

from .harness import REPO, ModelDeployments, load_example

EXAMPLES = REPO / "manifests" / "examples"
GOOD = sorted(EXAMPLES.glob("*.yaml"))
BAD = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def _model_deployments(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in load_example(path) if doc.get("kind") == "ModelDeployment"]


def _field_paths(spec: dict[str, Any]) -> list[str]:
    """Where pydantic puts the blame, spelled as the API server spells field paths."""
    try:
        ModelDeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        paths = []
        for error in exc.errors():
            path = "spec"
            for part in error["loc"]:
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
            paths.append(path)
        return paths
    return []


def _dry_run_create(mds: ModelDeployments, doc: dict[str, Any]) -> dict[str, Any]:
    body = {**doc, "metadata": {**doc["metadata"], "namespace": mds.namespace}}
    return mds.custom.create_namespaced_custom_object(
        "canaria.dev", "v1alpha1", mds.namespace, "modeldeployments", body, dry_run="All"
    )


def test_there_are_examples_of_both_kinds() -> None:
    assert len(GOOD) >= 3 and len(BAD) >= 4


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example_is_accepted(path: Path, mds: ModelDeployments) -> None:
    for doc in _model_deployments(path):
        created = _dry_run_create(mds, doc)
        assert created["spec"]["model"]["version"] == doc["spec"]["model"]["version"]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_example_is_rejected_naming_the_field(path: Path, mds: ModelDeployments) -> None:
    for doc in _model_deployments(path):
        expected = _field_paths(doc["spec"])
        assert expected, f"{path.name} should be invalid for the operator too"
        with pytest.raises(ApiException) as raised:
            _dry_run_create(mds, doc)
        assert raised.value.status == 422, raised.value.body
        message = raised.value.body
        assert any(field in message for field in expected), (
            f"server said {message}; operator blames {expected}"
        )
