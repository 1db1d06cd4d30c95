"""Running a grid: blocks of cells through the model, into a cube.

:func:`run_grid` returns the cube in memory; :func:`write_cube` streams each
finished block into a Zarr store on disk (:mod:`gridstress.store`), so
memory stays bounded by one block whatever the grid, and an interrupted run
keeps every finished block: ``resume=True`` carries on from them.

Blocks run in this process (``scheduler="synchronous"``) or as Dask tasks on
a cluster (:mod:`gridstress.distributed`); either way each block goes
through :func:`gridstress.prepared.evaluate_checked` and
:func:`gridstress.store.store_block`, so the cube does not depend on where
its blocks ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend
from .cube import block_region, build_dataset, extra_size
from .distributed import (
    RunSpec,
    auto_scheduler,
    check_scheduler,
    connect,
    describe_client,
    is_remote,
    run_blocks,
    worker_backends,
)
from .grid import Block
from .headline import HEADLINE_VARIABLES, BlockHeadline, Headline, block_headline, combine
from .inputs import RunConfig
from .prepared import PreparedRun, backend_attrs, evaluate_checked, prepare
from .store import (
    BlockWriter,
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


def _with_per_loan(config: RunConfig | str | Path, per_loan: bool | None):
    """The config, asked for per-loan outputs when ``per_loan`` is True."""
    if not per_loan:
        return config
    if not isinstance(config, RunConfig):
        from .config import load_config

        config = load_config(config)
    return replace(config, per_loan=True)


def run_grid(
    config: RunConfig | str | Path,
    backend: str | Backend = "auto",
    chunk_cells: int | None = None,
    progress: ProgressFn | None = None,
    scheduler: str | Any | None = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    per_loan: bool | None = None,
):
    """Evaluate every cell of the config's grid; return the cube in memory.

    ``scheduler`` is ``"synchronous"`` (this process; the default unless
    ``scheduler_file`` is given), ``"local"``, ``"local-cuda"``, a scheduler
    address such as ``"tcp://host:8786"`` or a ``distributed.Client``;
    ``scheduler_file`` names a running cluster's scheduler file instead (see
    :func:`gridstress.distributed.connect`).  ``per_loan=True`` adds the
    per-loan variables whatever the config says.  On a cluster, each block's
    arrays come back to this process.
    """
    check_scheduler(scheduler, scheduler_file, workers)
    remote = is_remote(scheduler, scheduler_file)
    run = prepare(_with_per_loan(config, per_loan), "numpy" if remote else backend, chunk_cells)
    cfg = run.config
    dims = tuple(a.name for a in cfg.axes)
    loan_ids = run.portfolio.loan_id if cfg.per_loan else ()
    arrays = {}
    for name in variables(cfg.per_loan):
        shape = tuple(len(a) for a in cfg.axes if a.name in OUTPUTS[name].dims(dims))
        extra = extra_size(name, run.portfolio.segments, loan_ids)
        arrays[name] = np.empty(shape + (() if extra is None else (extra,)))

    def place(block: Block, results: dict[str, np.ndarray]) -> None:
        for name in arrays:
            region = block_region(name, cfg, block)
            if region is not None:
                arrays[name][region] = results[name]
        if progress is not None:
            progress(block)

    blocks = list(run.plan)
    if scheduler == "auto" and scheduler_file is None:
        scheduler = auto_scheduler(run, len(blocks))
    used: set[tuple[str, ...]] = {(run.backend.name, run.backend.device, run.engine)}
    with connect(scheduler, scheduler_file, workers, n_blocks=len(blocks)) as client:
        if client is None:
            for block in blocks:
                place(block, evaluate_checked(run, block))
        else:
            used = set()
            spec = RunSpec(cfg, _backend_name(backend))

            def received(block: Block, receipt) -> None:
                used.add((receipt.backend, receipt.device, receipt.engine))
                place(block, receipt.results)

            worker_backends(client, _backend_name(backend))
            run_blocks(client, spec, blocks, received)
    attrs = run.attrs() | backend_attrs(used)
    return build_dataset(cfg, arrays, attrs, run.portfolio.segments, loan_ids)


def _backend_name(backend: str | Backend) -> str:
    return backend if isinstance(backend, str) else backend.name


@dataclass(frozen=True)
class Written:
    """A cube written to disk and its headline figures (computed from the blocks
    as they finished, not read back)."""

    path: Path
    headline: Headline


def write_cube(config: RunConfig | str | Path, out: str | Path, **options: Any) -> Path:
    """Evaluate the grid block by block into a cube at ``out``; return ``out``.

    The options are those of :func:`write_cube_and_headline`.
    """
    return write_cube_and_headline(config, out, **options).path


def write_cube_and_headline(
    config: RunConfig | str | Path,
    out: str | Path,
    backend: str | Backend = "auto",
    chunk_cells: int | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    prepared: PreparedRun | None = None,
    scheduler: str | Any | None = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    log: LogFn | None = None,
    per_loan: bool | None = None,
    overwrite: bool = False,
) -> Written:
    """Evaluate the grid block by block into a cube at ``out``.

    ``out`` ending in ``.nc`` gives NetCDF-4, anything else a Zarr directory.
    Finished blocks are on disk as soon as they are computed (in this
    process, each block is written on a thread of its own while the next one
    computes); with ``resume=True`` the blocks of an interrupted run (same
    config and portfolio) are kept and only the rest are computed.  A cube,
    or the unfinished store of an interrupted run, of another config or
    portfolio at ``out`` is replaced only with ``overwrite``; an unfinished
    store of the same run needs ``resume`` or ``overwrite``.

    ``scheduler`` and ``scheduler_file`` are as for :func:`run_grid`.  On a
    cluster each worker writes its blocks into the store itself, so the
    workers must see ``out``'s directory (the same machine, or a shared
    filesystem).  ``log`` receives a line on where the blocks run and, when
    resuming, how many are kept.
    """
    say = log or (lambda line: None)
    check_scheduler(scheduler, scheduler_file, workers)
    out = Path(out)
    remote = is_remote(scheduler, scheduler_file)
    run = prepared or prepare(
        _with_per_loan(config, per_loan), "numpy" if remote else backend, chunk_cells
    )
    check_output_path(out, run, overwrite)
    store = partial_path(out)
    fresh = not (resume and store.exists())
    if fresh:
        check_partial(store, run, overwrite)
        done = np.zeros(len(run.plan), dtype=bool)
    else:
        run.plan = check_resumable(store, run)
        done = np.asarray(done_marks(store)[:], dtype=bool)
    pending = [block for block in run.plan if not done[block.index]]
    if not fresh:
        say(
            f"resuming: {int(done.sum())} of {len(run.plan)} blocks already done, "
            f"computing {len(pending)}"
        )

    if scheduler == "auto" and scheduler_file is None:
        scheduler = auto_scheduler(run, len(pending))
    parts: list[BlockHeadline] = []
    used: set[tuple[str, ...]] = (
        {(run.backend.name, run.backend.device, run.engine)} if pending else set()
    )
    with connect(scheduler, scheduler_file, workers, n_blocks=len(pending)) as client:
        if client is not None:
            found = worker_backends(client, _backend_name(backend))
            used = set(found.values())
            say(describe_client(client, found))
        if fresh:
            create_store(store, run, used)
        for block in run.plan:
            if done[block.index]:
                parts.append(
                    block_headline(run.config, block, read_block(store, block, HEADLINE_VARIABLES))
                )
                if progress is not None:
                    progress(block, skipped=True)
        if client is None:
            with BlockWriter(store, run.config, progress) as writer:
                for block in pending:
                    results = evaluate_checked(run, block, copy=False)
                    parts.append(block_headline(run.config, block, results))
                    writer.write(block, results)
        else:
            spec = RunSpec(run.config, _backend_name(backend), str(store.resolve()))

            def received(block: Block, receipt) -> None:
                used.add((receipt.backend, receipt.device, receipt.engine))
                parts.append(receipt.headline)
                if progress is not None:
                    progress(block)

            run_blocks(client, spec, pending, received)
    return Written(finish_store(store, out, used), combine(run.config, parts))


__all__ = ["LogFn", "ProgressFn", "Written", "run_grid", "write_cube", "write_cube_and_headline"]
