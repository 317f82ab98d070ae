"""Classify a Prometheus instant-query answer against a metric's bounds: Pass, Fail, Inconclusive, Error.

Pure (no I/O): the Prometheus provider hands the answer's ``data.result`` here, the backtest and the tests do
the same. No data and non-finite values are Inconclusive, never Pass; an answer that is not a vector or a
scalar of numbers is an Error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canaria.core.api import Metric, MetricResult, Verdict
from canaria.core.statistics import two_proportion_test

_AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": math.fsum,
    "avg": lambda values: math.fsum(values) / len(values),
    "min": min,
    "max": max,
}


#: Reason for a result element that is not a Prometheus sample; the element itself is never echoed (the
#: answer may come from whatever a tenant pointed the operator at).
UNEXPECTED = "unexpected result element (not a Prometheus sample)"


def result(metric: Metric, verdict: Verdict, *, query: str, at: datetime, **extra: Any) -> MetricResult:
    return MetricResult(
        name=metric.name,
        verdict=verdict,
        min=metric.min,
        max=metric.max,
        query=query,
        dry_run=metric.dry_run,
        at=at,
        **extra,
    )


def _sample_values(samples: Any) -> list[str] | str:
    """The raw sample values of an instant-query result, or a reason string when it has none usable.

    Accepts the ``data.result`` of a vector (list of ``{"metric", "value": [ts, "v"]}``) or of a scalar
    (``[ts, "v"]``). A range vector (``"values"``) cannot be compared with a bound and is reported.
    """
    if isinstance(samples, Sequence) and len(samples) == 2 and not isinstance(samples[0], Mapping):
        return [str(samples[1])]  # scalar result: [timestamp, "value"]
    values: list[str] = []
    for sample in samples:
        if not isinstance(sample, Mapping):
            return UNEXPECTED
        if "value" in sample:
            value = sample["value"]
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
                return UNEXPECTED
            values.append(str(value[1]))
        elif "values" in sample:
            return "query returns a range vector; wrap it in a function such as rate() or avg_over_time()"
        else:
            return UNEXPECTED
    return values


#: Result types a bound can be checked against (a matrix is reported with a hint by `_sample_values`).
NUMERIC_RESULT_TYPES = ("vector", "scalar", "matrix")


@dataclass(frozen=True)
class Reading:
    """One number read from an answer, with a note when several series were aggregated."""

    value: float
    note: str | None = None


@dataclass(frozen=True)
class Unusable:
    """An answer with no usable number: the verdict it earns and why."""

    verdict: Verdict
    reason: str


def read_value(metric: Metric, samples: Iterable[Any], result_type: str = "vector") -> Reading | Unusable:
    """The one finite number an instant-query result gives for this metric, or why there is none. Pure.

    No data and non-finite values are Inconclusive, never Pass: an error-rate query divides by traffic,
    and 0/0 = NaN is what a canary that serves nothing looks like. A string result (the PromQL `"0.01"`)
    looks like a scalar but is not a measurement: it, and any type Prometheus may add, is an Error."""
    if result_type not in NUMERIC_RESULT_TYPES:
        reason = f"query returns a {result_type!r} result, not a number; compare a vector or a scalar"
        return Unusable(Verdict.ERROR, reason)
    raw = _sample_values(samples if isinstance(samples, Sequence) else list(samples))
    if isinstance(raw, str):
        return Unusable(Verdict.ERROR, raw)
    if not raw:
        return Unusable(Verdict.INCONCLUSIVE, "no data")
    try:
        values = [float(v) for v in raw]
    except ValueError:
        return Unusable(Verdict.ERROR, "a sample value is not a number")
    if len(values) > 1 and metric.aggregate is None:
        return Unusable(
            Verdict.ERROR, f"{len(values)} series; set aggregate (sum, avg, min or max) or narrow the query"
        )
    non_finite = [v for v in values if not math.isfinite(v)]
    if non_finite:
        first = non_finite[0]
        shown = "NaN" if math.isnan(first) else ("+Inf" if first > 0 else "-Inf")
        where = f" in 1 of {len(values)} series" if len(values) > 1 else ""
        hint = " (0/0: no traffic?)" if shown == "NaN" else ""
        return Unusable(Verdict.INCONCLUSIVE, f"value is {shown}{where}{hint}")
    if len(values) == 1:
        return Reading(values[0])
    return Reading(
        _AGGREGATES[metric.aggregate or "sum"](values), f"{metric.aggregate} of {len(values)} series"
    )


def classify(
    metric: Metric, samples: Iterable[Any], *, query: str, at: datetime, result_type: str = "vector"
) -> MetricResult:
    """Turn an instant-query result into a verdict against the metric's bounds (inclusive: a value equal
    to ``max`` passes). Pure."""
    got = read_value(metric, samples, result_type)
    if isinstance(got, Unusable):
        return result(metric, got.verdict, query=query, at=at, reason=got.reason)
    verdict = Verdict.PASS if metric.verdict(got.value) else Verdict.FAIL
    return result(metric, verdict, query=query, at=at, value=got.value, reason=got.note)


def _worst(sides: Mapping[str, Reading | Unusable]) -> Unusable | None:
    """The first side without a number (an Error before an Inconclusive), its reason naming the side."""
    bad = [(side, got) for side, got in sides.items() if isinstance(got, Unusable)]
    if not bad:
        return None
    side, got = min(bad, key=lambda item: item[1].verdict != Verdict.ERROR)
    return Unusable(got.verdict, f"{side}: {got.reason}")


def compare(
    metric: Metric, canary: Iterable[Any], other: Iterable[Any], *, query: str, at: datetime
) -> MetricResult:
    """The canary's value against the stable version's or the baseline's (same query, same window): the
    ratio and delta must stay within the metric's compare bounds, the value within min/max. Pure."""
    spec = metric.compare
    assert spec is not None
    mine, theirs = read_value(metric, canary), read_value(metric, other)
    unusable = _worst({"canary": mine, spec.against: theirs})
    values = {
        "value": mine.value if isinstance(mine, Reading) else None,
        "against": spec.against,
        "against_value": theirs.value if isinstance(theirs, Reading) else None,
    }
    if unusable is not None:
        return result(metric, unusable.verdict, query=query, at=at, reason=unusable.reason, **values)
    value, base = mine.value, theirs.value
    ratio = value / base if base != 0 else None
    problems = []
    if spec.max_ratio is not None:
        if ratio is None and value > 0:
            problems.append(f"{spec.against} is 0, canary is not (ratio unbounded, max {spec.max_ratio:g})")
        elif ratio is not None and ratio > spec.max_ratio:
            problems.append(f"ratio {ratio:.4g} > {spec.max_ratio:g}")
    if spec.max_delta is not None and value - base > spec.max_delta:
        problems.append(f"delta {value - base:+.4g} > {spec.max_delta:g}")
    if not metric.verdict(value):
        problems.append(f"value not {metric.describe()}")
    shown = [f"ratio {ratio:.4g}" if ratio is not None else "ratio n/a", f"delta {value - base:+.4g}"]
    reason = "; ".join(problems) if problems else ", ".join(shown)
    verdict = Verdict.FAIL if problems else Verdict.PASS
    return result(metric, verdict, query=query, at=at, reason=reason, ratio=ratio, **values)


