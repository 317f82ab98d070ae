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


Action = EmitEvent | ApplyWorkload | ScaleWorkload | DeleteWorkload | ApplyService | RunSmokeTest


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    actions: tuple[Action, ...]
    requeue_after: float | None  # seconds until time alone would change the decision; None: wait for events
