"""Model v3's scenario over time, for the xp model: the market rent index, the
crypto price index, the fleet's cash flow and the mining margin they drive,
and the collateral appraisal (docs/model.md, sections 4, 6 and 14).

A block's :class:`TimeShape` holds what moves the indexes over time: the
rent and crypto paths read at the period ends, and the generation shock.
Without a path and without a shock every function here computes exactly the
expression of model v2, in the same order, so a v2 run gives v2's bits and
takes v2's time.

The appraisal is built once per block as the table ``G_0..G_K`` over the
cells it depends on (deflation, discount rate, the shock's axes and the
market's expected deflation), as :func:`gridstress.model.evaluate` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .paths import Points, period_factors
from .schedule import periods

HOURS_PER_YEAR = 8760.0


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def _host(value: Any) -> np.ndarray:
    """A scenario value (float, NumPy or CuPy array) as a NumPy array."""
    return np.asarray(value.get() if hasattr(value, "get") else value, dtype=np.float64)


@dataclass(frozen=True)
class TimeShape:
    """What moves a block's rent and crypto indexes over time.

    ``rent_path`` and ``crypto_path`` are ``P(t_k)`` and ``Q(t_k)`` for
    ``k = 0..`` the last period the model reads, as host floats (None
    without that path).  ``shocked`` is ``1 - j e`` [1] of each loan, shape
    ``(L,) +`` the cells of ``j``, None where no loan takes a shock in any
    cell; ``launch`` is ``n_g = round_half_up(t_g f)`` [periods], an int or,
    with ``generation_years`` an axis, an ``xp`` array over its cells.
    """

    rent_path: list[float] | None = None
    crypto_path: list[float] | None = None
    shocked: Any = None
    launch: Any = 0


def time_shape(
    pf, scenario: dict[str, Any], paths: dict[str, Points] | None, n_periods: int, ndim: int, xp
) -> TimeShape:
    """The block's :class:`TimeShape` for periods ``0..n_periods``."""
    f = pf.periods_per_year
    paths = paths or {}

    def factors(name: str) -> list[float] | None:
        points = paths.get(name)
        return period_factors(points, f, n_periods).tolist() if points else None

    j, t_g = scenario["generation_shock"], scenario["generation_years"]
    exposure = pf.values["generation_exposure"]
    shocked, launch = None, 0
    if np.any(_host(j) > 0) and bool((_host(exposure) > 0).any()):
        shocked = 1.0 - j * exposure.reshape((-1,) + (1,) * ndim)
        if hasattr(t_g, "shape"):
            # n_g by the same rule as every duration, value by value, on the host.
            host = _host(t_g)
            launch = xp.asarray(np.vectorize(lambda t: periods(t, f))(host).astype(np.int64))
        else:
            launch = periods(float(t_g), f)
    return TimeShape(factors("rent_path"), factors("crypto_path"), shocked, launch)


def shock_factor(ts: TimeShape, k: int, rows: slice, xp):
    """``S_k = 1 - j e`` where ``k > n_g``, else 1 [1]; None where it is 1 in every cell."""
    if ts.shocked is None:
        return None
    if isinstance(ts.launch, int):
        return ts.shocked[rows] if k > ts.launch else None
    return xp.where(k > ts.launch, ts.shocked[rows], 1.0)


def rent_index(rent0, ts: TimeShape, k: int, d, dt: float, rows: slice, xp):
    """Market rent index ``m_k = rent P_k (1 - d)^(t_k) S_k`` [USD/GPU-hour].

    ``rent0`` is the loans' ``rent`` column (rows ``rows``).  With neither a
    rent path nor a shock this is model v2's ``rent (1 - d)^(t_k)``.
    """
    m = rent0 * (1.0 - d) ** (k * dt)
    if ts.rent_path is not None:
        m = m * ts.rent_path[k]
    shock = shock_factor(ts, k, rows, xp)
    return m if shock is None else m * shock


def crypto_index(k: int, c, D, xp, crypto_path: list[float] | None = None):
    """Crypto price index ``X_k = Q_k (1 - c min(k, D) / D)`` [1] (``Q_k = 1``
    without a crypto path)."""
    x = 1.0 - c * (xp.minimum(k, D) if hasattr(D, "shape") else min(k, D)) / D
    return x if crypto_path is None else x * crypto_path[k]


