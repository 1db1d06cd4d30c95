"""Model v1 (docs/model.md), vectorised over loans and cells, for any ``xp``.

:func:`evaluate` computes the per-cell results of one block of the grid.  It
is written against an array namespace ``xp`` (NumPy or CuPy), so the same
code runs on the CPU and, unchanged, on CuPy arrays.

How the work is shared
----------------------
Scenario parameters arrive as arrays shaped to broadcast against the block
(``(n_d, 1, 1)`` for deflation, ``(1, n_c, 1)`` for crypto drawdown, ...),
and loan fields as ``(L, 1, 1, 1)`` columns.  Broadcasting then computes each
quantity only over the axes it depends on:

- rents, GPU revenue and the collateral appraisal depend on deflation (and
  the discount rate) only;
- mining revenue and crypto collateral on the crypto drawdown only;
- the cash, covenant and default recursion on both, but not on the
  liquidation axes (``haircut``, ``crypto_haircut``, ``liquidation_cost``),
  which enter only the recovery at default.  Each default path is therefore
  computed once and its loss evaluated for every haircut value.

The recursion runs period-outer, with every loan of a cell stepped together
in period ``k``: a per-period step across the loans of a cell (model v2's
fire-sale contagion) slots into the loop without changing its structure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .params import SCENARIO_PARAMS
from .portfolio import PortfolioArrays

MODEL_VERSION = "1"
HOURS_PER_YEAR = 8760.0

#: Cube variables computed per cell (``loss_by_segment`` has a segment dim too).
CELL_VARIABLES = (
    "loss", "loss_pv", "loss_rate", "defaults", "default_rate", "first_default_years",
    "min_dscr", "recovery_rate", "breakeven_spread_bps",
)
VARIABLES = CELL_VARIABLES + ("loss_by_segment",)

#: Arrays of one loan and path cell that the recursion holds at once (state
#: and temporaries), and arrays of one cell in the recovery step: block sizing.
STATE_ARRAYS_PER_LOAN = 26
CELL_ARRAYS = 8


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def appraisal_table(pf: PortfolioArrays, deflation, discount_rate, xp, ndim: int) -> list:
    """Appraised value per GPU ``G_k`` for ``k = 0..K`` [USD/GPU].

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


