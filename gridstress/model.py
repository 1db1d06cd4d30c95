"""Model v3 (docs/model.md), vectorised over loans and cells, for any ``xp``.

:func:`evaluate` computes the results of one block of the grid.  It is
written against an array namespace ``xp`` (NumPy or CuPy), so the same code
runs on the CPU and, unchanged, on CuPy arrays.

How the work is shared
----------------------
Scenario parameters arrive as arrays shaped to broadcast against the block
(``(n_d, 1, 1)`` for deflation, ``(1, n_c, 1)`` for crypto drawdown, ...),
and loan fields as ``(L, 1, 1, 1)`` columns.  Broadcasting then computes each
quantity only over the axes it depends on:

- rents, GPU revenue and the collateral appraisal depend on deflation (and
  the discount rate, the generation shock's axes and the market's expected
  deflation, :mod:`gridstress.rents`) only;
- mining revenue and crypto collateral on the crypto drawdown only;
- the cash, covenant, default and market recursion on the path parameters
  (every scenario parameter but ``haircut``, ``crypto_haircut`` and
  ``liquidation_cost``, which enter only the recovery at default).  Each
  default path is therefore computed once and its loss evaluated for every
  value of the liquidation parameters.

A block is computed with its longest path axis last (:func:`axis_order`),
where NumPy's inner loops are long, and handed back in its own order.

The recursion runs period-outer, every loan of a cell stepped together in
period ``k``: first each loan's default triggers (:func:`cash_flow`,
:func:`cash_and_covenant`, :func:`ltv_test`, :func:`maturity_test`), then
:func:`market_step`, a reduction across the loans of each cell (the GPUs of
the loans that default in ``k`` are sold into one secondary market, whose
price index marks every other fleet's collateral in the periods after), then
:func:`close_defaults` closes the defaults of ``k`` at that period's price.
Each step takes a :class:`PathState` (:func:`start_state`) and a
:class:`Period`, and cites its section of docs/model.md; :func:`recoveries`
and :func:`cube_variables` follow the last period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import rents
from .params import SCENARIO_PARAMS
from .paths import Points
from .portfolio import PortfolioArrays
from .rents import TimeShape, appraisal_table, crypto_index
from .variables import CELL_VARIABLES, OUTPUTS, TRIGGERS

MODEL_VERSION = "3"

#: Arrays of one loan and path cell that the recursion holds at once (state
#: and temporaries), and arrays of one cell in the recovery step: block sizing.
STATE_ARRAYS_PER_LOAN = 30
CELL_ARRAYS = 12
PAYMENT, COVENANT, LTV, MATURITY = (TRIGGERS.index(t) for t in TRIGGERS)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def _is_inf(value: Any) -> bool:
    """True when a scenario parameter is infinite in every cell."""
    if isinstance(value, int | float):
        return math.isinf(value)
    return bool(np.all(np.isinf(np.asarray(value.get() if hasattr(value, "get") else value))))


class _Loans:
    """The portfolio's per-loan fields as ``(L, 1, ..., 1)`` columns on ``xp``."""

    def __init__(self, pf: PortfolioArrays, ndim: int, xp):
        def col(a):
            return a.reshape((-1,) + (1,) * ndim)

        v = pf.values
        dt = 1.0 / pf.periods_per_year
        self.col = col
        self.n_gpus = col(v["n_gpus"])
        self.rent0 = col(v["rent"])
        self.util = col(v["utilization"])
        self.contracted = col(v["contracted_share"])
        self.contract_rent = col(v["contract_rent"])
        self.power_cost = col(v["power_kw_per_gpu"] * v["power_price"])
        self.opex = col(v["fixed_opex_per_gpu_year"]) * dt
        self.mining_revenue = col(v["mining_revenue"])
        self.mining_cost = col(v["mining_cost"])
        self.crypto0 = col(v["crypto_collateral"])
        self.pledged_gpus = col(v["pledged_share"] * v["n_gpus"])
        self.cash0 = col(v["cash_reserve"])
        self.cash_cap = col(v["cash_cap"])
        # DSCR < -inf never holds: min_dscr = 0 means no covenant.
        self.dscr_floor = col(xp.where(v["min_dscr"] > 0, v["min_dscr"], -xp.inf))
        self.cure = col(v["cure_periods"])
        self.max_ltv = col(pf.max_ltv)
        self.refi = col(v["refi_advance_rate"])
        self.refi_min_dscr = col(v["refi_min_dscr"])
        self.n_life = col(pf.n_life)
        self.n_contract = col(pf.n_contract)
        self.n_refi = col(xp.asarray(pf.n_refi))
        self.book_basis = col(xp.asarray(pf.book_basis))


