"""The pass mark of a coverage test: a coverage estimated from ``reps`` independent draws passes when it
is at least the nominal level less 3 of its Monte Carlo standard errors (a correct interval fails by
chance about once in 700 runs)."""

from __future__ import annotations

import math


def coverage_floor(reps: int, level: float = 0.95) -> float:
    """Nominal coverage ``level`` less 3 Monte Carlo standard errors of a coverage from ``reps`` draws."""
    return level - 3 * math.sqrt(level * (1 - level) / reps)
