"""The sandbox's story: v1 deployed, v2 promoted through its canary steps, v3 reverted to v2.

The three ModelDeployments come from ``manifests/examples/`` (01-first-deployment, 02-canary-upgrade,
03-bad-version) when they are there, else from equivalent bodies built here. Either way the story runs
an in-memory copy whose waits are shortened so that it ends within a minute, and says what it changed:
the analysis interval, step pauses, bake and progress deadline, and the rate windows of the queries
(a [1m] rate over a 1 s scrape would lag the story by a minute). Thresholds are never changed: the
revert happens because v3's simulated error rate is above the example's own bound.

While it plays, a live panel (on a terminal) shows each act's progress (traffic on the new version),
the phase, the replica and traffic split and the latest analysis against its thresholds; every
transition and every change of analysis verdict is printed as a timeline line. At the end come the
Event audit trail (read back from the API, as ``kubectl get events`` would) and a one-screen summary.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from canaria import GROUP, KIND, PLURAL, VERSION
from canaria.core.api import Condition, ModelDeployment, conditions_summary
from canaria.core.durations import parse_duration

FIELD_MANAGER = "sandbox-story"
#: The story's own namespace, so that `kubectl apply -f manifests/examples/...` in the user's namespace
#: (the kubeconfig's, `default`) makes a ModelDeployment of their own instead of clashing with it.
STORY_NAMESPACE = "canaria-sandbox"
EXAMPLE_FILES = ("01-first-deployment.yaml", "02-canary-upgrade.yaml", "03-bad-version.yaml")

# What the sandbox shortens, in memory only.
ANALYSIS_INTERVAL = "1s"
STEP_PAUSE = "2s"
BAKE = "3s"
PROGRESS_DEADLINE = "30s"
RATE_WINDOW = "[10s]"
MIN_INCONCLUSIVE_LIMIT = 5  # a new version has no rate() for ~2 s of 1 s scrapes (more on a loaded machine)

#: How the simulated model server behaves per act: v1 and v2 healthy, v3 failing 12% of requests.
HEALTHY = {"error_rate": 0.002, "latency": 0.08, "psi": 0.03}
BETTER = {"error_rate": 0.001, "latency": 0.07, "psi": 0.02}
BAD = {"error_rate": 0.12, "latency": 0.09, "psi": 0.09}

_WINDOW = re.compile(r"\[(?:\d+(?:ms|s|m|h|d|w|y))+\]|\[\s*\{\{\s*interval\s*\}\}\s*\]")
_FAILED_RUNS = re.compile(r"\((\d+) failed runs, limit (\d+)\)")
_STEP_WEIGHT = re.compile(r"step \d+/\d+ at weight (\d+)")
_PHASE_STYLE = {
    "Healthy": "green",
    "Progressing": "cyan",
    "Baking": "cyan",
    "Paused": "yellow",
    "Pending": "dim",
    "Reverted": "bold red",
    "Failed": "bold red",
}


# ----------------------------------------------------------------------------------------- script


@dataclass
class Act:
    title: str
    body: dict[str, Any]
    version: str
    expect: str  # "healthy", "promoted" or "reverted"
    simulated: dict[str, float]


@dataclass
class Script:
    name: str
    namespace: str
    source: str
    acts: list[Act]
    shortened: list[str]


#: The examples' smoke test: the version's own Service answers (a real test would call the model). Run
#: by the sandbox as a local process (python3), in a cluster by the Job's image.
SMOKE_TEST: dict[str, Any] = {
    "timeout": "1m",
    "template": {
        "spec": {
            "containers": [
                {
                    "name": "smoke",
                    "image": "python:3.12-slim",
                    "command": [
                        "python3",
                        "-c",
                        "import os, urllib.request; "
                        "urllib.request.urlopen(os.environ['TARGET_URL'] + '/metrics', timeout=10); "
                        "print(os.environ['MODEL_VERSION'], 'answers at', os.environ['TARGET_URL'])",
                    ],
                }
            ]
        }
    },
}


def builtin_bodies() -> list[dict[str, Any]]:
    """Three ModelDeployments as a team would write them (production waits; the sandbox shortens them)."""

    def body(version: str, reason: str, auc: float, run: str, commit: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": "fraud",
                "annotations": {"canaria.dev/change-reason": reason},
            },
            "spec": {
                "model": {
                    "name": "fraud",
                    "version": version,
                    "uri": f"s3://models/fraud/{version}",
                    "lineage": {
                        "codeCommit": commit,
                        "dataset": "transactions snapshot 2026-01",
                        "trainingRun": run,
                        "featureSchema": "v3",
                    },
                    "evaluation": {"auc": auc},
                    "owner": "fraud-team@example.com",
                    "intendedUse": "card-present fraud scoring",
                },
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "ghcr.io/example/model-server:1.4",
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                            }
                        ]
                    }
                },
                "replicas": 4,
                "service": {"port": 80, "targetPort": 8080},
                "gates": [{"metric": "auc", "min": 0.93}],
                "rollout": {
                    "steps": [
                        {"weight": 25, "pause": "5m"},
                        {"weight": 50, "pause": "10m"},
                        {"weight": 100},
                    ],
                    "analysis": {
                        "interval": "1m",
                        "failureLimit": 1,
                        "inconclusiveLimit": 3,
                        "metrics": [
                            {
                                "name": "error-rate",
                                "query": 'sum(rate(http_requests_total{service="{{service}}",'
                                'version="{{version}}",code=~"5.."}[5m])) / '
                                'sum(rate(http_requests_total{service="{{service}}",version="{{version}}"}[5m]))',
                                "max": 0.01,
                            },
                            {
                                "name": "p95-latency",
                                "query": "histogram_quantile(0.95, sum by (le) (rate("
                                'http_request_duration_seconds_bucket{service="{{service}}",'
                                'version="{{version}}"}[5m])))',
                                "max": 0.25,
                            },
                            {
                                "name": "prediction-drift",
                                "query": "max(model_prediction_psi"
                                '{service="{{service}}",version="{{version}}"})',
                                "max": 0.2,
                            },
                        ],
                    },
                    "bake": "30m",
                    "smokeTest": copy.deepcopy(SMOKE_TEST),
                },
            },
        }

    return [
        body("v1", "first model for card-present fraud", 0.941, "run-812", "1a2b3c4"),
        body("v2", "retrained on February data", 0.948, "run-840", "5d6e7f8"),
        body("v3", "new merchant-category features", 0.951, "run-877", "9a8b7c6"),
    ]


def _repo_examples() -> Path | None:
    """manifests/examples/ of a source checkout (the package lives in <repo>/operator/canaria)."""
    candidate = Path(__file__).resolve().parents[3] / "manifests" / "examples"
    return candidate if candidate.is_dir() else None


def _read_examples(directory: Path) -> list[dict[str, Any]] | str:
    """The three example ModelDeployments, or why they cannot be used."""
    bodies = []
    for filename in EXAMPLE_FILES:
        path = directory / filename
        if not path.is_file():
            return f"{path} is missing"
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            return f"{path} is not YAML: {exc}"
        mds = [d for d in docs if d.get("kind") == KIND]
        if len(mds) != 1:
            return f"{path} holds {len(mds)} ModelDeployments, expected one"
        bodies.append(mds[0])
    return bodies


def _note(notes: dict[str, set[str]], what: str, old: Any) -> None:
    notes.setdefault(what, set()).add(str(old))


def shorten(body: dict[str, Any], notes: dict[str, set[str]]) -> dict[str, Any]:
    """An in-memory copy with sandbox waits; ``notes`` collects what was changed from what."""
    body = copy.deepcopy(body)
    spec = body.setdefault("spec", {})
    rollout = spec.get("rollout") or {}
    analysis = rollout.get("analysis") or {}
    if (analysis.get("metrics") or "interval" in analysis) and analysis.get(
        "interval", "1m"
    ) != ANALYSIS_INTERVAL:
        _note(notes, f"analysis interval → {ANALYSIS_INTERVAL}", analysis.get("interval", "1m"))
        analysis["interval"] = ANALYSIS_INTERVAL
    for step in rollout.get("steps") or []:
        if step.pop("manual", None):
            _note(notes, f"step pauses → {STEP_PAUSE}", "manual")
            step["pause"] = STEP_PAUSE
        elif "pause" in step and step["pause"] != STEP_PAUSE:
            _note(notes, f"step pauses → {STEP_PAUSE}", step["pause"])
            step["pause"] = STEP_PAUSE
    if rollout.get("bake") and parse_duration(rollout["bake"]) > parse_duration(BAKE):
        _note(notes, f"bake → {BAKE}", rollout["bake"])
        rollout["bake"] = BAKE
    deadline = rollout.get("progressDeadline", "10m")
    if parse_duration(deadline) > parse_duration(PROGRESS_DEADLINE):
        _note(notes, f"progress deadline → {PROGRESS_DEADLINE}", deadline)
        rollout["progressDeadline"] = PROGRESS_DEADLINE
    if analysis.get("metrics") and analysis.get("inconclusiveLimit", 2) < MIN_INCONCLUSIVE_LIMIT:
        _note(notes, f"inconclusiveLimit → {MIN_INCONCLUSIVE_LIMIT}", analysis.get("inconclusiveLimit", 2))
        analysis["inconclusiveLimit"] = MIN_INCONCLUSIVE_LIMIT
    for metric in analysis.get("metrics") or []:
        for window in _WINDOW.findall(metric.get("query", "")):
            if window != RATE_WINDOW:
                _note(notes, f"query windows → {RATE_WINDOW}", window.replace(" ", ""))
        metric["query"] = _WINDOW.sub(RATE_WINDOW, metric.get("query", ""))
    prometheus = spec.get("prometheus") or {}
    if prometheus.get("address") or prometheus.get("bearerTokenSecretRef") or prometheus.get("tls"):
        _note(notes, "Prometheus → the sandbox's (127.0.0.1)", prometheus.get("address") or "custom")
        spec.pop("prometheus", None)
    return body


def load_script(examples: Path | None = None) -> Script:
    """The story's three acts, from the examples when usable, else built in; always shortened."""
    directory = examples if examples is not None else _repo_examples()
    if directory is None and (Path.cwd() / "manifests" / "examples").is_dir():
        directory = Path.cwd() / "manifests" / "examples"  # an installed package run from a checkout
    source = "built-in ModelDeployments (equivalent to manifests/examples/)"
    bodies: list[dict[str, Any]] | str = "no manifests/examples/ directory"
    if directory is not None:
        bodies = _read_examples(directory)
        if not isinstance(bodies, str):
            source = f"{directory}/{{{','.join(EXAMPLE_FILES)}}}"
    fallback_reason = bodies if isinstance(bodies, str) else None
    if isinstance(bodies, str):
        bodies = builtin_bodies()
    notes: dict[str, set[str]] = {}
    short = [shorten(b, notes) for b in bodies]
    problem = _unusable(short)
    if problem and fallback_reason is None:
        fallback_reason = f"the examples do not tell the story: {problem}"
        source = "built-in ModelDeployments (equivalent to manifests/examples/)"
        notes = {}
        short = [shorten(b, notes) for b in builtin_bodies()]
    name = short[0]["metadata"]["name"]
    namespace = short[0]["metadata"].get("namespace") or STORY_NAMESPACE
    for b in short:
        b["metadata"]["namespace"] = namespace
    versions = [b["spec"]["model"]["version"] for b in short]
    acts = [
        Act(f"{versions[0]}: first deployment", short[0], versions[0], "healthy", HEALTHY),
        Act(f"{versions[1]}: healthy canary → promoted", short[1], versions[1], "promoted", BETTER),
        Act(f"{versions[2]}: 12% errors → reverted", short[2], versions[2], "reverted", BAD),
    ]
    shortened = [f"{what} (was {', '.join(sorted(olds))})" for what, olds in notes.items()]
    if fallback_reason and directory is not None:
        source += f"; {fallback_reason}"
    return Script(name, namespace, source, acts, shortened)


