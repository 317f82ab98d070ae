"""Notifications with the real operator, the real control plane and real local webhook receivers.

The failing check is a real Prometheus answering ``vector(0.05)`` for an error-rate bound of 0.01, so a
canary fails its first analysis run and is reverted at once; the receivers are HTTP servers on 127.0.0.1
that record what they are sent and answer as the test says (200, 503, or slowly).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.localprom import LocalPrometheus
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for

FAILING = {"name": "error-rate", "query": "vector(0.05)", "max": 0.01}


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers `status` after `delay` seconds."""

    status: int = 200
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)  # accepted (2xx) messages
    attempts: list[float] = field(default_factory=list)  # arrival time of every request
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.attempts.append(time.monotonic())
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(receiver.delay)
                status = receiver.status
                if 200 <= status < 300:
                    receiver.received.append({"delivery": self.headers["X-Canaria-Delivery"], "body": body})
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"receiver body that must never be echoed")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    started = {"oncall": Receiver().start(), "audit": Receiver().start()}
    try:
        yield started
    finally:
        for receiver in started.values():
            receiver.stop()


@pytest.fixture
def notifying_operator(
    start_operator: Callable[..., OperatorProcess],
    admin_api: client.ApiClient,
    namespace: str,
    receivers: dict[str, Receiver],
    constant_prometheus: LocalPrometheus,
    kubelet: Kubelet,
) -> Callable[[], OperatorProcess]:
    """`canaria run` with two receivers (Slack and JSON) whose URLs are in a Secret of the namespace."""
    data = {name: base64.b64encode(r.url.encode()).decode() for name, r in receivers.items()}
    client.CoreV1Api(admin_api).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="canaria-notifications"), data=data)
    )
    args = [
        f"--notifications-secret={namespace}/canaria-notifications",
        "--notification-receiver=oncall=slack",
        "--notification-receiver=audit=json",
    ]
    return lambda: start_operator(prometheus=constant_prometheus.url, args=args)


def _release_bad_v2(mds: ModelDeployments) -> None:
    analysis = {"interval": "1s", "failureLimit": 0, "metrics": [FAILING]}
    mds.create(model_deployment("fraud", "v1", rollout={"analysis": analysis}))
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2", reason="retrained on January data")


def _records(mds: ModelDeployments) -> dict[str, dict[str, Any]]:
    return {r["receiver"]: r for r in mds.status("fraud").get("notifications", [])}


def test_a_revert_sends_exactly_one_message_per_receiver(
    mds: ModelDeployments, notifying_operator: Callable[[], OperatorProcess], receivers: dict[str, Receiver]
) -> None:
    operator = notifying_operator()
    _release_bad_v2(mds)
    status = mds.wait_phase("fraud", "Reverted", stable="v1")
    reverted = next(h for h in status["history"] if h["reason"] == "RolledBack")
    wait_for("both receivers", lambda: all(r.received for r in receivers.values()), timeout=30)
    time.sleep(2)  # a second message would come within the reconciles that follow
    audit, oncall = receivers["audit"].received, receivers["oncall"].received
    assert len(audit) == 1 and len(oncall) == 1
    message = audit[0]["body"]
    assert message["transition"]["reason"] == "RolledBack" and message["severity"] == "warning"
    assert message["transition"]["seq"] == reverted["seq"]
    assert audit[0]["delivery"] == f"{mds.get('fraud')['metadata']['uid']}/{reverted['seq']}"
    assert message["owner"] == "ml-team@example.com"
    assert {v["version"] for v in message["versions"]} >= {"v1", "v2"}
    assert any(v.get("lineage", {}).get("codeCommit") == "1a2b3c4" for v in message["versions"])
    assert "error-rate=0.05" in message["transition"]["message"]
    assert message["command"] == f"canaria history fraud -n {mds.namespace}"
    slack = oncall[0]["body"]
    assert "RolledBack" in slack["text"] and "ml-team@example.com" in slack["text"]
    assert slack["blocks"][0]["text"]["text"] == slack["text"]
    # normal transitions (RolloutStarted, Available) owe nothing by default
    records = wait_for("delivery recorded", lambda: _records(mds) if len(_records(mds)) == 2 else None)
    assert all(r["deliveredSeq"] == reverted["seq"] and not r.get("lastError") for r in records.values())
    # the URL is a secret: it appears neither in status nor in the log
    everything = json.dumps(mds.get("fraud")) + operator.log_tail(400)
    assert "secret-token" not in everything


def test_a_receiver_down_then_up_gets_it_once_even_across_a_kill(
    mds: ModelDeployments, notifying_operator: Callable[[], OperatorProcess], receivers: dict[str, Receiver]
) -> None:
    down = receivers["audit"]
    down.status = 503
    operator = notifying_operator()
    _release_bad_v2(mds)
    mds.wait_phase("fraud", "Reverted", stable="v1")
    failing = wait_for(
        "the failure recorded", lambda: _records(mds).get("audit", {}).get("lastError") == "HTTP 503" or None
    )
    assert failing and not down.received
    assert "receiver body" not in json.dumps(mds.status("fraud"))
    operator.kill()  # SIGKILL between the transition and its delivery
    down.status = 200
    notifying_operator()
    wait_for("delivered after the restart", lambda: down.received, timeout=60)
    time.sleep(3)
    assert len(down.received) == 1 and len(receivers["oncall"].received) == 1
    assert len(down.attempts) >= 2

    def recovered() -> dict[str, Any] | None:
        record = _records(mds)["audit"]
        return None if record.get("lastError") else record

    assert wait_for("the recovery recorded", recovered)["attempts"] == 0


def test_a_slow_receiver_does_not_delay_the_revert(
    mds: ModelDeployments, notifying_operator: Callable[[], OperatorProcess], receivers: dict[str, Receiver]
) -> None:
    for receiver in receivers.values():
        receiver.delay = 4.0  # within the client's 5 s read timeout: it is delivered, slowly
    notifying_operator()
    _release_bad_v2(mds)
    mds.wait_phase("fraud", "Reverted", stable="v1")
    wait_for("a request arrived", lambda: receivers["audit"].attempts or receivers["oncall"].attempts)
    # both requests are still being answered, and the revert is already done and recorded
    assert not receivers["audit"].received and not receivers["oncall"].received
    assert mds.replicas("fraud").get("v2", 0) == 0
    wait_for("delivered", lambda: receivers["audit"].received and receivers["oncall"].received, timeout=30)
