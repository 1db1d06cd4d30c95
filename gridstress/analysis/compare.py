"""Two cubes on the same grid: headline deltas and the difference of a variable.

The what-if of a credit analyst: the book with and without a loan, or under
two calibrations.  Both cubes must have the same scenario axes with the same
values; the difference is ``B - A`` cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .headline import Headline, grid_dims, headline, scenario_point
from .select import require_var


def check_same_grid(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str] = ("A", "B")) -> None:
    """Refuse two cubes whose scenario axes or axis values differ, naming the first difference."""
    dims_a, dims_b = grid_dims(a), grid_dims(b)
    if dims_a != dims_b:
        raise InputError(
            f"{names[1]}: not on the grid of {names[0]}: its axes are "
            f"{', '.join(dims_b)}, against {', '.join(dims_a)}"
        )
    for dim in dims_a:
        va, vb = np.asarray(a[dim].values), np.asarray(b[dim].values)
        if va.shape != vb.shape or not np.array_equal(va, vb):
            raise InputError(
                f"{names[1]}: not on the grid of {names[0]}: {dim} has {vb.size} values "
                f"from {vb.min():g} to {vb.max():g}, against {va.size} from {va.min():g} "
                f"to {va.max():g}"
            )


#: Figures compared at the base and severe scenarios.
SCENARIO_FIGURES = ("loss", "loss_rate", "default_rate", "breakeven_spread_bps")


@dataclass(frozen=True)
class Comparison:
    var: str
    headlines: tuple[Headline, Headline]
    points: dict[str, dict[str, float]]
    """The base and severe cells (of cube A's central and severe values)."""
    scenarios: dict[str, dict[str, tuple[float, float]]]
    """Per scenario, each figure of :data:`SCENARIO_FIGURES` in A and in B."""
    difference: xr.DataArray
    """``B - A`` of ``var`` in every cell."""

    def rows(self) -> list[dict[str, Any]]:
        """The headline deltas as table rows: figure, A, B, B - A."""
        ha, hb = self.headlines
        out: list[dict[str, Any]] = [
            {"figure": "worst loss rate", "a": ha.worst_loss_rate, "b": hb.worst_loss_rate},
            {
                "figure": "share of cells with a default",
                "a": ha.default_share,
                "b": hb.default_share,
            },
        ]
        for label, figures in self.scenarios.items():
            for name, (x, y) in figures.items():
                out.append({"figure": f"{name} at {label}", "a": x, "b": y})
        for row in out:
            row["b_minus_a"] = row["b"] - row["a"]
        return out


def compare(
    a: xr.Dataset, b: xr.Dataset, var: str = "loss_rate", names: tuple[str, str] = ("A", "B")
) -> Comparison:
    """Headline figures of two cubes on the same grid, and ``B - A`` of ``var``."""
    check_same_grid(a, b, names)
    da, db = require_var(a, var), require_var(b, var)
    points = {"base": scenario_point(a, "central"), "severe": scenario_point(a, "severe")}
    scenarios = {}
    for label, point in points.items():
        at_a = a[list(SCENARIO_FIGURES)].sel(point).load()
        at_b = b[list(SCENARIO_FIGURES)].sel(point).load()
        scenarios[label] = {n: (float(at_a[n]), float(at_b[n])) for n in SCENARIO_FIGURES}
    difference = (db.transpose(*grid_dims(a)) - da.transpose(*grid_dims(a))).load()
    difference.name = f"{var}_difference"
    difference.attrs = {
        "units": da.attrs.get("units", ""),
        "long_name": f"{da.attrs.get('long_name', var)}: B - A",
    }
    return Comparison(var, (headline(a), headline(b)), points, scenarios, difference)


def largest_change(diff: xr.DataArray, sign: int) -> tuple[float, dict[str, float]] | None:
    """The largest increase (``sign`` 1) or decrease (-1) and its cell; None if there is none."""
    values = sign * diff.values
    if not np.isfinite(values).any() or np.nanmax(values) <= 0:
        return None
    index = np.unravel_index(int(np.nanargmax(values)), values.shape)
    point = {str(d): float(diff[d].values[i]) for d, i in zip(diff.dims, index)}
    return float(diff.values[index]), point
