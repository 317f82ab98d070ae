"""`canaria dashboard` in a real browser (Debian's headless Chromium through Selenium), against the real
control plane, the real operator and a real Prometheus scraping the simulated model server.

The dashboard is the installed command, started as users start it; screenshots of each page are kept under
``test-artifacts/dashboard/`` (or ``$CANARIA_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.localprom import LocalPrometheus, PrometheusNotFound
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator
from tests.fixtures_prometheus import SIMULATED_SERVICE

from .harness import ModelDeployments, model_deployment, wait_for
from .traffic import TrafficFollower

NAME = SIMULATED_SERVICE
SELECTOR = 'service="{{service}}",version="{{version}}"'
ERROR_RATE = {
    "name": "error-rate",
    "query": f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[5s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[5s]))",
    "max": 0.01,
}
ARTIFACTS = Path(os.environ.get("CANARIA_ARTIFACTS", "test-artifacts")) / "dashboard"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def metrics_world(control_plane: ControlPlane, namespace: str) -> Iterator[tuple[ModelServerSimulator, str]]:
    """The simulated model server, a Prometheus scraping it, and traffic following the replica split."""
    simulator = ModelServerSimulator(SIMULATED_SERVICE, requests_per_second=200.0).start()
    api = control_plane.api_client()
    try:
        try:
            prometheus = LocalPrometheus([simulator.target])
        except PrometheusNotFound as error:
            pytest.skip(str(error))
        prometheus.start()
        try:
            with TrafficFollower(api, namespace, NAME, simulator):
                yield simulator, prometheus.url
        finally:
            prometheus.stop()
    finally:
        simulator.stop()
        api.close()


@pytest.fixture
def start_dashboard(control_plane: ControlPlane, namespace: str) -> Iterator[Callable[..., str]]:
    processes: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> str:
        canaria = Path(sys.executable).with_name("canaria")
        process = subprocess.Popen(
            [
                *(str(canaria), "dashboard", "--port", "0"),
                *("--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, *extra),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert match, f"no address in {line!r}"
        return match.group(1)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _js(driver: Any, css: str) -> dict[str, Any] | None:
    """Text and data-points of the first element matching `css`, read in one script: the page redraws on
    every change, so an element handle kept across calls may be stale."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? {text: e.innerText, points: e.getAttribute('data-points')} : null;",
        css,
    )


def _text(driver: Any, css: str) -> str:
    found = _js(driver, css)
    return found["text"] if found else ""


def _post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_overview_and_a_rollout_followed_live_to_its_revert(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    metrics_world: tuple[ModelServerSimulator, str],
    start_dashboard: Callable[..., str],
    browser: Any,
) -> None:
    simulator, prometheus = metrics_world
    simulator.set_version("v1", error_rate=0.0)
    simulator.set_version("v2", error_rate=0.2)
    start_operator(prometheus=prometheus)
    steps = [{"weight": 50, "pause": "6s"}, {"weight": 100}]
    body = model_deployment(NAME, "v1", replicas=2, steps=steps, metrics=[ERROR_RATE], interval="2s")
    body["spec"]["rollout"]["analysis"]["failureLimit"] = 2
    body["spec"]["prometheus"] = {"address": prometheus}
    mds.create(body)
    mds.wait_phase(NAME, "Healthy", stable="v1")
    url = start_dashboard()

    browser.get(url + "/")
    row = wait_for(
        "the overview row", lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-name="{NAME}"]')
    )
    assert "Healthy" in row[0].text and "ml-team@example.com" in row[0].text
    _shot(browser, "overview")

    browser.get(f"{url}/md/{mds.namespace}/{NAME}")
    wait_for("the page", lambda: _text(browser, "#phase") == "Healthy")
    assert not browser.find_elements(By.CSS_SELECTOR, "#actions")  # read-only: no buttons
    browser.execute_script("window.__sameDocument = true")  # a reload would lose this flag

    mds.set_version(NAME, "v2", reason="retrained")
    wait_for("the canary on the page", lambda: _text(browser, "#phase") == "Progressing", timeout=30)
    wait_for(
        "step 1 highlighted", lambda: browser.find_elements(By.CSS_SELECTOR, '.step.current[data-index="1"]')
    )
    wait_for("the revert on the page", lambda: _text(browser, "#phase") == "Reverted", timeout=60)
    assert browser.execute_script("return window.__sameDocument") is True
    trail = wait_for("RolledBack in the audit trail", lambda: _js(browser, 'tr[data-reason="RolledBack"]'))
    assert "error-rate" in trail["text"]

    def plotted() -> dict[str, Any] | None:
        plot = _js(browser, '.plot[data-metric="error-rate"]')
        return plot if plot and int(plot["points"] or 0) > 3 else None

    legend = wait_for("a plot with points", plotted, timeout=30)["text"]
    assert "v2 (analysed)" in legend and "max 0.01" in legend  # the canary's curve and the bound's line
    # the plotted queries are the ones the operator ran (recorded in status)
    ran = {r["name"]: r["query"] for r in mds.status(NAME)["analysis"]["results"]}
    page = json.loads(urllib.request.urlopen(f"{url}/api/md/{mds.namespace}/{NAME}", timeout=10).read())
    assert page["metrics"][0]["queries"]["v2"] == ran["error-rate"]
    _shot(browser, "rollout-reverted")


def test_actions_only_when_allowed(
    mds: ModelDeployments,
    start_operator: Callable[..., OperatorProcess],
    kubelet: Kubelet,
    start_dashboard: Callable[..., str],
    browser: Any,
) -> None:
    start_operator()
    steps = [{"weight": 50, "manual": True}, {"weight": 100}]
    mds.create(model_deployment(NAME, "v1", replicas=2, steps=steps))
    mds.wait_phase(NAME, "Healthy", stable="v1")
    mds.set_version(NAME, "v2")
    wait_for("the canary ready", lambda: (mds.status(NAME).get("canary") or {}).get("readyAt"))

    read_only = start_dashboard()
    api = f"/api/md/{mds.namespace}/{NAME}/promote"
    assert _post(read_only + api, {"X-Canaria-Dashboard": "1", "Content-Type": "application/json"}) == 403

    url = start_dashboard("--allow-actions")
    assert _post(url + api, {"Content-Type": "application/json"}) == 403  # no header: a cross-site form
    browser.get(f"{url}/md/{mds.namespace}/{NAME}")
    enabled = (
        "return Object.fromEntries([...document.querySelectorAll('#actions button')]"
        ".map(b => [b.id, !b.disabled]))"
    )
    buttons = wait_for("the buttons", lambda: browser.execute_script(enabled))
    assert buttons["action-promote"] and not buttons["action-resume"]  # nothing to resume: the core says so
    _shot(browser, "actions")
    browser.execute_script("document.getElementById('action-promote').click()")
    status = mds.wait_phase(NAME, "Healthy", stable="v2", timeout=30)
    assert (
        status["lastCommand"]["action"] == "promote"
        and status["lastCommand"]["reason"] == "from the dashboard"
    )
    wait_for("the page follows", lambda: _text(browser, "#phase") == "Healthy", timeout=30)
    _shot(browser, "promoted")
