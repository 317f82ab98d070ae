"""Child processes on this machine (Prometheus, a control plane, the operator): ports and lifetimes."""

from __future__ import annotations

import ctypes
import signal
import socket
import sys
from collections.abc import Callable

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
