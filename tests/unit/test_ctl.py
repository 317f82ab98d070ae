"""The client side of the day-2 commands: pure rendering, preconditions, patch bodies, rollback targets,
the merged audit trail and the one-line errors, all from sample resource dicts (no cluster)."""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from canaria.cli import ctl
from canaria.cli import main as cli
from canaria.core.commands import COMMAND_ANNOTATION, new_command, parse_command

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
UID = "0a1b2c3d-0000-4000-8000-000000000000"


def ts(seconds: float) -> str:
    """A timestamp `seconds` relative to NOW, as the API server writes it."""
    return (NOW + timedelta(seconds=seconds)).isoformat()


def lineage(version: str) -> dict[str, str]:
    return {"codeCommit": f"c0ffee-{version}", "dataset": "snapshot-1", "trainingRun": f"run-{version}"}


def ref(version: str, since: float = -3600) -> dict[str, Any]:
    return {
        "version": version,
        "uri": f"s3://models/fraud/{version}",
        "lineage": lineage(version),
        "since": ts(since),
    }


def history(*rows: tuple[str | None, str, str, str], user: str | None = None) -> list[dict[str, Any]]:
    """(from, to, reason, version) rows, one minute apart, ending 10 minutes ago."""
    start = -600 - 60 * len(rows)
    return [
        {
            "seq": i + 1,
            "time": ts(start + 60 * i),
            "from": frm,
            "to": to,
            "reason": reason,
            "version": version,
            "message": f"{reason} {version}",
            **({"user": user} if user else {}),
        }
        for i, (frm, to, reason, version) in enumerate(rows)
    ]


HEALTHY_V1 = [(None, "Progressing", "RolloutStarted", "v1"), ("Progressing", "Healthy", "Available", "v1")]
V2_STARTED = [("Healthy", "Progressing", "RolloutStarted", "v2")]


def md(
    version: str = "v2",
    status: dict[str, Any] | None = None,
    *,
    steps: list[dict[str, Any]] | None = None,
    metrics: bool = True,
    bake: str | None = None,
    paused: bool = False,
    annotations: dict[str, str] | None = None,
    generation: int = 2,
) -> dict[str, Any]:
    rollout: dict[str, Any] = {
        "steps": steps or [{"weight": 10, "pause": "5m"}, {"weight": 50, "manual": True}, {"weight": 100}],
        "progressDeadline": "10m",
        "analysis": {
            "interval": "1m",
            "failureLimit": 1,
            "inconclusiveLimit": 2,
            "metrics": [{"name": "error-rate", "query": "q", "max": 0.01}] if metrics else [],
        },
    }
    if bake:
        rollout["bake"] = bake
    return {
        "apiVersion": "canaria.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": UID,
            "generation": generation,
            "creationTimestamp": ts(-2 * 3600 - 300),
            "annotations": annotations or {},
        },
        "spec": {
            "model": {
                "name": "fraud",
                "version": version,
                "uri": f"s3://models/fraud/{version}",
                "lineage": lineage(version),
                "evaluation": {"auc": 0.94},
            },
            "replicas": 4,
            "paused": paused,
            "rollout": rollout,
        },
        "status": {"observedGeneration": generation, **(status or {})},
    }


def canary(
    step: int = 0, weight: int = 10, *, ready: float | None = -60, started: float = -90
) -> dict[str, Any]:
    out = {**ref("v2", since=started), "step": step, "weight": weight, "stepStartedAt": ts(started)}
    if ready is not None:
        out["readyAt"] = ts(ready)
    return out


def progressing(step: int = 0, weight: int = 10, **kw: Any) -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "message": f"fraud v1 → v2: step {step + 1}/3 at weight {weight}",
        "stable": ref("v1"),
        "lastKnownGood": ref("v1"),
        "canary": canary(step, weight, **kw),
        "analysis": {
            "failures": 0,
            "inconclusive": 0,
            "lastRunAt": ts(-40),
            "verdict": "Pass",
            "results": [
                {"name": "error-rate", "verdict": "Pass", "value": 0.0021, "max": 0.01, "query": "q"},
                {"name": "cost", "verdict": "Fail", "value": 0.5, "max": 0.002, "dryRun": True},
            ],
        },
        "history": history(*HEALTHY_V1, *V2_STARTED),
    }


