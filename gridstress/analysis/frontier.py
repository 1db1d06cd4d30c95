"""The deflation frontier: how much rent deflation the book can take.

For every combination of the other axes, the smallest deflation at which a
variable exceeds a threshold, interpolated linearly between grid points; and
for one loan, the smallest deflation on the grid at which it defaults.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import InputError
from .defaults import FRONTIER_THRESHOLD as DEFAULT_THRESHOLD
from .defaults import FRONTIER_VAR as DEFAULT_VAR
from .headline import scenario_point
from .select import require_axis, require_var


def first_crossing(values: np.ndarray, along: np.ndarray, threshold: float) -> np.ndarray:
    """Smallest ``along`` value at which ``values`` (last dim) exceeds ``threshold``.

    Parameters
    ----------
    values : array, shape (..., n)
        The variable along the frontier axis, in the order of ``along``.
    along : array, shape (n,)
        Strictly increasing axis values.
    threshold : float

    Returns
    -------
    array, shape (...)
        For each row, with ``j`` the first index where ``values > threshold``:
        ``along[0]`` when ``j = 0``; NaN when there is none; else the point
        where the straight line between ``(along[j-1], values[j-1])`` and
        ``(along[j], values[j])`` reaches the threshold,
        ``along[j-1] + (threshold - values[j-1]) / (values[j] - values[j-1])
        * (along[j] - along[j-1])``. NaN values never exceed the threshold;
        when ``values[j-1]`` is NaN the crossing is ``along[j]``.

    Notes
    -----
    With ``threshold = 0`` and a variable that is 0 until it turns positive
    (``default_rate``), the crossing is the last grid point at 0: the
    interpolated variable is positive just after it.
    """
    values = np.asarray(values, dtype=np.float64)
    along = np.asarray(along, dtype=np.float64)
    exceeds = values > threshold
    any_exceed = exceeds.any(axis=-1)
    j = np.argmax(exceeds, axis=-1)
    prev = np.maximum(j - 1, 0)
    v_hi = np.take_along_axis(values, j[..., None], axis=-1)[..., 0]
    v_lo = np.take_along_axis(values, prev[..., None], axis=-1)[..., 0]
    x_hi, x_lo = along[j], along[prev]
    with np.errstate(divide="ignore", invalid="ignore"):
        # v_lo <= threshold < v_hi wherever j > 0 and v_lo is a number
        share = np.where(np.isnan(v_lo), 1.0, (threshold - v_lo) / (v_hi - v_lo))
        crossing = np.where(j == 0, along[0], x_lo + share * (x_hi - x_lo))
    return np.where(any_exceed, crossing, np.nan)


def first_true(flags: np.ndarray, along: np.ndarray) -> np.ndarray:
    """The ``along`` value of the first True of ``flags`` (last dim); NaN where none is."""
    flags = np.asarray(flags, dtype=bool)
    j = np.argmax(flags, axis=-1)
    return np.where(flags.any(axis=-1), np.asarray(along, dtype=np.float64)[j], np.nan)


def frontier(
    ds: xr.Dataset,
    var: str = DEFAULT_VAR,
    threshold: float = DEFAULT_THRESHOLD,
    axis: str = "deflation",
) -> xr.DataArray:
    """The frontier of a cube over every other scenario axis.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube (lazy or in memory).
    var : str
        Variable compared with ``threshold`` (default ``loss_rate``).
    threshold : float
        The variable must be strictly greater than this (default 0.01).
    axis : str
        The axis searched (default ``deflation``).

    Returns
    -------
    xarray.DataArray
        Dims: the cube's other scenario axes (``crypto_drawdown``,
        ``haircut`` and any extra axis); values in the units of ``axis``;
        NaN where ``var`` never exceeds ``threshold`` on the grid. Computed
        chunk by chunk for a Dask-backed cube.
    """
    da = require_var(ds, var)
    require_axis(ds, axis, "--axis")
    if da.chunks is not None:
        da = da.chunk({axis: -1})
    along = np.asarray(ds[axis].values, dtype=np.float64)
    result = xr.apply_ufunc(
        first_crossing,
        da,
        kwargs={"along": along, "threshold": float(threshold)},
        input_core_dims=[[axis]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    result = result.compute()
    result.name = axis
    result.attrs = {
        "units": ds[axis].attrs.get("units", ""),
        "long_name": f"smallest {axis} at which {var} > {threshold:g}",
        "var": var,
        "threshold": float(threshold),
    }
    return result


def loan_frontier(ds: xr.Dataset, loan_id: str, axis: str = "deflation") -> xr.DataArray:
    """The smallest ``axis`` value on the grid at which loan ``loan_id`` defaults.

    Read from the cube's per-loan ``loan_default_years``, so its dims are
    the cube's axes but the liquidation ones (a default time does not depend
    on them); NaN where the loan never defaults on the grid.  No
    interpolation: between two grid points the loan either defaults or not.
    """
    if "loan_default_years" not in ds.data_vars:
        raise InputError(
            f"--loan {loan_id}: the cube has no per-loan outputs; run it again "
            "with --per-loan (or outputs: {per_loan: true} in the config)"
        )
    loans = [str(x) for x in ds["loan"].values]
    if loan_id not in loans:
        raise InputError(
            f"--loan {loan_id}: not a loan of the cube; loans are: " + ", ".join(loans)
        )
    require_axis(ds, axis, "--axis")
    years = ds["loan_default_years"].sel(loan=loan_id, drop=True)
    if years.chunks is not None:
        years = years.chunk({axis: -1})
    result = xr.apply_ufunc(
        first_true,
        years.notnull(),
        kwargs={"along": np.asarray(ds[axis].values)},
        input_core_dims=[[axis]],
        dask="parallelized",
        output_dtypes=[np.float64],
    ).compute()
    result.name = axis
    result.attrs = {
        "units": ds[axis].attrs.get("units", ""),
        "long_name": f"smallest {axis} at which {loan_id} defaults",
        "loan": loan_id,
    }
    return result


def grid_floor(ds: xr.Dataset, line: xr.DataArray) -> float:
    """The searched axis's lowest grid value. A frontier equal to it is a bound,
    not a crossing: the variable already exceeds the threshold there
    (:func:`first_crossing`'s ``along[0]``), so the frontier lies at or below it."""
    return float(ds[str(line.name)].values[0])


def frontier_rows(result: xr.DataArray) -> list[dict[str, float]]:
    """One row per cell of the frontier: its coordinates, then the frontier value.

    The columns are the frontier's dims in order (``crypto_drawdown``,
    ``haircut``, then any extra axis) and then the searched axis.
    """
    frame = result.to_dataframe(name=result.name)
    frame = frame.reset_index()[[*result.dims, result.name]]
    return frame.to_dict(orient="records")


def frontier_table(
    line: xr.DataArray, ds: xr.Dataset, rows: str = "crypto_drawdown", columns: str = "haircut"
) -> xr.DataArray:
    """The frontier as a ``rows`` x ``columns`` table, any other axis at its central value.

    A frontier without a ``columns`` dim (a loan's, which has no haircut)
    comes back as one column: dims ``(rows,)``.
    """
    central = scenario_point(ds, "central")
    others = {d: central[d] for d in map(str, line.dims) if d not in (rows, columns)}
    table = line.sel(others)
    return table.transpose(rows, *([columns] if columns in table.dims else []))
