"""Bare result arrays to a labelled cube, and the cube to and from disk.

The cube is an ``xarray.Dataset`` with one dim per grid axis (in the config's
order) plus ``segment``, ``trigger`` and, with per-loan outputs, ``loan``
for the variables that have them (:data:`gridstress.variables.OUTPUTS`);
every variable and coordinate carries ``units`` and ``long_name``; the
dataset attributes carry the provenance (model and package versions,
resolved config and hashes, backend, device, engine, time of creation).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .grid import Block, BlockPlan
from .inputs import RunConfig
from .model import MODEL_VERSION
from .params import LIQUIDATION_PARAMS, SCENARIO_PARAMS
from .variables import OUTPUTS, TRIGGERS, variables


def _version() -> str:
    from . import __version__

    return __version__


def coords(config: RunConfig, segments: tuple[str, ...],
           loan_ids: tuple[str, ...] = ()) -> dict[str, xr.Variable]:
    """The grid axes, with units, long names and central/severe values, and the
    ``segment``, ``trigger`` and (with ``loan_ids``) ``loan`` coordinates."""
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
    out["trigger"] = xr.Variable(
        "trigger", np.array(TRIGGERS, dtype=object),
        {"long_name": "default trigger (the first in this order when several fire)"})
    if loan_ids:
        out["loan"] = xr.Variable("loan", np.array(loan_ids, dtype=object),
                                  {"long_name": "loan_id (canonical order: longest "
                                                "maturity first, then loan_id)"})
    return out


def provenance(config: RunConfig, backend: str, device: str, pf,
               engine: str = "") -> dict[str, Any]:
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
        "engine": engine,
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
                  segments: tuple[str, ...], loan_ids: tuple[str, ...] = ()) -> xr.Dataset:
    """Label full-grid arrays (NumPy or Dask) as the cube.

    ``arrays`` holds :func:`gridstress.variables.variables` of the config
    (the per-loan ones when it asks for them, with ``loan_ids`` in the order
    of their last dim).
    """
    dims = _dims(config)
    data_vars = {}
    for name in variables(config.per_loan):
        meta = OUTPUTS[name]
        data_vars[name] = xr.Variable(meta.dims(dims), arrays[name],
                                      {"units": meta.units, "long_name": meta.long_name})
    return xr.Dataset(data_vars, coords=coords(config, segments, loan_ids), attrs=attrs)


def extra_size(name: str, segments: tuple[str, ...], loan_ids: tuple[str, ...]) -> int | None:
    """Length of a variable's extra dim (None: it has none)."""
    return {None: None, "segment": len(segments), "trigger": len(TRIGGERS),
            "loan": len(loan_ids)}[OUTPUTS[name].extra_dim]


def block_region(name: str, config: RunConfig, block: Block) -> tuple[slice, ...] | None:
    """Where a block's results of ``name`` go in the cube, or None when another
    block writes them.

    A variable without the liquidation axes (``loan_default_years``) is the
    same in every block that differs only on those axes: the block at their
    first values writes it, so that no two blocks write the same chunk.
    """
    if OUTPUTS[name].liquidation_dims:
        return block.slices
    region = []
    for axis, part in zip(config.axes, block.slices):
        if axis.name not in LIQUIDATION_PARAMS:
            region.append(part)
        elif part.start != 0:
            return None
    return tuple(region)


def empty_zarr(path: Path, config: RunConfig, plan: BlockPlan, attrs: dict[str, Any],
               segments: tuple[str, ...], loan_ids: tuple[str, ...] = ()) -> None:
    """Create the Zarr store: coords, attrs and empty variables chunked as ``plan``."""
    import dask.array as da

    dims = _dims(config)
    arrays = {}
    for name in variables(config.per_loan):
        keep = [d in OUTPUTS[name].dims(dims) for d in dims]
        shape = tuple(n for n, k in zip(plan.shape, keep) if k)
        chunks = tuple(c for c, k in zip(plan.chunks, keep) if k)
        extra = extra_size(name, segments, loan_ids)
        if extra is not None:
            shape, chunks = shape + (extra,), chunks + (extra,)
        arrays[name] = da.full(shape, np.nan, chunks=chunks, dtype=np.float64)
    ds = build_dataset(config, arrays, attrs, segments, loan_ids)
    ds.to_zarr(path, mode="w", compute=False, consolidated=False)


class ZarrBlockWriter:
    """Writes each finished block into its region of an existing Zarr store."""

    def __init__(self, path: Path, config: RunConfig):
        import zarr

        self.group = zarr.open_group(str(path), mode="r+")
        self.config = config

    def write(self, block: Block, results: dict[str, np.ndarray]) -> None:
        for name in variables(self.config.per_loan):
            region = block_region(name, self.config, block)
            if region is not None:
                self.group[name][region] = results[name]


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


__all__ = ["block_region", "build_dataset", "empty_zarr", "open_cube", "provenance"]
