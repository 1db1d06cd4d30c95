"""``gridstress price``: what each loan should pay for its expected loss and capital.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.defaults import PRICE_TABLE, price_cell
from ..errors import InputError
from ..terminal import check_output
from .display import frame_rows, out, show, write_rows
from .options import (
    CUBE_ARGUMENT,
    MARGINALS_OPTION,
    csv_option,
    open_cube,
    read_marginals,
    say_paths,
)


def edge_line(edges: dict[str, tuple[float, float]]) -> str:
    """``deflation 0.0475%/2.5%, ...``: the weight on each axis's first and last cells."""
    return ", ".join(
        f"{axis} {100 * low:.3g}%/{100 * high:.3g}%" for axis, (low, high) in edges.items()
    )


def price(
    cube: Path = CUBE_ARGUMENT,
    rho: list[float] = typer.Option(
        [0.5],
        "--rho",
        help="Correlation of the Gaussian copula of deflation and crypto drawdown "
        "(repeatable; a table each).",
    ),
    confidence: float = typer.Option(
        0.99, help="Confidence of the expected shortfall the capital covers, in (0, 1)."
    ),
    capital_cost: float = typer.Option(
        0.10,
        help="Yearly return the risk capital must earn above the risk-free rate (>= 0).",
    ),
    marginals: Path | None = MARGINALS_OPTION,
    csv_path: Path | None = csv_option(
        "one row per (rho, loan) and a portfolio row per rho (the columns of docs/analysis.md)"
    ),
    xlsx_path: Path | None = typer.Option(
        None,
        "--xlsx",
        help="Also write the tables as an Excel workbook here, a worksheet per rho (.xlsx).",
    ),
) -> None:
    from ..analysis.price import PORTFOLIO
    from ..analysis.price import price as price_loans

    check_output(csv_path, (".csv",), "--csv")
    check_output(xlsx_path, (".xlsx",), "--xlsx")
    if not 0 < confidence < 1:
        raise InputError(f"--confidence {confidence:g}: must be in (0, 1)")
    if not capital_cost >= 0:
        raise InputError(f"--capital-cost {capital_cost:g}: must be >= 0")
    overrides = read_marginals(marginals)
    with open_cube(cube) as ds:
        say_paths(ds)
        result = price_loans(ds, list(dict.fromkeys(rho)), confidence, capital_cost, overrides)
        name = ds.attrs.get("name", cube)
    book = result.book[0]
    n_loans = int((result.at(book.rho)["loan_id"] != PORTFOLIO).sum())
    out.print(
        f"{name}: {n_loans} loans, ${book.total_principal / 1e6:,.1f}M of principal; capital "
        f"for the expected shortfall at {100 * confidence:g}%, costing "
        f"{100 * capital_cost:g}% a year"
    )
    for line in result.book:
        out.print(f"{line.line()}; weight on the edge cells: {edge_line(line.edges)}")
        rows = result.at(line.rho)
        show(
            f"what each loan should pay at rho={line.rho:g} (most underpriced first; "
            "cushion = actual - required spread)",
            [header for header, _, _ in PRICE_TABLE],
            [
                [price_cell(row[col], kind) for _, col, kind in PRICE_TABLE]
                for row in frame_rows(rows)
            ],
            left=2,
        )
        worst = result.most_underpriced(line.rho)
        if worst is not None and worst["cushion_bps"] < 0:
            out.print(
                f"most underpriced: {worst['loan_id']}, {-worst['cushion_bps']:,.1f} bp a year "
                f"short (needs {worst['required_bps']:,.1f} bp, pays {worst['actual_bps']:,.1f})"
            )
        elif worst is not None:
            out.print("every loan that gives a spread is paid for its risk")
    if csv_path is not None:
        write_rows(csv_path, frame_rows(result.table))
    if xlsx_path is not None:
        from ..terminal import write_xlsx

        sheets = {
            f"rho {line.rho:g}": frame_rows(result.at(line.rho), blank_nan=True)
            for line in result.book
        }
        write_xlsx(xlsx_path, sheets)
        out.print(f"workbook written to {xlsx_path} (sheets: {', '.join(sheets)})")
