"""A run ready to evaluate: the backend and engine chosen, the blocks planned.

:func:`prepare` turns a validated config into a :class:`PreparedRun`: the
portfolio's arrays on the backend's device, the engine that evaluates blocks
there (the fused CUDA kernel where it covers the run, else the xp model),
and the block plan.  :func:`evaluate_checked` evaluates one block and fails
with the block, cell and loan named when the arithmetic breaks down.  The
synchronous path (:mod:`gridstress.engine`) and the Dask tasks
(:mod:`gridstress.distributed`) both go through here, so a cube does not
depend on where its blocks ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .backend import Backend, resolve_backend
from .errors import InputError, ModelError
from .grid import Block, BlockPlan, largest_plan, plan_blocks, smallest_plan
from .inputs import RunConfig
from .model import MODEL_VERSION, block_bytes, evaluate, scenario_arrays
from .params import LIQUIDATION_PARAMS, SCENARIO_PARAMS
from .paths import Points
from .portfolio import PortfolioArrays, portfolio_arrays
from .variables import FINITE_VARIABLES, OUTPUTS

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

#: The engine name of the xp model, as the cube's ``engine`` attribute gives it
#: (with the array module, e.g. ``xp model (numpy)``).
ENGINE_XP = "xp model"


class BlockEvaluator(Protocol):
    """What evaluates the cells of a block: the xp model (:class:`XpModel`) or the
    fused CUDA kernels (:class:`gridstress.kernels.FusedGrid`)."""

    @property
    def engine(self) -> str:
        """The engine's name, as the cube's ``engine`` attribute gives it."""
        ...

    def evaluate(
        self, axes_values: dict[str, Any], fixed: dict[str, float | None], copy: bool = True
    ) -> dict[str, np.ndarray]:
        """Every variable of the block's cells as host arrays, each axis of the
        block (values ``axes_values``, in grid order) a dim of size its length
        or 1; ``fixed`` holds the scenario values of the other parameters.
        ``copy=False`` allows views of buffers valid until the call after next."""
        ...


class XpModel:
    """The xp model (:func:`gridstress.model.evaluate`) on the backend's array module."""

    def __init__(
        self,
        portfolio: PortfolioArrays,
        backend: Backend,
        per_loan: bool,
        paths: dict[str, Points] | None = None,
    ):
        self.portfolio = portfolio.to(backend.xp)
        self.backend = backend
        self.per_loan = per_loan
        self.paths = paths or {}

    @property
    def engine(self) -> str:
        return f"{ENGINE_XP} ({self.backend.name})"

    def evaluate(
        self, axes_values: dict[str, Any], fixed: dict[str, float | None], copy: bool = True
    ) -> dict[str, np.ndarray]:
        xp = self.backend.xp
        scenario = scenario_arrays(axes_values, fixed, xp)
        shape = tuple(len(values) for values in axes_values.values())
        out = evaluate(
            self.portfolio, scenario, shape, xp, per_loan=self.per_loan, paths=self.paths
        )
        return {name: self.backend.to_host(value) for name, value in out.items()}


@dataclass
class PreparedRun:
    """A config ready to evaluate: portfolio on the device, engine and block plan chosen."""

    config: RunConfig
    backend: Backend
    portfolio: PortfolioArrays
    plan: BlockPlan
    evaluator: BlockEvaluator
    note: str | None = None
    """One line on the engine choice, for runs that asked for the kernel and
    do not get it."""

    @property
    def engine(self) -> str:
        """The engine that evaluates the blocks, e.g. ``xp model (numpy)``."""
        return self.evaluator.engine

    @property
    def fused(self) -> Any:
        """The fused CUDA kernels (:class:`gridstress.kernels.FusedGrid`) where they
        evaluate the blocks; None where the xp model does."""
        return None if isinstance(self.evaluator, XpModel) else self.evaluator

    def evaluate_block(self, block: Block, copy: bool = True) -> dict[str, np.ndarray]:
        """Results of one block, as host arrays in the cube's dims.

        ``copy=False`` lets the GPU backend return views of its pinned transfer
        buffers, valid until the call after next: for callers that store each
        block before going on.
        """
        axes_values = {a.name: a.array[s] for a, s in zip(self.config.axes, block.slices)}
        out = self.evaluator.evaluate(axes_values, self.config.scenario, copy)
        # A variable without the liquidation dims comes with size 1 on them: drop them.
        keep = tuple(0 if a.name in LIQUIDATION_PARAMS else slice(None) for a in self.config.axes)
        for name in out:
            if not OUTPUTS[name].liquidation_dims:
                out[name] = out[name][keep]
        return out

    def attrs(self) -> dict[str, Any]:
        from .cube import provenance

        return provenance(
            self.config, self.backend.name, self.backend.device, self.portfolio, self.engine
        )


