"""Model v2 (docs/model.md), vectorised over loans and cells, for any ``xp``.

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
  the discount rate) only;
- mining revenue and crypto collateral on the crypto drawdown only;
- the cash, covenant, default and market recursion on the path parameters
  (every scenario parameter but ``haircut``, ``crypto_haircut`` and
  ``liquidation_cost``, which enter only the recovery at default).  Each
  default path is therefore computed once and its loss evaluated for every
  value of the liquidation parameters.

The recursion runs period-outer, every loan of a cell stepped together in
period ``k``: first each loan's default triggers, then the market step, a
reduction across the loans of each cell (the GPUs of the loans that default
in ``k`` are sold into one secondary market, whose price index marks every
other fleet's collateral in the periods after), then the defaults of ``k``
are closed at that period's price.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .params import SCENARIO_PARAMS
from .portfolio import PortfolioArrays
from .variables import CELL_VARIABLES, OUTPUTS, TRIGGERS

MODEL_VERSION = "2"
HOURS_PER_YEAR = 8760.0

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


def crypto_index(k: int, c, D, xp):
    """Crypto price index ``X_k = 1 - c min(k, D) / D`` [1]."""
    return 1.0 - c * (xp.minimum(k, D) if hasattr(D, "shape") else min(k, D)) / D


def appraisal_table(pf: PortfolioArrays, deflation, discount_rate, xp, ndim: int) -> list:
    """Fair value per GPU ``G_k`` for ``k = 0..K`` [USD/GPU], before the market price.

    ``G_k = max(0, sum_{j=k+1..n_L} pi_j (1+y)^{-(j-k)/f})`` with the per-GPU
    merchant net income ``pi_j = H u max(0, m_j - e) - opex / f``, evaluated
    backwards: ``S_{j-1} = w (pi_j + S_j)``, ``S_{n_L} = 0``, ``w = (1+y)^(-1/f)``.
    Each entry has shape ``(L,) + broadcast(deflation, discount_rate)``.
    """
    f = pf.periods_per_year
    dt = 1.0 / f
    hours = HOURS_PER_YEAR * dt

    def col(a):
        return a.reshape((-1,) + (1,) * ndim)

    v = pf.values
    rent0, util = col(v["rent"]), col(v["utilization"])
    power_cost = col(v["power_kw_per_gpu"] * v["power_price"])
    opex = col(v["fixed_opex_per_gpu_year"]) * dt
    n_life = col(pf.n_life)
    K = pf.horizon
    last = int(pf.n_life.max()) if pf.n_loans else 0
    w = (1.0 + discount_rate) ** (-dt)
    shape = (pf.n_loans,) + np.broadcast_shapes(_shape(deflation), _shape(discount_rate))
    s = xp.zeros(shape)
    table = [xp.zeros(shape) for _ in range(K + 1)]
    for j in range(last, 0, -1):
        rent_j = rent0 * (1.0 - deflation) ** (j * dt)
        income = hours * util * xp.maximum(0.0, rent_j - power_cost) - opex
        s = w * (xp.where(j <= n_life, income, 0.0) + s)
        if j - 1 <= K:
            table[j - 1] = xp.maximum(0.0, s)
    return table


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


def fleet_cash_flow(ln: _Loans, rows: slice, j: int, d, dt: float, hours: float, xp):
    """Steps 1-2 of model.md for the loans ``rows`` in period ``j`` [USD]: the
    fleet's ``R_j - P_j - F_j``, which depends on deflation only."""
    rent_j = ln.rent0[rows] * (1.0 - d) ** (j * dt)
    util_j = xp.where(rent_j > ln.power_cost[rows], ln.util[rows], 0.0)
    in_service = j <= ln.n_life[rows]
    share_j = xp.where(j <= ln.n_contract[rows], ln.contracted[rows], 0.0)
    gpu_hours = xp.where(in_service, ln.n_gpus[rows] * hours, 0.0)
    merchant = (1.0 - share_j) * util_j
    revenue = gpu_hours * (share_j * ln.contract_rent[rows] + merchant * rent_j)
    power = gpu_hours * (share_j + merchant) * ln.power_cost[rows]
    fixed = xp.where(in_service, ln.n_gpus[rows] * ln.opex[rows], 0.0)
    return revenue - power - fixed


