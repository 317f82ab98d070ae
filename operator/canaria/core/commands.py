"""Day-2 commands (promote, abort, pause, resume, retry) as data on the resource.

A command is a JSON annotation with a unique id. The operator carries out a command whose id differs
from `status.lastCommand.id` and records it there, so a command runs exactly once even across
restarts, and the user's spec is never touched. Who and why travel with it into the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

COMMAND_ANNOTATION = "canaria.dev/command"
CHANGE_REASON_ANNOTATION = "canaria.dev/change-reason"
#: "<version>/<digest of the reason>": what a change reason was written for, when a tool wrote it
#: (`canaria rollback` does). An annotation outlives the change it explains: a later spec change (a GitOps
#: sync of v3) must not be recorded with the rollback's reason, while a new reason written by anyone is.
CHANGE_REASON_FOR_ANNOTATION = "canaria.dev/change-reason-for"

Action = Literal["promote", "abort", "pause", "resume", "retry"]
ACTIONS: tuple[str, ...] = ("promote", "abort", "pause", "resume", "retry")


@dataclass(frozen=True)
class Command:
    action: str
    id: str
    user: str | None = None
    reason: str | None = None
    full: bool = False
    issued_at: str | None = None

    def to_annotation(self) -> str:
        fields = {
            "action": self.action,
            "id": self.id,
            "user": self.user,
            "reason": self.reason,
            "full": self.full or None,
            "issuedAt": self.issued_at,
        }
        return json.dumps({k: v for k, v in fields.items() if v is not None}, sort_keys=True)


def new_command(
    action: str, *, user: str | None, reason: str | None, full: bool = False, now: datetime | None = None
) -> Command:
    if action not in ACTIONS:
        raise ValueError(f"unknown command {action!r}; one of {', '.join(ACTIONS)}")
    return Command(
        action=action,
        id=uuid.uuid4().hex[:12],
        user=user,
        reason=reason,
        full=full,
        issued_at=now.isoformat() if now else None,
    )


def parse_command(annotations: dict[str, Any] | None) -> Command | None:
    """The command on a resource, or None; a malformed one raises ValueError with what is wrong."""
    raw = (annotations or {}).get(COMMAND_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"annotation {COMMAND_ANNOTATION} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("action") not in ACTIONS or not data.get("id"):
        raise ValueError(
            f"annotation {COMMAND_ANNOTATION} needs an id and an action among {', '.join(ACTIONS)}"
        )
    return Command(
        action=data["action"],
        id=str(data["id"]),
        user=data.get("user"),
        reason=data.get("reason"),
        full=bool(data.get("full", False)),
        issued_at=data.get("issuedAt") or data.get("issued_at"),
    )


def reason_scope(reason: str, version: str) -> str:
    """The CHANGE_REASON_FOR_ANNOTATION value for `reason` written for the spec naming `version`."""
    return f"{version}/{hashlib.sha256(reason.encode()).hexdigest()[:12]}"


def change_reason(annotations: dict[str, Any] | None, version: str) -> str | None:
    """The change reason that explains the spec naming `version`: the annotation, unless the same reason
    was written for another version (it explained an earlier change)."""
    annotations = annotations or {}
    reason = annotations.get(CHANGE_REASON_ANNOTATION) or None
    scope = annotations.get(CHANGE_REASON_FOR_ANNOTATION)
    if reason and scope and scope.partition("/")[2] == reason_scope(reason, version).partition("/")[2]:
        return reason if scope == reason_scope(reason, version) else None
    return reason