def _unusable(bodies: list[dict[str, Any]]) -> str | None:
    try:
        models = [ModelDeployment.model_validate(b) for b in bodies]
    except ValueError as exc:
        return str(exc).splitlines()[0]
    names = {b["metadata"].get("name") for b in bodies}
    if len(names) != 1:
        return f"they name {len(names)} ModelDeployments"
    versions = [m.spec.model.version for m in models]
    if len(set(versions)) != 3:
        return f"versions {versions} are not three different versions"
    metrics = models[2].spec.rollout.analysis.metrics  # what must catch v3
    if not any(m.max is not None and m.max < BAD["error_rate"] and not m.dry_run for m in metrics):
        return f"{versions[2]} has no gating metric with a max below 12% (the simulated error rate)"
    return None


# ------------------------------------------------------------------------------------------ story


@dataclass
class ActResult:
    act: Act
    ok: bool = False
    started: float = 0.0
    finished: float = 0.0
    detail: str = ""
    weights: list[int] = field(default_factory=list)
    failing: list[dict[str, Any]] = field(default_factory=list)
    passing: list[dict[str, Any]] = field(default_factory=list)
    proof: dict[str, Any] | None = None  # the smoke test of the version a revert restored
    conditions: str = ""  # what `kubectl wait`, Flux and Argo CD read when the act ended


