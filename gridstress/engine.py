"""Running a grid: plan it once, then execute the plan block by block.

:func:`plan_run` is the one place that decides a run: it reads the config
(a path, a :class:`~gridstress.inputs.RunConfig` or an already prepared
run), resolves the backend, parses the scheduler, prepares the blocks,
checks the output path and any partial store left by an interrupted run,
takes the store's lock and knows which blocks are left to compute.
:func:`execute` runs a :class:`RunPlan`: the blocks go through
:func:`gridstress.prepared.evaluate_checked` in this process or as Dask
tasks (:mod:`gridstress.distributed`), into a Zarr store on disk
(:mod:`gridstress.store`: memory bounded by one block, every finished
block kept if the run is interrupted) or into arrays in memory.

:func:`write_cube` and :func:`run_grid` are the two calls over them::

    with plan_run("configs/seed.yaml", out="results/seed.zarr") as plan:
        written = execute(plan, progress=print)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BACKENDS, Backend, resolve_backend
from .cube import block_region, build_dataset, extra_size
from .distributed import (
    RunSpec,
    Scheduler,
    auto_scheduler,
    connect,
    describe_client,
    run_blocks,
    worker_backends,
)
from .errors import InputError
from .grid import Block
from .headline import HEADLINE_VARIABLES, BlockHeadline, Headline, block_headline, combine
from .inputs import RunConfig
from .prepared import PreparedRun, backend_attrs, evaluate_checked, prepare
from .store import (
    BlockWriter,
    StoreLock,
    check_output_path,
    check_partial,
    check_resumable,
    create_store,
    done_marks,
    finish_store,
    partial_path,
    read_block,
)
from .variables import OUTPUTS, variables

#: ``progress(block)`` after each block computed; blocks kept from an
#: interrupted run are reported first, as ``progress(block, skipped=True)``.
ProgressFn = Callable[..., None]
LogFn = Callable[[str], None]

#: Suffixes of a cube: a Zarr directory (``.zarr`` or none) or a NetCDF file.
CUBE_SUFFIXES = (".zarr", ".nc", "")


def default_out(config: RunConfig) -> Path:
    """Where ``gridstress run`` writes a config's cube unless told: ``results/<name>.zarr``."""
    return Path("results") / f"{config.name}.zarr"


