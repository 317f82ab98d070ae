"""The chart's Grafana dashboard: every panel's query parses (promtool) and names only metrics that a
running operator exports (a real scrape of `canaria run`'s /metrics after a rollout with analysis)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.localprom import LocalPrometheus
from canaria.sandbox.processes import OperatorProcess, free_port

from .harness import ModelDeployments, model_deployment, wait_for

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "canaria" / "dashboards" / "canaria.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_panel_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: apt-get install prometheus")
    # Grafana's $__rate_interval is not PromQL: give it the value Grafana would (a duration)
    rules = [
        {"record": f"canaria:panel_{i}", "expr": q.replace("$__rate_interval", "5m")}
        for i, q in enumerate(_queries())
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_the_dashboard_names_only_metrics_the_operator_exports(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    constant_prometheus: LocalPrometheus,
) -> None:
    port = free_port()
    start_operator(prometheus=constant_prometheus.url, args=[f"--metrics-port={port}"])
    metric = {"name": "error-rate", "query": "vector(0.001)", "max": 0.01}
    mds.create(
        model_deployment(
            "fraud", "v1", metrics=[metric], steps=[{"weight": 50, "pause": "2s"}, {"weight": 100}]
        )
    )
    mds.wait_phase("fraud", "Healthy", stable="v1")
    mds.set_version("fraud", "v2")
    mds.wait_phase("fraud", "Healthy", stable="v2")

    def scrape() -> str | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        wanted = (
            'canaria_analysis_verdicts_total{metric="error-rate",verdict="Pass"}',
            'canaria_rollouts{phase="Healthy"} 1.0',
        )
        return text if all(w in text for w in wanted) else None

    text = wait_for("an analysis verdict exported", scrape, timeout=30)
    exported = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        if family.name.startswith("canaria_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    used = {name for query in _queries() for name in re.findall(r"\bcanaria_[a-z_]+\b", query)}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    assert "canaria_reconcile_duration_seconds_count" in text
