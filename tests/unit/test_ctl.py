"""The client side of the day-2 commands, on statuses the engine produced: the world of tests/unit/world.py
runs real decisions, and the CLI reads the resulting resource as the API server would return it.

What happens next, the status view, the list, the audit trail, command preconditions (the engine's own
answer), rollback targets and the one-line errors; no cluster.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from canaria.cli import commands, ctl
from canaria.cli import main as cli
from canaria.cli.explain import next_step
from canaria.cli.history import merge_history
from canaria.cli.render import fmt_age, render_history, render_list, render_status, status_document
from canaria.cli.session import RESOURCE, CtlError, Resource, Session
from canaria.core.api import ModelDeploymentSpec, Rollout
from canaria.core.commands import (
    CHANGE_REASON_ANNOTATION,
    COMMAND_ANNOTATION,
    change_reason,
    new_command,
    parse_command,
)
from canaria.core.durations import format_duration

from .world import BAD, NAME, T0, UID, World, healthy_world, rolled_out_to


def res(world: World, **kw: Any) -> Resource:
    return Resource(world.body(**kw))


def nxt(world: World, now: datetime | None = None, prog: str = "canaria") -> str:
    return next_step(res(world), now or world.now, prog=prog)


def text(renderable: Any, width: int = 220) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def at_step(step: int, *, ready: bool = True, **spec: Any) -> World:
    return rolled_out_to(healthy_world(**spec), "v2", step=step, ready=ready, change_reason="retrained")


def reverted() -> World:
    world = at_step(0)
    world.health["v2"] = BAD
    world.run_until(lambda w: w.phase == "Reverted", step=30)
    return world


def baking() -> World:
    world = healthy_world(rollout={"bake": "30m"})
    world.release("v2")
    world.run_until(lambda w: w.phase == "Baking", step=5)
    return world


def commanded(world: World, action: str, **kw: Any) -> World:
    world.send(action, **kw)
    world.tick(1)
    return world


# ------------------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/work/venv/bin/kubectl-canaria", "kubectl canaria"),
        ("kubectl-canaria", "kubectl canaria"),
        ("/usr/local/bin/canaria", "canaria"),
        ("/x/canaria/cli.py", "canaria"),
    ],
)
def test_prog_name_follows_argv0(argv0: str, prog: str) -> None:
    assert ctl.prog_name(argv0) == prog


def test_help_says_kubectl_canaria_under_the_plugin_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/bin/kubectl-canaria", "promote", "--help"])
    with pytest.raises(SystemExit):
        cli.main(["promote", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl canaria promote") and "example: kubectl canaria promote" in out


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (3000, "50m"),
        (4 * 3600 + 60, "4h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 7200, "3d2h"),
        (20 * 86400, "20d"),
    ],
)
def test_age_reads_like_kubectl(seconds: float, age: str) -> None:
    assert fmt_age(seconds) == age


# ---------------------------------------------------------------------------------------- next step


def test_next_without_status_asks_for_the_operator() -> None:
    assert nxt(World.create()).startswith("waiting for the operator to pick it up")


def test_next_waits_for_an_unready_canary_with_its_deadline() -> None:
    world = healthy_world()
    world.readiness["v2"] = float("inf")
    world.release("v2")
    world.tick(1)
    started = world.status.canary.step_started_at
    assert nxt(world) == (
        "waiting for canary v2 to be ready at step 1/3 (weight 10%); "
        f"reverted if not ready by {clock(started + timedelta(minutes=10))}"
    )


def test_the_deadline_shown_is_the_apis_default_when_the_spec_sets_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI has no default of its own: changing the API's default changes what `status` says."""
    world = healthy_world()
    world.readiness["v2"] = float("inf")
    world.release("v2")
    world.tick(1)
    started = world.status.canary.step_started_at
    body = world.body()
    del body["spec"]["rollout"]["progressDeadline"]  # as a user writes it: no deadline, the default's

    def said() -> str:
        return next_step(Resource(body), world.now)

    default = Rollout().progress_deadline_seconds
    assert said().endswith(f"not ready by {clock(started + timedelta(seconds=default))}")

    field = Rollout.model_fields["progress_deadline"]
    monkeypatch.setattr(field, "default", "3m")
    for model in (Rollout, ModelDeploymentSpec):
        model.model_rebuild(force=True)
    try:
        assert said().endswith(f"not ready by {clock(started + timedelta(minutes=3))}")
    finally:
        monkeypatch.undo()
        for model in (Rollout, ModelDeploymentSpec):
            model.model_rebuild(force=True)


