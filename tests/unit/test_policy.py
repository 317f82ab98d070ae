"""The analysis policy (where a ModelDeployment's queries may go) and the sanitising of what comes back.

A ModelDeployment is tenant input: these tests hold that an address outside the policy, a token over plain
http and a load above the budget are refused naming the field, and that nothing of an answer that is not
Prometheus' (the body a tenant could otherwise read back from status) ever reaches a reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from canaria.core.api import Metric, ModelDeploymentSpec
from canaria.core.policy import AnalysisPolicy, PolicyError
from canaria.core.verdicts import classify
from canaria.providers.prometheus import _prometheus_error

SENTINEL = "SENTINEL-internal-admin-page-7f3a"
DEFAULT = "http://prometheus.monitoring:9090"


def spec(**prometheus: Any) -> ModelDeploymentSpec:
    metrics = prometheus.pop("metrics", [{"name": "error-rate", "query": "vector(0)", "max": 0.01}])
    interval = prometheus.pop("interval", "1m")
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "fraud", "version": "v1", "uri": "s3://m/v1"},
            "template": {"spec": {"containers": [{"name": "s", "image": "i"}]}},
            "rollout": {"analysis": {"interval": interval, "metrics": metrics}},
            "prometheus": prometheus,
        }
    )


POLICY = AnalysisPolicy(
    default_address=DEFAULT,
    allowed_addresses=("https://thanos.team-a.svc:10902/prometheus", "http://prom.team-b:9090"),
)


@pytest.mark.parametrize(
    "address",
    [
        DEFAULT,
        DEFAULT + "/",
        "http://Prometheus.Monitoring:9090",
        "https://thanos.team-a.svc:10902/prometheus",
        "https://thanos.team-a.svc:10902/prometheus/tenant-a",
        "http://prom.team-b:9090/sub/path",
    ],
)
def test_allowed_addresses_pass(address: str) -> None:
    POLICY.check(spec(address=address))


@pytest.mark.parametrize(
    "address",
    [
        "http://metadata.internal/latest",  # anything else
        "http://prom.team-b.evil:9090",  # a string prefix, not a host
        "http://prom.team-b:9091",  # another port
        "https://prom.team-b:9090",  # another scheme (and so another default port)
        "https://thanos.team-a.svc:10902/prometheusX",  # a path prefix, not a path segment
        "https://thanos.team-a.svc:10902/prometheus/../admin",  # dot segments
        "http://prom.team-b:9090@evil.example:80",  # user info: the host is evil.example
        "http://prom.team-b:9090/?target=http://evil",  # a query
        "http://prometheus.monitoring:9090#frag",
    ],
)
def test_other_addresses_are_refused_naming_the_field_and_policy(address: str) -> None:
    with pytest.raises(PolicyError) as info:
        POLICY.check(spec(address=address))
    assert info.value.field == "spec.prometheus.address"
    assert str(info.value).startswith("spec.prometheus.address: ")


def test_refusal_says_what_is_allowed_and_how_to_widen() -> None:
    with pytest.raises(PolicyError) as info:
        POLICY.check(spec(address="http://10.0.0.1:8080"))
    message = str(info.value)
    assert "http://10.0.0.1:8080 is outside the operator's analysis policy" in message
    assert DEFAULT in message and "http://prom.team-b:9090" in message
    assert "--allowed-prometheus" in message and "analysisPolicy.allowedPrometheus" in message


def test_without_any_address_configured_every_address_is_refused() -> None:
    with pytest.raises(PolicyError, match="no address is allowed"):
        AnalysisPolicy().check(spec(address=DEFAULT))
    AnalysisPolicy().check(spec())  # no address at all: nothing to refuse (analysis reports it)


TOKEN = {"name": "prom-token", "key": "token"}


def test_bearer_token_over_plain_http_is_refused_unless_allowed() -> None:
    with pytest.raises(PolicyError) as info:
        POLICY.check(spec(bearerTokenSecretRef=TOKEN))  # the default address is http
    assert info.value.field == "spec.prometheus.bearerTokenSecretRef"
    assert "only sent over https" in str(info.value) and "--allow-plain-http-credentials" in str(info.value)
    AnalysisPolicy(default_address=DEFAULT, allow_plain_http_credentials=True).check(
        spec(bearerTokenSecretRef=TOKEN)
    )
    POLICY.check(spec(address="https://thanos.team-a.svc:10902/prometheus", bearerTokenSecretRef=TOKEN))


def test_query_budget_per_minute() -> None:
    metrics = [{"name": f"m{i}", "query": "vector(0)", "max": 1} for i in range(4)]
    budget = AnalysisPolicy(default_address=DEFAULT, max_queries_per_minute=60)
    budget.check(spec(metrics=metrics, interval="4s"))  # 4 x 15 runs = 60: at the budget
    with pytest.raises(PolicyError) as info:
        budget.check(spec(metrics=metrics, interval="3s"))  # 4 x 20 = 80
    assert info.value.field == "spec.rollout.analysis.interval"
    assert "80 queries a minute, over the operator's budget of 60" in str(info.value)
    budget.check(spec(metrics=[], interval="1s"))  # no metrics: no queries


@pytest.mark.parametrize(
    "options",
    [
        {"default_address": "prometheus:9090"},
        {"allowed_addresses": ("http://user@prom:9090",)},
        {"max_queries_per_minute": 0},
    ],
)
def test_a_bad_policy_fails_at_start(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AnalysisPolicy(**options)


# ------------------------------------------------------------------------------------------- sanitising


def response(status: int, body: str, content_type: str = "text/html") -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = body.encode()
    answer.headers["Content-Type"] = content_type
    answer.encoding = "utf-8"
    return answer


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, f"<html><body>{SENTINEL}</body></html>"),
        (200, f"{SENTINEL} plain text"),
        (500, f'{{"message": "{SENTINEL}"}}'),
        (400, f'{{"status": "error", "errorType": "{SENTINEL}", "error": "x"}}'),  # not an errorType
        (400, f'{{"status": "fine", "errorType": "bad_data", "error": "{SENTINEL}"}}'),  # not an error
        (403, f'["{SENTINEL}"]'),
    ],
)
def test_nothing_of_a_non_prometheus_answer_is_taken(status: int, body: str) -> None:
    assert _prometheus_error(response(status, body)) is None  # the caller says "HTTP 404: not a ..."


def test_a_prometheus_error_keeps_its_own_words_on_one_line() -> None:
    body = '{"status": "error", "errorType": "bad_data", "error": "parse error:\\n unclosed paren"}'
    assert (
        _prometheus_error(response(400, body, "application/json")) == "bad_data: parse error: unclosed paren"
    )
    long = '{"status": "error", "errorType": "execution", "error": "' + "x" * 5000 + '"}'
    assert len(_prometheus_error(response(422, long)) or "") < 400


@pytest.mark.parametrize(
    "samples",
    [
        [{"metric": {}, "value": [1, SENTINEL]}],
        [SENTINEL],
        [{"metric": {}, "other": SENTINEL}],
        [{"metric": {}, "value": SENTINEL}],
    ],
)
def test_a_result_that_is_not_samples_is_not_echoed(samples: list[Any]) -> None:
    metric = Metric(name="m", query="q", max=1)
    result = classify(metric, samples, query="q", at=datetime(2026, 1, 1, tzinfo=UTC))
    assert SENTINEL not in (result.reason or "")
    assert result.value is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interval": "999ms"}, "interval must be at least 1s, got 999ms"),
        ({"timeout": "61s"}, "timeout must be at most 1m, got 61s"),
        ({"metrics": [{"name": f"m{i}", "query": "q", "max": 1} for i in range(21)]}, "at most 20 items"),
    ],
)
def test_load_bounds_the_api_server_also_checks(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**fields)
