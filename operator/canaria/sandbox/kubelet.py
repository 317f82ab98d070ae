"""A fake kubelet (and scheduler) for a bare control plane (the sandbox's, the integration tier's): it has
neither.

Without it, Pods made by the real ReplicaSet controller stay Pending forever and Deployments never report
``readyReplicas``. This thread binds every unscheduled Pod to one Node, reports it Running and Ready (or
Running but not Ready, for a canary that must fail), and finishes graceful deletions as a kubelet would.

A Pod labelled ``test.canaria.dev/run: local`` (a test opts in through its Pod template) is really run: its
first container's command and args as a local process, with the Pod's literal env, the Pod Running
meanwhile, then Succeeded or Failed by the exit code, with ``state.terminated`` carrying the exit code and
the tail of the output as the message (as ``terminationMessagePolicy: FallbackToLogsOnError`` does). So the
real Job controller completes or fails real Jobs. URLs naming a Service the test mapped in ``services``
(``http://NAME.NAMESPACE.svc:PORT``) reach the mapped loopback address instead: the kubelet plays cluster
DNS and kube-proxy for them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

NODE_NAME = "canaria-test-node"
_QUIET = (404, 409)  # the object vanished or changed under us: the next poll sees the new state
_SMP = "application/strategic-merge-patch+json"
RUN_LABEL = "test.canaria.dev/run"  # value "local": run the Pod's command as a local process
MESSAGE_LIMIT = 2048  # bytes of output kept as the termination message, as the kubelet keeps


_SERVICE_URL = re.compile(r"(?<=://)([a-z0-9-]+)(?:\.([a-z0-9-]+))?\.svc(?:\.cluster\.local)?(?::\d+)?")


def resolve_service_urls(value: str, namespace: str, lookup: Callable[[str, str], str | None]) -> str:
    """`value` with each URL naming a Service (``http://NAME[.NAMESPACE].svc[:PORT]``) pointed at the
    loopback address `lookup(namespace, name)` gives (unchanged where it gives None): cluster DNS and
    kube-proxy, for processes run on this machine."""

    def local(match: re.Match[str]) -> str:
        return lookup(match.group(2) or namespace, match.group(1)) or match.group(0)

    return _SERVICE_URL.sub(local, value)


def _local_label(pod: Any) -> bool:
    """Default: a Pod runs as a local process when labelled ``test.canaria.dev/run: local``."""
    return (pod.metadata.labels or {}).get(RUN_LABEL) == "local"


def _never(pod: Any) -> bool:
    """Default predicate: every Pod becomes Ready."""
    return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    """Plays scheduler + kubelet for one fake Node in a background thread.

    ``never_ready(pod) -> bool`` may be reassigned at any time; matching Pods are bound and Running but
    not Ready (and a Ready Pod that starts matching turns un-Ready, like a failing readiness probe).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        node_name: str = NODE_NAME,
        interval: float = 0.2,
        never_ready: Callable[[Any], bool] = _never,
        run_locally: Callable[[Any], bool] = _local_label,
        resolve_service: Callable[[str, str], str | None] | None = None,
    ) -> None:
        """``api`` needs rights to bind Pods, patch their status, delete them and create Nodes (admin).
        ``run_locally(pod)`` chooses the Pods whose command runs as a local process; a Service URL in
        their env reaches ``services[(namespace, name)]``, else ``resolve_service(namespace, name)``."""
        self.core = client.CoreV1Api(api)
        self.node_name = node_name
        self.interval = interval
        self.never_ready: Callable[[Any], bool] = never_ready
        self.errors: list[BaseException] = []  # unexpected failures, kept for diagnostics (not raised)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ips = itertools.count(2)
        self._pod_ips: dict[str, str] = {}
        self._passes = 0
        self._passed = threading.Condition()
        #: (namespace, Service name) → "127.0.0.1:PORT" that a locally run Pod reaches for that Service
        self.services: dict[tuple[str, str], str] = {}
        self.run_locally = run_locally
        self.resolve_service = resolve_service
        self._processes: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}  # Pod uid → process, output
        self.started: list[str] = []  # names of the Pods run locally, in order (for assertions)

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Back to the default (every Pod becomes Ready), e.g. between tests sharing this kubelet; local
        processes still running are killed."""
        self.never_ready = _never
        self.services.clear()
        self.started.clear()
        for uid in list(self._processes):
            self._kill(uid)

    def start(self) -> Kubelet:
        """Register the Node (synchronously, so failures surface here) and start the sync thread."""
        if self._thread is not None:
            return self
        self.ensure_node()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{self.node_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join the thread; requests are on loopback, so this returns within one poll."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for uid in list(self._processes):
            self._kill(uid)

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ node

    def ensure_node(self) -> None:
        """Create the Node with Ready=True (and capacity, for controllers that look) unless it exists."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {"kubernetes.io/hostname": self.node_name}},
        }
        try:
            self.core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        now = _now()
        resources = {"cpu": "64", "memory": "256Gi", "pods": "1000"}
        status = {
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "canaria's fake kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
        }
        self.core.patch_node_status(self.node_name, status, _content_type=_SMP)

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # keep playing the kubelet; tests assert on the cluster, not on us
                self._record(exc)
            with self._passed:
                self._passes += 1
                self._passed.notify_all()
            self._stop.wait(self.interval)

    def _record(self, exc: BaseException) -> None:
        if isinstance(exc, ApiException) and exc.status in _QUIET:
            return
        if self._stop.is_set():
            return  # the control plane may already be going away
        log.warning("fake kubelet: %s", exc)
        self.errors.append(exc)
        del self.errors[:-20]

    def sync_once(self) -> None:
        """One pass over all Pods: delete terminating ones, bind unscheduled ones, reconcile status."""
        pods = self.core.list_pod_for_all_namespaces(_request_timeout=(1, 5)).items
        for pod in pods:
            if self._stop.is_set():
                return
            try:
                self._sync_pod(pod)
            except Exception as exc:
                self._record(exc)

    def _sync_pod(self, pod: Any) -> None:
        meta, spec = pod.metadata, pod.spec
        if meta.deletion_timestamp is not None:
            self._kill(meta.uid)
            if spec.node_name in (None, self.node_name):
                self.core.delete_namespaced_pod(
                    meta.name, meta.namespace, grace_period_seconds=0, _request_timeout=(1, 5)
                )
            return
        if not spec.node_name:
            self._bind(pod)
        elif spec.node_name != self.node_name:
            return
        if self.run_locally(pod):
            self._run_locally(pod)
            return
        ready = not self.never_ready(pod)
        if not self._status_matches(pod, ready):
            self._patch_status(pod, ready)

    # ------------------------------------------------------------------ local processes

    def _run_locally(self, pod: Any) -> None:
        """Start the Pod's process once; report Running, then the phase its exit code gives."""
        uid = pod.metadata.uid
        if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
            return
        if uid not in self._processes:
            container = pod.spec.containers[0]
            env = {**os.environ, **{e.name: self._resolve(pod, e.value or "") for e in container.env or []}}
            output = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the process ends or is killed
            process = subprocess.Popen(
                [*(container.command or []), *(container.args or [])],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._processes[uid] = (process, output)
            self.started.append(pod.metadata.name)
            self._patch_terminal(pod, None, "")
            return
        process, output = self._processes[uid]
        code = process.poll()
        if code is None:
            return
        output.seek(0)
        message = output.read()[-MESSAGE_LIMIT:].decode(errors="replace")
        self._patch_terminal(pod, code, message)
        output.close()
        del self._processes[uid]

    def _resolve(self, pod: Any, value: str) -> str:
        """A Service URL the test mapped (or the resolver knows) points at its loopback address."""

        def lookup(namespace: str, name: str) -> str | None:
            found = self.services.get((namespace, name))
            if found is None and self.resolve_service is not None:
                found = self.resolve_service(namespace, name)
            return found

        return resolve_service_urls(value, pod.metadata.namespace, lookup)

    def _kill(self, uid: str) -> None:
        entry = self._processes.pop(uid, None)
        if entry is not None:
            process, output = entry
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()
            output.close()

    def _patch_terminal(self, pod: Any, code: int | None, message: str) -> None:
        """Running while ``code`` is None, else Succeeded (0) or Failed with the container terminated."""
        now = _now()
        container = pod.spec.containers[0]
        if code is None:
            phase, state = "Running", {"running": {"startedAt": now}}
        else:
            phase = "Succeeded" if code == 0 else "Failed"
            reason = "Completed" if code == 0 else "Error"
            state = {
                "terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": now}
            }
        ip = self._pod_ip(pod.metadata.uid)
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True" if code is None else "False", "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": f"docker-pullable://{container.image}",
                    "ready": code is None,
                    "started": code is None,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": status},
            _content_type=_SMP,
            _request_timeout=(1, 5),
        )

    def _bind(self, pod: Any) -> None:
        """POST pods/binding, as the scheduler does (sets spec.nodeName)."""
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.node_name),
        )
        # _preload_content=False: the reply is a Status, which the generated V1Binding model cannot parse
        resp = self.core.create_namespaced_pod_binding(
            pod.metadata.name,
            pod.metadata.namespace,
            body,
            _preload_content=False,
            _request_timeout=(1, 5),
        )
        with contextlib.suppress(Exception):
            resp.release_conn()

    @staticmethod
    def _status_matches(pod: Any, ready: bool) -> bool:
        status = pod.status
        if status is None or status.phase != "Running":
            return False
        conds = {c.type: c.status for c in status.conditions or []}
        if conds.get("Ready") != ("True" if ready else "False"):
            return False
        names = {c.name for c in pod.spec.containers}
        return {c.name for c in status.container_statuses or []} == names

    def _pod_ip(self, uid: str) -> str:
        if uid not in self._pod_ips:
            n = next(self._ips)
            self._pod_ips[uid] = f"10.244.{(n >> 8) & 255}.{n & 255}"
        return self._pod_ips[uid]

    def _patch_status(self, pod: Any, ready: bool) -> None:
        """Report the Pod Running with every container started; Ready only if ``ready``."""
        now = _now()
        started = now
        if pod.status is not None and pod.status.start_time is not None:
            started = pod.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        flag = "True" if ready else "False"
        not_ready = {} if ready else {"reason": "ContainersNotReady", "message": "readiness probe failed"}
        ip = self._pod_ip(pod.metadata.uid)

        def container_status(c: Any, uid_suffix: str) -> dict[str, Any]:
            return {
                "name": c.name,
                "image": c.image,
                "imageID": f"docker-pullable://{c.image}",
                "containerID": f"containerd://{pod.metadata.uid.replace('-', '')}{uid_suffix}",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }

        status: dict[str, Any] = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now, **not_ready},
                {"type": "Ready", "status": flag, "lastTransitionTime": now, **not_ready},
            ],
            "containerStatuses": [container_status(c, f"{i:02d}") for i, c in enumerate(pod.spec.containers)],
        }
        if pod.spec.init_containers:
            status["initContainerStatuses"] = [
                {
                    "name": c.name,
                    "image": c.image,
                    "imageID": f"docker-pullable://{c.image}",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": started}},
                }
                for c in pod.spec.init_containers
            ]
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": status},
            _content_type=_SMP,
            _request_timeout=(1, 5),
        )

    # ------------------------------------------------------------------ helpers for tests

    def wait_synced(self, timeout: float = 5.0) -> None:
        """Block until a full sync pass has *started and finished* after this call.

        Lets a test that just changed ``never_ready`` or created Pods know the kubelet has seen them.
        """
        with self._passed:
            target = self._passes + 2  # the pass in flight may have listed Pods before the call
            if not self._passed.wait_for(lambda: self._passes >= target, timeout):
                raise TimeoutError(f"test kubelet did not complete a sync pass in {timeout} s")
