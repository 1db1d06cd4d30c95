"""Headline figures of a cube: worst cell, default share, central scenario."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


def grid_dims(ds: xr.Dataset) -> list[str]:
    """The scenario axes of a cube (every dim but ``segment``)."""
    return [d for d in ds["loss"].dims if d != "segment"]


def scenario_point(ds: xr.Dataset, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of a cube."""
    return axis_point([ds[d] for d in grid_dims(ds)], which)


def axis_point(coords, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario of some axes.

    Each axis (an xarray coordinate: ``name``, ``values``, ``attrs``) takes
    the value its config gave, kept in the ``central``/``severe`` attribute,
    else the midpoint of its range (the maximum for ``severe``), rounded to
    the nearest grid value.
    """
    point = {}
    for coord in coords:
        values = np.asarray(coord.values)
        target = coord.attrs.get(which)
        if target is None:
            target = values.max() if which == "severe" else (values.min() + values.max()) / 2
        point[coord.name] = float(values[int(np.argmin(np.abs(values - target)))])
    return point


@dataclass(frozen=True)
class Headline:
    worst_loss_rate: float
    worst_cell: dict[str, float]
    default_share: float
    central: dict[str, float]
    central_loss: float
    central_loss_rate: float
    n_cells: int

    def lines(self) -> list[str]:
        def where(point):
            return ", ".join(f"{k}={v:.4g}" for k, v in point.items())

        return [
            f"worst loss rate: {self.worst_loss_rate:.2%} at {where(self.worst_cell)}",
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
    worst, worst_index, with_default = -np.inf, None, 0
    for rows in leading_slices(loss_rate.shape):
        part = loss_rate.isel({dims[0]: rows}).values
        if np.isfinite(part).any():
            flat = int(np.nanargmax(part))
            if part.flat[flat] > worst:
                worst = float(part.flat[flat])
                local = np.unravel_index(flat, part.shape)
                worst_index = (local[0] + rows.start,) + tuple(local[1:])
        with_default += int((ds["defaults"].isel({dims[0]: rows}).values > 0).sum())
    worst_cell = ({d: float(ds[d].values[i]) for d, i in zip(dims, worst_index)}
                  if worst_index is not None else {})
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
    )
