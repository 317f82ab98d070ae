"""Analysis classification, query rendering and target resolution: pure, no server.

The integration twin (tests/integration/test_analysis_prometheus.py) checks the same verdicts against a
real Prometheus; here every edge of the classification table is pinned down cheaply.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canaria.core.api import Metric, MetricResult, PrometheusSpec, SecretKeyRef, Verdict
from canaria.core.observations import AnalysisRun
from canaria.core.verdicts import classify
from canaria.providers import prometheus as analysis
from canaria.providers.prometheus import PrometheusTarget, run_analysis, target_from_spec, write_ca_bundle

NAN_REASON = "value is NaN (0/0: no traffic?)"
PASS, FAIL, INCONCLUSIVE, ERROR = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.ERROR
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
QUERY = 'sum(rate(http_requests_total{version="v2",code=~"5.."}[1m]))'


def metric(**kw: Any) -> Metric:
    fields: dict[str, Any] = {"name": "error-rate", "query": QUERY, "max": 0.01}
    fields.update(kw)
    return Metric(**fields)


def vector(*values: str | float, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A Prometheus instant-vector ``data.result`` with one series per value."""
    return [
        {"metric": {**(labels or {}), "pod": f"p{i}"}, "value": [AT.timestamp(), str(v)]}
        for i, v in enumerate(values)
    ]


# ----------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("bounds", "samples", "verdict", "value", "reason"),
    [
        pytest.param({"max": 0.01}, vector("0.01"), PASS, 0.01, None, id="at-max-passes"),
        pytest.param({"max": 0.01}, vector("0.0100001"), FAIL, 0.0100001, None, id="above-max"),
        pytest.param({"min": 0.9}, vector("0.9"), PASS, 0.9, None, id="at-min-passes"),
        pytest.param({"min": 0.9}, vector("0.89"), FAIL, 0.89, None, id="below-min"),
        pytest.param({"min": 0.1, "max": 0.2}, vector("0.15"), PASS, 0.15, None, id="inside-range"),
        pytest.param({"min": 0.1, "max": 0.2}, vector("0.25"), FAIL, 0.25, None, id="outside-range"),
        pytest.param({"max": 0.01}, vector("0"), PASS, 0.0, None, id="zero"),
        pytest.param({"max": 0.01}, [], INCONCLUSIVE, None, "no data", id="empty"),
        pytest.param({"max": 0.01}, vector("NaN"), INCONCLUSIVE, None, NAN_REASON, id="nan"),
        pytest.param({"max": 0.01}, vector("+Inf"), INCONCLUSIVE, None, "value is +Inf", id="plus-inf"),
        pytest.param({"min": 0.0}, vector("-Inf"), INCONCLUSIVE, None, "value is -Inf", id="minus-inf"),
        pytest.param({"max": 1}, [AT.timestamp(), "0.5"], PASS, 0.5, None, id="scalar-result"),
        pytest.param({"max": 1}, [AT.timestamp(), "NaN"], INCONCLUSIVE, None, None, id="scalar-nan"),
    ],
)
def test_classification_table(
    bounds: dict[str, float],
    samples: Any,
    verdict: Verdict,
    value: float | None,
    reason: str | None,
) -> None:
    m = metric(min=bounds.get("min"), max=bounds.get("max"))
    result = classify(m, samples, query="q", at=AT)
    assert result.verdict is verdict
    assert result.value == value
    if reason is not None:
        assert result.reason == reason
    assert (result.min, result.max) == (m.min, m.max)
    assert (result.name, result.query, result.at) == ("error-rate", "q", AT)


def test_several_series_without_aggregate_is_an_error() -> None:
    result = classify(metric(), vector("0.001", "0.002", "0.003"), query="q", at=AT)
    assert result.verdict is Verdict.ERROR
    assert result.value is None
    assert result.reason is not None and result.reason.startswith("3 series; set aggregate")


@pytest.mark.parametrize(
    ("aggregate", "expected", "verdict"),
    [
        ("sum", 0.012, Verdict.FAIL),
        ("avg", 0.004, Verdict.PASS),
        ("min", 0.002, Verdict.PASS),
        ("max", 0.006, Verdict.PASS),
    ],
)
def test_several_series_with_aggregate(aggregate: str, expected: float, verdict: Verdict) -> None:
    result = classify(metric(aggregate=aggregate), vector("0.004", "0.002", "0.006"), query="q", at=AT)
    assert result.value == pytest.approx(expected)
    assert result.verdict is verdict
    assert result.reason == f"{aggregate} of 3 series"


