"""`canaria sandbox`: the README's first command, end to end, and the emulator semantics it relies on.

The story tests run `canaria sandbox` as a child process exactly as a newcomer would (with TMPDIR pointed
at the test's directory, so every process it starts can be recognised by its command line afterwards).
The emulator tests talk to `SandboxEmulator` through the kubernetes client, the way the operator does,
and pin the API-server behaviour the sandbox promises (see canaria/sandbox/emulator.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.kube.crd import custom_resource_definition
from canaria.sandbox.clusters import find_control_plane
from canaria.sandbox.emulator import EmulatorThread, write_kubeconfig
from canaria.sandbox.localprom import PrometheusNotFound, find_prometheus
from canaria.sandbox.story import builtin_bodies, shorten

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # where `canaria` and `kubectl-canaria` are installed
STORY_DEADLINE = 90.0  # the bound for the README's first command, after installation


def _prometheus_missing() -> str | None:
    try:
        find_prometheus()
    except PrometheusNotFound:
        return "prometheus is not installed (apt-get install -y prometheus): the sandbox needs it"
    return None


needs_prometheus = pytest.mark.skipif(_prometheus_missing() is not None, reason=str(_prometheus_missing()))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(TMPDIR=str(tmp_path), COLUMNS="200", PYTHONUNBUFFERED="1", **extra)
    return env


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line contains ``text`` (the sandbox's temp dir, here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _wait_gone(text: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# -------------------------------------------------------------------------------------------- story


@needs_prometheus
def _assert_story(out: str, tmp_path: Path) -> None:
    """The three acts, with the values that decided them, the audit trail and what was shortened."""
    assert re.search(r"✓ v1 deployed and Healthy", out), out
    assert re.search(r"✓ v2 promoted in [\d.]+s: canary \d+% → 50% → 100%", out), out
    revert = re.search(r"✓ v3 reverted to v2 in [\d.]+s: error-rate (0\.\d+) > max 0\.01", out)
    assert revert, out
    assert 0.08 < float(revert.group(1)) < 0.16, revert.group(0)  # the simulated 12% error rate
    assert "failureLimit 1" in out
    # what a GitOps pipeline would read at the end of each act: v2 Ready, v3 Stalled (v2 still serving)
    assert "Ready=True (Serving)  Reconciling=False  Stalled=False  Available=True" in out, out
    assert "Ready=False  Reconciling=False  Stalled=True (Reverted)  Available=True" in out, out
    # The live timeline showed the transitions as they happened...
    for reason in ("RolloutStarted", "StepAdvanced", "Promoted", "BakeCompleted", "RolledBack"):
        assert re.search(rf"^\s+[\d.]+s\s+\w+\s+{reason}\s", out, re.MULTILINE), f"{reason} missing\n{out}"
    # ...and the audit trail was read back from the API's Events, in the story's own namespace.
    assert "Event audit trail — kubectl get events -n canaria-sandbox" in out
    assert re.search(r"Warning\s*│\s*AnalysisFail\s*│\s*fraud v3: error-rate=0\.\d+", out), out
    assert re.search(r"Warning\s*│\s*RolledBack\s*│\s*fraud reverted v3 → v2", out), out
    # the examples' smoke test ran before each canary's traffic and proved the revert's v2
    assert re.search(r"Normal\s*│\s*SmokeTestPassed\s*│\s*fraud v3 passed its smoke test", out), out
    assert re.search(r"Normal\s*│\s*RollbackVerified\s*│\s*fraud v2 restored and proven", out), out
    assert re.search(r"rollback proven by the smoke test against v2: job fraud-v2-smoke-\d+, exit", out), out
    assert "Shortened for the sandbox" in out and "analysis interval → 1s" in out


def test_story_on_the_emulator_within_the_deadline(tmp_path: Path) -> None:
    """A machine without control plane binaries: the emulator plays the same story."""
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "canaria.cli.main", "sandbox", "--cluster", "emulator"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=STORY_DEADLINE + 30,
    )
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert took < STORY_DEADLINE, f"canaria sandbox took {took:.1f}s\n{out}"
    assert "(kmock emulator; no cluster" in out
    _assert_story(out, tmp_path)
    assert not _wait_gone(str(tmp_path)), _processes_mentioning(str(tmp_path))
    assert not list(tmp_path.glob("canaria-sandbox-*")), "the sandbox left its temp dir"


@needs_prometheus
@pytest.mark.skipif(find_control_plane() is None, reason="no control plane binaries (KUBEBUILDER_ASSETS)")
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_keep_on_a_control_plane_is_a_place_to_play(tmp_path: Path) -> None:
    """The same story on a real control plane, then what a newcomer does next, as the docs say it: the
    examples apply as they are (in their own namespace, beside the story's), the invalid ones are refused
    at apply time naming the field, `kubectl explain` and `kubectl create namespace` work, the day-2
    commands see both ModelDeployments, and the hints name the Prometheus to use."""
    kubeconfig = tmp_path / "sandbox.kubeconfig"
    log_path = tmp_path / "sandbox.out"
    command = ["sandbox", "--keep", "--cluster", "control-plane", "--kubeconfig", str(kubeconfig)]
    with log_path.open("w") as log:
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "canaria.cli.main", *command],
            cwd=REPO,
            env=_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    env = {**_env(tmp_path), "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)

    try:
        deadline = time.monotonic() + STORY_DEADLINE + 30
        while "keeps running" not in log_path.read_text():
            assert sandbox.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        out = log_path.read_text()
        assert "(kube-apiserver, etcd and kube-controller-manager from " in out
        _assert_story(out, tmp_path)
        prometheus = re.search(r"^Prometheus: (http://127\.0\.0\.1:\d+)\.", out, re.MULTILINE)
        assert prometheus and f"or set it to {prometheus.group(1)}" in out, out

        applied = run("kubectl", "apply", "-f", "manifests/examples/01-first-deployment.yaml")
        assert applied.returncode == 0, applied.stderr
        deadline = time.monotonic() + 30
        while run("kubectl", "get", "md", "fraud", "-o", "jsonpath={.status.phase}").stdout != "Healthy":
            assert time.monotonic() < deadline, run("kubectl", "get", "md", "fraud", "-o", "yaml").stdout
            time.sleep(0.3)
        for invalid in sorted((REPO / "manifests" / "examples" / "invalid").glob("*.yaml")):
            field = re.search(r"^# Rejected at (\S+?)\.?(\s|$)", invalid.read_text(), re.MULTILINE)
            assert field, f"{invalid.name} does not say where it is rejected"
            refused = run("kubectl", "apply", "-f", str(invalid))
            assert refused.returncode != 0 and field.group(1) in refused.stderr, (
                invalid.name,
                refused.stderr,
            )
        explained = run("kubectl", "explain", "modeldeployment.spec")
        assert explained.returncode == 0 and "rollout" in explained.stdout, explained.stderr
        assert run("kubectl", "create", "namespace", "ml").returncode == 0

        listed = run("kubectl", "canaria", "list", "-A")
        assert listed.returncode == 0, listed.stderr
        rows = {tuple(line.split()[:3]) for line in listed.stdout.splitlines()}
        assert {("canaria-sandbox", "fraud", "Reverted"), ("default", "fraud", "Healthy")} <= rows, (
            listed.stdout
        )
        status = run("canaria", "status", "fraud", "-n", "canaria-sandbox")
        assert status.returncode == 0 and "next: reverted: spec still names v3" in status.stdout, status

        # the dashboard over the sandbox: the story's rollout and the example, read from the same cluster
        dashboard = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)", log_path.read_text(), re.MULTILINE)
        assert dashboard, log_path.read_text()
        with urllib.request.urlopen(dashboard.group(1) + "api/overview", timeout=10) as response:
            overview = json.loads(response.read())
        shown = {(r["namespace"], r["name"], r["phase"]) for r in overview["rows"]}
        assert {("canaria-sandbox", "fraud", "Reverted"), ("default", "fraud", "Healthy")} <= shown
        assert overview["allowActions"] is True

        sandbox.send_signal(signal.SIGINT)
        assert sandbox.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
    assert not kubeconfig.exists(), "the kubeconfig of a stopped sandbox was left behind"
    assert not _wait_gone(str(tmp_path), timeout=15), _processes_mentioning(str(tmp_path))


def test_missing_prometheus_is_a_clear_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "canaria.cli.main", "sandbox"],
        cwd=REPO,
        env=_env(tmp_path, CANARIA_PROMETHEUS_BINARY=str(tmp_path / "no-prometheus")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "apt-get install -y --no-install-recommends prometheus" in run.stdout
    assert not list(tmp_path.glob("canaria-sandbox-*"))


@needs_prometheus
def test_keep_serves_a_kubeconfig_until_sigint(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "sandbox.kubeconfig"
    log_path = tmp_path / "sandbox.out"
    with log_path.open("w") as log:
        sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "canaria.cli.main",
                "sandbox",
                "--keep",
                "--no-story",
                "--cluster",
                "emulator",
                "--kubeconfig",
                str(kubeconfig),
            ],
            cwd=REPO,
            env=_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "keeps running" not in log_path.read_text():
            assert sandbox.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert f"kubeconfig: {kubeconfig}" in log_path.read_text()

        # A newcomer's own ModelDeployment, applied with the printed kubeconfig, is rolled out.
        api = config.new_client_from_config(config_file=str(kubeconfig))
        custom = client.CustomObjectsApi(api)
        body = shorten(builtin_bodies()[0], {})
        body["metadata"] = {"name": "churn", "annotations": {"canaria.dev/change-reason": "my own model"}}
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
        deadline = time.monotonic() + 30
        while True:
            md = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "churn")
            if (md.get("status") or {}).get("phase") == "Healthy":
                break
            assert time.monotonic() < deadline, (md.get("status"), log_path.read_text())
            time.sleep(0.2)
        assert md["status"]["stable"]["version"] == "v1"
        assert md["metadata"]["uid"] and md["metadata"]["generation"] == 1
        api.close()
        if shutil.which("kubectl"):
            listed = subprocess.run(
                ["kubectl", "--kubeconfig", str(kubeconfig), "get", "md"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert listed.returncode == 0, listed.stderr
            assert re.search(r"^churn\s+Healthy\s+\S+\s+v1\s+v1", listed.stdout, re.MULTILINE), listed.stdout

        sandbox.send_signal(signal.SIGINT)
        assert sandbox.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
    assert "sandbox stopped" in log_path.read_text()
    assert not kubeconfig.exists(), "the kubeconfig of a stopped sandbox was left behind"
    assert not _wait_gone(str(tmp_path)), _processes_mentioning(str(tmp_path))


# ----------------------------------------------------------------------------------------- emulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorThread]:
    with EmulatorThread(ready_delay=0.1) as thread:
        yield thread


@pytest.fixture
def api(emulator: EmulatorThread, tmp_path: Path) -> Iterator[client.ApiClient]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", emulator.url)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    client.ApiextensionsV1Api(api).create_custom_resource_definition(custom_resource_definition())
    try:
        yield api
    finally:
        api.close()


def _md(version: str = "v1") -> dict[str, Any]:
    body = shorten(builtin_bodies()[0], {})
    body["spec"]["model"]["version"] = version
    body["metadata"] = {"name": "fraud"}
    return body


def _status_code(call: Any, *args: Any, **kwargs: Any) -> int:
    """The HTTP status of the ApiException that ``call(*args, **kwargs)`` must raise."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status


def test_invalid_model_deployments_are_refused_at_apply_time_naming_the_field(api: client.ApiClient) -> None:
    """As a real API server does with the CRD's schema and CEL rules: the invalid examples never reach the
    operator, and an edit that breaks a valid spec is refused too."""
    custom = client.CustomObjectsApi(api)
    for invalid in sorted((REPO / "manifests" / "examples" / "invalid").glob("*.yaml")):
        body = yaml.safe_load(invalid.read_text())
        field = re.search(r"^# Rejected at (\S+?)\.?(\s|$)", invalid.read_text(), re.MULTILINE)
        assert field, invalid.name
        with pytest.raises(ApiException) as caught:
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
        message = json.loads(caught.value.body)["message"]
        assert caught.value.status == 422 and f": {field.group(1)}: " in message, (invalid.name, message)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _md())
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "fraud", {"spec": {"model": {"version": "V2"}}}
        )
    assert caught.value.status == 422 and "spec.model.version: 'V2' is not a DNS label" in caught.value.body
    assert (
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "fraud")["spec"]["model"][
            "version"
        ]
        == "v1"
    )


