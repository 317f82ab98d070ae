"""`canaria sandbox`: a real rollout on this machine, with no cluster.

It starts, on 127.0.0.1 only, Kubernetes (a real control plane when its binaries are at hand, else kmock's
emulator made to behave like an API server where the operator relies on it: see `clusters`), a local
Prometheus, a simulated model server whose traffic per
version follows the replica split the operator sets, and the real operator; then it plays a story
(`story`): v1 deployed, v2 promoted through its canary steps, v3 reverted to v2 on its error rate.
``--keep`` leaves everything running with a kubeconfig for ``canaria status`` and ``kubectl``.

Importing this package is cheap: `run_sandbox` imports the heavy parts when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_sandbox(
    keep: bool = False,
    *,
    story: bool = True,
    kubeconfig: str | None = None,
    examples: str | None = None,
    cluster: str = "auto",
    console: Any = None,
    on_keep: Callable[[str, str], str] | None = None,
) -> int:
    """Run the sandbox; the exit code is 0 when the story ended as told (or was not played)."""
    from canaria.sandbox.runner import Sandbox

    sandbox = Sandbox(
        keep=keep,
        story=story,
        kubeconfig=kubeconfig,
        examples=examples,
        cluster=cluster,
        console=console,
        on_keep=on_keep,
    )
    return sandbox.run()