def test_next_shows_the_hold_of_a_paused_step_and_the_next_analysis() -> None:
    world = at_step(0)
    hold = world.status.canary.ready_at + timedelta(minutes=5)
    analysis = world.status.analysis.last_run_at + timedelta(minutes=1)
    assert nxt(world) == (
        f"step 1/3 holds until {clock(hold)} (in {format_duration((hold - world.now).total_seconds())}); "
        f"next analysis in {format_duration((analysis - world.now).total_seconds())}; "
        "then step 2/3 at weight 50%"
    )


def test_next_never_says_in_now() -> None:
    world = at_step(0)
    last = world.status.analysis.last_run_at
    overdue = nxt(world, now=last + timedelta(minutes=1, seconds=30))
    assert "in now" not in overdue and "next analysis at the operator's next reconcile" in overdue


def test_next_names_the_promote_command_on_a_manual_step() -> None:
    world = at_step(1, rollout={"steps": [{"weight": 10}, {"weight": 50, "manual": True}, {"weight": 100}]})
    assert nxt(world).startswith("step 2/3 holds until `canaria promote fraud`; next analysis in ")
    assert nxt(world).endswith("; then step 3/3 at weight 100%")


def test_next_on_the_last_step_says_promotion_and_bake() -> None:
    steps = [{"weight": 10}, {"weight": 50}, {"weight": 100, "pause": "1m"}]
    world = at_step(2, rollout={"bake": "30m", "steps": steps, "analysis": {"metrics": []}})
    between_reconciles = world.status.canary.ready_at + timedelta(minutes=1)
    assert nxt(world, now=between_reconciles) == "step 3/3 is done; then v2 is promoted and bakes 30m"


def test_next_after_the_pause_waits_for_a_passing_analysis() -> None:
    world = at_step(0)
    later = world.status.canary.ready_at + timedelta(minutes=6)
    assert nxt(world, now=later).startswith("step 1/3 waits for a passing analysis")


def test_next_when_paused_by_command_or_by_spec() -> None:
    world = commanded(at_step(0), "pause")
    assert nxt(world) == (
        "paused by a command: `canaria resume fraud` continues, `canaria abort fraud` reverts to v1"
    )
    world = at_step(0)
    world.edit(paused=True)
    world.tick(1)
    assert nxt(world).startswith("paused by spec.paused")


def test_next_after_a_revert_says_the_spec_still_names_the_bad_version() -> None:
    assert nxt(reverted()) == (
        "reverted: spec still names v2; v1 keeps serving; change the spec (or `canaria rollback fraud`) "
        "or `canaria retry fraud`"
    )


def test_next_after_a_gate_refusal() -> None:
    world = healthy_world()
    world.release("v2", auc=0.5)
    world.tick(1)
    assert nxt(world).startswith("refused by gates: spec still names v2")


def test_next_while_baking() -> None:
    world = baking()
    until = world.status.bake_started_at + timedelta(minutes=30)
    assert nxt(world).startswith(f"baking v2 until {clock(until)} (in ")
    assert nxt(world).endswith("; a failure reverts to v1")


def test_next_when_healthy_and_when_the_operator_lags() -> None:
    world = healthy_world()
    assert nxt(world).startswith("nothing to do: v1 is serving")
    world.edit(replicas=5)  # generation 2, not reconciled yet
    assert nxt(world).startswith("the operator has not acted on generation 2 yet (saw 1); nothing to do")


