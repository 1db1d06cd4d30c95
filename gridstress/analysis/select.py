"""Checked access to a cube: variables, axes, fixed points and the scenario frame.

Every analysis takes names from the user (``--var``, ``--x``, ``--at``); the
functions here turn a name that the cube does not have into an
:class:`~gridstress.errors.InputError` that lists what it does have.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ..errors import InputError, did_you_mean
from .headline import grid_dims


def require_var(ds: xr.Dataset, var: str, option: str = "--var") -> xr.DataArray:
    """The data variable ``var`` of the cube, over the scenario axes only."""
    if var not in ds.data_vars:
        raise InputError(
            f"{option} {var}: not a variable of the cube"
            f"{did_you_mean(var, ds.data_vars)}; variables are: "
            + ", ".join(map(str, ds.data_vars))
        )
    extra = [d for d in ds[var].dims if d not in grid_dims(ds)]
    if extra:
        raise InputError(
            f"{option} {var}: has a {extra[0]} dim; choose a variable with one "
            "value per cell (e.g. loss)"
        )
    return ds[var]


def require_axis(ds: xr.Dataset, axis: str, option: str) -> str:
    """``axis`` if it is a scenario axis of the cube."""
    axes = grid_dims(ds)
    if axis not in axes:
        raise InputError(
            f"{option} {axis}: not an axis of the cube{did_you_mean(axis, axes)}; "
            "axes are: " + ", ".join(axes)
        )
    return axis


def nearest_point(ds: xr.Dataset, at: Mapping[str, float]) -> dict[str, float]:
    """The grid values nearest to the requested ``NAME=VALUE`` values.

    A name must be an axis of the cube and its value lie within the axis
    range; the nearest grid value is taken (the lower one on a tie).
    """
    point = {}
    for name, value in at.items():
        require_axis(ds, name, "--at")
        values = np.asarray(ds[name].values)
        lo, hi = float(values.min()), float(values.max())
        if not lo <= value <= hi:
            raise InputError(
                f"--at {name}={value:g}: outside the cube's {name} axis [{lo:g}, {hi:g}]"
            )
        point[name] = float(values[int(np.argmin(np.abs(values - value)))])
    return point


def reference_values(ds: xr.Dataset, axis: str) -> tuple[float, float]:
    """The (central, severe) values of an axis, exactly as configured.

    An axis without them takes the midpoint of its range as central and
    its maximum as severe (the same rule as :func:`.headline.axis_point`,
    but not rounded to a grid value).
    """
    values = np.asarray(ds[axis].values, dtype=np.float64)
    central = ds[axis].attrs.get("central")
    severe = ds[axis].attrs.get("severe")
    if central is None:
        central = (values.min() + values.max()) / 2
    if severe is None:
        severe = values.max()
    return float(central), float(severe)
