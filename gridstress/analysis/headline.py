"""Headline figures of a cube: worst cell, default share, central scenario.

They are computed either from a finished cube (:func:`headline`) or, while
a run writes it, block by block (:func:`block_headline`, combined by
:func:`combine`): a run prints them without reading the cube back.  The
reference points of an axis (its central and severe values) follow one rule
for both, :func:`reference_index`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

    from ..grid import Block
    from ..inputs import RunConfig


def grid_dims(ds: xr.Dataset) -> list[str]:
    """The scenario axes of a cube (every dim but ``segment``)."""
    return [str(d) for d in ds["loss"].dims if d != "segment"]


def scenario_point(ds: xr.Dataset, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of a cube."""
    return axis_point([ds[d] for d in grid_dims(ds)], which)


def reference_index(values, given: float | None, which: str = "central") -> int:
    """Index of an axis's ``central`` (or ``severe``) grid value.

    The value its config gave (``given``), else the midpoint of its range
    (the maximum for ``severe``), rounded to the nearest grid value (the
    lower on a tie).
    """
    values = np.asarray(values, dtype=np.float64)
    target = given
    if target is None:
        target = values.max() if which == "severe" else (values.min() + values.max()) / 2
    with np.errstate(invalid="ignore"):
        gap = np.where(values == target, 0.0, np.abs(values - target))  # inf == inf
    return int(np.nanargmin(gap)) if np.isfinite(gap).any() else 0


