"""Scenario paths: a curve over time, given as ``[years, index]`` points.

model.md, "Paths": a path's index ``I`` is interpolated linearly in time
between its points and held flat after the last one; the model reads its
ratio to the first point, ``P(t) = I(t) / I(0)``, at the end of each period
(``t_k = k / f``).  The rent path multiplies the market rent index, the
crypto path the crypto price index.  :func:`check_points` is the rule a path
must follow; :func:`period_factors` what the engines read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .inputs import Loan, Points
from .schedule import periods

#: Days per year of a path given by dates (model.md, "Paths").
DAYS_PER_YEAR = 365.25


def check_points(points: Sequence[Sequence[float]]) -> str | None:
    """The first rule ``points`` break, as text; None when they make a path.

    A path starts at years 0, its years strictly increase, and its indexes
    are finite and >= 0, the first > 0 (only ratios to it are used).
    """
    if len(points) < 1:
        return "must hold at least one [years, index] point"
    for i, point in enumerate(points):
        if len(point) != 2:
            return f"point {i + 1} must be [years, index], not {list(point)}"
        years, index = point
        if not (math.isfinite(years) and math.isfinite(index)):
            return f"point {i + 1} ({years:g}, {index:g}): years and index must be finite numbers"
        if index < 0:
            return f"point {i + 1} ({years:g}, {index:g}): the index must be >= 0"
    if points[0][0] != 0:
        return f"must start at years 0, not {points[0][0]:g}"
    if points[0][1] <= 0:
        return (
            f"the first index must be > 0 (the path is read relative to it), not {points[0][1]:g}"
        )
    for i in range(1, len(points)):
        if not points[i][0] > points[i - 1][0]:
            return (
                f"years must increase strictly: point {i + 1} at {points[i][0]:g} "
                f"follows {points[i - 1][0]:g}"
            )
    return None


def path_factor(points: Points | None, years) -> np.ndarray:
    """``P(t) = I(t) / I(0)`` at times ``years`` (1 everywhere without a path)."""
    t = np.asarray(years, dtype=np.float64)
    if not points:
        return np.ones_like(t)
    xs = np.array([p[0] for p in points], dtype=np.float64)
    index = np.array([p[1] for p in points], dtype=np.float64)
    return np.interp(t, xs, index) / index[0]


def period_factors(points: Points | None, periods_per_year: int, n_periods: int) -> np.ndarray:
    """``P(t_k)`` for ``k = 0..n_periods`` (``t_k = k / periods_per_year``)."""
    return path_factor(points, np.arange(n_periods + 1) / periods_per_year)


def read_years(loan: Loan, periods_per_year: int, name: str) -> float:
    """The last time [year] at which the model reads path ``name`` for ``loan``:
    its maturity, the cash-flow refinancing projection past it (a balloon
    only) and, for the rent path, the appraisal up to the fleet's end of life."""
    f = periods_per_year
    n = periods(loan.term_years, f)
    balloon = loan.amortization == "bullet" or loan.balloon > 0
    last = n + (periods(loan.refi_term_years, f) if balloon else 0)
    if name == "rent_path":
        last = max(last, max(0, periods(loan.economic_life_years - loan.gpu_age_years, f)))
    return last / f


def path_end(points: Points | None) -> float:
    """The years of a path's last point (inf without a path: nothing ends)."""
    return points[-1][0] if points else math.inf


__all__ = [
    "DAYS_PER_YEAR",
    "Points",
    "check_points",
    "path_end",
    "path_factor",
    "period_factors",
    "read_years",
]
