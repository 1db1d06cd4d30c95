"""Scenario weights over the grid, and expected loss, VaR and ES under them.

Each axis has a marginal distribution; deflation and crypto drawdown are
joined by a Gaussian copula with correlation ``rho`` ("correlation
convergence": rents and crypto falling together); the haircut and any other
axis are independent. A cell's weight is the probability mass of its box,
the interval between the midpoints to its neighbours on each axis. The
weights are renormalised to sum to 1 on the grid and the mass that fell
outside it is reported. See ``docs/analysis.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from ..errors import InputError, did_you_mean
from .headline import grid_dims
from .select import require_var

COPULA_AXES = ("deflation", "crypto_drawdown")
LEVELS = (0.95, 0.99)

DEFAULT_MARGINALS: dict[str, dict[str, Any]] = {
    # Mean 0.30: unit inference cost -20-40%/yr in 2025, $/FLOP -28%/yr (S, Epoch AI);
    # sd 0.15 (E): the severe 0.6 is the 97.7th percentile.
    "deflation": {"dist": "norm", "loc": 0.30, "scale": 0.15},
    # Mean 0.5 (E, central of the shipped config); P(c > 0.85) = 6%: past BTC
    # cycles fell 78-85% (S), three in about twelve years, not all within a loan's life.
    "crypto_drawdown": {"dist": "beta", "a": 2.0, "b": 2.0},
    # Mean 0.35: 30-day auction at 0.65 of fair value (S, 2026); P(h > 0.55) = 9.6%
    # (distressed 7-day sale at 0.45, S, 2026); P(h > 0.85) = 0.02% (rigs, dot-com gear).
    "haircut": {"dist": "beta", "a": 3.5, "b": 6.5},
}


def marginal(spec: Mapping[str, Any], where: str = "marginal"):
    """A frozen :mod:`scipy.stats` distribution from ``{dist: NAME, **params}``.

    ``NAME`` is any continuous distribution of scipy.stats (``norm``,
    ``beta``, ``uniform``, ``truncnorm``, ...), the other keys its
    parameters (``loc``, ``scale`` and shape parameters by name).
    """
    if not isinstance(spec, Mapping) or "dist" not in spec:
        raise InputError(
            f"{where}: must be a mapping with a 'dist' key, e.g. "
            "{dist: norm, loc: 0.3, scale: 0.15}"
        )
    params = {k: v for k, v in spec.items() if k != "dist"}
    family = getattr(stats, str(spec["dist"]), None)
    if not isinstance(family, stats.rv_continuous):
        names = [n for n in dir(stats) if isinstance(getattr(stats, n), stats.rv_continuous)]
        raise InputError(
            f"{where}: dist={spec['dist']} is not a continuous distribution "
            "of scipy.stats" + did_you_mean(str(spec["dist"]), names)
        )
    allowed = [s.strip() for s in (family.shapes or "").split(",") if s.strip()]
    allowed += ["loc", "scale"]
    for name in params:
        if name not in allowed:
            raise InputError(
                f"{where}: {name} is not a parameter of {spec['dist']}"
                + did_you_mean(name, allowed)
                + "; its parameters are: "
                + ", ".join(allowed)
            )
    try:
        frozen = family(**params)
        ok = np.isfinite(frozen.mean()) or np.isfinite(frozen.median())
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None
    if not ok:
        raise InputError(f"{where}: parameters {params} are not valid for {spec['dist']}")
    return frozen


def describe_marginal(dist) -> str:
    """``norm(loc=0.3, scale=0.15)``: a frozen distribution as written in a marginals file."""
    params = [f"{a:g}" for a in dist.args] + [f"{k}={v:g}" for k, v in dist.kwds.items()]
    return f"{dist.dist.name}({', '.join(params)})"


def marginals(
    ds: xr.Dataset, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Marginal distribution of each axis of the cube that has one.

    The defaults (``DEFAULT_MARGINALS``) cover the three required axes;
    ``overrides`` replaces or adds axes by name. An axis without a
    marginal weights its grid values equally.
    """
    axes = grid_dims(ds)
    specs: dict[str, Mapping[str, Any]] = dict(DEFAULT_MARGINALS)
    for name, spec in (overrides or {}).items():
        if name not in axes:
            raise InputError(
                f"marginals: {name} is not an axis of the cube; axes are: " + ", ".join(axes)
            )
        specs[name] = spec
    return {
        name: marginal(spec, f"marginals.{name}") for name, spec in specs.items() if name in axes
    }


