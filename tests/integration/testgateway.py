"""A small Gateway for tests: one HTTPRoute rendered into nginx configuration, the way NGINX Gateway Fabric
implements HTTPRoute (an `upstream` with weights per rule, `mirror` for RequestMirror, a `map` on a header
choosing between the rules of one path), in front of simulated model servers.

It implements what Canaria's routes use and no more: PathPrefix paths, one Exact header per match, a
mirror of every request (no percent). Anything else raises, so a route it cannot render fails the test
instead of being served wrongly. It plays the Gateway controller only when the test calls `sync()`
(read the route, render, reload, wait for the new configuration to be live): deterministic, no watch.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from canaria.sandbox.processes import free_port

from .harness import wait_for


def _service(ref: dict[str, Any]) -> str:
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        raise NotImplementedError(f"the test gateway routes to Services only, not {ref}")
    return ref["name"]


class NginxGateway:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        route: str,
        backends: dict[str, int],
        workdir: Path,
    ) -> None:
        """`backends`: Service name → 127.0.0.1 port of the server behind it (there are no real Pods);
        a Service not named there has no endpoints."""
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.route, self.backends = namespace, route, backends
        self.dir, self.port, self.control_port = workdir, free_port(), free_port()
        self.conf = workdir / "nginx.conf"
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> NginxGateway:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._write("")
        self.process = subprocess.Popen(
            ["nginx", "-c", str(self.conf), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for("nginx to answer", lambda: self._live_generation() == self.generation, timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> NginxGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the Gateway's job --------------------------------------------------------------------------

    def sync(self) -> str:
        """Render the route as it is now, reload nginx, and return once the new configuration serves."""
        route = self.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self.route
        )
        servers = self.render(route["spec"].get("rules") or [])
        self._write(servers)
        subprocess.run(["nginx", "-s", "reload", "-c", str(self.conf), "-p", str(self.dir)], check=True)
        wait_for("nginx to serve the new configuration", lambda: self._live_generation() == self.generation)
        return servers

    def render(self, rules: list[dict[str, Any]]) -> str:
        """The http-block configuration of `rules`: upstreams, maps and one location per path."""
        upstreams: list[str] = []
        by_path: dict[str, list[tuple[int, dict[str, Any], tuple[str, str] | None]]] = {}
        for index, rule in enumerate(rules):
            servers = [
                f"server 127.0.0.1:{self.backends[_service(ref)]} weight={ref.get('weight', 1)};"
                for ref in rule.get("backendRefs") or []
                if ref.get("weight", 1) > 0 and _service(ref) in self.backends
            ]
            # a Service with no server behind it (no endpoints) answers 500, as a Gateway would
            servers = servers or [f"server 127.0.0.1:{self.control_port} down;"]
            upstreams.append(f"upstream rule{index} {{ {' '.join(servers)} }}")
            for match in rule.get("matches") or [{}]:
                path = match.get("path") or {"type": "PathPrefix", "value": "/"}
                if path.get("type") != "PathPrefix":
                    raise NotImplementedError(f"path match {path}")
                headers = match.get("headers") or []
                if len(headers) > 1 or any(h.get("type", "Exact") != "Exact" for h in headers):
                    raise NotImplementedError(f"header matches {headers}")
                header = (headers[0]["name"], headers[0]["value"]) if headers else None
                by_path.setdefault(path["value"], []).append((index, rule, header))
        locations, maps = [], []
        for n, (path, entries) in enumerate(by_path.items()):
            plain = [(i, r) for i, r, h in entries if h is None]
            matched = [(i, h) for i, _, h in entries if h is not None]
            if len(plain) != 1 or len({h[0] for _, h in matched}) > 1:
                raise NotImplementedError(f"rules of {path}: {entries}")
            base, rule = plain[0]
            target = f"rule{base}"
            if matched:
                variable = f"$pick{n}"
                name = matched[0][1][0].lower().replace("-", "_")
                cases = " ".join(f'"{h[1]}" rule{i};' for i, h in matched)
                maps.append(f"map $http_{name} {variable} {{ default rule{base}; {cases} }}")
                target = variable
            body = [f"proxy_pass http://{target};"]
            for f in rule.get("filters") or []:
                if f["type"] != "RequestMirror":
                    continue  # a header modifier changes nothing the test looks at
                mirror = f["requestMirror"]
                if "percent" in mirror or "fraction" in mirror:
                    raise NotImplementedError("a partial mirror")
                port = self.backends[_service(mirror["backendRef"])]
                upstreams.append(f"upstream mirror{n} {{ server 127.0.0.1:{port}; }}")
                body.insert(0, f"mirror /_mirror{n};")
                locations.append(
                    f"location = /_mirror{n} {{ internal; proxy_pass http://mirror{n}$request_uri; }}"
                )
            locations.append(f"location {path} {{ {' '.join(body)} }}")
        return "\n".join([*upstreams, *maps, "server {", f"listen 127.0.0.1:{self.port};", *locations, "}"])

    # -- requests ------------------------------------------------------------------------------------

    def send(
        self, count: int, path: str = "/predict", headers: dict[str, str] | None = None
    ) -> dict[str, int]:
        """Send `count` requests through the gateway; version → answers the callers got."""
        answers: dict[str, int] = {}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            for _ in range(count):
                connection.request("POST", path, body=b'{"features": [1, 2]}', headers=headers or {})
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise AssertionError(f"{path}: {response.status} {body[:200]!r}")
                version = json.loads(body)["version"]
                answers[version] = answers.get(version, 0) + 1
        finally:
            connection.close()
        return answers

    # -- internals -------------------------------------------------------------------------------------

    def _write(self, servers: str) -> None:
        self.generation += 1
        tmp = self.dir / "tmp"
        # a second server answers with the generation of the configuration, so a reload is seen to be live
        listen = f"listen 127.0.0.1:{self.control_port};"
        generation = f'server {{ {listen} location = / {{ return 200 "{self.generation}"; }} }}'
        self.conf.write_text(
            "\n".join(
                [
                    "daemon off;",
                    "worker_processes 1;",
                    *(["user root;"] if os.geteuid() == 0 else []),
                    f"pid {self.dir / 'nginx.pid'};",
                    f"error_log {self.dir / 'error.log'} warn;",
                    "events { worker_connections 256; }",
                    "http {",
                    "access_log off;",
                    "keepalive_requests 100000;",  # one test connection sends them all
                    *(
                        f"{kind}_temp_path {tmp / kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                    ),
                    generation,
                    servers,
                    "}",
                ]
            )
        )

    def _live_generation(self) -> int | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=1)
        try:
            connection.request("GET", "/")
            return int(connection.getresponse().read())
        except (OSError, ValueError):
            return None
        finally:
            connection.close()