def test_next_mentions_a_command_the_operator_has_not_handled() -> None:
    world = at_step(0)
    command = world.send("pause")
    assert nxt(world).startswith(f"command pause ({command.id}) waits for the operator; ")
    world.tick(1)
    assert not nxt(world).startswith("command")


def test_a_rejected_spec_is_named_not_waited_for() -> None:
    """A spec the operator refuses: the CLI says what is wrong in the operator's words, not "waiting"."""
    world = World.create()
    body = world.body()
    body["spec"]["rollout"]["steps"] = [{"weight": 50}, {"weight": 10}]
    body["spec"]["rollout"]["stpes"] = []
    body["status"] = {}
    said = next_step(Resource(body), world.now)
    assert said.startswith("the operator refuses this spec (spec.rollout.steps: step weights must be")
    assert "spec.rollout.stpes: unknown field" in said and "waiting for the operator" not in said
    assert "Value error" not in said and "Extra inputs" not in said


# ------------------------------------------------------------------------------------------ commands


@pytest.mark.parametrize(
    ("given", "action", "message"),
    [
        (healthy_world, "promote", "fraud: no rollout in progress (Healthy, serving v1)"),
        (healthy_world, "abort", "fraud: no rollout in progress (Healthy, serving v1)"),
        (healthy_world, "pause", "fraud: no rollout in progress (Healthy, serving v1)"),
        (World.create, "promote", "fraud: no rollout in progress (not reconciled yet)"),
        (lambda: at_step(0), "resume", "fraud: nothing paused (Progressing, serving v1)"),
        (healthy_world, "retry", "fraud: nothing rejected (Healthy, serving v1)"),
        (lambda: commanded(at_step(0), "pause"), "pause", "fraud: already paused by a command"),
        (
            lambda: commanded(at_step(0), "pause"),
            "promote",
            "fraud: paused by a pause command: resume it first, then promote (or promote --full)",
        ),
    ],
)
def test_command_preconditions(given: Any, action: str, message: str) -> None:
    world = given()
    with pytest.raises(CtlError) as caught:
        commands.check_command(action, res(world, annotations={}))
    assert str(caught.value) == message
    # the operator gives the same answer when the command reaches it anyway
    world.send(action, id="direct")
    world.tick(1)
    assert world.status.last_command.result == "ignored: " + message.removeprefix("fraud: ")


def test_a_retry_of_a_version_the_spec_no_longer_names() -> None:
    world = reverted()
    world.release("v3")  # not reconciled yet: status still rejects v2
    with pytest.raises(CtlError) as caught:
        commands.check_command("retry", res(world))
    assert (
        str(caught.value)
        == "fraud: nothing to retry: the rejected version v2 is no longer named by the spec (v3)"
    )


def test_resume_of_a_hold_by_spec_says_which_field() -> None:
    world = at_step(0)
    world.edit(paused=True)
    world.tick(1)
    with pytest.raises(CtlError, match=r"held by spec\.paused, not by a command: set spec\.paused to false"):
        commands.check_command("resume", res(world))


@pytest.mark.parametrize(
    ("given", "action"),
    [
        (lambda: at_step(0), "promote"),
        (lambda: at_step(0, ready=False), "promote"),  # kept until the canary is ready, not dropped
        (lambda: at_step(0), "abort"),
        (lambda: at_step(0), "pause"),
        (baking, "abort"),
        (baking, "promote"),
        (lambda: commanded(at_step(0), "pause"), "resume"),
        (lambda: commanded(at_step(0), "pause"), "abort"),
        (reverted, "retry"),
    ],
)
def test_commands_allowed_are_carried_out(given: Any, action: str) -> None:
    world = given()
    commands.check_command(action, res(world, annotations={}))
    world.send(action, id="allowed")
    world.tick(1)
    assert not world.status.last_command.result.startswith("ignored")


def test_promote_full_is_allowed_while_paused() -> None:
    world = commanded(at_step(0), "pause")
    commands.check_command("promote", res(world, annotations={}), full=True)
    commanded(world, "promote", full=True)
    assert (world.phase, world.stable) == ("Healthy", "v2")


