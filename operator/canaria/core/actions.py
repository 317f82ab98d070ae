"""What the engine asks the shell to do: effects as values.

`decide` returns a `Decision` holding these; the reconciler carries them out (apply, scale, delete,
post an Event). They live apart from the engine so the shell imports what it must perform, not the rules
that chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from canaria.core.api import ModelDeploymentStatus


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the ModelDeployment. `key` makes its name unique and stable, so posting
    it twice (after a crash between the post and the status patch) is a no-op."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    key: str
    version: str | None = None


@dataclass(frozen=True)
class ApplyWorkload:
    """Create or update the Deployment of one model version."""

    version: str
    uri: str
    replicas: int
    template_hash: str
    baseline: bool = False  # the baseline: a fresh copy of the stable version's Deployment, see Baseline


@dataclass(frozen=True)
class ScaleWorkload:
    """Change only the replicas of a version the spec no longer names (stable during a canary, the last
    known good during a bake): it keeps the template it was deployed with, so a canary's new image never
    reaches it and a revert restores exactly what served before."""

    version: str
    replicas: int
    baseline: bool = False


@dataclass(frozen=True)
class DeleteWorkload:
    """Remove the Deployment of a version that has no role any more."""

    version: str
    baseline: bool = False


@dataclass(frozen=True)
class ApplyService:
    """Create or update the model's Service: it selects every version (the replica-ratio split), or
    only `version` (outside a canary, so that a version kept warm gets no traffic)."""

    port: int
    target_port: int
    version: str | None = None


@dataclass(frozen=True)
class RunSmokeTest:
    """Create (once: the name comes from version and attempt) the smoke-test Job of `version`, and the
    version's own Service it calls."""

    version: str
    uri: str
    attempt: int


@dataclass(frozen=True)
class TrafficSplit:
    """What a router must set: who answers callers, and how the canary gets requests. `weight` is the
    percent of callers the canary answers; `mirror` the percent of requests copied to it (callers get
    stable's answers); `headers` the (name, value) pairs that send a request to the canary."""

    stable: str
    canary: str | None = None
    weight: int = 0
    mirror: int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def versions(self) -> frozenset[str]:
        """The versions the split sends requests (or copies of them) to."""
        touched = self.canary is not None and bool(self.weight or self.mirror or self.headers)
        return frozenset({self.stable, self.canary} if touched else {self.stable})

    def describe(self) -> str:
        if self.canary is None:
            return f"100% {self.stable}"
        if self.mirror:
            return f"{self.mirror}% mirrored to {self.canary}, callers answered by {self.stable}"
        if self.headers:
            matched = ", ".join(f"{k}: {v}" for k, v in self.headers)
            return f"requests with {matched} to {self.canary}, the rest to {self.stable}"
        return f"{self.weight}% {self.canary}, {100 - self.weight}% {self.stable}"


@dataclass(frozen=True)
class SetTraffic:
    """Make the router send traffic as `split` says (the HTTPRoute's weights, mirror and header rule)."""

    split: TrafficSplit


Action = EmitEvent | ApplyWorkload | ScaleWorkload | DeleteWorkload | ApplyService | RunSmokeTest | SetTraffic


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    actions: tuple[Action, ...]
    requeue_after: float | None  # seconds until time alone would change the decision; None: wait for events