def healthy(version: str = "v1", rows: list[tuple[Any, ...]] | None = None) -> dict[str, Any]:
    return {
        "phase": "Healthy",
        "message": f"fraud {version} is serving",
        "stable": ref(version),
        "lastKnownGood": ref(version),
        "history": history(*(rows or HEALTHY_V1)),
    }


def reverted() -> dict[str, Any]:
    return {
        "phase": "Reverted",
        "message": "fraud reverted v2 → v1 (AnalysisFailed): error-rate=0.2; the spec still names v2",
        "stable": ref("v1", since=-30),
        "lastKnownGood": ref("v1"),
        "rejected": {"version": "v2", "reason": "AnalysisFailed", "message": "error-rate=0.2", "at": ts(-30)},
        "history": history(*HEALTHY_V1, *V2_STARTED, ("Progressing", "Reverted", "RolledBack", "v1")),
    }


def text(renderable: Any, width: int = 220) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


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
    assert ctl.fmt_age(seconds) == age


# ---------------------------------------------------------------------------------------- next step


def nxt(resource: dict[str, Any], now: datetime = NOW) -> str:
    return ctl.next_step(resource, now)


def test_next_without_status_asks_for_the_operator() -> None:
    resource = md("v1")
    resource["status"] = {}
    assert "waiting for the operator" in nxt(resource)


def test_next_waits_for_an_unready_canary_with_its_deadline() -> None:
    text_ = nxt(md(status=progressing(ready=None, started=-90)))
    assert text_ == (
        "waiting for canary v2 to be ready at step 1/3 (weight 10%); reverted if not ready by 12:08:30"
    )


def test_next_shows_the_hold_of_a_paused_step_and_the_next_analysis() -> None:
    assert nxt(md(status=progressing())) == (
        "step 1/3 holds until 12:04:00 (in 4m); next analysis in 20s; then step 2/3 at weight 50%"
    )


def test_next_names_the_promote_command_on_a_manual_step() -> None:
    assert nxt(md(status=progressing(step=1, weight=50))).startswith(
        "step 2/3 holds until `canaria promote fraud`; next analysis in 20s; then step 3/3 at weight 100%"
    )


def test_next_on_the_last_step_says_promotion_and_bake() -> None:
    resource = md(status=progressing(step=2, weight=100, ready=-400), bake="30m", metrics=False)
    assert nxt(resource) == "step 3/3 is done; then v2 is promoted and bakes 30m"


def test_next_after_the_pause_waits_for_a_passing_analysis() -> None:
    assert nxt(md(status=progressing(ready=-400))).startswith("step 1/3 waits for a passing analysis")


def test_next_when_paused_by_command_or_by_spec() -> None:
    status = {**progressing(), "phase": "Paused", "controlPaused": True}
    assert nxt(md(status=status)) == (
        "paused by a command: `canaria resume fraud` continues, `canaria abort fraud` reverts to v1"
    )
    status = {**progressing(), "phase": "Paused"}
    assert nxt(md(status=status, paused=True)).startswith("paused by spec.paused")


def test_next_after_a_revert_says_the_spec_still_names_the_bad_version() -> None:
    assert nxt(md(status=reverted())) == (
        "reverted: spec still names v2; v1 keeps serving; change the spec (or `canaria rollback fraud`) "
        "or `canaria retry fraud`"
    )


def test_next_after_a_gate_refusal() -> None:
    status = {
        **healthy(),
        "phase": "Failed",
        "rejected": {"version": "v2", "reason": "GateFailed", "message": "auc", "at": ts(-1)},
    }
    assert nxt(md(status=status)).startswith("refused by gates: spec still names v2")


def test_next_while_baking() -> None:
    status = {
        **healthy("v2"),
        "phase": "Baking",
        "lastKnownGood": ref("v1"),
        "bakeStartedAt": ts(-600),
        "analysis": {"lastRunAt": ts(-50), "verdict": "Pass"},
    }
    assert nxt(md(status=status, bake="30m")) == (
        "baking v2 until 12:20:00 (in 20m); next analysis in 10s; a failure reverts to v1"
    )


