"""Validation errors in the user's words: field path, then what is wrong, without the library's phrasing.

pydantic says "Value error, min must not exceed max" and "Extra inputs are not permitted"; a person
reading `kubectl describe` or `canaria status` should read "spec.rollout.analysis.metrics[0]: min must
not exceed max" and "spec.rollout.stpes: unknown field", the field path as the API server writes it. The
operator's status, its Events and the CLI use this one text.
"""

from __future__ import annotations

from pydantic import ValidationError

#: pydantic's words → ours (by error type; anything else keeps its message without the library prefix)
_WORDS = {
    "extra_forbidden": "unknown field",
    "missing": "required",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """ "spec.model.version: required; spec.rollout.steps: step weights must be strictly increasing"."""
    problems = []
    for error in exc.errors(include_url=False):
        path = _path((prefix, *error["loc"]) if prefix else error["loc"])
        message = _WORDS.get(error["type"]) or str(error["msg"])
        for known in _PREFIXES:
            message = message.removeprefix(known)
        problems.append(f"{path}: {message}" if path else message)
    return "; ".join(problems)


def _path(loc: tuple[int | str, ...]) -> str:
    """("spec", "rollout", "steps", 0, "pause") → "spec.rollout.steps[0].pause" (the API server's form)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
