"""Tenant safety on the real control plane: a ModelDeployment cannot make the operator a proxy or a courier.

The ModelDeployments are written by a "tenant" ServiceAccount that may only create and patch them in its
own namespace (no Secret access); the operator runs under its generated RBAC with its analysis policy.
Local HTTP(S) servers stand for Prometheus and for the internal services a tenant would like to reach: they
record every request, so "nothing was sent" is observed, not assumed.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaria import PLURAL
from canaria.core.policy import CREDENTIALS_LABEL
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment, wait_for

SENTINEL = f"tenant-sentinel-{secrets.token_hex(6)}"  # what an internal service would answer
TOKEN = f"token-sentinel-{secrets.token_hex(6)}"  # what a Secret the tenant cannot read holds
EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}


def vector(value: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
    }


# ------------------------------------------------------------------------------------- recording servers


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    location: str | None = None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: Recorder = self.server  # type: ignore[assignment]
        server.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
        answer = server.answer(query)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if answer.location:
            self.send_header("Location", answer.location)
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder(ThreadingHTTPServer):
    """A 127.0.0.1 server that records every request and answers ``answer(query)``; https with ``tls``."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[str], Answer] = lambda _query: Answer(200, json.dumps(EMPTY_VECTOR).encode())

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_port}"


@pytest.fixture
def recorders() -> Iterator[Callable[..., Recorder]]:
    """Start recording servers on demand; all are stopped after the test."""
    started: list[tuple[Recorder, threading.Thread]] = []

    def start(tls: ssl.SSLContext | None = None) -> Recorder:
        server = Recorder(tls)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class LocalCA:
    ca_pem: str
    server: ssl.SSLContext


@pytest.fixture
def test_ca(tmp_path: Path) -> LocalCA:
    """A throwaway CA and a certificate for 127.0.0.1 it signed (openssl, EC keys: milliseconds)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True, timeout=30)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test CA")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "server.crt", "-days", "1", "-extfile", "server.ext"),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    return LocalCA((tmp_path / "ca.crt").read_text(), context)


# ------------------------------------------------------------------------------------------------ tenant


@pytest.fixture
def tenant(
    control_plane: ControlPlane, crd: str, namespace: str, tmp_path: Path
) -> Iterator[ModelDeployments]:
    """ModelDeployments as the tenant writes them: create and patch in this namespace, nothing else."""
    rules = [{"apiGroups": ["canaria.dev"], "resources": [PLURAL], "verbs": ["create", "patch"]}]
    path = control_plane.service_account_kubeconfig(
        namespace, "tenant", rules, tmp_path / "tenant.kubeconfig", namespaced=True
    )
    api = config.new_client_from_config(config_file=str(path))
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(api).list_namespaced_secret(namespace)
        assert denied.value.status == 403, "the tenant cannot read Secrets"
        yield ModelDeployments(api, namespace)
    finally:
        api.close()


METRIC = {"name": "error-rate", "query": 'sum(rate(errors{service="{{name}}"}[1m]))', "max": 0.05}


def refusal(mds: ModelDeployments, name: str) -> dict[str, Any]:
    """The Ready condition, once the operator stalled the object with reason RefusedByPolicy."""

    def probe() -> dict[str, dict[str, Any]] | None:
        conditions = {c["type"]: c for c in mds.status(name).get("conditions") or []}
        return conditions if conditions.get("Stalled", {}).get("reason") == "RefusedByPolicy" else None

    conditions = wait_for(f"{name} refused by the policy", probe, timeout=30)
    condition = conditions["Ready"]
    assert (condition["status"], condition["reason"], conditions["Stalled"]["status"]) == (
        "False",
        "RefusedByPolicy",
        "True",
    )
    wait_for("a RefusedByPolicy Event", lambda: "RefusedByPolicy" in mds.reasons(name), timeout=20)
    return condition


def healthy_then_canary(tenant: ModelDeployments, mds: ModelDeployments, body: dict[str, Any]) -> None:
    """The tenant creates v1, then asks for v2: analysis runs once v2's canary is ready."""
    name = body["metadata"]["name"]
    tenant.create(body)
    mds.wait_phase(name, "Healthy", stable="v1", timeout=30)
    tenant.set_version(name, "v2", reason="retrained")


# ------------------------------------------------------------------------------------------------- tests


def test_an_address_outside_the_policy_is_refused_before_any_request(
    tenant: ModelDeployments,
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    recorders: Callable[..., Recorder],
    kubelet: Kubelet,
) -> None:
    prometheus, internal = recorders(), recorders()
    start_operator(prometheus=prometheus.url)

    tenant.create(model_deployment("proxy", metrics=[METRIC], prometheus={"address": internal.url}))
    many = [{**METRIC, "name": f"m{i}"} for i in range(20)]
    tenant.create(model_deployment("busy", metrics=many, interval="1s"))

    message = refusal(mds, "proxy")["message"]
    assert f"spec.prometheus.address: {internal.url} is outside the operator's analysis policy" in message
    assert f"allowed: {prometheus.url}" in message and "--allowed-prometheus" in message
    budget = refusal(mds, "busy")["message"]
    assert "spec.rollout.analysis.interval: 20 metrics every 1s are 1200 queries a minute" in budget
    assert "budget of 240 (--max-queries-per-minute)" in budget
    assert mds.replicas("proxy") == {} and mds.replicas("busy") == {}, "a refused spec is not acted on"
    assert internal.requests == [] and prometheus.requests == []