def proportion(
    metric: Metric,
    canary: tuple[Iterable[Any], Iterable[Any]],
    other: tuple[Iterable[Any], Iterable[Any]],
    *,
    query: str,
    at: datetime,
) -> MetricResult:
    """A rate of bad events, canary against the other side, by a one-sided two-proportion z-test. Each side
    is (answer counting bad events, answer counting all trials). Pure.

    Fewer than minSamples trials on either side is Inconclusive (never Pass); a canary whose rate is higher
    at the configured confidence Fails; otherwise it Passes (and its rate must also lie within min/max)."""
    test = metric.proportion_test
    assert test is not None
    sides = {
        "canary events": read_value(metric, canary[0]),
        "canary total": read_value(metric, canary[1]),
        f"{test.against} events": read_value(metric, other[0]),
        f"{test.against} total": read_value(metric, other[1]),
    }
    unusable = _worst(sides)
    if unusable is not None:
        return result(
            metric, unusable.verdict, query=query, at=at, reason=unusable.reason, against=test.against
        )
    # counts from increase() are extrapolated: never negative, and events never above trials
    x1, n1, x2, n2 = (max(r.value, 0.0) for r in sides.values() if isinstance(r, Reading))
    counts = {"samples": n1, "against_samples": n2, "against": test.against}
    if n1 < test.min_samples or n2 < test.min_samples:
        return result(
            metric,
            Verdict.INCONCLUSIVE,
            query=query,
            at=at,
            reason=f"{n1:.0f} trials on the canary, {n2:.0f} on the {test.against}; "
            f"needs {test.min_samples} on each",
            **counts,
        )
    outcome = two_proportion_test(min(x1, n1), n1, min(x2, n2), n2)
    values = {
        "value": outcome.p1,
        "against_value": outcome.p2,
        "ratio": outcome.p1 / outcome.p2 if outcome.p2 > 0 else None,
        "p_value": outcome.p_value,
        **counts,
    }
    level = f"{test.confidence:.0%} confidence (p={outcome.p_value:.3g}, z={outcome.z:.3g})"
    if outcome.p_value < 1 - test.confidence:
        reason, verdict = f"canary's rate higher than the {test.against}'s at {level}", Verdict.FAIL
    else:
        reason, verdict = f"no higher rate than the {test.against}'s at {level}", Verdict.PASS
    if not metric.verdict(outcome.p1):
        reason, verdict = f"{reason}; rate not {metric.describe()}", Verdict.FAIL
    return result(metric, verdict, query=query, at=at, reason=reason, **values)
