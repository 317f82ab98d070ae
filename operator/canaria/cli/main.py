"""`canaria`: run the operator, print its CRD and RBAC, and the day-2 commands (also `kubectl canaria`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import yaml


def _run(args: argparse.Namespace) -> int:
    """One line on stderr and exit 1 when the operator cannot start: that line is all `kubectl logs` of a
    CrashLoopBackOff shows, so it must say what to fix (no traceback)."""
    from canaria.kube.operator import RunOptions, StartupError, run

    options = RunOptions(
        namespaces=tuple(args.namespace or ()),
        prometheus_address=args.prometheus_address,
        allowed_prometheus=tuple(args.allowed_prometheus or ()),
        allow_plain_http_credentials=args.allow_plain_http_credentials,
        max_queries_per_minute=args.max_queries_per_minute,
        kubeconfig=args.kubeconfig,
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
        bind_address=args.bind_address,
        log_format=args.log_format,
        verbose=args.verbose,
        notification_receivers=tuple(args.notification_receiver or ()),
        notification_defaults=tuple(args.notification_default or ()),
        notify_promotions=args.notify_promotions,
        notifications_secret=args.notifications_secret,
    )
    try:
        return run(options)
    except StartupError as exc:
        sys.stderr.write(f"canaria run: cannot start: {exc}\n")
        return 1


def _crd(_: argparse.Namespace) -> int:
    from canaria.kube.crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def _rbac(_: argparse.Namespace) -> int:
    from canaria.kube.rbac import PERMISSIONS

    rows = [
        {"apiGroup": p.group, "resource": p.resource, "verbs": list(p.verbs), "why": p.why}
        for p in PERMISSIONS
    ]
    sys.stdout.write(yaml.safe_dump(rows, sort_keys=False))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("canaria")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from canaria.cli import backtest, ctl, dashboard, sandbox
    from canaria.core.policy import DEFAULT_QUERIES_PER_MINUTE

    parser = argparse.ArgumentParser(
        prog=ctl.prog_name(),
        description="Canary rollouts of ML model versions on Kubernetes, gated by Prometheus, "
        "with automatic revert.",
    )
    parser.add_argument("--version", action="version", version=f"canaria {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the operator",
        description="Run the Canaria operator against the current kubeconfig (or in-cluster config).",
    )
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        metavar="NS",
        help="watch only this namespace (repeatable; globs like 'ml-*' work); default: all",
    )
    run.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    run.add_argument(
        "--prometheus-address",
        metavar="URL",
        help="Prometheus used when a ModelDeployment sets no spec.prometheus.address (always allowed)",
    )
    run.add_argument(
        "--allowed-prometheus",
        action="append",
        metavar="URL",
        help="also allow spec.prometheus.address at this base URL or below its path (repeatable); "
        "any other address is refused before a request is made",
    )
    run.add_argument(
        "--allow-plain-http-credentials",
        action="store_true",
        help="send spec.prometheus.bearerTokenSecretRef tokens over plain http too (default: https only)",
    )
    run.add_argument(
        "--max-queries-per-minute",
        type=int,
        default=DEFAULT_QUERIES_PER_MINUTE,
        metavar="N",
        help="refuse a ModelDeployment whose metrics times analysis runs per minute exceed N "
        f"(default {DEFAULT_QUERIES_PER_MINUTE})",
    )
    run.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    run.add_argument(
        "--liveness-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="serve kopf's liveness probe at /healthz on this port (0: off; default 8080)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        metavar="PORT",
        help="serve Prometheus metrics at /metrics on this port (0: off; default 9464)",
    )
    run.add_argument(
        "--bind-address",
        default="0.0.0.0",
        metavar="ADDR",
        help="address for the liveness and metrics endpoints (default 0.0.0.0)",
    )
    run.add_argument(
        "--log-format", choices=("plain", "json"), default="plain", help="log format (default plain)"
    )
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    notify = run.add_argument_group("notifications (webhooks naming the owner; see docs/notifications.md)")
    notify.add_argument(
        "--notifications-secret",
        metavar="NAMESPACE/NAME",
        help="Secret holding one webhook URL per receiver (key: receiver name)",
    )
    notify.add_argument(
        "--notification-receiver",
        action="append",
        metavar="NAME=FORMAT",
        help="a receiver and its payload format, slack or json (repeatable)",
    )
    notify.add_argument(
        "--notification-default",
        action="append",
        metavar="NAME",
        help="receivers for ModelDeployments that name none (repeatable; default: every receiver)",
    )
    notify.add_argument(
        "--notify-promotions",
        action="store_true",
        help="also notify promotions (a ModelDeployment may say otherwise); Warnings are always sent",
    )
    run.set_defaults(func=_run)

    crd = commands.add_parser("crd", help="print the ModelDeployment CustomResourceDefinition")
    crd.set_defaults(func=_crd)
    rbac = commands.add_parser("rbac", help="print the permissions the operator needs, and why")
    rbac.set_defaults(func=_rbac)
    ctl.add_commands(commands)
    backtest.add_parser(commands)
    dashboard.add_parser(commands)
    sandbox.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "all_namespaces", False):
        args.namespace = None
    if args.command != "run":  # kopf configures logging for the operator itself
        logging.basicConfig(level=logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