def prepare(
    config: RunConfig | str | Path,
    backend: str | Backend = "auto",
    chunk_cells: int | None = None,
    kernel: str = "fused",
) -> PreparedRun:
    """Validate inputs, pick the backend and engine, and plan the blocks.

    On a CuPy backend ``kernel="fused"`` (the default) evaluates blocks with
    the fused CUDA kernel where it covers the run
    (:func:`gridstress.kernels.fused_covers`: every model input whose
    loan tables fit the kernel's shared memory) and with the xp model on CuPy
    otherwise, saying so in ``note``; ``kernel="xp"`` always runs the xp
    model (the baseline of ``gridstress bench``).
    """
    if kernel not in ("fused", "xp"):
        raise ValueError(f"kernel must be 'fused' or 'xp', not {kernel!r}")
    if not isinstance(config, RunConfig):
        from .config import load_config

        config = load_config(config)
    if not isinstance(backend, Backend):
        backend = resolve_backend(backend)
    if chunk_cells is not None and chunk_cells < 1:
        raise InputError(f"--chunk-cells={chunk_cells} must be >= 1")
    try:
        pf = portfolio_arrays(config.loans, config.periods_per_year)
    except ValueError as exc:
        raise InputError(f"{config.source}: {exc}") from None
    fused: BlockEvaluator | None = None
    note = None
    if backend.name == "cupy" and kernel == "fused":
        from .kernels import FusedGrid, fused_covers

        market_appraisal = config.scenario.get("appraisal_deflation") is not None or any(
            a.name == "appraisal_deflation" for a in config.axes
        )
        uncovered = fused_covers(pf, market_appraisal=market_appraisal)
        if uncovered is None:
            fused = FusedGrid(pf, backend.xp, per_loan=config.per_loan, paths=config.paths)
        else:
            note = (
                f"the fused CUDA kernel cannot run this portfolio ({uncovered}): "
                f"running the xp model (model v{MODEL_VERSION}) on CuPy"
            )
    if chunk_cells is not None:
        plan = plan_blocks(config.shape, chunk_cells)
    elif fused is not None:
        plan = gpu_plan(config, pf, backend.xp.cuda.Device().mem_info[0])
    elif backend.name == "cupy":
        # No CPU-cache limit on a GPU: only the memory budget sizes blocks.
        plan = default_plan(config, pf, budget_bytes=XP_GPU_BUDGET_BYTES, loan_cells=math.inf)
    else:
        plan = default_plan(config, pf)
    evaluator = fused or XpModel(pf, backend, config.per_loan, config.paths)
    return PreparedRun(config, backend, pf, plan, evaluator, note)


def gpu_plan(
    config: RunConfig, pf: PortfolioArrays, free_bytes: int, max_cells: int = GPU_BLOCK_CELLS
) -> BlockPlan:
    """Blocks for the fused kernel: at most ``max_cells`` cells, and within half
    of the GPU's free memory (the kernel needs a few float64 per cell)."""
    from .kernels import bytes_per_cell

    per_loan = pf.n_loans if config.per_loan else 0
    fit = int(0.5 * free_bytes) // bytes_per_cell(len(pf.segments), per_loan)
    return plan_blocks(config.shape, max(1, min(max_cells, fit)))