@dataclass
class StoryResult:
    acts: list[ActResult]
    events: list[Any]
    duration: float

    @property
    def ok(self) -> bool:
        return len(self.acts) == 3 and all(a.ok for a in self.acts)


def _conditions(status: dict[str, Any]) -> str:
    return conditions_summary([Condition.model_validate(c) for c in status.get("conditions") or []])


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def result_text(result: dict[str, Any]) -> Text:
    """``error-rate 0.1200 > max 0.01 ✗`` from one MetricResult of the status."""
    verdict = result.get("verdict")
    value, low, high = result.get("value"), result.get("min"), result.get("max")
    name = result.get("name", "?")
    if verdict == "Pass":
        bound = f"≤ {high:g}" if high is not None else f"≥ {low:g}"
        return Text(f"{name} {_fmt(value)} {bound} ✓", style="green")
    if verdict == "Fail":
        if high is not None and value is not None and value > high:
            bound = f"> max {high:g}"
        else:
            bound = f"< min {low:g}" if low is not None else f"> max {high:g}"
        return Text(f"{name} {_fmt(value)} {bound} ✗", style="bold red")
    reason = result.get("reason") or verdict
    return Text(f"{name} ? ({reason})", style="yellow")


def results_line(results: list[dict[str, Any]]) -> Text:
    parts = [result_text(r) for r in results if not r.get("dryRun")]
    return Text("  ").join(parts) if parts else Text("no metrics")


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class Story:
    """Plays the script against the sandbox's API server and shows it on ``console``."""

    def __init__(
        self,
        console: Console,
        api: client.ApiClient,
        script: Script,
        *,
        traffic: Callable[[], dict[str, float]],
        replicas: Callable[[], dict[str, int]],
        wait_for_metrics: Callable[[str], None],
        operator_problem: Callable[[], str | None],
        act_timeout: float = 45.0,
    ) -> None:
        self.console = console
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.script = script
        self.traffic = traffic
        self.replicas = replicas
        self.wait_for_metrics = wait_for_metrics
        self.operator_problem = operator_problem
        self.act_timeout = act_timeout
        self.t0 = time.monotonic()
        self.wall0 = datetime.now(UTC)
        self.md: dict[str, Any] = {}
        self.seen_seq = 0
        self.last_analysis: tuple[Any, ...] | None = None
        self.prev_target: tuple[str | None, str] | None = None
        self.last_run_at: str | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks = [
            self.progress.add_task(f"{i + 1}/3 {act.title}", total=100, note="waiting", start=False)
            for i, act in enumerate(script.acts)
        ]

    # -- output ---------------------------------------------------------------------------------

    def _since(self, moment: datetime | None = None) -> float:
        if moment is None:
            return time.monotonic() - self.t0
        return (moment - self.wall0).total_seconds()

    def say(self, text: Text | str, moment: datetime | None = None) -> None:
        stamp = Text(f"{self._since(moment):6.1f}s  ", style="dim")
        self.console.print(Text.assemble(stamp, text if isinstance(text, Text) else Text(text)))

    def panel(self) -> RenderableType:
        status = self.md.get("status") or {}
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        phase = status.get("phase") or "—"
        stable = (status.get("stable") or {}).get("version") or "—"
        canary = status.get("canary") or {}
        canary_text = f"{canary['version']} at weight {canary.get('weight')}%" if canary else "—"
        grid.add_row(
            "phase",
            Text.assemble((phase, _PHASE_STYLE.get(phase, "")), f"   stable {stable}   canary {canary_text}"),
        )
        replicas = self.replicas()
        shares = self.traffic()
        split = "  ".join(
            f"{v}: {replicas.get(v, 0)} ready, {shares.get(v, 0.0):.0%} of requests"
            for v in sorted(set(replicas) | {v for v, s in shares.items() if s > 0})
        )
        grid.add_row("replicas", split or "—")
        if conditions := _conditions(status):
            grid.add_row("conditions", conditions)
        analysis = status.get("analysis") or {}
        if analysis.get("results"):
            grid.add_row("analysis", results_line(analysis["results"]))
        return Panel(Group(self.progress.get_renderable(), grid), title="canaria sandbox", expand=True)

    # -- observing --------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            self.md = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.script.namespace, PLURAL, self.script.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        return self.md

    @staticmethod
    def _target(status: dict[str, Any]) -> tuple[str | None, str]:
        """The version under analysis and where it stands, as the status says now."""
        canary = status.get("canary")
        if canary:
            return canary.get("version"), f"at {canary.get('weight')}%"
        if status.get("phase") == "Baking":
            return (status.get("stable") or {}).get("version"), "baking"
        return (status.get("stable") or {}).get("version"), ""

    def _observe(self, result: ActResult) -> None:
        status = self._read().get("status") or {}
        entries = [e for e in status.get("history") or [] if e.get("seq", 0) > self.seen_seq]
        analysis = status.get("analysis") or {}
        run_at = analysis.get("lastRunAt")
        if run_at and run_at != self.last_run_at:
            self.last_run_at = run_at
            # A run that ended a step (or the rollout) was made before the transition it caused.
            caused = any(_time(e.get("time")) == _time(run_at) for e in entries)
            version, where = self.prev_target if caused and self.prev_target else self._target(status)
            self._analysis_line(result, version, where, analysis)
        for entry in entries:
            self.seen_seq = entry["seq"]
            style = _PHASE_STYLE.get(entry.get("to", ""), "")
            line = Text.assemble(
                (f"{entry.get('to', ''):<12}", style),
                (f"{entry.get('reason', ''):<16}", "bold"),
                entry.get("message", ""),
            )
            if entry.get("user"):
                line.append(f" [by {entry['user']}]", style="dim")
            self.say(line, _time(entry.get("time")))
            if entry.get("version") == result.act.version and (
                weight := _STEP_WEIGHT.search(entry["message"])
            ):
                result.weights.append(int(weight.group(1)))
            if entry.get("reason") in ("RolledBack", "Aborted") and entry.get("to") == "Reverted":
                result.detail = entry.get("message", "")
        self.prev_target = self._target(status)
        canary = status.get("canary") or {}
        task = self.tasks[self.script.acts.index(result.act)]
        stable = (status.get("stable") or {}).get("version")
        if canary.get("version") == result.act.version:  # the bar is the traffic on the new version
            weight = canary.get("weight", 0)
            self.progress.update(task, completed=min(weight, 99), note=f"weight {weight}%")
        elif status.get("phase") == "Baking" and stable == result.act.version:
            self.progress.update(task, completed=99, note="baking")

    def _analysis_line(
        self, result: ActResult, version: str | None, where: str, analysis: dict[str, Any]
    ) -> None:
        verdict = analysis.get("verdict")
        results = analysis.get("results") or []
        if version == result.act.version:
            if verdict == "Pass":
                result.passing = results
            elif verdict == "Fail":
                result.failing = results
        key = (version, where, verdict)
        if key == self.last_analysis and verdict != "Fail":
            return  # the timeline shows changes; the live panel shows every run
        self.last_analysis = key
        style = {"Pass": "green", "Fail": "bold red"}.get(verdict or "", "yellow")
        self.say(
            Text.assemble(
                (f"{'analysis':<12}", "dim"),
                (f"{verdict or '':<16}", style),
                f"{version} {where}  ",
                results_line(results),
            ),
            _time(analysis.get("lastRunAt")),
        )

    # -- acts ---------------------------------------------------------------------------------------

    def _apply(self, body: dict[str, Any]) -> None:
        """What `kubectl apply --server-side` does."""
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.script.namespace,
            PLURAL,
            self.script.name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def _outcome(self, act: Act, status: dict[str, Any]) -> bool | None:
        """True when the act reached its expected end, False when it cannot any more, None meanwhile."""
        phase = status.get("phase")
        stable = (status.get("stable") or {}).get("version")
        good = (status.get("lastKnownGood") or {}).get("version")
        rejected = (status.get("rejected") or {}).get("version")
        if act.expect in ("healthy", "promoted"):
            if phase == "Healthy" and stable == act.version and good == act.version:
                return True
            if phase in ("Reverted", "Failed") and rejected == act.version:
                return False
            return None
        if phase == "Reverted" and rejected == act.version and stable == good and stable != act.version:
            proof = status.get("smokeTest") or {}
            tested = (act.body["spec"].get("rollout") or {}).get("smokeTest")
            # with a smoke test, the act ends once it proved (or failed to prove) the restored version
            verdict = proof.get("purpose") == "AfterRollback" and proof.get("phase") in ("Passed", "Failed")
            return True if not tested or verdict else None
        if phase == "Healthy" and good == act.version:
            return False
        return None

    def play_act(self, index: int, live: Live | None) -> ActResult:
        act = self.script.acts[index]
        result = ActResult(act, started=self._since())
        task = self.tasks[index]
        self.progress.start_task(task)
        self.progress.update(task, note="applying")
        self.say(Text(f"▶ {index + 1}/3  {act.title}", style="bold magenta"))
        self._apply(act.body)
        deadline = time.monotonic() + self.act_timeout
        while True:
            self._observe(result)
            if live is not None:
                live.refresh()
            outcome = self._outcome(act, self.md.get("status") or {})
            if outcome is not None:
                result.ok = outcome
                break
            problem = self.operator_problem()
            if problem:
                result.detail = problem
                break
            if time.monotonic() > deadline:
                phase = (self.md.get("status") or {}).get("phase")
                message = (self.md.get("status") or {}).get("message")
                result.detail = f"no outcome after {self.act_timeout:g}s (phase {phase}: {message})"
                break
            time.sleep(0.2)
        result.finished = self._since()
        status = self.md.get("status") or {}
        if result.ok and act.expect == "reverted":
            result.proof = status.get("smokeTest")
        result.conditions = _conditions(status)
        if result.ok:
            done = {"healthy": "serving", "promoted": "promoted", "reverted": "reverted"}[act.expect]
            self.progress.update(task, completed=100, note=done)
        else:
            self.progress.update(task, note="[red]failed")
            result.detail = result.detail or f"ended {status.get('phase')}: {status.get('message')}"
        self.progress.stop_task(task)
        return result

    def play(self) -> StoryResult:
        results: list[ActResult] = []
        with Live(get_renderable=self.panel, console=self.console, transient=True, auto_refresh=True) as live:
            for index in range(len(self.script.acts)):
                if index == 1:
                    self._wait_for_metrics()
                result = self.play_act(index, live)
                results.append(result)
                if not result.ok:
                    break
        return StoryResult(results, self.audit_trail(), self._since())

    def _wait_for_metrics(self) -> None:
        """Before the first canary: Prometheus must have scraped the simulated server a few times."""
        started = time.monotonic()
        stable = self.script.acts[0].version
        self.wait_for_metrics(stable)
        waited = time.monotonic() - started
        if waited > 0.5:
            self.say(
                Text(f"(waited {waited:.1f}s for Prometheus' first scrapes of the model server)", style="dim")
            )

    def audit_trail(self, timeout: float = 5.0) -> list[Any]:
        """The Events of the ModelDeployment. The operator posts a transition's Event right after the
        status that records it, so wait (briefly) for the Event of the last transition seen."""
        uid = (self.md.get("metadata") or {}).get("uid", "")
        last = f"{self.script.name}.{uid[:8]}.{self.seen_seq}"
        deadline = time.monotonic() + timeout
        while True:
            events = self.core.list_namespaced_event(
                self.script.namespace,
                field_selector=f"involvedObject.name={self.script.name},involvedObject.kind={KIND}",
            ).items
            if (
                not self.seen_seq
                or any(e.metadata.name == last for e in events)
                or time.monotonic() > deadline
            ):
                return sorted(events, key=lambda e: _time(e.event_time or e.first_timestamp) or self.wall0)
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------- reports


