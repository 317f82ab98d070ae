"""A throw-away Prometheus on 127.0.0.1, for tests, benchmarks and `canaria sandbox`.

The analysis runner is only as trustworthy as the Prometheus it was tested against, so tests run the real
server (the Debian ``prometheus`` package) rather than a fake: PromQL parsing, error bodies, ``rate()``
extrapolation and ``histogram_quantile`` are then exactly what a cluster's Prometheus does.

Each instance gets a free loopback port, its own TSDB in a temp dir and a 1 s scrape and evaluation
interval. Prometheus 2.x hands new targets to its scrapers on a 5 s tick, so the first sample arrives
5-6 s after ready and the first ``rate()`` about a second later: poll with `wait_for_series`, never sleep.
`set_targets` rewrites the config and reloads it (SIGHUP), so a simulated model server can be added
without a restart. The remote-write receiver is
on, so a test can also push exact samples.

The process is always ours to stop: `stop` (idempotent) terminates it and kills it after a grace period;
on Linux the child also gets SIGKILL if the thread that started it dies (e.g. pytest is killed), and a
finalizer stops it when the object is garbage-collected or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

from canaria.sandbox.processes import die_with_parent, free_port

INSTALL_HINT = "apt-get install -y prometheus"
BINARY_ENV = "CANARIA_PROMETHEUS_BINARY"


class PrometheusNotFound(RuntimeError):
    """No ``prometheus`` binary: the message says how to install one."""


class PrometheusStartError(RuntimeError):
    """Prometheus exited or never became ready; the message holds the tail of its log."""


def find_prometheus(binary: str | os.PathLike[str] | None = None) -> str:
    """Path of the ``prometheus`` binary: ``binary``, else $CANARIA_PROMETHEUS_BINARY, else PATH."""
    candidate = str(binary) if binary is not None else os.environ.get(BINARY_ENV) or "prometheus"
    found = shutil.which(candidate)
    if found is None:
        raise PrometheusNotFound(
            f"prometheus binary not found ({candidate!r}); install it with `{INSTALL_HINT}` "
            f"(Debian/Ubuntu) or set {BINARY_ENV}"
        )
    return found


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; always reaps the child."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _target_address(target: str) -> str:
    """``host:port`` from ``host:port`` or ``http://host:port[/metrics]``."""
    for scheme in ("http://", "https://"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
    return target.split("/", 1)[0]


class LocalPrometheus:
    """A real Prometheus on a free 127.0.0.1 port scraping ``targets`` (``host:port``) every second.

    Usage::

        with LocalPrometheus(["127.0.0.1:8000"]) as prom:
            prom.wait_for_series('up{job="canaria"} == 1')
            ... PrometheusConnect(prom.url) ...

    ``.url`` is the base URL once started. ``stop()`` is idempotent and safe after a failed start.
    """

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        binary: str | os.PathLike[str] | None = None,
        scrape_interval: float = 1.0,
        job: str = "canaria",
        work_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.binary = find_prometheus(binary)
        self.job = job
        self.scrape_interval = scrape_interval
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._targets = [_target_address(t) for t in targets]
        self._own_dir = work_dir is None
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()
        self.port: int | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self.port is None:
            raise RuntimeError("LocalPrometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise RuntimeError("LocalPrometheus is not started")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        return self.work_dir / "prometheus.log"

    def start(self) -> LocalPrometheus:
        """Start Prometheus and wait for /-/ready. Retries on a lost free-port race."""
        with self._lock:
            if self._process is not None:
                raise RuntimeError("LocalPrometheus is already started")
            if self._work_dir is None:
                self._work_dir = Path(tempfile.mkdtemp(prefix="canaria-prometheus-"))
            self._work_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            last_error: PrometheusStartError | None = None
            for _attempt in range(3):
                try:
                    self._start_once()
                    return self
                except PrometheusStartError as error:
                    last_error = error
                    self._stop_process()
                    if "address already in use" not in str(error):
                        break
            self._cleanup_dir()
            assert last_error is not None
            raise last_error

    def _write_config(self) -> None:
        millis = max(1, round(self.scrape_interval * 1000))
        interval = f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "static_configs": [{"targets": self._targets}] if self._targets else [],
                }
            ],
        }
        tmp = self.work_dir / "prometheus.yml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.work_dir / "prometheus.yml")

    def _start_once(self) -> None:
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after spawn
        try:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.work_dir / 'prometheus.yml'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.work_dir / 'data'}",
                    "--web.enable-remote-write-receiver",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                preexec_fn=die_with_parent(),
            )
        finally:
            log.close()
        self._finalizer = weakref.finalize(self, _terminate, self._process, self.stop_timeout)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusStartError(
                    f"prometheus exited with {self._process.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise PrometheusStartError(f"prometheus not ready after {self.ready_timeout:g}s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """Last lines of Prometheus' log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, RuntimeError):
            return "(no log)"

    def stop(self) -> None:
        """Terminate Prometheus (SIGKILL after ``stop_timeout``) and remove its temp dir. Idempotent."""
        with self._lock:
            self._stop_process()
            self._cleanup_dir()

    def _stop_process(self) -> None:
        if self._process is not None:
            _terminate(self._process, self.stop_timeout)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            self._process = None

    def _cleanup_dir(self) -> None:
        if self._own_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------- targets

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the scrape targets: rewrite the config and reload it (SIGHUP).

        Prometheus 2.x applies new scrape targets on its scrape manager's 5 s tick, so the first sample of
        a new target arrives 5-6 s later; use `wait_for_series` rather than a sleep.
        """
        with self._lock:
            self._targets = [_target_address(t) for t in targets]
            if self._work_dir is not None:
                self._write_config()
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGHUP)

    # ------------------------------------------------------------------------------------- queries

    def query(self, query: str, timeout: float = 5.0) -> list[Any]:
        """``data.result`` of an instant query (raises on an error answer): a test helper, not the
        analysis path."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=timeout)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        result: list[Any] = body["data"]["result"]
        return result

    def wait_for_series(self, query: str, timeout: float = 15.0, interval: float = 0.1) -> list[Any]:
        """Poll ``query`` until it returns data and return it; TimeoutError (with the last answer) if it
        does not within ``timeout``. Prefer this to sleeping: data arrives ~2.5 s after ready for rate()."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                result = self.query(query)
                # A scalar answer is [ts, "v"]; a vector or matrix with elements has data.
                if result:
                    return result
                last = result
            except (requests.RequestException, ValueError) as error:
                last = error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no data for {query!r} after {timeout:g}s (last answer: {last!r})")
            time.sleep(interval)