def test_next_when_healthy_and_when_the_operator_lags() -> None:
    assert nxt(md("v1", healthy())).startswith("nothing to do: v1 is serving")
    lagging = md("v1", healthy(), generation=3)
    lagging["status"]["observedGeneration"] = 2
    assert nxt(lagging).startswith("the operator has not acted on generation 3 yet (saw 2); nothing to do")


def test_next_mentions_a_command_the_operator_has_not_handled() -> None:
    command = new_command("pause", user="alice", reason=None)
    resource = md(status=progressing(), annotations={COMMAND_ANNOTATION: command.to_annotation()})
    assert nxt(resource).startswith(f"command pause ({command.id}) waits for the operator; ")
    resource["status"]["lastCommand"] = {"id": command.id, "action": "pause", "result": "paused"}
    assert not nxt(resource).startswith("command")


# ------------------------------------------------------------------------------------------ commands


@pytest.mark.parametrize(
    ("action", "resource", "message"),
    [
        ("promote", md("v1", healthy()), "no rollout in progress: fraud is Healthy, serving v1"),
        ("abort", md("v1", healthy()), "no rollout in progress: fraud is Healthy, serving v1"),
        ("pause", md("v1", healthy()), "no rollout in progress: fraud is Healthy, serving v1"),
        ("promote", md("v1", {}), "no rollout in progress: fraud is not reconciled yet"),
        ("resume", md(status=progressing()), "nothing paused: fraud is Progressing, serving v1"),
        (
            "resume",
            md(status={**progressing(), "phase": "Paused"}, paused=True),
            "fraud is held by spec.paused, not by a command: set spec.paused to false",
        ),
        ("retry", md("v1", healthy()), "nothing rejected: fraud is Healthy, serving v1"),
        (
            "retry",
            md("v3", reverted()),
            "nothing to retry: the rejected version v2 is no longer named by the spec (v3)",
        ),
        (
            "pause",
            md(status={**progressing(), "phase": "Paused", "controlPaused": True}),
            "fraud is already paused by a command",
        ),
        (
            "promote",
            md(status={**progressing(), "phase": "Paused", "controlPaused": True}),
            "fraud is paused by a pause command: resume it first, then promote",
        ),
        (
            "promote",
            md(status=progressing(ready=None)),
            "canary v2 is not ready yet at step 1/3 (weight 10%): a promote now would be dropped",
        ),
    ],
)
def test_command_preconditions(action: str, resource: dict[str, Any], message: str) -> None:
    with pytest.raises(ctl.CtlError) as caught:
        ctl.check_command(action, resource)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("promote", md(status=progressing())),
        ("abort", md(status=progressing())),
        ("pause", md(status=progressing())),
        (
            "abort",
            md(
                status={
                    **healthy("v2"),
                    "phase": "Baking",
                    "lastKnownGood": ref("v1"),
                    "bakeStartedAt": ts(-5),
                }
            ),
        ),
        (
            "promote",
            md(
                status={
                    **healthy("v2"),
                    "phase": "Baking",
                    "lastKnownGood": ref("v1"),
                    "bakeStartedAt": ts(-5),
                }
            ),
        ),
        ("resume", md(status={**progressing(), "phase": "Paused", "controlPaused": True})),
        ("abort", md(status={**progressing(), "phase": "Paused", "controlPaused": True})),
        ("retry", md(status=reverted())),
    ],
)
def test_commands_allowed(action: str, resource: dict[str, Any]) -> None:
    ctl.check_command(action, resource)


def test_a_pending_command_blocks_another_unless_forced() -> None:
    first = new_command("pause", user="alice", reason=None)
    resource = md(status=progressing(), annotations={COMMAND_ANNOTATION: first.to_annotation()})
    with pytest.raises(ctl.CtlError, match=f"a pause command \\({first.id}\\) on fraud still waits"):
        ctl.check_command("abort", resource)
    ctl.check_command("abort", resource, force=True)


def test_command_patch_carries_who_why_and_full() -> None:
    command = new_command("promote", user="alice@admin", reason="dashboards green", full=True, now=NOW)
    patch = ctl.command_patch(command.to_annotation())
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
    assert parsed.issued_at == NOW.isoformat()