def cash_flow_offer(
    fleet: list, mining: list, rows: slice, n: int, y, dt: float, n_refi: np.ndarray, ln: _Loans, xp
):
    """The cash-flow refinancing offer ``K_n`` of the loans ``rows`` maturing in ``n`` [USD].

    ``K_n = max(0, sum_{j=n+1..n+n_r} CFADS_j (1+y)^{-(j-n)/f}) / refi_min_dscr``,
    ``n_r`` each loan's ``refi_term_years`` in periods (``n_refi``, on the
    host), with CFADS continued past maturity.  ``fleet[j]`` and
    ``mining[j]`` are every loan's :func:`~gridstress.rents.fleet_cash_flow`
    and :func:`~gridstress.rents.mining_margin` of period ``j``; the fleet's part (over deflation)
    and the mining part (over the crypto axes) are discounted apart and added
    once.
    """
    fleet_pv = mining_pv = 0.0
    for m in range(1, int(n_refi.max()) + 1):
        w = (1.0 + y) ** (-(m * dt))
        within = m <= ln.n_refi[rows]
        fleet_pv = fleet_pv + xp.where(within, fleet[n + m][rows] * w, 0.0)
        mining_pv = mining_pv + xp.where(within, mining[n + m][rows] * w, 0.0)
    return xp.maximum(0.0, fleet_pv + mining_pv) / ln.refi_min_dscr[rows]


@dataclass
class Market:
    """The secondary market for GPUs of each path cell (docs/model.md, section 8)."""

    overhang: Any  # Q_k [GPU]
    price: Any  # p_k [1]
    price_min: Any  # lowest p_k so far [1]
    decay: Any  # 2^(-dt / T) [1], 1 when T is infinite
    depth: Any  # W [GPU]
    book_share: Any  # theta [1]


@dataclass
class PathState:
    """One block's recursion: the inputs its steps read and the arrays they carry.

    The arrays from ``cash`` on, set by :func:`start_state`, are of shape
    ``(L,) + path cells``, loans in canonical order; the path cells span every
    axis of the block but the liquidation ones.
    """

    pf: PortfolioArrays
    ln: _Loans
    xp: Any
    dt: float  # period length [years]
    fleet: list  # R_j - P_j - F_j, j = 0..last, over deflation [USD]
    mining: list  # M_j, j = 0..last, over the crypto axes [USD]
    gpu_value: list  # G_k, k = 0..K [USD/GPU]
    crypto_drawdown: Any  # c [1]
    drawdown_periods: Any  # D [periods]
    discount_rate: Any  # y [1/year]
    market: Market | None  # None: W is infinite everywhere, p_k = 1 (model v1)
    time: TimeShape  # the paths and the generation shock
    cash: Any = None  # cash_k [USD]
    breaches: Any = None  # consecutive covenant breaches [periods]
    alive: Any = None  # no default yet
    dscr_min: Any = None  # lowest DSCR_k so far [1]
    trigger_of: Any = None  # index in TRIGGERS of the trigger that names the default, -1: none
    ead: Any = None  # EAD [USD]
    gpu_collateral: Any = None  # V*_tau p_tau [USD]
    crypto_collateral: Any = None  # C_tau [USD]
    cash_at_default: Any = None  # cash_tau [USD]
    discount_at_default: Any = None  # (1 + y)^(-t_tau) [1]
    default_years: Any = None  # t_tau [years], inf: no default


