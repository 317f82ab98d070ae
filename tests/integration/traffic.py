"""Simulated traffic that follows the replica split the operator sets.

In the integration tier no model server really runs: the test kubelet only marks Pods Ready. The
`ModelServerSimulator` stands in for the servers, and `TrafficFollower` keeps its traffic split equal to
what the model's Service sees: every ``interval`` it lists the ModelDeployment's Deployments and hands
``{version: readyReplicas}`` of the versions the Service selects (every version during a canary, the
stable alone otherwise) to ``simulator.set_replicas``. A canary therefore gets
traffic (and Prometheus sees its series move) only once its Pods are Ready, and a reverted canary stops
getting any as soon as it is scaled away, exactly as with real Pods behind a Service.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from kubernetes import client

from canaria.sandbox.simulator import ModelServerSimulator, workload_key

log = logging.getLogger(__name__)

MD_LABEL = "canaria.dev/model-deployment"
VERSION_LABEL = "canaria.dev/version"
ROLE_LABEL = "canaria.dev/role"  # "baseline" on the baseline Deployment of the stable version


class TrafficFollower:
    """A thread routing ``simulator``'s traffic by the ready replicas of one ModelDeployment's versions.

    Use as a context manager (or `start`/`stop`). ``api`` should be an ApiClient of its own: the thread
    runs concurrently with the test. API errors are logged and retried at the next poll; the last split
    applied is kept in ``split`` for assertions and failure messages.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        simulator: ModelServerSimulator,
        *,
        interval: float = 0.2,
    ) -> None:
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace, self.name, self.simulator, self.interval = namespace, name, simulator, interval
        self.split: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ready_replicas(self) -> dict[str, int]:
        """version (or "<version>@baseline") → readyReplicas of every Deployment of the ModelDeployment the
        Service selects."""
        items = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"{MD_LABEL}={self.name}", _request_timeout=5
        ).items
        try:
            selector = self.core.read_namespaced_service(self.name, self.namespace, _request_timeout=5).spec
            only = (selector.selector or {}).get(VERSION_LABEL)
        except client.exceptions.ApiException as error:
            if error.status != 404:
                raise
            only = None
        return {
            workload_key(d.metadata.labels[VERSION_LABEL], d.metadata.labels.get(ROLE_LABEL)): (
                (d.status.ready_replicas or 0) if d.status else 0
            )
            for d in items
            if d.metadata.labels
            and VERSION_LABEL in d.metadata.labels
            and only in (None, d.metadata.labels[VERSION_LABEL])
        }

    def poll(self) -> None:
        """Apply the current split once."""
        split = self.ready_replicas()
        self.simulator.set_replicas(split)
        self.split = split

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as error:  # an API hiccup: the next poll retries
                log.debug("traffic follower: %r", error)
                self.errors.append(error)
                del self.errors[:-10]
            self._stop.wait(self.interval)

    def start(self) -> TrafficFollower:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (idempotent); the simulator keeps the last split."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> TrafficFollower:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