def test_a_pending_command_blocks_another_unless_forced() -> None:
    world = at_step(0)
    first = new_command("pause", user="alice", reason=None)
    resource = res(world, annotations={COMMAND_ANNOTATION: first.to_annotation()})
    with pytest.raises(CtlError, match=f"a pause command \\({first.id}\\) on fraud still waits"):
        commands.check_command("abort", resource)
    commands.check_command("abort", resource, force=True)


def test_command_patch_carries_who_why_and_full() -> None:
    command = new_command("promote", user="alice@admin", reason="dashboards green", full=True, now=T0)
    patch = commands.command_patch(command.to_annotation())
    assert list(patch) == ["metadata"] and list(patch["metadata"]) == ["annotations"]
    parsed = parse_command(patch["metadata"]["annotations"])
    assert parsed is not None
    assert (parsed.action, parsed.id, parsed.user, parsed.reason, parsed.full) == (
        "promote",
        command.id,
        "alice@admin",
        "dashboards green",
        True,
    )
    assert parsed.issued_at == T0.isoformat()


# ----------------------------------------------------------------------------------------- rollback


def lineage(version: str) -> dict[str, str]:
    return {"codeCommit": f"c0ffee-{version}", "trainingRun": f"run-{version}"}


def promoted(version: str = "v2") -> World:
    world = healthy_world()
    world.release(version)
    world.run_until(lambda w: w.phase == "Healthy" and w.stable == version, step=30)
    return world


def test_rollback_defaults_to_the_last_known_good_version() -> None:
    target = commands.rollback_target(res(reverted()))
    assert (target.version, target.uri) == ("v1", "s3://models/fraud/v1")
    assert "last known good" in target.note


def test_rollback_while_healthy_defaults_to_the_previous_healthy_version() -> None:
    deployments = {"v1": {"uri": "s3://models/fraud/v1", "lineage": lineage("v1")}}
    target = commands.rollback_target(res(promoted()), deployments=deployments)
    assert (target.version, target.uri, target.lineage) == ("v1", "s3://models/fraud/v1", lineage("v1"))
    assert target.note == "v2 is the last known good version: defaulting to v1, the previous healthy version"


def test_rollback_while_healthy_without_an_earlier_version_is_an_error() -> None:
    with pytest.raises(CtlError, match="nothing to roll back to: v1 is the last known good version"):
        commands.rollback_target(res(healthy_world()))


def test_rollback_to_a_version_not_in_history() -> None:
    with pytest.raises(CtlError) as caught:
        commands.rollback_target(res(reverted()), to="v9")
    assert str(caught.value) == "version v9 not in the history of fraud (known: v1, v2)"


def test_rollback_to_the_version_the_spec_names() -> None:
    with pytest.raises(CtlError, match="already names v2"):
        commands.rollback_target(res(reverted()), to="v2")


def test_rollback_to_an_old_version_finds_its_uri_on_the_deployment_or_asks_for_it() -> None:
    world = promoted()
    world.release("v3")
    resource = res(world)
    with pytest.raises(CtlError, match=r"the URI of v1 is not recorded .*: pass --uri"):
        commands.rollback_target(resource, to="v1")
    found = commands.rollback_target(
        resource, to="v1", deployments={"v1": {"uri": "gs://v1", "lineage": None}}
    )
    assert (found.version, found.uri, found.lineage) == ("v1", "gs://v1", None)
    assert commands.rollback_target(resource, to="v1", uri="s3://elsewhere/v1").uri == "s3://elsewhere/v1"