@dataclass
class Period:
    """What the steps of period ``k`` hand each other.

    Arrays have, or broadcast to, shape ``(active[k],) + path cells``: the
    loans still running in ``k`` (``rows``).  An untested trigger stays None.
    """

    k: int
    rows: slice
    cfads: Any = None  # CFADS_k [USD]
    debt_service: Any = None  # DS_k [USD]
    has_ds: Any = None  # DS_k > 0
    dscr: Any = None  # DSCR_k [1]
    cash: Any = None  # cash_k [USD]
    owed: Any = None  # O_k [USD]
    fair: Any = None  # V*_k [USD]
    crypto: Any = None  # C_k [USD]
    payment: Any = None
    covenant: Any = None
    ltv: Any = None
    trigger: Any = None  # any trigger fired
    new: Any = None  # the defaults of period k
    any_new: bool = False


def _at_market(st: PathState, fair):
    """Fair value ``fair`` [USD] at the market's current price index."""
    return fair * st.market.price if st.market is not None else fair


def start_state(
    pf: PortfolioArrays,
    scenario: dict[str, Any],
    ndim: int,
    xp,
    paths: dict[str, Points] | None = None,
) -> PathState:
    """The recursion before period 1, with the tables its steps read.

    ``cash_0 = cash_reserve``, ``Q_0 = 0``, ``p_0 = 1``, no breach or default;
    the block's :class:`~gridstress.rents.TimeShape` (``paths``: the run's
    ``rent_path`` and ``crypto_path``), every loan's fleet cash flow and
    mining margin (:mod:`gridstress.rents`) up to the last period a cash-flow
    offer projects, and :func:`~gridstress.rents.appraisal_table`.
    """
    dt = 1.0 / pf.periods_per_year
    hours = rents.HOURS_PER_YEAR * dt
    d, y = scenario["deflation"], scenario["discount_rate"]
    c, D = scenario["crypto_drawdown"], scenario["drawdown_periods"]
    ln = _Loans(pf, ndim, xp)
    last = pf.horizon + int(pf.n_refi.max(initial=0))
    ts = rents.time_shape(pf, scenario, paths, max(last, int(pf.n_life.max(initial=0))), ndim, xp)
    everyone = slice(None)
    fleet: list[Any] = [None] + [
        rents.fleet_cash_flow(ln, everyone, j, d, dt, hours, xp, ts) for j in range(1, last + 1)
    ]
    # X_j, hence M_j, stays the same once the fall is complete (j >= D) and the
    # crypto path is flat: those periods share one array.
    settled = math.ceil(float(D.max()) if hasattr(D, "max") else D)
    q = ts.crypto_path
    mining: list[Any] = [None]
    for j in range(1, last + 1):
        same = j > settled and (q is None or q[j] == q[j - 1])
        mining.append(mining[-1] if same else rents.mining_margin(ln, everyone, j, c, D, dt, xp, q))
    path_params = [scenario[name] for name, p in SCENARIO_PARAMS.items() if p.path]
    path_shape = (pf.n_loans,) + np.broadcast_shapes(*(_shape(p) for p in path_params))
    cells = path_shape[1:]
    depth = scenario["market_depth_gpus"]
    # W infinite everywhere: no sale moves the price (model v1); skip the step.
    market = None
    if not _is_inf(depth):
        decay = 2.0 ** (-dt / scenario["market_half_life_years"])
        share = scenario["book_share"]
        market = Market(xp.zeros(cells), xp.ones(cells), xp.ones(cells), decay, depth, share)
    table = appraisal_table(pf, d, y, xp, ndim, ts, scenario["appraisal_deflation"])
    st = PathState(pf, ln, xp, dt, fleet, mining, table, c, D, y, market, ts)
    st.cash = xp.broadcast_to(ln.cash0, path_shape).copy()
    st.alive = xp.ones(path_shape, dtype=bool)
    st.dscr_min = xp.full(path_shape, xp.inf)
    st.trigger_of = xp.full(path_shape, -1, dtype=np.int8)
    st.default_years = xp.full(path_shape, xp.inf)
    for name in ("breaches", "ead", "gpu_collateral", "crypto_collateral"):
        setattr(st, name, xp.zeros(path_shape))
    st.cash_at_default = xp.zeros(path_shape)
    st.discount_at_default = xp.zeros(path_shape)
    return st


