"""The analysis runner: render each health query, run it against Prometheus, classify the answer.

This module is the thin adapter between the pure engine and Prometheus. Classification
(`classify`) is pure and unit-tested on its own; `run_analysis` only adds I/O around it and turns every
server-side problem into a result instead of an exception, because a rollout must keep deciding (fail safe)
while Prometheus is down, slow or confused:

- no data, NaN, ±Inf, connection refused, timeouts, 5xx, 408/429 → ``Inconclusive`` (never promotes; the
  engine counts them against ``inconclusiveLimit``);
- any other 4xx (PromQL syntax error, ``bad_data``, 401/403) and a query whose template cannot be rendered
  → ``Error``: the query or its configuration is wrong and waiting will not fix it, so the engine fails fast;
- several series without ``aggregate`` → ``Error`` as well: which series gates would be a guess.

Prometheus is reached through ``prometheus-api-client``'s `PrometheusConnect` (without its pandas extras).
That client reports a non-200 answer as ``PrometheusApiClientException`` whose message embeds the body as a
``repr`` of bytes, and by default retries 5xx three times with a growing back-off before surfacing them as
``requests.exceptions.RetryError``. We therefore hand it our own retry policy (one immediate retry on a
refused connection, none on reads or statuses) and read the real response through a ``requests`` response
hook, so the reason we record is Prometheus' own ``errorType: error`` text.

The address is tenant input, so nothing of an answer that is not Prometheus' is ever recorded (status,
Events and logs say "HTTP 404: not a Prometheus API answer"), library error texts are reduced to a fixed
list of kinds, and redirects are followed only below the address the analysis policy allowed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canaria.core.api import Metric, MetricResult, PrometheusSpec, SecretKeyRef, Verdict
from canaria.core.durations import parse_duration
from canaria.core.observations import AnalysisRun
from canaria.core.templating import comparison_variables, render
from canaria.core.verdicts import NUMERIC_RESULT_TYPES, classify, compare, proportion, result

#: Statuses in the 4xx range that are about load or patience, not about the query: retry at the next run.
TRANSIENT_CLIENT_STATUSES: frozenset[int] = frozenset({408, 429})

#: Extra seconds the HTTP client waits beyond the timeout it asks Prometheus to honour, so that a slow
#: query usually ends with Prometheus' own "query timed out" answer (which also stops the evaluation
#: server-side) rather than a bare socket timeout.
CLIENT_TIMEOUT_MARGIN = 0.5

#: What status says of an answer that is not Prometheus': never any of its body.
NOT_PROMETHEUS = "not a Prometheus API answer"
#: A Prometheus ``errorType`` (bad_data, timeout, execution, ...): a short identifier, else not Prometheus.
ERROR_TYPE = re.compile(r"[a-z_]{1,32}")
MAX_ERROR_CHARS = 300
#: The ``data.resultType`` values of the Prometheus API; anything else is not Prometheus (and not echoed).
RESULT_TYPES = frozenset({"vector", "scalar", "matrix", "string"})


# ------------------------------------------------------------------------------------------- target


@dataclass(frozen=True)
class PrometheusTarget:
    """Where and how to query Prometheus, resolved from a spec (secrets already read).

    ``verify`` is what ``requests`` takes: True (system CAs), False (no verification) or the path of a PEM
    CA bundle. The token is kept out of ``repr`` so that logging a target never leaks it.
    """

    address: str
    bearer_token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.address.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus address {self.address!r} must start with http:// or https://")
        if self.timeout <= 0:
            raise ValueError(f"Prometheus timeout must be positive, got {self.timeout}")


def target_from_spec(
    spec: PrometheusSpec,
    default_address: str | None,
    read_secret: Callable[[SecretKeyRef, str], str],
) -> PrometheusTarget:
    """Resolve a ModelDeployment's ``spec.prometheus`` (with the operator's default address) to a target.

    ``read_secret`` is injected so that this stays free of Kubernetes calls (the shell reads Secrets in the
    resource's namespace, and refuses, naming the field it is given, a Secret without the consent label).
    ``tls.insecureSkipVerify`` wins over a CA: it is the explicit, louder choice.
    """
    address = spec.address or default_address
    if not address:
        raise ValueError(
            "no Prometheus address: set spec.prometheus.address or start the operator with "
            "--prometheus-address"
        )
    token = None
    if spec.bearer_token_secret_ref is not None:
        token = (
            read_secret(spec.bearer_token_secret_ref, "spec.prometheus.bearerTokenSecretRef").strip() or None
        )
        if token is None:
            ref = spec.bearer_token_secret_ref
            raise ValueError(f"bearer token in Secret {ref.name!r}, key {ref.key!r} is empty")
    verify: bool | str = True
    if spec.tls is not None:
        if spec.tls.insecure_skip_verify:
            verify = False
        elif spec.tls.ca_secret_ref is not None:
            pem = read_secret(spec.tls.ca_secret_ref, "spec.prometheus.tls.caSecretRef")
            verify = str(write_ca_bundle(pem))
    return PrometheusTarget(
        address=address.rstrip("/"),
        bearer_token=token,
        verify=verify,
        timeout=parse_duration(spec.timeout),
    )


def write_ca_bundle(pem: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write a CA bundle where ``requests`` can read it and return the path.

    ``requests`` only takes a CA bundle as a file. The name is derived from the content, so resolving the
    same spec at every analysis interval reuses one file instead of leaking a temp file per run, and a
    rotated CA gets a new file. Written atomically (rename) so a concurrent reader never sees half a PEM.
    """
    if "-----BEGIN" not in pem:
        raise ValueError("CA bundle is not PEM (no '-----BEGIN' line)")
    base = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "canaria-ca"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = base / f"ca-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=base, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(pem)
        os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------- runner


@dataclass
class _Failure:
    """A query that got no usable answer: the verdict it earns and why."""

    verdict: Verdict
    reason: str


def _prometheus_error(response: requests.Response | None) -> str | None:
    """Prometheus' own ``errorType: error`` (one line) when ``response`` is a well-formed Prometheus error,
    else None: the caller then says "HTTP 404: not a Prometheus API answer" and copies nothing more.

    The address is tenant input: whatever answers there may be an internal service, and status, Events and
    logs are read by people who could not have read that service.
    """
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, Mapping) or body.get("status") != "error":
        return None
    kind, error = body.get("errorType"), body.get("error")
    if isinstance(kind, str) and ERROR_TYPE.fullmatch(kind) and isinstance(error, str) and error:
        return f"{kind}: {' '.join(error.split())[:MAX_ERROR_CHARS]}"
    return None


