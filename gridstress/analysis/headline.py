"""Headline figures of a finished cube: worst cell, default share, central scenario.

A run computes the same :class:`~gridstress.headline.Headline` from its
blocks as they finish (:mod:`gridstress.headline`).  The reference points
of a cube's axes (central and severe) follow the rule a config's axes
follow, :func:`gridstress.inputs.reference_index`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..headline import Headline
from ..inputs import reference_index

if TYPE_CHECKING:
    import xarray as xr


def grid_dims(ds: xr.Dataset) -> list[str]:
    """The scenario axes of a cube (every dim but ``segment``)."""
    return [str(d) for d in ds["loss"].dims if d != "segment"]


def scenario_point(ds: xr.Dataset, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of a cube."""
    return axis_point([ds[d] for d in grid_dims(ds)], which)


def axis_point(coords, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of some axes
    (xarray coordinates: ``name``, ``values``, ``attrs``), by :func:`reference_index`."""
    return {
        coord.name: float(
            np.asarray(coord.values)[reference_index(coord.values, coord.attrs.get(which), which)]
        )
        for coord in coords
    }


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


__all__ = ["Headline", "axis_point", "grid_dims", "headline", "leading_slices", "scenario_point"]
