"""Figures of a cube: heatmaps with the frontier drawn over them, small multiples.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no
global state, any backend); :func:`save` writes PNG or SVG. Axis and colour
bar labels come from the cube's ``long_name`` and ``units`` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..errors import InputError
from .frontier import frontier
from .headline import grid_dims, scenario_point
from .select import nearest_point, require_axis, require_var

FORMATS = (".png", ".svg")
FRONTIER_AXIS = "deflation"


def label(coord: xr.DataArray) -> str:
    """``long_name [units]`` of a coordinate or variable (its name without them)."""
    name = coord.attrs.get("long_name", coord.name)
    units = coord.attrs.get("units")
    return f"{name} [{units}]" if units else str(name)


def fixed_point(ds: xr.Dataset, free: list[str], at: Mapping[str, float] | None = None
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


def _draw_frontier(ax, ds: xr.Dataset, point: Mapping[str, float], x: str, y: str,
                   var: str, threshold: float) -> bool:
    """Draw the deflation frontier on a heatmap whose x or y is deflation."""
    if FRONTIER_AXIS not in (x, y):
        return False
    other = y if x == FRONTIER_AXIS else x
    line = frontier(ds.sel(point), var, threshold, FRONTIER_AXIS)
    along, edge = line[other].values, line.values
    xs, ys = (edge, along) if x == FRONTIER_AXIS else (along, edge)
    ax.plot(xs, ys, color="white", lw=2.5, solid_capstyle="round")
    ax.plot(xs, ys, color="black", lw=1.2, ls="--",
            label=f"frontier: {var} > {threshold:g}")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    return True


def heatmap(ds: xr.Dataset, var: str = "loss_rate", x: str = "deflation",
            y: str = "crypto_drawdown", at: Mapping[str, float] | None = None,
            frontier_var: str = "default_rate", threshold: float = 0.0) -> Figure:
    """Heatmap of ``var`` over axes ``x`` and ``y`` at fixed values of the others.

    Axes not given in ``at`` take their central value; values given are
    rounded to the nearest grid point, and the title says which. When
    ``x`` or ``y`` is deflation, the frontier of ``frontier_var`` over
    ``threshold`` is drawn as a dashed line.
    """
    da = _check_xy(ds, var, x, y)
    require_var(ds, frontier_var, "--frontier-var")
    point, asked = fixed_point(ds, [x, y], at)
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    surface = da.sel(point).load()
    mesh = ax.pcolormesh(ds[x].values, ds[y].values, surface.transpose(y, x).values,
                         shading="nearest", cmap="magma_r")
    fig.colorbar(mesh, ax=ax, label=label(da))
    _draw_frontier(ax, ds, point, x, y, frontier_var, threshold)
    ax.set_xlabel(label(ds[x]))
    ax.set_ylabel(label(ds[y]))
    where = _describe(point, asked)
    ax.set_title(f"{var}" + (f" at {where}" if where else ""), fontsize="medium")
    return fig


def facets(ds: xr.Dataset, var: str = "loss_rate", x: str = "deflation",
           y: str = "crypto_drawdown", facet: str = "haircut",
           at: Mapping[str, float] | None = None, frontier_var: str = "default_rate",
           threshold: float = 0.0, max_panels: int = 20) -> Figure:
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
        ax.pcolormesh(ds[x].values, ds[y].values, panel.values, shading="nearest",
                      cmap="magma_r", norm=norm)
        line_at = {**point, facet: value}
        if _draw_frontier(ax, ds, line_at, x, y, frontier_var, threshold):
            ax.get_legend().remove()
        ax.set_title(f"{facet}={value:g}", fontsize="small")
    for ax in axes.flat[len(index):]:
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


def frontier_figure(line: xr.DataArray, ds: xr.Dataset, x: str = "crypto_drawdown",
                    hue: str = "haircut") -> Figure:
    """The frontier over ``x``, one line per value of ``hue`` (other axes central)."""
    others = [d for d in line.dims if d not in (x, hue)]
    central = scenario_point(ds, "central")
    line = line.sel({d: central[d] for d in others})
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    colours = ScalarMappable(norm=Normalize(float(line[hue].min()), float(line[hue].max())),
                             cmap="viridis")
    for value in line[hue].values:
        series = line.sel({hue: value})
        ax.plot(series[x].values, series.values, color=colours.to_rgba(value), lw=1.5)
    fig.colorbar(colours, ax=ax, label=label(ds[hue]))
    ax.set_xlabel(label(ds[x]))
    ax.set_ylabel(f"frontier {label(ds[FRONTIER_AXIS])}")
    lo, hi = float(ds[FRONTIER_AXIS].min()), float(ds[FRONTIER_AXIS].max())
    ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    ax.set_title(f"smallest {FRONTIER_AXIS} at which {line.attrs.get('var')} > "
                 f"{line.attrs.get('threshold', 0):g} (gaps: never on the grid)",
                 fontsize="medium")
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG or SVG, chosen by the suffix of ``path``."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: the file name must end in .png or .svg")
    fig.savefig(path, dpi=120)
    return path