def render_audit_trail(events: list[Any], wall0: datetime, namespace: str, name: str) -> RenderableType:
    table = Table(
        title=f"Event audit trail — kubectl get events -n {namespace} "
        f"--field-selector involvedObject.name={name}",
        title_justify="left",
        expand=True,
        show_lines=False,
    )
    table.add_column("t", justify="right", no_wrap=True, style="dim")
    table.add_column("type", no_wrap=True)
    table.add_column("reason", no_wrap=True, style="bold")
    table.add_column("message", overflow="fold", ratio=1)
    for event in events:
        moment = _time(event.event_time or event.first_timestamp)
        stamp = f"{(moment - wall0).total_seconds():.1f}s" if moment else "?"
        kind = Text(event.type or "", style="red" if event.type == "Warning" else "")
        table.add_row(stamp, kind, event.reason or "", event.message or "")
    return table


def render_summary(story: StoryResult, script: Script, footer: list[str]) -> RenderableType:
    lines: list[RenderableType] = []
    for result in story.acts:
        act = result.act
        took = f"{result.finished - result.started:.1f}s"
        if not result.ok:
            lines.append(Text(f"✗ {act.title}: {result.detail}", style="bold red"))
            continue
        if act.expect == "healthy":
            lines.append(Text(f"✓ {act.version} deployed and Healthy in {took}", style="green"))
        elif act.expect == "promoted":
            steps = " → ".join(f"{w}%" for w in result.weights) or "all steps"
            line = Text(
                f"✓ {act.version} promoted in {took}: canary {steps}, baked; last analysis ", style="green"
            )
            lines.append(line.append_text(results_line(result.passing)))
        else:
            line = Text(f"✓ {act.version} reverted to ", style="green")
            previous = script.acts[1].version
            line.append(f"{previous} in {took}: ", style="green")
            failing = [r for r in result.failing if r.get("verdict") == "Fail"] or result.failing
            line.append_text(results_line(failing))
            if runs := _FAILED_RUNS.search(result.detail):
                line.append(
                    f" ({runs.group(1)} failed runs in a row, failureLimit {runs.group(2)})", style="green"
                )
            lines.append(line)
            if (proof := result.proof) is not None:
                passed = proof.get("phase") == "Passed"
                lines.append(
                    Text(
                        f"  rollback {'proven' if passed else 'NOT proven'} by the smoke test against "
                        f"{proof.get('version')}: job {proof.get('job')}, exit code {proof.get('exitCode')}"
                        + (f" ({(proof.get('log') or '').strip()})" if proof.get("log") else ""),
                        style="green" if passed else "bold red",
                    )
                )
        if result.conditions:
            lines.append(Text(f"  {result.conditions}", style="dim"))
    missing = 3 - len(story.acts)
    for act in script.acts[len(story.acts) :] if missing else []:
        lines.append(Text(f"- {act.title}: not played", style="dim"))
    lines.append(Text(f"{len(story.events)} Events in the audit trail; story took {story.duration:.1f}s"))
    lines.extend(Text(line, style="dim") for line in footer)
    ok = story.ok
    title = "sandbox story: done" if ok else "sandbox story: FAILED"
    return Panel(Group(*lines), title=title, border_style="green" if ok else "red", expand=True)