def axis_point(coords, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of some axes
    (xarray coordinates: ``name``, ``values``, ``attrs``), by :func:`reference_index`."""
    return {
        coord.name: float(
            np.asarray(coord.values)[reference_index(coord.values, coord.attrs.get(which), which)]
        )
        for coord in coords
    }


@dataclass(frozen=True)
class Headline:
    worst_loss_rate: float
    worst_cell: dict[str, float]
    default_share: float
    central: dict[str, float]
    central_loss: float
    central_loss_rate: float
    n_cells: int
    worst_cells: int = 1
    """Cells whose loss rate equals the worst; ``worst_cell`` is the first in C order."""

    def lines(self) -> list[str]:
        def where(point):
            return ", ".join(f"{k}={v:.4g}" for k, v in point.items())

        tied = (
            f" (the first of {self.worst_cells:,} cells at this rate)"
            if self.worst_cells > 1
            else ""
        )
        return [
            f"worst loss rate: {self.worst_loss_rate:.2%} at {where(self.worst_cell)}{tied}",
            f"cells with any default: {self.default_share:.1%} of {self.n_cells:,}",
            f"central scenario ({where(self.central)}): loss "
            f"${self.central_loss / 1e6:,.1f}M ({self.central_loss_rate:.2%} of principal)",
        ]


def leading_slices(shape: tuple[int, ...], max_cells: int = 2**22):
    """Slices along the first dim that hold at most about ``max_cells`` cells."""
    per_row = max(1, int(np.prod(shape[1:])))
    step = max(1, max_cells // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, min(shape[0], start + step))


def headline(ds: xr.Dataset) -> Headline:
    """Worst loss rate and where, share of cells with a default, central loss.

    Reads the cube slice by slice, so memory stays bounded for any grid.
    """
    loss_rate = ds["loss_rate"]
    dims = loss_rate.dims
    worst, worst_index, with_default, ties = -np.inf, None, 0, 0
    for rows in leading_slices(loss_rate.shape):
        part = loss_rate.isel({dims[0]: rows}).values
        if np.isfinite(part).any():
            flat = int(np.nanargmax(part))
            if part.flat[flat] > worst:
                worst, ties = float(part.flat[flat]), 0
                local = np.unravel_index(flat, part.shape)
                worst_index = (local[0] + rows.start,) + tuple(local[1:])
            ties += int((part == worst).sum())
        with_default += int((ds["defaults"].isel({dims[0]: rows}).values > 0).sum())
    worst_cell = (
        {str(d): float(ds[d].values[i]) for d, i in zip(dims, worst_index)}
        if worst_index is not None
        else {}
    )
    central = scenario_point(ds, "central")
    at = ds[["loss", "loss_rate"]].sel(central).load()
    return Headline(
        worst_loss_rate=worst if worst_index is not None else float("nan"),
        worst_cell=worst_cell,
        default_share=with_default / loss_rate.size,
        central=central,
        central_loss=float(at["loss"]),
        central_loss_rate=float(at["loss_rate"]),
        n_cells=int(loss_rate.size),
        worst_cells=max(ties, 1),
    )


#: The variables a block's headline reads.
HEADLINE_VARIABLES = ("loss", "loss_rate", "defaults")


@dataclass(frozen=True)
class BlockHeadline:
    """One block's part of the headline: small, so a Dask task returns it."""

    worst_loss_rate: float
    worst_flat: int
    """Flat (C order) grid index of the worst cell; -1 when no cell is finite."""
    worst_cells: int
    """Cells of the block at its worst loss rate."""
    with_default: int
    central: tuple[float, float] | None
    """(loss, loss_rate) of the central cell when the block holds it."""


def central_index(config: RunConfig) -> tuple[int, ...]:
    """Grid indices of the config's central scenario."""
    return tuple(reference_index(a.array, a.central) for a in config.axes)


def block_headline(config: RunConfig, block: Block, results: dict[str, Any]) -> BlockHeadline:
    """A block's worst loss rate, its cells with a default and the central cell.

    Of tied worst cells the first in C order counts, as in :func:`headline`.
    """
    loss_rate = np.asarray(results["loss_rate"])
    starts = [s.start for s in block.slices]
    worst, worst_flat, ties = -np.inf, -1, 0
    if np.isfinite(loss_rate).any():
        local = np.unravel_index(int(np.nanargmax(loss_rate)), loss_rate.shape)
        worst = float(loss_rate[local])
        ties = int((loss_rate == worst).sum())
        worst_flat = int(
            np.ravel_multi_index(tuple(i + s for i, s in zip(local, starts)), config.shape)
        )
    central = None
    at = central_index(config)
    if all(s.start <= i < s.stop for s, i in zip(block.slices, at)):
        local = tuple(i - s for i, s in zip(at, starts))
        central = (float(np.asarray(results["loss"])[local]), float(loss_rate[local]))
    with_default = int((np.asarray(results["defaults"]) > 0).sum())
    return BlockHeadline(worst, worst_flat, ties, with_default, central)


def combine(config: RunConfig, parts: Iterable[BlockHeadline]) -> Headline:
    """The headline of a grid from the headlines of its blocks."""
    worst, worst_flat, with_default, central = -np.inf, -1, 0, (np.nan, np.nan)
    ties = 0
    for part in parts:
        if part.worst_flat < 0:
            pass
        elif part.worst_loss_rate > worst:
            worst, worst_flat, ties = part.worst_loss_rate, part.worst_flat, part.worst_cells
        elif part.worst_loss_rate == worst:
            worst_flat, ties = min(worst_flat, part.worst_flat), ties + part.worst_cells
        with_default += part.with_default
        if part.central is not None:
            central = part.central
    cell = (
        {
            a.name: float(a.values[i])
            for a, i in zip(config.axes, np.unravel_index(worst_flat, config.shape))
        }
        if worst_flat >= 0
        else {}
    )
    at = central_index(config)
    return Headline(
        worst_loss_rate=worst if worst_flat >= 0 else float("nan"),
        worst_cell=cell,
        default_share=with_default / config.n_cells,
        central={a.name: float(a.values[i]) for a, i in zip(config.axes, at)},
        central_loss=central[0],
        central_loss_rate=central[1],
        n_cells=config.n_cells,
        worst_cells=max(ties, 1),
    )
