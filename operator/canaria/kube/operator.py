"""Start the operator: kopf with Canaria's handlers, the liveness probe and the metrics endpoint.

`canaria run` parses its flags and calls `run`; nothing here reads argv, so the image, the tests and the
sandbox start the same operator the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from canaria.core.notifications import Policy, Receiver
from canaria.core.policy import DEFAULT_QUERIES_PER_MINUTE, AnalysisPolicy


@dataclass(frozen=True)
class RunOptions:
    """How `canaria run` was asked to run (the chart passes these as flags)."""

    namespaces: tuple[str, ...] = ()
    prometheus_address: str | None = None
    allowed_prometheus: tuple[str, ...] = ()
    allow_plain_http_credentials: bool = False
    max_queries_per_minute: int = DEFAULT_QUERIES_PER_MINUTE
    kubeconfig: str | None = None
    liveness_port: int = 8080
    metrics_port: int = 9464
    bind_address: str = "0.0.0.0"
    log_format: str = "plain"
    verbose: bool = False
    notification_receivers: tuple[str, ...] = ()  # NAME=FORMAT (slack or json)
    notification_defaults: tuple[str, ...] = ()
    notify_promotions: bool = False
    notifications_secret: str | None = None  # NAMESPACE/NAME


def notification_settings(options: RunOptions) -> tuple[Policy, tuple[str, str] | None]:
    """The notification policy the flags describe; a ValueError names the flag at fault."""
    receivers = []
    for item in options.notification_receivers:
        name, _, fmt = item.partition("=")
        if not name or fmt not in ("slack", "json"):
            raise ValueError(f"--notification-receiver {item!r}: use NAME=slack or NAME=json")
        receivers.append(Receiver(name, fmt))  # type: ignore[arg-type]
    policy = Policy(tuple(receivers), tuple(options.notification_defaults), options.notify_promotions)
    for name in policy.default_receivers:
        if policy.receiver(name) is None:
            raise ValueError(f"--notification-default {name!r} is not a --notification-receiver")
    secret = None
    if options.notifications_secret:
        namespace, _, name = options.notifications_secret.partition("/")
        if not namespace or not name:
            raise ValueError(f"--notifications-secret {options.notifications_secret!r}: use NAMESPACE/NAME")
        secret = (namespace, name)
    elif receivers:
        raise ValueError("--notification-receiver needs --notifications-secret (where the URLs are)")
    return policy, secret


def run(options: RunOptions) -> int:
    """Run the operator until it is stopped; the exit code for the process."""
    import kopf
    from prometheus_client import start_http_server

    from canaria.kube import handlers, telemetry
    from canaria.kube.reconciler import Settings

    kopf.configure(
        verbose=options.verbose,
        log_format={"plain": kopf.LogFormat.PLAIN, "json": kopf.LogFormat.JSON}[options.log_format],
    )
    policy, secret = notification_settings(options)
    analysis_policy = AnalysisPolicy(
        default_address=options.prometheus_address,
        allowed_addresses=options.allowed_prometheus,
        allow_plain_http_credentials=options.allow_plain_http_credentials,
        max_queries_per_minute=options.max_queries_per_minute,
    )
    settings = Settings(
        analysis_policy=analysis_policy,
        notification_policy=policy,
        notifications_secret=secret,
    )
    handlers.configure(settings, options.kubeconfig)
    if options.metrics_port:
        start_http_server(options.metrics_port, addr=options.bind_address)
    telemetry.UP.set(1)
    liveness = (
        f"http://{options.bind_address}:{options.liveness_port}/healthz" if options.liveness_port else None
    )
    kopf.run(
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=liveness,
    )
    return 0
