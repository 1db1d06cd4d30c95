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
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .grid import Block, BlockPlan, reader_chunks
from .inputs import RunConfig
from .model import MODEL_VERSION
from .params import LIQUIDATION_PARAMS, SCENARIO_PARAMS
from .variables import OUTPUTS, TRIGGERS, variables

#: Most cells of one chunk of a cube variable (8 MiB of float64 before
#: compression): what a reader of a slice or a frontier loads at least.
READER_CHUNK_CELLS = 2**20

if TYPE_CHECKING:
    from zarr.types import AnyAsyncArray


def _version() -> str:
    from . import __version__

    return __version__


def coordinate_table(
    config: RunConfig, segments: tuple[str, ...], loan_ids: tuple[str, ...] = ()
) -> dict[str, tuple[np.ndarray, dict]]:
    """Every coordinate of the cube as ``{name: (values, attributes)}``: the grid
    axes (units, long name, central and severe values), ``segment``,
    ``trigger`` and, with ``loan_ids``, ``loan``."""
    out: dict[str, tuple[np.ndarray, dict]] = {}
    for axis in config.axes:
        param = SCENARIO_PARAMS[axis.name]
        attrs: dict[str, Any] = {"units": param.units, "long_name": param.long_name}
        if axis.central is not None:
            attrs["central"] = axis.central
        if axis.severe is not None:
            attrs["severe"] = axis.severe
        out[axis.name] = (axis.array, attrs)
    out["segment"] = (np.array(segments, dtype=object), {"long_name": "portfolio segment"})
    out["trigger"] = (
        np.array(TRIGGERS, dtype=object),
        {"long_name": "default trigger (the first in this order when several fire)"},
    )
    if loan_ids:
        out["loan"] = (
            np.array(loan_ids, dtype=object),
            {"long_name": "loan_id (canonical order: longest maturity first, then loan_id)"},
        )
    return out


def coords(config: RunConfig, segments: tuple[str, ...], loan_ids: tuple[str, ...] = ()):
    """:func:`coordinate_table` as ``xarray.Variable`` objects."""
    import xarray as xr

    return {
        name: xr.Variable(name, values, attrs)
        for name, (values, attrs) in coordinate_table(config, segments, loan_ids).items()
    }


def provenance(
    config: RunConfig, backend: str, device: str, pf, engine: str = ""
) -> dict[str, Any]:
    spreads = [(ln.spread, ln.principal) for ln in config.loans if ln.spread is not None]
    weighted_spread = (
        1e4 * sum(s * p for s, p in spreads) / sum(p for _, p in spreads) if spreads else np.nan
    )
    # An empty parameter (appraisal_deflation: the foresight appraisal) has no
    # attribute: NetCDF has no null; the config attribute says it in full.
    fixed = {f"scenario_{k}": v for k, v in config.scenario.items() if v is not None}
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


def build_dataset(
    config: RunConfig,
    arrays: dict[str, Any],
    attrs: dict[str, Any],
    segments: tuple[str, ...],
    loan_ids: tuple[str, ...] = (),
):
    """Label full-grid arrays (NumPy or Dask) as the cube.

    ``arrays`` holds :func:`gridstress.variables.variables` of the config
    (the per-loan ones when it asks for them, with ``loan_ids`` in the order
    of their last dim).
    """
    import xarray as xr

    dims = _dims(config)
    data_vars = {}
    for name in variables(config.per_loan):
        meta = OUTPUTS[name]
        data_vars[name] = xr.Variable(
            meta.dims(dims), arrays[name], {"units": meta.units, "long_name": meta.long_name}
        )
    return xr.Dataset(data_vars, coords=coords(config, segments, loan_ids), attrs=attrs)


def extra_size(name: str, segments: tuple[str, ...], loan_ids: tuple[str, ...]) -> int | None:
    """Length of a variable's extra dim (None: it has none)."""
    return {None: None, "segment": len(segments), "trigger": len(TRIGGERS), "loan": len(loan_ids)}[
        OUTPUTS[name].extra_dim
    ]


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


