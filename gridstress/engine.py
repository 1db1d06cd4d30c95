"""Running a grid: blocks of cells through the model, into a cube.

:func:`run_grid` returns the cube in memory; :func:`write_cube` streams each
finished block into a Zarr store on disk, so memory stays bounded by one
block whatever the grid, and an interrupted run keeps every finished block:
``resume=True`` carries on from them.

The store is built at ``<out>.partial`` and renamed to ``<out>`` only when
complete; a NetCDF ``.nc`` output is converted from that store at the end.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .backend import Backend, resolve_backend
from .config import RunConfig, load_config
from .cube import (
    ZarrBlockWriter,
    build_dataset,
    empty_zarr,
    provenance,
    write_netcdf_from_zarr,
)
from .errors import InputError
from .grid import Block, BlockPlan, largest_plan, plan_blocks
from .model import VARIABLES, block_bytes, evaluate, scenario_arrays
from .params import SCENARIO_PARAMS
from .portfolio import PortfolioArrays, portfolio_arrays

#: Working-memory budget of one block [bytes].
BLOCK_BUDGET_BYTES = 256 * 2**20
#: Loans x path cells per block: state arrays of about 2 MB stay in the CPU's
#: caches, which makes the recursion about twice as fast as on larger blocks.
CACHE_LOAN_CELLS = 2**18
#: Cells per block of the fused GPU kernel: enough to fill the GPU many times
#: over and amortise each launch; less where the GPU's free memory is short.
GPU_BLOCK_CELLS = 2**24
#: Working-memory budget of the xp model on CuPy arrays [bytes].
XP_GPU_BUDGET_BYTES = 2 * 2**30
_DONE = "gridstress_progress"

ProgressFn = Callable[[Block], None]


@dataclass
class PreparedRun:
    """A config ready to evaluate: portfolio on the device, block plan chosen."""

    config: RunConfig
    backend: Backend
    portfolio: PortfolioArrays
    device_portfolio: PortfolioArrays
    plan: BlockPlan
    fused: Any = None
    """The fused CUDA kernel (:class:`gridstress.kernels.FusedGrid`) on a GPU backend;
    None where the xp model runs (NumPy, or CuPy with ``kernel="xp"``)."""

    def evaluate_block(self, block: Block, copy: bool = True) -> dict[str, np.ndarray]:
        """Results of one block, as host arrays.

        ``copy=False`` lets the GPU backend return views of its pinned transfer
        buffers, valid until the call after next: for callers that store each
        block before going on.
        """
        axes_values = {a.name: a.array[s] for a, s in zip(self.config.axes, block.slices)}
        if self.fused is not None:
            return self.fused.evaluate(axes_values, self.config.scenario, copy)
        xp = self.backend.xp
        scenario = scenario_arrays(axes_values, self.config.scenario, xp)
        out = evaluate(self.device_portfolio, scenario, block.shape, xp)
        return {name: self.backend.to_host(value) for name, value in out.items()}

    def attrs(self) -> dict[str, Any]:
        return provenance(self.config, self.backend.name, self.backend.device, self.portfolio)


def prepare(config: RunConfig | str | Path, backend: str | Backend = "auto",
            chunk_cells: int | None = None, kernel: str = "fused") -> PreparedRun:
    """Validate inputs, pick the backend and plan the blocks.

    On a CuPy backend ``kernel="fused"`` (the default) evaluates blocks with
    the fused CUDA kernel; ``kernel="xp"`` runs the array model on CuPy arrays
    instead (the baseline of ``gridstress bench``).
    """
    if kernel not in ("fused", "xp"):
        raise ValueError(f"kernel must be 'fused' or 'xp', not {kernel!r}")
    if not isinstance(config, RunConfig):
        config = load_config(config)
    if not isinstance(backend, Backend):
        backend = resolve_backend(backend)
    if chunk_cells is not None and chunk_cells < 1:
        raise InputError(f"--chunk-cells={chunk_cells} must be >= 1")
    try:
        pf = portfolio_arrays(config.loans, config.periods_per_year)
    except ValueError as exc:
        raise InputError(f"{config.source}: {exc}") from None
    fused = None
    if backend.name == "cupy" and kernel == "fused":
        from .kernels import FusedGrid

        fused = FusedGrid(pf, backend.xp)
    if chunk_cells is not None:
        plan = plan_blocks(config.shape, chunk_cells)
    elif fused is not None:
        plan = gpu_plan(config, pf, backend.xp.cuda.Device().mem_info[0])
    elif backend.name == "cupy":
        plan = default_plan(config, pf, budget_bytes=XP_GPU_BUDGET_BYTES,
                            loan_cells=XP_GPU_BUDGET_BYTES)
    else:
        plan = default_plan(config, pf)
    return PreparedRun(config, backend, pf, pf.to(backend.xp), plan, fused)


def gpu_plan(config: RunConfig, pf: PortfolioArrays, free_bytes: int,
             max_cells: int = GPU_BLOCK_CELLS) -> BlockPlan:
    """Blocks for the fused kernel: at most ``max_cells`` cells, and within half
    of the GPU's free memory (the kernel needs a few float64 per cell)."""
    from .kernels import bytes_per_cell

    fit = int(0.5 * free_bytes) // bytes_per_cell(len(pf.segments))
    return plan_blocks(config.shape, max(1, min(max_cells, fit)))