def evaluate(pf: PortfolioArrays, scenario: dict[str, Any], shape: tuple[int, ...], xp=np):
    """Per-cell results of model v1 for one block of cells.

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

    Returns
    -------
    dict of str to array
        :data:`CELL_VARIABLES`, each of shape ``shape``, and
        ``loss_by_segment`` of shape ``shape + (n_segments,)``.
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
    haircut = scenario["haircut"]
    crypto_haircut = scenario["crypto_haircut"]
    liquidation_cost = scenario["liquidation_cost"]

    def col(a):
        return a.reshape((-1,) + (1,) * ndim)

    v = pf.values
    n_gpus = col(v["n_gpus"])
    rent0 = col(v["rent"])
    util = col(v["utilization"])
    contracted = col(v["contracted_share"])
    contract_rent = col(v["contract_rent"])
    power_cost = col(v["power_kw_per_gpu"] * v["power_price"])
    opex = col(v["fixed_opex_per_gpu_year"]) * dt
    mining_revenue = col(v["mining_revenue"])
    mining_cost = col(v["mining_cost"])
    crypto0 = col(v["crypto_collateral"])
    pledged_gpus = col(v["pledged_share"] * v["n_gpus"])
    cash0 = col(v["cash_reserve"])
    # DSCR < -inf never holds: min_dscr = 0 means no covenant.
    dscr_floor = col(xp.where(v["min_dscr"] > 0, v["min_dscr"], -xp.inf))
    cure = col(v["cure_periods"])
    max_ltv = col(pf.max_ltv)
    refi = col(v["refi_advance_rate"])
    n_life = col(pf.n_life)
    n_contract = col(pf.n_contract)

    gpu_value = appraisal_table(pf, d, y, xp, ndim)
    path_shape = (L,) + np.broadcast_shapes(_shape(d), _shape(c), _shape(D), _shape(y))

    cash = xp.broadcast_to(cash0, path_shape).copy()
    breaches = xp.zeros(path_shape)
    alive = xp.ones(path_shape, dtype=bool)
    ead = xp.zeros(path_shape)
    gpu_collateral = xp.zeros(path_shape)
    crypto_collateral = xp.zeros(path_shape)
    cash_at_default = xp.zeros(path_shape)
    discount_at_default = xp.zeros(path_shape)
    default_years = xp.full(path_shape, xp.inf)
    dscr_min = xp.full(path_shape, xp.inf)

    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(1, K + 1):
            rows = slice(0, int(pf.active[k]))
            t_k = k * dt
            # 1-2. GPU revenue, power and fixed cost of the fleet.
            rent_k = rent0[rows] * (1.0 - d) ** t_k
            util_k = xp.where(rent_k > power_cost[rows], util[rows], 0.0)
            in_service = k <= n_life[rows]
            share_k = xp.where(k <= n_contract[rows], contracted[rows], 0.0)
            gpu_hours = xp.where(in_service, n_gpus[rows] * hours, 0.0)
            merchant = (1.0 - share_k) * util_k
            revenue = gpu_hours * (share_k * contract_rent[rows] + merchant * rent_k)
            power = gpu_hours * (share_k + merchant) * power_cost[rows]
            fixed = xp.where(in_service, n_gpus[rows] * opex[rows], 0.0)
            # 3. Mining, at the crypto price index X_k.
            price_k = 1.0 - c * (xp.minimum(k, D) if hasattr(D, "shape") else min(k, D)) / D
            mining = xp.maximum(0.0, mining_revenue[rows] * price_k - mining_cost[rows]) * dt
            # 4-5. CFADS, DSCR and the reserve account.
            cfads = revenue - power - fixed + mining
            debt_service = col(pf.debt_service[rows, k])
            has_ds = debt_service > 0
            dscr = cfads / xp.where(has_ds, debt_service, 1.0)
            cash_k = xp.minimum(cash0[rows], cash[rows] + cfads - debt_service)
            cash[rows] = cash_k
            trigger = cash_k < 0  # 5. payment default
            payment_default = trigger
            # 6. Covenant: cure_periods consecutive breaches of min_dscr.
            if pf.has_covenant[rows].any():
                breach = has_ds & (dscr < dscr_floor[rows])
                breaches[rows] = xp.where(breach, breaches[rows] + 1.0, 0.0)
                trigger = trigger | (breaches[rows] >= cure[rows])
            # 7. Collateral and LTV (O/(V+C): inf when only V+C is 0; 0 when O = 0).
            owed = col(pf.owed[rows, k])
            gpu_k = pledged_gpus[rows] * gpu_value[k][rows]
            crypto_k = crypto0[rows] * price_k
            collateral = gpu_k + crypto_k
            if pf.has_ltv_covenant[rows].any():
                trigger = trigger | (
                    xp.where(owed > 0, owed / collateral, 0.0) > max_ltv[rows])
            # 8. Maturity: the balloon due in period n must be refinanced.
            if pf.balloon_due[rows, k].any():
                balloon = col(pf.balloon[rows, k])
                trigger = trigger | (
                    balloon > xp.maximum(cash_k, 0.0) + refi[rows] * collateral)

            was_alive = alive[rows]
            dscr_min[rows] = xp.where(
                was_alive & has_ds, xp.minimum(dscr_min[rows], dscr), dscr_min[rows]
            )
            new = was_alive & trigger
            if bool(new.any()):
                # Payment default: nothing of period k was paid, so B_{k-1} is exposed.
                ead_k = xp.where(payment_default, col(pf.balance[rows, k - 1]), owed)
                ead[rows] = xp.where(new, ead_k, ead[rows])
                gpu_collateral[rows] = xp.where(new, gpu_k, gpu_collateral[rows])
                crypto_collateral[rows] = xp.where(new, crypto_k, crypto_collateral[rows])
                cash_at_default[rows] = xp.where(new, cash_k, cash_at_default[rows])
                discount_k = (1.0 + y) ** (-t_k)
                discount_at_default[rows] = xp.where(new, discount_k,
                                                     discount_at_default[rows])
                default_years[rows] = xp.where(new, t_k, default_years[rows])
                alive[rows] = was_alive & ~new

    # Recovery at default: the only place the liquidation axes enter.  Loan
    # by loan, so that working memory is one loan's cells, not all loans'.
    defaulted = ~alive
    keep = (1.0 - liquidation_cost) * (1.0 - haircut)
    keep_crypto = (1.0 - liquidation_cost) * (1.0 - crypto_haircut)
    loss = xp.zeros(shape)
    loss_pv = xp.zeros(shape)
    rec_sum = xp.zeros(shape)
    by_segment = [xp.zeros(shape) for _ in pf.segments]
    any_default = np.asarray(defaulted.reshape(L, -1).any(axis=1).tolist(), dtype=bool)
    for i in np.flatnonzero(any_default):
        proceeds = (gpu_collateral[i] * keep + crypto_collateral[i] * keep_crypto
                    + xp.maximum(cash_at_default[i], 0.0))
        recovery = xp.where(defaulted[i], xp.minimum(ead[i], proceeds), 0.0)
        loss_i = ead[i] - recovery  # 0 where no default: ead stays 0 there
        loss += loss_i
        loss_pv += loss_i * discount_at_default[i]
        rec_sum += recovery
        by_segment[pf.segment_index[i]] += loss_i

    principal = v["principal"]
    total = pf.total_principal
    out: dict[str, Any] = {}
    out["loss"] = loss
    out["loss_pv"] = loss_pv
    out["loss_rate"] = loss / total
    out["defaults"] = defaulted.sum(axis=0).astype(xp.float64)
    out["default_rate"] = _sum_over_loans(xp.where(defaulted, col(principal), 0.0), xp) / total
    first = default_years.min(axis=0)
    out["first_default_years"] = xp.where(xp.isinf(first), xp.nan, first)
    lowest = dscr_min.min(axis=0)
    out["min_dscr"] = xp.where(xp.isinf(lowest), xp.nan, lowest)
    ead_sum = _sum_over_loans(ead, xp)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["recovery_rate"] = xp.where(ead_sum > 0, rec_sum / ead_sum, xp.nan)
    out["breakeven_spread_bps"] = 1e4 * loss_pv / pf.principal_wal
    out = {name: xp.broadcast_to(value, shape) for name, value in out.items()}
    out["loss_by_segment"] = xp.stack(by_segment, axis=-1)
    return out


def _sum_over_loans(values, xp):
    """Sum over the loan axis (0), adding loan after loan in canonical order.

    ``values.sum(axis=0)`` adds pairwise when the cells of a block lie in one
    column (a one-cell block), so a cell's last bits would depend on how the
    grid was cut into blocks; a running sum does not.
    """
    return xp.cumsum(values, axis=0)[-1]


def block_bytes(n_loans: int, n_segments: int, path_cells: int, cells: int) -> int:
    """Upper bound of :func:`evaluate`'s working memory for one block [bytes].

    ``path_cells`` counts the block's cells over the axes that change default
    paths (the liquidation axes excluded), ``cells`` all of its cells.
    """
    per_cell = CELL_ARRAYS + 2 * len(CELL_VARIABLES) + 2 * n_segments
    return 8 * (STATE_ARRAYS_PER_LOAN * n_loans * path_cells + per_cell * cells)


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
    "CELL_VARIABLES", "MODEL_VERSION", "VARIABLES", "appraisal_table", "block_bytes",
    "evaluate", "scenario_arrays",
]
