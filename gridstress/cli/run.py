"""``gridstress run`` and ``gridstress validate``: a config evaluated into a cube, or only checked.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from . import interrupt_status, say_interrupted
from .display import err, out, progress_bar, warn
from .options import whole


def run(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML run config."),
    out_path: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Cube path: a Zarr directory (.zarr or no suffix) or a "
        "NetCDF file (.nc). Default: results/<config name>.zarr",
    ),
    backend: str = typer.Option("auto", help="auto, numpy or cupy."),
    per_loan: bool = typer.Option(
        False,
        "--per-loan",
        help="Also write each loan's default time and loss "
        "(loan_default_years, loan_loss; as outputs: {per_loan: true} in the config).",
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace a cube, or discard an unfinished run, of another config or "
        "portfolio at --out (a cube of the same run is replaced anyway).",
    ),
    scheduler: str | None = typer.Option(
        None,
        help="Where blocks run: auto (the default: in this process, or a local Dask "
        "cluster when the grid is large enough to pay for one), synchronous (this "
        "process), local (a Dask cluster on this machine, one worker per core), "
        "local-cuda (one worker per GPU, needs the gpu extra) or a scheduler address, "
        "e.g. tcp://host:8786.",
    ),
    scheduler_file: Path | None = typer.Option(
        None,
        help="Scheduler file of a running Dask cluster (dask scheduler "
        "--scheduler-file); its workers must see the output directory.",
    ),
    workers: int | None = typer.Option(
        None,
        parser=whole,
        help="Workers of a local or local-cuda cluster (default: "
        "one per CPU core, one per GPU); without --scheduler, a local cluster.",
    ),
    chunk_cells: int | None = typer.Option(
        None,
        parser=whole,
        help="Cells per block, one Dask task each (default: blocks "
        "of 0.1-1 s on a CPU core within about 256 MB of working memory, at most 10,000 "
        "blocks).",
    ),
    resume: bool = typer.Option(
        False, help="Keep the blocks of an interrupted run of the same config."
    ),
) -> None:
    import logging

    from ..config import load_config
    from ..engine import default_out, execute, plan_run
    from ..store import blocks_done

    cfg = load_config(config)
    target = out_path or default_out(cfg)
    with plan_run(
        cfg,
        target,
        backend=backend,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
        per_loan=per_loan,
        chunk_cells=chunk_cells,
        default_scheduler="auto",
    ) as plan:
        warn(plan.config)
        for note in plan.notes:
            err.print(note)
        n_blocks = len(plan.run.plan)
        try:
            err.print(plan.describe())
            progress, advance, kept = progress_bar(cfg.n_cells, "evaluating", total_blocks=n_blocks)
            logging.getLogger("distributed").setLevel(logging.ERROR)
            started = time.perf_counter()
            with progress:
                written = execute(plan, progress=advance, log=err.print)
        except KeyboardInterrupt as exc:
            say_interrupted(f"interrupted: {_saved(blocks_done(target) or 0, n_blocks)}")
            raise typer.Exit(interrupt_status(exc)) from None
    seconds = time.perf_counter() - started
    out.print(f"cube: {written.path}")
    computed = cfg.n_cells - kept["cells"]
    out.print(
        f"{computed:,} cells in {seconds:.2f} s"
        + (f" ({kept['cells']:,} more kept from the interrupted run)" if kept["cells"] else "")
    )
    for line in written.headline.lines():
        out.print(line)


def _saved(done: int, total: int) -> str:
    """What an interrupted run leaves, and how to go on."""
    if done == 0:
        return f"no block of {total} was finished; nothing is saved"
    if done == total:
        return (
            f"all {total} blocks are saved; run the same command with --resume to finish the cube"
        )
    return f"{done} of {total} blocks are saved; run the same command with --resume to finish"


def validate(config: Path = typer.Argument(..., metavar="CONFIG", help="YAML run config.")) -> None:
    from ..prepared import prepare

    prepared = prepare(config, "numpy")
    cfg = prepared.config
    warn(cfg)
    out.print(f"{config}: valid")
    out.print(
        f"  {len(cfg.loans)} loans, ${prepared.portfolio.total_principal / 1e9:,.3f}B "
        f"principal, horizon {prepared.portfolio.horizon} periods "
        f"({cfg.periods_per_year} a year)"
    )
    for a in cfg.axes:
        out.print(f"  {a.name}: {len(a)} values from {a.values[0]:g} to {a.values[-1]:g}")
    out.print(f"  {cfg.n_cells:,} cells in {len(prepared.plan)} block(s)")