def cash_flow(st: PathState, p: Period) -> None:
    """Cash flow available for debt service, and DSCR, in period ``k`` (section 4)::

        CFADS_k = R_k - P_k - F_k + M_k               [USD]
        DSCR_k  = CFADS_k / DS_k,  where DS_k > 0     [1]

    Parameters
    ----------
    st, p : PathState, Period
        Sets ``p.cfads``, ``p.debt_service``, ``p.has_ds``, ``p.dscr``; lowers ``st.dscr_min``.
    """
    xp, rows, k = st.xp, p.rows, p.k
    p.cfads = st.fleet[k][rows] + st.mining[k][rows]
    p.debt_service = st.ln.col(st.pf.debt_service[rows, k])
    p.has_ds = p.debt_service > 0
    p.dscr = p.cfads / xp.where(p.has_ds, p.debt_service, 1.0)
    low = st.dscr_min[rows]
    st.dscr_min[rows] = xp.where(st.alive[rows] & p.has_ds, xp.minimum(low, p.dscr), low)


def cash_and_covenant(st: PathState, p: Period) -> None:
    """The cash account, and the payment and covenant triggers, in period ``k`` (section 5)::

        cash_k = min(cash_cap, cash_{k-1} + CFADS_k - DS_k)                [USD]
        b_k    = b_{k-1} + 1  if DS_k > 0 and DSCR_k < min_dscr, else 0    [periods]
        payment:   cash_k < 0
        covenant:  b_k >= cure_periods

    ``min_dscr = 0`` means no covenant (a floor of -inf, never breached; section 11).

    Parameters
    ----------
    st, p : PathState, Period
        Sets ``p.cash`` and the two triggers; updates ``st.cash`` and ``st.breaches``.
    """
    xp, ln, rows = st.xp, st.ln, p.rows
    p.cash = xp.minimum(ln.cash_cap[rows], st.cash[rows] + p.cfads - p.debt_service)
    st.cash[rows] = p.cash
    p.payment = p.trigger = p.cash < 0
    if st.pf.has_covenant[rows].any():
        breach = p.has_ds & (p.dscr < ln.dscr_floor[rows])
        st.breaches[rows] = xp.where(breach, st.breaches[rows] + 1.0, 0.0)
        p.covenant = st.breaches[rows] >= ln.cure[rows]
        p.trigger = p.trigger | p.covenant


def ltv_test(st: PathState, p: Period) -> None:
    """Collateral and the LTV trigger in period ``k``, at the price ``p_{k-1}`` (section 6)::

        V*_k  = pledged_share n_gpus G_k            [USD]
        V_k   = V*_k p_{k-1}                        [USD]
        C_k   = crypto_collateral X_k               [USD]
        LTV_k = O_k / (V_k + C_k)    market basis   [1]
        LTV_k = O_k / (BV_k + C_k)   book basis     [1]
        ltv:  LTV_k > max_ltv

    ``LTV_k = 0`` where nothing is owed, ``+inf`` where only the
    denominator is 0.

    Parameters
    ----------
    st, p : PathState, Period
        Sets ``p.owed``, ``p.fair``, ``p.crypto``, and ``p.ltv`` where it is tested.
    """
    xp, pf, ln, rows, k = st.xp, st.pf, st.ln, p.rows, p.k
    p.owed = ln.col(pf.owed[rows, k])
    p.fair = ln.pledged_gpus[rows] * st.gpu_value[k][rows]
    price_k = crypto_index(k, st.crypto_drawdown, st.drawdown_periods, xp, st.time.crypto_path)
    p.crypto = ln.crypto0[rows] * price_k
    if not pf.has_ltv_covenant[rows].any():
        return
    collateral = _at_market(st, p.fair) + p.crypto
    basis = collateral
    if pf.book_basis[rows].any():
        book = ln.col(pf.book_value[rows, k]) + p.crypto
        basis = xp.where(ln.book_basis[rows], book, collateral)
    p.ltv = xp.where(p.owed > 0, p.owed / basis, 0.0) > ln.max_ltv[rows]
    p.trigger = p.trigger | p.ltv


