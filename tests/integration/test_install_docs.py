"""docs/install.md, followed step by step on the real control plane.

Every fenced block of the Helm and kubectl sections is marked ``<!-- tested -->`` in the Markdown source,
and this test runs the marked blocks as they are written, in order: ``kubectl`` lines with kubectl itself
(pointed at the test control plane's admin kubeconfig, from the repository root so relative paths resolve),
``helm`` lines through helm_python (there is no helm binary here: each ``helm install/upgrade/uninstall``
and its flags are mapped to the SDK call with the same meaning; a flag the mapping does not know fails
the test). The kustomize overlay shown in the kubectl section is built as written, with its remote base
swapped for the checkout (no network here). The only other substitution: the Helm steps run in a fresh
namespace instead of ``canaria-system``, which the kubectl steps need (the manifests name it).

The test kubelet reports the operator Pod ready (the image cannot run here), so the documented
``kubectl rollout status`` returns as it would on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL
from canaria.kube import rbac
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet

from .harness import absent, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "install.md"
MARKER = "<!-- tested -->"
DOC_NAMESPACE = "canaria-system"  # the namespace the document installs into
CRD_NAME = f"{PLURAL}.{GROUP}"


# ---------------------------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Block:
    section: str  # the "## " heading it is under
    language: str
    text: str
    tested: bool
    line: int  # 1-based line of the opening fence


def blocks(markdown: str) -> list[Block]:
    """Every fenced block, with its section and whether the line before it (blanks aside) is MARKER."""
    found: list[Block] = []
    section, marked, fence = "", False, None
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if fence is not None:
            if line.strip() == "```":
                found.append(Block(section, fence[0], "\n".join(body) + "\n", marked, fence[1]))
                fence, marked, body = None, False, []
            else:
                body.append(line)
        elif line.startswith("```"):
            fence = (line[3:].strip(), number)
        elif line.startswith("## "):
            section, marked = line[3:].strip(), False
        elif line.strip() == MARKER:
            marked = True
        elif line.strip():
            marked = False
    assert fence is None, f"unclosed fence at line {fence[1]} of {DOC}"
    return found


def section_blocks(section: str) -> list[Block]:
    """The tested blocks of ``section``, after checking that no block of it is left untested."""
    inside = [b for b in blocks(DOC.read_text()) if b.section == section]
    assert inside, f"no section '## {section}' with code blocks in {DOC}"
    untested = [b.line for b in inside if not b.tested]
    assert not untested, f"{DOC} lines {untested}: every block of '{section}' must be marked {MARKER}"
    return inside


def commands(block: Block) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, comments dropped, split like a shell."""
    assert block.language in ("sh", "bash", "shell"), f"line {block.line}: not a shell block"
    text = block.text.replace("\\\n", " ")
    found = [shlex.split(line, comments=True) for line in text.splitlines()]
    assert not any({"|", "&&", ";", ">"} & set(c) for c in found), f"line {block.line}: one command a line"
    return [c for c in found if c]


def test_the_document_marks_what_this_test_runs() -> None:
    """The parser finds the marked blocks where the document has them (a guard for the tests below)."""
    all_blocks = blocks(DOC.read_text())
    tested = [(b.section, b.language) for b in all_blocks if b.tested]
    assert tested == [
        ("Helm", "sh"),
        ("Helm", "sh"),
        ("Helm", "sh"),
        ("kubectl (kustomize)", "sh"),
        ("kubectl (kustomize)", "yaml"),
    ]
    assert not [b for b in all_blocks if b.tested and b.section not in ("Helm", "kubectl (kustomize)")]


# ---------------------------------------------------------------------------------------------- running it


def _helm_parser() -> argparse.ArgumentParser:
    """The helm flags the document may use, with helm's meaning; anything else is an error."""
    parser = argparse.ArgumentParser(prog="helm", add_help=False, exit_on_error=False)
    parser.add_argument("command", choices=["install", "upgrade", "uninstall"])
    parser.add_argument("release")
    parser.add_argument("chart", nargs="?")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--create-namespace", action="store_true")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--set-string", action="append", default=[])
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--reuse-values", action="store_true")
    return parser


