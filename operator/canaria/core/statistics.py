"""A two-proportion z-test: is the canary's rate of bad events higher than its baseline's?

Pure and hand-written on the standard library (`statistics.NormalDist`): the test is a few lines of
arithmetic, and scipy or statsmodels would add tens of megabytes (and numpy) to the operator image for one
normal CDF. The numbers are checked against textbook values in tests/unit/test_statistics.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


@dataclass(frozen=True)
class ProportionTest:
    """Result of a one-sided two-proportion z-test of H1: p1 > p2 (pooled variance)."""

    p1: float  # observed proportion of the first sample (the canary)
    p2: float  # observed proportion of the second sample (the baseline)
    z: float
    p_value: float  # P(Z >= z) under H0: p1 == p2


def two_proportion_test(x1: float, n1: float, x2: float, n2: float) -> ProportionTest:
    """One-sided test that the first proportion exceeds the second: x events out of n trials each.

    Counts may be fractional (Prometheus' increase() extrapolates). With no variance at all (no event in
    either sample, or only events) the proportions are equal for the test's purpose: z = 0, p = 0.5."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both samples need trials, got n1={n1}, n2={n2}")
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError(f"events must lie within [0, n]: x1={x1}/n1={n1}, x2={x2}/n2={n2}")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = 0.0 if se == 0 else (p1 - p2) / se
    return ProportionTest(p1=p1, p2=p2, z=z, p_value=1 - _NORMAL.cdf(z))