def test_rollback_patch_and_the_yaml_to_commit() -> None:
    resource = res(reverted())
    target = commands.rollback_target(resource)
    patch = commands.rollback_patch(target, "v2 misroutes EU traffic")
    annotations = patch["metadata"]["annotations"]
    assert patch["spec"] == {
        "model": {"version": "v1", "uri": "s3://models/fraud/v1", "lineage": target.lineage}
    }
    assert annotations[CHANGE_REASON_ANNOTATION] == "v2 misroutes EU traffic"
    # the reason explains this spec change, not the next one (a sync of v3 keeps the annotation)
    assert change_reason(annotations, "v1") == "v2 misroutes EU traffic"
    assert change_reason(annotations, "v3") is None
    rewritten = {**annotations, CHANGE_REASON_ANNOTATION: "v3 adds merchant features"}  # by anyone
    assert change_reason(rewritten, "v3") == "v3 adds merchant features"
    assert change_reason({CHANGE_REASON_ANNOTATION: "retrained"}, "v3") == "retrained"  # a person's own
    unknown = commands.RollbackTarget("v0", "s3://v0", None, "")
    assert commands.rollback_patch(unknown, "r")["spec"]["model"]["lineage"] is None  # merge patch: removed
    block = yaml.safe_load(commands.model_block_yaml(resource, target))["spec"]["model"]
    assert (block["version"], block["uri"], block["name"]) == ("v1", "s3://models/fraud/v1", "fraud")
    assert "lineage" not in yaml.safe_load(commands.model_block_yaml(resource, unknown))["spec"]["model"]


# ------------------------------------------------------------------------------------------ history


def as_event(world: World, index: int, *, uid: str = UID) -> dict[str, Any]:
    """The Event the operator posts for the world's `index`-th EmitEvent (as kube/cluster.py names it)."""
    action = world.events[index]
    return {
        "metadata": {
            "name": f"{NAME}.{uid[:8]}.{action.key}",
            "namespace": "ml",
            "annotations": {"canaria.dev/version": action.version or ""},
        },
        "involvedObject": {"kind": "ModelDeployment", "name": NAME, "uid": uid},
        "reason": action.reason,
        "message": action.message,
        "type": action.type,
        "eventTime": world.now.isoformat(),
    }


def test_history_merges_status_and_events_without_duplicates() -> None:
    world = reverted()
    events = [as_event(world, i) for i in range(len(world.events))]
    events.append({**as_event(world, 0, uid="ffffffff-0000"), "message": "an older object"})
    entries = merge_history(world.body(), events)
    transitions = [h.reason for h in world.status.history]
    assert [e["reason"] for e in entries if e["seq"]] == transitions
    only_events = sorted(e.reason for e in world.events if not e.key.isdigit())  # analysis runs, gates
    assert sorted(e["reason"] for e in entries if not e["seq"]) == only_events
    assert {e["source"] for e in entries if e["seq"]} == {"status+event"}
    assert "an older object" not in [e["message"] for e in entries]
    failures = [e for e in entries if e["reason"] == "AnalysisFail"]
    revert = next(e for e in entries if e["reason"] == "RolledBack")
    assert failures and all(f["type"] == "Warning" for f in failures)
    assert entries.index(failures[-1]) < entries.index(revert)  # the run's own time, before the revert


def test_history_keeps_transitions_only_in_events_and_parses_who_and_why() -> None:
    world = commanded(
        at_step(0, model={"owner": "ml-team@example.com"}), "abort", user="alice@admin", reason="p99"
    )
    aborted = next(i for i, e in enumerate(world.events) if e.reason == "Aborted")
    body = world.body()
    body["status"]["history"] = []  # e.g. beyond the status' bounded history
    (entry,) = merge_history(body, [as_event(world, aborted)])
    assert entry["source"] == "event" and entry["version"] == "v1" and entry["user"] == "alice@admin"
    assert (
        entry["changeReason"] == "p99" and "owner:" not in entry["message"] and "[by" not in entry["message"]
    )


def test_history_attaches_the_last_commands_reason_to_its_transition() -> None:
    world = commanded(at_step(0), "pause", user="alice", reason="dashboards odd")
    entries = merge_history(world.body(), [])
    assert entries[-1]["reason"] == "Paused" and entries[-1]["commandReason"] == "dashboards odd"
    assert "commandReason" not in entries[0]
    rendered = text(render_history(entries))
    assert "dashboards odd" in rendered and "alice" in rendered and "Progressing → Paused" in rendered


