"""The backtest replay (canaria.core.backtest): the real engine over a past window, with a known series.

The series is an input (what Prometheus would have answered at each instant), classified by the real
`classify`; nothing of the replay or the engine is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta

import pytest

from canaria.core.api import ModelDeploymentSpec, Phase
from canaria.core.backtest import backtest
from canaria.core.observations import AnalysisRun
from canaria.core.templating import render
from canaria.core.verdicts import classify
from tests.unit.world import T0, base_spec

STEP = timedelta(minutes=1)
INCIDENT = (T0 + timedelta(minutes=40), T0 + timedelta(minutes=50))


def _spec(**overrides: object) -> ModelDeploymentSpec:
    spec = base_spec(
        model={"version": "v2", "uri": "s3://models/fraud/v2"},
        rollout={"steps": [{"weight": 10, "pause": "30m"}, {"weight": 50, "pause": "30m"}, {"weight": 100}]},
    )
    spec.update(overrides)
    return ModelDeploymentSpec.model_validate(spec)


def _history(error_rate: Callable[[object], float]) -> Callable[[object, Mapping[str, object]], AnalysisRun]:
    """What a Prometheus holding this past would answer: error-rate per instant, p95 always 0.1."""
    seen: list[Mapping[str, object]] = []

    def analyse(at, variables):  # type: ignore[no-untyped-def]
        seen.append(dict(variables))
        spec = _spec()
        results = []
        for metric in spec.rollout.analysis.metrics:
            value = error_rate(at) if metric.name == "error-rate" else 0.1
            query = render(metric.query, variables)
            results.append(classify(metric, [{"metric": {}, "value": [0, str(value)]}], query=query, at=at))
        return AnalysisRun(at=at, results=tuple(results))

    analyse.seen = seen  # type: ignore[attr-defined]
    return analyse


def _incident(at: object) -> float:
    return 0.05 if INCIDENT[0] <= at < INCIDENT[1] else 0.002  # type: ignore[operator]


def test_a_quiet_window_promotes_through_every_step() -> None:
    report = backtest(
        _spec(),
        stable_version="v1",
        start=T0,
        end=T0 + timedelta(hours=2),
        step=STEP,
        analyse=_history(lambda at: 0.002),
        name="fraud",
        namespace="ml",
    )
    reasons = [h.reason for h in report.timeline]
    assert reasons[0] == "RolloutStarted"
    assert reasons.count("StepAdvanced") == 2
    assert "Promoted" in reasons and report.reverted_at is None
    assert report.outcome == Phase.HEALTHY
    promoted = next(h for h in report.timeline if h.reason == "Promoted")
    assert promoted.time >= T0 + timedelta(minutes=60)  # two 30-minute pauses, timed from readiness
    error_rate = report.metrics[0]
    assert error_rate.name == "error-rate" and error_rate.failed == 0
    assert error_rate.instants == 121 and error_rate.quantile(0.95) == pytest.approx(0.002)


def test_the_incident_reverts_at_the_right_time_and_is_summarised() -> None:
    analyse = _history(_incident)
    report = backtest(
        _spec(),
        stable_version="v1",
        start=T0,
        end=T0 + timedelta(hours=2),
        step=STEP,
        analyse=analyse,
        name="fraud",
        namespace="ml",
    )
    reverted = report.reverted_at
    assert reverted is not None and report.outcome == Phase.REVERTED
    # failureLimit 1: the second failing run in a row reverts
    assert reverted.time == INCIDENT[0] + STEP
    assert "error-rate=0.05" in reverted.message
    summary = report.metrics[0]
    assert summary.failed == 10 and summary.first_failure == (INCIDENT[0], 0.05)
    assert summary.quantile(0.5) == pytest.approx(0.002) and max(summary.values) == pytest.approx(0.05)
    # the queries were rendered for the candidate, with the stable version named
    assert {v["version"] for v in analyse.seen} == {"v2"}  # type: ignore[attr-defined]
    assert {v["stableVersion"] for v in analyse.seen} == {"v1"}  # type: ignore[attr-defined]


def test_an_incident_after_the_window_is_not_seen() -> None:
    report = backtest(
        _spec(),
        stable_version="v1",
        start=T0,
        end=INCIDENT[0] - STEP,
        step=STEP,
        analyse=_history(_incident),
        name="fraud",
        namespace="ml",
    )
    assert report.reverted_at is None and report.outcome == Phase.PROGRESSING
    assert report.metrics[0].failed == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": timedelta(0)}, "step must be positive"),
        ({"end": T0}, "must end after it starts"),
        ({"stable_version": "v2"}, "must differ"),
        ({"end": T0 + timedelta(days=30)}, "at most"),
    ],
)
def test_bad_windows_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "stable_version": "v1",
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "step": STEP,
        "analyse": _history(lambda at: 0.0),
        "name": "fraud",
        "namespace": "ml",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        backtest(_spec(), **args)  # type: ignore[arg-type]