# ----------------------------------------------------------------------------------------- rollback


def test_rollback_defaults_to_the_last_known_good_version() -> None:
    target = ctl.rollback_target(md(status=reverted()))
    assert (target.version, target.uri, target.lineage) == ("v1", "s3://models/fraud/v1", lineage("v1"))
    assert "last known good" in target.note


def test_rollback_while_healthy_defaults_to_the_previous_healthy_version() -> None:
    rows = [
        *HEALTHY_V1,
        ("Healthy", "Progressing", "RolloutStarted", "v2"),
        ("Progressing", "Healthy", "Promoted", "v2"),
    ]
    resource = md("v2", healthy("v2", rows))
    deployments = {"v1": {"uri": "s3://models/fraud/v1", "lineage": lineage("v1")}}
    target = ctl.rollback_target(resource, deployments=deployments)
    assert target.version == "v1" and target.uri == "s3://models/fraud/v1"
    assert target.note == (
        "v2 is the last known good version: defaulting to v1, the previous healthy version"
    )


def test_rollback_while_healthy_without_an_earlier_version_is_an_error() -> None:
    with pytest.raises(ctl.CtlError, match="nothing to roll back to: v1 is the last known good version"):
        ctl.rollback_target(md("v1", healthy()))


def test_rollback_to_a_version_not_in_history() -> None:
    with pytest.raises(ctl.CtlError) as caught:
        ctl.rollback_target(md(status=reverted()), to="v9")
    assert str(caught.value) == "version v9 not in the history of fraud (known: v1, v2)"


def test_rollback_to_the_version_the_spec_names() -> None:
    with pytest.raises(ctl.CtlError, match="already names v2"):
        ctl.rollback_target(md(status=reverted()), to="v2")


def test_rollback_to_an_old_version_finds_its_uri_on_the_deployment_or_asks_for_it() -> None:
    rows = [
        *HEALTHY_V1,
        ("Healthy", "Progressing", "RolloutStarted", "v2"),
        ("Progressing", "Healthy", "Promoted", "v2"),
    ]
    resource = md("v3", {**healthy("v2", rows)})
    with pytest.raises(ctl.CtlError, match=r"the URI of v1 is not recorded .*: pass --uri"):
        ctl.rollback_target(resource, to="v1")
    found = ctl.rollback_target(resource, to="v1", deployments={"v1": {"uri": "gs://v1", "lineage": None}})
    assert (found.version, found.uri, found.lineage) == ("v1", "gs://v1", None)
    given = ctl.rollback_target(resource, to="v1", uri="s3://elsewhere/v1")
    assert given.uri == "s3://elsewhere/v1"


def test_rollback_patch_and_the_yaml_to_commit() -> None:
    resource = md(status=reverted())
    target = ctl.rollback_target(resource)
    patch = ctl.rollback_patch(target, "v2 misroutes EU traffic")
    assert patch == {
        "metadata": {"annotations": {"canaria.dev/change-reason": "v2 misroutes EU traffic"}},
        "spec": {"model": {"version": "v1", "uri": "s3://models/fraud/v1", "lineage": lineage("v1")}},
    }
    unknown = ctl.RollbackTarget("v0", "s3://v0", None, "")
    assert ctl.rollback_patch(unknown, "r")["spec"]["model"]["lineage"] is None  # merge patch: removed
    block = yaml.safe_load(ctl.model_block_yaml(resource, target))
    assert block["spec"]["model"]["version"] == "v1"
    assert block["spec"]["model"]["uri"] == "s3://models/fraud/v1"
    assert block["spec"]["model"]["lineage"] == lineage("v1")
    assert block["spec"]["model"]["name"] == "fraud"
    assert "lineage" not in yaml.safe_load(ctl.model_block_yaml(resource, unknown))["spec"]["model"]


# ------------------------------------------------------------------------------------------ history


def event(
    key: str,
    reason: str,
    message: str,
    *,
    at: float,
    type_: str = "Normal",
    uid: str = UID,
    version: str = "v2",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"fraud.{uid[:8]}.{key}",
            "namespace": "ml",
            "annotations": {"canaria.dev/version": version},
            "creationTimestamp": ts(at),
        },
        "involvedObject": {"kind": "ModelDeployment", "name": "fraud", "uid": uid},
        "reason": reason,
        "message": message,
        "type": type_,
        "eventTime": ts(at),
    }


