"""The ``gridstress`` command line: parses options, calls the library, prints.

Exit status: 0 on success, 2 on bad input (config, portfolio, options, an
output path that cannot be written), 1 on any other failure, 130 when
interrupted (finished blocks are kept).  :func:`main` is the one place that
turns errors into a line on stderr and an exit status: commands raise
:class:`~gridstress.errors.InputError` and the rest.  Nothing heavier than
typer and rich is imported until a command needs it, so ``gridstress
--help`` starts fast.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer
from typer._click import Context as ClickContext  # typer's own copy of click
from typer._click import exceptions as usage  # typer's own copy of click's exceptions
from typer.core import TyperGroup

from .analysis.defaults import FRONTIER_THRESHOLD, FRONTIER_VAR
from .errors import ClusterError, InputError, ModelError, did_you_mean
from .heap import keep_freed_memory
from .terminal import check_output, console, guard_pipes, table, write_csv

#: Suffixes of the files the commands write.
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
CUBE_SUFFIXES = (".zarr", ".nc", "")
#: Environment variable that makes an internal error print its traceback.
DEBUG_ENV = "GRIDSTRESS_DEBUG"


class _Commands(TyperGroup):
    """The command group, suggesting the nearest command for a misspelt one."""

    def resolve_command(self, ctx: ClickContext, args: list[str]):
        name = args[0] if args else ""
        if args and name not in self.commands and not name.startswith("-"):
            hint = did_you_mean(name, self.commands).replace(" (", "; ").rstrip(")")
            raise usage.UsageError(
                f"no such command {name!r}{hint} (commands: "
                + ", ".join(sorted(self.commands))
                + ")",
                ctx,
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: ClickContext):
        # Typer turns a KeyboardInterrupt into a silent exit status; main says it.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted(_interrupt_status(exc)) from None


class Interrupted(Exception):
    """A command stopped by Ctrl-C or SIGTERM, with the exit status to report."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


