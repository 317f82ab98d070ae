"""The sandbox's moving parts, started and stopped in order, all on 127.0.0.1.

1. simulated model servers (`canaria.sandbox.simulator`), one per ModelDeployment, whose traffic per version
   follows the ready replicas of the versions the model's Service selects, as the Service would;
2. a local Prometheus (`canaria.sandbox.localprom`, Debian's ``prometheus``) scraping them every second;
3. Kubernetes (`canaria.sandbox.clusters`): a real control plane when its binaries are at hand, else the
   emulator (`emulator.SandboxEmulator` behind kmock's HTTP server), with the CRD installed;
4. the real operator: ``canaria run --kubeconfig <sandbox kubeconfig>`` as a child process.

The operator runs as a process rather than in a thread: it then starts exactly as in a cluster (its own
kopf event loop, signal handling and module state, its kubeconfig login), its log goes to a file
instead of through the live display, and stopping it is a SIGTERM to its own process group, which no
thread can be given. Every child also gets SIGKILL from the kernel if this process dies (PDEATHSIG).
Teardown is the reverse order: operator, Kubernetes, Prometheus, simulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, config
from rich.console import Console
from rich.table import Table
from rich.text import Text

from canaria import GROUP, PLURAL
from canaria.kube.crd import custom_resource_definition
from canaria.kube.workloads import MD_LABEL, ROLE_LABEL, VERSION_LABEL
from canaria.sandbox.clusters import (
    ENVTEST_CACHE,
    NoControlPlane,
    SandboxCluster,
    control_plane_cluster,
    emulated_cluster,
    find_control_plane,
)
from canaria.sandbox.controlplane import ControlPlaneError
from canaria.sandbox.kubelet import resolve_service_urls
from canaria.sandbox.localprom import (
    LocalPrometheus,
    PrometheusNotFound,
    PrometheusStartError,
    find_prometheus,
)
from canaria.sandbox.processes import OperatorProcess
from canaria.sandbox.simulator import ModelServerSimulator, workload_key
from canaria.sandbox.story import (
    RATE_WINDOW,
    Script,
    Story,
    load_script,
    render_audit_trail,
    render_summary,
)

log = logging.getLogger("canaria.sandbox")

SIMULATE_ANNOTATION = "sandbox.canaria.dev/simulate"
REQUESTS_PER_SECOND = 1000.0  # enough requests per scrape that a 12% error rate shows at once
READY_DELAY = 0.5
#: The story analyses every second; the operator's default query budget is for a shared production
#: Prometheus, the sandbox's own local one takes this (about 20 metrics at the shortened interval).
QUERY_BUDGET = 1200
#: The address the examples name (a cluster's Prometheus Operator service). The sandbox's operator allows
#: it, so `kubectl apply -f manifests/examples/...` is accepted as written; it does not resolve here, which
#: the hints say (an example with metrics wants the sandbox's own Prometheus instead).
EXAMPLES_PROMETHEUS = "http://prometheus-operated.monitoring:9090"
INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus"


# ---------------------------------------------------------------------------------------- traffic


class Traffic:
    """Simulated model servers whose per-version traffic follows the ready replicas the Service selects.

    The cluster reports Deployments (`deployment`: a version's share follows its ready replicas), the
    model's Service (`service`: selecting one version, outside a canary, gives it all, so that a version
    kept warm takes no traffic) and ModelDeployments (`model`: the annotation
    ``sandbox.canaria.dev/simulate``, JSON such as ``{"v4": {"errorRate": 0.2, "latency": 0.4}}``, changes
    how a version behaves).
    """

    def __init__(self, requests_per_second: float = REQUESTS_PER_SECOND) -> None:
        self.requests_per_second = requests_per_second
        self.simulators: dict[str, ModelServerSimulator] = {}
        self.ready: dict[str, dict[str, int]] = {}
        self.selected: dict[str, str | None] = {}  # service → the one version it selects (None: all)
        self.on_new_target: Callable[[list[str]], None] | None = None
        self._lock = threading.RLock()

    def simulator(self, service: str) -> ModelServerSimulator:
        with self._lock:
            sim = self.simulators.get(service)
            if sim is None:
                sim = ModelServerSimulator(service, requests_per_second=self.requests_per_second).start()
                sim.set_traffic({})  # no Pod is ready yet: nobody is served
                self.simulators[service] = sim
                if self.on_new_target is not None:
                    self.on_new_target(self.targets())
            return sim

    def targets(self) -> list[str]:
        with self._lock:
            return [sim.target for sim in self.simulators.values()]

    def _route(self, service: str) -> None:
        """Traffic to the ready replicas of the versions the Service selects."""
        only = self.selected.get(service)
        versions = self.ready.get(service, {})
        self.simulator(service).set_replicas({v: n for v, n in versions.items() if only is None or v == only})

    def service_address(self, namespace: str, name: str) -> str | None:
        """Where a model's Service, or one version's (``<model>-<version>``), is served here: that
        model's simulated server."""
        with self._lock:
            model = next((m for m in self.simulators if name == m or name.startswith(f"{m}-")), None)
            return self.simulators[model].target if model else None

    async def run_job(self, job: dict[str, Any]) -> tuple[int, str]:
        """The emulator's Job runner: the first container's command as a local process, with its env and
        a URL naming a model's Service (``http://<name>[-<version>].<ns>.svc:<port>``) pointed at that
        model's simulated server; stopped at activeDeadlineSeconds. (exit code, output tail)."""
        spec = job.get("spec") or {}
        container = (((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]

        env = {
            **os.environ,
            **{
                e["name"]: resolve_service_urls(str(e.get("value", "")), "", self.service_address)
                for e in container.get("env") or []
            },
        }
        process = await asyncio.create_subprocess_exec(
            *(container.get("command") or []),
            *(container.get("args") or []),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(
                process.communicate(), spec.get("activeDeadlineSeconds") or 300
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            return 137, "DeadlineExceeded: killed at activeDeadlineSeconds"
        return process.returncode or 0, output[-2048:].decode(errors="replace")

    def replicas(self, service: str) -> dict[str, int]:
        with self._lock:
            return dict(self.ready.get(service, {}))

    def shares(self, service: str) -> dict[str, float]:
        sim = self.simulators.get(service)
        return sim.shares() if sim is not None else {}

    def deployment(self, kind: str, body: dict[str, Any]) -> None:
        """A Deployment labelled with a ModelDeployment and a version: that version's share follows its
        ready replicas."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        service, version = labels.get(MD_LABEL), labels.get(VERSION_LABEL)
        if not service or not version:
            return
        version = workload_key(version, labels.get(ROLE_LABEL))  # a baseline is its own workload
        with self._lock:
            versions = self.ready.setdefault(service, {})
            if kind == "DELETED":
                versions.pop(version, None)
            else:
                versions[version] = int((body.get("status") or {}).get("readyReplicas") or 0)
            self._route(service)

    def service(self, kind: str, body: dict[str, Any]) -> None:
        """The model's Service: the one version it selects, if it selects one."""
        meta = body.get("metadata") or {}
        if (meta.get("labels") or {}).get(MD_LABEL) != meta.get("name") or kind == "DELETED":
            return  # not the model's Service (a version's own, for its smoke test) or gone
        with self._lock:
            selector = (body.get("spec") or {}).get("selector") or {}
            self.selected[meta["name"]] = selector.get(VERSION_LABEL)
            self._route(meta["name"])

    def model(self, body: dict[str, Any]) -> None:
        """A ModelDeployment: its simulate annotation sets how its versions behave."""
        meta = body.get("metadata") or {}
        wanted = (meta.get("annotations") or {}).get(SIMULATE_ANNOTATION)
        if not wanted:
            return
        try:
            settings = json.loads(wanted)
            sim = self.simulator(meta["name"])
            for version, values in settings.items():
                sim.set_version(
                    version,
                    error_rate=values.get("errorRate"),
                    latency=values.get("latency"),
                    psi=values.get("psi"),
                    cost=values.get("cost"),
                )
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s on %s: %s", SIMULATE_ANNOTATION, meta.get("name"), exc)

    def stop(self) -> None:
        with self._lock:
            for sim in self.simulators.values():
                sim.stop()
            self.simulators.clear()


# --------------------------------------------------------------------------------------- operator


def _install(api: client.ApiClient, namespace: str, *, emulated: bool) -> None:
    """The CRD and the story's namespace. An API server serves a new CRD once it is Established (the
    emulator at once, without conditions)."""
    extensions = client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(custom_resource_definition())
    name = f"{PLURAL}.{GROUP}"
    deadline = time.monotonic() + 30
    while not emulated and not _established(extensions.read_custom_resource_definition(name)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API server did not serve {name} within 30s")
        time.sleep(0.1)
    with contextlib.suppress(client.exceptions.ApiException):  # it exists already
        client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})


def _established(crd: Any) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


# ---------------------------------------------------------------------------------------- sandbox


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the sandbox like Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Teardown must finish: a second Ctrl-C would leave children behind (they'd die by PDEATHSIG,
    but without stopping cleanly)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _timed(name: str, fn: Callable[[], Any]) -> None:
    started = time.monotonic()
    fn()
    log.debug("stopped %s in %.2fs", name, time.monotonic() - started)


class Sandbox:
    def __init__(
        self,
        *,
        keep: bool,
        story: bool = True,
        kubeconfig: str | None = None,
        examples: str | None = None,
        cluster: str = "auto",
        console: Console | None = None,
        on_keep: Callable[[str, str], str] | None = None,
    ) -> None:
        self.keep = keep
        # called with (kubeconfig, Prometheus URL) once the sandbox is kept; returns a line to show (the CLI
        # starts the dashboard there: the sandbox does not import the CLI's layer)
        self.on_keep = on_keep
        self.cluster = cluster
        self.play_story = story
        self.kubeconfig_arg = Path(kubeconfig).expanduser().resolve() if kubeconfig else None
        self.examples = Path(examples) if examples else None
        self.console = console or Console(highlight=False)
        self._story_done = False

    def run(self) -> int:
        console = self.console
        try:
            find_prometheus()
        except PrometheusNotFound:
            console.print(
                Text.assemble(
                    ("canaria sandbox needs Prometheus, which is not installed.\n", "bold red"),
                    "Install it (Debian/Ubuntu) with:\n\n    ",
                    (INSTALL_COMMAND, "bold"),
                    "\n\n(or point $CANARIA_PROMETHEUS_BINARY at a prometheus binary). "
                    "The sandbox starts its "
                    "own instance on 127.0.0.1; it never uses the system service.",
                )
            )
            return 2
        script = load_script(self.examples) if self.play_story else None
        work = Path(tempfile.mkdtemp(prefix="canaria-sandbox-"))
        kubeconfig = self.kubeconfig_arg or work / "kubeconfig"
        own_kubeconfig = not kubeconfig.exists()
        code = 0
        stack = contextlib.ExitStack()
        try:
            with _signals_as_interrupt():
                try:
                    code = self._run(stack, script, work, kubeconfig)
                except KeyboardInterrupt:
                    console.print(Text("\ninterrupted: stopping the sandbox…", style="yellow"))
                    code = 0 if self.keep and self._story_done else 130
                except PrometheusStartError as exc:
                    console.print(Text(f"Prometheus did not start: {exc}", style="bold red"))
                    code = 1
                except (NoControlPlane, ControlPlaneError) as exc:
                    console.print(Text(str(exc), style="bold red"))
                    code = 2
        finally:
            with _uninterrupted():
                started = time.monotonic()
                stack.close()
                if own_kubeconfig:
                    kubeconfig.unlink(missing_ok=True)
                shutil.rmtree(work, ignore_errors=True)
                if self.keep or code == 130:
                    console.print(Text(f"sandbox stopped in {time.monotonic() - started:.1f}s", style="dim"))
        return code

    def _run(self, stack: contextlib.ExitStack, script: Script | None, work: Path, kubeconfig: Path) -> int:
        console = self.console
        started = time.monotonic()
        traffic = Traffic()
        stack.callback(_timed, "traffic.stop", traffic.stop)
        if script is not None:
            sim = traffic.simulator(script.name)
            for act in script.acts:
                sim.set_version(act.version, **act.simulated)
        prometheus = LocalPrometheus(traffic.targets(), scrape_interval=1.0, work_dir=work / "prometheus")
        stack.callback(_timed, "prometheus.stop", prometheus.stop)
        prometheus.start()
        traffic.on_new_target = prometheus.set_targets
        cluster = stack.enter_context(self._cluster(work, traffic))
        namespace = script.namespace if script else "default"
        cluster.write_kubeconfig(kubeconfig, "default")  # the user's namespace; the story has its own
        api = config.new_client_from_config(config_file=str(kubeconfig))
        stack.callback(_timed, "api.close", api.close)
        _install(api, namespace, emulated=cluster.emulated)
        operator = OperatorProcess(
            kubeconfig,
            work / "operator.log",
            prometheus=prometheus.url,
            args=("--max-queries-per-minute", str(QUERY_BUDGET), "--allowed-prometheus", EXAMPLES_PROMETHEUS),
        ).start()
        stack.callback(_timed, "operator.stop", operator.stop)
        self._header(cluster, prometheus.url, traffic, operator, script, kubeconfig)
        code = 0
        if script is not None:
            name = script.name

            def wait_for_metrics(version: str) -> None:
                prometheus.wait_for_series(
                    f'sum(rate(http_requests_total{{service="{name}",version="{version}"}}'
                    f"{RATE_WINDOW})) > 0",
                    timeout=30,
                )

            story = Story(
                console,
                api,
                script,
                traffic=lambda: traffic.shares(name),
                replicas=lambda: traffic.replicas(name),
                wait_for_metrics=wait_for_metrics,
                operator_problem=operator.problem,
            )
            result = story.play()
            console.print()
            console.print(render_audit_trail(result.events, story.wall0, script.namespace, script.name))
            footer = [
                f"Shortened for the sandbox, in memory: {'; '.join(script.shortened) or 'nothing'}; "
                "scrape every 1s"
                + (
                    f"; Deployments report ready {READY_DELAY:g}s after a change."
                    if cluster.emulated
                    else "."
                ),
                f"Whole run: {time.monotonic() - started:.1f}s. "
                "Next: `canaria sandbox --keep` keeps it running "
                "for `canaria status`, `kubectl get md` and your own ModelDeployments.",
            ]
            console.print(render_summary(result, script, footer))
            if not result.ok:
                console.print(Text(f"operator log ({operator.log_path}):", style="dim"))
                console.print(Text(operator.log_tail(30), style="dim"))
            code = 0 if result.ok else 1
        self._story_done = True
        if self.keep:
            self._kept(kubeconfig, script, operator, prometheus.url)
        return code

    def _header(
        self,
        cluster: SandboxCluster,
        prometheus_url: str,
        traffic: Traffic,
        operator: OperatorProcess,
        script: Script | None,
        kubeconfig: Path,
    ) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("Kubernetes API", f"{cluster.url}  ({cluster.what})")
        grid.add_row("Prometheus", f"{prometheus_url}  (scrapes every 1s)")
        for service, sim in traffic.simulators.items():
            grid.add_row(
                "model server",
                f"{sim.url}  (simulated '{service}', "
                f"{traffic.requests_per_second:g} req/s split by ready replicas)",
            )
        grid.add_row("operator", f"canaria run, pid {operator.pid}, log {operator.log_path}")
        grid.add_row("kubeconfig", str(kubeconfig))
        if script is not None:
            grid.add_row("story", script.source)
            grid.add_row("shortened", "; ".join(script.shortened) or "nothing")
        self.console.print(grid)
        self.console.print()

    def _cluster(self, work: Path, traffic: Traffic) -> contextlib.AbstractContextManager[SandboxCluster]:
        assets = find_control_plane() if self.cluster != "emulator" else None
        if assets is None and self.cluster == "control-plane":
            raise NoControlPlane(
                "no control plane binaries: set KUBEBUILDER_ASSETS to a folder with etcd, kube-apiserver and "
                f"kube-controller-manager (setup-envtest puts them under {ENVTEST_CACHE})"
            )
        if assets is not None:
            return control_plane_cluster(assets, work, traffic)
        return emulated_cluster(READY_DELAY, traffic)

    def _kept(
        self, kubeconfig: Path, script: Script | None, operator: OperatorProcess, prometheus: str
    ) -> None:
        name = script.name if script else "NAME"
        namespace = script.namespace if script else "default"
        console = self.console
        console.print(
            Text.assemble(
                ("\nThe sandbox keeps running; Ctrl-C stops it.\n", "bold"),
                f"kubeconfig: {kubeconfig}\n",
                f"  export KUBECONFIG={kubeconfig}\n",
                f"  canaria status {name} -n {namespace}          (the story's, in its own namespace)\n",
                f"  kubectl get md,deployments,events -n {namespace}\n",
                "  kubectl apply -f manifests/examples/01-first-deployment.yaml   "
                "(your own, in namespace default; a simulated model server starts for each)\n",
                f"  kubectl annotate md {name} -n {namespace} "
                f'{SIMULATE_ANNOTATION}=\'{{"v4": {{"errorRate": 0.2}}}}\'   (make a version misbehave)\n',
                f"Prometheus: {prometheus}. The operator uses it for every ModelDeployment without "
                f"spec.prometheus.address; the examples name {EXAMPLES_PROMETHEUS}, "
                f"which does not exist here: drop that field, or set it to {prometheus}.\n",
            )
        )
        if self.on_keep is not None:
            try:
                console.print(Text(self.on_keep(str(kubeconfig), prometheus), style="bold"))
            except Exception as exc:  # the sandbox is still worth keeping without its dashboard
                console.print(Text(f"dashboard not started: {exc}", style="yellow"))
        while True:
            problem = operator.problem()
            if problem:
                console.print(Text(problem, style="bold red"))
                return
            time.sleep(0.5)