def _merge(into: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


@dataclass
class Runner:
    """Runs documented commands against the test control plane; records what it ran, for failures."""

    control_plane: ControlPlane
    kubectl_bin: str
    helm: ModuleType | None
    namespace: str  # what DOC_NAMESPACE becomes
    ran: list[str]

    def run(self, command: list[str]) -> None:
        command = [self.namespace if word == DOC_NAMESPACE else word for word in command]
        self.ran.append(shlex.join(command))
        if command[0] == "kubectl":
            self.kubectl(*command[1:])
        elif command[0] == "helm":
            self.helm_command(command[1:])
        else:
            pytest.fail(
                f"the document runs `{command[0]}`, which this test cannot map: {shlex.join(command)}"
            )

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.control_plane.kubeconfig), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"kubectl {shlex.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def helm_command(self, args: list[str]) -> None:
        assert self.helm is not None
        try:
            parsed, unknown = _helm_parser().parse_known_args(args)
        except argparse.ArgumentError as exc:
            pytest.fail(f"helm {shlex.join(args)}: {exc}")
        assert not unknown, f"helm {shlex.join(args)}: this test does not know {unknown}"
        values: dict[str, Any] = {}
        for path in parsed.values:
            _merge(values, self.helm.values_from_yaml((ROOT / path).read_text()))
        for expression in parsed.set:
            _merge(values, self.helm.parse_set_string(expression))
        for expression in parsed.set_string:
            _merge(values, self.helm.parse_set_string_values(expression))
        if parsed.command != "uninstall":
            assert parsed.chart, f"helm {shlex.join(args)}: which chart?"
        cfg = self.helm.Config(kubeconfig_path=str(self.control_plane.kubeconfig), namespace=parsed.namespace)
        try:
            if parsed.command == "install":
                release = cfg.install(
                    str(ROOT / parsed.chart),
                    parsed.release,
                    values or None,
                    namespace=parsed.namespace,
                    create_namespace=parsed.create_namespace,
                )
                assert release["status"] == "deployed", release
            elif parsed.command == "upgrade":
                release = cfg.upgrade(
                    str(ROOT / parsed.chart),
                    parsed.release,
                    values or None,
                    namespace=parsed.namespace,
                    reuse_values=parsed.reuse_values,
                )
                assert release["status"] == "deployed", release
            else:
                cfg.uninstall(parsed.release)  # raises if there is no such release
        finally:
            cfg.close()


def crd_established(api: client.ApiClient) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def rules_of(api: client.ApiClient, role: Any) -> list[dict[str, Any]]:
    return [api.sanitize_for_serialization(rule) for rule in role.rules or []]


# ---------------------------------------------------------------------------------------------- Helm


