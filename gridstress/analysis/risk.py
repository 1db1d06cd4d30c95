"""Scenario weights over the grid, and expected loss, VaR and ES under them.

Each axis has a marginal distribution; deflation and crypto drawdown are
joined by a Gaussian copula with correlation ``rho`` ("correlation
convergence": rents and crypto falling together); the haircut and any other
axis are independent. A cell's weight is the probability mass of its box,
the interval between the midpoints to its neighbours on each axis; the
outer cells' boxes reach the ends of the marginal's support, so a scenario
beyond the grid counts at the grid's edge value and no probability is
dropped: the weights add up to 1 without renormalising. How much weight
sits on the edge cells of each axis is reported (a large share says the
grid is too narrow for the marginals).

VaR and ES of a weighted loss are computed in memory (:func:`tail_measures`)
or block by block, exactly and in bounded memory (:class:`TailQuantiles`,
which ``price`` uses). See ``docs/analysis.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
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

    The outer cells reach to -inf and +inf, the ends of any marginal's
    support: a scenario beyond the grid counts at the grid's edge value. A
    single value stands for the whole line.
    """
    values = np.asarray(values, dtype=np.float64)
    mid = (values[1:] + values[:-1]) / 2
    return np.concatenate([[-np.inf], mid, [np.inf]])


def marginal_mass(values: np.ndarray, dist) -> np.ndarray:
    """Probability of each cell of one axis under ``dist``; they add up to 1."""
    return np.diff(_cdf(dist, cell_edges(values)))


def _cdf(dist, edges: np.ndarray) -> np.ndarray:
    """``dist.cdf`` at ``edges``, exactly 0 at -inf and 1 at +inf."""
    u = np.asarray(dist.cdf(edges), dtype=np.float64)
    return np.where(edges == -np.inf, 0.0, np.where(edges == np.inf, 1.0, u))


def copula_mass(
    x_values: np.ndarray, y_values: np.ndarray, x_dist, y_dist, rho: float
) -> np.ndarray:
    """Probability of each (x, y) cell under a Gaussian copula; they add up to 1.

    With ``F`` the marginal CDFs and ``Φ2`` the standard bivariate normal
    CDF with correlation ``rho``, a box ``[x0, x1] x [y0, y1]`` has mass
    ``C(x1, y1) - C(x0, y1) - C(x1, y0) + C(x0, y0)`` where
    ``C(x, y) = Φ2(Φ⁻¹(F_x(x)), Φ⁻¹(F_y(y)))``. The outer boxes reach
    ±inf, where ``C`` is exact: ``C(x, +inf) = F_x(x)``, ``C(x, -inf) = 0``
    (and the same in ``x``), so the masses telescope to ``C(inf, inf) = 1``.
    Returns shape ``(len(x_values), len(y_values))``; rounding below 0 is
    set to 0.
    """
    if not -1 < rho < 1:
        raise InputError(f"--rho {rho:g}: must be in (-1, 1)")
    u = _cdf(x_dist, cell_edges(x_values))
    v = _cdf(y_dist, cell_edges(y_values))
    uu, vv = np.meshgrid(u, v, indexing="ij")
    cdf = np.zeros_like(uu)  # C = 0 where u = 0 or v = 0
    cdf = np.where(uu == 1.0, vv, np.where(vv == 1.0, uu, cdf))
    inner = (uu > 0) & (uu < 1) & (vv > 0) & (vv < 1)
    if inner.any():
        joint = stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]])
        z = stats.norm.ppf(np.stack([uu[inner], vv[inner]], axis=-1))
        cdf[inner] = np.asarray(joint.cdf(z)).reshape(-1)
    return np.maximum(np.diff(np.diff(cdf, axis=0), axis=1), 0.0)