def default_plan(
    config: RunConfig,
    pf: PortfolioArrays,
    budget_bytes: int = BLOCK_BUDGET_BYTES,
    loan_cells: float = CACHE_LOAN_CELLS,
    max_blocks: int = MAX_BLOCKS,
) -> BlockPlan:
    """Largest blocks within the memory budget whose default paths fit the caches.

    Such a block takes 0.1-1 s on a CPU core, a good size for a Dask task.  A
    grid that would need more than ``max_blocks`` of them gets the smallest
    larger blocks that bring it down to ``max_blocks``, within the budget.
    """
    on_path = [SCENARIO_PARAMS[a.name].path for a in config.axes]

    def memory(plan: BlockPlan) -> int:
        path_cells = math.prod(c for c, p in zip(plan.chunks, on_path) if p)
        return block_bytes(
            pf.n_loans, len(pf.segments), path_cells, math.prod(plan.chunks), config.per_loan
        )

    def fits(plan: BlockPlan) -> bool:
        path_cells = math.prod(c for c, p in zip(plan.chunks, on_path) if p)
        return pf.n_loans * path_cells <= loan_cells and memory(plan) <= budget_bytes

    plan = largest_plan(config.shape, fits)
    if len(plan) > max_blocks:
        fewer = smallest_plan(config.shape, lambda p: len(p) <= max_blocks)
        plan = (
            fewer
            if memory(fewer) <= budget_bytes
            else largest_plan(config.shape, lambda p: memory(p) <= budget_bytes)
        )
    return plan


def backend_attrs(
    used: set[tuple[str, ...]], before: dict[str, Any] | None = None
) -> dict[str, str]:
    """``backend``, ``device`` and ``engine`` attributes: every one that computed blocks.

    ``used`` holds (backend, device) or (backend, device, engine) tuples;
    ``before`` the attributes of a store that earlier runs filled in part.
    """
    out = {}
    for i, key in enumerate(("backend", "device", "engine")):
        found = {u[i] for u in used if len(u) > i and u[i]}
        if before:
            found |= set(str(before.get(key, "")).split("; ")) - {""}
        if found or key != "engine":
            out[key] = "; ".join(sorted(found))
    return out


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


def evaluate_checked(run: PreparedRun, block: Block, copy: bool = True) -> dict[str, np.ndarray]:
    """``run.evaluate_block(block, copy)``, failing with the block, cell and loan named.

    Raises :class:`~gridstress.errors.ModelError` when the model raises, or
    when a variable of :data:`~gridstress.variables.FINITE_VARIABLES` is NaN
    or infinite in some cell (inputs whose magnitudes overflow float64
    arithmetic).  The message names the first such cell and the loans that
    give a non-finite result there on their own.
    """
    where = f"block {block.index} ({describe_cells(run.config, block.slices)})"
    try:
        results = run.evaluate_block(block, copy=copy)
    except Exception as exc:
        raise ModelError(f"{where}: the model failed: {type(exc).__name__}: {exc}") from exc
    for name in FINITE_VARIABLES:
        if name not in results:
            continue
        bad = ~np.isfinite(results[name])
        if OUTPUTS[name].extra_dim is not None:
            bad = bad.any(axis=-1)
        if not bad.any():
            continue
        index = np.unravel_index(int(np.argmax(bad)), bad.shape)
        cell = tuple(part.start + int(i) for part, i in zip(block.slices, index))
        point = describe_cells(run.config, tuple(slice(i, i + 1) for i in cell))
        culprits = loans_at_fault(run.config, cell)
        if culprits:
            blame = (
                f"loan_id={', '.join(culprits)} gives a non-finite result there on its "
                "own: check its inputs for magnitudes that overflow float64"
            )
        else:
            blame = "no loan does on its own: the sum over loans overflows float64"
        value = results[name][index]
        shown = value if np.ndim(value) == 0 else value[~np.isfinite(value)][0]
        raise ModelError(
            f"{where}: {name}={shown} at cell {point} (index {cell}) is not finite; {blame}"
        )
    return results


def loans_at_fault(config: RunConfig, cell: tuple[int, ...]) -> list[str]:
    """Loan ids that, alone in the portfolio, give a non-finite result in ``cell``."""
    point = {axis.name: axis.array[i : i + 1] for axis, i in zip(config.axes, cell)}
    scenario = scenario_arrays(point, config.scenario, np)
    found = []
    with np.errstate(all="ignore"):
        for loan in config.loans:
            try:
                alone = evaluate(
                    portfolio_arrays([loan], config.periods_per_year),
                    scenario,
                    (1,) * len(cell),
                    np,
                    paths=config.paths,
                )
                finite = all(
                    np.isfinite(alone[name]).all() for name in FINITE_VARIABLES if name in alone
                )
            except Exception:
                finite = False
            if not finite:
                found.append(loan.loan_id)
    return found
