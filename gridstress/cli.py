"""The ``gridstress`` command line: parses options, calls the library, prints.

Exit status: 0 on success, 2 on bad input (config, portfolio, options),
1 on any other failure, 130 when interrupted (finished blocks are kept).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from .errors import InputError

app = typer.Typer(
    help="Credit stress grids for loans against GPU fleets.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _fail_input(exc: InputError) -> None:
    for line in exc.problems:
        err.print(f"error: {line}", markup=False)
    raise typer.Exit(2)


def _progress(total_cells: int, label: str, log_every_s: float = 10.0, total_blocks: int = 0):
    """Progress over blocks and cells: a rich bar on a terminal, else a log line every 10 s.

    ``advance(block)`` counts a computed block; ``advance(block, skipped=True)``
    one kept from an interrupted run, which does not count towards the rate.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class CellRate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} cells/s" if task.speed else "")

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("cells, {task.fields[blocks]}/" + f"{total_blocks} blocks"), CellRate(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, disable=not err.is_terminal, transient=False,
    )
    task = progress.add_task(label, total=total_cells, blocks=0)
    started = last = time.monotonic()
    done = kept = blocks = 0

    def advance(block, skipped: bool = False) -> None:
        nonlocal last, done, kept, blocks, started
        done += block.size
        blocks += 1
        if skipped:
            kept += block.size
            started = time.monotonic()
            progress.reset(task, total=total_cells, completed=done, blocks=blocks)
            return
        progress.update(task, advance=block.size, blocks=blocks)
        now = time.monotonic()
        if not err.is_terminal and now - last >= log_every_s and done < total_cells:
            last = now
            rate = (done - kept) / (now - started)
            err.print(f"{label}: {done:,} of {total_cells:,} cells ({done / total_cells:.0%}), "
                      f"{blocks} of {total_blocks} blocks, {rate:,.0f} cells/s, "
                      f"about {(total_cells - done) / rate:.0f} s left", markup=False)

    return progress, advance


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config."),
    out_path: Path | None = typer.Option(
        None, "--out", "-o", help="Cube path: a .zarr directory (default) or a .nc file. "
        "Default: results/<config name>.zarr"),
    backend: str = typer.Option("auto", help="auto, numpy or cupy."),
    chunk_cells: int | None = typer.Option(
        None, help="Cells per block, one Dask task each (default: blocks of 0.1-1 s on a "
        "CPU core within about 256 MB of working memory, at most 10,000 blocks)."),
    resume: bool = typer.Option(
        False, help="Keep the blocks of an interrupted run of the same config."),
    scheduler: str | None = typer.Option(
        None, help="Where blocks run: local (a Dask cluster on this machine, one worker per "
        "core; the default), synchronous (this process), local-cuda (one worker per GPU, "
        "needs the gpu extra) or a scheduler address, e.g. tcp://host:8786."),
    scheduler_file: Path | None = typer.Option(
        None, help="Scheduler file of a running Dask cluster (dask scheduler "
        "--scheduler-file); its workers must see the output directory."),
    workers: int | None = typer.Option(
        None, help="Workers of a local or local-cuda cluster (default: one per CPU core, "
        "one per GPU)."),
) -> None:
    """Evaluate the portfolio on every cell of the grid and write the cube."""
    import logging

    from .analysis.headline import headline
    from .backend import BACKENDS, resolve_backend
    from .cube import open_cube
    from .distributed import check_scheduler, is_remote
    from .engine import blocks_done, prepare, write_cube
    from .errors import ClusterError, ModelError

    where = scheduler if scheduler is not None or scheduler_file is not None else "local"
    try:
        check_scheduler(where, scheduler_file, workers)
        remote = is_remote(where, scheduler_file)
        chosen = None if remote else resolve_backend(backend)
        if remote and backend not in BACKENDS:  # the workers resolve a valid name
            resolve_backend(backend)
        run_ = prepare(config, chosen or "numpy", chunk_cells)
    except InputError as exc:
        _fail_input(exc)
    if chosen is not None and chosen.note:
        err.print(chosen.note, markup=False)
    target = out_path or Path("results") / f"{run_.config.name}.zarr"
    cfg = run_.config
    on = (f"{chosen.name} ({chosen.device})" if chosen
          else f"the cluster's workers (--backend {backend})")
    err.print(
        f"{cfg.name}: {len(cfg.loans)} loans x {cfg.n_cells:,} cells "
        f"({' x '.join(f'{a.name} {len(a)}' for a in cfg.axes)}) on {on}, "
        f"{len(run_.plan)} block(s)", markup=False)
    progress, advance = _progress(cfg.n_cells, "evaluating", total_blocks=len(run_.plan))
    logging.getLogger("distributed").setLevel(logging.ERROR)
    started = time.perf_counter()
    try:
        with progress:
            write_cube(cfg, target, backend=backend, progress=advance, resume=resume,
                       prepared=run_, scheduler=where, scheduler_file=scheduler_file,
                       workers=workers, log=lambda line: err.print(line, markup=False))
    except InputError as exc:
        _fail_input(exc)
    except (ModelError, ClusterError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        done = blocks_done(target)
        err.print(f"interrupted: {done or 0} of {len(run_.plan)} blocks are saved; run the "
                  "same command with --resume to finish", markup=False)
        raise typer.Exit(130) from None
    seconds = time.perf_counter() - started
    out.print(f"cube: {target}", markup=False)
    out.print(f"{cfg.n_cells:,} cells in {seconds:.2f} s", markup=False)
    with open_cube(target) as ds:
        for line in headline(ds).lines():
            out.print(line, markup=False)


@app.command()
def validate(config: Path = typer.Argument(..., help="YAML run config.")) -> None:
    """Check a config and its portfolio without computing anything."""
    from .engine import prepare

    try:
        prepared = prepare(config, "numpy")
    except InputError as exc:
        _fail_input(exc)
    cfg = prepared.config
    out.print(f"{config}: valid", markup=False)
    out.print(f"  {len(cfg.loans)} loans, ${prepared.portfolio.total_principal / 1e9:,.3f}B "
              f"principal, horizon {prepared.portfolio.horizon} periods "
              f"({cfg.periods_per_year} a year)", markup=False)
    for a in cfg.axes:
        out.print(f"  {a.name}: {len(a)} values from {a.values[0]:g} to {a.values[-1]:g}",
                  markup=False)
    out.print(f"  {cfg.n_cells:,} cells in {len(prepared.plan)} block(s)", markup=False)


@app.command()
def summary(cube: Path = typer.Argument(..., help="Cube written by gridstress run.")) -> None:
    """Headline figures of a cube."""
    from .analysis.headline import headline
    from .cube import open_cube

    try:
        ds = open_cube(cube)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    with ds:
        out.print(f"{ds.attrs.get('name', cube)} (model v{ds.attrs['model_version']}, "
                  f"{ds.attrs.get('backend')} on {ds.attrs.get('device')}, "
                  f"{ds.attrs.get('created')})", markup=False)
        for line in headline(ds).lines():
            out.print(line, markup=False)


def _parse_point(items: list[str]) -> dict[str, float]:
    from .params import SCENARIO_PARAMS

    point = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SCENARIO_PARAMS:
            raise InputError(f"--at {item}: must be NAME=VALUE with NAME one of "
                             + ", ".join(SCENARIO_PARAMS))
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"--at {item}: {value!r} must be a number") from None
        if broken := SCENARIO_PARAMS[name].rule.check(number):
            raise InputError(f"--at {item}: {name}={value} {broken}")
        point[name] = number
    return point


