"""``gridstress reverse`` and ``risk``: a cube's cells weighted by how likely they are.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ..terminal import check_output
from .display import cell, out, show, write_rows
from .options import (
    CUBE_ARGUMENT,
    MARGINALS_OPTION,
    csv_option,
    open_cube,
    read_marginals,
    say_paths,
    whole,
)


def edge_pair(low: float, high: float) -> str:
    """``0.0483% / 2.46%``: an axis's edge weights as percentages."""
    return f"{100 * low:.3g}% / {100 * high:.3g}%"


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
    from ..analysis.reverse import reverse_stress

    check_output(csv_path, (".csv",), "--csv")
    if count < 1:
        raise InputError(f"--count {count}: must be >= 1")
    with open_cube(cube) as ds:
        say_paths(ds)
        rs = reverse_stress(ds, loss_rate, count, rho, read_marginals(marginals))
    out.print(
        f"{rs.n_breaking:,} of {rs.n_cells:,} cells reach a loss rate of "
        f"{rs.target:.2%}; their probability (rho={rs.rho:g}): "
        f"{rs.breaking_probability:.4g}"
    )
    base = rs.base_line()
    if base is not None:
        out.print(base)
    for ranking, cells in (("nearest", rs.nearest), ("probable", rs.probable)):
        title = (
            "least severe (distance from the central scenario)"
            if ranking == "nearest"
            else "most probable"
        )
        show(
            title,
            ["#", "cell", "loss rate", "distance", "probability"],
            [
                [
                    str(i),
                    cell(c.point),
                    f"{c.loss_rate:.2%}",
                    f"{c.distance:.3f}",
                    f"{c.probability:.3g}",
                ]
                for i, c in enumerate(cells, 1)
            ],
            left=0,
        )
    if csv_path is not None:
        write_rows(csv_path, rs.rows())


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
    from ..analysis.risk import describe_marginal
    from ..analysis.risk import marginals as marginal_dists
    from ..analysis.risk import risk as tail_risk

    check_output(csv_path, (".csv",), "--csv")
    with open_cube(cube) as ds:
        say_paths(ds)
        overrides = read_marginals(marginals)
        rows = tail_risk(ds, rho, overrides=overrides)
        dists = marginal_dists(ds, overrides)
    for axis, dist in dists.items():
        out.print(f"{axis} ~ {describe_marginal(dist)}")
    axes = list(rows[0].edges) if rows else []
    show(
        "loss rate (share of total principal) under scenario weights; edge weights: the "
        "weight on an axis's first / last grid value, which also carries every scenario "
        "beyond it",
        ["rho", "expected", "VaR 95%", "ES 95%", "VaR 99%", "ES 99%"]
        + [f"{axis} edges" for axis in axes],
        [
            [
                f"{r.rho:g}",
                *(f"{v:.2%}" for v in (r.expected_loss, r.var95, r.es95, r.var99, r.es99)),
                *(edge_pair(*r.edges[axis]) for axis in axes),
            ]
            for r in rows
        ],
        left=0,
    )
    if csv_path is not None:
        write_rows(csv_path, [r.csv_row() for r in rows])
