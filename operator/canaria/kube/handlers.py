"""kopf wiring: one long-lived daemon per ModelDeployment drives its rollout.

The daemon calls the reconciler (in a worker thread: the Kubernetes and Prometheus clients are
synchronous), then sleeps until the engine's requeue time or until a watch event wakes it: a change of
the resource's spec or annotations, or of one of its Deployments. The wake-up table is an in-memory
shortcut only; losing it (a restart) costs at most one resync period, never a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client, config

from canaria import GROUP, PLURAL, VERSION
from canaria.core.commands import COMMAND_ANNOTATION
from canaria.kube.cluster import Forbidden, NamespaceTerminating, describe_error
from canaria.kube.notify import Notifier
from canaria.kube.reconciler import Reconciler, Settings
from canaria.kube.telemetry import RECONCILE_ERRORS
from canaria.kube.workloads import MD_LABEL

log = logging.getLogger("canaria.kube.handlers")

RESYNC_SECONDS = 60.0  # upper bound on sleep when nothing is scheduled: catches missed events
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _Runtime:
    """What `canaria run` configures before kopf starts, and the in-memory wake-up table."""

    reconciler: Reconciler | None = None
    kubeconfig: str | None = None
    wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)


Runtime = _Runtime()


def configure(settings: Settings, api: client.ApiClient, kubeconfig: str | None) -> None:
    """Give the reconciler the API client `canaria run` built; kopf logs in the same way (see `login`)."""
    from canaria.kube.cluster import Cluster

    Runtime.kubeconfig = kubeconfig
    cluster = Cluster(api)
    notifier = None
    if settings.notification_policy.receivers:
        notifier = Notifier(cluster, settings.notification_policy, settings.notifications_secret).start()
    Runtime.reconciler = Reconciler(cluster, settings, notifier=notifier)


def _waker(namespace: str, name: str) -> asyncio.Event:
    return Runtime.wakers.setdefault((namespace, name), asyncio.Event())


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.ERROR  # the audit trail is Canaria's own Events, not kopf's chatter
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if Runtime.kubeconfig:
        return _login_from_file(Runtime.kubeconfig)
    return kopf.login_via_client(**kwargs) or kopf.login_with_service_account(**kwargs)


def _login_from_file(path: str) -> kopf.ConnectionInfo:
    """kopf's own kubeconfig login reads $KUBECONFIG; an explicit --kubeconfig must win."""
    api = config.new_client_from_config(config_file=path)
    cfg = api.configuration
    token = (cfg.api_key or {}).get("authorization", "") or (cfg.api_key or {}).get("BearerToken", "")
    scheme, _, value = token.partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=value or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        default_namespace="default",
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_model_deployment_event(event: dict[str, Any], name: str, namespace: str, body: Any, **_: Any) -> None:
    """Wake the daemon when what the engine reads changed: spec (generation) or the command annotation."""
    key = (namespace, name)
    meta = body.get("metadata", {})
    fingerprint = (meta.get("generation"), (meta.get("annotations") or {}).get(COMMAND_ANNOTATION))
    if event.get("type") == "DELETED":
        Runtime.seen.pop(key, None)
        return
    if Runtime.seen.get(key) != fingerprint:
        Runtime.seen[key] = fingerprint
        _waker(namespace, name).set()


@kopf.on.event("apps", "v1", "deployments", labels={MD_LABEL: kopf.PRESENT})
def on_deployment_event(labels: dict[str, str], namespace: str, **_: Any) -> None:
    """A version's Deployment changed (e.g. became ready): wake its ModelDeployment's daemon."""
    _waker(namespace, labels[MD_LABEL]).set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def drive_rollout(
    name: str, namespace: str, stopped: kopf.DaemonStopped, logger: Any, **_: Any
) -> None:
    """Reconcile, then sleep until the engine says time matters or an event wakes us."""
    reconciler = Runtime.reconciler
    assert reconciler is not None, "canaria.handlers.configure() must run before kopf starts"
    wake = _waker(namespace, name)
    errors = 0
    try:
        while not stopped:
            wake.clear()
            try:
                decision = await asyncio.to_thread(reconciler.reconcile, namespace, name)
                errors = 0
                delay = RESYNC_SECONDS
                if decision is not None and decision.requeue_after is not None:
                    delay = min(max(decision.requeue_after, 0.05), RESYNC_SECONDS)
            except NamespaceTerminating as exc:
                logger.info(f"{namespace}/{name}: {exc}")
                delay = RESYNC_SECONDS
            except Forbidden as exc:
                RECONCILE_ERRORS.labels(kind="forbidden").inc()
                delay = ERROR_BACKOFF[min(errors, len(ERROR_BACKOFF) - 1)]
                logger.error(f"{namespace}/{name}: {exc}; retrying in {delay:g}s")
                errors += 1
            except Exception as exc:  # an API hiccup (429, 5xx, timeout): back off and retry, never die
                RECONCILE_ERRORS.labels(kind=type(exc).__name__).inc()
                delay = ERROR_BACKOFF[min(errors, len(ERROR_BACKOFF) - 1)]
                # the object and the API server's own words, in the text (both log formats carry it)
                logger.warning(
                    f"{namespace}/{name}: reconcile failed, retrying in {delay:g}s: {describe_error(exc)}"
                )
                errors += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
    finally:
        Runtime.wakers.pop((namespace, name), None)
