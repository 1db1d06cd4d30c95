"""The summary of a cube: base and severe scenarios, worst cell, segments, spread."""

from __future__ import annotations

import math
from dataclasses import dataclass

import xarray as xr
import yaml

from .headline import Headline, headline, scenario_point

SCENARIO_VARS = ("loss", "loss_rate", "default_rate", "defaults", "recovery_rate",
                 "breakeven_spread_bps")


def weighted_spread_bps(ds: xr.Dataset) -> float:
    """The portfolio's principal-weighted actual spread [bp].

    Taken from the cube's ``weighted_spread_bps`` attribute, else computed
    from the loans of its resolved ``config``: ``1e4 * Σ spread_i·B0_i /
    Σ B0_i`` over the loans whose ``spread`` is given; NaN when none is.
    """
    value = ds.attrs.get("weighted_spread_bps")
    if value is not None:
        return float(value)
    loans = (yaml.safe_load(ds.attrs.get("config", "")) or {}).get("portfolio") or []
    given = [(ln["spread"], ln["principal"]) for ln in loans if ln.get("spread") is not None]
    if not given:
        return math.nan
    return 1e4 * sum(s * p for s, p in given) / sum(p for _, p in given)


@dataclass(frozen=True)
class Summary:
    headline: Headline
    scenarios: dict[str, dict[str, float]]
    """``{"base": {...}, "severe": {...}}``: the grid point and its figures."""
    points: dict[str, dict[str, float]]
    """Grid point of each scenario."""
    loss_by_segment: dict[str, float]
    """Loss [USD] per segment at the base (central) scenario."""
    breakeven_spread_bps: float
    """Breakeven spread at the base scenario [bp]."""
    actual_spread_bps: float
    """Principal-weighted actual spread of the portfolio [bp]."""
    total_principal: float

    @property
    def spread_cushion_bps(self) -> float:
        """Actual minus breakeven spread at the base scenario [bp]."""
        return self.actual_spread_bps - self.breakeven_spread_bps


def summary(ds: xr.Dataset) -> Summary:
    """Headline figures, base and severe scenarios, segments and spreads of a cube.

    The base scenario is each axis's ``central`` value, the severe one its
    ``severe`` value (else the midpoint and the maximum of the axis), both
    rounded to the nearest grid value.
    """
    points = {"base": scenario_point(ds, "central"), "severe": scenario_point(ds, "severe")}
    scenarios = {}
    for label, point in points.items():
        at = ds[list(SCENARIO_VARS)].sel(point).load()
        scenarios[label] = {name: float(at[name]) for name in SCENARIO_VARS}
    by_segment = ds["loss_by_segment"].sel(points["base"]).load()
    segments = {str(s): float(v) for s, v in zip(by_segment["segment"].values, by_segment.values)}
    return Summary(
        headline=headline(ds),
        scenarios=scenarios,
        points=points,
        loss_by_segment=segments,
        breakeven_spread_bps=scenarios["base"]["breakeven_spread_bps"],
        actual_spread_bps=weighted_spread_bps(ds),
        total_principal=float(ds.attrs.get("total_principal_usd", math.nan)),
    )
