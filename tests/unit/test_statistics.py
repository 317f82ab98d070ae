"""Canary vs stable/baseline comparisons and the two-proportion test, against known reference values.

Answers are fed in the shape Prometheus returns them (`data.result` of an instant vector), so these tests
exercise the same pure functions the Prometheus provider calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canaria.core.api import Metric, MetricResult, ModelDeploymentSpec, Verdict
from canaria.core.statistics import two_proportion_test
from canaria.core.templating import comparison_variables
from canaria.core.verdicts import compare, proportion

from .world import base_spec

AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
ERRORS = 'sum(increase(http_requests_total{version="{{version}}",role="{{role}}",code=~"5.."}[10m]))'
TOTAL = 'sum(increase(http_requests_total{version="{{version}}",role="{{role}}"}[10m]))'


def vector(value: float | str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [1768467600, str(value)]}]


def proportion_metric(**test: Any) -> Metric:
    return Metric.model_validate(
        {"name": "errors", "query": ERRORS, "proportionTest": {"total": TOTAL, "minSamples": 1000, **test}}
    )


def test_two_proportion_z_against_textbook_values() -> None:
    # pooled two-proportion z: 255/340 vs 140/200 gives z = 1.266 (one-sided p = 0.1028; the worked
    # example this comes from reads 0.103); 28/254 vs 36/301 gives z = -0.344, two-sided p = 0.7307
    first = two_proportion_test(255, 340, 140, 200)
    assert first.z == pytest.approx(1.266015, abs=1e-6)
    assert first.p_value == pytest.approx(0.1028, abs=1e-4)
    second = two_proportion_test(28, 254, 36, 301)
    assert second.z == pytest.approx(-0.344, abs=5e-4)
    assert 2 * (1 - second.p_value) == pytest.approx(0.7307, abs=1e-3)
    # 2% against 1% errors over 1000 requests each: z = 1.8396, one-sided p = 0.0329
    rollout = two_proportion_test(20, 1000, 10, 1000)
    assert (rollout.z, rollout.p_value) == (pytest.approx(1.8396, abs=1e-4), pytest.approx(0.0329, abs=1e-4))
    assert two_proportion_test(0, 500, 0, 500).p_value == 0.5  # no variance: nothing to tell them apart


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="both samples need trials"):
        two_proportion_test(0, 0, 1, 10)
    with pytest.raises(ValueError, match="events must lie within"):
        two_proportion_test(11, 10, 1, 10)


def run_proportion(
    metric: Metric, canary: tuple[float, float], baseline: tuple[float, float]
) -> MetricResult:
    return proportion(
        metric,
        (vector(canary[0]), vector(canary[1])),
        (vector(baseline[0]), vector(baseline[1])),
        query="q",
        at=AT,
    )


def test_below_the_minimum_sample_a_proportion_test_is_inconclusive_never_pass() -> None:
    metric = proportion_metric()
    early = run_proportion(metric, (19, 999), (10, 1500))
    assert early.verdict == Verdict.INCONCLUSIVE
    assert early.reason == "999 trials on the canary, 1500 on the baseline; needs 1000 on each"
    assert (early.samples, early.against_samples, early.value) == (999, 1500, None)
    # even a canary identical to its baseline does not pass before it has been seen enough
    assert run_proportion(metric, (0, 10), (0, 10)).verdict == Verdict.INCONCLUSIVE


def test_a_canary_at_2_percent_errors_fails_against_a_baseline_at_1_percent() -> None:
    result = run_proportion(proportion_metric(), (40, 2000), (20, 2000))
    assert result.verdict == Verdict.FAIL
    assert (result.value, result.against_value, result.ratio) == (0.02, 0.01, 2.0)
    assert result.p_value == pytest.approx(two_proportion_test(40, 2000, 20, 2000).p_value)
    assert result.reason.startswith("canary's rate higher than the baseline's at 95% confidence (p=0.00")
    assert result.describe().startswith("errors=0.02 vs baseline 0.01 Fail (canary's rate higher")


def test_the_confidence_decides_how_much_evidence_fails_a_canary() -> None:
    # z = 1.84, p = 0.033: worse at 95% confidence, not shown at 99%
    assert run_proportion(proportion_metric(), (20, 1000), (10, 1000)).verdict == Verdict.FAIL
    strict = run_proportion(proportion_metric(confidence=0.99), (20, 1000), (10, 1000))
    assert strict.verdict == Verdict.PASS and "99% confidence" in strict.reason


def test_a_canary_equal_to_its_baseline_passes() -> None:
    result = run_proportion(proportion_metric(), (10, 1000), (10, 1000))
    assert result.verdict == Verdict.PASS
    assert result.p_value == 0.5 and result.ratio == 1.0


def test_no_data_on_either_side_is_inconclusive_and_names_the_side() -> None:
    metric = proportion_metric()
    result = proportion(metric, (vector(1), vector(100)), ([], vector(100)), query="q", at=AT)
    assert (result.verdict, result.reason) == (Verdict.INCONCLUSIVE, "baseline events: no data")


def latency_metric(**bounds: Any) -> Metric:
    return Metric.model_validate({"name": "p95", "query": "p95", "compare": {"against": "stable", **bounds}})


def test_compare_records_both_values_and_the_ratio() -> None:
    ok = compare(latency_metric(maxRatio=1.1), vector(0.105), vector(0.1), query="p95", at=AT)
    assert (ok.verdict, ok.value, ok.against_value, ok.against) == (Verdict.PASS, 0.105, 0.1, "stable")
    assert ok.ratio == pytest.approx(1.05)
    assert ok.describe() == "p95=0.105 vs stable 0.1 Pass (ratio 1.05, delta +0.005)"
    slow = compare(latency_metric(maxRatio=1.1, maxDelta=0.001), vector(0.2), vector(0.1), query="p95", at=AT)
    assert slow.verdict == Verdict.FAIL and slow.reason == "ratio 2 > 1.1; delta +0.1 > 0.001"
    zero = compare(latency_metric(maxRatio=1.1), vector(0.01), vector(0), query="p95", at=AT)
    assert zero.verdict == Verdict.FAIL and zero.ratio is None and "stable is 0" in zero.reason
    missing = compare(latency_metric(maxRatio=1.1), vector(0.1), vector("NaN"), query="p95", at=AT)
    assert missing.verdict == Verdict.INCONCLUSIVE and missing.reason.startswith("stable: value is NaN")


def test_the_other_side_is_the_same_query_rendered_for_the_stable_version() -> None:
    variables = {"version": "v2", "stableVersion": "v1", "role": "", "service": "fraud"}
    assert comparison_variables(variables, "baseline") == {**variables, "version": "v1", "role": "baseline"}
    assert comparison_variables(variables, "stable") == {**variables, "version": "v1", "role": ""}


def test_a_comparison_against_the_baseline_needs_the_baseline() -> None:
    metric = {"name": "errors", "query": ERRORS, "proportionTest": {"total": TOTAL}}
    with pytest.raises(ValueError, match=r"errors compare against the baseline: set baseline\.enabled"):
        ModelDeploymentSpec.model_validate(base_spec(rollout={"analysis": {"metrics": [metric]}}))
    spec = ModelDeploymentSpec.model_validate(
        base_spec(rollout={"analysis": {"metrics": [metric]}, "baseline": {"enabled": True}})
    )
    assert spec.rollout.analysis.metrics[0].against == "baseline"
    with pytest.raises(ValueError, match="not both"):
        Metric.model_validate({**metric, "compare": {"against": "stable", "maxRatio": 2}})


def test_a_comparison_counts_every_query_it_makes_against_the_budget() -> None:
    assert latency_metric(maxRatio=1.1).queries_per_run == 2  # canary and stable
    assert proportion_metric().queries_per_run == 4  # events and trials, on each side
    assert Metric.model_validate({"name": "m", "query": "q", "max": 1}).queries_per_run == 1