@dataclass
class RunPlan:
    """A run decided: what to compute, on what, where it goes, what is left.

    Made by :func:`plan_run` only; :func:`execute` runs it.  A plan that
    writes a cube holds the lock of its store until :meth:`close` (or the
    end of its ``with`` block).
    """

    run: PreparedRun
    """The config, the portfolio on its device, the evaluator and the block plan."""
    scheduler: Scheduler
    """Where the blocks run (``auto`` already resolved)."""
    backend: str
    """The backend asked for (``auto``, ``numpy`` or ``cupy``): what Dask workers resolve."""
    resolved: Backend | None
    """The backend this process resolved it to; None when the blocks run on a
    cluster's workers, which resolve it themselves."""
    out: Path | None = None
    """The cube's path; None: the cube is returned in memory."""
    done: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """One flag per block of the plan: already in the store (``resume``)."""
    resuming: bool = False
    """Whether the blocks of an interrupted run are kept (a partial store exists)."""
    lock: StoreLock | None = None

    @property
    def config(self) -> RunConfig:
        return self.run.config

    @property
    def store(self) -> Path | None:
        """The partial store the blocks are written into; None in memory."""
        return None if self.out is None else partial_path(self.out)

    @property
    def pending(self) -> list[Block]:
        """The blocks left to compute, in plan order."""
        return [block for block in self.run.plan if not self.done[block.index]]

    @property
    def notes(self) -> list[str]:
        """Lines on choices the user did not make: a backend or engine fallback."""
        found = [] if self.resolved is None else [self.resolved.note]
        return [note for note in (*found, self.run.note) if note]

    def describe(self) -> str:
        """One line on the run, e.g. ``seed: 8 loans x 11,346 cells (deflation 61
        x ...) on numpy (CPU ...), 1 block(s)``."""
        cfg = self.config
        on = (
            f"{self.resolved.name} ({self.resolved.device})"
            if self.resolved is not None
            else f"the cluster's workers (--backend {self.backend})"
        )
        axes = " x ".join(f"{a.name} {len(a)}" for a in cfg.axes)
        return (
            f"{cfg.name}: {len(cfg.loans)} loans x {cfg.n_cells:,} cells ({axes}) on {on}, "
            f"{len(self.run.plan)} block(s)"
        )

    def close(self) -> None:
        """Release the store's lock (a plan's resources; idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> RunPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_run(
    config: RunConfig | str | Path | PreparedRun,
    out: str | Path | None = None,
    backend: str | Backend = "auto",
    scheduler: Any = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    per_loan: bool | None = None,
    chunk_cells: int | None = None,
    default_scheduler: str = "synchronous",
) -> RunPlan:
    """Decide a run; raise :class:`~gridstress.errors.InputError` before anything
    is computed or written when it cannot go ahead.

    ``scheduler`` is ``"auto"``, ``"synchronous"``, ``"local"``,
    ``"local-cuda"``, a scheduler address such as ``"tcp://host:8786"`` or a
    ``distributed.Client``; ``scheduler_file`` names a running cluster's
    scheduler file instead; neither means ``default_scheduler`` (a local
    cluster when ``workers`` is given).  ``per_loan=True`` adds the
    per-loan variables whatever the config says.  ``config`` may be a run
    prepared by :func:`gridstress.prepared.prepare` (its backend and block
    plan are kept).

    With ``out`` (``.nc``: NetCDF-4, else a Zarr directory) the plan takes
    the lock of the cube's store (a second run on the same ``out`` is
    refused while this one holds it), refuses to replace anything but a
    cube of the same config and portfolio unless ``overwrite``, and, with
    ``resume``, keeps the blocks of an interrupted run of the same config
    and portfolio.  Close the plan (or use it in a ``with`` block) to
    release the lock; :func:`write_cube` does.
    """
    where = Scheduler.parse(scheduler, scheduler_file, workers, default=default_scheduler)
    target = None if out is None else Path(out)
    if target is not None and target.suffix.lower() not in CUBE_SUFFIXES:
        raise InputError(
            f"--out {target}: a cube is a Zarr directory (.zarr, or no "
            "suffix) or a NetCDF file (.nc)"
        )
    name = backend if isinstance(backend, str) else backend.name
    if isinstance(config, PreparedRun):
        run, resolved = config, config.backend
    else:
        if where.remote:
            resolved = None
            if name not in BACKENDS:  # the workers resolve a valid name
                resolve_backend(name)
        else:
            resolved = backend if isinstance(backend, Backend) else resolve_backend(name)
        if not isinstance(config, RunConfig):
            from .config import load_config

            config = load_config(config)
        if per_loan:
            config = replace(config, per_loan=True)
        run = prepare(config, resolved or "numpy", chunk_cells)
    plan = RunPlan(run, where, name, resolved, target, np.zeros(len(run.plan), dtype=bool))
    if target is not None:
        plan.lock = StoreLock(target).acquire()
        try:
            _plan_store(plan, resume, overwrite)
        except BaseException:
            plan.close()
            raise
    if where.kind == "auto":
        plan.scheduler = replace(where, kind=auto_scheduler(run, len(plan.pending)))
    return plan


def _plan_store(plan: RunPlan, resume: bool, overwrite: bool) -> None:
    """The output path and partial store checked, and the blocks already done."""
    assert plan.out is not None and plan.store is not None
    run = plan.run
    check_output_path(plan.out, run, overwrite)
    if resume and plan.store.exists():
        run.plan = check_resumable(plan.store, run)  # its blocks, not new ones
        plan.done = np.asarray(done_marks(plan.store)[:], dtype=bool)
        plan.resuming = True
    else:
        check_partial(plan.store, run, overwrite)


@dataclass(frozen=True)
class Written:
    """A run's result and its headline figures (computed from the blocks as they
    finished, not read back)."""

    headline: Headline
    path: Path | None = None
    """The cube on disk; None for a run in memory."""
    dataset: Any = None
    """The cube as an ``xarray.Dataset`` for a run in memory; None on disk."""


def execute(plan: RunPlan, progress: ProgressFn | None = None, log: LogFn | None = None) -> Written:
    """Compute the plan's pending blocks; return the cube (on disk or in memory).

    In this process each block is written on a thread of its own while the
    next one computes; on a cluster each worker writes its blocks into the
    store itself (the workers must see ``out``'s directory) and returns a
    receipt.  ``log`` receives a line on where the blocks run and, when
    resuming, how many are kept.
    """
    say = log or (lambda line: None)
    run, store = plan.run, plan.store
    pending = plan.pending
    if plan.resuming:
        say(
            f"resuming: {int(plan.done.sum())} of {len(run.plan)} blocks already done, "
            f"computing {len(pending)}"
        )
    sink = _Memory(run) if store is None else None
    parts: list[BlockHeadline] = []
    used: set[tuple[str, ...]] = (
        {(run.backend.name, run.backend.device, run.engine)} if pending else set()
    )
    with connect(plan.scheduler, n_blocks=len(pending)) as client:
        if client is not None:
            found = worker_backends(client, plan.backend)
            used = set(found.values()) if store is not None else set()
            say(describe_client(client, found))
        if store is not None and not plan.resuming:
            create_store(store, run, used)
        for block in run.plan:
            if plan.done[block.index]:
                assert store is not None
                kept = read_block(store, block, HEADLINE_VARIABLES)
                parts.append(block_headline(run.config, block, kept))
                if progress is not None:
                    progress(block, skipped=True)
        if client is None:
            _compute_here(plan, pending, parts, sink, progress)
        else:
            spec = RunSpec(
                run.config, plan.backend, None if store is None else str(store.resolve())
            )

            def received(block: Block, receipt) -> None:
                used.add((receipt.backend, receipt.device, receipt.engine))
                parts.append(receipt.headline)
                if sink is not None:
                    sink.place(block, receipt.results)
                if progress is not None:
                    progress(block)

            run_blocks(client, spec, pending, received)
    headline = combine(run.config, parts)
    if sink is not None:
        return Written(headline, dataset=sink.dataset(used))
    assert plan.out is not None and store is not None
    return Written(headline, path=finish_store(store, plan.out, used))


def _compute_here(
    plan: RunPlan,
    blocks: list[Block],
    parts: list[BlockHeadline],
    sink: _Memory | None,
    progress: ProgressFn | None,
) -> None:
    """The blocks, one after another in this process, into the store or ``sink``."""
    run = plan.run
    if sink is not None:
        for block in blocks:
            results = evaluate_checked(run, block)
            parts.append(block_headline(run.config, block, results))
            sink.place(block, results)
            if progress is not None:
                progress(block)
        return
    assert plan.store is not None
    with BlockWriter(plan.store, run.config, progress) as writer:
        for block in blocks:
            results = evaluate_checked(run, block, copy=False)
            parts.append(block_headline(run.config, block, results))
            writer.write(block, results)


class _Memory:
    """The cube's arrays in memory, filled block by block."""

    def __init__(self, run: PreparedRun):
        self.run = run
        cfg = run.config
        dims = tuple(a.name for a in cfg.axes)
        self.loan_ids = run.portfolio.loan_id if cfg.per_loan else ()
        self.arrays: dict[str, np.ndarray] = {}
        for name in variables(cfg.per_loan):
            shape = tuple(len(a) for a in cfg.axes if a.name in OUTPUTS[name].dims(dims))
            extra = extra_size(name, run.portfolio.segments, self.loan_ids)
            self.arrays[name] = np.empty(shape + (() if extra is None else (extra,)))

    def place(self, block: Block, results: dict[str, np.ndarray]) -> None:
        for name, array in self.arrays.items():
            region = block_region(name, self.run.config, block)
            if region is not None:
                array[region] = results[name]

    def dataset(self, used: set[tuple[str, ...]]):
        attrs = self.run.attrs() | backend_attrs(used)
        return build_dataset(
            self.run.config, self.arrays, attrs, self.run.portfolio.segments, self.loan_ids
        )


def write_cube(
    config: RunConfig | str | Path | PreparedRun,
    out: str | Path,
    backend: str | Backend = "auto",
    chunk_cells: int | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    scheduler: Any = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    log: LogFn | None = None,
    per_loan: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Evaluate the grid block by block into a cube at ``out``; return ``out``.

    :func:`plan_run` says what the options mean, :func:`execute` what
    ``progress`` and ``log`` receive.
    """
    with plan_run(
        config,
        out,
        backend=backend,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
        per_loan=per_loan,
        chunk_cells=chunk_cells,
    ) as plan:
        written = execute(plan, progress, log)
    assert written.path is not None
    return written.path


def run_grid(
    config: RunConfig | str | Path | PreparedRun,
    backend: str | Backend = "auto",
    chunk_cells: int | None = None,
    progress: ProgressFn | None = None,
    scheduler: Any = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    per_loan: bool | None = None,
):
    """Evaluate every cell of the config's grid; return the cube in memory.

    :func:`plan_run` says what the options mean.  On a cluster, each
    block's arrays come back to this process.
    """
    with plan_run(
        config,
        backend=backend,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        per_loan=per_loan,
        chunk_cells=chunk_cells,
    ) as plan:
        return execute(plan, progress).dataset


__all__ = [
    "CUBE_SUFFIXES",
    "LogFn",
    "ProgressFn",
    "RunPlan",
    "Written",
    "default_out",
    "execute",
    "plan_run",
    "run_grid",
    "write_cube",
]
