"""The generated CustomResourceDefinition: structural, documented, committed as generated, and with CEL
rules that compile and evaluate the way the API server would evaluate them.

`validate()` here plays the API server for the unit tier: the openAPIV3Schema through jsonschema, then
every `x-kubernetes-validations` rule through a real CEL implementation (`cel`, common-expression-
language), with messages shaped like the API server's (`spec.rollout.steps: Invalid value: ...: message`).
The Kubernetes CEL list library's `isSorted()` is not part of the Python CEL libraries, so it is
registered as a custom function implementing Kubernetes' semantics (true when each element is <= the
next; elements of one comparable type, otherwise an error). The real API server in the integration tier
is the final judge of the rules; this catches a broken rule without a control plane.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pytest
import yaml

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.kube.crd import custom_resource_definition, openapi_schema, render_crd

from .world import base_spec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / f"{PLURAL}.{GROUP}.yaml"

# ----------------------------------------------------------------------------- the API server, mimicked


def _k8s_is_sorted(items: list[Any]) -> bool:
    """Kubernetes CEL list library `<list>.isSorted()`: ascending (ties allowed), one comparable type."""
    kinds = {type(i) for i in items}
    if len(kinds - {int, float}) > 1 or (kinds - {int, float} and kinds & {int, float}):
        raise TypeError(
            f"isSorted: elements are not mutually comparable: {sorted(k.__name__ for k in kinds)}"
        )
    return all(a <= b for a, b in itertools.pairwise(items))


def _k8s_find_all(text: str, pattern: str) -> list[str]:
    """Kubernetes CEL regex library `<string>.findAll(regex)`: every whole match, in order."""
    return [m.group(0) for m in re.finditer(pattern, text)]


def _k8s_sum(items: list[Any]) -> Any:
    """Kubernetes CEL list library `<list>.sum()`."""
    return sum(items)


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def evaluate_rule(rule: str, value: Any) -> Any:
    context = cel.Context()
    context.add_function("isSorted", _k8s_is_sorted)
    context.add_function("findAll", _k8s_find_all)
    context.add_function("sum", _k8s_sum)
    context.add_function("substring", lambda text, start, end: text[start:end])  # CEL strings extension
    context.add_variable("self", value)
    return _program(rule).execute(context)


def _typed(schema: dict[str, Any], value: Any) -> Any:
    """The value as CEL sees it: `type: number` is always a double, even when written as 1."""
    if value is None:
        return None
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = (props or {}).get(key) or (extra if isinstance(extra, dict) else {})
            out[key] = _typed(sub, item)
        return out
    if kind == "array" and isinstance(value, list):
        return [_typed(schema.get("items", {}), item) for item in value]
    return value


def _path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def walk_rules(schema: dict[str, Any], value: Any, path: list[Any]) -> Iterator[tuple[list[Any], dict, Any]]:
    """(path, rule, value) for every CEL rule that applies to a node present in `value`."""
    if value is None:
        return
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, _typed(schema, value)
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from walk_rules(sub, value[key], [*path, key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not schema.get("properties"):
            for key, item in value.items():
                yield from walk_rules(extra, item, [*path, key])
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from walk_rules(schema["items"], item, [*path, index])


def schema_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(openapi_schema())
    return [
        f"{_path(list(error.absolute_path)) or '<root>'}: Invalid value: {error.instance!r}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def cel_errors(obj: dict[str, Any]) -> list[str]:
    out = []
    for path, rule, value in walk_rules(openapi_schema(), obj, []):
        where = _path(path) + rule.get("fieldPath", "")
        try:
            ok = evaluate_rule(rule["rule"], value)
        except Exception as exc:  # the API server reports a rule that cannot be evaluated as invalid too
            out.append(f"{where}: Invalid value: {rule['rule']!r}: evaluation error: {exc}")
            continue
        if ok is not True:
            out.append(f'{where}: Invalid value: "object": {rule["message"]}')
    return out


def validate(obj: dict[str, Any]) -> list[str]:
    """What `kubectl apply` would be told: schema errors first; CEL runs once the schema holds."""
    errors = schema_errors(obj)
    return errors or cel_errors(obj)


def resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": spec,
    }


def all_rules() -> list[tuple[str, dict[str, str]]]:
    found = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                found.append((path, rule))
            for key, value in node.items():
                visit(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{path}/{index}")

    visit(openapi_schema(), "")
    return found


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties, items, map values)."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


# ---------------------------------------------------------------------------------- the committed file


def test_committed_crd_is_the_generated_one() -> None:
    committed = COMMITTED.read_text()
    assert committed == render_crd(), (
        f"{COMMITTED.relative_to(ROOT)} differs from canaria.crd.render_crd(): regenerate it "
        "(canaria crd > crds/modeldeployments.canaria.dev.yaml)"
    )
    assert yaml.safe_load(committed) == custom_resource_definition()


# -------------------------------------------------------------------------------------- structural


def test_schema_is_structural() -> None:
    for path, node in nodes(openapi_schema()):
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "nullable"):
            assert banned not in node, f"{path or '<root>'} has {banned}"
        assert "type" in node, f"{path or '<root>'} has no type"
        extra = node.get("additionalProperties")
        if extra is not None:
            assert isinstance(extra, dict) and "type" in extra, (
                f"{path}: additionalProperties must type a map"
            )
            assert "properties" not in node, f"{path}: properties and additionalProperties together"
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        if node["type"] == "object" and not node.get("properties") and extra is None:
            # no fields at all: the ObjectMeta the API server knows, free-form (preserved) or a marker object
            allowed = node.get("x-kubernetes-preserve-unknown-fields") or path in (
                ".metadata",
                ".spec.rollout.trafficRouting.replicas",
            )
            assert allowed, f"{path}: object with no shape"
        if "enum" in node:
            assert node["type"] == "string"
        for key in node.get("required", []):
            assert key in node.get("properties", {}), f"{path}: required {key} is not a property"


def test_only_maps_use_additional_properties() -> None:
    maps = [path for path, node in nodes(openapi_schema()) if "additionalProperties" in node]
    assert maps == [".spec.model.evaluation", ".status.evaluations[].evaluation"]


def test_every_field_is_described_for_kubectl_explain() -> None:
    undocumented = [
        path
        for path, node in nodes(openapi_schema())
        if path not in ("", ".metadata") and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert not undocumented, f"fields without a description: {undocumented}"


def test_list_map_keys_are_required() -> None:
    for path, node in nodes(openapi_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), f"{path}: map key {key} must be required"


def test_defaults_satisfy_their_own_schema() -> None:
    for _, node in nodes(openapi_schema()):
        if "default" in node:
            jsonschema.validate(node["default"], {k: v for k, v in node.items() if k != "default"})


def test_crd_metadata_names_columns_and_subresources() -> None:
    crd = custom_resource_definition()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["md"]
    assert (spec["names"]["kind"], spec["names"]["plural"], spec["names"]["singular"]) == (
        "ModelDeployment",
        "modeldeployments",
        "modeldeployment",
    )
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Ready", "Desired", "Stable", "Canary", "Weight", "Age"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns.values():
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        # a filter such as conditions[?(@.type=="Ready")] picks an item of the list
        for part in re.sub(r"\[[^]]*\]", "[]", column["jsonPath"]).strip(".").split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = node["items"]
        expected = {"string": "string", "integer": "integer", "date": "string"}[column["type"]]
        assert node["type"] == expected, column


def test_status_is_not_required_and_spec_is() -> None:
    schema = openapi_schema()
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]["spec"]["required"]) == {"model", "template"}


def test_patterns_and_bounds_reach_the_schema() -> None:
    spec = openapi_schema()["properties"]["spec"]["properties"]
    version = spec["model"]["properties"]["version"]
    assert version["maxLength"] == 40 and version["pattern"].startswith("^[a-z0-9]")
    step = spec["rollout"]["properties"]["steps"]["items"]["properties"]
    assert (step["weight"]["minimum"], step["weight"]["maximum"]) == (1, 100)
    assert step["pause"]["pattern"] == "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$"


# --------------------------------------------------------------------------------------- CEL rules


def test_there_are_cel_rules_for_the_cross_field_checks() -> None:
    messages = {rule["message"] for _, rule in all_rules()}
    assert {
        "set min, max, compare or proportionTest",
        "set min, max, minDelta or maxDelta",
        "minDelta must not exceed maxDelta",
        "set maxRatio, maxDelta or both",
        "a metric compares values (compare) or rates (proportionTest), not both",
        "a metric compares against the baseline: set baseline.enabled",
        "min must not exceed max",
        "a step waits for a pause duration or for a manual promote, not both",
        "step weights must be strictly increasing",
    } <= messages
    assert any(m.startswith("query uses a template variable") for m in messages)


@pytest.mark.parametrize("rule", [r["rule"] for _, r in all_rules()])
def test_every_cel_rule_compiles(rule: str) -> None:
    program = cel.compile(rule)
    # besides `self`, only comprehension variables (s, a, b in `self.map(s, ...)`) may appear
    free = {v for v in program.variables() if f"({v}," not in rule.replace(" ", "")}
    assert free == {"self"}
    # and only functions the API server's CEL environment has (isSorted, sum: the Kubernetes list library;
    # findAll: its regex library; substring, endsWith, double: standard and strings extensions)
    named = {f for f in program.functions() if f[0].isalpha()}
    assert named <= {
        *("isSorted", "matches", "size", "has", "all", "exists", "exists_one", "map", "filter"),
        *("findAll", "substring", "endsWith", "double", "sum"),
    }


RULE_CASES = [
    # (rule message prefix, self value, expected)
    ("set min, max, minDelta", {"metric": "auc", "min": 0.9}, True),
    ("set min, max, minDelta", {"metric": "auc", "minDelta": 0.0}, True),
    ("set min, max, minDelta", {"metric": "auc"}, False),
    (
        "set min, max, compare",
        {"name": "m", "query": "q", "compare": {"against": "stable", "maxRatio": 1.1}},
        True,
    ),
    ("set min, max, compare", {"name": "m", "query": "q"}, False),
    ("set maxRatio", {"against": "stable", "maxDelta": 1}, True),
    ("set maxRatio", {"against": "stable"}, False),
    ("a metric compares against the baseline", {"analysis": {"metrics": [{"proportionTest": {}}]}}, False),
    (
        "a metric compares against the baseline",
        {"analysis": {"metrics": [{"proportionTest": {}}]}, "baseline": {"enabled": True}},
        True,
    ),
    ("a metric compares against the baseline", {"analysis": {"metrics": [{"name": "m"}]}}, True),
    ("min must not exceed max", {"name": "m", "query": "q", "min": 0.1, "max": 0.2}, True),
    ("min must not exceed max", {"name": "m", "query": "q", "min": 0.3, "max": 0.2}, False),
    ("min must not exceed max", {"name": "m", "query": "q", "max": 0.2}, True),
    ("a step waits", {"weight": 10, "pause": "5m"}, True),
    ("a step waits", {"weight": 10, "manual": True}, True),
    ("a step waits", {"weight": 10, "pause": "5m", "manual": False}, True),
    ("a step waits", {"weight": 10, "pause": "5m", "manual": True}, False),
    ("step weights", [{"weight": 10}, {"weight": 50}, {"weight": 100}], True),
    ("step weights", [{"weight": 100}], True),
    ("step weights", [{"weight": 50}, {"weight": 10}], False),
    ("step weights", [{"weight": 10}, {"weight": 10}], False),
    ("step weights", [{"weight": 10}, {"weight": 60}, {"weight": 40}], False),
    ("query uses", {"name": "m", "max": 1.0, "query": 'x{version="{{version}}"}'}, True),
    (
        "query uses",
        {"name": "m", "max": 1.0, "query": 'x{version="{{ stableVersion }}"}[{{interval}}]'},
        True,
    ),
    ("query uses", {"name": "m", "max": 1.0, "query": "sum(rate(x[1m])) / 2 {"}, True),
    ("query uses", {"name": "m", "max": 1.0, "query": 'x{version="{{verison}}"}'}, False),
    ("query uses", {"name": "m", "max": 1.0, "query": 'x{v="{{ver-sion}}"}'}, False),
    ("query uses", {"name": "m", "max": 1.0, "query": "x{{{version}}}"}, False),
    ("interval must be at least", "1s", True),
    ("interval must be at least", "1m30s", True),
    ("interval must be at least", "2d", True),
    ("interval must be at least", "999ms", False),
    ("interval must be at least", "0.5s", False),
    ("timeout must be at most", "1m", True),
    ("timeout must be at most", "250ms", True),
    ("timeout must be at most", "61s", False),
    ("timeout must be at most", "1h", False),
    ("timeout must be at most", "1d", False),
]


@pytest.mark.parametrize(("prefix", "value", "expected"), RULE_CASES)
def test_cel_rules_evaluate_like_the_models(prefix: str, value: Any, expected: bool) -> None:
    rules = {rule["message"]: rule["rule"] for _, rule in all_rules()}
    (rule,) = {r for m, r in rules.items() if m.startswith(prefix)}
    assert evaluate_rule(rule, value) is expected


def test_is_sorted_follows_kubernetes() -> None:
    assert evaluate_rule("self.isSorted()", [1, 2, 2, 3]) is True
    assert evaluate_rule("self.isSorted()", [3, 1]) is False
    assert evaluate_rule("self.isSorted()", []) is True
    assert evaluate_rule("self.isSorted()", ["a", "b"]) is True
    with pytest.raises(RuntimeError, match="isSorted"):
        evaluate_rule("self.isSorted()", ["a", 1])


# ------------------------------------------------------------------------- a resource, end to end


def test_a_good_resource_validates() -> None:
    assert validate(resource(base_spec())) == []


@pytest.mark.parametrize(
    ("overrides", "where", "says"),
    [
        ({"model": {"version": "V2"}}, "spec.model.version", "does not match"),
        ({"model": {"version": "v" * 41}}, "spec.model.version", "is too long"),
        ({"rollout": {"steps": [{"weight": 0}]}}, "spec.rollout.steps[0].weight", "less than the minimum"),
        (
            {"rollout": {"steps": [{"weight": 10, "pause": "5 minutes"}]}},
            "spec.rollout.steps[0].pause",
            "does not match",
        ),
        (
            {"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}},
            "spec.rollout.steps",
            "step weights must be strictly increasing",
        ),
        (
            {"rollout": {"steps": [{"weight": 10, "pause": "1m", "manual": True}]}},
            "spec.rollout.steps[0]",
            "a step waits for a pause duration or for a manual promote, not both",
        ),
        (
            {"rollout": {"analysis": {"metrics": [{"name": "e", "query": "{{verison}}", "max": 1}]}}},
            "spec.rollout.analysis.metrics[0].query",
            "query uses a template variable that is not one of",
        ),
        (
            {"rollout": {"analysis": {"metrics": [{"name": "e", "query": "x"}]}}},
            "spec.rollout.analysis.metrics[0]",
            "set min, max, compare or proportionTest",
        ),
        ({"gates": [{"metric": "auc", "min": 2, "max": 1}]}, "spec.gates[0]", "min must not exceed max"),
    ],
)
def test_bad_resources_are_rejected_naming_the_field(
    overrides: dict[str, Any], where: str, says: str
) -> None:
    errors = validate(resource(base_spec(**overrides)))
    assert any(e.startswith(f"{where}:") and says in e for e in errors), errors
