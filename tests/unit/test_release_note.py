"""Release notes (canaria.core.release_note) from statuses the engine produced in simulated rollouts."""

from __future__ import annotations

import pytest

from canaria.core.api import ModelDeployment
from canaria.core.release_note import UnknownVersion, release_note, to_json, to_markdown
from tests.unit.world import BAD, NAME, NAMESPACE, World, healthy_world


def _resource(world: World) -> ModelDeployment:
    return ModelDeployment(
        metadata={"name": NAME, "namespace": NAMESPACE}, spec=world.spec, status=world.status
    )


@pytest.fixture
def promoted() -> World:
    """v1 serving, then v2 released with a change reason and promoted through every step."""
    world = healthy_world()
    world.release("v2", change_reason="retrained on January data", auc=0.952)
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == "v2", step=30)
    return world


def test_a_promoted_version_has_lineage_outcome_duration_and_rollback(promoted: World) -> None:
    note = release_note(_resource(promoted))
    assert note.model_id == "fraud-v2" and note.replaced == "v1"
    assert note.lineage is not None and note.lineage.code_commit == "c0ffee-v2"
    assert note.outcome == "promoted"
    of_v2 = [h for h in promoted.status.history if h.version == "v2"]
    started = next(h for h in of_v2 if h.reason == "RolloutStarted")
    ended = next(h for h in of_v2 if h.reason == "Promoted")
    assert note.duration == (ended.time - started.time).total_seconds() > 0
    assert note.change_reason == "retrained on January data"
    assert note.rollback_command == "canaria rollback fraud -n ml --to v1"
    assert {c.metric for c in note.live} == {"error-rate", "p95-latency"}
    assert all(c.verdict == "Pass" for c in note.live)

    markdown = to_markdown(note)
    assert "## Release note: fraud-v2" in markdown
    assert "| **Code** | git c0ffee-v2 |" in markdown
    assert "| **Training run** | run-v2 |" in markdown
    assert note.primary_metric == "auc" and note.primary_delta == pytest.approx(0.952 - 0.94)
    assert "auc 0.952 (+0.012 vs v1)" in markdown
    assert "`canaria rollback fraud -n ml --to v1`" in markdown
    assert "| **Why** | retrained on January data |" in markdown
    assert to_json(note)["replaced"] == "v1"


def test_a_reverted_version_says_so_with_the_failing_value(promoted: World) -> None:
    promoted.health["v3"] = BAD
    promoted.release("v3")
    promoted.run_until(lambda w: w.phase == "Reverted", step=30)
    note = release_note(_resource(promoted))
    assert note.version == "v3" and note.replaced == "v2"
    assert note.outcome.startswith("reverted to v2")
    assert "error-rate" in note.outcome
    assert any(c.verdict == "Fail" for c in note.live)
    markdown = to_markdown(note)
    assert "reverted to v2" in markdown and "Fail" in markdown

    earlier = release_note(_resource(promoted), "v2")
    assert earlier.outcome == "promoted" and earlier.replaced == "v1"
    assert earlier.live == ()  # the last analysis was made on v3, not on v2


def test_the_first_version_has_nothing_to_compare() -> None:
    world = healthy_world()
    note = release_note(_resource(world))
    assert note.replaced is None and note.rollback_command is None
    assert note.outcome == "first deployment, serving"
    markdown = to_markdown(note)
    assert "first version: nothing to compare" in markdown
    assert "no earlier version recorded" in markdown


def test_a_canary_in_progress(promoted: World) -> None:
    promoted.release("v3")
    promoted.run(20, step=10)
    note = release_note(_resource(promoted))
    assert note.outcome.startswith("in progress: step 1 at weight 10%")
    assert note.ended_at is None and note.replaced == "v2"


def test_an_unknown_version_is_refused(promoted: World) -> None:
    with pytest.raises(UnknownVersion, match="v9"):
        release_note(_resource(promoted), "v9")