def test_non_finite_series_makes_an_aggregate_inconclusive() -> None:
    result = classify(metric(aggregate="max"), vector("0.004", "NaN"), query="q", at=AT)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.reason is not None and "1 of 2 series" in result.reason


def test_range_vector_is_an_error_naming_the_fix() -> None:
    samples = [{"metric": {}, "values": [[AT.timestamp(), "1"], [AT.timestamp() + 1, "2"]]}]
    result = classify(metric(), samples, query="q", at=AT)
    assert result.verdict is Verdict.ERROR
    assert result.reason is not None and "range vector" in result.reason


def test_unparseable_value_is_an_error() -> None:
    assert classify(metric(), vector("fast"), query="q", at=AT).verdict is Verdict.ERROR


@pytest.mark.parametrize("dry_run", [True, False, None])
def test_dry_run_flag_is_carried(dry_run: bool | None) -> None:
    for samples in (vector("0.5"), [], vector("NaN")):
        assert classify(metric(dry_run=dry_run), samples, query="q", at=AT).dry_run is dry_run


def test_classify_accepts_any_iterable() -> None:
    assert classify(metric(), iter(vector("0.001")), query="q", at=AT).verdict is Verdict.PASS


# ---------------------------------------------------------------------------------------- the runner


class FakePrometheus:
    """Stands in for PrometheusConnect.custom_query: records what ran, answers from a table."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str], float]] = []

    def __call__(self, _self: Any, query: str, params: dict[str, str], timeout: float) -> Any:
        self.calls.append((query, params, timeout))
        return self.answers[query]


@pytest.fixture
def fake_prometheus(monkeypatch: pytest.MonkeyPatch) -> FakePrometheus:
    fake = FakePrometheus({})

    def custom_query(self: Any, query: str, params: dict[str, str], timeout: float) -> Any:
        return fake(self, query, params, timeout)

    monkeypatch.setattr(analysis.PrometheusConnect, "custom_query", custom_query)
    return fake


TARGET = PrometheusTarget(address="http://127.0.0.1:1", timeout=2.0)
VARIABLES = {"service": "fraud", "version": "v12", "stableVersion": "v11", "interval": "1m"}


def test_run_renders_queries_and_records_them(fake_prometheus: FakePrometheus) -> None:
    metrics = [
        metric(query='errors{service="{{service}}",version="{{ version }}"}[{{interval}}]', max=0.01),
        Metric(name="drift", query='psi{version="{{version}}"} / psi{version="{{stableVersion}}"}', max=2),
    ]
    rendered = ['errors{service="fraud",version="v12"}[1m]', 'psi{version="v12"} / psi{version="v11"}']
    fake_prometheus.answers = {rendered[0]: vector("0.002"), rendered[1]: vector("3")}

    run = run_analysis(metrics, VARIABLES, TARGET, now=AT)

    assert [r.query for r in run.results] == rendered
    assert [r.verdict for r in run.results] == [Verdict.PASS, Verdict.FAIL]
    assert run.at == AT and all(r.at == AT for r in run.results)
    assert [c[0] for c in fake_prometheus.calls] == rendered
    # Every query of a run is evaluated at the same instant, with Prometheus told the timeout too.
    assert {c[1]["time"] for c in fake_prometheus.calls} == {f"{AT.timestamp():.3f}"}
    assert {c[1]["timeout"] for c in fake_prometheus.calls} == {"2"}
    assert all(c[2] > 2.0 for c in fake_prometheus.calls)


def test_missing_variable_is_an_error_result_not_an_exception(fake_prometheus: FakePrometheus) -> None:
    metrics = [
        metric(name="needs-weight", query="x * {{canaryWeight}}"),
        metric(name="fine", query="up"),
    ]
    fake_prometheus.answers = {"up": vector("0")}
    run = run_analysis(metrics, VARIABLES, TARGET, now=AT)
    first, second = run.results
    assert first.verdict is Verdict.ERROR
    assert first.reason is not None and "canaryWeight" in first.reason
    assert first.query == "x * {{canaryWeight}}"
    assert second.verdict is Verdict.PASS
    assert run.verdict is Verdict.FAIL
    assert [c[0] for c in fake_prometheus.calls] == ["up"]


def test_naive_now_is_taken_as_utc(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answers = {"up": vector("0")}
    run_analysis([metric(query="up")], {}, TARGET, now=AT.replace(tzinfo=None))
    assert fake_prometheus.calls[0][1]["time"] == f"{AT.timestamp():.3f}"


def result(verdict: Verdict, dry_run: bool | None = None) -> MetricResult:
    return MetricResult(name=f"m-{verdict.value}", verdict=verdict, dry_run=dry_run)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([(Verdict.PASS, None), (Verdict.PASS, False)], Verdict.PASS),
        ([(Verdict.PASS, None), (Verdict.FAIL, None)], Verdict.FAIL),
        ([(Verdict.INCONCLUSIVE, None), (Verdict.ERROR, None)], Verdict.FAIL),
        ([(Verdict.PASS, None), (Verdict.INCONCLUSIVE, None)], Verdict.INCONCLUSIVE),
        ([(Verdict.FAIL, None), (Verdict.INCONCLUSIVE, None)], Verdict.FAIL),
        ([(Verdict.PASS, None), (Verdict.FAIL, True), (Verdict.ERROR, True)], Verdict.PASS),
        ([(Verdict.PASS, None), (Verdict.INCONCLUSIVE, True)], Verdict.PASS),
    ],
    ids=["all-pass", "one-fail", "error-beats-inconclusive", "inconclusive", "fail-beats-inconclusive",
         "dry-run-fail-ignored", "dry-run-inconclusive-ignored"],
)  # fmt: skip
def test_run_verdict(verdicts: list[tuple[Verdict, bool | None]], expected: Verdict) -> None:
    run = AnalysisRun(at=AT, results=tuple(result(v, d) for v, d in verdicts))
    assert run.verdict is expected


# ------------------------------------------------------------------------------------------- target


def secrets(values: dict[tuple[str, str], str]) -> Any:
    def read(ref: SecretKeyRef, field: str) -> str:
        return values[(ref.name, ref.key)]

    return read


def test_target_needs_an_address() -> None:
    with pytest.raises(ValueError, match="--prometheus-address"):
        target_from_spec(PrometheusSpec(), None, secrets({}))


def test_target_defaults_and_overrides() -> None:
    default = target_from_spec(PrometheusSpec(), "http://prom.monitoring:9090/", secrets({}))
    assert default == PrometheusTarget(address="http://prom.monitoring:9090", timeout=10.0)
    own = target_from_spec(
        PrometheusSpec(address="https://prom.example:443", timeout="1500ms"), "http://ignored", secrets({})
    )
    assert (own.address, own.timeout, own.verify) == ("https://prom.example:443", 1.5, True)


def test_target_token_from_secret_is_stripped_and_hidden() -> None:
    spec = PrometheusSpec.model_validate(
        {"address": "http://p:9090", "bearerTokenSecretRef": {"name": "prom", "key": "token"}}
    )
    target = target_from_spec(spec, None, secrets({("prom", "token"): "s3cret\n"}))
    assert target.bearer_token == "s3cret"
    assert "s3cret" not in repr(target)


def test_target_empty_token_is_an_error() -> None:
    spec = PrometheusSpec.model_validate(
        {"address": "http://p:9090", "bearerTokenSecretRef": {"name": "prom", "key": "token"}}
    )
    with pytest.raises(ValueError, match="empty"):
        target_from_spec(spec, None, secrets({("prom", "token"): "  \n"}))


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_target_ca_from_secret_is_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis.tempfile, "gettempdir", lambda: str(tmp_path))
    spec = PrometheusSpec.model_validate(
        {"address": "https://p:9090", "tls": {"caSecretRef": {"name": "prom-ca", "key": "ca.crt"}}}
    )
    read = secrets({("prom-ca", "ca.crt"): PEM})
    first = target_from_spec(spec, None, read)
    second = target_from_spec(spec, None, read)
    assert isinstance(first.verify, str)
    assert Path(first.verify).read_text() == PEM
    assert first.verify == second.verify  # content-addressed: no file per analysis run
    assert len(list(Path(first.verify).parent.iterdir())) == 1


def test_insecure_skip_verify_wins_over_ca() -> None:
    spec = PrometheusSpec.model_validate(
        {
            "address": "https://p:9090",
            "tls": {"insecureSkipVerify": True, "caSecretRef": {"name": "prom-ca", "key": "ca.crt"}},
        }
    )
    assert target_from_spec(spec, None, secrets({})).verify is False


def test_ca_bundle_must_be_pem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PEM"):
        write_ca_bundle("not a certificate", tmp_path)


def test_target_rejects_bad_address_and_timeout() -> None:
    with pytest.raises(ValueError, match="http"):
        PrometheusTarget(address="prom:9090")
    with pytest.raises(ValueError, match="positive"):
        PrometheusTarget(address="http://prom:9090", timeout=0)


def test_nan_is_not_mistaken_for_a_pass() -> None:
    # Threshold.verdict(NaN) is False for both bounds, which would read as a Fail; classify must say
    # Inconclusive before the comparison.
    assert classify(metric(min=0.0), vector(math.nan), query="q", at=AT).verdict is Verdict.INCONCLUSIVE
