"""Figures of a cube: heatmaps with the frontier drawn over them, small multiples.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no
global state, any backend); :func:`save` writes PNG, SVG or PDF. Axis and
colour bar labels come from the cube's ``long_name`` and ``units`` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from ..errors import InputError
from ..variables import TRIGGERS
from .frontier import DEFAULT_THRESHOLD, DEFAULT_VAR, frontier
from .headline import grid_dims, scenario_point
from .select import nearest_point, require_axis, require_var

FORMATS = (".png", ".svg", ".pdf")
FRONTIER_AXIS = "deflation"
TRIGGER_COLOURS = {
    "payment": "#b3202a",
    "covenant": "#e08214",
    "ltv": "#5e3c99",
    "maturity": "#2c7fb8",
}


def label(coord: xr.DataArray) -> str:
    """``long_name [units]`` of a coordinate or variable (its name without them)."""
    name = coord.attrs.get("long_name", coord.name)
    units = coord.attrs.get("units")
    return f"{name} [{units}]" if units else str(name)


def fixed_point(
    ds: xr.Dataset, free: list[str], at: Mapping[str, float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Grid values of the axes not in ``free``: nearest to ``at``, else central.

    Returns ``(point, asked)``: the grid point and the values asked for in
    ``at`` (for titles that say what was rounded).
    """
    at = dict(at or {})
    for name in at:
        if name in free:
            raise InputError(f"--at {name}: is plotted, it cannot also be fixed")
    chosen = nearest_point(ds, at)
    central = scenario_point(ds, "central")
    point = {d: chosen.get(d, central[d]) for d in grid_dims(ds) if d not in free}
    return point, at


def _describe(point: Mapping[str, float], asked: Mapping[str, float]) -> str:
    parts = []
    for name, value in point.items():
        text = f"{name}={value:g}"
        if name in asked:
            text += f" (grid point nearest {asked[name]:g})"
        elif name not in asked:
            text += " (central)"
        parts.append(text)
    return ", ".join(parts)


def _check_xy(ds: xr.Dataset, var: str, x: str, y: str) -> xr.DataArray:
    da = require_var(ds, var)
    require_axis(ds, x, "--x")
    require_axis(ds, y, "--y")
    if x == y:
        raise InputError(f"--x and --y are both {x}: choose two different axes")
    return da


def _draw_frontier(
    ax, ds: xr.Dataset, point: Mapping[str, float], x: str, y: str, var: str, threshold: float
) -> bool:
    """Draw the deflation frontier on a heatmap whose x or y is deflation."""
    if FRONTIER_AXIS not in (x, y):
        return False
    other = y if x == FRONTIER_AXIS else x
    line = frontier(ds.sel(point), var, threshold, FRONTIER_AXIS)
    along, edge = line[other].values, line.values
    xs, ys = (edge, along) if x == FRONTIER_AXIS else (along, edge)
    ax.plot(xs, ys, color="white", lw=2.5, solid_capstyle="round")
    ax.plot(xs, ys, color="black", lw=1.2, ls="--", label=f"frontier: {var} > {threshold:g}")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    return True