@dataclass(frozen=True, eq=False)
class Weights:
    """Cell probabilities of a cube under one ``rho``, kept as factors.

    The weight of a cell is the product of ``factors`` at its indices: the
    copula mass over (deflation, crypto drawdown), then one factor per other
    axis (its marginal's interval probabilities, or equal weights). Each
    factor adds up to 1, so the weights do too, without renormalising.
    """

    factors: tuple[xr.DataArray, ...]
    dims: tuple[str, ...]
    """The cube's scenario axes, in order."""
    rho: float
    edges: dict[str, tuple[float, float]]
    """``{axis: (low, high)}``: the weight on the cells at the axis's first and
    last grid value, which also carry every scenario beyond the grid (both
    are 1 for an axis of one value)."""

    @cached_property
    def weights(self) -> xr.DataArray:
        """Every cell's probability over the scenario axes (a whole-grid array)."""
        weights = self.factors[0]
        for factor in self.factors[1:]:
            weights = weights * factor
        return weights.transpose(*self.dims)

    def block(self, selection: Mapping[str, slice]) -> np.ndarray:
        """The weights of the cells of ``selection`` (axis -> slice) as an array
        over ``dims``, computed from the factors: memory of one block."""
        weights = None
        for factor in self.factors:
            part = factor.isel({d: s for d, s in selection.items() if d in factor.dims})
            weights = part if weights is None else weights * part
        assert weights is not None
        return np.asarray(weights.transpose(*self.dims).values)


def _edge_weights(factor: xr.DataArray) -> dict[str, tuple[float, float]]:
    """``{axis: (low, high)}`` edge weights of each axis of one factor."""
    out = {}
    for axis in factor.dims:
        along = factor.sum([d for d in factor.dims if d != axis]).values
        out[str(axis)] = (float(along[0]), float(along[-1]))
    return out