def _connection_reason(error: requests.ConnectionError, address: str) -> str:
    """What kind of connection failure, from a fixed list: the library's text can carry what the other
    end sent (e.g. a malformed status line), so it is never copied."""
    text = str(error)
    if "Connection refused" in text or "ECONNREFUSED" in text:
        kind = "connection refused"
    elif "Name or service not known" in text or "NameResolutionError" in text or "getaddrinfo" in text:
        kind = "name does not resolve"
    elif "Connection reset" in text or "RemoteDisconnected" in text or "ConnectionResetError" in text:
        kind = "connection closed by the server"
    else:
        kind = f"connection failed ({type(error).__name__})"
    return f"Prometheus unreachable at {address}: {kind}"


def _tls_reason(error: requests.exceptions.SSLError, address: str) -> str:
    """TLS failures by kind only (the library's text may quote the server's certificate)."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        kind = "certificate not trusted (set spec.prometheus.tls.caSecretRef)"
    elif "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        kind = "the server does not speak TLS"
    else:
        kind = "handshake failed"
    return f"TLS to {address} failed: {kind}"


class _Session(requests.Session):
    """A session that follows a redirect only below the Prometheus address it was built for.

    The analysis policy allowed that address, not whatever it redirects to: another host, scheme, port or
    a path outside the address would be a way around the policy, so such a redirect is returned as the
    3xx it is (and reported as "HTTP 302: not a Prometheus API answer").
    """

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base.rstrip("/") + "/"

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        location = super().get_redirect_target(resp)
        if location is None:
            return None
        target = urljoin(resp.url, location)
        return location if target.startswith(self.base) else None


class _Client:
    """One PrometheusConnect for one analysis run, with the last HTTP response kept for error reporting."""

    def __init__(self, target: PrometheusTarget) -> None:
        self.target = target
        self.last_response: requests.Response | None = None
        session = _Session(target.address)
        session.verify = target.verify
        session.hooks["response"].append(self._keep)
        headers = {"Authorization": f"Bearer {target.bearer_token}"} if target.bearer_token else None
        # One immediate retry when the connection is refused or reset before a request was sent (a
        # Prometheus restarting behind its Service); reads and statuses are never retried, because a
        # retried slow query doubles the wait and the next analysis run is the retry.
        # False (not 0) makes urllib3 re-raise the original error: with 0 a read timeout comes back as
        # MaxRetryError, which requests reports as a ConnectionError instead of a Timeout.
        retry = Retry(
            total=1, connect=1, read=False, status=False, other=False, backoff_factor=0, raise_on_status=False
        )
        self.prom = PrometheusConnect(
            url=target.address, headers=headers, retry=retry, session=session, timeout=None
        )

    def _keep(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = response
        return response

    def close(self) -> None:
        self.prom.close()

    def _not_prometheus(self) -> str:
        status = self.last_response.status_code if self.last_response is not None else 0
        return f"HTTP {status}: {NOT_PROMETHEUS}" if status else NOT_PROMETHEUS

    def query(self, query: str, at: datetime) -> tuple[str, list[Any]] | _Failure:
        """Run an instant query at ``at``; return ``(data.resultType, data.result)`` or a classified
        failure, never raise for a server problem."""
        self.last_response = None
        timeout = self.target.timeout
        # Prometheus reads a bare number as seconds ("0.3"; "0.3s" would be rejected as a duration).
        params = {"time": f"{_timestamp(at):.3f}", "timeout": f"{timeout:g}"}
        try:
            result = self.prom.custom_query(query, params=params, timeout=timeout + CLIENT_TIMEOUT_MARGIN)
        except PrometheusApiClientException:
            response = self.last_response
            status = response.status_code if response is not None else 0
            own = _prometheus_error(response)
            if 400 <= status < 500 and status not in TRANSIENT_CLIENT_STATUSES:
                return _Failure(Verdict.ERROR, own or self._not_prometheus())
            reason = f"Prometheus answered {status}: {own}" if own else self._not_prometheus()
            return _Failure(Verdict.INCONCLUSIVE, reason)
        except requests.Timeout:
            return _Failure(
                Verdict.INCONCLUSIVE,
                f"Prometheus at {self.target.address} did not answer within {timeout:g}s",
            )
        except requests.exceptions.SSLError as error:
            return _Failure(Verdict.INCONCLUSIVE, _tls_reason(error, self.target.address))
        except requests.ConnectionError as error:
            return _Failure(Verdict.INCONCLUSIVE, _connection_reason(error, self.target.address))
        except (requests.RequestException, KeyError, TypeError) as error:
            # A 200 that is not JSON, or JSON not shaped like a Prometheus answer (no data.result); a
            # KeyError or TypeError with no response at all is our bug.
            if self.last_response is None and not isinstance(error, requests.RequestException):
                raise
            return _Failure(Verdict.INCONCLUSIVE, self._not_prometheus())
        result_type = self.last_response.json()["data"].get("resultType") if self.last_response else "vector"
        if not isinstance(result, list) or result_type not in RESULT_TYPES:
            return _Failure(Verdict.INCONCLUSIVE, self._not_prometheus())
        return result_type, result


def _timestamp(at: datetime) -> float:
    """Unix time of ``at``; a naive datetime is taken as UTC (the engine's clock is UTC)."""
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def run_analysis(
    metrics: Sequence[Metric],
    variables: Mapping[str, object],
    target: PrometheusTarget,
    *,
    now: datetime,
) -> AnalysisRun:
    """Run every metric's query once and classify it; one result per metric, in order, never raising
    for a Prometheus problem.

    Every query is evaluated at ``now`` (Prometheus' ``time`` parameter), so the metrics of one run
    describe the same instant, and a past ``now`` replays history (the basis of a backtest). Each result
    records the rendered query, so status shows exactly what ran.
    """
    client = _Client(target)
    try:
        results = tuple(_run_metric(client, metric, variables, now) for metric in metrics)
    finally:
        client.close()
    return AnalysisRun(at=now, results=results)


def _run_metric(
    client: _Client, metric: Metric, variables: Mapping[str, object], now: datetime
) -> MetricResult:
    """One metric: its query for the analysed version and, for a comparison, the same queries rendered for
    the other side (stable or baseline) at the same instant; the verdict comes from the pure core."""
    templates = [metric.query]
    if metric.proportion_test is not None:
        templates.append(metric.proportion_test.total)
    sides = [("canary", variables)]
    if metric.against is not None:
        sides.append((metric.against, comparison_variables(variables, metric.against)))
    answers: list[list[list[Any]]] = []
    shown = metric.query
    for side, values in sides:
        answers.append([])
        for template in templates:
            try:
                query = render(template, values)
            except ValueError as error:
                return result(metric, Verdict.ERROR, query=shown, at=now, reason=f"template: {error}")
            if len(answers) == 1 and template is metric.query:
                shown = query  # status shows the canary's rendered query
            answer = client.query(query, now)
            if isinstance(answer, _Failure):
                reason = answer.reason if len(sides) == 1 else f"{side}: {answer.reason}"
                return result(
                    metric, answer.verdict, query=shown, at=now, reason=reason, against=metric.against
                )
            result_type, samples = answer
            if result_type not in NUMERIC_RESULT_TYPES:  # no number to compare: say why, as classify does
                return classify(metric, samples, query=query, at=now, result_type=result_type)
            answers[-1].append(samples)
    if metric.compare is not None:
        return compare(metric, answers[0][0], answers[1][0], query=shown, at=now)
    if metric.proportion_test is not None:
        mine, theirs = answers
        return proportion(metric, (mine[0], mine[1]), (theirs[0], theirs[1]), query=shown, at=now)
    return classify(metric, answers[0][0], query=shown, at=now)
