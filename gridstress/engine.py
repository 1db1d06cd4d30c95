"""Running a grid: blocks of cells through the model, into a cube.

:func:`run_grid` returns the cube in memory; :func:`write_cube` streams each
finished block into a Zarr store on disk, so memory stays bounded by one
block whatever the grid, and an interrupted run keeps every finished block:
``resume=True`` carries on from them.

The store is built at ``<out>.partial`` and renamed to ``<out>`` only when
complete; a NetCDF ``.nc`` output is converted from that store at the end.

Blocks run in this process (``scheduler="synchronous"``) or as Dask tasks on
a cluster (:mod:`gridstress.distributed`); either way each block goes
through :func:`evaluate_checked` and :func:`store_block`, so the cube does
not depend on where its blocks ran.
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
from .errors import InputError, ModelError
from .grid import Block, BlockPlan, largest_plan, plan_blocks, smallest_plan
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
#: Most blocks in a default plan: each block is one task on a Dask cluster.
MAX_BLOCKS = 10_000
_DONE = "gridstress_progress"
#: Variables that are finite in every cell.  The others are NaN by definition
#: in some cells (no default, no debt service), so only these can show that
#: the arithmetic broke down.
FINITE_VARIABLES = ("loss", "loss_pv", "loss_rate", "defaults", "default_rate",
                    "breakeven_spread_bps", "loss_by_segment")

#: ``progress(block)`` after each block computed; blocks kept from an
#: interrupted run are reported first, as ``progress(block, skipped=True)``.
ProgressFn = Callable[..., None]
LogFn = Callable[[str], None]


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
        # No CPU-cache limit on a GPU: only the memory budget sizes blocks.
        plan = default_plan(config, pf, budget_bytes=XP_GPU_BUDGET_BYTES, loan_cells=math.inf)
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
                 loan_cells: float = CACHE_LOAN_CELLS,
                 max_blocks: int = MAX_BLOCKS) -> BlockPlan:
    """Largest blocks within the memory budget whose default paths fit the caches.

    Such a block takes 0.1-1 s on a CPU core, a good size for a Dask task.  A
    grid that would need more than ``max_blocks`` of them gets the smallest
    larger blocks that bring it down to ``max_blocks``, within the budget.
    """
    on_path = [SCENARIO_PARAMS[a.name].path for a in config.axes]

    def memory(plan: BlockPlan) -> int:
        path_cells = math.prod(c for c, p in zip(plan.chunks, on_path) if p)
        return block_bytes(pf.n_loans, len(pf.segments), path_cells, math.prod(plan.chunks))

    def fits(plan: BlockPlan) -> bool:
        path_cells = math.prod(c for c, p in zip(plan.chunks, on_path) if p)
        return pf.n_loans * path_cells <= loan_cells and memory(plan) <= budget_bytes

    plan = largest_plan(config.shape, fits)
    if len(plan) > max_blocks:
        fewer = smallest_plan(config.shape, lambda p: len(p) <= max_blocks)
        plan = fewer if memory(fewer) <= budget_bytes else largest_plan(
            config.shape, lambda p: memory(p) <= budget_bytes)
    return plan


def run_grid(config: RunConfig | str | Path, backend: str | Backend = "auto",
             chunk_cells: int | None = None, progress: ProgressFn | None = None,
             scheduler: str | Any | None = None, scheduler_file: str | Path | None = None,
             workers: int | None = None) -> xr.Dataset:
    """Evaluate every cell of the config's grid; return the cube in memory.

    ``scheduler`` is ``"synchronous"`` (this process; the default unless
    ``scheduler_file`` is given), ``"local"``, ``"local-cuda"``, a scheduler
    address such as ``"tcp://host:8786"`` or a ``distributed.Client``;
    ``scheduler_file`` names a running cluster's scheduler file instead (see
    :func:`gridstress.distributed.connect`).
    On a cluster, each block's arrays come back to this process.
    """
    from .distributed import (
        RunSpec,
        check_scheduler,
        connect,
        is_remote,
        run_blocks,
        worker_backends,
    )

    check_scheduler(scheduler, scheduler_file, workers)
    remote = is_remote(scheduler, scheduler_file)
    run = prepare(config, "numpy" if remote else backend, chunk_cells)
    n_seg = len(run.portfolio.segments)
    arrays = {name: np.empty(run.plan.shape) for name in VARIABLES}
    arrays["loss_by_segment"] = np.empty(run.plan.shape + (n_seg,))

    def place(block: Block, results: dict[str, np.ndarray]) -> None:
        for name in VARIABLES:
            arrays[name][block.slices] = results[name]
        if progress is not None:
            progress(block)

    blocks = list(run.plan)
    used = {(run.backend.name, run.backend.device)}
    with connect(scheduler, scheduler_file, workers, n_blocks=len(blocks)) as client:
        if client is None:
            for block in blocks:
                place(block, evaluate_checked(run, block))
        else:
            used = set(worker_backends(client, _backend_name(backend)).values())
            spec = RunSpec(run.config, _backend_name(backend))
            run_blocks(client, spec, blocks,
                       lambda block, receipt: place(block, receipt.results))
    attrs = run.attrs() | _backend_attrs(used)
    return build_dataset(run.config, arrays, attrs, run.portfolio.segments)


def _backend_name(backend: str | Backend) -> str:
    return backend if isinstance(backend, str) else backend.name


def _backend_attrs(used: set[tuple[str, str]], before: dict[str, Any] | None = None
                   ) -> dict[str, str]:
    """``backend`` and ``device`` attributes: every one that computed blocks."""
    names = {name for name, _ in used}
    devices = {device for _, device in used}
    if before:
        names |= set(str(before.get("backend", "")).split("; ")) - {""}
        devices |= set(str(before.get("device", "")).split("; ")) - {""}
    return {"backend": "; ".join(sorted(names)), "device": "; ".join(sorted(devices))}


def describe_cells(config: RunConfig, slices: tuple[slice, ...]) -> str:
    """The cells of a block as axis values, e.g. ``deflation 0..0.3, haircut=0.5``."""
    parts = []
    for axis, part in zip(config.axes, slices):
        values = axis.array[part]
        if len(values) == 1:
            parts.append(f"{axis.name}={values[0]:g}")
        else:
            parts.append(f"{axis.name} {values[0]:g}..{values[-1]:g}")
    return ", ".join(parts)


def evaluate_checked(run: PreparedRun, block: Block, copy: bool = True
                     ) -> dict[str, np.ndarray]:
    """``run.evaluate_block(block, copy)``, failing with the block, cell and loan named.

    Raises :class:`~gridstress.errors.ModelError` when the model raises, or
    when a variable of :data:`FINITE_VARIABLES` is NaN or infinite in some
    cell (inputs whose magnitudes overflow float64 arithmetic).  The message
    names the first such cell and the loans that give a non-finite result
    there on their own.
    """
    where = f"block {block.index} ({describe_cells(run.config, block.slices)})"
    try:
        results = run.evaluate_block(block, copy=copy)
    except Exception as exc:
        raise ModelError(f"{where}: the model failed: {type(exc).__name__}: {exc}") from exc
    for name in FINITE_VARIABLES:
        bad = ~np.isfinite(results[name])
        if not bad.any():
            continue
        index = np.unravel_index(int(np.argmax(bad)), bad.shape)
        cell = tuple(part.start + int(i) for part, i in zip(block.slices, index))
        point = describe_cells(run.config, tuple(slice(i, i + 1) for i in cell))
        culprits = loans_at_fault(run.config, cell)
        if culprits:
            blame = (f"loan_id={', '.join(culprits)} gives a non-finite result there on its "
                     "own: check its inputs for magnitudes that overflow float64")
        else:
            blame = "no loan does on its own: the sum over loans overflows float64"
        raise ModelError(f"{where}: {name}={results[name][index]} at cell {point} "
                         f"(index {cell}) is not finite; {blame}")
    return results


def loans_at_fault(config: RunConfig, cell: tuple[int, ...]) -> list[str]:
    """Loan ids that, alone in the portfolio, give a non-finite result in ``cell``."""
    point = {axis.name: axis.array[i:i + 1] for axis, i in zip(config.axes, cell)}
    scenario = scenario_arrays(point, config.scenario, np)
    found = []
    with np.errstate(all="ignore"):
        for loan in config.loans:
            try:
                alone = evaluate(portfolio_arrays([loan], config.periods_per_year), scenario,
                                 (1,) * len(cell), np)
                finite = all(np.isfinite(alone[name]).all() for name in FINITE_VARIABLES)
            except Exception:
                finite = False
            if not finite:
                found.append(loan.loan_id)
    return found


def create_store(store: Path, run: PreparedRun, used: set[tuple[str, str]]) -> None:
    """A new partial store for ``run``: empty variables, attrs, no block done.

    ``used`` holds the (backend, device) pairs that will compute the blocks.
    """
    if store.exists():
        shutil.rmtree(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    attrs = run.attrs() | _backend_attrs(used) | {"block_chunks": list(run.plan.chunks)}
    empty_zarr(store, run.config, run.plan, attrs, run.portfolio.segments)
    _done_marks(store, len(run.plan))


def store_block(store: Path, block: Block, results: dict[str, np.ndarray]) -> None:
    """Write a block into its region of the store, then set its done mark.

    The mark is set only once the data is on disk, so a block cut off while
    being written is computed again by ``resume``.
    """
    ZarrBlockWriter(store).write(block.slices, results)
    _done_marks(store)[block.index] = 1


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
               prepared: PreparedRun | None = None, scheduler: str | Any | None = None,
               scheduler_file: str | Path | None = None, workers: int | None = None,
               log: LogFn | None = None) -> Path:
    """Evaluate the grid block by block into a cube at ``out``; return ``out``.

    ``out`` ending in ``.nc`` gives NetCDF-4, anything else a Zarr directory.
    Finished blocks are on disk as soon as they are computed; with
    ``resume=True`` the blocks of an interrupted run (same config and
    portfolio) are kept and only the rest are computed.

    ``scheduler`` and ``scheduler_file`` are as for :func:`run_grid`.  On a
    cluster each worker writes its blocks into the store itself, so the
    workers must see ``out``'s directory (the same machine, or a shared
    filesystem).  ``log`` receives a line on where the blocks run and, when
    resuming, how many are kept.
    """
    from .distributed import (
        RunSpec,
        check_scheduler,
        connect,
        describe_client,
        is_remote,
        run_blocks,
        worker_backends,
    )

    say = log or (lambda line: None)
    check_scheduler(scheduler, scheduler_file, workers)
    out = Path(out)
    remote = is_remote(scheduler, scheduler_file)
    run = prepared or prepare(config, "numpy" if remote else backend, chunk_cells)
    check_output_path(out)
    store = partial_path(out)
    fresh = not (resume and store.exists())
    if fresh:
        done = np.zeros(len(run.plan), dtype=bool)
    else:
        run.plan = _check_resumable(store, run)
        done = np.asarray(_done_marks(store)[:], dtype=bool)
    pending = [block for block in run.plan if not done[block.index]]
    if not fresh:
        say(f"resuming: {int(done.sum())} of {len(run.plan)} blocks already done, "
            f"computing {len(pending)}")

    used = {(run.backend.name, run.backend.device)} if pending else set()
    with connect(scheduler, scheduler_file, workers, n_blocks=len(pending)) as client:
        if client is not None:
            found = worker_backends(client, _backend_name(backend))
            used = set(found.values())
            say(describe_client(client, found))
        if fresh:
            create_store(store, run, used)
        if progress is not None:
            for block in run.plan:
                if done[block.index]:
                    progress(block, skipped=True)
        if client is None:
            for block in pending:
                # Stored before the next block: the GPU's transfer buffers serve.
                store_block(store, block, evaluate_checked(run, block, copy=False))
                if progress is not None:
                    progress(block)
        else:
            spec = RunSpec(run.config, _backend_name(backend), str(store.resolve()))

            def received(block: Block, receipt) -> None:
                used.add((receipt.backend, receipt.device))
                if progress is not None:
                    progress(block)

            run_blocks(client, spec, pending, received)

    import zarr

    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update(_backend_attrs(used, dict(group.attrs)))
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
