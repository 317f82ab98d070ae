"""Durations as users write them in a ModelDeployment ("30s", "5m", "1h30m").

Kept as strings in the resource (what the user wrote stays readable in `kubectl get -o yaml`) and
parsed to seconds only where time is computed.
"""

from __future__ import annotations

import functools
import re

#: The pattern shared by the pydantic models and the CRD schema, so the API server rejects what the
#: operator would reject.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Return the duration in seconds, or raise ValueError saying what a duration looks like."""
    if not isinstance(text, str):
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit (ms, s, m, h, d), e.g. '30s', '5m', '1h30m'"
        )
    return _parse(text)


@functools.lru_cache(maxsize=1024)  # the engine parses the same few durations at every decision
def _parse(text: str) -> float:
    if not re.fullmatch(DURATION_PATTERN, text.strip()):
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit (ms, s, m, h, d), e.g. '30s', '5m', '1h30m'"
        )
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text.strip()))


def format_duration(seconds: float) -> str:
    """Render seconds the way users write them, for messages ("1h30m", "45s")."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"