def _finite_axis(ds: xr.Dataset, name: str, option: str) -> np.ndarray:
    values = np.asarray(ds[name].values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(
            f"{option} {name}: the axis holds non-finite values "
            f"({', '.join(f'{v:g}' for v in values)}) and cannot be drawn as "
            "a coordinate; fix it with --at or draw it with --facet"
        )
    return values


def heatmap(
    ds: xr.Dataset,
    var: str = "loss_rate",
    x: str = "deflation",
    y: str = "crypto_drawdown",
    at: Mapping[str, float] | None = None,
    frontier_var: str = DEFAULT_VAR,
    threshold: float = DEFAULT_THRESHOLD,
    contours: Sequence[float] = (),
) -> Figure:
    """Heatmap of ``var`` over axes ``x`` and ``y`` at fixed values of the others.

    Axes not given in ``at`` take their central value; values given are
    rounded to the nearest grid point, and the title says which. When
    ``x`` or ``y`` is deflation, the frontier of ``frontier_var`` over
    ``threshold`` is drawn as a dashed line; ``contours`` draws labelled
    contour lines of ``var`` at those levels (those within its range).
    """
    da = _check_xy(ds, var, x, y)
    require_var(ds, frontier_var, "--frontier-var")
    point, asked = fixed_point(ds, [x, y], at)
    xs, ys = _finite_axis(ds, x, "--x"), _finite_axis(ds, y, "--y")
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    surface = da.sel(point).load().transpose(y, x).values
    mesh = ax.pcolormesh(xs, ys, surface, shading="nearest", cmap="magma_r")
    fig.colorbar(mesh, ax=ax, label=label(da))
    levels = (
        [v for v in sorted(contours) if np.nanmin(surface) < v < np.nanmax(surface)]
        if surface.size
        else []
    )
    if levels and min(surface.shape) > 1:
        lines = ax.contour(xs, ys, surface, levels=levels, colors="white", linewidths=1.0)
        ax.clabel(
            lines,
            fmt=lambda v: f"{v:.0%}" if da.attrs.get("units") == "1" else f"{v:g}",
            fontsize="small",
        )
    _draw_frontier(ax, ds, point, x, y, frontier_var, threshold)
    ax.set_xlabel(label(ds[x]))
    ax.set_ylabel(label(ds[y]))
    where = _describe(point, asked)
    ax.set_title(f"{var}" + (f" at {where}" if where else ""), fontsize="medium")
    return fig


def facets(
    ds: xr.Dataset,
    var: str = "loss_rate",
    x: str = "deflation",
    y: str = "crypto_drawdown",
    facet: str = "haircut",
    at: Mapping[str, float] | None = None,
    frontier_var: str = DEFAULT_VAR,
    threshold: float = DEFAULT_THRESHOLD,
    max_panels: int = 20,
) -> Figure:
    """Small multiples: one heatmap of ``var`` per value of ``facet``, one colour scale.

    With more than ``max_panels`` values, evenly spaced ones are shown
    (the first and last always).
    """
    da = _check_xy(ds, var, x, y)
    require_var(ds, frontier_var, "--frontier-var")
    require_axis(ds, facet, "--facet")
    if facet in (x, y):
        raise InputError(f"--facet {facet}: is plotted on --x or --y")
    point, asked = fixed_point(ds, [x, y, facet], at)
    _finite_axis(ds, x, "--x")
    _finite_axis(ds, y, "--y")
    n = ds.sizes[facet]
    index = np.unique(np.linspace(0, n - 1, min(n, max_panels)).round().astype(int))
    cube = da.sel(point).isel({facet: index}).load()
    ncols = min(5, len(index))
    nrows = math.ceil(len(index) / ncols)
    fig = Figure(figsize=(3.2 * ncols + 1.2, 2.8 * nrows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False))
    norm = Normalize(float(np.nanmin(cube.values)), float(np.nanmax(cube.values)))
    for ax, i in zip(axes.flat, index):
        value = float(ds[facet].values[i])
        panel = cube.sel({facet: value}).transpose(y, x)
        ax.pcolormesh(
            ds[x].values, ds[y].values, panel.values, shading="nearest", cmap="magma_r", norm=norm
        )
        line_at = {**point, facet: value}
        if _draw_frontier(ax, ds, line_at, x, y, frontier_var, threshold):
            ax.get_legend().remove()
        ax.set_title(f"{facet}={value:g}", fontsize="small")
    for ax in axes.flat[len(index) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(label(ds[x]), fontsize="small")
    for ax in axes[:, 0]:
        ax.set_ylabel(label(ds[y]), fontsize="small")
    fig.colorbar(ScalarMappable(norm=norm, cmap="magma_r"), ax=axes, label=label(da))
    where = _describe(point, asked)
    title = f"{var} by {facet}" + (f" at {where}" if where else "")
    if FRONTIER_AXIS in (x, y):
        title += f"; dashed: frontier of {frontier_var} > {threshold:g}"
    if len(index) < n:
        title += f" ({len(index)} of {n} values)"
    fig.suptitle(title, fontsize="medium")
    return fig


def frontier_figure(
    line: xr.DataArray, ds: xr.Dataset, x: str = "crypto_drawdown", hue: str = "haircut"
) -> Figure:
    """The frontier over ``x``, one line per value of ``hue`` (other axes central)."""
    others = [str(d) for d in line.dims if d not in (x, hue)]
    central = scenario_point(ds, "central")
    line = line.sel({d: central[d] for d in others})
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    colours = ScalarMappable(
        norm=Normalize(float(line[hue].min()), float(line[hue].max())), cmap="viridis"
    )
    for value in line[hue].values:
        series = line.sel({hue: value})
        ax.plot(series[x].values, series.values, color=colours.to_rgba(value), lw=1.5)
    fig.colorbar(colours, ax=ax, label=label(ds[hue]))
    ax.set_xlabel(label(ds[x]))
    ax.set_ylabel(f"frontier {label(ds[FRONTIER_AXIS])}")
    lo, hi = float(ds[FRONTIER_AXIS].min()), float(ds[FRONTIER_AXIS].max())
    ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    ax.set_title(
        f"smallest {FRONTIER_AXIS} at which {line.attrs.get('var')} > "
        f"{line.attrs.get('threshold', 0):g} (gaps: never on the grid)",
        fontsize="medium",
    )
    return fig


def difference_figure(
    diff: xr.DataArray,
    ds: xr.Dataset,
    x: str = "deflation",
    y: str = "crypto_drawdown",
    names: tuple[str, str] = ("A", "B"),
) -> Figure:
    """Heatmap of a difference of two cubes (B - A) over ``x`` and ``y``, the other
    axes at their central values, on a colour scale centred on zero."""
    point = {d: v for d, v in scenario_point(ds, "central").items() if d not in (x, y)}
    surface = diff.sel(point).transpose(y, x).values
    xs, ys = _finite_axis(ds, x, "--x"), _finite_axis(ds, y, "--y")
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    span = float(np.nanmax(np.abs(surface))) if np.isfinite(surface).any() else 0.0
    norm = TwoSlopeNorm(0.0, -span, span) if span > 0 else Normalize(-1e-12, 1e-12)
    mesh = ax.pcolormesh(xs, ys, surface, shading="nearest", cmap="RdBu_r", norm=norm)
    fig.colorbar(
        mesh,
        ax=ax,
        label=f"{diff.attrs.get('long_name', diff.name)}"
        + (f" [{diff.attrs['units']}]" if diff.attrs.get("units") else ""),
    )
    ax.set_xlabel(label(ds[x]))
    ax.set_ylabel(label(ds[y]))
    where = _describe(point, {})
    ax.set_title(f"{names[1]} - {names[0]}" + (f" at {where}" if where else ""), fontsize="medium")
    return fig


def trigger_figure(
    ds: xr.Dataset, along: str = "deflation", at: Mapping[str, float] | None = None
) -> Figure:
    """The default rate by trigger along ``along`` (stacked), the other axes at ``at``
    or their central values: which trigger breaks the book as stress rises."""
    if "default_rate_by_trigger" not in ds.data_vars:
        raise InputError("the cube has no default_rate_by_trigger (a model v1 cube?)")
    point, asked = fixed_point(ds, [along], at)
    rates = ds["default_rate_by_trigger"].sel(point).transpose(along, "trigger").load()
    xs = _finite_axis(ds, along, "--x")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.stackplot(
        xs,
        *[rates.sel(trigger=t).values for t in TRIGGERS],
        labels=TRIGGERS,
        colors=[TRIGGER_COLOURS[t] for t in TRIGGERS],
        alpha=0.85,
    )
    ax.set_xlabel(label(ds[along]))
    ax.set_ylabel("defaulted principal over total principal [1]")
    ax.set_xlim(xs.min(), xs.max())
    ax.set_ylim(0, max(0.05, float(rates.sum("trigger").max()) * 1.1))
    ax.legend(loc="upper left", fontsize="small", title="trigger")
    where = _describe(point, asked)
    ax.set_title("default rate by trigger" + (f" at {where}" if where else ""), fontsize="medium")
    return fig


#: Colours of the required spread's parts and of the actual spread.
SPREAD_COLOURS = {"el_bps": "#b3202a", "capital_bps": "#e08214", "actual_bps": "#222222"}


def spread_figure(table, title: str = "") -> Figure:
    """Actual against required spread per loan, from the rows of one rho of a price
    table (:meth:`.price.Pricing.at`, most underpriced first, the portfolio last):
    the required spread a bar of its expected-loss part (``el_bps``) and its
    capital part (``capital_bps``, drawn back from the first where it is
    negative), the actual spread a mark (none for a loan without a spread)."""
    rows = table.reset_index(drop=True)
    n = len(rows)
    fig = Figure(figsize=(8, 1.2 + 0.42 * max(n, 1)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]  # the first row at the top
    el = rows["el_bps"].to_numpy(dtype=float)
    capital = rows["capital_bps"].to_numpy(dtype=float)
    actual = rows["actual_bps"].to_numpy(dtype=float)
    ax.barh(y, el, color=SPREAD_COLOURS["el_bps"], label="expected loss (el_bps)")
    ax.barh(y, capital, left=el, color=SPREAD_COLOURS["capital_bps"], label="capital (capital_bps)")
    priced = np.isfinite(actual)
    ax.scatter(
        actual[priced],
        y[priced],
        marker="D",
        s=36,
        color=SPREAD_COLOURS["actual_bps"],
        zorder=3,
        label="actual spread",
    )
    for yi, required, have in zip(y, el + capital, actual):
        if not np.isfinite(have):
            ax.annotate(
                "no spread",
                (max(required, 0.0), yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize="small",
            )
    ax.set_yticks(y, [str(v) for v in rows["loan_id"]])
    ax.axvline(0.0, color="#888888", lw=0.8)
    ax.set_xlabel("spread [bp a year]")
    ax.legend(loc="best", fontsize="small", framealpha=0.8)
    ax.set_title(title or "required (stacked) against actual spread", fontsize="medium")
    return fig


def path_figure(paths: Mapping[str, Sequence[Sequence[float]]], years: float) -> Figure:
    """The scenario paths a cube was run on: ``P(t) = I(t) / I(0)`` of each path
    over ``years``, its points marked (held flat after the last)."""
    from ..paths import path_factor

    fig = Figure(figsize=(7.0, 3.2), layout="constrained")
    ax = fig.subplots()
    t = np.linspace(0.0, max(years, max(p[-1][0] for p in paths.values())), 400)
    for name, points in paths.items():
        pts = tuple((float(a), float(b)) for a, b in points)
        (line,) = ax.plot(t, path_factor(pts, t), label=name)
        ax.plot(
            [a for a, _ in pts], [b / pts[0][1] for _, b in pts], "o", ms=3, color=line.get_color()
        )
    ax.axhline(1.0, color="0.7", lw=0.8)
    ax.set(xlabel="years", ylabel="index / index at t = 0")
    ax.legend(frameon=False)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG, SVG or PDF, chosen by the suffix of ``path``."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(
            f"{path}: the file name must end in " + ", ".join(FORMATS[:-1]) + f" or {FORMATS[-1]}"
        )
    fig.savefig(path, dpi=120)
    return path