def compressor():
    """The codec of the cube's arrays: Blosc LZ4 with byte shuffle
    (``benchmarks/zarr_codecs.py`` measured the choice)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _plain(value: Any) -> Any:
    """An attribute value as JSON takes it (NumPy scalars to Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def empty_zarr(
    path: Path,
    config: RunConfig,
    plan: BlockPlan,
    attrs: dict[str, Any],
    segments: tuple[str, ...],
    loan_ids: tuple[str, ...] = (),
) -> None:
    """Create the Zarr store: coords, attrs and empty variables chunked within ``plan``'s
    blocks (:func:`gridstress.grid.reader_chunks`).

    Written with zarr itself, in the layout xarray reads (``dimension_names``,
    attributes per array), so that creating a store needs neither xarray nor
    dask.  Variables read NaN until their blocks are written.
    """
    import zarr

    dims = _dims(config)
    codec = compressor()
    root = zarr.open_group(str(path), mode="w", attributes={k: _plain(v) for k, v in attrs.items()})
    for name, (values, meta) in coordinate_table(config, segments, loan_ids).items():
        text = values.dtype == object
        array = root.create_array(
            name,
            shape=values.shape,
            chunks=values.shape,
            dtype=str if text else np.float64,
            dimension_names=[name],
            attributes=meta,
            compressors=None if text else codec,
        )
        array[:] = values.astype(str) if text else values
    for name in variables(config.per_loan):
        output = OUTPUTS[name]
        keep = [d in output.dims(dims) for d in dims]
        shape = tuple(n for n, k in zip(plan.shape, keep) if k)
        extra = extra_size(name, segments, loan_ids)
        # Chunks sized for readers, each inside one block (a GPU block of
        # 2^24 cells would otherwise be one 128 MiB chunk per variable).
        chunks = reader_chunks(
            tuple(c for c, k in zip(plan.chunks, keep) if k), READER_CHUNK_CELLS // (extra or 1)
        )
        if extra is not None:
            shape, chunks = shape + (extra,), chunks + (extra,)
        root.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=np.float64,
            fill_value=np.nan,
            dimension_names=list(output.dims(dims)),
            attributes={"units": output.units, "long_name": output.long_name},
            compressors=codec,
        )


def consolidate(path: Path) -> None:
    """Consolidate the store's metadata, so that plain ``xarray.open_zarr`` opens
    it in one read and without a warning."""
    import warnings

    import zarr

    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def write_block(
    path: Path, config: RunConfig, block: Block, results: dict[str, np.ndarray]
) -> None:
    """Write a finished block into its region of an existing Zarr store.

    The variables are written concurrently (Zarr's asynchronous API), so one
    variable's compression overlaps another's file writes, on the event loop
    that Zarr's synchronous API runs on.
    """
    import asyncio

    import zarr.api.asynchronous as azarr
    from zarr.core.sync import sync

    async def write_all() -> None:
        group = await azarr.open_group(str(path), mode="r+")

        async def write_one(name: str) -> None:
            region = block_region(name, config, block)
            if region is not None:
                # a variable of the cube: an array, never a group
                array = cast("AnyAsyncArray", await group.getitem(name))
                await array.setitem(region, results[name])

        await asyncio.gather(*(write_one(name) for name in variables(config.per_loan)))

    sync(write_all())


def write_netcdf_from_zarr(zarr_path: Path, nc_path: Path) -> None:
    """Stream a Zarr cube into a NetCDF-4 file, one chunk at a time."""
    import xarray as xr

    with xr.open_zarr(zarr_path, consolidated=False) as ds:
        ds.to_netcdf(nc_path, engine="h5netcdf")


def _consolidated(path: Path) -> bool:
    """Whether a Zarr store has consolidated metadata (zarr format 3)."""
    import json

    meta = path / "zarr.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("consolidated_metadata") is not None
    except (OSError, ValueError):
        return False


def open_cube(path: str | Path):
    """Open a cube written by ``gridstress run`` (Zarr directory or ``.nc`` file)
    as an ``xarray.Dataset``.

    Variables are loaded lazily (Dask-backed for Zarr).  Stores without
    consolidated metadata (written before it was added) open too.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such cube")
    if not (path.is_dir() or path.suffix.lower() == ".nc"):
        raise ValueError(
            f"{path}: not a gridstress cube (a cube is the .zarr directory or "
            f".nc file that gridstress run writes){_looks_like(path)}"
        )
    import xarray as xr

    try:
        if path.is_dir():
            ds = xr.open_zarr(path, consolidated=_consolidated(path))
        else:
            ds = xr.open_dataset(path, engine="h5netcdf")
    except Exception as exc:  # xarray, zarr and h5py raise many kinds for a foreign file
        raise ValueError(f"{path}: not a gridstress cube ({type(exc).__name__}: {exc})") from None
    if "model_version" not in ds.attrs:
        ds.close()
        raise ValueError(f"{path}: not a gridstress cube (no model_version attribute)")
    return ds


def _looks_like(path: Path) -> str:
    """A hint on what a file given for a cube is instead."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return f"; it looks like a run config: gridstress run {path} writes its cube"
    if suffix in (".csv", ".xlsx", ".parquet", ".pq"):
        return "; it looks like a portfolio: a run config names it under portfolio:"
    return ""


__all__ = ["block_region", "build_dataset", "consolidate", "empty_zarr", "open_cube", "provenance"]