def maturity_test(st: PathState, p: Period) -> None:
    """The maturity trigger of the loans with a balloon due in period ``k = n`` (section 7)::

        collateral offer:  refi_advance_rate (V_n + C_n)                  [USD]
        cash-flow offer:   K_n  (:func:`cash_flow_offer`)                 [USD]
        maturity:  balloon_n > max(cash_n, 0) + max(collateral offer, K_n)

    Parameters
    ----------
    st, p : PathState, Period
        Updates ``p.trigger``; ``st.market.price`` is still ``p_{k-1}``.
    """
    xp, pf, ln, k = st.xp, st.pf, st.ln, p.k
    # Canonical order sorts loans by maturity, longest first: those maturing
    # in k are the rows that are running in k but not in k + 1.
    first = int(pf.active[k + 1]) if k < pf.horizon else 0
    n_active = p.rows.stop
    if not pf.balloon_due[first:n_active, k].any():
        return
    mature = slice(first, n_active)
    offer = ln.refi[mature] * (_at_market(st, p.fair[mature]) + p.crypto[mature])
    if (pf.n_refi[mature] * pf.balloon_due[mature, k]).any():
        on_cash_flow = cash_flow_offer(
            st.fleet, st.mining, mature, k, st.discount_rate, st.dt, pf.n_refi[mature], ln, xp
        )
        offer = xp.maximum(offer, on_cash_flow)
    maturity = xp.zeros(p.trigger.shape, dtype=bool)
    maturity[mature] = ln.col(pf.balloon[mature, k]) > xp.maximum(p.cash[mature], 0.0) + offer
    p.trigger = p.trigger | maturity


def market_step(st: PathState, p: Period) -> None:
    """The secondary market of each path cell after the defaults of period ``k`` (section 8)::

        S_k = sum over loans with tau = k of pledged_share n_gpus g_k   [GPU]
        Q_k = Q_{k-1} 2^(-dt / T) + S_k / theta                         [GPU]
        p_k = 2^(-Q_k / W)                                              [1]

    Nothing moves in a deep market (``st.market`` None: ``p_k = 1``).

    Parameters
    ----------
    st, p : PathState, Period
        Updates ``st.market`` from ``p.new``: its overhang, price and lowest price.
    """
    m = st.market
    if m is None:
        return
    m.overhang = m.overhang * m.decay
    # Loan after loan in canonical order, only those that default in some
    # cell and have in-service pledged GPUs (the others add 0).
    sellers = np.flatnonzero(st.pf.sells_until[: p.rows.stop] >= p.k)
    if p.any_new and sellers.size:
        hit = p.new[sellers].reshape(sellers.size, -1).any(axis=1)
        sold = 0.0
        for i in sellers[np.asarray(hit.tolist(), dtype=bool)]:
            sold = sold + st.xp.where(p.new[i], st.ln.pledged_gpus[i], 0.0)
        m.overhang = m.overhang + sold / m.book_share
    m.price = 2.0 ** (-m.overhang / m.depth)
    m.price_min = st.xp.minimum(m.price_min, m.price)