def test_create_fills_metadata_and_generation_counts_spec_changes_only(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, _md())
    meta = created["metadata"]
    assert meta["namespace"] == "ml"  # from the URL
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    rv = int(meta["resourceVersion"])
    annotated = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "ml", PLURAL, "fraud", {"metadata": {"annotations": {"a": "b"}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    assert annotated["metadata"]["generation"] == 1 and int(annotated["metadata"]["resourceVersion"]) > rv
    changed = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "ml", PLURAL, "fraud", {"spec": {"replicas": 2}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    assert changed["metadata"]["generation"] == 2
    same = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "ml", PLURAL, "fraud", {"spec": {"replicas": 2}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]  # a no-op
    body = _md()
    body["metadata"]["namespace"] = "other"
    create = custom.create_namespaced_custom_object
    assert _status_code(create, GROUP, VERSION, "ml", PLURAL, body) == 400
    body["metadata"]["namespace"] = "ml"
    assert _status_code(create, GROUP, VERSION, "ml", PLURAL, body) == 409


def test_status_subresource_replace_is_guarded_and_separate(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "ml", PLURAL, {**_md(), "status": {"x": 1}}
    )
    assert "status" not in created  # status is not written through the main resource
    body = {**created, "spec": {**created["spec"], "replicas": 9}, "status": {"phase": "Pending"}}
    written = custom.replace_namespaced_custom_object_status(GROUP, VERSION, "ml", PLURAL, "fraud", body)
    assert written["status"] == {"phase": "Pending"}
    assert written["spec"]["replicas"] == 4 and written["metadata"]["generation"] == 1  # spec untouched
    stale = _status_code(
        custom.replace_namespaced_custom_object_status, GROUP, VERSION, "ml", PLURAL, "fraud", body
    )
    assert stale == 409
    main = {**written, "status": {"phase": "Hacked"}}
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, "fraud", main)
    assert replaced["status"] == {"phase": "Pending"}  # the main resource keeps the stored status
    del main["metadata"]["resourceVersion"]
    unguarded = _status_code(
        custom.replace_namespaced_custom_object, GROUP, VERSION, "ml", PLURAL, "fraud", main
    )
    assert unguarded == 422  # custom resources require a resourceVersion on update
    entries = {(e["manager"], e.get("subresource")) for e in replaced["metadata"]["managedFields"]}
    assert ("OpenAPI-Generator", "status") in entries


def test_events_by_name_and_generate_name(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    names = [
        core.create_namespaced_event(
            "ml", {"metadata": {"generateName": "fraud."}, "involvedObject": {}}
        ).metadata.name
        for _ in range(3)
    ]
    assert len(set(names)) == 3 and all(re.fullmatch(r"fraud\.[a-z0-9]{5}", n) for n in names)
    explicit = {
        "metadata": {"name": "fraud.1"},
        "involvedObject": {"kind": "ModelDeployment", "name": "fraud"},
    }
    core.create_namespaced_event("ml", explicit)
    assert _status_code(core.create_namespaced_event, "ml", explicit) == 409
    found = core.list_namespaced_event(
        "ml", field_selector="involvedObject.name=fraud,involvedObject.kind=ModelDeployment"
    )
    assert [e.metadata.name for e in found.items] == ["fraud.1"]
    assert found.kind == "EventList" and found.api_version == "v1"


def test_apply_label_selectors_controller_and_garbage_collection(api: client.ApiClient) -> None:
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    owner = custom.create_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, _md())
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "name": "fraud",
           "uid": owner["metadata"]["uid"], "controller": True}  # fmt: skip

    def deployment(version: str, replicas: int, **extra: Any) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": f"fraud-{version}",
                "labels": {"md": "fraud", "v": version},
                "ownerReferences": [ref],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"v": version}},
                "template": {},
                **extra,
            },
        }

    def apply(body: dict[str, Any]) -> None:
        apps.patch_namespaced_deployment(
            body["metadata"]["name"], "ml", body, field_manager="canaria", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    apply(deployment("v1", 3, paused=True))
    apply(deployment("v2", 1))
    apply(deployment("v1", 2))  # `paused` is no longer applied by its manager: removed
    v1 = apps.read_namespaced_deployment("fraud-v1", "ml")
    assert v1.spec.replicas == 2 and v1.spec.paused is None and v1.metadata.generation == 2
    assert v1.status is not None  # a Go struct: present (empty) before the controller fills it
    deadline = time.monotonic() + 5
    while (v1.status.observed_generation or 0) < 2 or v1.status.ready_replicas != 2:
        assert time.monotonic() < deadline, v1.status
        time.sleep(0.05)
        v1 = apps.read_namespaced_deployment("fraud-v1", "ml")
    assert v1.status.updated_replicas == 2 and v1.status.replicas == 2
    picked = apps.list_namespaced_deployment("ml", label_selector="md=fraud,v in (v2,v3)")
    assert [d.metadata.name for d in picked.items] == ["fraud-v2"]
    assert len(apps.list_namespaced_deployment("ml", label_selector="md!=fraud").items) == 0
    assert len(apps.list_namespaced_deployment("ml", label_selector="!v").items) == 0
    custom.delete_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, "fraud")
    deadline = time.monotonic() + 5
    while apps.list_namespaced_deployment("ml").items:
        assert time.monotonic() < deadline, "owned Deployments were not garbage-collected"
        time.sleep(0.05)


