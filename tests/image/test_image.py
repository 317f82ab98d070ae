"""The operator image, built from the Dockerfile, checked from the outside, and run as the chart runs it.

- What chroot isolation cannot enforce at run time is checked on the image itself: its USER is numeric
  and not root (and has no passwd entry, so nothing may need one), it holds exactly the locked
  distributions plus Canaria, and none of the sandbox, the tests, kmock, or the build's sources.
- The packaged operator (the image's ENTRYPOINT with the args of the Deployment the Helm chart renders)
  runs in a working container of the image under the Pod's uid, with the Pod's environment and the
  chart's ServiceAccount token where in-cluster config reads it, against the session's control plane:
  one rollout to Healthy (then a canary promoted), one to Reverted, and the delete releases its finalizer.
"""

from __future__ import annotations

import contextlib
import email.parser
import re
import secrets
import urllib.request
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria import GROUP, PLURAL, VERSION
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess, free_port
from tests.integration.harness import ModelDeployments, model_deployment, release_finalizers, wait_for
from tests.integration.test_install import CHART, chart_fullname, chart_service_account_kubeconfig

from .building import REPO, Build, mounted, working_container

#: Where in-cluster config (the kubernetes client's, and so kopf's login) reads the ServiceAccount token:
#: /var/run/secrets/kubernetes.io/serviceaccount, and /var/run is a link to /run in the image (buildah
#: does not mount through the link, so the mount goes where it points).
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"


def distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(site_packages: Path) -> dict[str, str]:
    """name -> version of every distribution installed in ``site_packages`` (from their METADATA)."""
    found = {}
    for path in site_packages.glob("*.dist-info/METADATA"):
        metadata = email.parser.Parser().parsestr(path.read_text(), headersonly=True)
        found[distribution_name(metadata["Name"])] = metadata["Version"]
    return found


def locked_distributions() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pins = (line.split("#")[0].strip() for line in lines)
    return {distribution_name(name): pin for name, _, pin in (p.partition("==") for p in pins if p)}


def test_image_runs_as_a_numeric_user_and_holds_only_the_locked_runtime(image: Build) -> None:
    user = image.config.get("User", "")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {user!r}: numeric and not root"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"USER {user!r}: numeric group, not root"
    assert image.config.get("Entrypoint") == ["canaria", "run"]
    with mounted() as root:
        passwd = (root / "etc" / "passwd").read_text().splitlines()
        assert uid not in {line.split(":")[2] for line in passwd if line.count(":") >= 2}, (
            "the image's uid has no passwd entry (as under OpenShift's assigned uids): the test below runs"
            " the operator under it"
        )
        (site_packages,) = (root / "opt" / "canaria" / "lib").glob("python3.*/site-packages")
        assert installed_distributions(site_packages) == {
            **locked_distributions(),
            "canaria": version("canaria"),
        }
        package = site_packages / "canaria"
        assert (package / "kube" / "operator.py").is_file()
        assert not (package / "sandbox").exists(), "the sandbox is for newcomers and tests, not the image"
        assert not [p for p in package.rglob("*") if p.name.startswith(("test_", "conftest"))]
        assert not (site_packages / "tests").exists() and not list(site_packages.glob("kmock*"))
        assert (
            not (root / "src").exists()
            and not (root / "wheels").exists()
            and not (root / "opt" / "build").exists()
        )


class ImageOperator(OperatorProcess):
    """The image's ENTRYPOINT and the Deployment's args in a working container of the image, as the Pod
    runs them: the Pod's uid, its environment, its ServiceAccount token where in-cluster config reads it
    (and KUBERNETES_SERVICE_* pointing at the API server), the host's network (all on 127.0.0.1).
    Stopping the process group stops buildah and the operator under it."""

    def __init__(
        self,
        container: str,
        argv: list[str],
        env: dict[str, str],
        user: str,
        account_dir: Path,
        log_path: Path,
    ) -> None:
        super().__init__(account_dir, log_path)  # no kubeconfig: in-cluster config, from account_dir
        self.container, self.argv, self.env, self.user = container, argv, env, user

    def command(self) -> list[str]:
        return [
            "buildah",
            "run",
            "--isolation=chroot",
            "--network=host",
            f"--user={self.user}",
            f"--volume={self.kubeconfig}:{SERVICE_ACCOUNT_DIR}:ro",
            *(f"--env={name}={value}" for name, value in self.env.items()),
            self.container,
            "--",
            *self.argv,
        ]


