"""``gridstress summary``, ``frontier`` and ``compare``: a cube's figures as tables.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..analysis.defaults import FRONTIER_THRESHOLD, FRONTIER_VAR
from ..errors import InputError
from ..terminal import check_output
from .display import cell, frame_rows, out, pct, show, usd_m, write_rows
from .options import CUBE_ARGUMENT, FIGURE_SUFFIXES, csv_option, open_cube, say_paths, whole


def summary_tables(s) -> dict[str, list[dict[str, Any]]]:
    """The tables of a summary as rows (for CSV and Excel), by table name."""
    from ..variables import TRIGGERS

    tables: dict[str, list[dict[str, Any]]] = {
        "scenarios": [
            {"scenario": label, "cell": cell(s.points[label]), **v}
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
    if s.pricing is not None:
        tables["price"] = frame_rows(s.pricing.table, blank_nan=True)
    return tables


def price_line(s) -> str | None:
    """The summary's line on what the loans should pay: the most underpriced loan
    (cube with per-loan outputs), or how to get it (a cube without)."""
    if s.pricing is None:
        if s.loans is None:  # a cube of another model version: nothing to price
            return None
        return (
            "what each loan should pay: run the config with --per-loan (or outputs: "
            "{per_loan: true}), then gridstress price CUBE"
        )
    worst = s.most_underpriced
    if worst is None:
        return "no loan gives a spread; gridstress price CUBE says what each should pay"
    book = s.pricing.book[0]
    terms = (
        f"rho={book.rho:g}, capital for the {100 * book.confidence:g}% expected shortfall "
        f"at {100 * s.pricing.capital_cost:g}% a year"
    )
    cushion = float(worst["cushion_bps"])
    who = (
        "most underpriced loan"
        if cushion < 0
        else "every loan is paid for its risk; thinnest cushion"
    )
    return (
        f"{who} ({terms}): {worst['loan_id']}, cushion {cushion:+,.0f} bp (needs "
        f"{worst['required_bps']:,.0f} bp, pays {worst['actual_bps']:,.0f}); "
        "gridstress price CUBE prices every loan"
    )


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
    from ..analysis.summary import PRICE_RHO, can_price
    from ..analysis.summary import summary as summarise
    from ..variables import TRIGGERS

    check_output(csv_path, (".csv",), "--csv")
    check_output(xlsx_path, (".xlsx",), "--xlsx")
    with open_cube(cube) as ds:
        say_paths(ds)
        out.print(
            f"{ds.attrs.get('name', cube)} (model v{ds.attrs['model_version']}, "
            f"{ds.attrs.get('engine') or ds.attrs.get('backend')} on "
            f"{ds.attrs.get('device')}, {ds.attrs.get('created')})"
        )
        if can_price(ds):
            from ..analysis.price import price

            s = summarise(ds, price(ds, [PRICE_RHO]))
        else:
            s = summarise(ds)
    for line in s.headline.lines():
        out.print(line)
    for label, point in s.points.items():
        out.print(f"{label} scenario: {cell(point)}")
    show(
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
                usd_m(v["loss"]),
                pct(v["loss_rate"]),
                pct(v["default_rate"]),
                pct(v["recovery_rate"]),
                f"{v['breakeven_spread_bps']:,.0f}",
                f"{v.get('market_price_min', float('nan')):.3f}",
            ]
            for label, v in s.scenarios.items()
        ],
    )
    if s.by_trigger:
        show(
            "default rate by trigger (defaulted principal over total)",
            ["scenario", *TRIGGERS],
            [[label, *(pct(r[t]) for t in TRIGGERS)] for label, r in s.by_trigger.items()],
        )
    if s.market:
        show(
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
                    usd_m(m.loss),
                    usd_m(m.loss_deep),
                    usd_m(m.extra_loss),
                    pct(m.default_rate),
                    pct(m.default_rate_deep),
                ]
                for label, m in s.market.items()
            ],
        )
    for label, results in (s.loans or {}).items():
        show(
            f"loans at the {label} scenario ({cell(s.points[label])})",
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
                    usd_m(r.principal),
                    "repaid" if r.default_years is None else f"t={r.default_years:g}",
                    r.trigger or "",
                    usd_m(r.ead),
                    usd_m(r.recovery),
                    usd_m(r.loss),
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
    underpriced = price_line(s)
    if underpriced is not None:
        out.print(underpriced.replace("CUBE", str(cube)))
    tables = summary_tables(s)
    if csv_path is not None:
        columns = list(dict.fromkeys(k for rows in tables.values() for r in rows for k in r))
        write_rows(
            csv_path,
            [
                {"table": name, **{k: r.get(k, "") for k in columns}}
                for name, rows in tables.items()
                for r in rows
            ],
        )
    if xlsx_path is not None:
        from ..terminal import write_xlsx

        write_xlsx(xlsx_path, tables)
        out.print(f"workbook written to {xlsx_path} (sheets: {', '.join(tables)})")


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
    import math

    import numpy as np

    from ..analysis.frontier import frontier as find_frontier
    from ..analysis.frontier import frontier_rows, frontier_table, grid_floor, loan_frontier

    check_output(csv_path, (".csv",), "--csv")
    check_output(plot_path, FIGURE_SUFFIXES, "--plot")
    if max_columns < 1:
        raise InputError(f"--max-columns {max_columns}: must be >= 1")
    with open_cube(cube) as ds:
        say_paths(ds)
        line = find_frontier(ds, var, threshold) if loan is None else loan_frontier(ds, loan)
        grid = frontier_table(line, ds)
        if plot_path is not None:
            from ..analysis.plot import frontier_figure, save

            save(frontier_figure(line, ds), plot_path)
        lowest = grid_floor(ds, line)
    what = f"{var} > {threshold:g}" if loan is None else f"{loan} defaults"
    floor = f"'<=': already at {lowest:g}, the grid's lowest {line.name}"

    def shown(v: float) -> str:
        if math.isnan(v):
            return "-"
        return f"<={v:.3f}" if v == lowest else f"{v:.3f}"

    if "haircut" not in grid.dims:  # a loan's frontier: no haircut changes a default
        show(
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
        show(
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
        write_rows(csv_path, frontier_rows(line))
    if plot_path is not None:
        out.print(f"figure written to {plot_path}")


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
    from ..analysis.compare import compare as compare_cubes
    from ..analysis.compare import largest_change

    check_output(csv_path, (".csv",), "--csv")
    check_output(plot_path, FIGURE_SUFFIXES, "--plot")
    names = (str(cube_a), str(cube_b))
    with open_cube(cube_a) as a, open_cube(cube_b) as b:
        say_paths(a)
        say_paths(b)
        c = compare_cubes(a, b, var, names)
        if plot_path is not None:
            from ..analysis.plot import difference_figure, save

            save(difference_figure(c.difference, a, names=names), plot_path)
        labels = (a.attrs.get("name", "A"), b.attrs.get("name", "B"))
    out.print(f"A: {cube_a} ({labels[0]}); B: {cube_b} ({labels[1]})")
    for label, point in c.points.items():
        out.print(f"{label} scenario: {cell(point)}")

    def shown(figure: str, value: float, delta: bool = False) -> str:
        sign = "+" if delta and value > 0 else ""
        if figure.startswith("loss at"):
            return f"{sign}{value / 1e6:,.1f}M"
        if figure.startswith("breakeven"):
            return f"{sign}{value:,.0f} bp"
        return f"{sign}{value:.2%}"

    rows = c.rows()
    show(
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
            out.print(f"largest {word} of {var}: {value:+.4g} at {cell(point)}")
    if csv_path is not None:
        write_rows(csv_path, rows)
    if plot_path is not None:
        out.print(f"figure written to {plot_path}")
