"""`canaria sandbox`: the CLI side. The sandbox itself (`canaria.sandbox`) is an optional part of the
package: it needs the ``sandbox`` extra (kmock) and is not in the operator image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

MISSING = (
    "canaria sandbox is not part of this installation: install the sandbox extra "
    "(pip install 'canaria[sandbox]', which scripts/setup.sh does)"
)


def _main(args: argparse.Namespace) -> int:
    try:
        from canaria.sandbox import run_sandbox
        from canaria.sandbox.runner import Sandbox  # noqa: F401  (imports kmock: fail here, not midway)
    except ImportError as error:
        print(f"{MISSING} ({error})", file=sys.stderr)
        return 2
    return run_sandbox(
        args.keep,
        story=args.story,
        kubeconfig=args.kubeconfig,
        examples=args.examples,
        cluster=args.cluster,
        on_keep=_dashboard,
    )


def _dashboard(kubeconfig: str, prometheus: str) -> str:
    """What `--keep` adds: the dashboard over the sandbox, so a newcomer watches the story as curves."""
    from canaria.cli.dashboard import start_in_background

    return f"dashboard: {start_in_background(kubeconfig, prometheus)}  (canaria dashboard, actions allowed)"


def add_parser(commands: Any) -> None:
    """Register `canaria sandbox` on the CLI's subcommands."""
    sandbox = commands.add_parser(
        "sandbox",
        help="watch a canary rollout on this machine, no cluster needed",
        description="Start Kubernetes (a real control plane from $KUBEBUILDER_ASSETS or setup-envtest's "
        "cache when there is one, else an emulator), a local Prometheus, a simulated model server and the "
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
    sandbox.add_argument(
        "--cluster",
        choices=("auto", "control-plane", "emulator"),
        default="auto",
        help="auto (the default): a real control plane when its binaries are found, else the emulator",
    )
    sandbox.set_defaults(func=_main)
