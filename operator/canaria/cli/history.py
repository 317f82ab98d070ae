"""The audit trail of `canaria history`: status.history and the ModelDeployment's Events as one list.

A transition is in both (its Event is named `<name>.<uid>.<seq>`); analysis and gate Events exist only as
Events. Who and why are parsed back out of an Event's message, in the form the engine writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from canaria.cli.session import get
from canaria.kube.workloads import VERSION_LABEL


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601, possibly with Z) as an aware datetime; None when absent or bad."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_BY = re.compile(r" \[by (?P<user>[^\]]*)\]")
_CHANGE = re.compile(r" \(change reason: (?P<why>.*?)\)(?= \[by |; owner: |$)")
_OWNER = re.compile(r"; owner: [^;]*$")


def _event_time(event: dict[str, Any], key: str) -> datetime | None:
    if key.startswith("analysis-") and key[len("analysis-") :].isdigit():
        return datetime.fromtimestamp(int(key[len("analysis-") :]) / 1000, UTC)  # the run's own time
    for field_ in ("eventTime", "lastTimestamp", "firstTimestamp"):
        if moment := parse_time(event.get(field_)):
            return moment
    return parse_time(get(event, "metadata", "creationTimestamp"))


def event_entry(event: dict[str, Any], md_name: str) -> dict[str, Any]:
    """An audit-trail entry from an Event (who and why parsed back out of its message)."""
    name = get(event, "metadata", "name", default="")
    key = name.rsplit(".", 1)[-1] if name.startswith(f"{md_name}.") else ""
    message = event.get("message") or ""
    user = why = None
    if match := _BY.search(message):
        user = match.group("user")
        message = message[: match.start()] + message[match.end() :]
    if match := _CHANGE.search(message):
        why = match.group("why")
        message = message[: match.start()] + message[match.end() :]
    message = _OWNER.sub("", message)
    moment = _event_time(event, key)
    return {
        "time": moment.isoformat() if moment else None,
        "seq": int(key) if key.isdigit() else None,
        "from": None,
        "to": None,
        "reason": event.get("reason"),
        "version": get(event, "metadata", "annotations", VERSION_LABEL) or None,
        "message": message,
        "user": user,
        "changeReason": why,
        "type": event.get("type"),
        "source": "event",
    }


def merge_history(md: dict[str, Any], events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """status.history and the ModelDeployment's Events as one time-ordered trail.

    A transition is in both (its Event is named `<name>.<uid>.<seq>`): the status entry wins and gains
    the Event's type. Analysis and gate Events exist only as Events. Events of an older object of the
    same name (another uid) are left out.
    """
    meta, status = md.get("metadata") or {}, md.get("status") or {}
    name, uid = meta.get("name", ""), meta.get("uid")
    last = status.get("lastCommand") or {}
    last_at = parse_time(last.get("at"))
    by_seq: dict[int, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    for item in status.get("history") or []:
        entry = {
            "time": item.get("time"),
            "seq": item.get("seq"),
            "from": item.get("from"),
            "to": item.get("to"),
            "reason": item.get("reason"),
            "version": item.get("version"),
            "message": item.get("message") or "",
            "user": item.get("user"),
            "changeReason": item.get("changeReason"),
            "type": None,
            "source": "status",
        }
        if (
            last.get("reason")
            and item.get("user")
            and item.get("user") == last.get("user")
            and last_at is not None
            and parse_time(item.get("time")) == last_at
        ):
            entry["commandReason"] = last["reason"]
        entries.append(entry)
        if isinstance(item.get("seq"), int):
            by_seq[item["seq"]] = entry
    for event in events:
        event_uid = get(event, "involvedObject", "uid")
        if uid and event_uid and event_uid != uid:
            continue
        entry = event_entry(event, name)
        known = by_seq.get(entry["seq"]) if entry["seq"] is not None else None
        if known is not None:
            known["type"] = entry["type"]
            known["source"] = "status+event"
            continue
        entries.append(entry)
        if entry["seq"] is not None:
            by_seq[entry["seq"]] = entry
    epoch = datetime.min.replace(tzinfo=UTC)

    def order(entry: dict[str, Any]) -> tuple[datetime, int, int]:
        seq = entry.get("seq")
        return (parse_time(entry.get("time")) or epoch, 0 if seq is None else 1, seq or 0)

    return sorted(entries, key=order)
