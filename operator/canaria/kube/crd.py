"""Build the ModelDeployment CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no
`$ref`, no `anyOf` with null, no `additionalProperties: false` next to `properties`. This module does
that translation and nothing else, so the API server and the operator validate from one definition.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.core.api import DNS_1035, MAX_NAME, ModelDeploymentSpec, ModelDeploymentStatus, cel, cel_regex

_DROP_KEYS = {"title", "additionalProperties"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every `$ref` by its definition; a field's own description wins over the class docstring."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **rest}, defs)
    return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}


def _structural(node: Any) -> Any:
    """Make a pydantic JSON Schema node acceptable to the API server."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        non_null = [branch for branch in any_of if branch.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express anyOf {any_of} structurally")
        node = {**non_null[0], **node}
    if node.get("default", 0) is None:
        del node["default"]
    # A map (dict[str, float]) keeps its additionalProperties: that is how the schema types its values.
    keep_additional = "properties" not in node and isinstance(node.get("additionalProperties"), dict)
    result = {
        k: _structural(v)
        for k, v in node.items()
        if k not in _DROP_KEYS or (keep_additional and k == "additionalProperties")
    }
    if "properties" in result:
        result["properties"] = {name: _structural(sub) for name, sub in node["properties"].items()}
        result.setdefault("type", "object")
        if not result["properties"]:
            del result["properties"]  # the API server drops an empty map; keep generated == stored
    if "enum" in result and "type" not in result:
        result["type"] = "string"
    return result


def model_schema(model: type) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(_inline(raw, raw.get("$defs", {})))


def openapi_schema() -> dict[str, Any]:
    """The full openAPIV3Schema of a ModelDeployment."""
    return {
        "type": "object",
        "description": "A model version that should serve, rolled out in canary steps gated by Prometheus.",
        "required": ["spec"],
        # The name becomes the Service's (a DNS-1035 label) and `<name>-<version>` the Deployments':
        # refused here rather than half-created later.
        "x-kubernetes-validations": [
            cel(
                f"self.metadata.name.size() <= {MAX_NAME}",
                f"metadata.name must be at most {MAX_NAME} characters",
                ".metadata",
            ),
            cel(
                f"self.metadata.name.matches({cel_regex(DNS_1035)})",
                "metadata.name must be a DNS-1035 label: lower-case letters, digits and '-', starting with a "
                "letter and ending with a letter or digit",
                ".metadata",
            ),
        ],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: canaria.dev/v1alpha1."},
            "kind": {"type": "string", "description": "ModelDeployment."},
            "metadata": {"type": "object"},
            "spec": model_schema(ModelDeploymentSpec),
            "status": model_schema(ModelDeploymentStatus),
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Desired", "type": "string", "jsonPath": ".spec.model.version"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.version"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canary.weight"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def custom_resource_definition() -> dict[str, Any]:
    """The CRD object as the API server takes it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["md"],
                "categories": ["canaria"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as committed in crds/ (stable key order, so diffs are meaningful)."""
    header = (
        "# Generated by `canaria crd` from canaria/core/api.py."
        " Do not edit: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=120)
