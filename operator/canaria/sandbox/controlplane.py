"""A real, local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager), for the
sandbox and the integration tests.

This is the Python twin of ``../shared/envtest/start-cluster`` (the verified reference): same flags, same
PKI layout, token auth and RBAC, free loopback ports. It has no pytest dependency; the test fixtures live
in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from canaria.sandbox.processes import die_with_parent, free_port

#: Binaries a full control plane needs; the controller manager is optional (``controllers=False``).
REQUIRED_BINARIES: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager")

#: Controllers that need a cloud, real nodes or OpenShift; the rest of ``*`` runs as in start-cluster.
DISABLED_CONTROLLERS: tuple[str, ...] = (
    "node-ipam-controller",
    "node-lifecycle-controller",
    "persistentvolume-attach-detach-controller",
    "service-ca-certificate-publisher-controller",
)


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or to become ready; the message holds its log tail."""


def missing_binaries(
    assets_dir: str | os.PathLike[str], names: Sequence[str] = REQUIRED_BINARIES
) -> list[str]:
    """Names of the binaries that ``assets_dir`` lacks (or cannot execute), so callers can skip early."""
    base = Path(assets_dir)
    return [n for n in names if not (base / n).is_file() or not os.access(base / n, os.X_OK)]


def write_kubeconfig(
    path: str | os.PathLike[str],
    *,
    server: str,
    ca_file: str | os.PathLike[str],
    user: str,
    token: str,
    namespace: str = "default",
) -> Path:
    """Write a self-contained token kubeconfig (CA inlined), so it keeps working if the PKI dir moves."""
    ca_data = base64.b64encode(Path(ca_file).read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": user, "namespace": namespace}}
        ],
        "current-context": "local",
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    out.chmod(0o600)
    return out


