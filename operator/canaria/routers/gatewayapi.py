"""The Gateway API router: exact weights, shadow and header-matched stages through an HTTPRoute the user owns.

The user writes the HTTPRoute (parentRefs, hostnames, matches, filters, other rules) with one rule sending
to the model's Service (`<name>`, or already to its per-version Services `<name>-<version>`). Canaria
changes only that rule's `backendRefs` (stable first, canary second, weights in percent) and its
RequestMirror filter toward a version, and adds one rule right after it for a header-matched stage (the
user's matches of that rule, each with the stage's headers, sending to the canary). It writes by
server-side apply under its own field manager, with the resourceVersion it read as a precondition, so a
concurrent change is a conflict that restarts the reconcile from a fresh read.

The Gateway API declares `spec.rules` an atomic list: whoever applies a change to it owns the whole list.
Canaria's apply therefore copies the other rules and fields of the rule as they are (values untouched), the
user keeps parentRefs and hostnames, and a later write of the rules by someone else shows up in
managedFields: that is how a change under Canaria is told from Canaria's own.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaria.core.actions import TrafficSplit
from canaria.core.api import ModelDeployment
from canaria.core.observations import Observations, TrafficObservation

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
FIELD_MANAGER = "canaria"
APPLY = "application/apply-patch+yaml"


def version_service(md_name: str, version: str) -> str:
    return f"{md_name}-{version}"


def _service_ref(ref: dict[str, Any]) -> str | None:
    """The Service a backendRef names in the route's namespace, or None for another kind or namespace."""
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service" or ref.get("namespace"):
        return None
    return ref.get("name")


