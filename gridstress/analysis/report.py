"""One self-contained HTML report of a cube: tables, figures, config, provenance.

Figures are embedded as base64 PNG and the styles inline, so the file opens
offline in any browser and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .frontier import frontier, frontier_table
from .headline import scenario_point
from .plot import facets, frontier_figure, heatmap
from .reverse import ReverseStress, reverse_stress
from .risk import RiskRow, describe_marginal, marginals, risk
from .summary import Summary, summary

PROVENANCE = ("name", "model_version", "gridstress_version", "backend", "device", "created",
              "config_sha256", "portfolio_sha256", "n_loans", "total_principal_usd")

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
    return f"{value:g}" if isinstance(value, float) else html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
    def cells(tag, values):
        return "".join(f'<{tag}{" class=l" if i < left else ""}>{v}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', [html.escape(h) for h in header])}</tr>{body}</table>"


def _point(point: Mapping[str, float]) -> str:
    return html.escape(", ".join(f"{k}={v:g}" for k, v in point.items()))


def _summary_html(s: Summary) -> str:
    h = s.headline
    rows = []
    for label in ("base", "severe"):
        v = s.scenarios[label]
        rows.append([label, _point(s.points[label]), _num(v["loss"], "usd"),
                     _num(v["loss_rate"], "pct"), _num(v["default_rate"], "pct"),
                     _num(v["recovery_rate"], "pct"), _num(v["breakeven_spread_bps"], "bp")])
    segments = [[html.escape(k), _num(v, "usd"),
                 _num(v / s.total_principal if s.total_principal else math.nan, "pct")]
                for k, v in s.loss_by_segment.items()]
    return "\n".join([
        "<h2>Summary</h2>",
        f"<p>Worst cell: loss rate {_num(h.worst_loss_rate, 'pct')} at {_point(h.worst_cell)}."
        f" Cells with any default: {h.default_share:.1%} of {h.n_cells:,}.</p>",
        _table(["scenario", "cell", "loss", "loss rate", "default rate", "recovery rate",
                "breakeven spread"], rows, left=2),
        "<p>Loss by segment at the base scenario:</p>",
        _table(["segment", "loss", "share of total principal"], segments, left=1),
        f"<p>Breakeven spread at the base scenario {_num(s.breakeven_spread_bps, 'bp')} "
        f"against the portfolio's principal-weighted spread "
        f"{_num(s.actual_spread_bps, 'bp')}: cushion {_num(s.spread_cushion_bps, 'bp')}.</p>",
    ])


def _frontier_html(ds: xr.Dataset, line: xr.DataArray, max_columns: int = 10) -> str:
    central = scenario_point(ds, "central")
    others = [d for d in line.dims if d not in ("crypto_drawdown", "haircut")]
    table = frontier_table(line, ds)
    n = table.sizes["haircut"]
    keep = np.unique(np.linspace(0, n - 1, min(n, max_columns)).round().astype(int))
    table = table.isel(haircut=keep)
    header = ["crypto_drawdown \\ haircut", *[f"{h:g}" for h in table["haircut"].values]]
    rows = [[f"{c:g}", *[_num(float(v)) if np.isfinite(v) else "never" for v in row]]
            for c, row in zip(table["crypto_drawdown"].values, table.values)]
    note = (f"Smallest deflation at which {line.attrs['var']} > {line.attrs['threshold']:g}, "
            "interpolated between grid points; \"never\": not on the grid.")
    if others:
        note += f" Other axes at their central values ({_point({d: central[d] for d in others})})."
    if len(keep) < n:
        note += f" {len(keep)} of {n} haircut values shown."
    return f'<p class="note">{html.escape(note)}</p>' + _table(header, rows)


def _reverse_html(rs: ReverseStress) -> str:
    def rows(cells):
        return [[str(i + 1), _point(c.point), _num(c.loss_rate, "pct"), f"{c.distance:.3f}",
                 _num(c.probability, "prob")] for i, c in enumerate(cells)]

    header = ["#", "cell", "loss rate", "distance", "probability"]
    if not rs.nearest:
        return f"<p>No cell reaches a loss rate of {rs.target:.2%}.</p>"
    return "\n".join([
        f"<p>{rs.n_breaking:,} of {rs.n_cells:,} cells reach a loss rate of "
        f"{rs.target:.2%}; their total probability (rho = {rs.rho:g}) is "
        f"{rs.breaking_probability:.3g}.</p>",
        "<h3>Least severe breaking cells (nearest to the central scenario)</h3>",
        _table(header, rows(rs.nearest), left=2),
        "<h3>Most probable breaking cells</h3>",
        _table(header, rows(rs.probable), left=2),
    ])


def _risk_html(rows: Sequence[RiskRow], dists: Mapping[str, Any]) -> str:
    body = [[f"{r.rho:g}", *(_num(v, "pct") for v in
                             (r.expected_loss, r.var95, r.es95, r.var99, r.es99)),
             f"{r.outside:.3%}"] for r in rows]
    described = "; ".join(f"{axis} {describe_marginal(d)}" for axis, d in dists.items())
    return "\n".join([
        f'<p class="note">Loss as a share of total principal (loss_rate). Marginals: '
        f"{html.escape(described)}; Gaussian copula between deflation and crypto_drawdown "
        "with correlation rho; other axes independent. Weights renormalised on the grid; "
        "the last column is the mass that fell outside it.</p>",
        _table(["rho", "expected loss", "VaR 95%", "ES 95%", "VaR 99%", "ES 99%",
                "mass outside grid"], body),
    ])


def render_report(ds: xr.Dataset, frontier_var: str = "default_rate", threshold: float = 0.0,
                  loss_rate: float = 0.05, rhos: Sequence[float] = (0.0, 0.5, 0.9),
                  reverse_rho: float = 0.5,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The report of a cube as one HTML document (a string)."""
    s = summary(ds)
    line = frontier(ds, frontier_var, threshold)
    rs = reverse_stress(ds, loss_rate, rho=reverse_rho, overrides=overrides)
    risk_rows = risk(ds, rhos, overrides=overrides)
    figures = [
        heatmap(ds, "loss_rate", "deflation", "crypto_drawdown",
                frontier_var=frontier_var, threshold=threshold),
        facets(ds, "loss_rate", "deflation", "crypto_drawdown", "haircut",
               frontier_var=frontier_var, threshold=threshold),
        frontier_figure(line, ds),
    ]
    provenance = [[html.escape(k), _num(ds.attrs.get(k, "n/a"))] for k in PROVENANCE]
    title = html.escape(f"gridstress report: {ds.attrs.get('name', 'cube')}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        _summary_html(s),
        "<h2>Loss surface</h2>", _png(figures[0]), _png(figures[1]),
        "<h2>Deflation frontier</h2>", _png(figures[2]), _frontier_html(ds, line),
        f"<h2>Reverse stress: loss rate of {loss_rate:.2%}</h2>", _reverse_html(rs),
        "<h2>Scenario weights: expected loss and tail risk</h2>",
        _risk_html(risk_rows, marginals(ds, overrides)),
        "<h2>Provenance</h2>", _table(["attribute", "value"], provenance, left=2),
        "<h2>Config</h2>", f"<pre>{html.escape(ds.attrs.get('config', ''))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(ds: xr.Dataset, path: str | Path, **options: Any) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.write_text(render_report(ds, **options), encoding="utf-8")
    return path
