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

from .analysis.defaults import FRONTIER_THRESHOLD, FRONTIER_VAR
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


def _warn(cfg) -> None:
    """The config's plausibility warnings, one line each (the run goes on)."""
    for line in cfg.warnings:
        err.print(f"warning: {line}", markup=False)


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
    per_loan: bool = typer.Option(
        False, "--per-loan", help="Also write each loan's default time and loss "
        "(loan_default_years, loan_loss; as outputs: {per_loan: true} in the config)."),
) -> None:
    """Evaluate the portfolio on every cell of the grid and write the cube."""
    import logging
    from dataclasses import replace

    from .analysis.headline import headline
    from .backend import BACKENDS, resolve_backend
    from .config import load_config
    from .cube import open_cube
    from .distributed import check_scheduler, is_remote
    from .engine import write_cube
    from .errors import ClusterError, ModelError
    from .prepared import prepare
    from .store import blocks_done

    where = scheduler if scheduler is not None or scheduler_file is not None else "local"
    try:
        check_scheduler(where, scheduler_file, workers)
        remote = is_remote(where, scheduler_file)
        chosen = None if remote else resolve_backend(backend)
        if remote and backend not in BACKENDS:  # the workers resolve a valid name
            resolve_backend(backend)
        cfg = load_config(config)
        if per_loan:
            cfg = replace(cfg, per_loan=True)
        _warn(cfg)
        run_ = prepare(cfg, chosen or "numpy", chunk_cells)
    except InputError as exc:
        _fail_input(exc)
    for note in (chosen.note if chosen is not None else None, run_.note):
        if note:
            err.print(note, markup=False)
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
    from .prepared import prepare

    try:
        prepared = prepare(config, "numpy")
    except InputError as exc:
        _fail_input(exc)
    cfg = prepared.config
    _warn(cfg)
    out.print(f"{config}: valid", markup=False)
    out.print(f"  {len(cfg.loans)} loans, ${prepared.portfolio.total_principal / 1e9:,.3f}B "
              f"principal, horizon {prepared.portfolio.horizon} periods "
              f"({cfg.periods_per_year} a year)", markup=False)
    for a in cfg.axes:
        out.print(f"  {a.name}: {len(a)} values from {a.values[0]:g} to {a.values[-1]:g}",
                  markup=False)
    out.print(f"  {cfg.n_cells:,} cells in {len(prepared.plan)} block(s)", markup=False)


def _open_cube(path: Path):
    from .cube import open_cube

    try:
        return open_cube(path)
    except (FileNotFoundError, ValueError) as exc:
        # a store that exists but cannot be opened as a cube: say so, then why
        message = str(exc)
        if path.exists() and "not a gridstress cube" not in message:
            message = f"{path}: not a gridstress cube ({message})"
        err.print(f"error: {message}", markup=False)
        raise typer.Exit(2) from None


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    out.print(f"rows written to {path}", markup=False)


def _marginals(path: Path | None) -> dict | None:
    from .config import load_marginals

    return load_marginals(path) if path is not None else None


MARGINALS_OPTION = typer.Option(
    None, "--marginals", help="YAML file mapping axes to scipy.stats distributions, e.g. "
    "'deflation: {dist: norm, loc: 0.3, scale: 0.15}' (default: docs/analysis.md).")


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2%}"


def _usd_m(value) -> str:
    return "" if value is None else f"{value / 1e6:,.1f}"


