"""Headline figures of a cube: worst cell, default share, central scenario."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


def grid_dims(ds: xr.Dataset) -> list[str]:
    """The scenario axes of a cube (every dim but ``segment``)."""
    return [d for d in ds["loss"].dims if d != "segment"]


def scenario_point(ds: xr.Dataset, which: str = "central") -> dict[str, float]:
    """Grid point of the ``central`` (or ``severe``) scenario.

    Each axis takes the value its config gave (kept as a coordinate
    attribute), else the midpoint of its range, rounded to the nearest grid
    value.  For ``severe`` the fallback is the axis maximum.
    """
    point = {}
    for dim in grid_dims(ds):
        coord = ds[dim]
        values = coord.values
        target = coord.attrs.get(which)
        if target is None:
            target = values.max() if which == "severe" else (values.min() + values.max()) / 2
        point[dim] = float(values[int(np.argmin(np.abs(values - target)))])
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


def headline(ds: xr.Dataset) -> Headline:
    """Worst loss rate and where, share of cells with a default, central loss."""
    loss_rate = ds["loss_rate"].load()
    flat = int(np.nanargmax(loss_rate.values)) if loss_rate.size else 0
    index = np.unravel_index(flat, loss_rate.shape)
    worst_cell = {d: float(ds[d].values[i]) for d, i in zip(loss_rate.dims, index)}
    defaults = ds["defaults"].load()
    central = scenario_point(ds, "central")
    at = ds[["loss", "loss_rate"]].sel(central).load()
    return Headline(
        worst_loss_rate=float(loss_rate.values[index]),
        worst_cell=worst_cell,
        default_share=float((defaults > 0).mean()),
        central=central,
        central_loss=float(at["loss"]),
        central_loss_rate=float(at["loss_rate"]),
        n_cells=int(loss_rate.size),
    )
