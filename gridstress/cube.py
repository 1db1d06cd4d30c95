"""Bare result arrays to a labelled cube, and the cube to and from disk.

The cube is an ``xarray.Dataset`` with one dim per grid axis (in the config's
order) plus ``segment`` for ``loss_by_segment``; every variable and
coordinate carries ``units`` and ``long_name``; the dataset attributes carry
the provenance (model and package versions, resolved config and hashes,
backend, device, time of creation).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .config import RunConfig
from .grid import BlockPlan
from .model import MODEL_VERSION, VARIABLES
from .params import SCENARIO_PARAMS

VARIABLE_META: dict[str, tuple[str, str]] = {
    "loss": ("USD", "credit loss summed over loans"),
    "loss_pv": ("USD", "credit loss discounted to t = 0 at discount_rate"),
    "loss_rate": ("1", "loss over total principal"),
    "defaults": ("1", "number of loans that defaulted"),
    "default_rate": ("1", "defaulted principal over total principal"),
    "first_default_years": ("year", "time of the earliest default (NaN: none)"),
    "min_dscr": ("1", "lowest DSCR of any loan up to its default or maturity"),
    "recovery_rate": ("1", "recovery over exposure at default of defaulted loans"),
    "breakeven_spread_bps": ("bp", "annual spread that only just pays for loss_pv"),
    "loss_by_segment": ("USD", "credit loss by portfolio segment"),
}
assert set(VARIABLE_META) == set(VARIABLES)


def _version() -> str:
    from . import __version__

    return __version__


def coords(config: RunConfig, segments: tuple[str, ...]) -> dict[str, xr.Variable]:
    out = {}
    for axis in config.axes:
        param = SCENARIO_PARAMS[axis.name]
        attrs: dict[str, Any] = {"units": param.units, "long_name": param.long_name}
        if axis.central is not None:
            attrs["central"] = axis.central
        if axis.severe is not None:
            attrs["severe"] = axis.severe
        out[axis.name] = xr.Variable(axis.name, axis.array, attrs)
    out["segment"] = xr.Variable(
        "segment", np.array(segments, dtype=object), {"long_name": "portfolio segment"}
    )
    return out


def provenance(config: RunConfig, backend: str, device: str, pf) -> dict[str, Any]:
    spreads = [(ln.spread, ln.principal) for ln in config.loans if ln.spread is not None]
    weighted_spread = (
        1e4 * sum(s * p for s, p in spreads) / sum(p for _, p in spreads) if spreads else np.nan
    )
    fixed = {f"scenario_{k}": v for k, v in config.scenario.items()}
    return {
        "title": f"gridstress credit stress cube: {config.name}",
        "name": config.name,
        "model_version": MODEL_VERSION,
        "gridstress_version": _version(),
        "config": config.to_yaml(),
        "config_sha256": config.config_sha256,
        "portfolio_sha256": config.portfolio_sha256,
        "backend": backend,
        "device": device,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "periods_per_year": config.periods_per_year,
        "n_loans": len(config.loans),
        "total_principal_usd": pf.total_principal,
        "principal_wal_usd_years": pf.principal_wal,
        "weighted_spread_bps": weighted_spread,
        **fixed,
    }


def _dims(config: RunConfig) -> tuple[str, ...]:
    return tuple(a.name for a in config.axes)


def build_dataset(config: RunConfig, arrays: dict[str, Any], attrs: dict[str, Any],
                  segments: tuple[str, ...]) -> xr.Dataset:
    """Label full-grid arrays (NumPy or Dask) as the cube."""
    dims = _dims(config)
    data_vars = {}
    for name in VARIABLES:
        units, long_name = VARIABLE_META[name]
        var_dims = dims + (("segment",) if name == "loss_by_segment" else ())
        data_vars[name] = xr.Variable(var_dims, arrays[name],
                                      {"units": units, "long_name": long_name})
    return xr.Dataset(data_vars, coords=coords(config, segments), attrs=attrs)


def empty_zarr(path: Path, config: RunConfig, plan: BlockPlan, attrs: dict[str, Any],
               segments: tuple[str, ...]) -> None:
    """Create the Zarr store: coords, attrs and empty variables chunked as ``plan``."""
    import dask.array as da

    arrays = {}
    for name in VARIABLES:
        shape, chunks = plan.shape, plan.chunks
        if name == "loss_by_segment":
            shape, chunks = shape + (len(segments),), chunks + (len(segments),)
        arrays[name] = da.full(shape, np.nan, chunks=chunks, dtype=np.float64)
    ds = build_dataset(config, arrays, attrs, segments)
    ds.to_zarr(path, mode="w", compute=False, consolidated=False)


class ZarrBlockWriter:
    """Writes each finished block into its region of an existing Zarr store."""

    def __init__(self, path: Path):
        import zarr

        self.group = zarr.open_group(str(path), mode="r+")

    def write(self, slices: tuple[slice, ...], results: dict[str, np.ndarray]) -> None:
        for name in VARIABLES:
            self.group[name][slices] = results[name]


def write_netcdf_from_zarr(zarr_path: Path, nc_path: Path) -> None:
    """Stream a Zarr cube into a NetCDF-4 file, one chunk at a time."""
    with xr.open_zarr(zarr_path, consolidated=False) as ds:
        ds.to_netcdf(nc_path, engine="h5netcdf")


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube written by ``gridstress run`` (Zarr directory or ``.nc`` file).

    Variables are loaded lazily (Dask-backed for Zarr).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such cube")
    if path.is_dir():
        ds = xr.open_zarr(path, consolidated=False)
    else:
        ds = xr.open_dataset(path, engine="h5netcdf")
    if "model_version" not in ds.attrs:
        ds.close()
        raise ValueError(f"{path}: not a gridstress cube (no model_version attribute)")
    return ds


__all__ = ["VARIABLE_META", "build_dataset", "empty_zarr", "open_cube"]
