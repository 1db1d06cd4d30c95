"""``gridstress plot`` and ``report``: a cube as figures and as an HTML report.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.defaults import FRONTIER_THRESHOLD, FRONTIER_VAR
from ..terminal import check_output
from .display import out
from .options import (
    CUBE_ARGUMENT,
    FIGURE_SUFFIXES,
    MARGINALS_OPTION,
    at_option,
    open_cube,
    parse_point,
    read_marginals,
    say_paths,
)


def plot(
    cube: Path = CUBE_ARGUMENT,
    var: str = typer.Option("loss_rate", help="Variable shown."),
    x: str = typer.Option("deflation", help="Axis across."),
    y: str = typer.Option("crypto_drawdown", help="Axis up."),
    at: list[str] = at_option(
        "Fixed value NAME=VALUE of another axis (repeatable; nearest grid point; default central)."
    ),
    facet: str | None = typer.Option(None, help="One panel per value of this axis (e.g. haircut)."),
    frontier_var: str = typer.Option(FRONTIER_VAR, help="Variable of the frontier drawn."),
    threshold: float = typer.Option(FRONTIER_THRESHOLD, help="Threshold of the frontier drawn."),
    output: Path = typer.Option(..., "--output", "-o", help="Figure file (.png, .svg or .pdf)."),
) -> None:
    check_output(output, FIGURE_SUFFIXES, "--output")
    import matplotlib

    matplotlib.use("Agg")
    from ..analysis.plot import facets, heatmap, save

    point = parse_point(at)
    with open_cube(cube) as ds:
        say_paths(ds)
        if facet is None:
            fig = heatmap(ds, var, x, y, point, frontier_var, threshold)
        else:
            fig = facets(ds, var, x, y, facet, point, frontier_var, threshold)
        save(fig, output)
    out.print(f"figure written to {output}")


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
    check_output(output, (".html", ".htm"), "--output")
    import matplotlib

    matplotlib.use("Agg")
    from ..analysis.report import write_report

    with open_cube(cube) as ds:
        say_paths(ds)
        write_report(
            ds,
            output,
            frontier_var=frontier_var,
            threshold=threshold,
            loss_rates=loss_rate,
            rhos=rho,
            reverse_rho=reverse_rho,
            overrides=read_marginals(marginals),
        )
    out.print(f"report written to {output}")
