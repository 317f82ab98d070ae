"""Which transitions the owner hears about, what the message says, and when to try again. Pure.

A notification is owed for every history entry that is a Warning transition (reverted, refused by a gate,
held on inconclusive analysis, never ready, ...) and, when asked, for promotions. The delivery cursor of each
receiver lives in ``status.notifications`` (the last history ``seq`` handled), so a restarted operator
delivers what is owed exactly once and nothing twice; the shell (`canaria.kube.notify`) only sends.

A receiver URL is a secret: it never appears here. Failures are recorded as the receiver's answer ("HTTP
503", "timed out"), never as the URL or a response body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from canaria.core.api import (
    HistoryEntry,
    ModelDeployment,
    NotificationRecord,
    Verdict,
    VersionRef,
)

Format = Literal["slack", "json"]

#: Seconds between attempts after the n-th failure (then the last one, forever: a receiver may come back).
BACKOFF = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
#: A receiver first seen on an object with a history is owed only what happened this recently, so adding a
#: receiver (or upgrading the operator) does not replay an old audit trail as fresh alerts.
FRESH = timedelta(minutes=10)


@dataclass(frozen=True)
class Receiver:
    """An operator-wide receiver: its name (the key of its URL in the notifications Secret) and format."""

    name: str
    format: Format


@dataclass(frozen=True)
class Policy:
    """The operator's notification settings (`canaria run --notification-receiver ...`)."""

    receivers: tuple[Receiver, ...] = ()
    default_receivers: tuple[str, ...] = ()  # for a ModelDeployment that names none; empty: all of them
    promotions: bool = False  # also notify promotions unless the ModelDeployment says otherwise

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)


def receivers_for(md: ModelDeployment, policy: Policy) -> tuple[list[Receiver], list[str]]:
    """The receivers a ModelDeployment's transitions go to, and the names it asks for that do not exist."""
    wanted = md.spec.notifications.receivers if md.spec.notifications else None
    if wanted is None:
        names = list(policy.default_receivers) or [r.name for r in policy.receivers]
    else:
        names = list(wanted)
    found = [r for n in names if (r := policy.receiver(n)) is not None]
    return found, [n for n in names if policy.receiver(n) is None]


def notifies(entry: HistoryEntry, md: ModelDeployment, policy: Policy) -> bool:
    """Whether this transition is one the owner hears about."""
    if entry.warning:
        return True
    asked = md.spec.notifications.promotions if md.spec.notifications else None
    promotions = policy.promotions if asked is None else asked
    return promotions and entry.reason in ("Promoted", "BakeCompleted")


def record_of(md: ModelDeployment, receiver: str) -> NotificationRecord | None:
    return next((r for r in md.status.notifications if r.receiver == receiver), None)


def owed(md: ModelDeployment, receiver: str, policy: Policy, now: datetime) -> list[HistoryEntry]:
    """The transitions not yet delivered to ``receiver``, oldest first."""
    record = record_of(md, receiver)
    history = md.status.history
    if record is None:
        fresh = [h for h in history if now - h.time <= FRESH]
    else:
        fresh = [h for h in history if h.seq > record.delivered_seq]
    return [h for h in fresh if notifies(h, md, policy)]


def due(record: NotificationRecord | None, now: datetime) -> bool:
    """Whether a failing receiver may be tried again now."""
    return record is None or record.next_attempt_at is None or record.next_attempt_at <= now


def delivered(receiver: str, entry: HistoryEntry, now: datetime) -> NotificationRecord:
    return NotificationRecord(receiver=receiver, delivered_seq=entry.seq, delivered_at=now)


def failed(
    record: NotificationRecord | None, receiver: str, entry: HistoryEntry, answer: str, now: datetime
) -> NotificationRecord:
    """One more failed attempt at ``entry``: the cursor stays, the next attempt is backed off."""
    attempts = (record.attempts if record is not None else 0) + 1
    wait = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return NotificationRecord(
        receiver=receiver,
        delivered_seq=record.delivered_seq if record is not None else entry.seq - 1,
        delivered_at=record.delivered_at if record is not None else None,
        attempts=attempts,
        failing_seq=entry.seq,
        last_error=answer,
        next_attempt_at=now + timedelta(seconds=wait),
    )


def merged(records: Sequence[NotificationRecord], update: NotificationRecord) -> list[NotificationRecord]:
    return [*(r for r in records if r.receiver != update.receiver), update]


# ------------------------------------------------------------------------------------------ message


def _version(ref: VersionRef | None, role: str) -> dict[str, Any] | None:
    if ref is None:
        return None
    out: dict[str, Any] = {"role": role, "version": ref.version, "uri": ref.uri}
    if ref.lineage is not None:
        out["lineage"] = ref.lineage.dump()
    return out


def _failing_checks(md: ModelDeployment) -> list[str]:
    return [r.describe() for r in md.status.analysis.results if r.verdict != Verdict.PASS and not r.dry_run]


def payload(md: ModelDeployment, entry: HistoryEntry, fmt: Format) -> dict[str, Any]:
    """The message for one transition: Slack-compatible (``text`` + ``blocks``) or generic JSON."""
    meta = md.metadata
    name, namespace, uid = meta.get("name", ""), meta.get("namespace", ""), meta.get("uid", "")
    model = md.spec.model
    status = md.status
    versions = [
        v
        for v in (
            _version(status.stable, "stable"),
            _version(status.canary, "canary"),
            _version(status.last_known_good, "lastKnownGood"),
        )
        if v is not None
    ]
    candidate = {"role": "spec", "version": model.version, "uri": model.uri}
    if model.lineage is not None:
        candidate["lineage"] = model.lineage.dump()
    command = f"canaria history {name} -n {namespace}"
    checks = _failing_checks(md)
    generic = {
        "kind": "CanariaNotification",
        "id": f"{uid}/{entry.seq}",
        "severity": "warning" if entry.warning else "info",
        "modelDeployment": {"namespace": namespace, "name": name},
        "transition": entry.dump(),
        "owner": model.owner,
        "intendedUse": model.intended_use,
        "versions": [*versions, candidate],
        "failingChecks": checks,
        "command": command,
    }
    if fmt == "json":
        return generic
    icon = ":rotating_light:" if entry.warning else ":white_check_mark:"
    headline = f"{icon} *{namespace}/{name}* {entry.reason}: {entry.message}"
    lines = [headline]
    if model.owner:
        lines.append(f"*Owner:* {model.owner}" + (f" — {model.intended_use}" if model.intended_use else ""))
    for v in [*versions, candidate]:
        lineage = v.get("lineage") or {}
        detail = ", ".join(f"{k} {val}" for k, val in lineage.items())
        lines.append(f"*{v['role']}:* {v['version']}" + (f" ({detail})" if detail else ""))
    if checks:
        lines.append("*Failing checks:* " + "; ".join(checks))
    lines.append(f"*More:* `{command}`")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