class _Names:
    """Which Services belong to the model: `<name>` (every version) and `<name>-<version>`."""

    def __init__(self, name: str, versions: set[str]) -> None:
        self.name = name
        self.by_service = {version_service(self.name, v): v for v in versions}

    def adding(self, versions: set[str]) -> _Names:
        return _Names(self.name, {*self.by_service.values(), *versions})

    def version(self, ref: dict[str, Any]) -> str | None:
        return self.by_service.get(_service_ref(ref) or "")

    def ours(self, ref: dict[str, Any]) -> bool:
        service = _service_ref(ref)
        return service == self.name or service in self.by_service

    def is_model_rule(self, rule: dict[str, Any]) -> bool:
        return any(self.ours(r) for r in rule.get("backendRefs") or [])

    def is_header_rule(self, rule: dict[str, Any]) -> bool:
        """The shape of the rule Canaria adds after the model's rule for a header-matched stage: it sends
        to one version's Service only, and every match of it requires headers."""
        refs = rule.get("backendRefs") or []
        matches = rule.get("matches") or []
        return (
            len(refs) == 1
            and self.version(refs[0]) is not None
            and bool(matches)
            and all(m.get("headers") for m in matches)
        )

    def header_rule_after(self, rules: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
        following = rules[index + 1] if index + 1 < len(rules) else None
        return following if following is not None and self.is_header_rule(following) else None

    def mirror_of(self, rule: dict[str, Any]) -> tuple[str, int] | None:
        for f in rule.get("filters") or []:
            if f.get("type") == "RequestMirror":
                mirror = f.get("requestMirror") or {}
                version = self.version(mirror.get("backendRef") or {})
                if version is not None:
                    return version, _percent(mirror)
        return None


def _percent(mirror: dict[str, Any]) -> int:
    if "percent" in mirror:
        return int(mirror["percent"])
    fraction = mirror.get("fraction")
    if fraction:
        return round(100 * fraction["numerator"] / (fraction.get("denominator") or 100))
    return 100


def _rule_index(names: _Names, rules: list[dict[str, Any]]) -> int | None:
    """The model's rule: the first one sending to a Service of the model."""
    return next((i for i, r in enumerate(rules) if names.is_model_rule(r)), None)


def _last_writer(route: dict[str, Any]) -> str | None:
    """The field manager that owns spec.rules now, when it is not Canaria (with an atomic list, the last
    one to change it)."""
    owners = [
        e.get("manager") or "unknown"
        for e in route["metadata"].get("managedFields") or []
        if "f:rules" in ((e.get("fieldsV1") or {}).get("f:spec") or {})
    ]
    if FIELD_MANAGER in owners or not owners:
        return None
    return owners[-1]


def _refused(route: dict[str, Any]) -> str | None:
    """Why a parent (Gateway) does not accept the route, from the route's status."""
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") == "Accepted" and condition.get("status") == "False":
                ref = parent.get("parentRef") or {}
                return (
                    f"{ref.get('kind', 'Gateway')} {ref.get('name', '?')} does not accept the HTTPRoute: "
                    f"{condition.get('reason', '')}: {condition.get('message', '')}".rstrip(": ")
                )
    return None


class GatewayAPIRouter:
    version_services = True
    resource = f"{PLURAL}.{GROUP}"

    def __init__(self, api: client.ApiClient, route: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.route = self.target = route
        self._names: _Names | None = None

    def _read(self, namespace: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, self.route)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def _versions(md: ModelDeployment, observations: Observations) -> set[str]:
        """Every version whose Service the route may name: in status (the split last set too) or deployed."""
        status = md.status
        known = {r.version for r in (status.stable, status.canary, status.last_known_good) if r is not None}
        if status.traffic is not None:
            known |= {v for v in (status.traffic.stable, status.traffic.canary) if v is not None}
        return known | set(observations.workloads)

    def observe(self, md: ModelDeployment, observations: Observations) -> TrafficObservation:
        namespace = md.metadata["namespace"]
        route = self._read(namespace)
        if route is None:
            return TrafficObservation(
                problem=f"HTTPRoute {self.route} not found in {namespace} (is the Gateway API installed?)",
                reason="RouteNotFound",
            )
        names = self._names = _Names(md.metadata["name"], self._versions(md, observations))
        rules = (route.get("spec") or {}).get("rules") or []
        index = _rule_index(names, rules)
        if index is None:
            return TrafficObservation(
                problem=f"HTTPRoute {self.route} has no rule sending to Service {names.name}",
                reason="RouteHasNoModelRule",
            )
        split, effective = self._split(names, rules, index)
        refused = _refused(route)
        return TrafficObservation(
            split=split,
            effective_weight=effective,
            problem=f"HTTPRoute {self.route}: {refused}" if refused else None,
            reason="RouteNotAccepted" if refused else None,
            writer=_last_writer(route),
        )

    @staticmethod
    def _split(
        names: _Names, rules: list[dict[str, Any]], index: int
    ) -> tuple[TrafficSplit | None, int | None]:
        """The split the route holds, in Canaria's form (stable first, canary second), and the percent of
        callers the canary answers; None when the rule still sends to the all-versions Service."""
        rule = rules[index]
        weighted = [(names.version(r), int(r.get("weight", 1))) for r in rule.get("backendRefs") or []]
        if not weighted or any(v is None for v, _ in weighted) or len(weighted) > 2:
            return None, None
        total = sum(w for _, w in weighted)
        stable = weighted[0][0]
        canary_weight = 0
        canary = weighted[1][0] if len(weighted) == 2 else None
        effective = 0
        if canary is not None and total:
            canary_weight = round(100 * weighted[1][1] / total)
            effective = canary_weight
        mirror = names.mirror_of(rule)
        headers: tuple[tuple[str, str], ...] = ()
        following = names.header_rule_after(rules, index)
        if following is not None:
            matched = names.version(following["backendRefs"][0])
            first = (following.get("matches") or [{}])[0]
            headers = tuple((h["name"], h["value"]) for h in first.get("headers") or [])
            canary = canary or matched
        if mirror is not None:
            canary = canary or mirror[0]
        split = TrafficSplit(
            stable,  # type: ignore[arg-type]
            canary,
            canary_weight,
            mirror[1] if mirror else None,
            headers,
        )
        if canary is None:
            split = TrafficSplit(stable)  # type: ignore[arg-type]
        return split, effective

    def apply(self, md: ModelDeployment, split: TrafficSplit) -> None:
        namespace, name = md.metadata["namespace"], md.metadata["name"]
        route = self._read(namespace)
        if route is None:
            return  # reported by observe; Canaria never creates the user's route
        if self._names is None:
            raise RuntimeError("GatewayAPIRouter.apply before observe")
        names = self._names.adding(set(split.versions()))  # as observe() found the rule, this reconcile
        rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
        index = _rule_index(names, rules)
        if index is None:
            return  # the rule went since observe(): the next reconcile reports it
        port = md.spec.service.port
        if names.header_rule_after(rules, index) is not None:
            del rules[
                index + 1
            ]  # the previous header-matched stage's rule; added again below if still wanted
        new_rules, rule = rules, rules[index]

        def ref(version: str, weight: int | None = None) -> dict[str, Any]:
            entry: dict[str, Any] = {"kind": "Service", "name": version_service(name, version), "port": port}
            if weight is not None:
                entry["weight"] = weight
            return entry

        canary = split.canary if split.versions() != {split.stable} else None
        if canary is not None and not split.mirror and not split.headers:
            rule["backendRefs"] = [ref(split.stable, 100 - split.weight), ref(canary, split.weight)]
        else:
            rule["backendRefs"] = [ref(split.stable, 100)]
        filters = [f for f in rule.get("filters") or [] if not self._our_mirror(names, f)]
        if canary is not None and split.mirror:
            mirror: dict[str, Any] = {"backendRef": ref(canary)}
            if split.mirror < 100:
                mirror["percent"] = split.mirror
            filters.append({"type": "RequestMirror", "requestMirror": mirror})
        if filters:
            rule["filters"] = filters
        else:
            rule.pop("filters", None)
        if canary is not None and split.headers:
            headers = [{"type": "Exact", "name": k, "value": v} for k, v in split.headers]
            matches = [
                {**m, "headers": [*(m.get("headers") or []), *headers]} for m in rule.get("matches") or [{}]
            ]
            extra = {
                k: copy.deepcopy(v) for k, v in rule.items() if k not in ("backendRefs", "matches", "name")
            }
            extra_filters = [f for f in extra.pop("filters", []) if f.get("type") != "RequestMirror"]
            header_rule = {**extra, "matches": matches, "backendRefs": [ref(canary, 100)]}
            if extra_filters:
                header_rule["filters"] = extra_filters
            new_rules.insert(index + 1, header_rule)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HTTPRoute",
            "metadata": {
                "name": self.route,
                "namespace": namespace,
                "resourceVersion": route["metadata"]["resourceVersion"],
            },
            "spec": {"rules": new_rules},
        }
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            self.route,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    @staticmethod
    def _our_mirror(names: _Names, f: dict[str, Any]) -> bool:
        backend = (f.get("requestMirror") or {}).get("backendRef") or {}
        return f.get("type") == "RequestMirror" and names.version(backend) is not None