def fleet_cash_flow(
    ln: Any, rows: slice, j: int, d, dt: float, hours: float, xp, ts: TimeShape | None = None
):
    """Steps 1-2 of model.md for the loans ``rows`` in period ``j`` [USD]: the fleet's::

        u_j = utilization if m_j > e, else 0                      [1]
        R_j - P_j - F_j = g_j N H (s_j p_c + (1 - s_j) u_j m_j)
                          - g_j N H (s_j + (1 - s_j) u_j) e - g_j N opex / f

    at the rent index ``m_j`` (:func:`rent_index`): over deflation and the
    generation shock's cells only.  ``ln`` holds the loans' columns
    (:class:`gridstress.model._Loans`).
    """
    rent_j = rent_index(ln.rent0[rows], ts or TimeShape(), j, d, dt, rows, xp)
    util_j = xp.where(rent_j > ln.power_cost[rows], ln.util[rows], 0.0)
    in_service = j <= ln.n_life[rows]
    share_j = xp.where(j <= ln.n_contract[rows], ln.contracted[rows], 0.0)
    gpu_hours = xp.where(in_service, ln.n_gpus[rows] * hours, 0.0)
    merchant = (1.0 - share_j) * util_j
    revenue = gpu_hours * (share_j * ln.contract_rent[rows] + merchant * rent_j)
    power = gpu_hours * (share_j + merchant) * ln.power_cost[rows]
    fixed = xp.where(in_service, ln.n_gpus[rows] * ln.opex[rows], 0.0)
    return revenue - power - fixed


def mining_margin(ln: Any, rows: slice, j: int, c, D, dt: float, xp, crypto_path=None):
    """Step 3 of model.md for the loans ``rows`` in period ``j`` [USD]:
    ``M_j = max(0, mining_revenue X_j - mining_cost) / f`` (:func:`crypto_index`)."""
    price_j = crypto_index(j, c, D, xp, crypto_path)
    return xp.maximum(0.0, ln.mining_revenue[rows] * price_j - ln.mining_cost[rows]) * dt


class _Fleet:
    """What the appraisal reads of each loan, as ``(L, 1, ..., 1)`` columns."""

    def __init__(self, pf, ndim: int):
        def col(a):
            return a.reshape((-1,) + (1,) * ndim)

        v = pf.values
        dt = 1.0 / pf.periods_per_year
        self.rent0, self.util = col(v["rent"]), col(v["utilization"])
        self.power_cost = col(v["power_kw_per_gpu"] * v["power_price"])
        self.opex = col(v["fixed_opex_per_gpu_year"]) * dt
        self.n_life = col(pf.n_life)
        self.last = int(pf.n_life.max()) if pf.n_loans else 0


def appraisal_table(
    pf,
    deflation,
    discount_rate,
    xp,
    ndim: int,
    ts: TimeShape | None = None,
    appraisal_deflation: Any = None,
) -> list:
    """Fair value per GPU ``G_k`` for ``k = 0..K`` [USD/GPU], before the market price.

    The foresight appraisal (:func:`foresight_table`) where
    ``appraisal_deflation`` ``d_a`` is None or NaN, the market appraisal
    (:func:`market_table`) where it is a number; cell by cell where a block
    holds both.  Each entry broadcasts to ``(L,) +`` the cells of the inputs.
    """
    ts = ts or TimeShape()
    fleet = _Fleet(pf, ndim)
    d_a = appraisal_deflation
    empty = _host(np.nan if d_a is None else d_a)
    if np.isnan(empty).all():
        return foresight_table(pf, fleet, deflation, discount_rate, ts, xp)
    market = market_table(pf, fleet, deflation, discount_rate, ts, d_a, xp)
    if not np.isnan(empty).any():
        return market
    foresight = foresight_table(pf, fleet, deflation, discount_rate, ts, xp)
    return [xp.where(xp.isnan(d_a), g, h) for g, h in zip(foresight, market)]


