"""`canaria dashboard`: every rollout at a glance, with its metric curves against their thresholds.

A local web UI served from the package with the user's kubeconfig (bound to 127.0.0.1 unless told
otherwise), read-only unless started with ``--allow-actions``. Its assets ship in the package (uPlot, MIT,
for the plots): nothing is fetched at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def _main(args: argparse.Namespace) -> int:
    from canaria.cli.dashboard.server import Dashboard, serve
    from canaria.cli.session import CtlError, Session

    try:
        session = Session.open(args.kubeconfig, args.context, args.namespace)
    except CtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dashboard = Dashboard(
        session,
        all_namespaces=args.all_namespaces,
        allow_actions=args.allow_actions,
        prometheus_address=args.prometheus_address,
    )
    try:
        asyncio.run(serve(dashboard, args.address, args.port))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot listen on {args.address}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def start_in_background(kubeconfig: str, prometheus_address: str, port: int = 0) -> str:
    """Serve the dashboard (every namespace, actions allowed) from a daemon thread; its URL once it listens.

    For `canaria sandbox --keep`: the sandbox is the user's own, so its buttons may act."""
    import threading

    from canaria.cli.dashboard.server import Dashboard, serve
    from canaria.cli.session import Session

    session = Session.open(kubeconfig, None, None)
    dashboard = Dashboard(
        session, all_namespaces=True, allow_actions=True, prometheus_address=prometheus_address
    )
    ready = threading.Event()
    url: list[str] = []

    def listening(address: str) -> None:
        url.append(address)
        ready.set()

    thread = threading.Thread(
        target=lambda: asyncio.run(serve(dashboard, "127.0.0.1", port, listening)),
        name="canaria-dashboard",
        daemon=True,
    )
    thread.start()
    if not ready.wait(timeout=30):
        raise RuntimeError("the dashboard did not start within 30 s")
    return url[0]


def add_parser(commands: Any) -> None:
    """Register `canaria dashboard`."""
    parser = commands.add_parser(
        "dashboard",
        help="a local web UI: every rollout, its metric curves against their thresholds, live",
        description="Serve a web UI on this machine with your kubeconfig: the overview of every "
        "ModelDeployment, one page per rollout with lineage, steps, audit trail and each analysis metric "
        "plotted against its bound (canary and stable), following changes live. Read-only unless "
        "--allow-actions.",
        epilog="example: canaria dashboard -A --allow-actions",
    )
    parser.add_argument("--port", type=int, default=3100, metavar="PORT", help="port (default 3100; 0: any)")
    parser.add_argument(
        "--address", default="127.0.0.1", metavar="ADDR", help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: the context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument(
        "--allow-actions",
        action="store_true",
        help="show promote, pause, resume, abort and retry buttons (your identity, the CLI's commands)",
    )
    parser.add_argument(
        "--prometheus-address",
        metavar="URL",
        help="Prometheus for the plots (default: each spec's; e.g. a port-forward, http://127.0.0.1:9090)",
    )
    parser.set_defaults(func=_main)
