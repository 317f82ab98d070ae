"""Deliver the notifications the core says are owed, off the reconcile path.

One worker thread per operator: the reconciler only `kick`s it after a status write that left something
owed, so a slow or dead receiver never delays a revert. The worker reads the object, sends each owed
transition to each receiver (URLs from the operator's notifications Secret, read at every delivery so a
rotation applies), and records the outcome in ``status.notifications`` with a write guarded by the
resourceVersion (a conflict is redone from a fresh read, without sending again). A failing receiver is
retried with the core's back-off; after a restart the cursor in status says what is still owed.

Every request carries ``X-Canaria-Delivery: <uid>/<seq>``, the transition's key, so a receiver can drop
the one duplicate a crash between a delivery and its status write can cause. URLs and response bodies are
never logged or recorded: only "HTTP 503", "timed out", "connection refused".
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from canaria.core import notifications as core
from canaria.core.api import HistoryEntry, ModelDeployment, NotificationRecord
from canaria.kube.cluster import Cluster, Conflict

log = logging.getLogger("canaria.kube.notify")

#: Seconds a receiver has to answer one message (connect, read).
TIMEOUT = (3.0, 5.0)
MAX_CONFLICTS = 5


class _QuietHttp(logging.Filter):
    """urllib3 logs each request line (host, path) at debug level: from the notifier's thread that line
    is a webhook URL, i.e. a secret, so those records are dropped whatever the log level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


THREAD_NAME = "canaria-notify"
logging.getLogger("urllib3.connectionpool").addFilter(_QuietHttp())


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _answer(error: requests.RequestException) -> str:
    """What went wrong, in words that carry neither the URL nor the receiver's body."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    text = str(error)
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(error, requests.ConnectionError):
        return "connection failed"
    return type(error).__name__


class Notifier:
    """Sends owed notifications; `kick(namespace, name)` is all the reconciler calls."""

    def __init__(
        self,
        cluster: Cluster,
        policy: core.Policy,
        secret: tuple[str, str] | None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.secret = secret  # (namespace, name) of the Secret holding one URL per receiver
        self.clock = clock
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        # (uid, seq, receiver) sent but not yet recorded in status: a failed status write must not send
        # them again; once the cursor in status covers them they are forgotten (memory stays bounded)
        self._sent: set[tuple[str, int, str]] = set()
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    # -- the reconciler's side ------------------------------------------------------------------------

    def owes(self, md: ModelDeployment) -> bool:
        """Whether anything is owed for this object now (pure; no I/O)."""
        receivers, unknown = core.receivers_for(md, self.policy)
        if unknown and any(core.record_of(md, n) is None for n in unknown):
            return True
        now = self.clock()
        return any(core.owed(md, r.name, self.policy, now) for r in receivers)

    def kick(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
        self._queue.put(key)

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._work, name=THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._session.close()

    # -- the worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while (key := self._queue.get()) is not None:
            with self._lock:
                self._queued.discard(key)
            try:
                self.deliver(*key)
            except Exception as exc:  # a notifier problem must never stop the worker
                log.warning("%s/%s: notifications not delivered: %s", key[0], key[1], exc)

    def _retry_at(self, namespace: str, name: str, when: datetime) -> None:
        key = (namespace, name)
        delay = max((when - self.clock()).total_seconds(), 0.05)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(delay, self.kick, key)
        timer.daemon = True
        self._timers[key] = timer
        timer.start()

    def _urls(self) -> dict[str, str]:
        if self.secret is None:
            return {}
        namespace, name = self.secret
        try:
            secret = self.cluster.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            log.warning("notifications Secret %s/%s unreadable: HTTP %s", namespace, name, exc.status)
            return {}
        return {k: base64.b64decode(v).decode().strip() for k, v in (secret.data or {}).items()}

    def _post(self, url: str | None, body: dict[str, Any], delivery: str) -> str | None:
        """Send one message; None on success, else the receiver's answer."""
        if not url:
            return "no URL for this receiver in the notifications Secret"
        try:
            response = self._session.post(
                url,
                json=body,
                timeout=TIMEOUT,
                allow_redirects=False,
                headers={"X-Canaria-Delivery": delivery},
            )
        except requests.RequestException as error:
            return _answer(error)
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _send_all(
        self,
        md: ModelDeployment,
        receiver: core.Receiver,
        entries: list[HistoryEntry],
        record: NotificationRecord | None,
        url: str | None,
    ) -> NotificationRecord:
        uid = md.metadata.get("uid", "")
        for entry in entries:
            key = (uid, entry.seq, receiver.name)
            problem = None
            if key not in self._sent:
                problem = self._post(url, core.payload(md, entry, receiver.format), f"{uid}/{entry.seq}")
            now = self.clock()
            if problem is not None:
                return core.failed(record, receiver.name, entry, problem, now)
            self._sent.add(key)
            record = core.delivered(receiver.name, entry, now)
        assert record is not None
        return record

    def _forget_recorded(self, uid: str, records: list[NotificationRecord]) -> None:
        cursor = {r.receiver: r.delivered_seq for r in records}
        self._sent = {k for k in self._sent if k[0] != uid or k[1] > cursor.get(k[2], 0)}

    def deliver(self, namespace: str, name: str) -> None:
        """Send what is owed for one object and record it; redone from a fresh read on a conflict."""
        for _ in range(MAX_CONFLICTS):
            body = self.cluster.read(namespace, name)
            if body is None:
                return
            try:
                md = ModelDeployment.model_validate(body)
            except ValidationError:
                return  # the reconciler reports an unreadable spec
            receivers, unknown = core.receivers_for(md, self.policy)
            records = list(md.status.notifications)
            changed = False
            for missing in unknown:
                if core.record_of(md, missing) is None:
                    note = "not configured in the operator (spec.notifications.receivers)"
                    records = core.merged(records, NotificationRecord(receiver=missing, last_error=note))
                    changed = True
            urls: dict[str, str] | None = None
            now = self.clock()
            for receiver in receivers:
                record = core.record_of(md, receiver.name)
                entries = core.owed(md, receiver.name, self.policy, now)
                if not entries:
                    continue
                if not core.due(record, now):
                    assert record is not None and record.next_attempt_at is not None
                    self._retry_at(namespace, name, record.next_attempt_at)
                    continue
                if urls is None:
                    urls = self._urls()
                record = self._send_all(md, receiver, entries, record, urls.get(receiver.name))
                if record.next_attempt_at is not None:
                    log.warning(
                        "%s/%s: notification %s to %s failed (%s); next attempt at %s",
                        namespace,
                        name,
                        record.failing_seq,
                        receiver.name,
                        record.last_error,
                        record.next_attempt_at.isoformat(),
                    )
                    self._retry_at(namespace, name, record.next_attempt_at)
                else:
                    log.info(
                        "%s/%s: notified %s up to #%s", namespace, name, receiver.name, record.delivered_seq
                    )
                records = core.merged(records, record)
                changed = True
            if not changed:
                return
            status = dict(body.get("status") or {})
            status["notifications"] = [r.dump() for r in records]
            try:
                self.cluster.write_status(body, status)
            except Conflict:
                continue
            self._forget_recorded(md.metadata.get("uid", ""), records)
            return
        log.warning(
            "%s/%s: notification state not recorded after %d conflicts", namespace, name, MAX_CONFLICTS
        )