def _tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log file, for error messages that explain themselves."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on free 127.0.0.1 ports under ``work_dir``.

    Usage: ``cp = ControlPlane(assets, tmp).start()`` ... ``cp.stop()`` (or ``with ControlPlane(...) as cp``).
    After ``start()``: ``server`` (https URL), ``ca_file``, ``admin_token``, ``kubeconfig`` (admin,
    system:masters). ``stop()`` is idempotent and safe after a failed or partial ``start()``.
    """

    def __init__(
        self,
        assets_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        controllers: bool = True,
        ready_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> None:
        """``die_with_parent`` ties the children's life to the *thread* that calls ``start()``."""
        self.assets_dir = Path(assets_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.controllers = controllers
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self.pki_dir = self.work_dir / "pki"
        self.log_dir = self.work_dir / "logs"
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.kcm_kubeconfig = self.work_dir / "kcm.kubeconfig"
        self.ca_file = self.pki_dir / "ca.crt"
        self.admin_token = ""
        self.kcm_token = ""
        self.port = 0
        self.etcd_port = 0
        self.server = ""
        self.etcd_url = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}
        self._atexit_registered = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the processes still owned by this control plane (for diagnostics and leak checks)."""
        return {name: p.pid for name, p in self._procs.items()}

    def start(self) -> ControlPlane:
        """Start everything and return once /readyz is 200; on failure stop what started and raise."""
        if self._procs:
            raise RuntimeError("control plane already started")
        need = list(REQUIRED_BINARIES if self.controllers else REQUIRED_BINARIES[:2])
        if missing := missing_binaries(self.assets_dir, need):
            raise ControlPlaneError(f"{self.assets_dir} lacks {', '.join(missing)}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self._atexit_registered:
            atexit.register(self.stop)  # safety net if a fixture finalizer never runs
            self._atexit_registered = True
        try:
            self.port, self.etcd_port, peer_port = free_port(), free_port(), free_port()
            self.server = f"https://127.0.0.1:{self.port}"
            self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
            self._spawn_etcd(peer_port)  # needs no PKI: let it boot while openssl runs
            self._make_pki()
            write_kubeconfig(
                self.kubeconfig,
                server=self.server,
                ca_file=self.ca_file,
                user="admin",
                token=self.admin_token,
            )
            write_kubeconfig(
                self.kcm_kubeconfig,
                server=self.server,
                ca_file=self.ca_file,
                user="system:kube-controller-manager",
                token=self.kcm_token,
            )
            self._wait("etcd", lambda: self._http_ok(f"{self.etcd_url}/health"), 20.0)
            self._start_apiserver()
            if self.controllers:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; reap. Idempotent and safe after a partial start.

        Clients first, etcd last: an apiserver whose etcd is gone retries it until SIGKILLed (10 s lost),
        while with etcd up it exits in ~0.1 s.
        """
        procs, self._procs = self._procs, {}
        stages = [
            [p for n, p in procs.items() if n != "etcd"],
            [p for n, p in procs.items() if n == "etcd"],
        ]
        for stage in stages:
            for proc in stage:
                self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in stage:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                self._signal(proc, signal.SIGKILL)  # the group may hold helpers after the leader exited
        for fh in self._logs.values():
            with contextlib.suppress(OSError):
                fh.close()
        self._logs.clear()
        shutil.rmtree(self.work_dir / "etcd-data", ignore_errors=True)  # etcd preallocates 64 MB of WAL
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the whole process group (start_new_session made pgid == pid); ignore vanished ones."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    # ------------------------------------------------------------------ pieces

    def _make_pki(self) -> None:
        """CA, serving cert (SAN 127.0.0.1), SA signing keys and a token file, as start-cluster makes them."""
        pki = self.pki_dir
        pki.mkdir(parents=True, exist_ok=True)
        tokens = pki / "tokens.csv"
        if not (pki / "apiserver.crt").is_file() or not tokens.is_file():
            (pki / "san.ext").write_text(
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                "extendedKeyUsage=serverAuth\n"
            )
            # Two stages of independent openssl runs, each in parallel: RSA key generation dominates.
            self._openssl(
                "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=local-ca",
                "req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr"
                " -subj /CN=kube-apiserver",
                "genrsa -out sa.key 2048",
            )
            self._openssl(
                "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt"
                " -days 3650 -extfile san.ext",
                "rsa -in sa.key -pubout -out sa.pub",
            )
            tokens.write_text(
                f'{secrets.token_hex(32)},admin,uid-admin,"system:masters"\n'
                f"{secrets.token_hex(32)},system:kube-controller-manager,uid-kcm\n"
            )
            for f in [tokens, *pki.glob("*.key")]:
                f.chmod(0o600)
        lines = tokens.read_text().splitlines()
        self.admin_token = lines[0].split(",", 1)[0]
        self.kcm_token = lines[1].split(",", 1)[0]

    def _openssl(self, *commands: str) -> None:
        """Run openssl commands concurrently in the PKI dir; raise with stderr if any fails."""
        procs = [
            (
                cmd,
                subprocess.Popen(
                    ["openssl", *cmd.split()],
                    cwd=self.pki_dir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    text=True,
                ),
            )
            for cmd in commands
        ]
        failures = []
        for cmd, proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"openssl {cmd}: {err.strip()}")
        if failures:
            raise ControlPlaneError("PKI generation failed:\n" + "\n".join(failures))

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start one binary in its own session, logging to ``logs/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs[name] = log
        proc = subprocess.Popen(
            [str(self.assets_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            start_new_session=True,
            preexec_fn=die_with_parent() if self.die_with_parent else None,
        )
        self._procs[name] = proc
        return proc

    def _fail(self, name: str, why: str) -> ControlPlaneError:
        log = self.log_dir / f"{name}.log"
        return ControlPlaneError(f"{name} {why} (log: {log}); last lines:\n{_tail(log)}")

    def _wait(self, name: str, probe: Any, timeout: float) -> None:
        """Poll ``probe()`` every 0.1 s until true; fail fast with the log tail if the process exits."""
        proc = self._procs[name]
        deadline = time.monotonic() + timeout
        while True:
            if probe():
                return
            if proc.poll() is not None:
                raise self._fail(name, f"exited with code {proc.returncode} during start")
            if time.monotonic() > deadline:
                raise self._fail(name, f"not ready after {timeout:.0f} s")
            time.sleep(0.1)

    def _spawn_etcd(self, peer_port: int) -> None:
        data = self.work_dir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        peer = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=local",
                f"--data-dir={data}",
                "--logger=zap",
                "--log-level=warn",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--initial-cluster-state=new",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.pki_dir
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--profiling=false",
                f"--cert-dir={self.work_dir / 'kas-certs'}",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self._wait(
            "kube-apiserver",
            lambda: self._http_ok(f"{self.server}/readyz", ctx=ctx, token=self.admin_token),
            self.ready_timeout,
        )

    def _start_controller_manager(self) -> None:
        pki = self.pki_dir
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--cluster-signing-cert-file={self.ca_file}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--controllers=*," + ",".join(f"-{c}" for c in DISABLED_CONTROLLERS),
                # Not in start-cluster: the default client QPS (20) throttles the ~40 controllers' start-up
                # discovery, delaying the first default ServiceAccount by ~4.5 s; with this it is ~0.5 s.
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )
        # No readiness endpoint (secure port off): just make sure it did not die on its flags.
        time.sleep(0.3)
        proc = self._procs["kube-controller-manager"]
        if proc.poll() is not None:
            raise self._fail("kube-controller-manager", f"exited with code {proc.returncode} during start")

    @staticmethod
    def _http_ok(url: str, *, ctx: ssl.SSLContext | None = None, token: str = "") -> bool:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    # ------------------------------------------------------------------ clients

    def api_client(self) -> Any:
        """A fresh admin ``kubernetes.client.ApiClient`` from the admin kubeconfig (close it when done)."""
        from kubernetes import config  # local: importing this module must stay cheap

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        cluster_rules: list[dict[str, Any]],
        path: str | os.PathLike[str],
        *,
        expiration_seconds: int = 3600,
        namespaced: bool = False,
    ) -> Path:
        """Kubeconfig for ServiceAccount ``namespace/name`` granted exactly ``cluster_rules``.

        ``namespaced`` grants them in ``namespace`` only (a Role and a RoleBinding, e.g. for a tenant).

        For least-privilege tests: run the operator with the chart's ClusterRole rules, a missing verb fails.

        Creates the ServiceAccount, a ClusterRole ``<namespace>-<name>`` with those rules and a matching
        ClusterRoleBinding (replaced if they exist), mints a token with the TokenRequest API, and returns
        only once the apiserver's RBAC cache enforces the grant, so the first request cannot race it.
        """
        from kubernetes import client

        role_name = f"{namespace}-{name}"
        with self.api_client() as api:
            core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
            _create_or_ignore(
                lambda: core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
            )
            kind = "Role" if namespaced else "ClusterRole"
            meta = {"name": role_name, **({"namespace": namespace} if namespaced else {})}
            role = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": meta,
                "rules": cluster_rules,
            }
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": f"{kind}Binding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
            if namespaced:
                _create_or_replace(
                    lambda: rbac.create_namespaced_role(namespace, role),
                    lambda: rbac.replace_namespaced_role(role_name, namespace, role),
                )
                _create_or_replace(
                    lambda: rbac.create_namespaced_role_binding(namespace, binding),
                    lambda: rbac.replace_namespaced_role_binding(role_name, namespace, binding),
                )
            else:
                _create_or_replace(
                    lambda: rbac.create_cluster_role(role),
                    lambda: rbac.replace_cluster_role(role_name, role),
                )
                _create_or_replace(
                    lambda: rbac.create_cluster_role_binding(binding),
                    lambda: rbac.replace_cluster_role_binding(role_name, binding),
                )
            token_request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(expiration_seconds=expiration_seconds)
            )
            minted = core.create_namespaced_service_account_token(name, namespace, token_request)
            token = minted.status.token
            user = f"system:serviceaccount:{namespace}:{name}"
            self._wait_for_grant(api, user, namespace, cluster_rules)
        return write_kubeconfig(
            path, server=self.server, ca_file=self.ca_file, user=user, token=token, namespace=namespace
        )

    @staticmethod
    def _wait_for_grant(
        api: Any, user: str, namespace: str, rules: list[dict[str, Any]], timeout: float = 10.0
    ) -> None:
        """Block until a SubjectAccessReview for each rule's first verb/resource is allowed.

        RBAC objects reach the authorizer through an informer, a few ms after the write returns.
        """
        from kubernetes import client

        authz = client.AuthorizationV1Api(api)
        reviews = [_access_review(user, namespace, rule) for rule in rules]
        deadline = time.monotonic() + timeout
        for review in reviews:
            if review is None:
                continue
            while not authz.create_subject_access_review(review).status.allowed:
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"RBAC grant for {user} not effective after {timeout} s: {review}"
                    )
                time.sleep(0.05)