def test_history_rendering_copes_with_sparse_entries() -> None:
    entries = [{"time": None, "reason": "Error", "message": "kopf: boom [not markup]"}]
    assert "kopf: boom [not markup]" in text(render_history(entries))


# ------------------------------------------------------------------------------------------- render


def test_status_renders_versions_lineage_step_analysis_and_next() -> None:
    world = commanded(commanded(at_step(0), "pause"), "resume", user="bob@admin", reason="all clear")
    out = text(render_status(res(world), world.now))
    for needle in (
        "fraud  namespace ml  phase Progressing",
        "desired          v2  s3://models/fraud/v2",
        "step 1/3 (weight 10%), started ",
        "stable         v1       s3://models/fraud/v1  code 1a2b3c4, run run-811",
        "canary         v2",
        "lastKnownGood  v1",
        "Pass  (failures 0/1, inconclusive 0/2 in a row)",
        "error-rate ",
        'last command: resume by bob@admin ("all clear") at ',
        "next: step 1/3 holds until ",
    ):
        assert needle in out, f"{needle!r} not in:\n{out}"


def test_status_after_a_revert_shows_no_counters_of_the_ended_rollout() -> None:
    world = reverted()
    out = text(render_status(res(world), world.now, prog="kubectl canaria"))
    assert "phase Reverted" in out and "rejected       v2       AnalysisFailed: " in out
    assert "next: reverted: spec still names v2" in out and "`kubectl canaria retry fraud`" in out
    assert "failures" not in out  # not "Fail (failures 0/1)": the counters were reset by the revert


def test_status_shows_the_conditions_gitops_tools_read() -> None:
    world = at_step(0)
    out = text(render_status(res(world), world.now))
    assert (
        "conditions       Ready=False  Reconciling=True (Progressing)  Stalled=False  Available=True" in out
    )
    assert "not acted on" not in out
    world.edit(replicas=5)  # applied, not yet reconciled: the conditions describe the previous generation
    out = text(render_status(res(world), world.now))
    assert (
        f"(for generation {world.generation - 1}; the operator has not acted on {world.generation} yet)"
        in out
    )
    out = text(render_status(res(reverted()), world.now))
    assert "Ready=False  Reconciling=False  Stalled=True (Reverted)  Available=True" in out


def test_status_of_a_resource_without_metrics_or_status() -> None:
    world = World.create(rollout={"analysis": {"metrics": []}})
    out = text(render_status(res(world), world.now))
    assert "analysis: no metrics" in out and "phase -" in out and "waiting for the operator" in out


def test_status_document_for_machines() -> None:
    world = at_step(1)
    doc = status_document(res(world), world.now)
    assert doc["step"] == {"index": 2, "of": 3, "weight": 50}
    assert doc["desired"]["version"] == "v2" and doc["phase"] == "Progressing"
    assert doc["status"]["canary"]["version"] == "v2" and doc["next"].startswith("step 2/3 holds")
    json.dumps(doc)


def test_list_renders_one_line_per_model_deployment() -> None:
    world = at_step(1)
    other = healthy_world().body()
    other["metadata"] = {**other["metadata"], "name": "churn", "namespace": "growth"}
    items = [res(world), Resource(other)]
    now = T0 + timedelta(minutes=125)
    out = text(render_list(items, now)).splitlines()
    assert out[0].split() == ["NAME", "PHASE", "DESIRED", "STABLE", "CANARY", "WEIGHT", "AGE"]
    assert out[1].split() == ["churn", "Healthy", "v1", "v1", "-", "-", "125m"]
    assert out[2].split() == ["fraud", "Progressing", "v2", "v1", "v2", "50%", "(2/3)", "125m"]
    wide = text(render_list(items, now, all_namespaces=True)).splitlines()
    assert wide[0].split()[0] == "NAMESPACE"
    assert [line.split()[0] for line in wide[1:3]] == ["growth", "ml"]  # sorted by namespace, name


# -------------------------------------------------------------------------------------------- errors


def api_error(status: int, body: dict[str, Any] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body or {})
    return exc


def session() -> Session:
    return Session(api=None, namespace="ml", kube_user="admin", context="local", host="https://k")


