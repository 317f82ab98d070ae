"""A corpus of malformed ModelDeployments against the real API server and the real operator.

Every case either is refused by the API server with a message naming the field, or is accepted and then
reported in status (message and condition naming the field) within seconds: never an empty status, never
a Deployment or Service from an invalid spec, never a traceback in the operator log.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """Set a dotted path of the body (`spec.rollout.steps.0.pause`; list indexes are numbers)."""

    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _container(**fields: Any) -> Edit:
    return _set("spec.template.spec.containers.0", {"name": "server", "image": "example.com/s:1", **fields})


def _pod(**fields: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        body["spec"]["template"]["spec"].update(fields)

    return edit


def _drop(path: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[part]
        del node[last]

    return edit


DURATION_FIELDS = {
    "spec.rollout.steps.0.pause": "steps[0].pause",
    "spec.rollout.analysis.interval": "analysis.interval",
    "spec.rollout.progressDeadline": "progressDeadline",
    "spec.rollout.bake": "rollout.bake",
    "spec.prometheus.timeout": "prometheus.timeout",
}
BAD_DURATIONS = ["", "5", "5x", "-1s", "31d", "99999999999999999999d", "1h 30m", "1" * 40]

LONG = "x" * 3000
METRIC = {"name": "errors", "query": "rate(errors[1m])", "max": 0.1}

# (what is wrong, the edit, a fragment of the field's path that the answer must name)
CASES: list[tuple[str, Edit, str]] = [
    *(
        (f"{path} = {bad!r:.20}", _set(path, bad), field)
        for path, field in DURATION_FIELDS.items()
        for bad in BAD_DURATIONS
    ),
    *(
        (f"model.name {v!r:.20}", _set("spec.model.name", v), "model.name")
        for v in ["", "Fraud", "a.b", "-a", LONG[:64], "a_b"]
    ),
    *(
        (f"model.version {v!r:.20}", _set("spec.model.version", v), "model.version")
        for v in ["", "V1", "v.1", "v1-", LONG[:41], "v_1"]
    ),
    ("empty uri", _set("spec.model.uri", ""), "model.uri"),
    ("300 kB uri", _set("spec.model.uri", "s3://" + "x" * 300_000), "model.uri"),
    *(
        (f"long lineage.{k}", _set(f"spec.model.lineage.{k}", LONG), f"lineage.{k}")
        for k in ["codeCommit", "dataset", "trainingRun", "featureSchema"]
    ),
    ("long owner", _set("spec.model.owner", LONG), "model.owner"),
    ("long intendedUse", _set("spec.model.intendedUse", LONG * 2), "model.intendedUse"),
    ("long evaluation key", _set("spec.model.evaluation", {"k" * 70: 0.9}), "model.evaluation"),
    ("evaluation value a string", _set("spec.model.evaluation", {"auc": "high"}), "evaluation.auc"),
    ("unknown model field", _set("spec.model.colour", "blue"), "colour"),
    ("unknown spec field", _set("spec.replica", 3), "replica"),
    *((f"replicas {v!r}", _set("spec.replicas", v), "spec.replicas") for v in [-1, 1001, "two"]),
    ("service port 0", _set("spec.service.port", 0), "service.port"),
    ("service port 70000", _set("spec.service.port", 70000), "service.port"),
    ("targetPort 0", _set("spec.service.targetPort", 0), "service.targetPort"),
    ("no steps", _set("spec.rollout.steps", []), "rollout.steps"),
    ("decreasing weights", _set("spec.rollout.steps", [{"weight": 50}, {"weight": 20}]), "rollout.steps"),
    ("weight 0", _set("spec.rollout.steps", [{"weight": 0}]), "weight"),
    ("weight 101", _set("spec.rollout.steps", [{"weight": 101}]), "weight"),
    (
        "pause and manual",
        _set("spec.rollout.steps", [{"weight": 50, "pause": "1s", "manual": True}]),
        "steps[0]",
    ),
    ("21 steps", _set("spec.rollout.steps", [{"weight": w} for w in range(1, 22)]), "rollout.steps"),
    *(
        (f"metric {what}", _set("spec.rollout.analysis.metrics", [{**METRIC, **m}]), field)
        for what, m, field in [
            ("unknown variable", {"query": "up{job='{{nme}}'}"}, "{{nme}}"),
            ("malformed placeholder", {"query": "up{job='{{version'}"}, "metrics[0].query"),
            ("empty query", {"query": ""}, "metrics[0].query"),
            ("min above max", {"min": 0.5, "max": 0.1}, "metrics[0]"),
            ("bad aggregate", {"aggregate": "median"}, "metrics[0].aggregate"),
            ("bad name", {"name": "Errors!"}, "metrics[0].name"),
            ("long query", {"query": "x" * 5000}, "metrics[0].query"),
        ]
    ),
    (
        "metric without bounds",
        _set("spec.rollout.analysis.metrics", [{"name": "e", "query": "q"}]),
        "metrics[0]",
    ),
    ("duplicate metric names", _set("spec.rollout.analysis.metrics", [METRIC, METRIC]), "metrics[1]"),
    (
        "21 metrics",
        _set("spec.rollout.analysis.metrics", [{**METRIC, "name": f"m{i}"} for i in range(21)]),
        "analysis.metrics",
    ),
    ("failureLimit -1", _set("spec.rollout.analysis.failureLimit", -1), "failureLimit"),
    ("inconclusiveLimit 101", _set("spec.rollout.analysis.inconclusiveLimit", 101), "inconclusiveLimit"),
    ("onInconclusive maybe", _set("spec.rollout.analysis.onInconclusive", "maybe"), "onInconclusive"),
    ("prometheus ftp", _set("spec.prometheus.address", "ftp://prom"), "prometheus.address"),
    ("gate without bounds", _set("spec.gates", [{"metric": "auc"}]), "gates[0]"),
    ("no template", _drop("spec.template"), "template"),
    ("no model", _drop("spec.model"), "model"),
    # metadata.name: it names the Service and every `<name>-<version>` Deployment
    ("name with a dot", _set("metadata.name", "a.b"), "metadata"),
    ("name of 64", _set("metadata.name", "n" * 64), "metadata"),
    ("name of 41", _set("metadata.name", "n" * 41), "metadata"),
    ("name starting with a digit", _set("metadata.name", "1abc"), "metadata"),
    # pod-template fields the CRD leaves to the apps API: the operator's dry run reports them
    (
        "container without image",
        _set("spec.template.spec.containers.0", {"name": "server"}),
        "containers[0].image",
    ),
    ("container without name", _set("spec.template.spec.containers.0", {"image": "x"}), "containers[0].name"),
    ("containerPort 0", _container(ports=[{"containerPort": 0}]), "containerPort"),
    ("containerPort 70000", _container(ports=[{"containerPort": 70000}]), "containerPort"),
    ("containerPort -1", _container(ports=[{"containerPort": -1}]), "containerPort"),
    ("containerPort 'http'", _container(ports=[{"containerPort": "http"}]), "containerPort"),
    ("container name Server_1", _container(name="Server_1"), "containers[0].name"),
    ("restartPolicy Never", _pod(restartPolicy="Never"), "restartPolicy"),
    # the apps API does not name the field here (500 "quantities must match the regular expression")
    ("cpu lots", _container(resources={"requests": {"cpu": "lots"}}), "quantities"),
    ("bad label", _set("spec.template.metadata", {"labels": {"bad label!": "x"}}), "labels"),
    (
        "duplicate container names",
        _pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]),
        "template.spec.containers",
    ),
    ("unknown volume source", _pod(volumes=[{"name": "v", "bogus": {}}]), "volumes"),
    ("env as strings", _container(env=["A=1"]), "containers[0].env[0]"),
    ("null container", _set("spec.template.spec.containers", [None]), "containers[0]"),
    ("no containers", _set("spec.template.spec.containers", []), "containers"),
    ("template.spec a string", _set("spec.template.spec", "x"), "template.spec"),
    ("imagePullPolicy Sometimes", _container(imagePullPolicy="Sometimes"), "imagePullPolicy"),
    ("protocol XYZ", _container(ports=[{"containerPort": 8080, "protocol": "XYZ"}]), "protocol"),
    (
        "mount of a missing volume",
        _container(volumeMounts=[{"name": "nope", "mountPath": "/m"}]),
        "volumeMounts[0].name",
    ),
    (
        "limit below request",
        _container(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "resources",
    ),
    ("dnsPolicy Bogus", _pod(dnsPolicy="Bogus"), "dnsPolicy"),
    ("serviceAccountName Bad_Name", _pod(serviceAccountName="Bad_Name"), "serviceAccountName"),
    ("label value of 64", _set("spec.template.metadata", {"labels": {"a": "v" * 64}}), "labels"),
    ("runAsUser 'root'", _pod(securityContext={"runAsUser": "root"}), "runAsUser"),
    ("nodeSelector number", _pod(nodeSelector={"zone": 1}), "nodeSelector"),
    ("hostPort 70000", _container(ports=[{"containerPort": 8080, "hostPort": 70000}]), "hostPort"),
]


def _named(status: dict[str, Any], field: str) -> bool:
    """status says what is wrong, naming the field: in its message and in the Stalled condition."""
    conditions = [
        c for c in status.get("conditions") or [] if c["type"] == "Stalled" and c["status"] == "True"
    ]
    return field in (status.get("message") or "") and any(
        field in (c.get("message") or "") for c in conditions
    )


def test_every_malformed_spec_is_refused_or_reported_naming_the_field(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    assert len(CASES) >= 100
    operator = start_operator()
    refused: dict[str, str] = {}
    accepted: dict[str, tuple[str, str]] = {}  # object name → (case, field)
    for index, (case, edit, field) in enumerate(CASES):
        body = copy.deepcopy(model_deployment(f"bad-{index}", "v1", replicas=1))
        body["spec"]["model"]["name"] = "model"
        edit(body)
        body.update(apiVersion="canaria.dev/v1alpha1", kind="ModelDeployment")
        body["metadata"]["namespace"] = mds.namespace
        try:  # strict field validation, as `kubectl apply` asks for by default: a typo is refused
            mds.custom.create_namespaced_custom_object(
                "canaria.dev", "v1alpha1", mds.namespace, "modeldeployments", body, field_validation="Strict"
            )
        except ApiException as exc:
            message = json.loads(exc.body)["message"]
            assert exc.status in (400, 422) and field in message, (
                f"{case}: refused without naming {field}: {message}"
            )
            refused[case] = message
            continue
        accepted[body["metadata"]["name"]] = (case, field)

    def unreported() -> dict[str, str]:
        items = mds.custom.list_namespaced_custom_object(
            "canaria.dev", "v1alpha1", mds.namespace, "modeldeployments"
        )
        statuses = {i["metadata"]["name"]: i.get("status") or {} for i in items["items"]}
        return {
            f"{case} ({field})": statuses[name].get("message", "<empty status>")
            for name, (case, field) in accepted.items()
            if not _named(statuses[name], field)
        }

    deadline = time.monotonic() + 30
    while unreported() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = unreported()
    assert not left, json.dumps(left, indent=1)
    assert mds.apps.list_namespaced_deployment(mds.namespace).items == []  # never a Deployment
    assert mds.core.list_namespaced_service(mds.namespace).items == []  # nor a half-made rollout
    log = operator.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    print(
        f"bad-input corpus: {len(CASES)} cases, {len(refused)} refused by the API server, "
        f"{len(accepted)} reported in status"
    )


def test_a_refused_edit_keeps_the_serving_version_and_is_not_retried(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    """An emoji in the URI serves (apply patches go out as UTF-8); a huge change reason stays out of
    status; a pod template the apps API refuses changes nothing, says why once, and waits for a fix."""
    operator = start_operator()
    body = model_deployment("fraud", "v1", replicas=2)
    body["spec"]["model"]["uri"] = "s3://models/fraud/v1-🚀"
    mds.create(body)
    mds.wait_phase("fraud", "Healthy", stable="v1")
    env = mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace).spec.template.spec.containers[0].env
    assert {e.name: e.value for e in env}["MODEL_URI"] == "s3://models/fraud/v1-🚀"
    bad_port = [{"name": "server", "image": "example.com/s:2", "ports": [{"containerPort": 70000}]}]
    mds.patch(
        "fraud",
        {
            "metadata": {"annotations": {"canaria.dev/change-reason": "why " * 50_000}},
            "spec": {"template": {"spec": {"containers": bad_port}}},
        },
    )
    status = wait_for("the refusal in status", lambda: (s := mds.status("fraud")).get("refused") and s)
    assert status["phase"] == "Healthy" and "containerPort" in status["refused"]["message"]
    assert (
        status["history"][-1]["reason"] == "SpecRefused" and len(status["history"][-1]["changeReason"]) <= 256
    )
    assert len(json.dumps(status)) < 16_000
    refusal = wait_for(
        "its Warning Event", lambda: [e for e in mds.events("fraud") if e.reason == "SpecRefused"]
    )
    assert refusal[0].type == "Warning" and "containerPort" in refusal[0].message
    time.sleep(3)  # no hot loop: one dry run, one refusal, then quiet
    assert operator.log_path.read_text().count("refused: cannot dry-run apply") == 1
    assert mds.replicas("fraud") == {"v1": 2}
    template = mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace).spec.template
    assert template.spec.containers[0].image == "example.com/model-server:1.0"  # untouched
    mds.patch("fraud", {"spec": {"template": {"spec": {"containers": [{**bad_port[0], "ports": []}]}}}})
    wait_for(
        "the fixed template applied",
        lambda: (
            mds.apps.read_namespaced_deployment("fraud-v1", mds.namespace)
            .spec.template.spec.containers[0]
            .image
            == "example.com/s:2"
        ),
    )
    wait_for("the refusal cleared", lambda: "refused" not in mds.status("fraud"))