def test_history_merges_status_and_events_without_duplicates() -> None:
    resource = md(status=reverted())
    status_history = resource["status"]["history"]
    revert_at = status_history[-1]["time"]
    revert_ms = int(datetime.fromisoformat(revert_at).timestamp() * 1000)
    events = [
        # the transitions' own Events: same seq, not shown twice
        *(event(str(h["seq"]), h["reason"], h["message"], at=-1) for h in status_history),
        # analysis runs: only Events; the run's time is in the name, before the revert it caused
        event(
            f"analysis-{revert_ms - 30_000}",
            "AnalysisFail",
            "fraud v2: error-rate=0.2 (1 in a row, limit 1)",
            at=-5,
            type_="Warning",
        ),
        event(
            f"analysis-{revert_ms}",
            "AnalysisFail",
            "fraud v2: error-rate=0.3 (2 in a row, limit 1)",
            at=-4,
            type_="Warning",
        ),
        # an older object of the same name: left out
        event("1", "RolloutStarted", "old", at=-9000, uid="ffffffff-0000"),
    ]
    entries = ctl.merge_history(resource, events)
    assert [e["reason"] for e in entries] == [
        "RolloutStarted",
        "Available",
        "RolloutStarted",
        "AnalysisFail",
        "AnalysisFail",
        "RolledBack",
    ]
    assert [e["source"] for e in entries if e["seq"]] == ["status+event"] * 4
    assert entries[-1]["type"] == "Normal" and entries[3]["type"] == "Warning"


def test_history_keeps_transitions_only_in_events_and_parses_who_and_why() -> None:
    resource = md(status={**healthy(), "history": []})  # e.g. beyond the status' bounded history
    message = (
        "fraud reverted v2 → v1 (Aborted): aborted: p99; the spec still names v2 (change reason: retrained) "
        "[by alice@admin]; owner: ml-team@example.com"
    )
    entries = ctl.merge_history(
        resource, [event("7", "Aborted", message, at=-10, type_="Warning", version="v1")]
    )
    (entry,) = entries
    assert entry["seq"] == 7 and entry["source"] == "event" and entry["version"] == "v1"
    assert entry["user"] == "alice@admin" and entry["changeReason"] == "retrained"
    assert entry["message"] == "fraud reverted v2 → v1 (Aborted): aborted: p99; the spec still names v2"


def test_history_attaches_the_last_commands_reason_to_its_transition() -> None:
    status = progressing(step=1, weight=50)
    status["history"].append(
        {
            "seq": 4,
            "time": ts(-5),
            "from": "Progressing",
            "to": "Progressing",
            "reason": "StepAdvanced",
            "version": "v2",
            "message": "fraud v2: step 2/3 at weight 50 (promoted by alice)",
            "user": "alice",
        }
    )
    status["lastCommand"] = {
        "id": "abc",
        "action": "promote",
        "user": "alice",
        "reason": "dashboards green",
        "at": ts(-5),
        "result": "promote requested",
    }
    entries = ctl.merge_history(md(status=status), [])
    assert entries[-1]["commandReason"] == "dashboards green"
    assert "commandReason" not in entries[0]
    rendered = text(ctl.render_history(entries))
    assert "dashboards green" in rendered and "alice" in rendered and "Progressing → Progressing" in rendered


# ------------------------------------------------------------------------------------------- render


def test_status_renders_versions_lineage_step_analysis_and_next() -> None:
    status = progressing()
    status["lastCommand"] = {
        "id": "abc",
        "action": "resume",
        "user": "bob@admin",
        "reason": "all clear",
        "at": ts(-100),
        "result": "resumed",
    }
    out = text(ctl.render_status(md(status=status), NOW))
    for needle in (
        "fraud  namespace ml  phase Progressing",
        "desired          v2  s3://models/fraud/v2",
        "step 1/3 (weight 10%), started 11:58:30, ready since 11:59:00",
        "stable         v1       s3://models/fraud/v1  code c0ffee-v1, data snapshot-1, run run-v1",
        "canary         v2",
        "lastKnownGood  v1",
        "analysis: last run 2026-01-15 11:59:20 Pass  (failures 0/1, inconclusive 0/2 in a row)",
        "error-rate      0.0021  <= 0.01    Pass",
        "cost (dry run)  0.5     <= 0.002   Fail",
        'last command: resume by bob@admin ("all clear") at 2026-01-15 11:58:20 → resumed',
        "next: step 1/3 holds until 12:04:00 (in 4m)",
    ):
        assert needle in out, f"{needle!r} not in:\n{out}"


