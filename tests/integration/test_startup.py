"""`canaria run` that cannot start says why in one line and exits 1: that line is all `kubectl logs` shows
of a CrashLoopBackOff, so it names what to fix, never a traceback.

Each case runs the real command as a process, as the image's entrypoint does: bad flags, kubeconfigs that
are missing or not kubeconfigs, no credentials at all, an API server nobody listens for, and, against the
session's control plane, a token it rejects and a ServiceAccount without the permission to list
ModelDeployments (namespaced and cluster-wide).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from canaria.sandbox.controlplane import ControlPlane, write_kubeconfig
from canaria.sandbox.processes import free_port

PREFIX = "canaria run: cannot start: "


def canaria_run(home: Path, *args: str) -> str:
    """Run `canaria run` with no ambient credentials (no $KUBECONFIG, an empty $HOME, not in a Pod);
    assert it exits 1 having printed exactly one line, and return that line without the prefix."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")}
    env["HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "canaria.cli.main", "run", "--liveness-port=0", "--metrics-port=0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 1, f"exit code {done.returncode}:\n{done.stdout}{done.stderr}"
    assert len(output) == 1 and output[0].startswith(PREFIX), "\n".join(output)
    return output[0].removeprefix(PREFIX)


BAD_STARTS = [
    pytest.param(
        ["--prometheus-address=prometheus:9090"],
        r"--prometheus-address: 'prometheus:9090' must start with http:// or https://",
        id="no-scheme",
    ),
    pytest.param(
        ["--prometheus-address=http://"],
        r"--prometheus-address: 'http://' must be scheme://host\[:port\]\[/path\], without user, .*",
        id="no-host",
    ),
    pytest.param(
        ["--kubeconfig=/nonexistent/kubeconfig"],
        r"cannot read --kubeconfig /nonexistent/kubeconfig: .*No such file.*",
        id="kubeconfig-missing",
    ),
    pytest.param(
        ["--kubeconfig=/etc/hostname"],
        r"--kubeconfig /etc/hostname is not a kubeconfig \(it lists no clusters\)",
        id="not-a-kubeconfig",
    ),
    pytest.param(
        ["--notification-receiver=team=slack"],
        r"--notification-receiver needs --notifications-secret \(where the URLs are\)",
        id="notification-receiver-without-secret",
    ),
    pytest.param([], r"no Kubernetes credentials: not in a Pod .*; pass --kubeconfig", id="no-credentials"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_STARTS)
def test_bad_flags_and_missing_credentials(tmp_path: Path, args: list[str], expected: str) -> None:
    assert re.fullmatch(expected, canaria_run(tmp_path, *args))


def test_unreachable_api_server(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    line = canaria_run(tmp_path, f"--kubeconfig={path}")
    assert line == f"cannot reach the API server at https://127.0.0.1:{port}: [Errno 111] Connection refused"


def test_rejected_token(control_plane: ControlPlane, tmp_path: Path) -> None:
    server = control_plane.server
    config = write_kubeconfig(
        tmp_path / "kc", server=server, ca_file=control_plane.ca_file, user="someone", token="not-a-token"
    )
    line = canaria_run(tmp_path, f"--kubeconfig={config}")
    assert line.startswith(f"the API server at {server} rejected the operator's credentials (401"), line


@pytest.mark.parametrize("scope", ["namespace", "all-namespaces"])
def test_missing_permission(
    control_plane: ControlPlane, crd: str, namespace: str, tmp_path: Path, scope: str
) -> None:
    """A ServiceAccount granted nothing: the line names the refused call, where, and who was refused."""
    config = control_plane.service_account_kubeconfig(namespace, "nobody", [], tmp_path / "kc")
    args = [f"--namespace={namespace}"] if scope == "namespace" else ["--all-namespaces"]
    line = canaria_run(tmp_path, f"--kubeconfig={config}", *args)
    where = namespace if scope == "namespace" else "all namespaces"
    assert line.startswith(
        f"forbidden to list modeldeployments in {where}: the operator's RBAC needs it ("
    ), line
    assert f'User "system:serviceaccount:{namespace}:nobody" cannot list resource "modeldeployments"' in line
