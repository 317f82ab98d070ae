"""Start the operator: kopf with Canaria's handlers, the liveness probe and the metrics endpoint.

`canaria run` parses its flags and calls `run`; nothing here reads argv, so the image, the tests and the
sandbox start the same operator the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunOptions:
    """How `canaria run` was asked to run (the chart passes these as flags)."""

    namespaces: tuple[str, ...] = ()
    prometheus_address: str | None = None
    kubeconfig: str | None = None
    liveness_port: int = 8080
    metrics_port: int = 9464
    bind_address: str = "0.0.0.0"
    log_format: str = "plain"
    verbose: bool = False


def run(options: RunOptions) -> int:
    """Run the operator until it is stopped; the exit code for the process."""
    import kopf
    from prometheus_client import start_http_server

    from canaria.kube import handlers, telemetry
    from canaria.kube.reconciler import Settings

    kopf.configure(
        verbose=options.verbose,
        log_format={"plain": kopf.LogFormat.PLAIN, "json": kopf.LogFormat.JSON}[options.log_format],
    )
    handlers.configure(Settings(prometheus_address=options.prometheus_address), options.kubeconfig)
    if options.metrics_port:
        start_http_server(options.metrics_port, addr=options.bind_address)
    telemetry.UP.set(1)
    liveness = (
        f"http://{options.bind_address}:{options.liveness_port}/healthz" if options.liveness_port else None
    )
    kopf.run(
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=liveness,
    )
    return 0