app = typer.Typer(
    help="Credit stress grids for loans against GPU fleets.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = console()
err = console(stderr=True)


def whole(value: Any) -> int:
    """A whole number, written as one likes it: ``1000000``, ``1e6``, ``1_000_000``."""
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number") from None
    if not number.is_integer():
        raise typer.BadParameter(f"{value!r} is not a whole number")
    return int(number)


def _version(value: bool) -> None:
    if value:
        from . import __version__
        from .model import MODEL_VERSION

        out.print(f"gridstress {__version__} (model v{MODEL_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """Credit stress grids for loans against GPU fleets."""


# -- Options used by several commands --------------------------------------


def csv_option(what: str = "the table"):
    return typer.Option(None, "--csv", help=f"Also write {what} as CSV here (.csv).")


MARGINALS_OPTION = typer.Option(
    None,
    "--marginals",
    help="YAML file mapping axes to scipy.stats distributions, e.g. "
    "'deflation: {dist: norm, loc: 0.3, scale: 0.15}' (default: docs/analysis.md).",
)
CUBE_ARGUMENT = typer.Argument(
    ..., metavar="CUBE", help="Cube written by gridstress run (.zarr or .nc)."
)


def _warn(cfg) -> None:
    """The config's plausibility warnings, one line each (the run goes on)."""
    for line in cfg.warnings:
        err.print(f"warning: {line}")


def _show(title: str | None, columns: list[str], rows: list[list[str]], left: int = 1) -> None:
    """A title line, then a table."""
    if title:
        out.print(title)
    out.print(table(columns, rows, left))


def _write_csv(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows)
    out.print(f"rows written to {path}")


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2%}"


def _usd_m(value) -> str:
    return "" if value is None else f"{value / 1e6:,.1f}"


def _cell(point: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in point.items())


def _open_cube(path: Path):
    """The cube at ``path``, or an InputError that says what the path is instead."""
    from .cube import open_cube

    try:
        return open_cube(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None


def _run_config(path: Path):
    """A run config from a YAML file, or the config a cube embeds."""
    from .config import load_config

    if (path.is_dir() and (path / "zarr.json").is_file()) or path.suffix.lower() == ".nc":
        from .analysis.summary import cube_config

        with _open_cube(path) as ds:
            cfg = cube_config(ds)
        if cfg is None:
            raise InputError(
                f"{path}: the cube embeds no run config of this model version; "
                "give the YAML run config instead"
            )
        return cfg
    return load_config(path)


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
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells, {task.fields[blocks]}/" + f"{total_blocks} blocks"),
        CellRate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )
    task = progress.add_task(label, total=total_cells, blocks=0)
    started = last = time.monotonic()
    done = blocks = 0
    kept = {"cells": 0}  # cells of blocks kept from an interrupted run

    def advance(block, skipped: bool = False) -> None:
        nonlocal last, done, blocks, started
        done += block.size
        blocks += 1
        if skipped:
            kept["cells"] += block.size
            started = time.monotonic()
            progress.reset(task, total=total_cells, completed=done, blocks=blocks)
            return
        progress.update(task, advance=block.size, blocks=blocks)
        now = time.monotonic()
        if not err.is_terminal and now - last >= log_every_s and done < total_cells:
            last = now
            rate = (done - kept["cells"]) / (now - started)
            err.print(
                f"{label}: {done:,} of {total_cells:,} cells ({done / total_cells:.0%}), "
                f"{blocks} of {total_blocks} blocks, {rate:,.0f} cells/s, "
                f"about {(total_cells - done) / rate:.0f} s left"
            )

    return progress, advance, kept


# -- Commands --------------------------------------------------------------


@app.command()
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
    """Evaluate the portfolio on every cell of the grid and write the cube."""
    import logging
    from dataclasses import replace

    from .backend import BACKENDS, resolve_backend
    from .config import load_config
    from .distributed import check_scheduler, is_remote
    from .engine import write_cube_and_headline
    from .prepared import prepare
    from .store import (
        blocks_done,
        check_output_path,
        check_partial,
        check_resumable,
        partial_path,
    )

    where = (
        scheduler
        if scheduler is not None or scheduler_file is not None
        else ("local" if workers is not None else "auto")
    )  # --workers asks for a local cluster
    check_scheduler(where, scheduler_file, workers)
    if out_path is not None and out_path.suffix.lower() not in CUBE_SUFFIXES:
        raise InputError(
            f"--out {out_path}: a cube is a Zarr directory (.zarr, or no "
            "suffix) or a NetCDF file (.nc)"
        )
    remote = is_remote(where, scheduler_file)
    chosen = None if remote else resolve_backend(backend)
    if remote and backend not in BACKENDS:  # the workers resolve a valid name
        resolve_backend(backend)
    cfg = load_config(config)
    if per_loan:
        cfg = replace(cfg, per_loan=True)
    _warn(cfg)
    run_ = prepare(cfg, chosen or "numpy", chunk_cells)
    target = out_path or Path("results") / f"{cfg.name}.zarr"
    # A refused output is the only line: checked before anything else is said.
    check_output_path(target, run_, overwrite)
    if resume and partial_path(target).exists():
        run_.plan = check_resumable(partial_path(target), run_)  # its blocks, not new ones
    else:
        check_partial(partial_path(target), run_, overwrite)
    for note in (chosen.note if chosen is not None else None, run_.note):
        if note:
            err.print(note)
    on = (
        f"{chosen.name} ({chosen.device})"
        if chosen
        else f"the cluster's workers (--backend {backend})"
    )
    try:
        err.print(
            f"{cfg.name}: {len(cfg.loans)} loans x {cfg.n_cells:,} cells "
            f"({' x '.join(f'{a.name} {len(a)}' for a in cfg.axes)}) on {on}, "
            f"{len(run_.plan)} block(s)"
        )
        progress, advance, kept = _progress(cfg.n_cells, "evaluating", total_blocks=len(run_.plan))
        logging.getLogger("distributed").setLevel(logging.ERROR)
        started = time.perf_counter()
        with progress:
            written = write_cube_and_headline(
                cfg,
                target,
                backend=backend,
                progress=advance,
                resume=resume,
                prepared=run_,
                scheduler=where,
                scheduler_file=scheduler_file,
                workers=workers,
                log=err.print,
                overwrite=overwrite,
            )
    except KeyboardInterrupt as exc:
        _say_interrupted(f"interrupted: {_saved(blocks_done(target) or 0, len(run_.plan))}")
        raise typer.Exit(_interrupt_status(exc)) from None
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


@app.command()
def validate(config: Path = typer.Argument(..., metavar="CONFIG", help="YAML run config.")) -> None:
    """Check a config and its portfolio without computing anything."""
    from .prepared import prepare

    prepared = prepare(config, "numpy")
    cfg = prepared.config
    _warn(cfg)
    out.print(f"{config}: valid")
    out.print(
        f"  {len(cfg.loans)} loans, ${prepared.portfolio.total_principal / 1e9:,.3f}B "
        f"principal, horizon {prepared.portfolio.horizon} periods "
        f"({cfg.periods_per_year} a year)"
    )
    for a in cfg.axes:
        out.print(f"  {a.name}: {len(a)} values from {a.values[0]:g} to {a.values[-1]:g}")
    out.print(f"  {cfg.n_cells:,} cells in {len(prepared.plan)} block(s)")


def _marginals(path: Path | None) -> dict | None:
    from .config import load_marginals

    if path is not None and not path.exists():
        raise InputError(f"--marginals {path}: no such file")
    return load_marginals(path) if path is not None else None


def summary_tables(s) -> dict[str, list[dict[str, Any]]]:
    """The tables of a summary as rows (for CSV and Excel), by table name."""
    from .variables import TRIGGERS

    tables: dict[str, list[dict[str, Any]]] = {
        "scenarios": [
            {"scenario": label, "cell": _cell(s.points[label]), **v}
            for label, v in s.scenarios.items()
        ],
        "default_rate_by_trigger": [
            {"scenario": label, **{t: r[t] for t in TRIGGERS}} for label, r in s.by_trigger.items()
        ],
        "segments": [{"segment": k, "loss_at_base": v} for k, v in s.loss_by_segment.items()],
    }
    if s.market:
        tables["market"] = [
            {
                "scenario": label,
                "loss": m.loss,
                "loss_deep_market": m.loss_deep,
                "extra_loss": m.extra_loss,
                "default_rate": m.default_rate,
                "default_rate_deep_market": m.default_rate_deep,
            }
            for label, m in s.market.items()
        ]
    if s.loans:
        tables["loans"] = [
            {"scenario": label, **r.row()} for label, results in s.loans.items() for r in results
        ]
    return tables


@app.command()
def summary(
    cube: Path = CUBE_ARGUMENT,
    csv_path: Path | None = csv_option("every table, one after another (a column says which)"),
    xlsx_path: Path | None = typer.Option(
        None,
        "--xlsx",
        help="Also write every table, the per-loan one included, as a "
        "worksheet of an Excel workbook here (.xlsx).",
    ),
) -> None:
    """Headline figures of a cube: base and severe scenarios, triggers, the cost of the
    thin resale market, each loan's outcome, segments and spreads."""
    from .analysis.summary import summary as summarise
    from .variables import TRIGGERS

    check_output(csv_path, (".csv",), "--csv")
    check_output(xlsx_path, (".xlsx",), "--xlsx")
    with _open_cube(cube) as ds:
        out.print(
            f"{ds.attrs.get('name', cube)} (model v{ds.attrs['model_version']}, "
            f"{ds.attrs.get('engine') or ds.attrs.get('backend')} on "
            f"{ds.attrs.get('device')}, {ds.attrs.get('created')})"
        )
        s = summarise(ds)
    for line in s.headline.lines():
        out.print(line)
    for label, point in s.points.items():
        out.print(f"{label} scenario: {_cell(point)}")
    _show(
        None,
        [
            "scenario",
            "loss $M",
            "loss rate",
            "default rate",
            "recovery rate",
            "breakeven bp",
            "lowest market price",
        ],
        [
            [
                label,
                _usd_m(v["loss"]),
                _pct(v["loss_rate"]),
                _pct(v["default_rate"]),
                _pct(v["recovery_rate"]),
                f"{v['breakeven_spread_bps']:,.0f}",
                f"{v.get('market_price_min', float('nan')):.3f}",
            ]
            for label, v in s.scenarios.items()
        ],
    )
    if s.by_trigger:
        _show(
            "default rate by trigger (defaulted principal over total)",
            ["scenario", *TRIGGERS],
            [[label, *(_pct(r[t]) for t in TRIGGERS)] for label, r in s.by_trigger.items()],
        )
    if s.market:
        _show(
            "what the thin resale market costs (the same cell with market_depth_gpus: .inf)",
            [
                "scenario",
                "loss $M",
                "deep-market loss $M",
                "extra loss $M",
                "default rate",
                "deep-market default rate",
            ],
            [
                [
                    label,
                    _usd_m(m.loss),
                    _usd_m(m.loss_deep),
                    _usd_m(m.extra_loss),
                    _pct(m.default_rate),
                    _pct(m.default_rate_deep),
                ]
                for label, m in s.market.items()
            ],
        )
    for label, results in (s.loans or {}).items():
        _show(
            f"loans at the {label} scenario ({_cell(s.points[label])})",
            [
                "loan",
                "segment",
                "principal $M",
                "default",
                "trigger",
                "EAD $M",
                "recovery $M",
                "loss $M",
            ],
            [
                [
                    r.loan_id,
                    r.segment,
                    _usd_m(r.principal),
                    "repaid" if r.default_years is None else f"t={r.default_years:g}",
                    r.trigger or "",
                    _usd_m(r.ead),
                    _usd_m(r.recovery),
                    _usd_m(r.loss),
                ]
                for r in results
            ],
            left=2,
        )
    for segment, loss in s.loss_by_segment.items():
        out.print(f"loss at base, {segment}: ${loss / 1e6:,.1f}M")
    out.print(
        f"breakeven spread at base: {s.breakeven_spread_bps:,.0f} bp; portfolio "
        f"principal-weighted spread: {s.actual_spread_bps:,.0f} bp; cushion: "
        f"{s.spread_cushion_bps:,.0f} bp"
    )
    tables = summary_tables(s)
    if csv_path is not None:
        columns = list(dict.fromkeys(k for rows in tables.values() for r in rows for k in r))
        _write_csv(
            csv_path,
            [
                {"table": name, **{k: r.get(k, "") for k in columns}}
                for name, rows in tables.items()
                for r in rows
            ],
        )
    if xlsx_path is not None:
        from .terminal import write_xlsx

        write_xlsx(xlsx_path, tables)
        out.print(f"workbook written to {xlsx_path} (sheets: {', '.join(tables)})")


@app.command()
def frontier(
    cube: Path = CUBE_ARGUMENT,
    var: str = typer.Option(FRONTIER_VAR, help="Variable compared with --threshold."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="The variable must exceed this."),
    loan: str | None = typer.Option(
        None,
        "--loan",
        help="The frontier of one loan: the smallest deflation at which it "
        "defaults (needs a cube written with --per-loan).",
    ),
    csv_path: Path | None = csv_option("every frontier cell"),
    plot_path: Path | None = typer.Option(
        None, "--plot", help="Frontier figure (.png, .svg or .pdf)."
    ),
    max_columns: int = typer.Option(8, parser=whole, help="Haircut columns printed (>= 1)."),
) -> None:
    """Smallest deflation at which --var exceeds --threshold (or --loan defaults), per
    crypto drawdown and haircut."""
    import math

    import numpy as np

    from .analysis.frontier import frontier as find_frontier
    from .analysis.frontier import frontier_rows, frontier_table, grid_floor, loan_frontier

    check_output(csv_path, (".csv",), "--csv")
    check_output(plot_path, FIGURE_SUFFIXES, "--plot")
    if max_columns < 1:
        raise InputError(f"--max-columns {max_columns}: must be >= 1")
    with _open_cube(cube) as ds:
        line = find_frontier(ds, var, threshold) if loan is None else loan_frontier(ds, loan)
        grid = frontier_table(line, ds)
        if plot_path is not None:
            from .analysis.plot import frontier_figure, save

            save(frontier_figure(line, ds), plot_path)
        lowest = grid_floor(ds, line)
    what = f"{var} > {threshold:g}" if loan is None else f"{loan} defaults"
    floor = f"'<=': already at {lowest:g}, the grid's lowest {line.name}"

    def shown(v: float) -> str:
        if math.isnan(v):
            return "-"
        return f"<={v:.3f}" if v == lowest else f"{v:.3f}"

    if "haircut" not in grid.dims:  # a loan's frontier: no haircut changes a default
        _show(
            f"smallest deflation at which {what} (rows: crypto_drawdown; '-': never; {floor})",
            ["crypto_drawdown", "deflation"],
            [[f"{c:g}", shown(v)] for c, v in zip(grid["crypto_drawdown"].values, grid.values)],
        )
    else:
        n = grid.sizes["haircut"]
        if n > max_columns:
            grid = grid.isel(
                haircut=np.unique(np.linspace(0, n - 1, max_columns).round().astype(int))
            )
        kept = (
            f", {grid.sizes['haircut']} of {n} haircut values; --csv writes all"
            if grid.sizes["haircut"] < n
            else ""
        )
        _show(
            f"smallest deflation at which {what} (rows: crypto_drawdown, columns: haircut; "
            f"'-': never; {floor}{kept})",
            ["c \\ h", *(f"{h:g}" for h in grid["haircut"].values)],
            [
                [f"{c:g}", *(shown(v) for v in row)]
                for c, row in zip(grid["crypto_drawdown"].values, grid.values)
            ],
            left=0,
        )
    if csv_path is not None:
        _write_csv(csv_path, frontier_rows(line))
    if plot_path is not None:
        out.print(f"figure written to {plot_path}")


@app.command()
def compare(
    cube_a: Path = typer.Argument(..., metavar="CUBE_A", help="Cube A (e.g. the book as it is)."),
    cube_b: Path = typer.Argument(
        ...,
        metavar="CUBE_B",
        help="Cube B on the same grid (e.g. the book without a loan, or another calibration).",
    ),
    var: str = typer.Option("loss_rate", help="Variable whose difference B - A is mapped."),
    csv_path: Path | None = csv_option("the headline deltas"),
    plot_path: Path | None = typer.Option(
        None,
        "--plot",
        help="Heatmap of B - A over deflation and crypto drawdown "
        "(.png, .svg or .pdf), other axes central.",
    ),
) -> None:
    """Headline deltas of two cubes on the same grid, and where B differs from A most."""
    from .analysis.compare import compare as compare_cubes
    from .analysis.compare import largest_change

    check_output(csv_path, (".csv",), "--csv")
    check_output(plot_path, FIGURE_SUFFIXES, "--plot")
    names = (str(cube_a), str(cube_b))
    with _open_cube(cube_a) as a, _open_cube(cube_b) as b:
        c = compare_cubes(a, b, var, names)
        if plot_path is not None:
            from .analysis.plot import difference_figure, save

            save(difference_figure(c.difference, a, names=names), plot_path)
        labels = (a.attrs.get("name", "A"), b.attrs.get("name", "B"))
    out.print(f"A: {cube_a} ({labels[0]}); B: {cube_b} ({labels[1]})")
    for label, point in c.points.items():
        out.print(f"{label} scenario: {_cell(point)}")

    def shown(figure: str, value: float, delta: bool = False) -> str:
        sign = "+" if delta and value > 0 else ""
        if figure.startswith("loss at"):
            return f"{sign}{value / 1e6:,.1f}M"
        if figure.startswith("breakeven"):
            return f"{sign}{value:,.0f} bp"
        return f"{sign}{value:.2%}"

    rows = c.rows()
    _show(
        "headline figures",
        ["figure", "A", "B", "B - A"],
        [
            [
                r["figure"],
                shown(r["figure"], r["a"]),
                shown(r["figure"], r["b"]),
                shown(r["figure"], r["b_minus_a"], True),
            ]
            for r in rows
        ],
    )
    for sign, word in ((1, "increase"), (-1, "decrease")):
        found = largest_change(c.difference, sign)
        if found is None:
            out.print(f"{var}: no cell shows an {word} from A to B")
        else:
            value, point = found
            out.print(f"largest {word} of {var}: {value:+.4g} at {_cell(point)}")
    if csv_path is not None:
        _write_csv(csv_path, rows)
    if plot_path is not None:
        out.print(f"figure written to {plot_path}")


@app.command()
def reverse(
    cube: Path = CUBE_ARGUMENT,
    loss_rate: float = typer.Option(
        ...,
        "--loss-rate",
        help="Target loss rate (share of principal) that a breaking cell reaches.",
    ),
    rho: float = typer.Option(0.5, help="Copula correlation of the scenario weights."),
    count: int = typer.Option(11, parser=whole, help="Cells listed by each ranking (>= 1)."),
    marginals: Path | None = MARGINALS_OPTION,
    csv_path: Path | None = csv_option("both rankings"),
) -> None:
    """Least severe and most probable cells whose loss rate reaches --loss-rate."""
    from .analysis.reverse import reverse_stress

    check_output(csv_path, (".csv",), "--csv")
    if count < 1:
        raise InputError(f"--count {count}: must be >= 1")
    with _open_cube(cube) as ds:
        rs = reverse_stress(ds, loss_rate, count, rho, _marginals(marginals))
    out.print(
        f"{rs.n_breaking:,} of {rs.n_cells:,} cells reach a loss rate of "
        f"{rs.target:.2%}; their probability (rho={rs.rho:g}): "
        f"{rs.breaking_probability:.4g}"
    )
    rows = []
    for ranking, cells in (("nearest", rs.nearest), ("probable", rs.probable)):
        title = (
            "least severe (distance from the central scenario)"
            if ranking == "nearest"
            else "most probable"
        )
        _show(
            title,
            ["#", "cell", "loss rate", "distance", "probability"],
            [
                [
                    str(i),
                    _cell(c.point),
                    f"{c.loss_rate:.2%}",
                    f"{c.distance:.3f}",
                    f"{c.probability:.3g}",
                ]
                for i, c in enumerate(cells, 1)
            ],
            left=0,
        )
        rows += [{"ranking": ranking, "rank": i, **c.row()} for i, c in enumerate(cells, 1)]
    if csv_path is not None:
        _write_csv(csv_path, rows)


@app.command()
def risk(
    cube: Path = CUBE_ARGUMENT,
    rho: list[float] = typer.Option(
        [0.0, 0.5, 0.9],
        "--rho",
        help="Correlation of the Gaussian copula of deflation and crypto drawdown (repeatable).",
    ),
    marginals: Path | None = MARGINALS_OPTION,
    csv_path: Path | None = csv_option("one row per rho"),
) -> None:
    """Expected loss, VaR and ES at 95% and 99% of the loss rate under scenario weights."""
    from .analysis.risk import describe_marginal
    from .analysis.risk import marginals as marginal_dists
    from .analysis.risk import risk as tail_risk

    check_output(csv_path, (".csv",), "--csv")
    with _open_cube(cube) as ds:
        overrides = _marginals(marginals)
        rows = tail_risk(ds, rho, overrides=overrides)
        dists = marginal_dists(ds, overrides)
    for axis, dist in dists.items():
        out.print(f"{axis} ~ {describe_marginal(dist)}")
    _show(
        "loss rate (share of total principal) under scenario weights",
        ["rho", "expected", "VaR 95%", "ES 95%", "VaR 99%", "ES 99%", "mass outside"],
        [
            [
                f"{r.rho:g}",
                *(f"{v:.2%}" for v in (r.expected_loss, r.var95, r.es95, r.var99, r.es99)),
                f"{r.outside:.3%}",
            ]
            for r in rows
        ],
        left=0,
    )
    if csv_path is not None:
        _write_csv(csv_path, [r.csv_row() for r in rows])


@app.command()
def plot(
    cube: Path = CUBE_ARGUMENT,
    var: str = typer.Option("loss_rate", help="Variable shown."),
    x: str = typer.Option("deflation", help="Axis across."),
    y: str = typer.Option("crypto_drawdown", help="Axis up."),
    at: list[str] = typer.Option(
        [],
        "--at",
        help="Fixed value NAME=VALUE of another axis "
        "(repeatable; nearest grid point; default central).",
    ),
    facet: str | None = typer.Option(None, help="One panel per value of this axis (e.g. haircut)."),
    frontier_var: str = typer.Option(FRONTIER_VAR, help="Variable of the frontier drawn."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="Threshold of the frontier drawn."),
    output: Path = typer.Option(..., "--output", "-o", help="Figure file (.png, .svg or .pdf)."),
) -> None:
    """Heatmap of a variable over two axes, with the deflation frontier drawn over it."""
    check_output(output, FIGURE_SUFFIXES, "--output")
    import matplotlib

    matplotlib.use("Agg")
    from .analysis.plot import facets, heatmap, save

    point = _parse_point(at)
    with _open_cube(cube) as ds:
        if facet is None:
            fig = heatmap(ds, var, x, y, point, frontier_var, threshold)
        else:
            fig = facets(ds, var, x, y, facet, point, frontier_var, threshold)
        save(fig, output)
    out.print(f"figure written to {output}")


@app.command()
def report(
    cube: Path = CUBE_ARGUMENT,
    output: Path = typer.Option(..., "--output", "-o", help="HTML file (.html)."),
    frontier_var: str = typer.Option(FRONTIER_VAR, help="Variable of the frontier."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="Threshold of the frontier."),
    loss_rate: list[float] = typer.Option(
        [],
        "--loss-rate",
        help="Reverse stress target (repeatable; default: 5 and 10 "
        "points above the base scenario's loss rate, where the grid reaches them).",
    ),
    rho: list[float] = typer.Option(
        [0.0, 0.5, 0.9], "--rho", help="Copula correlations of the risk table (repeatable)."
    ),
    reverse_rho: float = typer.Option(0.5, help="Copula correlation of the reverse stress."),
    marginals: Path | None = MARGINALS_OPTION,
) -> None:
    """One self-contained HTML report: summary, loans, triggers, market, figures,
    frontier, reverse stress, risk."""
    check_output(output, (".html", ".htm"), "--output")
    import matplotlib

    matplotlib.use("Agg")
    from .analysis.report import write_report

    with _open_cube(cube) as ds:
        write_report(
            ds,
            output,
            frontier_var=frontier_var,
            threshold=threshold,
            loss_rates=loss_rate,
            rhos=rho,
            reverse_rho=reverse_rho,
            overrides=_marginals(marginals),
        )
    out.print(f"report written to {output}")


def _parse_point(items: list[str]) -> dict[str, float]:
    from .params import SCENARIO_PARAMS

    point = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SCENARIO_PARAMS:
            hint = did_you_mean(name, SCENARIO_PARAMS) if sep else ""
            raise InputError(
                f"--at {item}: must be NAME=VALUE with NAME one of "
                + ", ".join(SCENARIO_PARAMS)
                + hint
            )
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
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="YAML run config, or a cube (its embedded config is traced)."
    ),
    at: list[str] = typer.Option(
        [],
        "--at",
        help="Scenario value NAME=VALUE (repeatable); axes not given take "
        "their central value, other parameters the config's.",
    ),
    loan: list[str] = typer.Option([], "--loan", help="Loan id (repeatable; default all)."),
    csv_path: Path | None = csv_option("every period of every loan traced"),
) -> None:
    """Show each loan's path period by period in one scenario cell, with the market."""
    from .analysis.headline import reference_index
    from .reference import trace_cell

    check_output(csv_path, (".csv",), "--csv")
    cfg = _run_config(config)
    given = _parse_point(at)
    ids = [ln.loan_id for ln in cfg.loans]
    unknown = [lid for lid in loan if lid not in ids]
    if unknown:
        raise InputError(
            f"--loan {', '.join(unknown)}: not in the portfolio"
            + did_you_mean(unknown[0], ids)
            + "; loans are: "
            + ", ".join(ids)
        )
    central = {a.name: float(a.values[reference_index(a.array, a.central)]) for a in cfg.axes}
    point = {**cfg.scenario, **central, **given}
    out.print("cell: " + _cell(point))
    wanted = tuple(loan) or tuple(ids)
    traces, market, outcomes = trace_cell(cfg.loans, cfg.periods_per_year, point, wanted)
    _show(
        "secondary market (every loan of the book; price index after the period's fire sales)",
        ["t", "GPUs sold", "overhang", "price index"],
        [
            [
                f"{m['t_years']:.2f}",
                f"{m['sold_gpus']:,.0f}",
                f"{m['overhang_gpus']:,.0f}",
                f"{m['price_index']:.4f}",
            ]
            for m in market
        ],
        left=0,
    )

    def opt(value, fmt):
        return "" if value is None else format(value, fmt)

    by_id = {ln.loan_id: ln for ln in cfg.loans}
    all_rows = []
    for outcome in outcomes:
        loan_id = outcome["loan_id"]
        if loan_id not in wanted:
            continue
        ln, rows = by_id[loan_id], traces[loan_id]
        all_rows += rows
        tested = f"LTV tested on {ln.ltv_basis} value" + (
            "" if ln.max_ltv is None else f", max {ln.max_ltv:g}"
        )
        _show(
            f"{loan_id} ({ln.segment}, ${ln.principal / 1e6:,.0f}M, {ln.amortization}, "
            f"{ln.term_years:g}y; {tested})",
            [
                "t",
                "rent",
                "CFADS $M",
                "DS $M",
                "DSCR",
                "cash $M",
                "owed $M",
                "fair $M",
                "price",
                "GPU coll. $M",
                "crypto $M",
                "book $M",
                "LTV mkt",
                "LTV book",
                "refi coll. $M",
                "refi CF $M",
                "default",
            ],
            [
                [
                    f"{r['t_years']:.2f}",
                    f"{r['rent']:.3f}",
                    _usd_m(r["cfads"]),
                    _usd_m(r["debt_service"]),
                    opt(r["dscr"], ".2f"),
                    _usd_m(r["cash"]),
                    _usd_m(r["owed"]),
                    _usd_m(r["gpu_fair_value"]),
                    f"{r['price_index']:.3f}",
                    _usd_m(r["gpu_collateral"]),
                    _usd_m(r["crypto_collateral"]),
                    _usd_m(r["book_value"]),
                    f"{r['ltv_market']:.2f}",
                    opt(r["ltv_book"], ".2f"),
                    _usd_m(r["refi_collateral_offer"]),
                    _usd_m(r["refi_cash_flow_offer"]),
                    r["default"],
                ]
                for r in rows
            ],
            left=0,
        )
        if outcome["default_years"] is None:
            out.print("  repaid, no default")
        else:
            out.print(
                f"  {outcome['trigger']} default at t={outcome['default_years']:g}: "
                f"EAD ${outcome['ead'] / 1e6:,.1f}M, recovery "
                f"${outcome['recovery'] / 1e6:,.1f}M, loss ${outcome['loss'] / 1e6:,.1f}M"
            )
    if csv_path is not None and all_rows:
        write_csv(csv_path, all_rows)
        out.print(f"periods written to {csv_path}")