@app.command()
def trace(
    config: Path = typer.Argument(..., help="YAML run config."),
    at: list[str] = typer.Option(
        [], "--at", help="Scenario value NAME=VALUE (repeatable); axes not given take "
        "their central value, other parameters the config's."),
    loan: list[str] = typer.Option([], "--loan", help="Loan id (repeatable; default all)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write every period here."),
) -> None:
    """Show each loan's path period by period in one scenario cell."""
    import csv

    import xarray as xr
    from rich.table import Table

    from .analysis.headline import axis_point
    from .config import load_config
    from .cube import coords
    from .reference import trace_loan

    try:
        cfg = load_config(config)
        given = _parse_point(at)
        unknown = [lid for lid in loan if lid not in {ln.loan_id for ln in cfg.loans}]
        if unknown:
            raise InputError(f"--loan {', '.join(unknown)}: not in the portfolio")
    except InputError as exc:
        _fail_input(exc)
    grid = xr.Dataset(coords=coords(cfg, ()))
    point = {**cfg.scenario, **axis_point([grid[a.name] for a in cfg.axes]), **given}
    out.print("cell: " + ", ".join(f"{k}={v:g}" for k, v in point.items()), markup=False)
    all_rows = []
    for ln in cfg.loans:
        if loan and ln.loan_id not in loan:
            continue
        rows, outcome = trace_loan(ln, cfg.periods_per_year, point)
        all_rows += rows
        table = Table(title=f"{ln.loan_id} ({ln.segment}, ${ln.principal / 1e6:,.0f}M, "
                      f"{ln.amortization}, {ln.term_years:g}y)", title_justify="left")
        for col in ("t", "rent", "CFADS $M", "DS $M", "DSCR", "cash $M", "owed $M",
                    "GPU coll. $M", "crypto $M", "LTV", "default"):
            table.add_column(col, justify="left" if col == "default" else "right")
        for r in rows:
            table.add_row(
                f"{r['t_years']:.2f}", f"{r['rent']:.3f}", f"{r['cfads'] / 1e6:,.1f}",
                f"{r['debt_service'] / 1e6:,.1f}",
                "" if r["dscr"] is None else f"{r['dscr']:.2f}", f"{r['cash'] / 1e6:,.1f}",
                f"{r['owed'] / 1e6:,.1f}", f"{r['gpu_collateral'] / 1e6:,.1f}",
                f"{r['crypto_collateral'] / 1e6:,.1f}", f"{r['ltv']:.2f}", r["default"])
        out.print(table)
        if outcome["default_years"] is None:
            out.print("  repaid, no default", markup=False)
        else:
            out.print(f"  {outcome['trigger']} default at t={outcome['default_years']:g}: "
                      f"EAD ${outcome['ead'] / 1e6:,.1f}M, recovery "
                      f"${outcome['recovery'] / 1e6:,.1f}M, loss ${outcome['loss'] / 1e6:,.1f}M",
                      markup=False)
    if csv_path is not None and all_rows:
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)
        out.print(f"periods written to {csv_path}", markup=False)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except InputError as exc:  # raised outside a command's own handling
        for line in exc.problems:
            err.print(f"error: {line}", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