def cell_edges(values: np.ndarray) -> np.ndarray:
    """Edges of the cells around grid values: midpoints between neighbours.

    The outer cells reach half a step beyond the first and last values; a
    single value stands for the whole line (edges -inf and inf).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return np.array([-np.inf, np.inf])
    mid = (values[1:] + values[:-1]) / 2
    return np.concatenate(
        [[values[0] - (mid[0] - values[0])], mid, [values[-1] + (values[-1] - mid[-1])]]
    )


def marginal_mass(values: np.ndarray, dist) -> np.ndarray:
    """Probability of each cell of one axis under ``dist`` (not renormalised)."""
    return np.diff(dist.cdf(cell_edges(values)))


def copula_mass(
    x_values: np.ndarray, y_values: np.ndarray, x_dist, y_dist, rho: float
) -> np.ndarray:
    """Probability of each (x, y) cell under a Gaussian copula (not renormalised).

    With ``F`` the marginal CDFs and ``Φ2`` the standard bivariate normal
    CDF with correlation ``rho``, a box ``[x0, x1] x [y0, y1]`` has mass
    ``C(x1, y1) - C(x0, y1) - C(x1, y0) + C(x0, y0)`` where
    ``C(x, y) = Φ2(Φ⁻¹(F_x(x)), Φ⁻¹(F_y(y)))``. Returns shape
    ``(len(x_values), len(y_values))``; rounding below 0 is set to 0.
    """
    if not -1 < rho < 1:
        raise InputError(f"--rho {rho:g}: must be in (-1, 1)")
    zx = stats.norm.ppf(x_dist.cdf(cell_edges(x_values)))
    zy = stats.norm.ppf(y_dist.cdf(cell_edges(y_values)))
    grid = np.stack(np.meshgrid(zx, zy, indexing="ij"), axis=-1)
    joint = stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]])
    cdf = np.asarray(joint.cdf(grid.reshape(-1, 2))).reshape(grid.shape[:2])
    return np.maximum(np.diff(np.diff(cdf, axis=0), axis=1), 0.0)


@dataclass(frozen=True)
class Weights:
    weights: xr.DataArray
    """Cell probabilities over the cube's scenario axes, summing to 1."""
    outside: float
    """Probability mass that fell outside the grid before renormalising."""
    rho: float


def scenario_weights(
    ds: xr.Dataset, rho: float, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Weights:
    """Weights of every cell of the cube (see the module docstring)."""
    dists = marginals(ds, overrides)
    factors, inside = [], 1.0
    x, y = COPULA_AXES
    mass = copula_mass(ds[x].values, ds[y].values, dists[x], dists[y], rho)
    factors.append(xr.DataArray(mass, dims=(x, y)))
    inside *= float(mass.sum())
    for axis in grid_dims(ds):
        if axis in COPULA_AXES:
            continue
        if axis in dists:
            mass = marginal_mass(ds[axis].values, dists[axis])
        else:
            mass = np.ones(ds.sizes[axis]) / ds.sizes[axis]
        factors.append(xr.DataArray(mass, dims=(axis,)))
        inside *= float(mass.sum())
    if not inside > 0:
        raise InputError("the marginals put no probability on the grid")
    weights = factors[0]
    for factor in factors[1:]:
        weights = weights * factor
    weights = (weights / inside).transpose(*grid_dims(ds))
    weights = weights.assign_coords({d: ds[d] for d in weights.dims})
    return Weights(weights=weights, outside=1.0 - inside, rho=float(rho))


@dataclass(frozen=True)
class TailMeasures:
    expected_loss: float
    var: dict[float, float]
    es: dict[float, float]


def tail_measures(
    loss: np.ndarray, weights: np.ndarray, levels: Sequence[float] = LEVELS
) -> TailMeasures:
    """Expected loss, value at risk and expected shortfall of a weighted loss.

    ``VaR_a`` is the smallest loss ``l`` with ``P(L <= l) >= a``
    (numpy's weighted ``inverted_cdf`` quantile); ``ES_a = VaR_a +
    E[(L - VaR_a)+] / (1 - a)``, the mean loss in the worst ``1 - a`` of
    probability, an atom at ``VaR_a`` counted only in part (Acerbi and
    Tasche, 2002, "On the coherence of expected shortfall").
    """
    loss = np.ravel(np.asarray(loss, dtype=np.float64))
    weights = np.ravel(np.asarray(weights, dtype=np.float64))
    if np.isnan(loss).any():
        raise InputError("the loss has NaN cells (an unfinished cube?)")
    weights = weights / weights.sum()
    var = {a: float(np.quantile(loss, a, weights=weights, method="inverted_cdf")) for a in levels}
    es = {
        a: var[a] + float(np.sum(weights * np.maximum(loss - var[a], 0.0))) / (1 - a)
        for a in levels
    }
    return TailMeasures(float(np.sum(weights * loss)), var, es)


@dataclass(frozen=True)
class RiskRow:
    rho: float
    expected_loss: float
    var95: float
    es95: float
    var99: float
    es99: float
    outside: float

    def csv_row(self) -> dict[str, float]:
        return {
            k: getattr(self, k) for k in ("rho", "expected_loss", "var95", "es95", "var99", "es99")
        }


def risk(
    ds: xr.Dataset,
    rhos: Sequence[float],
    var: str = "loss_rate",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[RiskRow]:
    """Expected loss, VaR and ES at 95% and 99% of ``var`` for each ``rho``.

    ``var`` defaults to ``loss_rate``, so the figures are shares of total
    principal. The loss is read into memory once.
    """
    for rho in rhos:
        if not -1 < rho < 1:
            raise InputError(f"--rho {rho:g}: must be in (-1, 1)")
    loss = require_var(ds, var).transpose(*grid_dims(ds)).values
    rows = []
    for rho in rhos:
        w = scenario_weights(ds, rho, overrides)
        tm = tail_measures(loss, w.weights.values)
        rows.append(
            RiskRow(
                float(rho),
                tm.expected_loss,
                tm.var[0.95],
                tm.es[0.95],
                tm.var[0.99],
                tm.es[0.99],
                w.outside,
            )
        )
    return rows
