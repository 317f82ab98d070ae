"""The data the dashboard's pages are built from (canaria.cli.dashboard.views), on statuses the engine
produced."""

from __future__ import annotations

from datetime import timedelta

from canaria.cli.dashboard.views import ACTIONS, detail, metric_queries, overview, window_start
from canaria.cli.history import merge_history
from canaria.cli.session import Resource
from tests.unit.world import BAD, NAME, NAMESPACE, World, healthy_world


def _resource(world: World) -> Resource:
    return Resource(
        {
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u-1", "generation": world.generation},
            "spec": world.spec.dump(),
            "status": world.status.dump(),
        }
    )


def test_overview_rows_of_a_canary_and_a_healthy_model() -> None:
    canary = healthy_world()
    canary.release("v2")
    canary.run(20, step=10)
    (row,) = overview([_resource(canary)])
    assert (row["phase"], row["stable"], row["canary"], row["weight"]) == ("Progressing", "v1", "v2", 10)
    assert row["step"] == "step 1/3 (weight 10%)" and row["owner"] == "fraud-team@example.com"
    assert row["verdict"] == "Pass" and row["ready"] == "False"
    (healthy,) = overview([_resource(healthy_world())])
    assert healthy["phase"] == "Healthy" and healthy["canary"] is None and healthy["ready"] == "True"


def test_metric_queries_are_the_operators_rendered_for_canary_and_stable() -> None:
    world = healthy_world()
    world.release("v2")
    world.run(20, step=10)
    res = _resource(world)
    queries = {m["name"]: m for m in metric_queries(res)}
    error_rate = queries["error-rate"]
    assert error_rate["queries"] == {"v2": 'errors{version="v2"}', "v1": 'errors{version="v1"}'}
    assert error_rate["max"] == 0.01 and error_rate["analysed"] == "v2"


def test_detail_of_a_reverted_rollout() -> None:
    world = healthy_world()
    world.health["v2"] = BAD
    world.release("v2", change_reason="retrained")
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    res = _resource(world)
    page = detail(res, [], world.now, allow_actions=True)
    assert page["phase"] == "Reverted" and page["owner"] == "fraud-team@example.com"
    roles = {v["role"]: v for v in page["versions"]}
    assert roles["stable"]["version"] == "v1" and roles["stable"]["evaluation"] == {"auc": 0.94}
    assert [h["reason"] for h in page["history"]][-1] == "RolledBack"
    assert {m["reason"] for m in page["markers"]} >= {"RolloutStarted", "RolledBack"}
    assert any(r["verdict"] == "Fail" for r in page["results"])
    assert set(page["actions"]) == set(ACTIONS)
    assert page["actions"]["retry"] is None  # the core allows retrying the reverted version
    assert page["actions"]["promote"] is not None  # and says why promote would do nothing
    started = next(h for h in world.status.history if h.reason == "RolloutStarted" and h.version == "v2")
    assert page["window"]["start"] == started.time.isoformat()
    assert detail(res, [], world.now, allow_actions=False)["actions"] == {}


def test_the_window_of_a_model_with_no_rollout() -> None:
    world = healthy_world()
    now = world.now + timedelta(hours=1)
    history = merge_history(_resource(world).body, [])
    start = window_start(history, now)
    first = world.status.history[0].time
    assert start == min(first, now - timedelta(minutes=1))
