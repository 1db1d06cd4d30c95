"""Reverse stress test: the least severe, and the most probable, breaking cells.

A cell breaks when its ``loss_rate`` reaches the target. "Least severe" is
the smallest normalised distance from the central scenario,

    distance = sqrt( sum over axes a of ((x_a - central_a) / scale_a)^2 ),
    scale_a  = |severe_a - central_a|,

so one unit on every axis is the move from the central to the severe
scenario (an axis without ``central``/``severe`` takes its midpoint and its
maximum, so scale = half its range; an axis of one value is left out).
An axis that holds a non-finite value (``market_depth_gpus: .inf``, a deep
market) is measured in grid steps instead: ``x_a``, ``central_a`` and
``severe_a`` are then the positions of the grid values nearest to them.
"Most probable" ranks the breaking cells by their scenario weight
(:func:`.risk.scenario_weights`, whose edge cells carry the scenarios beyond
the grid; their weights are reported). The result says when the target is
at or below the base (central) scenario's own loss rate: then the base
scenario itself breaks the book. See ``docs/analysis.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .headline import grid_dims, leading_slices, scenario_point
from .risk import edge_columns, scenario_weights
from .select import reference_values


def _in_steps(ds: xr.Dataset, axis: str) -> bool:
    """Whether the distance measures ``axis`` in grid steps (it holds a non-finite value)."""
    return not np.isfinite(np.asarray(ds[axis].values, dtype=np.float64)).all()


def _position(ds: xr.Dataset, axis: str, value: Any) -> Any:
    """The grid index nearest to ``value`` (a number or an array of axis values)."""
    values = np.asarray(ds[axis].values, dtype=np.float64)
    x = np.asarray(value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        gap = np.abs(values.reshape((-1,) + (1,) * x.ndim) - x)
    gap = np.where(values.reshape((-1,) + (1,) * x.ndim) == x, 0.0, gap)  # inf == inf
    index = np.nanargmin(gap, axis=0).astype(np.float64)
    return (
        xr.DataArray(index, dims=value.dims, coords=value.coords)
        if isinstance(value, xr.DataArray)
        else float(index)
    )


def axis_scales(ds: xr.Dataset) -> dict[str, tuple[float, float]]:
    """``{axis: (central, scale)}`` of the distance, for every axis that has a scale
    (both in grid steps for an axis that holds a non-finite value)."""
    out = {}
    for axis in grid_dims(ds):
        central, severe = reference_values(ds, axis)
        values = np.asarray(ds[axis].values, dtype=np.float64)
        if _in_steps(ds, axis):
            central, severe = _position(ds, axis, central), _position(ds, axis, severe)
            values = np.arange(values.size, dtype=np.float64)
        scale = abs(severe - central) or (values.max() - values.min()) / 2
        if scale > 0:
            out[axis] = (central, float(scale))
    return out


def distance(ds: xr.Dataset, point: Mapping[str, Any]) -> Any:
    """Normalised distance from the central scenario of a point of the cube.

    ``point`` maps each axis to a value or to an array of them (xarray
    coordinates broadcast against each other); axes without a scale are
    left out.
    """
    terms = []
    for axis, (central, scale) in axis_scales(ds).items():
        x = _position(ds, axis, point[axis]) if _in_steps(ds, axis) else point[axis]
        terms.append(((x - central) / scale) ** 2)
    return np.sqrt(sum(terms, start=0.0))


def normalised_distance(ds: xr.Dataset, block: Mapping[str, slice] | None = None) -> xr.DataArray:
    """Distance of every cell (of ``block``, default all) from the central scenario."""
    dims = grid_dims(ds)
    block = block or {}
    coords = {d: ds[d].isel({d: block[d]}) if d in block else ds[d] for d in dims}
    dist = xr.DataArray(distance(ds, coords))
    dist, *_ = xr.broadcast(dist, *coords.values())
    return dist.transpose(*dims)


@dataclass(frozen=True)
class Cell:
    point: dict[str, float]
    loss_rate: float
    distance: float
    probability: float

    def row(self) -> dict[str, float]:
        return {
            **self.point,
            "loss_rate": self.loss_rate,
            "distance": self.distance,
            "probability": self.probability,
        }


@dataclass(frozen=True)
class ReverseStress:
    target: float
    rho: float
    n_breaking: int
    n_cells: int
    breaking_probability: float
    """Total scenario weight of the breaking cells: P(loss_rate >= target)."""
    nearest: list[Cell] = field(default_factory=list)
    """Breaking cells by increasing distance from the central scenario."""
    probable: list[Cell] = field(default_factory=list)
    """Breaking cells by decreasing probability."""
    base_loss_rate: float = float("nan")
    """Loss rate of the base (central) scenario's grid point."""
    edges: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``{axis: (low, high)}``: weight on the cells at each axis's first and last
    grid value (:attr:`.risk.Weights.edges`)."""

    @property
    def at_or_below_base(self) -> bool:
        """Whether the target is at or below the base scenario's loss rate, so
        that the base scenario itself is a breaking cell."""
        return self.target <= self.base_loss_rate

    def base_line(self) -> str | None:
        """One line saying that the target is at or below the base scenario's
        loss rate; None when it is above."""
        if not self.at_or_below_base:
            return None
        return (
            f"the target loss rate {self.target:.2%} is at or below the base scenario's "
            f"{self.base_loss_rate:.2%}: the base scenario itself breaks the book"
        )

    def rows(self) -> list[dict[str, object]]:
        """CSV rows of both rankings: ``ranking,rank,<axes>,loss_rate,distance,
        probability`` then the edge weights ``<axis>_edge_low``, ``<axis>_edge_high``."""
        edges = edge_columns(self.edges)
        return [
            {"ranking": ranking, "rank": i, **c.row(), **edges}
            for ranking, cells in (("nearest", self.nearest), ("probable", self.probable))
            for i, c in enumerate(cells, 1)
        ]


#: How far above the base scenario's loss rate the default reverse-stress
#: targets lie [share of principal].
TARGET_STEPS = (0.05, 0.10)


def targets_above(
    base_loss_rate: float, worst_loss_rate: float, steps: tuple[float, ...] = TARGET_STEPS
) -> list[float]:
    """Reverse-stress targets above the base scenario's loss that some cell reaches.

    The base loss rate plus each of ``steps``, rounded to 0.1%, where the
    worst cell reaches it; else, when the worst cell is above the base, the
    loss rate half way between them; else none (no cell loses more).
    """
    out = [
        round(base_loss_rate + step, 3)
        for step in steps
        if round(base_loss_rate + step, 3) <= worst_loss_rate
    ]
    if not out and worst_loss_rate > base_loss_rate:
        out = [(base_loss_rate + worst_loss_rate) / 2]
    return out


def _best(score: np.ndarray, offset: int, count: int) -> list[tuple[float, int]]:
    """The ``count`` lowest finite scores with their flat indices (offset added)."""
    flat = score.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    if finite.size > count:
        keep = np.argpartition(flat[finite], count - 1)[:count]
        finite = finite[keep]
    return [(float(flat[i]), int(i) + offset) for i in finite]


def reverse_stress(
    ds: xr.Dataset,
    target: float,
    count: int = 11,
    rho: float = 0.5,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ReverseStress:
    """Breaking cells (``loss_rate >= target``) nearest to the central scenario and most probable.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube; read block by block, so memory stays bounded.
    target : float
        Loss rate [share of principal] in [0, 1] that a cell must reach.
    count : int
        Cells listed by each ranking (the first and the ten next).
    rho : float
        Copula correlation of the scenario weights.
    overrides : mapping, optional
        Marginal distributions replacing the defaults (see :mod:`.risk`).
    """
    if not 0 <= target <= 1:
        raise InputError(f"--loss-rate {target:g}: must be in [0, 1]")
    loss_rate = ds["loss_rate"].transpose(*grid_dims(ds))
    scenario = scenario_weights(ds, rho, overrides)
    nearest, probable, n_breaking, p_breaking = [], [], 0, 0.0
    per_row = int(np.prod(loss_rate.shape[1:]))
    for rows in leading_slices(loss_rate.shape):
        block = {str(loss_rate.dims[0]): rows}
        part = loss_rate.isel(block).values
        breaks = part >= target
        w = scenario.block(block)
        n_breaking += int(breaks.sum())
        p_breaking += float(w[breaks].sum())
        offset = rows.start * per_row
        dist = normalised_distance(ds, block).values
        nearest += _best(np.where(breaks, dist, np.inf), offset, count)
        probable += _best(np.where(breaks, -w, np.inf), offset, count)
    # ties: the lower flat index (milder values on earlier axes) first
    nearest = sorted(nearest)[:count]
    probable = sorted(probable)[:count]

    def cell(flat: int) -> Cell:
        index = dict(zip(loss_rate.dims, np.unravel_index(flat, loss_rate.shape)))
        point = {str(d): float(ds[d].values[i]) for d, i in index.items()}
        return Cell(
            point,
            float(loss_rate.isel(index)),
            float(distance(ds, point)),
            float(scenario.block({str(d): slice(i, i + 1) for d, i in index.items()}).item()),
        )

    return ReverseStress(
        target=float(target),
        rho=float(rho),
        n_breaking=n_breaking,
        n_cells=int(loss_rate.size),
        breaking_probability=p_breaking,
        nearest=[cell(i) for _, i in nearest],
        probable=[cell(i) for _, i in probable],
        base_loss_rate=float(loss_rate.sel(scenario_point(ds, "central"))),
        edges=scenario.edges,
    )