def scenario_weights(
    ds: xr.Dataset, rho: float, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Weights:
    """Weights of every cell of the cube (see the module docstring).

    The one weight function of the analyses: ``risk``, ``reverse`` and
    ``price`` all take their weights from here.
    """
    dists = marginals(ds, overrides)
    x, y = COPULA_AXES
    mass = copula_mass(ds[x].values, ds[y].values, dists[x], dists[y], rho)
    factors = [xr.DataArray(mass, dims=(x, y), coords={x: ds[x], y: ds[y]})]
    for axis in grid_dims(ds):
        if axis in COPULA_AXES:
            continue
        if axis in dists:
            mass = marginal_mass(ds[axis].values, dists[axis])
        else:
            mass = np.ones(ds.sizes[axis]) / ds.sizes[axis]
        factors.append(xr.DataArray(mass, dims=(axis,), coords={axis: ds[axis]}))
    dims = tuple(grid_dims(ds))
    edges: dict[str, tuple[float, float]] = {}
    for factor in factors:
        edges.update(_edge_weights(factor))
    return Weights(
        factors=tuple(factors),
        dims=dims,
        rho=float(rho),
        edges={axis: edges[axis] for axis in dims},
    )


def edge_columns(edges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Edge weights as CSV columns: ``<axis>_edge_low``, ``<axis>_edge_high``."""
    out = {}
    for axis, (low, high) in edges.items():
        out[f"{axis}_edge_low"] = low
        out[f"{axis}_edge_high"] = high
    return out


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
    Tasche, 2002, "On the coherence of expected shortfall"). ``weights``
    are probabilities that add up to 1 (the scenario weights do); they are
    not renormalised.
    """
    loss = np.ravel(np.asarray(loss, dtype=np.float64))
    weights = np.ravel(np.asarray(weights, dtype=np.float64))
    if np.isnan(loss).any():
        raise InputError("the loss has NaN cells (an unfinished cube?)")
    if not abs(weights.sum() - 1.0) <= 1e-9:
        raise ValueError(f"the weights add up to {weights.sum():.17g}, not 1")
    var = {a: float(np.quantile(loss, a, weights=weights, method="inverted_cdf")) for a in levels}
    es = {
        a: var[a] + float(np.sum(weights * np.maximum(loss - var[a], 0.0))) / (1 - a)
        for a in levels
    }
    return TailMeasures(float(np.sum(weights * loss)), var, es)


# ---------------------------------------------------------------------------
# VaR and ES block by block: exact weighted quantiles


_SIGN = np.uint64(1 << 63)
#: The order key of 0.0 (and of -0.0, which is read as 0.0).
ZERO_KEY = _SIGN
_DIGIT = 16
_MASK = np.uint64((1 << _DIGIT) - 1)
_DIGIT_END = 1 << _DIGIT
_HIST, _COLLECT, _DONE = 0, 1, 2


def order_keys(x: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float64 values ``x`` (no NaN): a value's
    bits with the sign bit set when it is positive, all bits flipped when it is
    negative; -0.0 is read as 0.0."""
    x = np.asarray(x, dtype=np.float64) + 0.0  # a new array; -0.0 + 0.0 = 0.0
    bits = x.view(np.uint64)
    if (x < 0).any():
        return np.where(bits >= _SIGN, ~bits, bits | _SIGN)
    return bits | _SIGN


def key_value(key: int | np.uint64) -> float:
    """The float64 value whose :func:`order_keys` key is ``key``."""
    k = np.uint64(key)
    bits = k ^ _SIGN if k >= _SIGN else ~k
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


class _Window:
    """Sums of weights, counts and weighted values per (column, bin), and the
    least and greatest value of each bin, for the bins of a window ``[lo, hi]``
    that grows to take in every bin seen."""

    _FILL = {"w": 0.0, "n": 0, "wx": 0.0, "least": np.inf, "most": -np.inf}

    def __init__(self, columns: int):
        self.columns = columns
        self.lo = self.hi = -1
        self.w = np.zeros((columns, 0))
        self.n = np.zeros((columns, 0), dtype=np.int64)
        self.wx = np.zeros((columns, 0))
        self.least = np.zeros((columns, 0))
        self.most = np.zeros((columns, 0))

    def _grow(self, lo: int, hi: int) -> None:
        if self.lo < 0:
            self.lo, self.hi = lo, hi
        elif lo >= self.lo and hi <= self.hi:
            return
        new_lo, new_hi = min(lo, self.lo), max(hi, self.hi)
        at = slice(self.lo - new_lo, self.lo - new_lo + self.w.shape[1])
        for name, fill in self._FILL.items():
            old = getattr(self, name)
            grown = np.full((self.columns, new_hi - new_lo + 1), fill, dtype=old.dtype)
            grown[:, at] = old
            setattr(self, name, grown)
        self.lo, self.hi = new_lo, new_hi

    def add(
        self,
        bins: np.ndarray,
        w: np.ndarray,
        x: np.ndarray,
        park: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add cells: ``bins``, weights ``w`` and values ``x``, each of shape
        ``(cells, columns)``. Cells in bin ``park`` (with no weight) are not
        counted but returned as counts per column. Returns each column's lowest
        and highest bin among the cells counted (``(hi + 1, lo - 1)`` for a
        column with none), and the parked counts."""
        lo, hi = int(bins.min()), int(bins.max())
        self._grow(lo, hi)
        width = hi - lo + 1
        index = (bins - lo) + np.arange(self.columns) * width
        size = self.columns * width
        flat, values = index.reshape(-1), x.reshape(-1)
        shape = (self.columns, width)
        n = np.bincount(flat, minlength=size).reshape(shape)
        least = np.full(size, np.inf)
        most = np.full(size, -np.inf)
        np.minimum.at(least, flat, values)
        np.maximum.at(most, flat, values)
        least, most = least.reshape(shape), most.reshape(shape)
        parked = np.zeros(self.columns, dtype=np.int64)
        if park is not None:
            parked = n[:, park - lo].copy()
            n[:, park - lo] = 0
            least[:, park - lo], most[:, park - lo] = np.inf, -np.inf
        at = slice(lo - self.lo, hi - self.lo + 1)
        wx = (w * x).reshape(-1)
        self.w[:, at] += np.bincount(flat, weights=w.reshape(-1), minlength=size).reshape(shape)
        self.n[:, at] += n
        self.wx[:, at] += np.bincount(flat, weights=wx, minlength=size).reshape(shape)
        np.minimum(self.least[:, at], least, out=self.least[:, at])
        np.maximum(self.most[:, at], most, out=self.most[:, at])
        held = n > 0
        some = held.any(axis=1)
        low = np.where(some, lo + held.argmax(axis=1), hi + 1)
        high = np.where(some, hi - held[:, ::-1].argmax(axis=1), lo - 1)
        return low, high, parked


def _crossing(cum: np.ndarray, n: np.ndarray, alpha: float) -> int:
    """The first slot whose cumulative weight reaches ``alpha`` (the last slot
    holding a cell when rounding keeps every sum below it)."""
    i = int(np.searchsorted(cum, alpha, side="left"))
    if i >= cum.size:
        i = int(np.flatnonzero(n)[-1])
    return i


@dataclass(frozen=True)
class Tail:
    """VaR and ES of one weighted loss, with the sums they come from."""

    var: float
    """The smallest loss ``v`` with ``F(v) >= alpha``."""
    cdf: float
    """``F(v)``: the weight of the cells with a loss at most ``v``."""
    above: float
    """``sum of w·x`` over the cells with a loss above ``v``."""
    alpha: float

    @property
    def es(self) -> float:
        """``(above + (F(v) - alpha)·v) / (1 - alpha)``."""
        return (self.above + (self.cdf - self.alpha) * self.var) / (1 - self.alpha)


class TailQuantiles:
    """Exact weighted VaR and ES of ``m`` loss columns read block by block.

    A column's VaR at ``alpha`` is the smallest value ``v`` with ``F(v) >=
    alpha`` (numpy's weighted ``inverted_cdf`` quantile). Values are ordered
    by :func:`order_keys`, whose 64 bits are read 16 at a time: the first
    pass sums the weights per leading 16 bits (exact zeros apart, so that an
    atom at 0 is found at once) and keeps each bin's least and greatest
    value, which brackets the VaR in one bin, about a sixteenth of an octave
    of values; a bin that holds one value (an atom: a loan that loses all it
    can in many cells) is its own answer; else the next pass keeps the values
    and weights of the cells in that bin when they fit in ``collect`` pairs,
    and splits the bin on the next 16 bits when not. Memory: one histogram
    per column and at most ``collect`` pairs, whatever the number of cells.

    Use: call :meth:`add` for every block of a pass, then :meth:`end_pass`,
    until :attr:`done`; :attr:`tails` then holds the answers. :meth:`wanted`
    says which columns the next pass still reads.
    """

    def __init__(self, m: int, alpha: float, collect: int = 2**22):
        self.m, self.alpha, self.collect = m, float(alpha), int(collect)
        self.mode = np.full(m, _HIST)
        self.first = True
        self.shift = np.full(m, 64)  # the bracket is the keys with key >> shift == prefix
        self.prefix = np.zeros(m, dtype=np.uint64)
        self.below = np.zeros(m)  # weight of the cells below the bracket
        self.above = np.zeros(m)  # sum of w·x of the cells above it
        self.tails: list[Tail | None] = [None] * m
        self._ranges: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # per column, the blocks with cells of its last bracket and the range of
        # the next 16 bits among them
        self._held: dict[int, dict[int, tuple[int, int]]] = {}
        self._holding: dict[int, dict[int, tuple[int, int]]] = {}
        self._begin()

    @property
    def done(self) -> bool:
        return bool((self.mode == _DONE).all())

    def wanted(self) -> np.ndarray:
        """Columns that the next pass reads."""
        return np.flatnonzero(self.mode != _DONE)

    def _begin(self) -> None:
        self._held, self._holding = self._holding, {}
        self._zero_w = np.zeros(self.m)
        self._zero_n = np.zeros(self.m, dtype=np.int64)
        later: list[int] = [] if self.first else list(np.flatnonzero(self.mode == _HIST))
        self._hist = {int(j): _Window(1) for j in later}
        self._first_hist = _Window(self.m) if self.first else None
        self._values: dict[int, list[np.ndarray]] = {
            int(j): [] for j in np.flatnonzero(self.mode == _COLLECT)
        }
        self._weights: dict[int, list[np.ndarray]] = {j: [] for j in self._values}

    def _member(self, keys: np.ndarray, j: int) -> np.ndarray:
        """Which of one column's keys lie in its bracket (exact zeros are a slot of
        their own, never in a bin)."""
        shift = int(self.shift[j])
        inside = (keys >> np.uint64(shift)) == self.prefix[j]
        if (int(self.prefix[j]) << shift) >> 48 == int(ZERO_KEY) >> 48:
            inside &= keys != ZERO_KEY
        return inside

    def add(
        self, keys: np.ndarray | None, x: np.ndarray, w: np.ndarray, block: int | None = None
    ) -> None:
        """One block: values ``x`` of shape ``(cells, m)``, their ``keys``
        (:func:`order_keys`; None to have them computed, which a later pass does
        column by column for the few columns still open) and the cells' weights
        ``w``; ``block`` numbers the block the same way in every pass (a block
        may come in several parts, with one number), so that a later pass can
        skip the blocks that hold no cell of any bracket (:meth:`needs`)."""
        if self.first:
            self._add_first(order_keys(x) if keys is None else keys, x, w, block)
            return
        for j in [*self._hist, *self._values]:
            if not self._may_hold(block, j):
                continue
            v = np.ascontiguousarray(x[:, j])
            k = order_keys(v) if keys is None else keys[:, j]
            inside = self._member(k, j)
            if not inside.any():
                continue
            v, ww = v[inside], w[inside]
            if j in self._values:
                self._values[j].append(v)
                self._weights[j].append(ww)
                continue
            shift = np.uint64(int(self.shift[j]) - _DIGIT)
            digits = ((k[inside] >> shift) & _MASK).astype(np.int64)
            self._hist[j].add(digits[:, None], ww[:, None], v[:, None])
            if block is not None:
                held = self._holding.setdefault(j, {})
                low, high = held.get(block, (_DIGIT_END, -1))
                held[block] = (min(low, int(digits.min())), max(high, int(digits.max())))

    def _add_first(self, keys: np.ndarray, x: np.ndarray, w: np.ndarray, block: int | None):
        assert self._first_hist is not None
        if keys.size == 0:
            return
        lead = (keys >> np.uint64(48)).astype(np.int64)
        zero = keys == ZERO_KEY
        if zero.any():
            # Exact zeros are a slot of their own: parked with no weight in a bin
            # above the block's, counted apart.
            park = int(lead.max()) + 1
            lead = np.where(zero, park, lead)
            weights = np.where(zero, 0.0, w[:, None])
            low, high, zeros = self._first_hist.add(lead, weights, x, park=park)
            self._zero_w += w @ zero
            self._zero_n += zeros
        else:
            weights = np.broadcast_to(w[:, None], x.shape)
            low, high, _ = self._first_hist.add(lead, weights, x)
        if block is not None:  # a block may come in parts: the ranges of them all
            if block in self._ranges:
                low = np.minimum(low, self._ranges[block][0])
                high = np.maximum(high, self._ranges[block][1])
            self._ranges[block] = (low, high)

    def needs(self, block: int) -> bool:
        """Whether the next pass must read ``block``: some column still open has
        cells of its bracket there (always true in the first pass)."""
        return any(self._may_hold(block, int(j)) for j in self.wanted())

    def _may_hold(self, block: int | None, j: int) -> bool:
        """Whether ``block`` may hold cells of column ``j``'s bracket: the
        bracket's last 16 bits lie within the block's range of them when the
        last pass split the bracket before, else its leading 16 bits within the
        block's range of them (read in the first pass)."""
        if self.first or block is None:
            return True
        if j in self._held:  # the last pass split the column's bracket
            first, last = self._held[j].get(block, (_DIGIT_END, -1))
            return first <= (int(self.prefix[j]) & int(_MASK)) <= last
        if block not in self._ranges:
            return True
        low, high = self._ranges[block]
        lead = int(self.prefix[j]) >> (48 - int(self.shift[j]))
        return bool(low[j] <= lead <= high[j])

    def end_pass(self) -> None:
        """Narrow each column's bracket from the sums of the pass just read."""
        pending: list[tuple[int, int]] = []  # (cells in the bracket, column)
        if self.first:
            assert self._first_hist is not None
            self._end_first(self._first_hist, pending)
            self.first = False
        for j, hist in self._hist.items():
            digit_shift = int(self.shift[j]) - _DIGIT
            cum = self.below[j] + np.cumsum(hist.w[0])
            i = _crossing(cum, hist.n[0], self.alpha)
            prefix = (int(self.prefix[j]) << _DIGIT) | (hist.lo + i)
            above = self.above[j] + float(hist.wx[0, i + 1 :].sum())
            if hist.least[0, i] == hist.most[0, i]:  # the bin holds one value
                self._finish(j, float(hist.least[0, i]), float(cum[i]), above)
                continue
            if digit_shift == 0:  # 64 bits read: the bin is one value
                self._finish(j, key_value(prefix), float(cum[i]), above)
                continue
            self.below[j] = float(cum[i - 1]) if i > 0 else self.below[j]
            self.above[j] = above
            self.shift[j], self.prefix[j] = digit_shift, np.uint64(prefix)
            pending.append((int(hist.n[0, i]), j))
        for j, values in self._values.items():
            v = np.concatenate(values) if values else np.zeros(0)
            ww = np.concatenate(self._weights[j]) if values else np.zeros(0)
            order = np.argsort(v, kind="stable")
            v, ww = v[order], ww[order]
            cum = self.below[j] + np.cumsum(ww)
            i = min(int(np.searchsorted(cum, self.alpha, side="left")), v.size - 1)
            last = int(np.searchsorted(v, v[i], side="right")) - 1
            above = self.above[j] + float(np.dot(ww[last + 1 :], v[last + 1 :]))
            self._finish(j, float(v[i]), float(cum[last]), above)
        # Keep the values of the smallest brackets that fit; split the others.
        room = self.collect
        for count, j in sorted(pending):
            if count <= room:
                self.mode[j] = _COLLECT
                room -= count
            else:
                self.mode[j] = _HIST
        self._begin()

    def _end_first(self, hist: _Window, pending: list[tuple[int, int]]) -> None:
        zero_bin = int(ZERO_KEY >> np.uint64(48))
        for j in range(self.m):
            # slots in order: the bins below zero, exact zeros, the bins from zero up
            split = min(max(zero_bin - hist.lo, 0), hist.w.shape[1]) if hist.lo >= 0 else 0
            w = np.concatenate([hist.w[j, :split], [self._zero_w[j]], hist.w[j, split:]])
            n = np.concatenate([hist.n[j, :split], [self._zero_n[j]], hist.n[j, split:]])
            wx = np.concatenate([hist.wx[j, :split], [0.0], hist.wx[j, split:]])
            cum = np.cumsum(w)
            i = _crossing(cum, n, self.alpha)
            above = float(wx[i + 1 :].sum())
            if i == split:
                self._finish(j, 0.0, float(cum[i]), above)
                continue
            at = i if i < split else i - 1
            if hist.least[j, at] == hist.most[j, at]:  # the bin holds one value
                self._finish(j, float(hist.least[j, at]), float(cum[i]), above)
                continue
            bin_ = hist.lo + at
            self.below[j] = float(cum[i - 1]) if i > 0 else 0.0
            self.above[j] = above
            self.shift[j], self.prefix[j] = 48, np.uint64(bin_)
            pending.append((int(n[i]), j))

    def _finish(self, j: int, var: float, cdf: float, above: float) -> None:
        self.tails[j] = Tail(var=var, cdf=cdf, above=above, alpha=self.alpha)
        self.mode[j] = _DONE


@dataclass(frozen=True)
class RiskRow:
    rho: float
    expected_loss: float
    var95: float
    es95: float
    var99: float
    es99: float
    edges: dict[str, tuple[float, float]]
    """``{axis: (low, high)}``: weight on the cells at the axis's first and last
    grid value (see :attr:`Weights.edges`)."""

    def csv_row(self) -> dict[str, float]:
        """``rho,expected_loss,var95,es95,var99,es99`` then ``<axis>_edge_low``,
        ``<axis>_edge_high`` for each axis in the cube's order."""
        return {
            **{
                k: getattr(self, k)
                for k in ("rho", "expected_loss", "var95", "es95", "var99", "es99")
            },
            **edge_columns(self.edges),
        }


def risk(
    ds: xr.Dataset,
    rhos: Sequence[float],
    var: str = "loss_rate",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[RiskRow]:
    """Expected loss, VaR and ES at 95% and 99% of ``var`` for each ``rho``,
    and the weight on each axis's edge cells.

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
                w.edges,
            )
        )
    return rows
