"""kmock's KubernetesEmulator, made to keep the promises a real API server keeps for Canaria.

kmock 0.8's emulator is an in-memory dict over HTTP: it ignores generateName, resourceVersion, label
selectors, content types and the status subresource, answers PUT with 404 and keeps every request
forever. The operator must never be bent to that, so `SandboxEmulator` replaces the object semantics
(kmock's discovery, routing, error rendering and DSL reactions stay) with the API server's, for
everything Canaria, kopf, the kubernetes client and ``kubectl get`` rely on:

- **metadata**: ``generateName`` (5 random characters), ``uid``, ``creationTimestamp``,
  ``resourceVersion`` (one global counter), ``generation`` (bumped only when something outside
  metadata and status changes), ``metadata.namespace`` taken from the URL (a different one is a 400),
  ``managedFields`` per manager and subresource (``?fieldManager=`` or the User-Agent's product);
- **writes**: POST answers 201 (409 AlreadyExists for a taken name); PUT replaces, 409 Conflict on a
  stale ``resourceVersion`` (required for custom resources); PATCH by Content-Type: merge patch
  (RFC 7386), JSON patch (a failed ``test`` is a 422, as kopf expects), strategic merge for built-in
  types (approximated by a merge patch: lists are replaced, not merged by key; custom resources get 415
  as from a real server), and server-side apply (create or merge; fields the same manager applied before
  and left out now are removed; other managers' fields conflict unless ``force=true``). A write that
  changes nothing keeps the resourceVersion and sends no watch event;
- **status subresource**: writes to the main resource keep the stored status; writes to ``/status``
  change only the status (never the spec, never the generation);
- **reads**: lists carry ``kind: <Kind>List``, ``apiVersion`` and the current resourceVersion; label
  selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and field selectors (any dotted
  path, ``=``/``==``/``!=``) filter lists and watches; ``?watch`` resumes after a resourceVersion
  from a bounded event log (410 Gone when it is older than the log), honours ``timeoutSeconds``, and
  ``sendInitialEvents`` ends with the initial-events-end bookmark; a ``Table`` is served to kubectl with
  the CRD's printer columns;
- **deletion**: finalizers hold an object with a ``deletionTimestamp`` until they are removed; a deleted
  object's dependents (``ownerReferences`` by uid) are garbage-collected (background; ``Orphan`` removes
  the reference instead);
- **controllers**: a tiny Deployment controller sets ``status.replicas/readyReplicas/updatedReplicas/
  availableReplicas/observedGeneration`` and the Available/Progressing conditions ``ready_delay``
  seconds after a Deployment's spec changes (every Pod becomes ready at once: there are no Pods); a
  tiny Job controller hands a new Job to ``job_runner`` (the sandbox runs its command as a local
  process), then records its one Pod, terminated with the exit code and output tail, and the Job's
  Complete or Failed condition;
- **namespaces**: ``/api/v1/namespaces[/NAME]`` (a 500 in kmock's URL parsing) answers with the
  namespaces in use; creating a CRD registers its resource for discovery;
- **memory**: kmock's request log and per-object history are capped;
- **validation of ModelDeployments**: a spec the CRD's schema or CEL rules would refuse is refused with
  422 naming the field (through the API models the CRD is generated from), so `kubectl apply` of an
  invalid example fails at apply time as on a cluster.

Not emulated (the sandbox needs none of it): authentication and RBAC, schema validation of other
resources and defaulting, admission, pagination (a list
returns everything), Pods (but the one a finished Job ran), ReplicaSets, Endpoints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import logging
import random
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import parsing  # only to route /api/v1/namespaces, which kmock's parser refuses
from pydantic import ValidationError

from canaria import GROUP, KIND, PLURAL
from canaria.core.api import ModelDeploymentSpec
from canaria.core.problems import describe_errors

log = logging.getLogger("canaria.sandbox.emulator")

ObjectKey = tuple[kmock.resource, str | None, str]
Listener = Callable[[str, kmock.resource, dict[str, Any]], None]

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server draws generateName suffixes from
_SYSTEM_METADATA = ("uid", "creationTimestamp", "resourceVersion", "generation", "managedFields")
_BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "events.k8s.io",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
    "discovery.k8s.io",
    "storage.k8s.io",
}
_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?$")

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
SERVICES = kmock.resource("", "v1", "services")
EVENTS = kmock.resource("", "v1", "events")
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
#: Runs a Job (its body) to the end: (exit code, tail of its output).
JobRunner = Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ pure helpers


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of nested dicts (a list is a leaf: the emulator treats lists as atomic)."""
    if not isinstance(obj, dict) or (not obj and prefix):
        return {prefix: obj}
    leaves: dict[tuple[str, ...], Any] = {}
    for key, value in obj.items():
        leaves.update(leaf_paths(value, (*prefix, key)))
    return leaves


