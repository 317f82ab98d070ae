"""`canaria sandbox`: a real rollout on this machine, with no cluster.

It starts, on 127.0.0.1 only, kmock's Kubernetes emulator (made to behave like an API server where the
operator relies on it, see `emulator`), a local Prometheus, a simulated model server whose traffic per
version follows the replica split the operator sets, and the real operator; then it plays a story
(`story`): v1 deployed, v2 promoted through its canary steps, v3 reverted to v2 on its error rate.
``--keep`` leaves everything running with a kubeconfig for ``canaria status`` and ``kubectl``.

Importing this package is cheap: `run_sandbox` imports the heavy parts when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any


def run_sandbox(
    keep: bool = False,
    *,
    story: bool = True,
    kubeconfig: str | None = None,
    examples: str | None = None,
    console: Any = None,
) -> int:
    """Run the sandbox; the exit code is 0 when the story ended as told (or was not played)."""
    from canaria.sandbox.runner import Sandbox

    return Sandbox(keep=keep, story=story, kubeconfig=kubeconfig, examples=examples, console=console).run()


def _main(args: argparse.Namespace) -> int:
    return run_sandbox(args.keep, story=args.story, kubeconfig=args.kubeconfig, examples=args.examples)


def add_parser(commands: Any) -> None:
    """Register `canaria sandbox` on the CLI's subcommands."""
    sandbox = commands.add_parser(
        "sandbox",
        help="watch a canary rollout on this machine, no cluster needed",
        description="Start a Kubernetes emulator, a local Prometheus, a simulated model server and the "
        "real operator, all on 127.0.0.1, and play a rollout: v1 deployed, v2 promoted in canary steps, "
        "v3 reverted on its error rate. Waits are shortened for the sandbox (and it says how). "
        "Needs Debian's prometheus package.",
    )
    sandbox.add_argument(
        "--keep",
        action="store_true",
        help="keep everything running after the story (Ctrl-C stops it) and print a kubeconfig for "
        "`canaria status` and `kubectl`",
    )
    sandbox.add_argument(
        "--no-story",
        dest="story",
        action="store_false",
        help="start the sandbox without playing the story (useful with --keep)",
    )
    sandbox.add_argument(
        "--kubeconfig", metavar="PATH", help="write the sandbox's kubeconfig here (default: a temp dir)"
    )
    sandbox.add_argument(
        "--examples",
        metavar="DIR",
        help="directory with 01-first-deployment.yaml, 02-canary-upgrade.yaml, 03-bad-version.yaml "
        "(default: manifests/examples of this checkout, else built-in equivalents)",
    )
    sandbox.set_defaults(func=_main)
