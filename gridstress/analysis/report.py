"""One self-contained HTML report of a cube: tables, figures, config, provenance.

Summary (base and severe scenarios, default rate by trigger, what the thin
resale market costs, each loan's outcome), the loss surface with contours at
several loss levels, the default triggers along deflation, the lowest market
price index, the deflation frontier, reverse stress at loss rates above the
base scenario's, scenario-weighted tail risk with the weight on the grid's
edge cells, what each loan should pay (a cube with per-loan outputs),
provenance and config.

Figures are embedded as base64 PNG and the styles inline, so the file opens
offline in any browser and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ..variables import TRIGGERS
from .defaults import PRICE_TABLE, price_cell
from .frontier import DEFAULT_THRESHOLD, DEFAULT_VAR, frontier, frontier_table, grid_floor
from .headline import scenario_point
from .plot import facets, frontier_figure, heatmap, path_figure, spread_figure, trigger_figure
from .price import PER_LOAN_HINT, PORTFOLIO, Pricing, price
from .reverse import ReverseStress, reverse_stress, targets_above
from .risk import RiskRow, describe_marginal, marginals, risk
from .summary import (
    PER_LOAN_VARS,
    PRICE_RHO,
    LoanResult,
    Summary,
    can_price,
    cube_config,
    summary,
)

PROVENANCE = (
    "name",
    "model_version",
    "gridstress_version",
    "backend",
    "device",
    "engine",
    "created",
    "config_sha256",
    "portfolio_sha256",
    "n_loans",
    "total_principal_usd",
)
#: Loss rates at which the loss surface carries contour lines.
CONTOURS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 3px solid #b3202a; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f1ece4; }
td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 13px; }
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _num(value: Any, kind: str = "g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "usd":
        return f"${value / 1e6:,.1f}M"
    if kind == "bp":
        return f"{value:,.0f} bp"
    if kind == "prob":
        return f"{value:.3g}"
    if kind == "ratio":
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
    def cells(tag, values):
        return "".join(
            f"<{tag}{' class=l' if i < left else ''}>{v}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', [html.escape(h) for h in header])}</tr>{body}</table>"


def _point(point: Mapping[str, float]) -> str:
    return html.escape(", ".join(f"{k}={v:g}" for k, v in point.items()))


def _summary_html(s: Summary) -> str:
    h = s.headline
    rows = []
    for label in ("base", "severe"):
        v = s.scenarios[label]
        rows.append(
            [
                label,
                _point(s.points[label]),
                _num(v["loss"], "usd"),
                _num(v["loss_rate"], "pct"),
                _num(v["default_rate"], "pct"),
                _num(v["recovery_rate"], "pct"),
                _num(v["breakeven_spread_bps"], "bp"),
                _num(v.get("market_price_min"), "ratio"),
            ]
        )
    segments = [
        [
            html.escape(k),
            _num(v, "usd"),
            _num(v / s.total_principal if s.total_principal else math.nan, "pct"),
        ]
        for k, v in s.loss_by_segment.items()
    ]
    parts = [
        "<h2>Summary</h2>",
        f"<p>Worst cell: loss rate {_num(h.worst_loss_rate, 'pct')} at {_point(h.worst_cell)}."
        f" Cells with any default: {h.default_share:.1%} of {h.n_cells:,}.</p>",
        _table(
            [
                "scenario",
                "cell",
                "loss",
                "loss rate",
                "default rate",
                "recovery rate",
                "breakeven spread",
                "lowest market price",
            ],
            rows,
            left=2,
        ),
        "<p>Loss by segment at the base scenario:</p>",
        _table(["segment", "loss", "share of total principal"], segments, left=1),
        f"<p>Breakeven spread at the base scenario {_num(s.breakeven_spread_bps, 'bp')} "
        f"against the portfolio's principal-weighted spread "
        f"{_num(s.actual_spread_bps, 'bp')}: cushion {_num(s.spread_cushion_bps, 'bp')}.</p>",
    ]
    if s.by_trigger:
        parts += [
            "<h3>Default rate by trigger</h3>",
            '<p class="note">Defaulted principal over total principal, by the trigger '
            "that caused each default (the first of payment, covenant, ltv, maturity "
            "when several fire in the same period).</p>",
            _table(
                ["scenario", *TRIGGERS, "all"],
                [
                    [label, *(_num(r[t], "pct") for t in TRIGGERS), _num(sum(r.values()), "pct")]
                    for label, r in s.by_trigger.items()
                ],
                left=1,
            ),
        ]
    if s.market:
        parts += [
            "<h3>What the thin resale market costs</h3>",
            '<p class="note">The loss of each scenario cell, with defaulted borrowers\' '
            "GPUs sold into the secondary market as configured, against the same cell "
            "with a deep market (market_depth_gpus: .inf) where fire sales move no "
            "price.</p>",
            _table(
                [
                    "scenario",
                    "loss",
                    "loss in a deep market",
                    "extra loss",
                    "default rate",
                    "default rate in a deep market",
                ],
                [
                    [
                        label,
                        _num(m.loss, "usd"),
                        _num(m.loss_deep, "usd"),
                        _num(m.extra_loss, "usd"),
                        _num(m.default_rate, "pct"),
                        _num(m.default_rate_deep, "pct"),
                    ]
                    for label, m in s.market.items()
                ],
                left=1,
            ),
        ]
    if s.loans:
        for label, results in s.loans.items():
            parts += [
                f"<h3>Loans at the {label} scenario ({_point(s.points[label])})</h3>",
                _loans_table(results),
            ]
    return "\n".join(parts)


def _loans_table(results: Sequence[LoanResult]) -> str:
    rows = [
        [
            html.escape(r.loan_id),
            html.escape(r.segment),
            _num(r.principal, "usd"),
            "repaid" if r.default_years is None else f"{r.default_years:g} y",
            html.escape(r.trigger or ""),
            _num(r.ead, "usd"),
            _num(r.recovery, "usd"),
            _num(r.loss, "usd"),
        ]
        for r in results
    ]
    return _table(
        ["loan", "segment", "principal", "default", "trigger", "EAD", "recovery", "loss"],
        rows,
        left=2,
    )


def _frontier_html(ds: xr.Dataset, line: xr.DataArray, max_columns: int = 10) -> str:
    central = scenario_point(ds, "central")
    others = [str(d) for d in line.dims if d not in ("crypto_drawdown", "haircut")]
    table = frontier_table(line, ds)
    n = table.sizes["haircut"]
    keep = np.unique(np.linspace(0, n - 1, min(n, max_columns)).round().astype(int))
    table = table.isel(haircut=keep)
    header = ["crypto_drawdown \\ haircut", *[f"{h:g}" for h in table["haircut"].values]]
    floor = grid_floor(ds, line)

    def shown(v: float) -> str:
        if not np.isfinite(v):
            return "never"
        return f"&le; {_num(v)}" if v == floor else _num(v)

    rows = [
        [f"{c:g}", *[shown(float(v)) for v in row]]
        for c, row in zip(table["crypto_drawdown"].values, table.values)
    ]
    note = (
        f"Smallest deflation at which {line.attrs['var']} > {line.attrs['threshold']:g}, "
        'interpolated between grid points; "never": not on the grid; '
        f'"\u2264 {floor:g}": already at the grid\'s lowest deflation.'
    )
    if others:
        note += f" Other axes at their central values ({_point({d: central[d] for d in others})})."
    if len(keep) < n:
        note += f" {len(keep)} of {n} haircut values shown."
    return f'<p class="note">{html.escape(note)}</p>' + _table(header, rows)


def _reverse_html(rs: ReverseStress) -> str:
    def rows(cells):
        return [
            [
                str(i + 1),
                _point(c.point),
                _num(c.loss_rate, "pct"),
                f"{c.distance:.3f}",
                _num(c.probability, "prob"),
            ]
            for i, c in enumerate(cells)
        ]

    header = ["#", "cell", "loss rate", "distance", "probability"]
    if not rs.nearest:
        return f"<p>No cell reaches a loss rate of {rs.target:.2%}.</p>"
    return "\n".join(
        [
            f"<p>{rs.n_breaking:,} of {rs.n_cells:,} cells reach a loss rate of "
            f"{rs.target:.2%}; their total probability (rho = {rs.rho:g}) is "
            f"{rs.breaking_probability:.3g}.</p>",
            "<h4>Least severe breaking cells (nearest to the central scenario)</h4>",
            _table(header, rows(rs.nearest), left=2),
            "<h4>Most probable breaking cells</h4>",
            _table(header, rows(rs.probable), left=2),
        ]
    )


def _edges(edges: Mapping[str, tuple[float, float]]) -> list[str]:
    return [f"{100 * low:.3g}% / {100 * high:.3g}%" for low, high in edges.values()]


def _risk_html(rows: Sequence[RiskRow], dists: Mapping[str, Any]) -> str:
    body = [
        [
            f"{r.rho:g}",
            *(_num(v, "pct") for v in (r.expected_loss, r.var95, r.es95, r.var99, r.es99)),
            *_edges(r.edges),
        ]
        for r in rows
    ]
    axes = list(rows[0].edges) if rows else []
    described = "; ".join(f"{axis} {describe_marginal(d)}" for axis, d in dists.items())
    return "\n".join(
        [
            f'<p class="note">Loss as a share of total principal (loss_rate). Marginals: '
            f"{html.escape(described)}; Gaussian copula between deflation and crypto_drawdown "
            "with correlation rho; other axes independent. No probability is dropped: the "
            "cells at each end of an axis also carry every scenario beyond the grid, and the "
            "weights add up to 1. The edge columns give the weight on an axis's first and "
            "last grid value (low / high); a large share says the grid is too narrow for "
            "the marginals, and the tail beyond it is priced at the edge value.</p>",
            _table(
                ["rho", "expected loss", "VaR 95%", "ES 95%", "VaR 99%", "ES 99%"]
                + [f"{axis} edges" for axis in axes],
                body,
            ),
        ]
    )


def _price_html(pricing: Pricing | None, problem: str | None = None) -> str:
    """The section "What each loan should pay": the price table and the figure, or
    what the cube lacks for them."""
    if pricing is None:
        text = problem or PER_LOAN_HINT
        text = html.escape(text[0].upper() + text[1:])
        return "<p>" + re.sub(r"`([^`]*)`", r"<code>\1</code>", text) + ".</p>"
    book = pricing.book[0]
    rows = pricing.at(book.rho)

    body = [
        [html.escape(price_cell(r[col], kind)) for _, col, kind in PRICE_TABLE]
        for r in rows.to_dict("records")
    ]
    worst = pricing.most_underpriced(book.rho)
    verdict = ""
    if worst is not None and worst["cushion_bps"] < 0:
        verdict = (
            f" The most underpriced loan is {html.escape(str(worst['loan_id']))}: it needs "
            f"{worst['required_bps']:,.0f} bp a year and pays {worst['actual_bps']:,.0f} bp."
        )
    loans = rows[rows["loan_id"] != PORTFOLIO]
    return "\n".join(
        [
            f'<p class="note">At rho = {book.rho:g}: each loan\'s expected loss as a yearly '
            "spread over its weighted average life (EL bp), plus the cost of the capital "
            "it uses (its Euler share of the book's expected shortfall at "
            f"{100 * book.confidence:g}% beyond its expected loss, at "
            f"{100 * pricing.capital_cost:g}% a year: capital bp), against the spread it "
            "carries; cushion = actual - required, most underpriced first. "
            "gridstress price CUBE gives it at any rho, confidence and capital cost.</p>",
            f"<p>{html.escape(book.line())}.{verdict}</p>",
            _png(spread_figure(rows, f"required against actual spread at rho={book.rho:g}")),
            _table([h for h, _, _ in PRICE_TABLE], body, left=2),
            f'<p class="note">{len(loans)} loans; the book\'s expected shortfall '
            f"{_num(book.es, 'usd')} against {_num(float(loans['standalone_es'].sum()), 'usd')}"
            " for the loans on their own: the diversification the book gets.</p>",
        ]
    )


def render_report(
    ds: xr.Dataset,
    frontier_var: str = DEFAULT_VAR,
    threshold: float = DEFAULT_THRESHOLD,
    loss_rates: Sequence[float] = (),
    rhos: Sequence[float] = (0.0, 0.5, 0.9),
    reverse_rho: float = 0.5,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The report of a cube as one HTML document (a string).

    ``loss_rates`` are the reverse-stress targets; by default those of
    :func:`.reverse.targets_above` the base scenario's loss rate.
    """
    pricing = price(ds, [PRICE_RHO], marginals=overrides) if can_price(ds) else None
    s = summary(ds, pricing)
    line = frontier(ds, frontier_var, threshold)
    targets = list(loss_rates) or targets_above(
        s.scenarios["base"]["loss_rate"], s.headline.worst_loss_rate
    )
    stresses = [reverse_stress(ds, t, rho=reverse_rho, overrides=overrides) for t in targets]
    risk_rows = risk(ds, rhos, overrides=overrides)
    problem = None
    if pricing is None and set(PER_LOAN_VARS) <= set(ds.data_vars):
        problem = (  # per-loan outputs, but no config of this model version to read back
            "the cube embeds no run config of this model version: price needs its loans' "
            "principal, schedule and spread"
        )
    figures = [
        heatmap(
            ds,
            "loss_rate",
            "deflation",
            "crypto_drawdown",
            frontier_var=frontier_var,
            threshold=threshold,
            contours=CONTOURS,
        ),
        facets(
            ds,
            "loss_rate",
            "deflation",
            "crypto_drawdown",
            "haircut",
            frontier_var=frontier_var,
            threshold=threshold,
        ),
        frontier_figure(line, ds),
    ]
    market_html = ""
    if "market_price_min" in ds.data_vars:
        lowest = float(ds["market_price_min"].min())
        if lowest < 1.0:
            market_html = "\n".join(
                [
                    "<h2>Secondary market</h2>",
                    f'<p class="note">Lowest secondary-market price index of each cell over the '
                    f"horizon (1: no fire sale moved the price); its lowest on the grid is "
                    f"{lowest:.3f}. Defaulted borrowers' GPUs are sold into one market, so each "
                    "default marks down every other fleet's collateral.</p>",
                    _png(
                        heatmap(
                            ds,
                            "market_price_min",
                            "deflation",
                            "crypto_drawdown",
                            frontier_var=frontier_var,
                            threshold=threshold,
                        )
                    ),
                ]
            )
        else:
            market_html = (
                "<h2>Secondary market</h2><p>No fire sale moved the resale price "
                "in any cell (a deep market: market_depth_gpus .inf).</p>"
            )
    trigger_html = ""
    if "default_rate_by_trigger" in ds.data_vars:
        trigger_html = "<h2>Default triggers</h2>" + _png(trigger_figure(ds))
    if targets:
        reverse_html = "\n".join(
            f"<h3>Loss rate of {rs.target:.2%}</h3>" + _reverse_html(rs) for rs in stresses
        )
    else:
        reverse_html = "<p>No cell loses more than the base scenario.</p>"
    provenance = [[html.escape(k), _num(ds.attrs.get(k, "n/a"))] for k in PROVENANCE]
    title = html.escape(f"gridstress report: {ds.attrs.get('name', 'cube')}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        _summary_html(s),
        "<h2>Loss surface</h2>",
        '<p class="note">Contour lines at loss rates of '
        + ", ".join(f"{c:.0%}" for c in CONTOURS)
        + "; dashed: the deflation frontier.</p>",
        _png(figures[0]),
        _png(figures[1]),
        trigger_html,
        market_html,
        _paths_html(ds),
        "<h2>Deflation frontier</h2>",
        _png(figures[2]),
        _frontier_html(ds, line),
        "<h2>Reverse stress</h2>",
        f'<p class="note">Targets above the base scenario\'s loss rate of '
        f"{s.scenarios['base']['loss_rate']:.2%}.</p>"
        if not loss_rates
        else "",
        reverse_html,
        "<h2>Scenario weights: expected loss and tail risk</h2>",
        _risk_html(risk_rows, marginals(ds, overrides)),
        "<h2>What each loan should pay</h2>",
        _price_html(pricing, problem),
        "<h2>Provenance</h2>",
        _table(["attribute", "value"], provenance, left=2),
        "<h2>Config</h2>",
        f"<pre>{html.escape(ds.attrs.get('config', ''))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _paths_html(ds: xr.Dataset) -> str:
    """The scenario paths the cube was run on, drawn (nothing when it had none)."""
    config = cube_config(ds)
    if config is None or not config.paths:
        return ""
    years = max(loan.term_years for loan in config.loans)
    described = "; ".join(
        f"{name}: {len(points)} points to {points[-1][0]:.3g} years"
        for name, points in config.paths.items()
    )
    return "\n".join(
        [
            "<h2>Scenario paths</h2>",
            f'<p class="note">Every cell was run on these paths ({html.escape(described)}), '
            "read relative to their first point and held flat after the last; deflation "
            "and the crypto drawdown move each cell around them.</p>",
            _png(path_figure(config.paths, years)),
        ]
    )


def write_report(ds: xr.Dataset, path: str | Path, **options: Any) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.write_text(render_report(ds, **options), encoding="utf-8")
    return path