def mining_margin(ln: _Loans, rows: slice, j: int, c, D, dt: float, xp):
    """Step 3 of model.md for the loans ``rows`` in period ``j`` [USD]:
    ``M_j = max(0, mining_revenue X_j - mining_cost) / f``."""
    price_j = crypto_index(j, c, D, xp)
    return xp.maximum(0.0, ln.mining_revenue[rows] * price_j - ln.mining_cost[rows]) * dt


def cash_flow_offer(
    fleet: list, mining: list, rows: slice, n: int, y, dt: float, n_refi: np.ndarray, ln: _Loans, xp
):
    """The cash-flow refinancing offer ``K_n`` of the loans ``rows`` maturing in ``n`` [USD].

    ``K_n = max(0, sum_{j=n+1..n+n_r} CFADS_j (1+y)^{-(j-n)/f}) / refi_min_dscr``,
    ``n_r`` each loan's ``refi_term_years`` in periods (``n_refi``, on the
    host), with CFADS continued past maturity.  ``fleet[j]`` and
    ``mining[j]`` are every loan's :func:`fleet_cash_flow` and
    :func:`mining_margin` of period ``j``; the fleet's part (over deflation)
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


def evaluate(
    pf: PortfolioArrays,
    scenario: dict[str, Any],
    shape: tuple[int, ...],
    xp=np,
    per_loan: bool = False,
) -> dict[str, Any]:
    """Results of model v2 for one block of cells.

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
    ndim = len(shape)
    f = pf.periods_per_year
    dt = 1.0 / f
    hours = HOURS_PER_YEAR * dt
    K = pf.horizon
    L = pf.n_loans

    d = scenario["deflation"]
    c = scenario["crypto_drawdown"]
    D = scenario["drawdown_periods"]
    y = scenario["discount_rate"]
    depth = scenario["market_depth_gpus"]
    half_life = scenario["market_half_life_years"]
    book_share = scenario["book_share"]

    ln = _Loans(pf, ndim, xp)
    col = ln.col
    gpu_value = appraisal_table(pf, d, y, xp, ndim)
    # Every loan's fleet cash flow (over deflation) and mining margin (over the
    # crypto axes) per period, to the last one a cash-flow offer projects.
    last = K + int(pf.n_refi.max(initial=0))
    everyone = slice(None)
    fleet: list[Any] = [None] + [
        fleet_cash_flow(ln, everyone, j, d, dt, hours, xp) for j in range(1, last + 1)
    ]
    # X_j, hence M_j, stays the same once the fall is complete (j >= D): those
    # periods share one array.
    settled = math.ceil(float(D.max()) if hasattr(D, "max") else D)
    mining: list[Any] = [None]
    for j in range(1, last + 1):
        mining.append(mining[-1] if j > settled else mining_margin(ln, everyone, j, c, D, dt, xp))
    path_params = [scenario[name] for name, p in SCENARIO_PARAMS.items() if p.path]
    path_shape = (L,) + np.broadcast_shapes(*(_shape(p) for p in path_params))
    cell_shape = path_shape[1:]
    # W infinite everywhere: no sale moves the price (model v1); skip the step.
    market = not _is_inf(depth)
    if market:
        overhang = xp.zeros(cell_shape)  # Q_k [GPU]
        price = xp.ones(cell_shape)  # p_k
        price_min = xp.ones(cell_shape)
        decay = 2.0 ** (-dt / half_life)  # 1 when T is infinite

    cash = xp.broadcast_to(ln.cash0, path_shape).copy()
    breaches = xp.zeros(path_shape)
    alive = xp.ones(path_shape, dtype=bool)
    ead = xp.zeros(path_shape)
    gpu_collateral = xp.zeros(path_shape)  # V*_tau p_tau
    crypto_collateral = xp.zeros(path_shape)
    cash_at_default = xp.zeros(path_shape)
    discount_at_default = xp.zeros(path_shape)
    default_years = xp.full(path_shape, xp.inf)
    dscr_min = xp.full(path_shape, xp.inf)
    trigger_of = xp.full(path_shape, -1, dtype=np.int8)

    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(1, K + 1):
            n_active = int(pf.active[k])
            rows = slice(0, n_active)
            t_k = k * dt
            # 1-5. Cash flow, DSCR and the cash account (capped at cash_cap).
            cfads_k = fleet[k][rows] + mining[k][rows]
            price_k = crypto_index(k, c, D, xp)
            debt_service = col(pf.debt_service[rows, k])
            has_ds = debt_service > 0
            dscr = cfads_k / xp.where(has_ds, debt_service, 1.0)
            cash_k = xp.minimum(ln.cash_cap[rows], cash[rows] + cfads_k - debt_service)
            cash[rows] = cash_k
            payment = cash_k < 0
            trigger = payment
            covenant = ltv = None
            # 6. Covenant: cure_periods consecutive breaches of min_dscr.
            if pf.has_covenant[rows].any():
                breach = has_ds & (dscr < ln.dscr_floor[rows])
                breaches[rows] = xp.where(breach, breaches[rows] + 1.0, 0.0)
                covenant = breaches[rows] >= ln.cure[rows]
                trigger = trigger | covenant
            # 7. Collateral: fair value V*_k, marked to the market at p_{k-1}.
            owed = col(pf.owed[rows, k])
            fair_k = ln.pledged_gpus[rows] * gpu_value[k][rows]
            crypto_k = ln.crypto0[rows] * price_k
            tests_ltv = bool(pf.has_ltv_covenant[rows].any())
            if tests_ltv:
                # LTV = O/(V+C) (or O/(BV+C) on book basis): inf when only the
                # denominator is 0, 0 when nothing is owed.
                collateral = (fair_k * price if market else fair_k) + crypto_k
                basis = collateral
                if pf.book_basis[rows].any():
                    book = col(pf.book_value[rows, k]) + crypto_k
                    basis = xp.where(ln.book_basis[rows], book, collateral)
                ltv = xp.where(owed > 0, owed / basis, 0.0) > ln.max_ltv[rows]
                trigger = trigger | ltv
            # 8. Maturity of the loans with n = k and a balloon: the better of
            # the collateral and the cash-flow offer.
            first = int(pf.active[k + 1]) if k < K else 0
            if pf.balloon_due[first:n_active, k].any():
                mature = slice(first, n_active)
                gpu_n = fair_k[mature] * price if market else fair_k[mature]
                offer = ln.refi[mature] * (gpu_n + crypto_k[mature])
                if (pf.n_refi[mature] * pf.balloon_due[mature, k]).any():
                    offer = xp.maximum(
                        offer,
                        cash_flow_offer(fleet, mining, mature, k, y, dt, pf.n_refi[mature], ln, xp),
                    )
                maturity = xp.zeros(trigger.shape, dtype=bool)
                maturity[mature] = (
                    col(pf.balloon[mature, k]) > xp.maximum(cash_k[mature], 0.0) + offer
                )
                trigger = trigger | maturity

            was_alive = alive[rows]
            dscr_min[rows] = xp.where(
                was_alive & has_ds, xp.minimum(dscr_min[rows], dscr), dscr_min[rows]
            )
            new = was_alive & trigger
            any_new = bool(new.any())
            # Market step: the in-service pledged GPUs of the loans that default
            # in k are sold; the overhang decays with half-life T.
            if market:
                overhang = overhang * decay
                # Loan after loan in canonical order, only those that default in
                # some cell and have in-service pledged GPUs (the others add 0).
                sellers = np.flatnonzero(pf.sells_until[:n_active] >= k)
                if any_new and sellers.size:
                    hit = new[sellers].reshape(sellers.size, -1).any(axis=1)
                    sold = 0.0
                    for i in sellers[np.asarray(hit.tolist(), dtype=bool)]:
                        sold = sold + xp.where(new[i], ln.pledged_gpus[i], 0.0)
                    overhang = overhang + sold / book_share
                price = 2.0 ** (-overhang / depth)
                price_min = xp.minimum(price_min, price)
            if any_new:
                # The first trigger in model.md's order names the default.
                code = xp.full(new.shape, MATURITY, dtype=np.int8)
                for fired, number in ((ltv, LTV), (covenant, COVENANT), (payment, PAYMENT)):
                    if fired is not None:
                        code = xp.where(fired, np.int8(number), code)
                trigger_of[rows] = xp.where(new, code, trigger_of[rows])
                # Payment default: nothing of period k was paid, so B_{k-1} is exposed.
                ead_k = xp.where(payment, col(pf.balance[rows, k - 1]), owed)
                ead[rows] = xp.where(new, ead_k, ead[rows])
                # The fleet is sold at the period's price index p_k.
                gpu_at_default = fair_k * price if market else fair_k
                gpu_collateral[rows] = xp.where(new, gpu_at_default, gpu_collateral[rows])
                crypto_collateral[rows] = xp.where(new, crypto_k, crypto_collateral[rows])
                cash_at_default[rows] = xp.where(new, cash_k, cash_at_default[rows])
                discount_k = (1.0 + y) ** (-t_k)
                discount_at_default[rows] = xp.where(new, discount_k, discount_at_default[rows])
                default_years[rows] = xp.where(new, t_k, default_years[rows])
                alive[rows] = was_alive & ~new

    # Recovery at default: the only place the liquidation axes enter.  Loan
    # by loan, so that working memory is one loan's cells, not all loans'.
    defaulted = ~alive
    keep = (1.0 - scenario["liquidation_cost"]) * (1.0 - scenario["haircut"])
    keep_crypto = (1.0 - scenario["liquidation_cost"]) * (1.0 - scenario["crypto_haircut"])
    loss = xp.zeros(shape)
    loss_pv = xp.zeros(shape)
    rec_sum = xp.zeros(shape)
    by_segment = [xp.zeros(shape) for _ in pf.segments]
    loan_loss = [None] * L
    principal = col(pf.values["principal"])
    by_trigger = [xp.zeros(cell_shape) for _ in TRIGGERS]
    any_default = np.asarray(defaulted.reshape(L, -1).any(axis=1).tolist(), dtype=bool)
    for i in np.flatnonzero(any_default):
        for number in range(len(TRIGGERS)):
            by_trigger[number] = by_trigger[number] + xp.where(
                trigger_of[i] == number, principal[i], 0.0
            )
        proceeds = (
            gpu_collateral[i] * keep
            + crypto_collateral[i] * keep_crypto
            + xp.maximum(cash_at_default[i], 0.0)
        )
        recovery = xp.where(defaulted[i], xp.minimum(ead[i], proceeds), 0.0)
        loss_i = ead[i] - recovery  # 0 where no default: ead stays 0 there
        loss += loss_i
        loss_pv += loss_i * discount_at_default[i]
        rec_sum += recovery
        by_segment[pf.segment_index[i]] += loss_i
        loan_loss[i] = loss_i

    total = pf.total_principal
    out: dict[str, Any] = {}
    out["loss"] = loss
    out["loss_pv"] = loss_pv
    out["loss_rate"] = loss / total
    out["defaults"] = defaulted.sum(axis=0).astype(xp.float64)
    out["default_rate"] = _sum_over_loans(xp.where(defaulted, principal, 0.0), xp) / total
    first = default_years.min(axis=0)
    out["first_default_years"] = xp.where(xp.isinf(first), xp.nan, first)
    lowest = dscr_min.min(axis=0)
    out["min_dscr"] = xp.where(xp.isinf(lowest), xp.nan, lowest)
    ead_sum = _sum_over_loans(ead, xp)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["recovery_rate"] = xp.where(ead_sum > 0, rec_sum / ead_sum, xp.nan)
    out["breakeven_spread_bps"] = 1e4 * loss_pv / pf.principal_wal
    out["market_price_min"] = price_min if market else xp.ones(cell_shape)
    assert set(out) == set(CELL_VARIABLES)
    out = {name: xp.broadcast_to(value, shape) for name, value in out.items()}
    out["loss_by_segment"] = xp.stack(by_segment, axis=-1)
    out["default_rate_by_trigger"] = xp.stack(
        [xp.broadcast_to(part / total, shape) for part in by_trigger], axis=-1
    )
    if per_loan:
        years = xp.where(xp.isinf(default_years), xp.nan, default_years)
        out["loan_default_years"] = xp.moveaxis(years, 0, -1)
        out["loan_loss"] = xp.stack(
            [xp.zeros(shape) if part is None else part for part in loan_loss], axis=-1
        )
    assert set(out) == {name for name, o in OUTPUTS.items() if per_loan or not o.per_loan}
    return out


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


def scenario_arrays(axes_values: dict[str, Any], fixed: dict[str, float], xp=np):
    """Scenario parameters for a block: axis values reshaped to broadcast.

    ``axes_values`` maps each axis name, in dim order, to its values in the
    block; ``fixed`` holds the scenario parameters that are not axes.
    """
    ndim = len(axes_values)
    out: dict[str, Any] = {}
    for i, (name, values) in enumerate(axes_values.items()):
        shape = [1] * ndim
        shape[i] = len(values)
        out[name] = xp.asarray(np.asarray(values, dtype=np.float64).reshape(shape))
    for name, value in fixed.items():
        if name not in out:
            out[name] = float(value)
    return out


__all__ = [
    "MODEL_VERSION",
    "appraisal_table",
    "block_bytes",
    "cash_flow_offer",
    "crypto_index",
    "evaluate",
    "fleet_cash_flow",
    "mining_margin",
    "scenario_arrays",
]