def _table(title: str | None, columns: list[str], rows: list[list[str]], left: int = 1):
    """A rich table: the first ``left`` columns left-aligned, the rest right-aligned."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def summary(cube: Path = typer.Argument(..., help="Cube written by gridstress run.")) -> None:
    """Headline figures of a cube: base and severe scenarios, triggers, the cost of the
    thin resale market, each loan's outcome, segments and spreads."""
    from .analysis.summary import summary as summarise
    from .variables import TRIGGERS

    with _open_cube(cube) as ds:
        out.print(f"{ds.attrs.get('name', cube)} (model v{ds.attrs['model_version']}, "
                  f"{ds.attrs.get('engine') or ds.attrs.get('backend')} on "
                  f"{ds.attrs.get('device')}, {ds.attrs.get('created')})", markup=False)
        s = summarise(ds)
    for line in s.headline.lines():
        out.print(line, markup=False)
    for label, point in s.points.items():
        out.print(f"{label} scenario: " + ", ".join(f"{k}={x:g}" for k, x in point.items()),
                  markup=False)
    out.print(_table(None, ["scenario", "loss $M", "loss rate", "default rate",
                            "recovery rate", "breakeven bp", "lowest market price"],
                     [[label, _usd_m(v["loss"]), _pct(v["loss_rate"]), _pct(v["default_rate"]),
                       _pct(v["recovery_rate"]), f"{v['breakeven_spread_bps']:,.0f}",
                       f"{v.get('market_price_min', float('nan')):.3f}"]
                      for label, v in s.scenarios.items()]))
    if s.by_trigger:
        out.print(_table("default rate by trigger (defaulted principal over total)",
                         ["scenario", *TRIGGERS],
                         [[label, *(_pct(r[t]) for t in TRIGGERS)]
                          for label, r in s.by_trigger.items()]))
    if s.market:
        out.print(_table("what the thin resale market costs (the same cell with "
                         "market_depth_gpus: .inf)",
                         ["scenario", "loss $M", "deep-market loss $M", "extra loss $M",
                          "default rate", "deep-market default rate"],
                         [[label, _usd_m(m.loss), _usd_m(m.loss_deep), _usd_m(m.extra_loss),
                           _pct(m.default_rate), _pct(m.default_rate_deep)]
                          for label, m in s.market.items()]))
    for label, results in (s.loans or {}).items():
        cell = ", ".join(f"{k}={x:g}" for k, x in s.points[label].items())
        out.print(_table(f"loans at the {label} scenario ({cell})",
                         ["loan", "segment", "principal $M", "default", "trigger", "EAD $M",
                          "recovery $M", "loss $M"],
                         [[r.loan_id, r.segment, _usd_m(r.principal),
                           "repaid" if r.default_years is None else f"t={r.default_years:g}",
                           r.trigger or "", _usd_m(r.ead), _usd_m(r.recovery), _usd_m(r.loss)]
                          for r in results], left=2))
    for segment, loss in s.loss_by_segment.items():
        out.print(f"loss at base, {segment}: ${loss / 1e6:,.1f}M", markup=False)
    out.print(f"breakeven spread at base: {s.breakeven_spread_bps:,.0f} bp; portfolio "
              f"principal-weighted spread: {s.actual_spread_bps:,.0f} bp; cushion: "
              f"{s.spread_cushion_bps:,.0f} bp", markup=False)


@app.command()
def frontier(
    cube: Path = typer.Argument(..., help="Cube written by gridstress run."),
    var: str = typer.Option(FRONTIER_VAR, help="Variable compared with --threshold."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD,
                                    help="The variable must exceed this."),
    loan: str | None = typer.Option(
        None, "--loan", help="The frontier of one loan: the smallest deflation at which it "
        "defaults (needs a cube written with --per-loan)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write every frontier cell here."),
    plot_path: Path | None = typer.Option(None, "--plot",
                                          help="Frontier figure (.png/.svg/.pdf)."),
    max_columns: int = typer.Option(8, min=1, help="Haircut columns printed."),
) -> None:
    """Smallest deflation at which --var exceeds --threshold (or --loan defaults), per
    crypto drawdown and haircut."""
    import math

    import numpy as np
    from rich.table import Table

    from .analysis.frontier import frontier as find_frontier
    from .analysis.frontier import frontier_rows, frontier_table, loan_frontier

    with _open_cube(cube) as ds:
        try:
            line = (find_frontier(ds, var, threshold) if loan is None
                    else loan_frontier(ds, loan))
            table = frontier_table(line, ds)
            figure = None
            if plot_path is not None:
                from .analysis.plot import frontier_figure, save

                figure = frontier_figure(line, ds)
                save(figure, plot_path)
        except InputError as exc:
            _fail_input(exc)
    what = f"{var} > {threshold:g}" if loan is None else f"{loan} defaults"
    if "haircut" not in table.dims:  # a loan's frontier: no haircut changes a default
        grid = _table(f"smallest deflation at which {what} (rows: crypto_drawdown; "
                      "'-': never)", ["crypto_drawdown", "deflation"],
                      [[f"{c:g}", "-" if math.isnan(v) else f"{v:.3f}"]
                       for c, v in zip(table["crypto_drawdown"].values, table.values)])
    else:
        n = table.sizes["haircut"]
        if n > max_columns:
            table = table.isel(haircut=np.unique(np.linspace(0, n - 1, max_columns).round()
                                                 .astype(int)))
        shown = f", {table.sizes['haircut']} of {n} haircut values; --csv writes all" \
            if table.sizes["haircut"] < n else ""
        grid = Table(title=f"smallest deflation at which {what} (rows: crypto_drawdown, "
                     f"columns: haircut; '-': never{shown})", title_justify="left")
        grid.add_column("c \\ h", justify="right")
        for h in table["haircut"].values:
            grid.add_column(f"{h:g}", justify="right")
        for c, row in zip(table["crypto_drawdown"].values, table.values):
            grid.add_row(f"{c:g}", *("-" if math.isnan(v) else f"{v:.3f}" for v in row))
    out.print(grid)
    if csv_path is not None:
        _write_csv(csv_path, frontier_rows(line))
    if figure is not None:
        out.print(f"figure written to {plot_path}", markup=False)