def close_defaults(st: PathState, p: Period) -> None:
    """Close the loans that default in period ``k``, recorded at ``tau = k`` (section 9)::

        EAD      = B_{tau-1}  for a payment default,  else O_tau   [USD]
        V_tau    = V*_tau p_tau                                    [USD]
        discount = (1 + y)^(-t_tau)                                [1]

    with ``C_tau``, ``cash_tau`` and ``t_tau`` [years]; the first trigger in
    the order payment, covenant, LTV, maturity names the default.

    Parameters
    ----------
    st, p : PathState, Period
        Updates the default record and ``st.alive``; ``st.market.price`` is ``p_k``.
    """
    if not p.any_new:
        return
    xp, rows, new = st.xp, p.rows, p.new
    code = xp.full(new.shape, MATURITY, dtype=np.int8)
    for fired, number in ((p.ltv, LTV), (p.covenant, COVENANT), (p.payment, PAYMENT)):
        if fired is not None:
            code = xp.where(fired, np.int8(number), code)
    st.trigger_of[rows] = xp.where(new, code, st.trigger_of[rows])
    # Payment default: nothing of period k was paid, so B_{k-1} is exposed.
    ead_k = xp.where(p.payment, st.ln.col(st.pf.balance[rows, p.k - 1]), p.owed)
    st.ead[rows] = xp.where(new, ead_k, st.ead[rows])
    # The fleet is sold at p_k, its own sale included.
    st.gpu_collateral[rows] = xp.where(new, _at_market(st, p.fair), st.gpu_collateral[rows])
    st.crypto_collateral[rows] = xp.where(new, p.crypto, st.crypto_collateral[rows])
    st.cash_at_default[rows] = xp.where(new, p.cash, st.cash_at_default[rows])
    t_k = p.k * st.dt
    discount_k = (1.0 + st.discount_rate) ** (-t_k)
    st.discount_at_default[rows] = xp.where(new, discount_k, st.discount_at_default[rows])
    st.default_years[rows] = xp.where(new, t_k, st.default_years[rows])
    st.alive[rows] = st.alive[rows] & ~new


@dataclass
class Losses:
    """The recovery step's sums over loans, each of the block's shape unless noted."""

    loss: Any  # [USD]
    loss_pv: Any  # [USD]
    recovered: Any  # [USD]
    by_segment: list  # loss per segment [USD]
    by_trigger: list  # defaulted principal per trigger, over path cells [USD]
    per_loan: list  # each loan's loss, None where it defaults in no cell [USD]


def recoveries(st: PathState, scenario: dict[str, Any], shape: tuple[int, ...]) -> Losses:
    """Recovery and loss of each defaulted loan, summed in canonical order (section 9)::

        recovery = min(EAD, V_tau (1 - l)(1 - h) + C_tau (1 - l)(1 - h_c)
                            + max(cash_tau, 0))                     [USD]
        loss     = EAD - recovery                                   [USD]
        loss_pv  = loss (1 + y)^(-t_tau)                            [USD]

    with fire-sale haircut ``h``, crypto haircut ``h_c`` and liquidation cost
    ``l``, which enter nowhere else.  The defaulted principal by trigger [USD]
    is summed in the same pass.

    Parameters
    ----------
    st, scenario, shape : PathState, dict, tuple of int
        The recursion after the last period, and :func:`evaluate`'s arguments.
    """
    xp, pf = st.xp, st.pf
    defaulted = ~st.alive
    keep = (1.0 - scenario["liquidation_cost"]) * (1.0 - scenario["haircut"])
    keep_crypto = (1.0 - scenario["liquidation_cost"]) * (1.0 - scenario["crypto_haircut"])
    by_segment = [xp.zeros(shape) for _ in pf.segments]
    by_trigger = [xp.zeros(st.alive.shape[1:]) for _ in TRIGGERS]
    loans: list[Any] = [None] * pf.n_loans
    out = Losses(xp.zeros(shape), xp.zeros(shape), xp.zeros(shape), by_segment, by_trigger, loans)
    principal = st.ln.col(pf.values["principal"])
    # Loan by loan, so that working memory is one loan's cells, not all loans'.
    any_default = np.asarray(defaulted.reshape(pf.n_loans, -1).any(axis=1).tolist(), dtype=bool)
    for i in np.flatnonzero(any_default):
        for number in range(len(TRIGGERS)):
            out.by_trigger[number] = out.by_trigger[number] + xp.where(
                st.trigger_of[i] == number, principal[i], 0.0
            )
        proceeds = (
            st.gpu_collateral[i] * keep
            + st.crypto_collateral[i] * keep_crypto
            + xp.maximum(st.cash_at_default[i], 0.0)
        )
        recovery = xp.where(defaulted[i], xp.minimum(st.ead[i], proceeds), 0.0)
        loss_i = st.ead[i] - recovery  # 0 where no default: ead stays 0 there
        out.loss += loss_i
        out.loss_pv += loss_i * st.discount_at_default[i]
        out.recovered += recovery
        out.by_segment[pf.segment_index[i]] += loss_i
        out.per_loan[i] = loss_i
    return out


