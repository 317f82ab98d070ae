"""Canaria's Argo CD health check and resource actions, run as Argo CD runs them: the Lua from the shipped
manifests/argocd/argocd-cm.yaml, in a real Lua 5.1 interpreter (lupa; Argo CD embeds gopher-lua, a Lua
5.1), with the resource as the global `obj`. Also kstatus's rules (sigs.k8s.io/cli-utils pkg/kstatus,
what Flux's health checks use), transcribed as a table, so tests can hold all three against one status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARGOCD_CM = ROOT / "manifests" / "argocd" / "argocd-cm.yaml"
KIND = "canaria.dev_ModelDeployment"


class ArgoCD:
    """The health check and actions of argocd-cm, each callable on a resource dict."""

    def __init__(self) -> None:
        data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
        self.health_lua = data[f"resource.customizations.health.{KIND}"]
        actions = yaml.safe_load(data[f"resource.customizations.actions.{KIND}"])
        self.discovery_lua = actions["discovery.lua"]
        self.action_lua = {d["name"]: d["action.lua"] for d in actions["definitions"]}
        self.lua = lupa.LuaRuntime(unpack_returned_tuples=False)
        self.lua.execute("math.randomseed(os.time())")

    def _run(self, script: str, resource: dict[str, Any]) -> Any:
        self.lua.globals().obj = self._to_lua(resource)
        return self._from_lua(self.lua.execute(script))

    def health(self, resource: dict[str, Any]) -> dict[str, str]:
        """Argo CD's {status, message} for the resource."""
        return self._run(self.health_lua, resource)

    def enabled_actions(self, resource: dict[str, Any]) -> set[str]:
        return {
            name for name, flags in self._run(self.discovery_lua, resource).items() if not flags["disabled"]
        }

    def act(self, name: str, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource as the action returns it (Argo CD then patches the live object with it)."""
        return self._run(self.action_lua[name], resource)

    def _to_lua(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.lua.table_from({k: self._to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return self.lua.table_from([self._to_lua(v) for v in value])
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # JSON numbers reach Argo CD's Lua as floats
        return value

    def _from_lua(self, value: Any) -> Any:
        if self.lua.eval("type")(value) != "table":
            return value
        items = dict(value.items())
        if items and all(isinstance(k, int) for k in items):
            return [self._from_lua(items[k]) for k in sorted(items)]
        return {k: self._from_lua(v) for k, v in items.items()}


def kstatus(resource: dict[str, Any]) -> str:
    """kstatus's Compute for a custom resource (pkg/kstatus/status: checkGenericProperties, then Current):
    Terminating when deleted; InProgress while status.observedGeneration differs from metadata.generation;
    then the first condition that is True of Reconciling (InProgress) or Stalled (Failed); else Current."""
    metadata, status = resource.get("metadata") or {}, resource.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    for condition in status.get("conditions") or []:
        if condition["status"] == "True" and condition["type"] == "Reconciling":
            return "InProgress"
        if condition["status"] == "True" and condition["type"] == "Stalled":
            return "Failed"
    return "Current"