def _owned_paths(obj: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """Leaves that field ownership is tracked for (everything but identity and system metadata)."""
    return {
        path: value
        for path, value in leaf_paths(obj).items()
        if path
        and path[0] not in ("apiVersion", "kind")
        and not (
            path[0] == "metadata" and (len(path) < 2 or path[1] in (*_SYSTEM_METADATA, "name", "namespace"))
        )
    }


def fields_v1(paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    """The FieldsV1 form of a set of paths: ``{"f:spec": {"f:replicas": {}}}``."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def paths_of_fields_v1(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for key, sub in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if sub:
            paths |= paths_of_fields_v1(sub, path)
        else:
            paths.add(path)
    return paths


def _get_path(obj: Any, path: Iterable[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _delete_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove a leaf and the dicts it leaves empty."""
    parents = [obj]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Apply's merge: dicts merge recursively, lists and scalars replace (no nulls in apply configs)."""
    result = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# -- selectors ----------------------------------------------------------------------------------

_SELECTOR_TERM = re.compile(
    r"""\s*(?:
        (?P<notexists>!\s*(?P<nkey>[^\s,!=()]+)) |
        (?P<setkey>[^\s,!=()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\) |
        (?P<key>[^\s,!=()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,!=()]*) |
        (?P<exists>[^\s,!=()]+)
    )\s*(?:,|$)""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    pass


def parse_selector(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """A label selector as (key, op, values) terms; op is one of = != in notin exists !exists."""
    terms: list[tuple[str, str, tuple[str, ...]]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _SELECTOR_TERM.match(text, pos)
        if not match or match.end() == pos:
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        if match["notexists"]:
            terms.append((match["nkey"], "!exists", ()))
        elif match["setkey"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            terms.append((match["setkey"], match["setop"], values))
        elif match["key"]:
            terms.append((match["key"], "!=" if match["op"] == "!=" else "=", (match["value"],)))
        else:
            terms.append((match["exists"], "exists", ()))
        pos = match.end()
    return terms


def selector_matches(
    terms: list[tuple[str, str, tuple[str, ...]]], values: Callable[[str], str | None]
) -> bool:
    for key, op, wanted in terms:
        value = values(key)
        if op == "=" and value != wanted[0]:
            return False
        if op == "!=" and value == wanted[0]:
            return False
        if op == "in" and value not in wanted:
            return False
        if op == "notin" and value in wanted:
            return False
        if op == "exists" and value is None:
            return False
        if op == "!exists" and value is not None:
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> str | None:
    value = _get_path(obj, path.split("."))
    if value is None:
        return None if path not in ("metadata.namespace",) else ""
    return value if isinstance(value, str) else json.dumps(value)


def _header(request: kmock.Request, name: str) -> str:
    """A request header, case-insensitively (kmock keeps them as sent)."""
    lowered = name.lower()
    for key, value in request.headers.items():
        if key.lower() == lowered:
            return value
    return ""


def _content_type(request: kmock.Request) -> str:
    return _header(request, "Content-Type").split(";")[0].strip()


def _parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _age(timestamp: str | None) -> str:
    """A timestamp as kubectl shows it (the API server formats Table dates this way)."""
    then = _parse_time(timestamp) if timestamp else None
    if then is None:
        return "<unknown>"
    seconds = max(int((datetime.now(UTC) - then).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60}m" if seconds < 36000 else f"{seconds // 3600}h"


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> kmock.Response:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return kmock.Response(status=code, payload=body)


def _ok(payload: Any, status: int = 200) -> kmock.Response:
    """Every answer carries its status explicitly: kmock's Response rendering stores the status of
    a Response payload on the (shared) reaction, so an implicit 200 after a 201 would answer 201."""
    return payload if isinstance(payload, kmock.Response) else kmock.Response(status=status, payload=payload)


def _admit(resource: Any, body: dict[str, Any]) -> None:
    """Refuse a ModelDeployment whose spec the API server's schema and CEL rules would refuse, naming the
    field as it would: the CRD is generated from the same models, so validating through them is the
    emulator's stand-in for OpenAPI and CEL validation."""
    if resource is None or resource.group != GROUP or resource.plural != PLURAL:
        return
    try:
        ModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        name = (body.get("metadata") or {}).get("name", "")
        problems = describe_errors(exc, prefix="spec")
        raise _Abort(422, "Invalid", f'{KIND}.{GROUP} "{name}" is invalid: {problems}') from exc


class _Abort(Exception):
    """An API error answer, raised from deep inside a write and rendered as a Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.response = _status(code, reason, message, details)


# ---------------------------------------------------------------------------------------- emulator


@attrs.define(kw_only=True)
class SandboxEmulator(kmock.KubernetesEmulator):
    """A KubernetesEmulator with the API server semantics listed in the module docstring.

    ``ready_delay`` is how long a Deployment takes to report its replicas ready; ``listeners`` are
    called (in the emulator's event loop, synchronously) with every watch event, which is how the
    sandbox's simulated model servers follow the replica split.
    """

    ready_delay: float = 0.5
    history_limit: int = 5  # object versions kept per object (kmock keeps all)
    request_limit: int = 200  # requests kept for assertions (kmock keeps all)
    event_log_limit: int = 2000  # watch events kept per resource for resuming watches
    event_ttl: float = 3600.0  # Events are deleted after this long (kube-apiserver's --event-ttl)
    listeners: list[Listener] = attrs.field(factory=list)
    job_runner: JobRunner | None = None

    _rv: int = attrs.field(default=0, init=False)
    _events: dict[kmock.resource, collections.deque[tuple[int, dict[str, Any]]]] = attrs.field(
        factory=dict, init=False
    )
    _gone_below: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)
    _watchers: dict[kmock.resource, set[asyncio.Queue[dict[str, Any]]]] = attrs.field(
        factory=dict, init=False
    )
    _applied: dict[tuple[ObjectKey, str], dict[str, Any]] = attrs.field(factory=dict, init=False)
    _pending: dict[ObjectKey, asyncio.TimerHandle] = attrs.field(factory=dict, init=False)
    _started: str = attrs.field(factory=now_rfc3339, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # registers _serve_list/_watch/_fetch/_create/_update/_delete
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_delete
        self.fallback[kmock.method.PATCH] << self._serve_update

    # -- plumbing -------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            match = _NAMESPACES_PATH.match(raw_request.path)
            if match:  # kmock's URL parser fails on these; route them as a v1/namespaces resource
                return await self._handle(await self._parse_namespace_request(raw_request, match))
            return await super().__call__(raw_request)
        finally:
            self._trim_requests()

    async def _parse_namespace_request(
        self, raw_request: aiohttp.web.BaseRequest, match: re.Match[str]
    ) -> kmock.Request:
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        name, subresource = match.group(1), match.group(2)
        method = kmock.method(raw_request.method)
        path = parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode(errors="replace"),
            action=parsing.guess_k8s(path, method, dict(raw_request.query)),
            resource=NAMESPACES,
            namespace=None,
            name=name,
            subresource=subresource,
        )
        self._requests.append(request)
        return request

    def _trim_requests(self) -> None:
        limit = self.request_limit
        for errors in self._errors:  # kmock keeps every exception a handler raised, for assertions
            del errors[:-limit]
        if len(self._requests) > limit:
            del self._requests[: len(self._requests) - limit // 2]
        for payload in self._payloads:
            if len(payload._requests) > limit:
                del payload._requests[: len(payload._requests) - limit // 2]

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it mutates objects with kmock's loose semantics before
        # routing. Routing (user reactions first, then the fallbacks overridden below) stays kmock's.
        return await kmock.RawHandler._handle(self, request)

    def _resource_info(self, request: kmock.Request) -> kmock.ResourceInfo | None:
        resource = request.resource
        if resource is None or not resource.plural or resource not in self.resources:
            return None
        return self.resources[resource]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _manager(self, request: kmock.Request) -> str:
        manager = request.params.get("fieldManager")
        if manager:
            return manager
        agent = _header(request, "User-Agent") or "unknown"
        return agent.split("/", 1)[0] or "unknown"

    def _key(self, request: kmock.Request, name: str) -> ObjectKey:
        assert request.resource is not None
        return (request.resource, request.namespace, name)

    def _current(self, key: ObjectKey) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _store(self, key: ObjectKey, body: dict[str, Any]) -> None:
        if key in self.objects and not self.objects[key].deleted:
            history = self.objects[key].history
            history.append(body)
            if len(history) > self.history_limit:
                del history[: len(history) - self.history_limit]
        else:
            self.objects[key] = body

    def _publish(self, kind: str, resource: kmock.resource, body: dict[str, Any]) -> None:
        """Record a watch event (for resuming watches), stream it, tell the listeners."""
        rv = int(body["metadata"]["resourceVersion"])
        log_ = self._events.setdefault(resource, collections.deque())
        event = {"type": kind, "object": body}
        log_.append((rv, event))
        while len(log_) > self.event_log_limit:
            dropped, _ = log_.popleft()
            self._gone_below[resource] = dropped + 1
        for queue in self._watchers.get(resource, ()):
            queue.put_nowait(event)
        for listener in list(self.listeners):
            try:
                listener(kind, resource, body)
            except Exception:
                log.exception("sandbox listener failed on %s %s", kind, resource)

    def _kind(self, request: kmock.Request, info: kmock.ResourceInfo) -> tuple[str, str]:
        resource = request.resource
        assert resource is not None
        api_version = f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
        return api_version, info.kind or resource.plural.capitalize()

    @staticmethod
    def _has_status(info: kmock.ResourceInfo) -> bool:
        return "status" in info.subresources

    def _not_found(self, request: kmock.Request, name: str | None) -> kmock.Response:
        resource = request.resource
        assert resource is not None
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return _status(
            404,
            "NotFound",
            f'{what} "{name}" not found',
            {"name": name, "group": resource.group, "kind": resource.plural},
        )

    # -- managed fields ---------------------------------------------------------------------------

    def _record_fields(
        self,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        *,
        manager: str,
        operation: str,
        subresource: str | None,
        applied: dict[str, Any] | None = None,
    ) -> None:
        """Update new.metadata.managedFields: the writer owns what it changed (or applied)."""
        old_leaves = _owned_paths(old or {})
        new_leaves = _owned_paths(new)
        changed = {p for p in old_leaves.keys() | new_leaves.keys() if old_leaves.get(p) != new_leaves.get(p)}
        entries = copy.deepcopy((old or {}).get("metadata", {}).get("managedFields") or [])
        mine_key = (manager, operation, subresource)
        result = []
        mine: set[tuple[str, ...]] = set()
        for entry in entries:
            paths = paths_of_fields_v1(entry.get("fieldsV1") or {})
            if (entry.get("manager"), entry.get("operation"), entry.get("subresource")) == mine_key:
                mine = paths
                continue
            paths = {p for p in paths if p in new_leaves and p not in changed}
            if paths:
                result.append({**entry, "fieldsV1": fields_v1(sorted(paths))})
        if applied is not None:
            mine = {p for p in _owned_paths(applied) if p in new_leaves}
        else:
            mine = {p for p in mine | changed if p in new_leaves}
        if mine:
            entry: dict[str, Any] = {
                "manager": manager,
                "operation": operation,
                "apiVersion": new.get("apiVersion", ""),
                "time": now_rfc3339(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(sorted(mine)),
            }
            if subresource:
                entry["subresource"] = subresource
            result.append(entry)
        new["metadata"]["managedFields"] = result

    # -- the write path -------------------------------------------------------------------------

    def _commit(
        self,
        request: kmock.Request,
        info: kmock.ResourceInfo,
        key: ObjectKey,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        operation: str = "Update",
        applied: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store an update of an existing object with the API server's bookkeeping."""
        subresource = request.subresource
        api_version, kind = self._kind(request, info)
        new["apiVersion"], new["kind"] = api_version, kind
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for field in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if self._has_status(info):
            if subresource == "status":  # /status changes the status only
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
                meta = new["metadata"]
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if _spec_part(new) != _spec_part(old):
            _admit(request.resource, new)
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        meta["managedFields"] = old_meta.get("managedFields") or []
        if new == old:
            return old  # no-op: same resourceVersion, no event (like a real API server)
        self._record_fields(
            old,
            new,
            manager=self._manager(request),
            operation=operation,
            subresource=subresource,
            applied=applied,
        )
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(key, new)
        meta["resourceVersion"] = self._next_rv()
        self._store(key, new)
        self._publish("MODIFIED", key[0], new)
        self._after_write(key, old, new)
        return new

    def _create(
        self,
        request: kmock.Request,
        info: kmock.ResourceInfo,
        body: dict[str, Any],
        *,
        operation: str = "Update",
        applied: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        resource = request.resource
        assert resource is not None
        api_version, kind = self._kind(request, info)
        body = copy.deepcopy(body)
        body["apiVersion"], body["kind"] = api_version, kind
        meta = body.setdefault("metadata", {})
        if info.namespaced:
            if request.namespace is None:
                raise _Abort(
                    405, "MethodNotAllowed", f"create {resource.plural} needs a namespace in the URL"
                )
            if meta.get("namespace") not in (None, "", request.namespace):
                raise _Abort(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = request.namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _Abort(
                    422,
                    "Invalid",
                    f'{kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            for _ in range(10):
                candidate = prefix + "".join(random.choices(_NAME_ALPHABET, k=5))
                if self._current(self._key(request, candidate)) is None:
                    meta["name"] = candidate
                    break
        name = meta["name"]
        key = self._key(request, name)
        if self._current(key) is not None:
            what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            raise _Abort(
                409,
                "AlreadyExists",
                f'{what} "{name}" already exists',
                {"name": name, "group": resource.group, "kind": resource.plural},
            )
        for field in (*_SYSTEM_METADATA, "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if _spec_part(body):
            meta["generation"] = 1
        if self._has_status(info):
            body.pop("status", None)
            if resource.group in _BUILTIN_GROUPS:  # a Go struct, not a pointer: always serialized
                body["status"] = {"loadBalancer": {}} if resource == SERVICES else {}
        _default(resource, body)
        _admit(resource, body)
        self._record_fields(
            None, body, manager=self._manager(request), operation=operation, subresource=None, applied=applied
        )
        if request.params.get("dryRun"):
            return body
        meta["resourceVersion"] = self._next_rv()
        self._store(key, body)
        self._publish("ADDED", resource, body)
        self._after_write(key, None, body)
        if resource == EVENTS:
            self._expire_events()
        return body

    def _expire_events(self) -> None:
        """Events live for ``event_ttl`` seconds, as on a real API server (--event-ttl, 1h)."""
        now = datetime.now(UTC)
        for key in [k for k in self.objects if k[0] == EVENTS]:
            obj = self._current(key)
            born = _parse_time((obj or {}).get("metadata", {}).get("creationTimestamp") or "")
            if obj is not None and born is not None and (now - born).total_seconds() > self.event_ttl:
                self._remove(key, obj)

    def _remove(self, key: ObjectKey, body: dict[str, Any]) -> dict[str, Any]:
        """Really delete: the final DELETED event, then garbage-collect the dependents."""
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = self._next_rv()
        del self.objects[key]
        self._applied = {k: v for k, v in self._applied.items() if k[0] != key}
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._publish("DELETED", key[0], body)
        self._collect_dependents(body["metadata"]["uid"], orphan=False)
        return body

    def _collect_dependents(self, uid: str, *, orphan: bool) -> None:
        """Background garbage collection (or orphaning) of everything owned by ``uid``."""
        for key in list(self.objects.keys()):
            obj = self._current(key)
            if obj is None:
                continue
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                continue
            if orphan:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid] or None
                if new["metadata"]["ownerReferences"] is None:
                    del new["metadata"]["ownerReferences"]
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._store(key, new)
                self._publish("MODIFIED", key[0], new)
            else:
                self._delete(key, obj)

    def _delete(self, key: ObjectKey, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        if obj["metadata"].get("finalizers"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new)
            self._publish("MODIFIED", key[0], new)
            return new
        return self._remove(key, obj)

    def _after_write(self, key: ObjectKey, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        resource = key[0]
        if resource == DEPLOYMENTS and _spec_part(new) != _spec_part(old or {}):
            self._schedule_deployment(key)
        if resource == CRDS:
            self._register_crd(new)
        if resource == JOBS and old is None and self.job_runner is not None:
            asyncio.get_running_loop().create_task(self._run_job(key))

    # -- the tiny Job controller --------------------------------------------------------------------

    async def _run_job(self, key: ObjectKey) -> None:
        """Run the Job, then record its Pod (terminated as a kubelet reports it) and its verdict."""
        job = self._current(key)
        if job is None or self.job_runner is None:
            return
        try:
            code, output = await self.job_runner(copy.deepcopy(job))
        except Exception as exc:  # the command could not start: a failed container, as a kubelet says
            code, output = 128, f"could not run the Job's command: {exc}"
        async with self._lock:
            job = self._current(key)
            if job is None:
                return
            stamp = now_rfc3339()
            namespace, name = key[1], key[2]
            template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
            container = ((template.get("spec") or {}).get("containers") or [{}])[0]
            labels = {
                **((template.get("metadata") or {}).get("labels") or {}),
                "batch.kubernetes.io/job-name": name,
            }
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
            pod_name = f"{name}-{''.join(random.choices(_NAME_ALPHABET, k=5))}"
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "message": output,
            }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [{**owner, "controller": True}],
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": stamp,
                    "resourceVersion": self._next_rv(),
                },
                "spec": template.get("spec") or {},
                "status": {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            "name": container.get("name", ""),
                            "image": container.get("image", ""),
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": terminated},
                        }
                    ],
                },
            }
            self._store((PODS, namespace, pod_name), pod)
            self._publish("ADDED", PODS, pod)
            verdict = "Complete" if code == 0 else "Failed"
            reason = "Completed" if code == 0 else "BackoffLimitExceeded"
            new = copy.deepcopy(job)
            new["status"] = {
                "startTime": job["metadata"].get("creationTimestamp", stamp),
                "succeeded" if code == 0 else "failed": 1,
                "conditions": [
                    {"type": verdict, "status": "True", "reason": reason, "lastTransitionTime": stamp}
                ],
            }
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new)
            self._publish("MODIFIED", JOBS, new)

    # -- the tiny Deployment controller -----------------------------------------------------------

    def _schedule_deployment(self, key: ObjectKey) -> None:
        loop = asyncio.get_running_loop()
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._pending[key] = loop.call_later(
            self.ready_delay, lambda: loop.create_task(self._reconcile_deployment(key))
        )

    async def _reconcile_deployment(self, key: ObjectKey) -> None:
        async with self._lock:
            self._pending.pop(key, None)
            obj = self._current(key)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            spec = obj.get("spec") or {}
            replicas = int(spec.get("replicas", 1))
            status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
            if replicas:
                status |= {
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
            old_conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
            stamp = now_rfc3339()
            conditions = []
            for type_, reason, message in (
                ("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                (
                    "Progressing",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{key[2]}" has successfully progressed.',
                ),
            ):
                previous = old_conditions.get(type_) or {}
                conditions.append(
                    {
                        "type": type_,
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastUpdateTime": previous.get("lastUpdateTime", stamp),
                        "lastTransitionTime": previous.get("lastTransitionTime", stamp),
                    }
                )
            status["conditions"] = conditions
            if obj.get("status") == status:
                return
            new = copy.deepcopy(obj)
            new["status"] = status
            self._record_fields(
                obj, new, manager="kube-controller-manager", operation="Update", subresource="status"
            )
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new)
            self._publish("MODIFIED", key[0], new)

    # -- CRDs ---------------------------------------------------------------------------------------

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            resource = kmock.resource(spec.get("group"), version["name"], names.get("plural"))
            self.resources[resource] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope") == "Namespaced",
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
            )

    def _printer_columns(self, resource: kmock.resource) -> list[dict[str, Any]] | None:
        for key in self.objects:
            if key[0] != CRDS:
                continue
            crd = self._current(key) or {}
            spec = crd.get("spec") or {}
            if (
                spec.get("group") != resource.group
                or (spec.get("names") or {}).get("plural") != resource.plural
            ):
                continue
            for version in spec.get("versions") or []:
                if version.get("name") == resource.version:
                    return version.get("additionalPrinterColumns") or []
        return None

    # -- selectors and tables ---------------------------------------------------------------------

    def _filter(self, request: kmock.Request) -> Callable[[dict[str, Any]], bool]:
        labels = parse_selector(request.params.get("labelSelector", ""))
        fields = parse_selector(request.params.get("fieldSelector", ""))
        namespace = request.namespace

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            if request.name is not None and meta.get("name") != request.name:
                return False
            obj_labels = meta.get("labels") or {}
            return selector_matches(labels, obj_labels.get) and selector_matches(
                fields, lambda path: _field_value(obj, path)
            )

        return matches

    def _columns(self, resource: kmock.resource) -> list[Column]:
        """Table columns: a CRD's printer columns, a few built-in ones, else Name and Age."""
        if resource in BUILTIN_COLUMNS:
            return BUILTIN_COLUMNS[resource]
        printer = self._printer_columns(resource)
        if printer is None:
            printer = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        columns: list[Column] = [_NAME_COLUMN]
        for column in printer:
            path = column["jsonPath"].lstrip(".").split(".")
            kind = column.get("type", "string")
            columns.append((column["name"], kind, lambda obj, path=path: _get_path(obj, path)))
        return columns

    def _as_table(self, request: kmock.Request, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        """kubectl asks for a Table; it gets the columns a cluster would show (CRD printer columns)."""
        if "as=Table" not in _header(request, "Accept") or request.resource is None:
            return None
        return self._table(self._columns(request.resource), items)

    def _table(
        self, columns: list[Column], items: list[dict[str, Any]], *, definitions: bool = True
    ) -> dict[str, Any]:
        rows = []
        for item in items:
            cells: list[Any] = []
            for _, kind, value_of in columns:
                value = value_of(item)
                if kind == "date":
                    value = _age(value) if value is not None else None
                cells.append("<none>" if value is None else value)
            meta = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            }
            rows.append({"cells": cells, "object": meta})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [
                {
                    "name": name,
                    "type": "string" if kind == "date" else kind,
                    "format": "name" if i == 0 else "",
                }
                for i, (name, kind, _) in enumerate(columns)
            ]
            if definitions
            else [],
            "rows": rows,
        }

    # -- request handlers (kmock's fallbacks call these) ------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_list(request))

    async def _do_list(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        try:
            matches = self._filter(request)
        except SelectorError as exc:
            return _status(400, "BadRequest", str(exc))
        async with self._lock:
            if request.resource == NAMESPACES:
                items = self._namespaces()
            else:
                items = [
                    obj.raw
                    for key, obj in self.objects.items()
                    if key[0] == request.resource and not obj.deleted
                ]
            items = [item for item in items if matches(item)]
            rv = str(self._rv)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        table = self._as_table(request, items)
        if table is not None:
            return table
        api_version, kind = self._kind(request, info)
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_fetch(request))

    async def _do_fetch(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        async with self._lock:
            if request.resource == NAMESPACES:
                obj = next((n for n in self._namespaces() if n["metadata"]["name"] == request.name), None)
            else:
                obj = self._current(self._key(request, request.name or ""))
        if obj is None:
            return self._not_found(request, request.name)
        table = self._as_table(request, [obj])
        return table if table is not None else obj

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_create(request))

    async def _do_create(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        if not isinstance(request.data, dict):
            return _status(400, "BadRequest", "the body of the request must be an object")
        async with self._lock:
            try:
                created = self._create(request, info, request.data)
            except _Abort as abort:
                return abort.response
        return kmock.Response(status=201, payload=created)

    def _patch_body(self, request: kmock.Request, info: kmock.ResourceInfo, current: dict[str, Any]) -> Any:
        content_type = _content_type(request)
        data = request.data
        if content_type == "application/json-patch+json":
            if not isinstance(data, list):
                raise _Abort(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                return jsonpatch.apply_patch(copy.deepcopy(current), data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _Abort(
                    422, "Invalid", f"the server rejected our request due to an error: {exc}"
                ) from exc
        if content_type == "application/strategic-merge-patch+json":
            assert request.resource is not None
            if request.resource.group not in _BUILTIN_GROUPS:
                raise _Abort(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )
        elif content_type != "application/merge-patch+json":
            raise _Abort(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        if not isinstance(data, dict):
            raise _Abort(400, "BadRequest", "a merge patch must be an object")
        wanted_rv = (data.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise self._conflict(request, current)
        return merge_patch(copy.deepcopy(current), data)

    def _conflict(self, request: kmock.Request, current: dict[str, Any]) -> _Abort:
        resource = request.resource
        assert resource is not None
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        name = current["metadata"]["name"]
        return _Abort(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            {"name": name, "group": resource.group, "kind": resource.plural},
        )

    async def _serve_update(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_update(request))

    async def _do_update(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None or request.name is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        content_type = _content_type(request)
        async with self._lock:
            key = self._key(request, request.name)
            current = self._current(key)
            try:
                if content_type == "application/apply-patch+yaml":
                    return await self._apply(request, info, key, current)
                if current is None:
                    return self._not_found(request, request.name)
                new = self._patch_body(request, info, current)
                if not isinstance(new, dict):
                    raise _Abort(422, "Invalid", "the patched object is not an object")
                return self._commit(request, info, key, current, new)
            except _Abort as abort:
                return abort.response

    async def _apply(
        self,
        request: kmock.Request,
        info: kmock.ResourceInfo,
        key: ObjectKey,
        current: dict[str, Any] | None,
    ) -> Any:
        """Server-side apply: create, or merge the manager's configuration into the object."""
        config = request.data
        if config is None and request.text:
            try:
                config = yaml.safe_load(request.text)
            except yaml.YAMLError as exc:
                raise _Abort(400, "BadRequest", f"error decoding YAML: {exc}") from exc
        if not isinstance(config, dict):
            raise _Abort(400, "BadRequest", "an apply configuration must be an object")
        manager = request.params.get("fieldManager")
        if not manager:
            raise _Abort(
                400, "BadRequest", "PATCH, application/apply-patch+yaml requires fieldManager to be set"
            )
        name = (config.get("metadata") or {}).get("name")
        if name not in (None, request.name):
            raise _Abort(400, "BadRequest", "the name of the object does not match the name on the URL")
        config = copy.deepcopy(config)
        config.setdefault("metadata", {})["name"] = request.name
        if current is None:
            if request.subresource:
                return self._not_found(request, request.name)
            created = self._create(request, info, config, operation="Apply", applied=config)
            self._applied[(key, manager)] = config
            return kmock.Response(status=201, payload=created)
        force = request.params.get("force") == "true"
        applied_leaves = _owned_paths(config)
        current_leaves = _owned_paths(current)
        if not force:
            conflicts = []
            for entry in current["metadata"].get("managedFields") or []:
                if entry.get("manager") == manager:
                    continue
                for path in paths_of_fields_v1(entry.get("fieldsV1") or {}):
                    if path in applied_leaves and applied_leaves[path] != current_leaves.get(path):
                        conflicts.append(f'conflict with "{entry.get("manager")}": .{".".join(path)}')
            if conflicts:
                raise _Abort(
                    409,
                    "Conflict",
                    f"Apply failed with {len(conflicts)} conflict(s): " + "; ".join(conflicts),
                )
        new = copy.deepcopy(current)
        others: set[tuple[str, ...]] = set()
        for entry in current["metadata"].get("managedFields") or []:
            if entry.get("manager") != manager:
                others |= paths_of_fields_v1(entry.get("fieldsV1") or {})
        previous = self._applied.get((key, manager)) or {}
        for path in set(_owned_paths(previous)) - set(applied_leaves) - others:
            _delete_path(new, path)
        new = _deep_merge(new, config)
        result = self._commit(request, info, key, current, new, operation="Apply", applied=config)
        self._applied[(key, manager)] = config
        return result

    async def _serve_replace(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_replace(request))

    async def _do_replace(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None or request.name is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        body = request.data
        if not isinstance(body, dict):
            return _status(400, "BadRequest", "the body of the request must be an object")
        assert request.resource is not None
        async with self._lock:
            key = self._key(request, request.name)
            current = self._current(key)
            if current is None:
                return self._not_found(request, request.name)
            meta = body.get("metadata") or {}
            if meta.get("name") not in (None, request.name):
                return _status(400, "BadRequest", "the name of the object does not match the name on the URL")
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv is None and request.resource.group not in _BUILTIN_GROUPS:
                return _status(
                    422,
                    "Invalid",
                    f'{info.kind} "{request.name}" is invalid: metadata.resourceVersion: Invalid value: '
                    "0: must be specified for an update",
                )
            try:
                if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
                    raise self._conflict(request, current)
                new = copy.deepcopy(body)
                new_meta = new.setdefault("metadata", {})
                if request.subresource == "status":
                    new_meta.clear()
                    new_meta.update(copy.deepcopy(current["metadata"]))
                return self._commit(request, info, key, current, new)
            except _Abort as abort:
                return abort.response

    async def _serve_delete(self, request: kmock.Request) -> kmock.Response:
        return _ok(await self._do_delete(request))

    async def _do_delete(self, request: kmock.Request) -> Any:
        info = self._resource_info(request)
        if info is None or request.name is None:
            return _status(405, "MethodNotAllowed", "collection deletion is not supported by the sandbox")
        options = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        preconditions = options.get("preconditions") or {}
        async with self._lock:
            key = self._key(request, request.name)
            current = self._current(key)
            if current is None:
                return self._not_found(request, request.name)
            for field in ("uid", "resourceVersion"):
                if preconditions.get(field) and preconditions[field] != current["metadata"].get(field):
                    return _status(409, "Conflict", f"Precondition failed: {field} in precondition differs")
            if policy == "Orphan":
                self._collect_dependents(current["metadata"]["uid"], orphan=True)
            return self._delete(key, current)

    async def _serve_watch(self, request: kmock.Request) -> kmock.Response:
        info = self._resource_info(request)
        if info is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        stream = self._watch(request, info)
        return kmock.Response(status=200, headers={"Content-Type": "application/json"}, payload=stream)

    async def _watch(self, request: kmock.Request, info: kmock.ResourceInfo) -> AsyncIterator[Any]:
        resource = request.resource
        assert resource is not None
        matches = self._filter(request)
        since_text = request.params.get("resourceVersion") or ""
        since = int(since_text) if since_text.isdigit() and since_text != "0" else None
        initial_end = request.params.get("sendInitialEvents") == "true"
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        backlog: list[dict[str, Any]] = []
        tables = "as=Table" in _header(request, "Accept")
        columns = self._columns(resource) if tables else []

        def as_table(event: dict[str, Any]) -> dict[str, Any]:
            """kubectl get -w wants each object as a one-row Table (column definitions come first)."""
            if not tables or event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                return event
            table = self._table(columns, [event["object"]], definitions=not sent_columns)
            table["metadata"]["resourceVersion"] = event["object"]["metadata"]["resourceVersion"]
            sent_columns.append(True)
            return {"type": event["type"], "object": table}

        sent_columns: list[bool] = []
        gone = False
        async with self._lock:  # the backlog and the live queue meet exactly: nothing lost, nothing twice
            if since is None:
                for key, obj in self.objects.items():
                    if key[0] == resource and not obj.deleted and matches(obj.raw):
                        backlog.append({"type": "ADDED", "object": obj.raw})
                if initial_end:
                    backlog.append(self._bookmark(request, info, initial_end=True))
            elif since < (oldest := self._gone_below.get(resource, 0) - 1):
                gone = True
                backlog.append(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({oldest})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                )
            else:
                backlog.extend(
                    event
                    for rv, event in self._events.get(resource, ())
                    if rv > since and matches(event["object"])
                )
            if not gone:
                self._watchers.setdefault(resource, set()).add(queue)
        try:
            yield b""  # send the headers now: a watch may stay silent for a long time
            for event in backlog:
                yield as_table(event)
            if gone:
                return
            async with _quiet_timeout(timeout):
                while True:
                    event = await queue.get()
                    if matches(event["object"]):
                        yield as_table(event)
        finally:
            self._watchers.get(resource, set()).discard(queue)

    def _bookmark(
        self, request: kmock.Request, info: kmock.ResourceInfo, *, initial_end: bool
    ) -> dict[str, Any]:
        api_version, kind = self._kind(request, info)
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}}

    # -- discovery ----------------------------------------------------------------------------------

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock's APIResourceList, corrected: core's groupVersion is "v1" (not "/v1"), and a
        subresource has no short names or categories (kubectl warns about ambiguous short names)."""
        result = await super()._serve_version(request)
        assert request.resource is not None
        if not request.resource.group:
            result["groupVersion"] = request.resource.version
        for entry in result.get("resources", []):
            if "/" in entry["name"]:
                entry.update(shortNames=[], categories=[], singularName="", verbs=["get", "patch", "update"])
            else:
                entry["verbs"] = sorted(entry["verbs"])
        return result

    # -- namespaces -----------------------------------------------------------------------------

    def _namespaces(self) -> list[dict[str, Any]]:
        """Created namespaces, and every namespace in use (a real cluster would need them created)."""
        stored = {
            key[2]: obj.raw for key, obj in self.objects.items() if key[0] == NAMESPACES and not obj.deleted
        }
        names = {"default", "kube-system", "kube-public"} | {
            key[1] for key in self.objects if key[1] is not None
        }
        return list(stored.values()) + [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                    "resourceVersion": "1",
                    "creationTimestamp": self._started,
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for name in sorted(names - set(stored))
        ]


Column = tuple[str, str, Callable[[dict[str, Any]], Any]]
_NAME_COLUMN: Column = ("Name", "string", lambda o: o["metadata"]["name"])
_AGE_COLUMN: Column = ("Age", "date", lambda o: o["metadata"].get("creationTimestamp"))


def _status_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def _ports(service: dict[str, Any]) -> str:
    ports = (service.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


BUILTIN_COLUMNS: dict[kmock.resource, list[Column]] = {
    EVENTS: [
        ("Last Seen", "date", lambda e: e.get("lastTimestamp") or e.get("eventTime")),
        ("Type", "string", lambda e: e.get("type")),
        ("Reason", "string", lambda e: e.get("reason")),
        (
            "Object",
            "string",
            lambda e: (
                f"{(e.get('involvedObject') or {}).get('kind', '').lower()}/"
                f"{(e.get('involvedObject') or {}).get('name', '')}"
            ),
        ),
        ("Message", "string", lambda e: e.get("message")),
    ],
    kmock.resource("apps", "v1", "deployments"): [
        _NAME_COLUMN,
        (
            "Ready",
            "string",
            lambda d: f"{_status_of(d).get('readyReplicas', 0)}/{_spec_of(d).get('replicas', 1)}",
        ),
        ("Up-to-date", "integer", lambda d: _status_of(d).get("updatedReplicas", 0)),
        ("Available", "integer", lambda d: _status_of(d).get("availableReplicas", 0)),
        _AGE_COLUMN,
    ],
    kmock.resource("", "v1", "services"): [
        _NAME_COLUMN,
        ("Type", "string", lambda s: (s.get("spec") or {}).get("type")),
        ("Cluster-IP", "string", lambda s: (s.get("spec") or {}).get("clusterIP")),
        ("External-IP", "string", lambda s: None),
        ("Port(s)", "string", _ports),
        _AGE_COLUMN,
    ],
}


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What a generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _default(resource: kmock.resource, body: dict[str, Any]) -> None:
    """The few defaults a reader of these objects relies on."""
    spec = body.get("spec")
    if resource == DEPLOYMENTS and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
    if resource == EVENTS:  # metav1.Time has second precision, MicroTime microseconds, both in UTC
        for key, fmt in (("firstTimestamp", "%Y-%m-%dT%H:%M:%SZ"), ("lastTimestamp", "%Y-%m-%dT%H:%M:%SZ"),
                         ("eventTime", "%Y-%m-%dT%H:%M:%S.%fZ")):  # fmt: skip
            moment = _parse_time(body[key]) if isinstance(body.get(key), str) else None
            if moment is not None:
                body[key] = moment.astimezone(UTC).strftime(fmt)
    if resource == SERVICES and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}")


@contextlib.asynccontextmanager
async def _quiet_timeout(seconds: float | None) -> AsyncIterator[None]:
    """Like asyncio.timeout, but the end of a watch's timeoutSeconds is a normal end of stream."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            yield


# ------------------------------------------------------------------------------------- resources

CORE_RESOURCES: dict[str, dict[str, Any]] = {
    "apps/v1/deployments": dict(
        kind="Deployment", singular="deployment", namespaced=True, shortnames={"deploy"},
        subresources={"status", "scale"}, categories={"all"},
    ),
    "v1/services": dict(
        kind="Service", singular="service", namespaced=True, shortnames={"svc"},
        subresources={"status"}, categories={"all"},
    ),
    "v1/events": dict(kind="Event", singular="event", namespaced=True, shortnames={"ev"}),
    "v1/secrets": dict(kind="Secret", singular="secret", namespaced=True),
    "v1/configmaps": dict(kind="ConfigMap", singular="configmap", namespaced=True, shortnames={"cm"}),
    "v1/pods": dict(kind="Pod", singular="pod", namespaced=True, shortnames={"po"}, subresources={"status"}),
    "v1/namespaces": dict(kind="Namespace", singular="namespace", namespaced=False, shortnames={"ns"}),
    "batch/v1/jobs": dict(kind="Job", singular="job", namespaced=True, subresources={"status"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        shortnames={"crd", "crds"}, subresources={"status"},
    ),
}  # fmt: skip
_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def new_emulator(**kwargs: Any) -> SandboxEmulator:
    """An emulator serving the core resources the sandbox uses (custom resources come with CRDs)."""
    emulator = SandboxEmulator(**kwargs)
    for name, info in CORE_RESOURCES.items():
        emulator.resources[name] = kmock.ResourceInfo(verbs=_VERBS, **info)
    return emulator


# ------------------------------------------------------------------------------------ the server


class EmulatorThread:
    """The emulator behind kmock's HTTP server on 127.0.0.1, in its own thread and event loop.

    ``start()`` returns once the server listens; ``url`` is its base URL; ``stop()`` (idempotent) ends
    open watches, closes the port and joins the thread. ``call(fn)`` runs ``fn(emulator)`` inside the
    emulator's loop (the emulator is not thread-safe) and returns its result.
    """

    def __init__(self, *, port: int = 0, **emulator_kwargs: Any) -> None:
        self.port = port
        self._kwargs = emulator_kwargs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.emulator: SandboxEmulator | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread = threading.Thread(target=self._run, name="canaria-sandbox-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the Kubernetes emulator did not start")
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(), or logged if it happens later
            self._error = exc
            self._ready.set()
            log.exception("the Kubernetes emulator stopped")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.emulator = new_emulator(**self._kwargs)
        async with (
            self.emulator,
            kmock.Server(self.emulator, host="127.0.0.1", port=self.port or None) as server,
        ):
            self.port = server.port
            self.url = f"http://127.0.0.1:{server.port}"
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[SandboxEmulator], Any], timeout: float = 10.0) -> Any:
        assert self._loop is not None and self.emulator is not None
        emulator = self.emulator

        async def run() -> Any:
            async with emulator._lock:
                return fn(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_kubeconfig(path: Path, server: str, *, namespace: str = "default") -> Path:
    """A kubeconfig for the emulator (plain HTTP on 127.0.0.1; the token is a placeholder it ignores)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "canaria-sandbox", "cluster": {"server": server}}],
        "users": [{"name": "canaria-sandbox", "user": {"token": "sandbox"}}],
        "contexts": [
            {
                "name": "canaria-sandbox",
                "context": {"cluster": "canaria-sandbox", "user": "canaria-sandbox", "namespace": namespace},
            }
        ],
        "current-context": "canaria-sandbox",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    path.chmod(0o600)
    return path