@app.command()
def bench(
    cells: int = typer.Option(
        1_000_000,
        parser=whole,
        help="Cells of the generated grid "
        "(one haircut value unless --haircuts), when no --config is "
        "given.",
    ),
    loans: int = typer.Option(100, parser=whole, help="Random loans in the portfolio."),
    backend: str = typer.Option(
        "auto",
        help="numpy: time the NumPy backend only; cupy: the xp model on CuPy and "
        "the fused kernel; auto: all three where a GPU is present.",
    ),
    config: Path | None = typer.Option(
        None,
        help="Take the grid and scenario of this run config (its portfolio is "
        "replaced by the random loans).",
    ),
    haircuts: int = typer.Option(1, parser=whole, help="Haircut values of the generated grid."),
    seed: int = typer.Option(0, parser=whole, help="Seed of the random portfolio."),
    engines: str | None = typer.Option(
        None, help="Comma-separated subset of numpy,cupy-xp,fused (overrides --backend)."
    ),
    model: str = typer.Option(
        "v1",
        help="v1: the loans and scenario with model v1's settings (a deep market); "
        "v2: the v2 defaults, market step active.",
    ),
    compile_times: bool = typer.Option(
        True, help="Also time the kernel's first start (empty cache) and warm start."
    ),
    out_path: Path | None = typer.Option(
        None, "--out", "-o", help="Write the results as JSON here (.json)."
    ),
) -> None:
    """Time the NumPy backend, the xp model on CuPy and the fused kernel on one grid."""
    from .backend import cupy_or_reason, resolve_backend
    from .bench import ENGINES, MODELS, run_bench, write_results

    check_output(out_path, (".json",), "--out")
    if model not in MODELS:
        raise InputError(f"--model {model}: must be one of {', '.join(MODELS)}")
    chosen: tuple[str, ...] | None = None
    wanted = backend
    if engines is not None:
        chosen = tuple(e.strip() for e in engines.split(",") if e.strip())
        unknown = [e for e in chosen if e not in ENGINES]
        if unknown or not chosen:
            raise InputError(f"--engines {engines}: each must be one of {', '.join(ENGINES)}")
        wanted = "cupy" if any(e != "numpy" for e in chosen) else "numpy"
    small = [
        f"--{name} {value}"
        for name, value in (("cells", cells), ("loans", loans), ("haircuts", haircuts))
        if value < 1
    ]
    if small:
        raise InputError([f"{option}: must be >= 1" for option in small])
    if chosen is not None and wanted == "cupy":
        cupy, reason = cupy_or_reason()
        if cupy is None:
            raise InputError(
                f"--engines {engines}: needs CuPy and a GPU, which cannot run here: {reason}"
            )
    resolved = resolve_backend(wanted)
    if chosen is None:
        chosen = (
            ("numpy",)
            if resolved.name == "numpy"
            else (("cupy-xp", "fused") if backend == "cupy" else ENGINES)
        )
    if resolved.note:
        err.print(resolved.note)
    results = run_bench(
        loans,
        cells,
        config,
        chosen,
        seed,
        haircuts,
        log=out.print,
        compile_timing=compile_times,
        model=model,
    )
    if out_path is not None:
        out.print(f"results: {write_results(results, out_path)}")