def service_account_files(control_plane: ControlPlane, kubeconfig: Path, namespace: str, path: Path) -> Path:
    """What the kubelet mounts for a Pod's ServiceAccount: its token, the cluster CA, the namespace."""
    (user,) = yaml.safe_load(kubeconfig.read_text())["users"]
    path.mkdir(mode=0o755)
    (path / "token").write_text(user["user"]["token"])
    (path / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    (path / "namespace").write_text(namespace)
    for file in path.iterdir():
        file.chmod(0o644)  # readable by the Pod's uid, as the kubelet's projected volume makes them
    return path


def container_env(container: client.V1Container, pod_name: str) -> dict[str, str]:
    """The container's env as the kubelet resolves it (the downward API's metadata.name is the Pod's)."""
    env = {}
    for var in container.env or []:
        if var.value_from is not None:
            assert var.value_from.field_ref.field_path == "metadata.name", var
            env[var.name] = pod_name
        else:
            env[var.name] = var.value or ""
    return env


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_packaged_operator_rolls_out_to_healthy_and_reverts(
    image: Build,
    helm: ModuleType,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    crd: str,
    kubelet: Kubelet,
    namespace: str,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(admin_api)
    release = f"img-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=release)))
    liveness, metrics = free_port(), free_port()
    values = {"livenessPort": liveness, "metricsPort": metrics, "extraArgs": ["--bind-address=127.0.0.1"]}
    cfg = helm.Config(kubeconfig_path=str(control_plane.kubeconfig), namespace=release)
    operator: ImageOperator | None = None
    try:
        assert cfg.install(str(CHART), release, values, namespace=release)["status"] == "deployed"
        kubeconfig = chart_service_account_kubeconfig(control_plane, release, release, path=tmp_path / "sa")
        deployment = client.AppsV1Api(admin_api).read_namespaced_deployment(chart_fullname(release), release)
        pod = deployment.spec.template.spec
        (container,) = pod.containers
        assert not container.command, "the image's ENTRYPOINT is what runs"
        user = f"{pod.security_context.run_as_user}:{pod.security_context.run_as_group}"
        assert user == image.config["User"], "the chart runs the operator as the image's user"
        api_port = control_plane.server.rsplit(":", 1)[1]
        env = {
            **container_env(container, pod_name=f"{chart_fullname(release)}-5d8f7c9b4-x2x7q"),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port,
        }
        account = service_account_files(control_plane, kubeconfig, release, tmp_path / "account")
        with working_container() as working:
            argv = [*image.config["Entrypoint"], *container.args]
            operator = ImageOperator(working, argv, env, user, account, tmp_path / "operator.log").start()
            try:
                wait_for(
                    "the operator's liveness endpoint",
                    lambda: operator.problem() or _answers(f"http://127.0.0.1:{liveness}/healthz"),
                    timeout=60,
                )
                assert operator.problem() is None, operator.problem()
                mds = ModelDeployments(admin_api, namespace)
                mds.create(model_deployment("fraud", "v1", progress_deadline="4s"))
                mds.wait_phase("fraud", "Healthy", timeout=60, stable="v1")
                mds.set_version("fraud", "v2", reason="retrained")
                mds.wait_phase("fraud", "Healthy", timeout=60, stable="v2")
                wait_for("v1's Deployment deleted", lambda: mds.replicas("fraud") == {"v2": 2}, timeout=20)

                kubelet.never_ready = lambda p: (p.metadata.labels or {}).get("canaria.dev/version") == "v3"
                mds.set_version("fraud", "v3", reason="a canary that never becomes ready")
                status = mds.wait_phase("fraud", "Reverted", timeout=60, stable="v2")
                assert status["rejected"]["reason"] == "ProgressDeadlineExceeded"
                wait_for("a RolledBack Event", lambda: "RolledBack" in mds.reasons("fraud"), timeout=20)
                assert re.search(r"^canaria_up 1\.0$", get(f"http://127.0.0.1:{metrics}/metrics"), re.M)

                mds.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud")
                wait_for(
                    "the operator to release its finalizer",
                    lambda: (
                        not mds.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
                            "items"
                        ]
                    ),
                    timeout=20,
                )
                log = operator.log_tail(10_000)
                assert "Traceback" not in log and "getpwuid" not in log, log
            except BaseException:
                print(f"--- operator log (in the image) ---\n{operator.log_tail(80)}")
                raise
            finally:
                operator.stop()
    finally:
        release_finalizers(admin_api, namespace)
        with contextlib.suppress(Exception):
            cfg.uninstall(release, ignore_not_found=True)
        cfg.close()
        with contextlib.suppress(ApiException):
            core.delete_namespace(release, propagation_policy="Background")


def _answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True