@app.command()
def compare(
    cube_a: Path = typer.Argument(..., help="Cube A (e.g. the book as it is)."),
    cube_b: Path = typer.Argument(..., help="Cube B on the same grid (e.g. the book without "
                                  "a loan, or another calibration)."),
    var: str = typer.Option("loss_rate", help="Variable whose difference B - A is mapped."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the headline deltas here."),
    plot_path: Path | None = typer.Option(
        None, "--plot", help="Heatmap of B - A over deflation and crypto drawdown "
        "(.png/.svg/.pdf), other axes central."),
) -> None:
    """Headline deltas of two cubes on the same grid, and where B differs from A most."""
    from .analysis.compare import compare as compare_cubes
    from .analysis.compare import largest_change

    names = (str(cube_a), str(cube_b))
    with _open_cube(cube_a) as a, _open_cube(cube_b) as b:
        try:
            c = compare_cubes(a, b, var, names)
            if plot_path is not None:
                from .analysis.plot import difference_figure, save

                save(difference_figure(c.difference, a, names=names), plot_path)
        except InputError as exc:
            _fail_input(exc)
        names_ab = (a.attrs.get("name", "A"), b.attrs.get("name", "B"))
    out.print(f"A: {cube_a} ({names_ab[0]}); B: {cube_b} ({names_ab[1]})", markup=False)
    for label, point in c.points.items():
        out.print(f"{label} scenario: " + ", ".join(f"{k}={x:g}" for k, x in point.items()),
                  markup=False)

    def shown(figure: str, value: float, delta: bool = False) -> str:
        sign = "+" if delta and value > 0 else ""
        if figure.startswith("loss at"):
            return f"{sign}{value / 1e6:,.1f}M"
        if figure.startswith("breakeven"):
            return f"{sign}{value:,.0f} bp"
        return f"{sign}{value:.2%}"

    rows = c.rows()
    out.print(_table("headline figures", ["figure", "A", "B", "B - A"],
                     [[r["figure"], shown(r["figure"], r["a"]), shown(r["figure"], r["b"]),
                       shown(r["figure"], r["b_minus_a"], True)] for r in rows]))
    for sign, word in ((1, "increase"), (-1, "decrease")):
        found = largest_change(c.difference, sign)
        if found is None:
            out.print(f"{var}: no cell shows an {word} from A to B", markup=False)
        else:
            value, point = found
            out.print(f"largest {word} of {var}: {value:+.4g} at "
                      + ", ".join(f"{k}={x:g}" for k, x in point.items()), markup=False)
    if csv_path is not None:
        _write_csv(csv_path, rows)
    if plot_path is not None:
        out.print(f"figure written to {plot_path}", markup=False)


@app.command()
def reverse(
    cube: Path = typer.Argument(..., help="Cube written by gridstress run."),
    loss_rate: float = typer.Option(..., "--loss-rate", help="Target loss rate (share of "
                                    "principal) that a breaking cell reaches."),
    rho: float = typer.Option(0.5, help="Copula correlation of the scenario weights."),
    count: int = typer.Option(11, min=1, help="Cells listed by each ranking."),
    marginals: Path | None = MARGINALS_OPTION,
    csv_path: Path | None = typer.Option(None, "--csv", help="Write both rankings here."),
) -> None:
    """Least severe and most probable cells whose loss rate reaches --loss-rate."""
    from rich.table import Table

    from .analysis.reverse import reverse_stress

    with _open_cube(cube) as ds:
        try:
            rs = reverse_stress(ds, loss_rate, count, rho, _marginals(marginals))
        except InputError as exc:
            _fail_input(exc)
    out.print(f"{rs.n_breaking:,} of {rs.n_cells:,} cells reach a loss rate of "
              f"{rs.target:.2%}; their probability (rho={rs.rho:g}): "
              f"{rs.breaking_probability:.4g}", markup=False)
    rows = []
    for ranking, cells in (("nearest", rs.nearest), ("probable", rs.probable)):
        title = ("least severe (distance from the central scenario)" if ranking == "nearest"
                 else "most probable")
        table = Table(title=title, title_justify="left")
        for col in ("#", "cell", "loss rate", "distance", "probability"):
            table.add_column(col, justify="left" if col == "cell" else "right")
        for i, c in enumerate(cells, 1):
            table.add_row(str(i), ", ".join(f"{k}={v:g}" for k, v in c.point.items()),
                          f"{c.loss_rate:.2%}", f"{c.distance:.3f}", f"{c.probability:.3g}")
            rows.append({"ranking": ranking, "rank": i, **c.row()})
        out.print(table)
    if csv_path is not None:
        _write_csv(csv_path, rows)


@app.command()
def risk(
    cube: Path = typer.Argument(..., help="Cube written by gridstress run."),
    rho: list[float] = typer.Option([0.0, 0.5, 0.9], "--rho", help="Correlation of the "
                                    "Gaussian copula of deflation and crypto drawdown "
                                    "(repeatable)."),
    marginals: Path | None = MARGINALS_OPTION,
    csv_path: Path | None = typer.Option(None, "--csv", help="Write one row per rho here."),
) -> None:
    """Expected loss, VaR and ES at 95% and 99% of the loss rate under scenario weights."""
    from rich.table import Table

    from .analysis.risk import describe_marginal
    from .analysis.risk import marginals as marginal_dists
    from .analysis.risk import risk as tail_risk

    with _open_cube(cube) as ds:
        try:
            overrides = _marginals(marginals)
            rows = tail_risk(ds, rho, overrides=overrides)
            dists = marginal_dists(ds, overrides)
        except InputError as exc:
            _fail_input(exc)
    for axis, dist in dists.items():
        out.print(f"{axis} ~ {describe_marginal(dist)}", markup=False)
    table = Table(title="loss rate (share of total principal) under scenario weights",
                  title_justify="left")
    for col in ("rho", "expected", "VaR 95%", "ES 95%", "VaR 99%", "ES 99%", "mass outside"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r.rho:g}", *(f"{v:.2%}" for v in (r.expected_loss, r.var95, r.es95,
                                                            r.var99, r.es99)),
                      f"{r.outside:.3%}")
    out.print(table)
    if csv_path is not None:
        _write_csv(csv_path, [r.csv_row() for r in rows])