def _access_review(user: str, namespace: str, rule: dict[str, Any]) -> dict[str, Any] | None:
    """A SubjectAccessReview that ``rule`` alone allows (first verb, first resource), or None if unclear."""
    verbs = rule.get("verbs") or []
    if not verbs:
        return None
    spec: dict[str, Any] = {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"]}
    if urls := rule.get("nonResourceURLs"):
        spec["nonResourceAttributes"] = {"path": urls[0].rstrip("*") or "/", "verb": verbs[0]}
    else:
        groups, resources = rule.get("apiGroups") or [""], rule.get("resources") or []
        if not resources:
            return None
        resource, _, subresource = resources[0].partition("/")
        attrs = {"group": groups[0], "resource": resource, "verb": verbs[0], "namespace": namespace}
        if subresource:
            attrs["subresource"] = subresource
        if names := rule.get("resourceNames"):
            attrs["name"] = names[0]
        spec["resourceAttributes"] = attrs
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _create_or_ignore(create: Any) -> None:
    """Create, treating 409 AlreadyExists as success (idempotent setup)."""
    from kubernetes.client.exceptions import ApiException

    try:
        create()
    except ApiException as exc:
        if _status(exc) != 409:
            raise


def _create_or_replace(create: Any, replace: Any) -> None:
    """Create, or replace on 409 so a re-run gets exactly the requested rules."""
    from kubernetes.client.exceptions import ApiException

    try:
        create()
    except ApiException as exc:
        if _status(exc) != 409:
            raise
        replace()