def test_finalizers_hold_deletion_and_watches_resume(api: client.ApiClient, emulator: EmulatorThread) -> None:
    custom = client.CustomObjectsApi(api)
    body = _md()
    body["metadata"]["finalizers"] = ["canaria.dev/finalizer"]
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, body)
    since = created["metadata"]["resourceVersion"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, "fraud")
    held = custom.get_namespaced_custom_object(GROUP, VERSION, "ml", PLURAL, "fraud")
    assert held["metadata"]["deletionTimestamp"]
    json_patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "remove", "path": "/metadata/finalizers"},
    ]
    patch = custom.patch_namespaced_custom_object
    json_type = "application/json-patch+json"
    stale = _status_code(patch, GROUP, VERSION, "ml", PLURAL, "fraud", json_patch, _content_type=json_type)
    assert stale == 422  # as kopf expects when its resourceVersion test fails
    json_patch[0]["value"] = held["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "ml", PLURAL, "fraud", json_patch, _content_type="application/json-patch+json"
    )
    assert _status_code(custom.get_namespaced_custom_object, GROUP, VERSION, "ml", PLURAL, "fraud") == 404

    url = f"{emulator.url}/apis/{GROUP}/{VERSION}/namespaces/ml/{PLURAL}"
    resumed = requests.get(
        url, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}, timeout=10
    )
    events = [json.loads(line) for line in resumed.text.splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]  # after `since`, nothing replayed
    listing = requests.get(url, timeout=10).json()
    assert listing["kind"] == "ModelDeploymentList" and listing["apiVersion"] == f"{GROUP}/{VERSION}"
    emulator.call(lambda emu: emu._gone_below.update(dict.fromkeys(emu._events, 10**6)))  # log evicted
    gone = requests.get(
        url, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}, timeout=10
    )
    assert json.loads(gone.text.splitlines()[0])["object"]["code"] == 410
