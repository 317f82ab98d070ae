"""Pre-deploy gates on offline evaluation: absolute bounds, and deltas against the serving model.

Pure. A gate reads the candidate's `spec.model.evaluation`; a relative bound (minDelta/maxDelta) also reads
the evaluation recorded in status for the version serving now, so "the new model must beat production"
holds across operator restarts, spec edits and rollbacks (the spec only knows the candidate). An evaluation
key may name a slice, `<metric>@<slice>` (e.g. `auc@new-users`); a gate with `slices: true` applies its
bounds to the metric and to every slice of it the serving model was evaluated on, so no slice regresses by
more than the delta allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from canaria.core.api import Gate, describe_bounds

SLICE_SEPARATOR = "@"


@dataclass(frozen=True)
class GateCheck:
    """One evaluation key judged by one gate."""

    key: str  # the evaluation key: the gate's metric, or one of its slices
    passed: bool
    text: str  # both values and the delta, e.g. "auc=0.93 vs 0.95 on v1 (delta -0.02, needs >= 0)"


def _keys(gate: Gate, candidate: Mapping[str, float], serving: Mapping[str, float] | None) -> list[str]:
    """The metric itself and, with `slices`, every slice either evaluation names (sorted, stable text)."""
    if not gate.slices:
        return [gate.metric]
    prefix = gate.metric + SLICE_SEPARATOR
    slices = {k for k in (*candidate, *(serving or {})) if k.startswith(prefix)}
    return [gate.metric, *sorted(slices)]


def _check(
    gate: Gate,
    key: str,
    candidate: Mapping[str, float],
    serving_version: str | None,
    serving: Mapping[str, float] | None,
) -> GateCheck:
    value = candidate.get(key)
    if value is None:
        return GateCheck(key, False, f"{key} missing from spec.model.evaluation")
    problems = []
    if not gate.verdict(value):
        problems.append(f"not {gate.describe()}")
    text = f"{key}={value:g}"
    if gate.min_delta is not None or gate.max_delta is not None:
        relative = describe_bounds(gate.min_delta, gate.max_delta)
        before = None if serving is None else serving.get(key)
        if serving_version is None:
            text += f" (delta {relative}: first deployment, nothing to compare with)"
        elif before is None:
            text += (
                f" (delta {relative}: no {key} recorded for serving {serving_version}, nothing to compare)"
            )
        else:
            delta = value - before
            ok = (gate.min_delta is None or delta >= gate.min_delta) and (
                gate.max_delta is None or delta <= gate.max_delta
            )
            text += f" vs {before:g} on serving {serving_version} (delta {delta:+.4g}, needs {relative})"
            if not ok:
                problems.append("regresses")
    if gate.min is not None or gate.max is not None:
        text += f" [{gate.describe()}]"
    if problems:
        text += ": " + ", ".join(problems)
    return GateCheck(key, not problems, text)


def check_gates(
    gates: list[Gate],
    candidate: Mapping[str, float] | None,
    *,
    serving_version: str | None,
    serving: Mapping[str, float] | None,
) -> list[GateCheck]:
    """Judge every gate (and slice) on the candidate's evaluation against the serving version's recorded one.

    `serving_version` is None on a first deployment: relative bounds then pass with a note saying there was
    nothing to compare with (as they do when the serving version has no recorded value for the key)."""
    candidate = candidate or {}
    return [
        _check(gate, key, candidate, serving_version, serving)
        for gate in gates
        for key in _keys(gate, candidate, serving)
    ]
