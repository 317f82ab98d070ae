"""`canaria dashboard`: a local web UI over the user's kubeconfig, served by aiohttp (already in the
operator's dependency closure through kopf, so the dashboard adds no server library).

Routes: ``/`` (overview) and ``/md/<namespace>/<name>`` (one ModelDeployment) are one static page whose
script asks the JSON API: ``/api/overview``, ``/api/md/<ns>/<name>``, ``/api/md/<ns>/<name>/series``. Pages
follow changes through ``/api/stream``, server-sent events fed by one watch on ModelDeployments. With
``--allow-actions``, ``POST /api/md/<ns>/<name>/<action>`` issues exactly the CLI's command (the same
annotation, the core's preconditions, the user's identity); without it the endpoint answers 403. A POST must
carry ``X-Canaria-Dashboard: 1``: a cross-site form cannot set that header, so another web page open in the
same browser cannot press the buttons.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from aiohttp import web

from canaria import GROUP, PLURAL, VERSION
from canaria.cli.commands import check_command, command_patch
from canaria.cli.dashboard import series, views
from canaria.cli.history import merge_history
from canaria.cli.session import CtlError, Session
from canaria.core.commands import new_command

STATIC = files("canaria.cli.dashboard") / "static"
HEARTBEAT = 15.0  # seconds between SSE comments, so proxies and browsers keep the stream open


def _now() -> datetime:
    return datetime.now(UTC)


class Dashboard:
    """The dashboard's state: the session, its scope, and the browsers listening to the stream."""

    def __init__(
        self,
        session: Session,
        *,
        all_namespaces: bool,
        allow_actions: bool,
        prometheus_address: str | None = None,
    ) -> None:
        self.session = session
        self.all_namespaces = all_namespaces
        self.allow_actions = allow_actions
        self.prometheus_address = prometheus_address
        self.listeners: set[asyncio.Queue[str]] = set()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _in(self, namespace: str) -> Session:
        if not self.all_namespaces and namespace != self.session.namespace:
            raise web.HTTPNotFound(text=f"namespace {namespace} is not shown by this dashboard")
        return dataclasses.replace(self.session, namespace=namespace)

    # -- pages and data --------------------------------------------------------------------------------

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")

    async def overview(self, _: web.Request) -> web.Response:
        resources = await asyncio.to_thread(self.session.list, self.all_namespaces)
        return web.json_response(
            {
                "rows": views.overview(resources),
                "scope": "all namespaces" if self.all_namespaces else self.session.namespace,
                "allowActions": self.allow_actions,
            }
        )

    async def detail(self, request: web.Request) -> web.Response:
        session = self._in(request.match_info["namespace"])
        name = request.match_info["name"]
        try:
            res = await asyncio.to_thread(session.get, name)
        except CtlError as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        try:
            events = await asyncio.to_thread(session.events, name)
        except CtlError:
            events = []
        data = views.detail(res, events, _now(), allow_actions=self.allow_actions)
        return web.json_response(data, dumps=lambda d: json.dumps(d, default=str))

    async def series(self, request: web.Request) -> web.Response:
        session = self._in(request.match_info["namespace"])
        try:
            res = await asyncio.to_thread(session.get, request.match_info["name"])
        except CtlError as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        address = self.prometheus_address or (res.spec.prometheus.address if res.spec else None)
        if not address:
            return web.json_response({"error": "no Prometheus address: start with --prometheus-address"})
        now = _now()
        start = views.window_start(merge_history(res.body, []), now)
        metrics = views.metric_queries(res)
        data = await asyncio.to_thread(series.query_series, address, metrics, start, now)
        return web.json_response({"start": start.timestamp(), "end": now.timestamp(), "metrics": data})

    # -- actions -------------------------------------------------------------------------------------

    async def act(self, request: web.Request) -> web.Response:
        if not self.allow_actions:
            raise web.HTTPForbidden(text="read-only dashboard: start it with --allow-actions to act")
        if request.headers.get("X-Canaria-Dashboard") != "1":
            raise web.HTTPForbidden(text="missing X-Canaria-Dashboard header")
        action = request.match_info["action"]
        if action not in views.ACTIONS:
            raise web.HTTPNotFound(text=f"unknown action {action}")
        session = self._in(request.match_info["namespace"])
        name = request.match_info["name"]
        body = await request.json() if request.can_read_body else {}
        full = bool(body.get("full"))

        def issue() -> dict[str, Any]:
            res = session.get(name)
            check_command(action, res, full=full)
            command = new_command(
                action, user=session.default_user(), reason=body.get("reason"), full=full, now=_now()
            )
            session.patch(name, command_patch(command.to_annotation()))
            return {"action": action, "id": command.id, "user": command.user}

        try:
            return web.json_response(await asyncio.to_thread(issue))
        except CtlError as exc:
            return web.json_response({"error": str(exc)}, status=409)

    # -- live updates --------------------------------------------------------------------------------

    def _publish(self, message: str) -> None:
        for queue in list(self.listeners):
            queue.put_nowait(message)

    def _watch(self) -> None:
        """One watch on ModelDeployments (with reconnects): every change is a message to every page."""
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.session.api)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                if self.all_namespaces:
                    source = stream.stream(
                        custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=30
                    )
                else:
                    source = stream.stream(
                        custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.session.namespace,
                        PLURAL,
                        timeout_seconds=30,
                    )
                for event in source:
                    if self._stop.is_set():
                        break
                    meta = event["object"].get("metadata", {})
                    message = json.dumps(
                        {"type": event["type"], "namespace": meta.get("namespace"), "name": meta.get("name")}
                    )
                    if self._loop is not None:
                        self._loop.call_soon_threadsafe(self._publish, message)
            except Exception:  # the API server went away: retry after a pause, the pages keep their data
                self._stop.wait(2.0)
            finally:
                stream.stop()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.listeners.add(queue)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT)
                    await response.write(f"data: {message}\n\n".encode())
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(queue)
        return response

    async def _lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        watcher = threading.Thread(target=self._watch, name="canaria-dashboard-watch", daemon=True)
        watcher.start()
        yield
        self._stop.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.cleanup_ctx.append(self._lifecycle)
        app.router.add_get("/", self.page)
        app.router.add_get("/md/{namespace}/{name}", self.page)
        app.router.add_get("/api/overview", self.overview)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/md/{namespace}/{name}", self.detail)
        app.router.add_get("/api/md/{namespace}/{name}/series", self.series)
        app.router.add_post("/api/md/{namespace}/{name}/{action}", self.act)
        app.router.add_static("/static/", str(STATIC))
        return app


async def serve(
    dashboard: Dashboard, host: str, port: int, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until cancelled; prints the address (with the port the OS chose for --port 0)."""
    runner = web.AppRunner(dashboard.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    mode = "actions allowed" if dashboard.allow_actions else "read-only"
    url = f"http://{host}:{bound}/"
    print(f"Canaria dashboard on {url} ({mode}; Ctrl-C stops it)", flush=True)
    if on_ready is not None:
        on_ready(url)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