def default_plan(config: RunConfig, pf: PortfolioArrays,
                 budget_bytes: int = BLOCK_BUDGET_BYTES,
                 loan_cells: int = CACHE_LOAN_CELLS) -> BlockPlan:
    """Largest blocks within the memory budget whose default paths fit the caches."""
    on_path = [SCENARIO_PARAMS[a.name].path for a in config.axes]

    def fits(plan: BlockPlan) -> bool:
        path_cells = math.prod(c for c, p in zip(plan.chunks, on_path) if p)
        cells = math.prod(plan.chunks)
        return (pf.n_loans * path_cells <= loan_cells
                and block_bytes(pf.n_loans, len(pf.segments), path_cells, cells)
                <= budget_bytes)

    return largest_plan(config.shape, fits)


def run_grid(config: RunConfig | str | Path, backend: str | Backend = "auto",
             chunk_cells: int | None = None, progress: ProgressFn | None = None) -> xr.Dataset:
    """Evaluate every cell of the config's grid; return the cube in memory."""
    run = prepare(config, backend, chunk_cells)
    n_seg = len(run.portfolio.segments)
    arrays = {name: np.empty(run.plan.shape) for name in VARIABLES}
    arrays["loss_by_segment"] = np.empty(run.plan.shape + (n_seg,))
    for block in run.plan:
        results = run.evaluate_block(block)
        for name in VARIABLES:
            arrays[name][block.slices] = results[name]
        if progress is not None:
            progress(block)
    return build_dataset(run.config, arrays, run.attrs(), run.portfolio.segments)


def partial_path(out: Path) -> Path:
    """Where an unfinished run keeps its blocks (a Zarr store)."""
    return out.with_name(out.name + ".partial")


def _done_marks(store: Path, n_blocks: int | None = None):
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    if n_blocks is None:
        return group[_DONE]
    return group.create_array(_DONE, shape=(n_blocks,), chunks=(1,), dtype="uint8",
                              fill_value=0)


def _check_resumable(store: Path, run: PreparedRun) -> BlockPlan:
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
    from .cube import open_cube

    try:
        open_cube(out).close()
    except Exception:
        raise InputError(
            f"--out {out}: exists and is not a gridstress cube; "
            "remove it or choose another path"
        ) from None


def write_cube(config: RunConfig | str | Path, out: str | Path,
               backend: str | Backend = "auto", chunk_cells: int | None = None,
               progress: ProgressFn | None = None, resume: bool = False,
               prepared: PreparedRun | None = None) -> Path:
    """Evaluate the grid block by block into a cube at ``out``; return ``out``.

    ``out`` ending in ``.nc`` gives NetCDF-4, anything else a Zarr directory.
    Finished blocks are on disk as soon as they are computed; with
    ``resume=True`` the blocks of an interrupted run (same config and
    portfolio) are kept and only the rest are computed.
    """
    out = Path(out)
    run = prepared or prepare(config, backend, chunk_cells)
    check_output_path(out)
    store = partial_path(out)
    if resume and store.exists():
        run.plan = _check_resumable(store, run)
        marks = _done_marks(store)
        done = np.asarray(marks[:], dtype=bool)
    else:
        if store.exists():
            shutil.rmtree(store)
        store.parent.mkdir(parents=True, exist_ok=True)
        attrs = run.attrs() | {"block_chunks": list(run.plan.chunks)}
        empty_zarr(store, run.config, run.plan, attrs, run.portfolio.segments)
        marks = _done_marks(store, len(run.plan))
        done = np.zeros(len(run.plan), dtype=bool)

    writer = ZarrBlockWriter(store)
    for block in run.plan:
        if not done[block.index]:
            writer.write(block.slices, run.evaluate_block(block, copy=False))
            marks[block.index] = 1  # only after the block's data is on disk
        if progress is not None:
            progress(block)

    import zarr

    group = zarr.open_group(str(store), mode="r+")
    del group[_DONE]
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
        return int(np.asarray(_done_marks(store)[:]).sum())
    except Exception:
        return None
