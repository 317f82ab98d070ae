"""Child processes on this machine (Prometheus, a control plane, the operator): ports and lifetimes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A currently free loopback TCP port (the kernel picks it; a tiny reuse race is the caller's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that SIGKILLs the child when the thread that started it dies, so a killed test run
    or sandbox leaves no server behind (start_new_session detaches children from the terminal's group).
    Resolved before fork: only the prctl call runs in the child. None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class OperatorProcess:
    """`canaria run` as a child process logging to a file: the sandbox's operator, and the tests' (which
    kill it at will). Its own session, so a terminal's Ctrl-C reaches only whoever started it."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: Sequence[str] = (),
        prometheus: str | None = None,
        args: Sequence[str] = (),
        verbose: bool = False,
    ) -> None:
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.namespaces, self.prometheus, self.args, self.verbose = namespaces, prometheus, args, verbose
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """Endpoints off (or on loopback), never the ambient KUBECONFIG: children never collide."""
        command = [
            sys.executable,
            "-m",
            "canaria.cli.main",
            "run",
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        command += ["--liveness-port=0", "--metrics-port=0", "--bind-address=127.0.0.1"]
        command += [f"--namespace={ns}" for ns in self.namespaces]
        if self.prometheus:
            command.append(f"--prometheus-address={self.prometheus}")
        if self.verbose:
            command.append("--verbose")
        return [*command, *self.args]  # last: a caller's flag (e.g. --metrics-port=PORT) wins

    def start(self) -> OperatorProcess:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def problem(self) -> str | None:
        """Why it is not running, if it exited."""
        if self.process is None or self.process.poll() is None:
            return None
        return f"the operator exited with code {self.process.returncode}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (kopf stops its daemons gracefully), SIGKILL if it takes longer than ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