@app.command()
def plot(
    cube: Path = typer.Argument(..., help="Cube written by gridstress run."),
    var: str = typer.Option("loss_rate", help="Variable shown."),
    x: str = typer.Option("deflation", help="Axis across."),
    y: str = typer.Option("crypto_drawdown", help="Axis up."),
    at: list[str] = typer.Option([], "--at", help="Fixed value NAME=VALUE of another axis "
                                 "(repeatable; nearest grid point; default central)."),
    facet: str | None = typer.Option(None, help="One panel per value of this axis "
                                     "(e.g. haircut)."),
    frontier_var: str = typer.Option(FRONTIER_VAR, help="Variable of the frontier drawn."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="Threshold of the frontier drawn."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Figure file (.png, .svg or .pdf)."),
) -> None:
    """Heatmap of a variable over two axes, with the deflation frontier drawn over it."""
    import matplotlib

    matplotlib.use("Agg")
    from .analysis.plot import facets, heatmap, save

    with _open_cube(cube) as ds:
        try:
            point = _parse_point(at)
            if facet is None:
                fig = heatmap(ds, var, x, y, point, frontier_var, threshold)
            else:
                fig = facets(ds, var, x, y, facet, point, frontier_var, threshold)
            save(fig, output)
        except InputError as exc:
            _fail_input(exc)
    out.print(f"figure written to {output}", markup=False)


@app.command()
def report(
    cube: Path = typer.Argument(..., help="Cube written by gridstress run."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML file."),
    frontier_var: str = typer.Option(FRONTIER_VAR, help="Variable of the frontier."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="Threshold of the frontier."),
    loss_rate: list[float] = typer.Option(
        [], "--loss-rate", help="Reverse stress target (repeatable; default: 5 and 10 "
        "points above the base scenario's loss rate, where the grid reaches them)."),
    rho: list[float] = typer.Option([0.0, 0.5, 0.9], "--rho", help="Copula correlations "
                                    "of the risk table (repeatable)."),
    reverse_rho: float = typer.Option(0.5, help="Copula correlation of the reverse stress."),
    marginals: Path | None = MARGINALS_OPTION,
) -> None:
    """One self-contained HTML report: summary, loans, triggers, market, figures,
    frontier, reverse stress, risk."""
    import matplotlib

    matplotlib.use("Agg")
    from .analysis.report import write_report

    with _open_cube(cube) as ds:
        try:
            write_report(ds, output, frontier_var=frontier_var, threshold=threshold,
                         loss_rates=loss_rate, rhos=rho, reverse_rho=reverse_rho,
                         overrides=_marginals(marginals))
        except InputError as exc:
            _fail_input(exc)
    out.print(f"report written to {output}", markup=False)


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
    """Show each loan's path period by period in one scenario cell, with the market."""
    import csv

    import xarray as xr

    from .analysis.headline import axis_point
    from .config import load_config
    from .cube import coords
    from .reference import trace_cell

    try:
        cfg = load_config(config)
        given = _parse_point(at)
        unknown = [lid for lid in loan if lid not in {ln.loan_id for ln in cfg.loans}]
        if unknown:
            raise InputError(f"--loan {', '.join(unknown)}: not in the portfolio; loans are: "
                             + ", ".join(ln.loan_id for ln in cfg.loans))
    except InputError as exc:
        _fail_input(exc)
    grid = xr.Dataset(coords=coords(cfg, ()))
    point = {**cfg.scenario, **axis_point([grid[a.name] for a in cfg.axes]), **given}
    out.print("cell: " + ", ".join(f"{k}={v:g}" for k, v in point.items()), markup=False)
    wanted = tuple(loan) or tuple(ln.loan_id for ln in cfg.loans)
    traces, market, outcomes = trace_cell(cfg.loans, cfg.periods_per_year, point, wanted)
    out.print(_table("secondary market (every loan of the book; price index after the "
                     "period's fire sales)", ["t", "GPUs sold", "overhang", "price index"],
                     [[f"{m['t_years']:.2f}", f"{m['sold_gpus']:,.0f}",
                       f"{m['overhang_gpus']:,.0f}", f"{m['price_index']:.4f}"]
                      for m in market]))

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
            "" if ln.max_ltv is None else f", max {ln.max_ltv:g}")
        out.print(_table(
            f"{loan_id} ({ln.segment}, ${ln.principal / 1e6:,.0f}M, {ln.amortization}, "
            f"{ln.term_years:g}y; {tested})",
            ["t", "rent", "CFADS $M", "DS $M", "DSCR", "cash $M", "owed $M", "fair $M",
             "price", "GPU coll. $M", "crypto $M", "book $M", "LTV mkt", "LTV book",
             "refi coll. $M", "refi CF $M", "default"],
            [[f"{r['t_years']:.2f}", f"{r['rent']:.3f}", _usd_m(r["cfads"]),
              _usd_m(r["debt_service"]), opt(r["dscr"], ".2f"), _usd_m(r["cash"]),
              _usd_m(r["owed"]), _usd_m(r["gpu_fair_value"]), f"{r['price_index']:.3f}",
              _usd_m(r["gpu_collateral"]), _usd_m(r["crypto_collateral"]),
              _usd_m(r["book_value"]), f"{r['ltv_market']:.2f}", opt(r["ltv_book"], ".2f"),
              _usd_m(r["refi_collateral_offer"]), _usd_m(r["refi_cash_flow_offer"]),
              r["default"]] for r in rows], left=0))
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


@app.command()
def bench(
    cells: int = typer.Option(1_000_000, help="Cells of the generated grid (one haircut "
                              "value unless --haircuts), when no --config is given."),
    loans: int = typer.Option(100, help="Random loans in the portfolio."),
    backend: str = typer.Option(
        "auto", help="numpy: time the NumPy backend only; cupy: the xp model on CuPy and "
        "the fused kernel; auto: all three where a GPU is present."),
    config: Path | None = typer.Option(
        None, help="Take the grid and scenario of this run config (its portfolio is "
        "replaced by the random loans)."),
    haircuts: int = typer.Option(1, help="Haircut values of the generated grid."),
    seed: int = typer.Option(0, help="Seed of the random portfolio."),
    engines: str | None = typer.Option(
        None, help="Comma-separated subset of numpy,cupy-xp,fused (overrides --backend)."),
    model: str = typer.Option(
        "v1", help="v1: the loans and scenario with model v1's settings, which the fused "
        "kernel computes; v2: the v2 defaults, market step active (numpy and cupy-xp only)."),
    compile_times: bool = typer.Option(
        True, help="Also time the kernel's first start (empty cache) and warm start."),
    out_path: Path | None = typer.Option(None, "--out", "-o",
                                         help="Write the results as JSON here."),
) -> None:
    """Time the NumPy backend, the xp model on CuPy and the fused kernel on one grid."""
    from .backend import resolve_backend
    from .bench import ENGINES, run_bench, write_results
    from .errors import BackendUnavailable

    if engines is not None:
        chosen = tuple(e.strip() for e in engines.split(",") if e.strip())
        unknown = [e for e in chosen if e not in ENGINES]
        if unknown or not chosen:
            err.print(f"error: --engines {engines}: each must be one of {', '.join(ENGINES)}",
                      markup=False)
            raise typer.Exit(2)
        wanted = "cupy" if any(e != "numpy" for e in chosen) else "numpy"
    else:
        chosen = None
        wanted = backend
    from .bench import MODELS

    if model not in MODELS:
        err.print(f"error: --model {model}: must be one of {', '.join(MODELS)}", markup=False)
        raise typer.Exit(2)
    if model != "v1" and chosen is not None and "fused" in chosen:
        err.print(f"error: --model {model}: the fused kernel computes model v1 only; bench it "
                  "with --model v1, or choose --engines numpy,cupy-xp", markup=False)
        raise typer.Exit(2)
    if min(cells, loans, haircuts) < 1:
        err.print("error: --cells, --loans and --haircuts must be >= 1", markup=False)
        raise typer.Exit(2)
    try:
        resolved = resolve_backend(wanted)
    except BackendUnavailable as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    if chosen is None:
        chosen = ("numpy",) if resolved.name == "numpy" else (
            ("cupy-xp", "fused") if backend == "cupy" else ENGINES)
        if model != "v1":  # the fused kernel computes model v1 only
            chosen = tuple(e for e in chosen if e != "fused")
    if resolved.note:
        err.print(resolved.note, markup=False)
    try:
        results = run_bench(loans, cells, config, chosen, seed, haircuts,
                            log=lambda line: out.print(line, markup=False),
                            compile_timing=compile_times, model=model)
    except InputError as exc:
        _fail_input(exc)
    if out_path is not None:
        out.print(f"results: {write_results(results, out_path)}", markup=False)


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
