"""The baseline Deployment: a fresh copy of the stable version beside the canary, sized like it, only
while the canary runs. The engine is driven through `World`; the shell's copy of the stable's template is
stood in for by the template hash the action carries (the stable's).
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from canaria.cli.render import render_status
from canaria.cli.session import Resource
from canaria.core.api import Metric
from canaria.core.engine import ApplyWorkload
from canaria.core.observations import AnalysisRun
from canaria.core.verdicts import proportion

from .world import BAD, World, healthy_world

BASELINE = {"baseline": {"enabled": True}}


def serving_v1(**rollout: Any) -> World:
    return healthy_world(rollout={**BASELINE, **rollout})


def layout(world: World) -> tuple[dict[str, int], int | None]:
    """(version → replicas, baseline replicas or None)."""
    return world.replicas(), world.baseline.replicas if world.baseline else None


def test_the_baseline_is_the_stable_version_sized_like_the_canary_taking_the_stables_share() -> None:
    world = serving_v1()
    world.release("v2")
    world.tick(1)
    [created] = [a for a in world.decisions[-1].actions if isinstance(a, ApplyWorkload) and a.baseline]
    assert (created.version, created.replicas) == ("v1", 1)
    assert created.template_hash == world.workloads["v1"].template_hash  # a copy of what the stable runs
    world.tick(1)
    assert layout(world) == ({"v1": 2, "v2": 1}, 1)  # the ready baseline took one of the stable's three
    world.run_until(lambda w: w.status.canary.step == 1, step=10)
    world.tick(1)
    world.tick(1)
    assert layout(world) == ({"v1": 0, "v2": 2}, 2)  # at 50%: canary and baseline take all four
    world.run_until(lambda w: w.phase == "Healthy", step=10)
    world.tick(1)
    assert layout(world) == ({"v2": 4}, None)  # gone with the canary, once the new stable serves fully


def test_a_step_waits_for_its_baseline_and_the_deadline_covers_it() -> None:
    world = serving_v1(progressDeadline="2m")
    world.readiness["v1"] = float("inf")  # the baseline's fresh pods never become ready
    world.release("v2")
    world.tick(1)
    world.run(90, step=10)
    assert world.status.canary.ready_at is None and world.analysis_runs == []  # nothing judged yet
    world.run_until(lambda w: w.phase == "Reverted", step=10)
    assert world.status.rejected.reason == "ProgressDeadlineExceeded"
    world.tick(1)
    assert world.baseline is None and world.replicas() == {"v1": 4}


def test_a_reverted_canary_takes_its_baseline_with_it() -> None:
    world = serving_v1()
    world.health["v2"] = BAD
    world.release("v2")
    world.run_until(lambda w: w.phase == "Reverted", step=10)
    world.tick(1)
    world.tick(1)
    assert layout(world) == ({"v1": 4}, None)


def test_comparisons_run_beside_a_canary_only_so_a_bake_ends() -> None:
    compare = {"name": "latency-vs-stable", "query": "p95", "compare": {"against": "stable", "maxRatio": 1.2}}
    world = healthy_world(rollout={"bake": "5m", "analysis": {"metrics": [compare]}})

    def value(version: str, metric: Metric) -> float:
        assert world.status.canary is not None, "a comparison ran with no canary beside the stable"
        return 0.1

    world.health["v2"] = value
    world.release("v2")
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == "v2", step=10)
    assert "BakeCompleted" in world.reasons()


def test_canaria_status_shows_the_comparison_the_engine_recorded() -> None:
    errors = {
        "name": "errors-vs-baseline",
        "query": 'errors{version="{{version}}",role="{{role}}"}',
        "proportionTest": {"total": 'requests{version="{{version}}",role="{{role}}"}', "minSamples": 1000},
    }
    world = serving_v1(analysis={"metrics": [errors]})
    world.release("v2")
    world.run(30, step=5, analysis=False)
    [metric] = world.spec.rollout.analysis.metrics

    def vector(value: float) -> list[dict[str, Any]]:
        return [{"metric": {}, "value": [0, str(value)]}]

    judged = proportion(
        metric, (vector(40), vector(2000)), (vector(20), vector(2000)), query="q", at=world.now
    )
    world.tick(1, analysis=AnalysisRun(at=world.now, results=(judged,)))
    assert world.status.analysis.failures == 1  # recorded by the engine (failureLimit 1: not reverted yet)
    console = Console(file=io.StringIO(), width=240, record=True, color_system=None)
    console.print(render_status(Resource(world.body()), world.now))
    out = console.export_text()
    for needle in (
        "COMPARED WITH",
        "errors-vs-baseline  0.02   baseline 0.01 (x2), n=2000/2000  not higher at 95%, n >= 1000  Fail",
        "canary's rate higher than the baseline's at 95% confidence (p=0.00464, z=2.6)",
    ):
        assert needle in out, f"{needle!r} not in:\n{out}"