@pytest.fixture
def helm_namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A namespace that does not exist yet (the documented install creates it), deleted afterwards."""
    name = f"docs-{secrets.token_hex(3)}"
    yield name
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        with contextlib.suppress(ApiException):
            delete(f"canaria-{name}")
    with contextlib.suppress(ApiException):
        client.CoreV1Api(admin_api).delete_namespace(name, propagation_policy="Background")


def test_helm_section_as_documented(
    helm: ModuleType,
    kubectl_bin: str,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    crd: str,
    kubelet: Kubelet,
    helm_namespace: str,
) -> None:
    install, upgrade, uninstall = (commands(b) for b in section_blocks("Helm"))
    runner = Runner(control_plane, kubectl_bin, helm, helm_namespace, [])
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    # Release "canaria": its objects are named "canaria", its ClusterRole "canaria-<namespace>".
    cluster_role = f"canaria-{helm_namespace}"
    try:
        for command in install:
            runner.run(command)
        deployment = apps.read_namespaced_deployment("canaria", helm_namespace)
        assert deployment.status.ready_replicas == 1, "rollout status returned: the operator is up"
        (container,) = deployment.spec.template.spec.containers
        assert "--prometheus-address=http://prometheus-operated.monitoring:9090" in container.args
        assert "--all-namespaces" in container.args
        assert rules_of(admin_api, rbac_api.read_cluster_role(cluster_role)) == rbac.rules(
            all_namespaces=True
        )
        binding = rbac_api.read_cluster_role_binding(cluster_role)
        assert [(s.name, s.namespace) for s in binding.subjects] == [("canaria", helm_namespace)]
        assert deployment.spec.template.spec.service_account_name == "canaria"
        core.read_namespaced_service_account("canaria", helm_namespace)
        assert crd_established(admin_api)

        for command in upgrade:
            runner.run(command)
        deployment = apps.read_namespaced_deployment("canaria", helm_namespace)
        (container,) = deployment.spec.template.spec.containers
        assert "--prometheus-address=http://prometheus-operated.monitoring:9090" in container.args, (
            "--reuse-values keeps the values given at install"
        )
        secrets_of_release = core.list_namespaced_secret(helm_namespace, label_selector="owner=helm").items
        assert sorted(s.metadata.labels["version"] for s in secrets_of_release) == ["1", "2"]
        assert crd_established(admin_api)

        for command in uninstall:
            runner.run(command)
        assert absent(lambda: apps.read_namespaced_deployment("canaria", helm_namespace))
        assert absent(lambda: rbac_api.read_cluster_role(cluster_role))
        assert absent(lambda: rbac_api.read_cluster_role_binding(cluster_role))
        assert crd_established(admin_api), "the CRD (and every ModelDeployment) stays, as documented"
    except BaseException:
        print("--- ran ---\n" + "\n".join(runner.ran))
        raise


# ---------------------------------------------------------------------------------------------- kubectl


@pytest.fixture
def kustomize_namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """``canaria-system``, gone before (an earlier test's install may still be terminating) and after."""
    core = client.CoreV1Api(admin_api)
    wait_for(
        f"namespace {DOC_NAMESPACE} from an earlier test to be gone",
        lambda: absent(lambda: core.read_namespace(DOC_NAMESPACE)),
        timeout=90,
    )
    yield DOC_NAMESPACE
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        with contextlib.suppress(ApiException):
            delete("canaria")
    with contextlib.suppress(ApiException):
        core.delete_namespace(DOC_NAMESPACE, propagation_policy="Background")


def test_kubectl_section_as_documented(
    kubectl_bin: str,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    crd: str,
    kubelet: Kubelet,
    kustomize_namespace: str,
    tmp_path: Path,
) -> None:
    apply, overlay = section_blocks("kubectl (kustomize)")
    runner = Runner(control_plane, kubectl_bin, None, kustomize_namespace, [])
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    rbac_api = client.RbacAuthorizationV1Api(admin_api)
    try:
        for command in commands(apply):
            runner.run(command)
        deployment = apps.read_namespaced_deployment("canaria", kustomize_namespace)
        assert deployment.status.ready_replicas == 1, "rollout status returned: the operator is up"
        (container,) = deployment.spec.template.spec.containers
        assert "--all-namespaces" in container.args
        assert core.read_namespace(kustomize_namespace).metadata.labels[
            "pod-security.kubernetes.io/enforce"
        ] == ("restricted")
        assert rules_of(admin_api, rbac_api.read_cluster_role("canaria")) == rbac.rules(all_namespaces=True)
        binding = rbac_api.read_cluster_role_binding("canaria")
        assert [(s.name, s.namespace) for s in binding.subjects] == [("canaria", kustomize_namespace)]
        assert deployment.spec.template.spec.service_account_name == "canaria"
        assert crd_established(admin_api)

        # The overlay, as written in my-canaria/kustomization.yaml, on top of this checkout's manifests/.
        assert overlay.language == "yaml"
        kustomization = yaml.safe_load(overlay.text)
        (remote,) = kustomization["resources"]
        assert remote.startswith("https://") and remote.split("//")[-1].startswith("manifests"), remote
        overlay_dir = tmp_path / "my-canaria"
        overlay_dir.mkdir()
        kustomization["resources"] = [os.path.relpath(ROOT / "manifests", overlay_dir)]
        (overlay_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        rendered = list(yaml.safe_load_all(runner.kubectl("kustomize", str(overlay_dir))))
        (operator,) = [
            d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "canaria"
        ]
        (container,) = operator["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example.com/canaria:0.1.0"
        assert container["args"][-1] == "--prometheus-address=http://prometheus-operated.monitoring:9090"
        # And the API server accepts it as an update of what the documented apply installed.
        applied = runner.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(overlay_dir))
        assert "deployment.apps/canaria serverside-applied (server dry run)" in applied, applied
    except BaseException:
        print("--- ran ---\n" + "\n".join(runner.ran))
        raise