def cube_variables(
    st: PathState, losses: Losses, shape: tuple[int, ...], per_loan: bool
) -> dict[str, Any]:
    """The cube's variables of the block (section 10), shaped as :func:`evaluate` says.

    Rates are shares of the total principal ``B0`` [1], and
    ``breakeven_spread_bps = 1e4 loss_pv / (B0 WAL)`` [bp].
    """
    xp, pf = st.xp, st.pf
    defaulted = ~st.alive
    principal = st.ln.col(pf.values["principal"])
    total = pf.total_principal
    out: dict[str, Any] = {"loss": losses.loss, "loss_pv": losses.loss_pv}
    out["loss_rate"] = losses.loss / total
    out["defaults"] = defaulted.sum(axis=0).astype(xp.float64)
    out["default_rate"] = _sum_over_loans(xp.where(defaulted, principal, 0.0), xp) / total
    first = st.default_years.min(axis=0)
    out["first_default_years"] = xp.where(xp.isinf(first), xp.nan, first)
    lowest = st.dscr_min.min(axis=0)
    out["min_dscr"] = xp.where(xp.isinf(lowest), xp.nan, lowest)
    ead_sum = _sum_over_loans(st.ead, xp)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["recovery_rate"] = xp.where(ead_sum > 0, losses.recovered / ead_sum, xp.nan)
    out["breakeven_spread_bps"] = 1e4 * losses.loss_pv / pf.principal_wal
    m = st.market
    out["market_price_min"] = m.price_min if m is not None else xp.ones(st.alive.shape[1:])
    assert set(out) == set(CELL_VARIABLES)
    out = {name: xp.broadcast_to(value, shape) for name, value in out.items()}
    out["loss_by_segment"] = xp.stack(losses.by_segment, axis=-1)
    out["default_rate_by_trigger"] = xp.stack(
        [xp.broadcast_to(part / total, shape) for part in losses.by_trigger], axis=-1
    )
    if per_loan:
        years = xp.where(xp.isinf(st.default_years), xp.nan, st.default_years)
        out["loan_default_years"] = xp.moveaxis(years, 0, -1)
        out["loan_loss"] = xp.stack(
            [xp.zeros(shape) if part is None else part for part in losses.per_loan], axis=-1
        )
    assert set(out) == {name for name, o in OUTPUTS.items() if per_loan or not o.per_loan}
    return out


def evaluate(
    pf: PortfolioArrays,
    scenario: dict[str, Any],
    shape: tuple[int, ...],
    xp=np,
    per_loan: bool = False,
    paths: dict[str, Points] | None = None,
) -> dict[str, Any]:
    """Results of model v3 for one block of cells.

    Parameters
    ----------
    pf : PortfolioArrays
        The portfolio, with arrays already on ``xp``'s device.
    scenario : dict
        Every scenario parameter of :data:`gridstress.params.SCENARIO_PARAMS`,
        each a float or an ``xp`` array that broadcasts to ``shape``.
    shape : tuple of int
        Shape of the block of cells.
    xp : module
        ``numpy`` or ``cupy``.
    per_loan : bool
        Also return ``loan_default_years`` and ``loan_loss``.
    paths : dict, optional
        The run's scenario paths (``RunConfig.paths``: ``rent_path``,
        ``crypto_path``, those given) as ``((years, index), ...)`` points.

    Returns
    -------
    dict of str to array
        The variables of :data:`gridstress.variables.OUTPUTS` (per-loan ones
        only with ``per_loan``), each of shape ``shape`` plus its extra dim
        (``segment``, ``trigger`` or ``loan``, last).  ``loan_default_years``
        has size 1 on the liquidation axes, whose values change no default.
    """
    missing = set(SCENARIO_PARAMS) - set(scenario)
    if missing:
        raise KeyError(f"scenario lacks {sorted(missing)}")
    order = axis_order(scenario, shape)
    if order == sorted(order):
        return _evaluate(pf, scenario, shape, xp, per_loan, paths)
    moved = {k: xp.transpose(v, order) if _shape(v) else v for k, v in scenario.items()}
    out = _evaluate(pf, moved, tuple(shape[i] for i in order), xp, per_loan, paths)
    back = [int(i) for i in np.argsort(order)]
    return {k: xp.transpose(v, back + list(range(len(shape), v.ndim))) for k, v in out.items()}


