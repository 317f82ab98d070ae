"""Classify a Prometheus instant-query answer against a metric's bounds: Pass, Fail, Inconclusive, Error.

Pure (no I/O): the Prometheus provider hands the answer's ``data.result`` here, the backtest and the tests do
the same. No data and non-finite values are Inconclusive, never Pass; an answer that is not a vector or a
scalar of numbers is an Error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from canaria.core.api import Metric, MetricResult, Verdict

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


def classify(
    metric: Metric, samples: Iterable[Any], *, query: str, at: datetime, result_type: str = "vector"
) -> MetricResult:
    """Turn an instant-query result into a verdict against the metric's bounds. Pure.

    Bounds are inclusive (a value equal to ``max`` passes). No data and non-finite values are
    Inconclusive, never Pass: an error-rate query divides by traffic, and 0/0 = NaN is what a canary that
    serves nothing looks like. A string result (the PromQL `"0.01"`) looks like a scalar but is not a
    measurement: it, and any type Prometheus may add, is an Error.
    """
    if result_type not in NUMERIC_RESULT_TYPES:
        reason = f"query returns a {result_type!r} result, not a number; compare a vector or a scalar"
        return result(metric, Verdict.ERROR, query=query, at=at, reason=reason)
    raw = _sample_values(samples if isinstance(samples, Sequence) else list(samples))
    if isinstance(raw, str):
        return result(metric, Verdict.ERROR, query=query, at=at, reason=raw)
    if not raw:
        return result(metric, Verdict.INCONCLUSIVE, query=query, at=at, reason="no data")
    try:
        values = [float(v) for v in raw]
    except ValueError:
        return result(metric, Verdict.ERROR, query=query, at=at, reason="a sample value is not a number")
    if len(values) > 1 and metric.aggregate is None:
        return result(
            metric,
            Verdict.ERROR,
            query=query,
            at=at,
            reason=f"{len(values)} series; set aggregate (sum, avg, min or max) or narrow the query",
        )
    non_finite = [v for v in values if not math.isfinite(v)]
    if non_finite:
        first = non_finite[0]
        shown = "NaN" if math.isnan(first) else ("+Inf" if first > 0 else "-Inf")
        where = f" in 1 of {len(values)} series" if len(values) > 1 else ""
        hint = " (0/0: no traffic?)" if shown == "NaN" else ""
        return result(
            metric, Verdict.INCONCLUSIVE, query=query, at=at, reason=f"value is {shown}{where}{hint}"
        )
    value = values[0] if len(values) == 1 else _AGGREGATES[metric.aggregate or "sum"](values)
    verdict = Verdict.PASS if metric.verdict(value) else Verdict.FAIL
    reason = f"{metric.aggregate} of {len(values)} series" if len(values) > 1 else None
    return result(metric, verdict, query=query, at=at, value=value, reason=reason)
