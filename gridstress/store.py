"""The partial Zarr store of a run: created, filled block by block, finished.

A run writes into ``<out>.partial``: each block into its own chunks, then
its done mark, so an interrupted run keeps every finished block and
``resume`` computes only the rest.  When every block is in, the store is
renamed to ``<out>`` (or converted to NetCDF for a ``.nc`` output).  The
synchronous path and the Dask workers write through the same functions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .cube import ZarrBlockWriter, empty_zarr, open_cube, write_netcdf_from_zarr
from .errors import InputError
from .grid import Block, BlockPlan
from .inputs import RunConfig
from .prepared import PreparedRun, backend_attrs

#: The store's array of done marks, one per block.
DONE = "gridstress_progress"


def partial_path(out: Path) -> Path:
    """Where an unfinished run keeps its blocks (a Zarr store)."""
    return out.with_name(out.name + ".partial")


def create_store(store: Path, run: PreparedRun, used: set[tuple[str, ...]]) -> None:
    """A new partial store for ``run``: empty variables, attrs, no block done.

    ``used`` holds the (backend, device[, engine]) of what will compute the blocks.
    """
    if store.exists():
        shutil.rmtree(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    attrs = run.attrs() | backend_attrs(used) | {"block_chunks": list(run.plan.chunks)}
    loan_ids = run.portfolio.loan_id if run.config.per_loan else ()
    empty_zarr(store, run.config, run.plan, attrs, run.portfolio.segments, loan_ids)
    done_marks(store, len(run.plan))


def store_block(store: Path, config: RunConfig, block: Block,
                results: dict[str, np.ndarray]) -> None:
    """Write a block into its region of the store, then set its done mark.

    The mark is set only once the data is on disk, so a block cut off while
    being written is computed again by ``resume``.
    """
    ZarrBlockWriter(store, config).write(block, results)
    done_marks(store)[block.index] = 1


def done_marks(store: Path, n_blocks: int | None = None):
    """The store's done marks; with ``n_blocks``, created (all 0)."""
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    if n_blocks is None:
        return group[DONE]
    return group.create_array(DONE, shape=(n_blocks,), chunks=(1,), dtype="uint8",
                              fill_value=0)


def check_resumable(store: Path, run: PreparedRun) -> BlockPlan:
    """The block plan of an interrupted run of the same config and portfolio."""
    import zarr

    try:
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception as exc:
        raise InputError(
            f"{store}: cannot resume, the partial cube is unreadable ({exc})"
        ) from None
    for key, now in (("config_sha256", run.config.config_sha256),
                     ("portfolio_sha256", run.config.portfolio_sha256)):
        if attrs.get(key) != now:
            what = key.split("_")[0]
            raise InputError(
                f"{store}: cannot resume: the {what} changed since the interrupted run "
                f"({key} {str(attrs.get(key))[:12]} there, {now[:12]} now); "
                "run without --resume to start again"
            )
    return BlockPlan(run.plan.shape, tuple(int(c) for c in attrs["block_chunks"]))


def check_output_path(out: Path) -> None:
    """Refuse to replace anything at ``out`` but a gridstress cube."""
    if not out.exists():
        return
    try:
        open_cube(out).close()
    except Exception:
        raise InputError(
            f"--out {out}: exists and is not a gridstress cube; "
            "remove it or choose another path"
        ) from None


def finish_store(store: Path, out: Path, used: set[tuple[str, ...]]) -> Path:
    """Record what computed the blocks, drop the marks, and put the cube at ``out``.

    ``out`` ending in ``.nc`` gets a NetCDF-4 file, anything else the Zarr
    store itself (renamed, so the cube appears whole or not at all).
    """
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update(backend_attrs(used, dict(group.attrs)))
    del group[DONE]
    del group.attrs["block_chunks"]
    if out.suffix.lower() == ".nc":
        tmp = out.with_name(out.name + ".partial.nc")
        try:
            write_netcdf_from_zarr(store, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out)
        shutil.rmtree(store)
    else:
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        store.rename(out)
    return out


def blocks_done(out: str | Path) -> int | None:
    """Blocks already on disk for an interrupted run at ``out`` (None if none)."""
    store = partial_path(Path(out))
    if not store.exists():
        return None
    try:
        return int(np.asarray(done_marks(store)[:]).sum())
    except Exception:
        return None


__all__ = ["DONE", "blocks_done", "check_output_path", "check_resumable", "create_store",
           "done_marks", "finish_store", "partial_path", "store_block"]