def test_status_shows_the_rejected_version_and_what_to_do() -> None:
    out = text(ctl.render_status(md(status=reverted()), NOW, prog="kubectl canaria"))
    assert "phase Reverted" in out
    assert "rejected       v2       AnalysisFailed: error-rate=0.2" in out
    assert "next: reverted: spec still names v2" in out and "`kubectl canaria retry fraud`" in out


def test_status_of_a_resource_without_metrics_or_status() -> None:
    resource = md("v1", metrics=False)
    resource["status"] = {}
    out = text(ctl.render_status(resource, NOW))
    assert "analysis: no metrics" in out and "phase -" in out and "waiting for the operator" in out


def test_status_document_for_machines() -> None:
    doc = ctl.status_document(md(status=progressing(step=1, weight=50)), NOW)
    assert doc["step"] == {"index": 2, "of": 3, "weight": 50}
    assert doc["desired"]["version"] == "v2" and doc["phase"] == "Progressing"
    assert doc["status"]["canary"]["version"] == "v2" and doc["next"].startswith("step 2/3 holds")
    json.dumps(doc)


def test_list_renders_one_line_per_model_deployment() -> None:
    other = md("v1", healthy())
    other["metadata"] = {**other["metadata"], "name": "churn", "namespace": "growth"}
    items = [md(status=progressing(step=1, weight=50)), other]
    out = text(ctl.render_list(items, NOW)).splitlines()
    assert out[0].split() == ["NAME", "PHASE", "DESIRED", "STABLE", "CANARY", "WEIGHT", "AGE"]
    assert out[1].split() == ["churn", "Healthy", "v1", "v1", "-", "-", "125m"]
    assert out[2].split() == ["fraud", "Progressing", "v2", "v1", "v2", "50%", "(2/3)", "125m"]
    wide = text(ctl.render_list(items, NOW, all_namespaces=True)).splitlines()
    assert wide[0].split()[0] == "NAMESPACE"
    assert [line.split()[0] for line in wide[1:3]] == ["growth", "ml"]  # sorted by namespace, name


# -------------------------------------------------------------------------------------------- errors


def api_error(status: int, body: dict[str, Any] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body or {})
    return exc


def session() -> ctl.Session:
    return ctl.Session(api=None, namespace="ml", kube_user="admin", context="local", host="https://k")


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
    with pytest.raises(ctl.CtlError) as caught:
        session().call(verb, ctl.RESOURCE, "ml", raiser(api_error(status, body)))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_unknown_resource_is_not_found_in_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    body = {"message": 'modeldeployments.canaria.dev "nope" not found', "details": {"name": "nope"}}
    monkeypatch.setattr(client.CustomObjectsApi, "get_namespaced_custom_object", raiser(api_error(404, body)))
    with pytest.raises(ctl.CtlError, match=r"^modeldeployment nope not found in namespace ml$"):
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
    prod = ctl.Session.open(str(kubeconfig), None, None)
    assert (prod.namespace, prod.default_user(), prod.context) == ("ml", "alice@alice-admin", "prod")
    dev = ctl.Session.open(str(kubeconfig), "dev", None)
    assert (dev.namespace, dev.default_user()) == ("default", "alice@bob")
    assert ctl.Session.open(str(kubeconfig), "dev", "other").namespace == "other"
    with pytest.raises(ctl.CtlError, match="context nope not found"):
        ctl.Session.open(str(kubeconfig), "nope", None)


def test_history_rendering_copes_with_sparse_entries() -> None:
    entries = [{"time": None, "reason": "Error", "message": "kopf: boom [not markup]"}]
    assert "kopf: boom [not markup]" in text(ctl.render_history(copy.deepcopy(entries)))
