"""`canaria backtest` against a real Prometheus holding backfilled history with a known incident.

The history is written as OpenMetrics and turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics` before Prometheus starts, exactly as a user would backfill; the installed `canaria` command
replays a spec over it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaria.sandbox.localprom import LocalPrometheus
from tests.fixtures_prometheus import started_prometheus

RATE = 100.0  # requests per second
NORMAL, INCIDENT = 0.002, 0.05  # error ratios
SCRAPE = 15  # seconds between samples
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
HISTORY = (NOW - timedelta(hours=4), NOW - timedelta(minutes=10))
INCIDENT_AT = (NOW - timedelta(hours=2), NOW - timedelta(hours=1, minutes=50))
QUERY = (
    'sum(rate(http_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}[1m]))'
    ' / sum(rate(http_requests_total{service="{{service}}",version="{{version}}"}[1m]))'
)


def _openmetrics() -> str:
    """Counters of a model server (version v2) sampled every 15 s, 5% errors during the incident."""
    ok = errors = 0.0
    good, bad = [], []
    at = HISTORY[0]
    while at <= HISTORY[1]:
        ratio = INCIDENT if INCIDENT_AT[0] <= at < INCIDENT_AT[1] else NORMAL
        ok += RATE * SCRAPE * (1 - ratio)
        errors += RATE * SCRAPE * ratio
        stamp = int(at.timestamp())
        good.append(f'http_requests_total{{service="fraud",version="v2",code="200"}} {ok:.1f} {stamp}')
        bad.append(f'http_requests_total{{service="fraud",version="v2",code="500"}} {errors:.1f} {stamp}')
        at += timedelta(seconds=SCRAPE)
    return "# TYPE http_requests counter\n" + "\n".join(good + bad) + "\n# EOF\n"


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: apt-get install prometheus")
    work = tmp_path_factory.mktemp("history")
    source = work / "history.om"
    source.write_text(_openmetrics())
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(work / "data")],
        check=True,
        capture_output=True,
    )
    server = started_prometheus([], work_dir=work)
    try:
        yield server
    finally:
        server.stop()


def _spec_file(tmp_path: Path, address: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "canaria.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "fraud", "namespace": "ml"},
                "spec": {
                    "model": {"name": "fraud", "version": "v2", "uri": "s3://models/fraud/v2"},
                    "template": {"spec": {"containers": [{"name": "server", "image": "example/server:1"}]}},
                    "replicas": 4,
                    "rollout": {
                        "steps": [
                            {"weight": 10, "pause": "1h"},
                            {"weight": 50, "pause": "1h"},
                            {"weight": 100},
                        ],
                        "analysis": {
                            "interval": "1m",
                            "failureLimit": 1,
                            "metrics": [{"name": "error-rate", "query": QUERY, "max": 0.01}],
                        },
                    },
                    "prometheus": {"address": address},
                },
            }
        )
    )
    return path


def _backtest(spec: Path, start: datetime, end: datetime, *extra: str) -> subprocess.CompletedProcess[str]:
    canaria = Path(sys.executable).with_name("canaria")
    return subprocess.run(
        [
            *(str(canaria), "backtest", "-f", str(spec)),
            *("--from", start.isoformat(), "--to", end.isoformat()),
            *("--step", "1m", "--stable-version", "v1", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_backtest_finds_the_incident_at_the_right_time(
    history_prometheus: LocalPrometheus, tmp_path: Path
) -> None:
    spec = _spec_file(tmp_path, history_prometheus.url)
    start = INCIDENT_AT[0] - timedelta(hours=1)
    done = _backtest(spec, start, INCIDENT_AT[1] + timedelta(minutes=20), "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    reverted = datetime.fromisoformat(report["revertedAt"])
    # the 1m rate sees the incident within a minute; failureLimit 1 reverts on the second failing run
    assert INCIDENT_AT[0] <= reverted <= INCIDENT_AT[0] + timedelta(minutes=3), report["timeline"]
    assert report["outcome"] == "Reverted"
    steps = [e["reason"] for e in report["timeline"]]
    assert steps[0] == "RolloutStarted" and steps[-1] == "RolledBack"
    (error_rate,) = report["metrics"]
    assert error_rate["max"] == pytest.approx(INCIDENT, rel=0.05)
    assert error_rate["p50"] == pytest.approx(NORMAL, rel=0.05)
    first = datetime.fromisoformat(error_rate["firstFailure"]["at"])
    # the sample stamped at the incident's start already counts its first 15 s of errors
    assert INCIDENT_AT[0] <= first <= INCIDENT_AT[0] + timedelta(minutes=1)

    text = _backtest(spec, start, INCIDENT_AT[1] + timedelta(minutes=20))
    assert text.returncode == 0, text.stderr
    assert f"would have reverted at {reverted:%Y-%m-%d %H:%M:%S}Z" in text.stdout
    assert "error-rate=0.0" in text.stdout  # the value that caused it, against its bound


def test_the_quiet_hours_pass(history_prometheus: LocalPrometheus, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, history_prometheus.url)
    done = _backtest(
        spec, HISTORY[0] + timedelta(minutes=5), INCIDENT_AT[0] - timedelta(minutes=5), "-o", "json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["revertedAt"] is None
    assert [e["reason"] for e in report["timeline"]] == ["RolloutStarted", "StepAdvanced"]
    (error_rate,) = report["metrics"]
    assert error_rate["failed"] == 0 and error_rate["p95"] == pytest.approx(NORMAL, rel=0.05)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = _backtest(tmp_path / "nope.yaml", HISTORY[0], HISTORY[1])
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope.yaml" in missing.stderr
    spec = _spec_file(tmp_path, "http://127.0.0.1:9")
    backwards = _backtest(spec, HISTORY[1], HISTORY[0])
    assert backwards.returncode == 2 and "must end after it starts" in backwards.stderr