def foresight_table(pf, fleet: _Fleet, deflation, discount_rate, ts: TimeShape, xp) -> list:
    """The foresight appraisal on the scenario's own rents (model.md, section 6)::

        pi_j = H u max(0, m_j - e) - opex / f                  [USD/GPU]
        G_k  = max(0, sum_{j=k+1..n_L} pi_j (1+y)^{-(j-k)/f})   [USD/GPU]

    evaluated backwards: ``S_{j-1} = w (pi_j + S_j)``, ``S_{n_L} = 0``,
    ``w = (1+y)^(-1/f)``.
    """
    dt = 1.0 / pf.periods_per_year
    hours = HOURS_PER_YEAR * dt
    K = pf.horizon
    w = (1.0 + discount_rate) ** (-dt)
    cells = [_shape(deflation), _shape(discount_rate)]
    if ts.shocked is not None:
        cells += [_shape(ts.shocked)[1:], _shape(ts.launch)]
    shape = (pf.n_loans,) + np.broadcast_shapes(*cells)
    s = xp.zeros(shape)
    table = [xp.zeros(shape) for _ in range(K + 1)]
    everyone = slice(None)
    for j in range(fleet.last, 0, -1):
        rent_j = rent_index(fleet.rent0, ts, j, deflation, dt, everyone, xp)
        income = hours * fleet.util * xp.maximum(0.0, rent_j - fleet.power_cost) - fleet.opex
        s = w * (xp.where(j <= fleet.n_life, income, 0.0) + s)
        if j - 1 <= K:
            table[j - 1] = xp.maximum(0.0, s)
    return table


def market_table(
    pf, fleet: _Fleet, deflation, discount_rate, ts: TimeShape, appraisal_deflation, xp
) -> list:
    """The market appraisal with the option to retire (model.md, section 14)::

        m~_{k,j} = m_k (1 - d_a)^((j-k)/f)                                 [USD/GPU-hour]
        pi~_{k,j} = H u max(0, m~_{k,j} - e) - opex / f                    [USD/GPU]
        W_{k,n_L} = 0,  W_{k,j-1} = max(0, (1+y)^(-1/f) (pi~_{k,j} + W_{k,j}))
        G_k = W_{k,k}                                                      [USD/GPU]

    ``m_0 = rent``.  Every ``k`` is carried at once along a leading axis, and
    period ``j`` steps only the ``k < j`` that still look ahead to it.
    """
    dt = 1.0 / pf.periods_per_year
    hours = HOURS_PER_YEAR * dt
    K, last = pf.horizon, fleet.last
    d_a = appraisal_deflation
    w = (1.0 + discount_rate) ** (-dt)
    cells = [_shape(deflation), _shape(discount_rate), _shape(d_a)]
    if ts.shocked is not None:
        cells += [_shape(ts.shocked)[1:], _shape(ts.launch)]
    shape = (pf.n_loans,) + np.broadcast_shapes(*cells)
    # G_k = 0 once no period of service is left (k >= n_L for every loan).
    top = min(K, last - 1)
    table = [xp.zeros(shape) for _ in range(K + 1)]
    if top < 0:
        return table
    everyone = slice(None)
    rents = xp.stack(
        [
            xp.broadcast_to(rent_index(fleet.rent0, ts, k, deflation, dt, everyone, xp), shape)
            for k in range(top + 1)
        ]
    )
    # ratio[l] = (1 - d_a)^(l/f) for the look-ahead l = j - k, as (l, 1, cells of d_a).
    lead = (1,) * (len(shape) - len(_shape(d_a)))
    ratio = xp.stack(
        [
            xp.reshape(xp.asarray((1.0 - d_a) ** (lag * dt)), lead + _shape(d_a))
            for lag in range(last + 1)
        ]
    )
    s = xp.zeros((top + 1,) + shape)
    for j in range(last, 0, -1):
        n = min(j, top + 1)  # k = 0..n-1 look ahead to period j
        expected = rents[:n] * ratio[j - n + 1 : j + 1][::-1]
        income = hours * fleet.util * xp.maximum(0.0, expected - fleet.power_cost) - fleet.opex
        s[:n] = xp.maximum(0.0, w * (xp.where(j <= fleet.n_life, income, 0.0) + s[:n]))
    for k in range(top + 1):
        table[k] = s[k]
    return table


__all__ = [
    "HOURS_PER_YEAR",
    "TimeShape",
    "appraisal_table",
    "crypto_index",
    "fleet_cash_flow",
    "foresight_table",
    "market_table",
    "mining_margin",
    "rent_index",
    "shock_factor",
    "time_shape",
]