# -- The one error boundary ------------------------------------------------


def _fail(lines: list[str], status: int) -> int:
    for line in lines:
        err.print(f"error: {line}")
    return status


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's cancel or time limit), handled as a Ctrl-C is."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _say_interrupted(line: str) -> None:
    """The one line of an interrupted command, written past the console, whose
    buffer a Ctrl-C in the middle of a print can leave holding its output."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _interrupt_status(exc: BaseException) -> int:
    """128 plus the number of the signal that stopped the run, as shells report it."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes a line on stderr and an exit status."""
    guard_pipes()
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    keep_freed_memory()
    global out, err
    out, err = console(), console(stderr=True)
    try:
        status = app(args=argv, prog_name="gridstress", standalone_mode=False)
        status = status if isinstance(status, int) else 0
    except typer.Exit as exc:
        status = exc.exit_code
    except Interrupted as exc:
        _say_interrupted("interrupted")
        status = exc.status
    except usage.NoArgsIsHelpError as exc:
        out.print(exc.ctx.get_help() if exc.ctx is not None else "")
        status = 2
    except usage.UsageError as exc:
        hint = (
            f" (gridstress {exc.ctx.command_path.partition(' ')[2]} -h for help)".replace("  ", " ")
            if exc.ctx is not None and " " in exc.ctx.command_path
            else " (gridstress -h for help)"
        )
        status = _fail([exc.format_message() + hint], 2)
    except usage.ClickException as exc:
        status = _fail([exc.format_message()], 2)
    except InputError as exc:
        status = _fail(exc.problems, 2)
    except (ModelError, ClusterError) as exc:
        status = _fail([str(exc)], 1)
    except (typer.Abort, KeyboardInterrupt) as exc:
        _say_interrupted("interrupted")
        status = _interrupt_status(exc)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        status = _fail([f"{where}{exc.strerror or exc}"], 2)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        status = _fail(
            [
                f"internal error ({type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 "
                "to see the traceback"
            ],
            1,
        )
    sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()