def test_nothing_of_a_non_prometheus_answer_is_reflected(
    tenant: ModelDeployments,
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    recorders: Callable[..., Recorder],
    kubelet: Kubelet,
) -> None:
    prometheus, elsewhere = recorders(), recorders()
    page = f"<html><body><h1>Admin</h1><p>{SENTINEL}</p></body></html>".encode()
    answers = {
        "html404": Answer(404, page, "text/html"),
        "text200": Answer(200, SENTINEL.encode(), "text/plain"),
        "json200": Answer(200, json.dumps({"status": "success", "data": {"resultType": SENTINEL}}).encode()),
        "vector": Answer(
            200,
            json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": [SENTINEL]}}
            ).encode(),
        ),
        "redirect": Answer(302, b"", location=f"{elsewhere.url}/api/v1/query?{SENTINEL}"),
        "promerror": Answer(
            422,
            json.dumps({"status": "error", "errorType": "execution", "error": "expanding: boom"}).encode(),
        ),
    }
    prometheus.answer = lambda query: next(a for case, a in answers.items() if case in query)
    operator = start_operator(prometheus=prometheus.url)

    metrics = [{"name": case, "query": f'up{{case="{case}"}}', "max": 1} for case in answers]
    healthy_then_canary(tenant, mds, model_deployment("fraud", metrics=metrics, interval="2s"))

    status = mds.wait_phase("fraud", "Reverted", stable="v1", timeout=30)
    reasons = {r["name"]: r["reason"] for r in status["analysis"]["results"]}
    assert reasons == {
        "html404": "HTTP 404: not a Prometheus API answer",
        "text200": "HTTP 200: not a Prometheus API answer",
        "json200": "HTTP 200: not a Prometheus API answer",  # a resultType Prometheus never sends
        "vector": "unexpected result element (not a Prometheus sample)",
        "redirect": "HTTP 302: not a Prometheus API answer",
        "promerror": "execution: expanding: boom",  # Prometheus' own words do get through
    }
    assert elsewhere.requests == [], "a redirect to another host is not followed"
    assert len(prometheus.requests) >= len(answers)
    assert SENTINEL not in json.dumps(mds.get("fraud"))
    wait_for("a RolledBack Event", lambda: "RolledBack" in mds.reasons("fraud"), timeout=20)
    events = mds.events("fraud")
    assert "AnalysisFail" in [e.reason for e in events]
    assert not [e.message for e in events if SENTINEL in (e.message or "")]
    assert SENTINEL not in operator.log_path.read_text(errors="replace")


def test_credentials_only_from_consenting_secrets_and_over_tls(
    tenant: ModelDeployments,
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    recorders: Callable[..., Recorder],
    test_ca: LocalCA,
    kubelet: Kubelet,
) -> None:
    plain, tls = recorders(), recorders(test_ca.server)
    tls.answer = lambda query: Answer(200, json.dumps(vector("0")).encode())
    start_operator(prometheus=plain.url, args=[f"--allowed-prometheus={tls.url}"])
    consent = {CREDENTIALS_LABEL: "true"}
    for name, labels, data in [
        ("unlabelled", None, {"token": TOKEN}),
        ("consented", consent, {"token": TOKEN}),
        ("prometheus-ca", consent, {"ca.crt": test_ca.ca_pem}),
    ]:
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name=name, labels=labels), string_data=data)
        mds.core.create_namespaced_secret(mds.namespace, secret)

    def prometheus(token_secret: str, address: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"bearerTokenSecretRef": {"name": token_secret, "key": "token"}}
        if address:
            spec |= {"address": address, "tls": {"caSecretRef": {"name": "prometheus-ca", "key": "ca.crt"}}}
        return spec

    tenant.create(model_deployment("plain", metrics=[METRIC], prometheus=prometheus("consented")))
    healthy_then_canary(
        tenant,
        mds,
        model_deployment("unlabelled", metrics=[METRIC], prometheus=prometheus("unlabelled", tls.url)),
    )
    healthy_then_canary(
        tenant,
        mds,
        model_deployment("consented", metrics=[METRIC], prometheus=prometheus("consented", tls.url)),
    )

    message = refusal(mds, "plain")["message"]
    assert "spec.prometheus.bearerTokenSecretRef: a bearer token is only sent over https" in message
    message = refusal(mds, "unlabelled")["message"]
    assert (
        f'spec.prometheus.bearerTokenSecretRef: Secret unlabelled lacks the label {CREDENTIALS_LABEL}="true"'
        in (message)
    )
    mds.wait_phase("consented", "Healthy", stable="v2", timeout=30)

    sent = {(r["authorization"], "consented" in r["path"]) for r in tls.requests}
    assert sent == {(f"Bearer {TOKEN}", True)}, "the consented token went over TLS, for its own object only"
    assert plain.requests == [], "nothing over plain http, and nothing for the refused objects"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"interval": "500ms"}, "spec.rollout.analysis.interval", "interval must be at least 1s"),
        ({"timeout": "5m"}, "spec.prometheus.timeout", "timeout must be at most 1m"),
        ({"metrics": 21}, "spec.rollout.analysis.metrics", "must have at most 20 items"),
    ],
)
def test_load_bounds_are_refused_by_the_api_server(
    tenant: ModelDeployments, change: dict[str, Any], field: str, message: str
) -> None:
    metrics = [{**METRIC, "name": f"m{i}"} for i in range(change.get("metrics", 1))]
    body = model_deployment("heavy", metrics=metrics, interval=change.get("interval", "1m"))
    if "timeout" in change:
        body["spec"]["prometheus"] = {"timeout": change["timeout"]}
    with pytest.raises(ApiException) as refused:
        tenant.create(body)
    assert refused.value.status == 422
    assert field in refused.value.body and message in refused.value.body, refused.value.body