def axis_order(scenario: dict[str, Any], shape: tuple[int, ...]) -> list[int]:
    """The order in which :func:`evaluate` lays out the block's axes.

    NumPy's inner loop runs along the last axis, so a short last axis (four
    generation shocks after fifty crypto drawdowns) costs a loop per few
    cells: the longest path axis goes last among the path axes, and the
    liquidation axes, of size 1 in the recursion, after them.  A usual
    block (deflation, crypto drawdown, haircut; deflation cut) keeps its order.
    """
    if any(len(_shape(v)) not in (0, len(shape)) for v in scenario.values()):
        return list(range(len(shape)))
    liquidation = {
        i
        for name, param in SCENARIO_PARAMS.items()
        if not param.path
        for i, n in enumerate(_shape(scenario[name]))
        if n > 1
    }
    path = [i for i in range(len(shape)) if i not in liquidation]
    if path:
        longest = max(reversed(path), key=lambda i: shape[i])  # the last of equals
        path = [i for i in path if i != longest] + [longest]
    return path + sorted(liquidation)


def _evaluate(pf, scenario, shape, xp, per_loan, paths) -> dict[str, Any]:
    """:func:`evaluate` in the block's own axis order."""
    st = start_state(pf, scenario, len(shape), xp, paths)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(1, pf.horizon + 1):
            p = Period(k, slice(0, int(pf.active[k])))
            cash_flow(st, p)
            cash_and_covenant(st, p)
            ltv_test(st, p)
            maturity_test(st, p)
            p.new = st.alive[p.rows] & p.trigger
            p.any_new = bool(p.new.any())
            market_step(st, p)
            close_defaults(st, p)
    return cube_variables(st, recoveries(st, scenario, shape), shape, per_loan)


def _sum_over_loans(values, xp):
    """Sum over the loan axis (0), adding loan after loan in canonical order.

    ``values.sum(axis=0)`` adds pairwise when the cells of a block lie in one
    column (a one-cell block), so a cell's last bits would depend on how the
    grid was cut into blocks; a running sum does not.
    """
    return xp.cumsum(values, axis=0)[-1]


def block_bytes(
    n_loans: int, n_segments: int, path_cells: int, cells: int, per_loan: bool = False
) -> int:
    """Upper bound of :func:`evaluate`'s working memory for one block [bytes].

    ``path_cells`` counts the block's cells over the axes that change default
    paths (the liquidation axes excluded), ``cells`` all of its cells.
    """
    per_cell = (
        CELL_ARRAYS
        + 2 * len(CELL_VARIABLES)
        + 2 * n_segments
        + 2 * len(TRIGGERS)
        + (2 * n_loans if per_loan else 0)
    )
    per_path = STATE_ARRAYS_PER_LOAN + (2 if per_loan else 0)
    return 8 * (per_path * n_loans * path_cells + per_cell * cells)


def scenario_arrays(axes_values: dict[str, Any], fixed: Mapping[str, float | None], xp=np):
    """Scenario parameters for a block: axis values reshaped to broadcast.

    ``axes_values`` maps each axis name, in dim order, to its values in the
    block; ``fixed`` holds the scenario parameters that are not axes.  An
    empty one (None: ``appraisal_deflation`` left out) becomes NaN, which
    the model reads as its ``empty`` meaning (the foresight appraisal).
    """
    ndim = len(axes_values)
    out: dict[str, Any] = {}
    for i, (name, values) in enumerate(axes_values.items()):
        shape = [1] * ndim
        shape[i] = len(values)
        out[name] = xp.asarray(np.asarray(values, dtype=np.float64).reshape(shape))
    for name, value in fixed.items():
        if name not in out:
            out[name] = math.nan if value is None else float(value)
    return out


__all__ = [
    "MODEL_VERSION",
    "appraisal_table",
    "axis_order",
    "block_bytes",
    "cash_flow_offer",
    "crypto_index",
    "evaluate",
    "scenario_arrays",
]