def raiser(exc: Exception) -> Any:
    def fn(*_: Any, **__: Any) -> Any:
        raise exc

    return fn


@pytest.mark.parametrize(
    ("status", "body", "verb", "message"),
    [
        (403, {}, "patch", "forbidden: you need patch on modeldeployments.canaria.dev in ml"),
        (403, {}, "get", "forbidden: you need get on modeldeployments.canaria.dev in ml"),
        (
            401,
            {},
            "get",
            "unauthorized: the API server at https://k rejected the credentials of context local",
        ),
        (
            404,
            {"message": "the server could not find the requested resource"},
            "get",
            "the ModelDeployment API (modeldeployments.canaria.dev) is not installed",
        ),
        (
            422,
            {"message": "spec.model.version: Invalid value"},
            "patch",
            "the API server refused to patch modeldeployments.canaria.dev in ml: "
            "spec.model.version: Invalid value (422)",
        ),
    ],
)
def test_api_errors_become_one_line(status: int, body: dict[str, Any], verb: str, message: str) -> None:
    with pytest.raises(CtlError) as caught:
        session().call(verb, RESOURCE, "ml", raiser(api_error(status, body)))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_unknown_resource_is_not_found_in_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    body = {"message": 'modeldeployments.canaria.dev "nope" not found', "details": {"name": "nope"}}
    monkeypatch.setattr(client.CustomObjectsApi, "get_namespaced_custom_object", raiser(api_error(404, body)))
    with pytest.raises(CtlError, match=r"^modeldeployment nope not found in namespace ml$"):
        session().get("nope")


def test_cli_errors_are_one_line_on_stderr_with_exit_code_1(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["status", "fraud", "--kubeconfig", str(tmp_path / "missing")])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: no kubeconfig at ")


def test_kubeconfig_context_gives_namespace_and_user(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [
                    {"name": "alice-admin", "user": {"token": "t"}},
                    {"name": "bob", "user": {"token": "u"}},
                ],
                "contexts": [
                    {"name": "prod", "context": {"cluster": "c", "user": "alice-admin", "namespace": "ml"}},
                    {"name": "dev", "context": {"cluster": "c", "user": "bob"}},
                ],
                "current-context": "prod",
            }
        )
    )
    monkeypatch.setenv("USER", "alice")
    prod = Session.open(str(kubeconfig), None, None)
    assert (prod.namespace, prod.default_user(), prod.context) == ("ml", "alice@alice-admin", "prod")
    dev = Session.open(str(kubeconfig), "dev", None)
    assert (dev.namespace, dev.default_user()) == ("default", "alice@bob")
    assert Session.open(str(kubeconfig), "dev", "other").namespace == "other"
    with pytest.raises(CtlError, match="context nope not found"):
        Session.open(str(kubeconfig), "nope", None)


def test_status_shows_what_is_kept_warm_and_until_when() -> None:
    world = healthy_world(rollout={"keepPrevious": {"for": "30m", "replicas": 2}})
    world.release("v2")
    world.run_until(lambda w: w.stable == "v2" and w.status.warm is not None, step=5)
    out = text(render_status(res(world), world.now))
    until = world.status.warm.until.strftime("%Y-%m-%d %H:%M:%S")
    assert f"warm           v1       s3://models/fraud/v1  2 replicas ready, no traffic, until {until}" in out


def test_status_shows_the_smoke_test_verdict_with_exit_code_and_output() -> None:
    container = {"name": "t", "image": "curl", "command": ["t"]}
    world = healthy_world(rollout={"smokeTest": {"template": {"spec": {"containers": [container]}}}})
    world.smoke_exit["v2"] = 3
    world.release("v2")
    world.run_until(lambda w: w.phase == "Failed", step=1, limit=120)
    out = text(render_status(res(world), world.now))
    assert "smoke test before traffic: v2 Failed (job job-v2-1, exit code 3 (Error): GET /predict" in out
    assert "rejected       v2       SmokeTestFailed: " in out
    assert "next: refused by its smoke test: spec still names v2" in out
