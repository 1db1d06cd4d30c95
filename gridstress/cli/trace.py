"""``gridstress trace``: each loan's path period by period in one scenario cell.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError, did_you_mean
from ..terminal import check_output, write_csv
from .display import cell, describe_paths, out, show, usd_m
from .options import at_option, csv_option, parse_point, run_config


def trace(
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="YAML run config, or a cube (its embedded config is traced)."
    ),
    at: list[str] = at_option(
        "Scenario value NAME=VALUE (repeatable); axes not given take "
        "their central value, other parameters the config's."
    ),
    loan: list[str] = typer.Option([], "--loan", help="Loan id (repeatable; default all)."),
    csv_path: Path | None = csv_option("every period of every loan traced"),
) -> None:
    from ..reference import trace_cell

    check_output(csv_path, (".csv",), "--csv")
    cfg = run_config(config)
    given = parse_point(at)
    ids = [ln.loan_id for ln in cfg.loans]
    unknown = [lid for lid in loan if lid not in ids]
    if unknown:
        raise InputError(
            f"--loan {', '.join(unknown)}: not in the portfolio"
            + did_you_mean(unknown[0], ids)
            + "; loans are: "
            + ", ".join(ids)
        )
    point = {**cfg.scenario, **cfg.reference_point("central"), **given}
    out.print("cell: " + cell(point))
    if cfg.paths:
        out.print("paths: " + describe_paths(cfg.paths))
    # The rent and crypto indexes' factors, where a path or a shock shapes them.
    shaped = bool(cfg.paths) or bool(point.get("generation_shock"))
    wanted = tuple(loan) or tuple(ids)
    traces, market, outcomes = trace_cell(
        cfg.loans, cfg.periods_per_year, point, wanted, paths=cfg.paths
    )
    show(
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
        show(
            f"{loan_id} ({ln.segment}, ${ln.principal / 1e6:,.0f}M, {ln.amortization}, "
            f"{ln.term_years:g}y; {tested})",
            [
                "t",
                *(["rent P", "shock"] if shaped else []),
                "rent",
                *(["crypto Q", "crypto X"] if shaped else []),
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
                    *(
                        [f"{r['rent_path_factor']:.3f}", f"{r['shock_factor']:.3f}"]
                        if shaped
                        else []
                    ),
                    f"{r['rent_index']:.3f}",
                    *(
                        [f"{r['crypto_path_factor']:.3f}", f"{r['crypto_index']:.3f}"]
                        if shaped
                        else []
                    ),
                    usd_m(r["cfads"]),
                    usd_m(r["debt_service"]),
                    opt(r["dscr"], ".2f"),
                    usd_m(r["cash"]),
                    usd_m(r["owed"]),
                    usd_m(r["gpu_fair_value"]),
                    f"{r['price_index']:.3f}",
                    usd_m(r["gpu_collateral"]),
                    usd_m(r["crypto_collateral"]),
                    usd_m(r["book_value"]),
                    f"{r['ltv_market']:.2f}",
                    opt(r["ltv_book"], ".2f"),
                    usd_m(r["refi_collateral_offer"]),
                    usd_m(r["refi_cash_flow_offer"]),
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
