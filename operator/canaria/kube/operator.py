"""Start the operator: kopf with Canaria's handlers, the liveness probe and the metrics endpoint.

`canaria run` parses its flags and calls `run`; nothing here reads argv, so the image, the tests and the
sandbox start the same operator the same way.

Before kopf starts, `run` checks what would otherwise end in a traceback or in kopf retrying forever
behind a green liveness probe: the flags, the credentials, the API server, and the one permission without
which nothing works (listing ModelDeployments where it watches). Each failure is a `StartupError` whose
message is one line, so `kubectl logs` of a CrashLoopBackOff says what to fix.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from canaria.core.notifications import Policy, Receiver
from canaria.core.policy import DEFAULT_QUERIES_PER_MINUTE, AnalysisPolicy

#: How long the startup check waits for the API server before giving up (kopf then never starts).
STARTUP_TIMEOUT_SECONDS = 10.0


class StartupError(Exception):
    """The operator cannot start; the message (one line) says why and what to fix."""


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


def operator_identity() -> str:
    """kopf's peering identity, without asking the passwd database who we are.

    kopf's default (``user@host/...``) calls ``getpass.getuser()``, which raises under a numeric uid that
    has no passwd entry: the image's 65532, or whatever uid OpenShift's restricted policies assign. The
    chart and the manifests pass the Pod's name (``POD_NAME``, downward API), unique per Pod; elsewhere
    the host name and the process id are unique enough on one host.
    """
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}"


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """The API client the reconciler uses: ``kubeconfig``, else in-cluster, else $KUBECONFIG/~/.kube."""
    if kubeconfig:
        try:
            document = yaml.safe_load(Path(kubeconfig).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise StartupError(f"cannot read --kubeconfig {kubeconfig}: {_one_line(exc)}") from exc
        if not isinstance(document, dict) or not document.get("clusters"):
            raise StartupError(f"--kubeconfig {kubeconfig} is not a kubeconfig (it lists no clusters)")
        try:
            return config.new_client_from_config(config_file=kubeconfig)
        except Exception as exc:  # the client's loader fails on malformed files in many ways (TypeError...)
            raise StartupError(f"cannot load --kubeconfig {kubeconfig}: {_one_line(exc)}") from exc
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, ValueError) as exc:
            raise StartupError(
                "no Kubernetes credentials: not in a Pod with a ServiceAccount token, and no usable"
                f" kubeconfig ($KUBECONFIG or ~/.kube/config: {_one_line(exc)}); pass --kubeconfig"
            ) from exc
    return client.ApiClient()


def check_api(api: client.ApiClient, namespaces: Sequence[str]) -> None:
    """List ModelDeployments where the operator watches: reachable, authenticated, allowed.

    A missing CRD is not an error: kopf serves it as soon as it is installed.
    """
    from canaria import GROUP, PLURAL, VERSION
    from canaria.kube.cluster import Forbidden, Refused, call

    server = api.configuration.host
    custom = client.CustomObjectsApi(api)
    exact = [ns for ns in namespaces if not any(c in ns for c in "*?[!")]  # kopf resolves the globs
    try:
        if not namespaces:
            call(
                f"list {PLURAL} in all namespaces",
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                limit=1,
                _request_timeout=STARTUP_TIMEOUT_SECONDS,
            )
        for namespace in exact:
            call(
                f"list {PLURAL} in {namespace}",
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                limit=1,
                _request_timeout=STARTUP_TIMEOUT_SECONDS,
            )
    except Forbidden as exc:
        raise StartupError(str(exc)) from exc
    except Refused as exc:  # a 4xx about the request: here, above all, 401
        if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 401:
            raise StartupError(
                f"the API server at {server} rejected the operator's credentials (401 Unauthorized):"
                " the token or client certificate is invalid or expired"
            ) from exc
        raise StartupError(f"the API server at {server} refused: {exc}") from exc
    except ApiException as exc:
        if exc.status == 404:
            return
        raise StartupError(f"the API server at {server} answered {exc.status} {exc.reason}") from exc
    except HTTPError as exc:
        # urllib3 wraps the cause (refused, unresolvable, TLS, timeout) in a retry error: name the cause.
        reason = getattr(exc, "reason", None) or exc
        cause = reason.__cause__ or reason
        raise StartupError(f"cannot reach the API server at {server}: {_one_line(cause)}") from exc


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run(options: RunOptions) -> int:
    """Run the operator until it is stopped; the exit code for the process. Raises `StartupError`."""
    import kopf
    from prometheus_client import start_http_server

    from canaria.kube import handlers, telemetry
    from canaria.kube.reconciler import Settings

    try:  # the core's rule for a Prometheus address, for the operator's default one
        AnalysisPolicy(default_address=options.prometheus_address)
    except ValueError as exc:
        raise StartupError(f"--prometheus-address: {exc}") from exc
    try:  # the flags' own checks name the flag at fault
        policy, secret = notification_settings(options)
        analysis_policy = AnalysisPolicy(
            default_address=options.prometheus_address,
            allowed_addresses=options.allowed_prometheus,
            allow_plain_http_credentials=options.allow_plain_http_credentials,
            max_queries_per_minute=options.max_queries_per_minute,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    api = api_client(options.kubeconfig)
    check_api(api, options.namespaces)
    kopf.configure(
        verbose=options.verbose,
        log_format={"plain": kopf.LogFormat.PLAIN, "json": kopf.LogFormat.JSON}[options.log_format],
    )
    settings = Settings(
        analysis_policy=analysis_policy,
        notification_policy=policy,
        notifications_secret=secret,
    )
    handlers.configure(settings, api, options.kubeconfig)
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
        identity=operator_identity(),  # kopf's Identity is a NewType of str
    )
    return 0
