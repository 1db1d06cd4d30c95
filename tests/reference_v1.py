"""The literal transcription of model v1 (gridstress/reference.py at commit
29f6cb1), kept as the oracle of the v1 reproduction tests.

Model v2 with ``market_depth_gpus: .inf``, ``cash_cap`` = ``cash_reserve``,
``refi_term_years: 0`` and ``ltv_basis: market`` must give every v1 number
(model.md).  This file is model v1 as it was: Python loops over loans and
periods, vectorised over cells, each appraisal summed term by term.  Only
its imports changed: the input objects moved to gridstress.inputs, and the
contractual schedule, which v2 did not change, is v2's reference's; it reads
the v1 fields of v2's loans and ignores the rest.
"""

from __future__ import annotations

import numpy as np

from gridstress.inputs import Loan
from gridstress.params import SCENARIO_PARAMS
from gridstress.reference import _round_half_up, _schedule  # the schedule did not change

#: The cell variables of model v1.
CELL_VARIABLES = (
    "loss",
    "loss_pv",
    "loss_rate",
    "defaults",
    "default_rate",
    "first_default_years",
    "min_dscr",
    "recovery_rate",
    "breakeven_spread_bps",
)


def _loan_in_cells(loan: Loan, f: int, p: dict[str, np.ndarray], trace: list | None = None):
    """Run one loan through every cell; return per-cell default info.

    With ``trace`` a list, each period of the first cell up to its default is
    appended to it as a dict of the period's quantities.
    """
    cells = p["deflation"].shape[0]
    dt = 1 / f
    H = 8760 * dt
    n, balloon, DS, O, B, wal = _schedule(loan, f)
    n_L = max(0, _round_half_up((loan.economic_life_years - loan.gpu_age_years) * f))
    n_c = _round_half_up(loan.contract_years * f)
    e = loan.power_kw_per_gpu * loan.power_price
    d, c, D, y = p["deflation"], p["crypto_drawdown"], p["drawdown_periods"], p["discount_rate"]

    def rent(j):
        return loan.rent * (1 - d) ** (j * dt)

    def X(k):
        return 1 - c * np.minimum(k, D) / D

    def appraisal(k):
        total = np.zeros(cells)
        for j in range(k + 1, n_L + 1):
            pi_j = (
                H * loan.utilization * np.maximum(0, rent(j) - e)
                - loan.fixed_opex_per_gpu_year * dt
            )
            total += pi_j * (1 + y) ** (-(j - k) * dt)
        return np.maximum(0, total)

    cash = np.full(cells, loan.cash_reserve)
    run = np.zeros(cells)
    tau = np.zeros(cells, dtype=int)  # 0: no default
    ead = np.zeros(cells)
    V_tau = np.zeros(cells)
    C_tau = np.zeros(cells)
    cash_tau = np.zeros(cells)
    dscr_low = np.full(cells, np.inf)
    for k in range(1, n + 1):
        open_ = tau == 0
        g = 1.0 if k <= n_L else 0.0
        s_k = loan.contracted_share if k <= n_c else 0.0
        m_k = rent(k)
        u_k = np.where(m_k > e, loan.utilization, 0.0)
        R = g * loan.n_gpus * H * (s_k * loan.contract_rent + (1 - s_k) * u_k * m_k)
        P = g * loan.n_gpus * H * (s_k + (1 - s_k) * u_k) * e
        F = g * loan.n_gpus * loan.fixed_opex_per_gpu_year * dt
        M = np.maximum(0, loan.mining_revenue * X(k) - loan.mining_cost) * dt
        cfads = R - P - F + M
        if DS[k] > 0:
            dscr = cfads / DS[k]
            dscr_low = np.where(open_, np.minimum(dscr_low, dscr), dscr_low)
            breach = (loan.min_dscr > 0) & (dscr < loan.min_dscr)
        else:
            breach = np.zeros(cells, dtype=bool)
        cash = np.minimum(loan.cash_reserve, cash + cfads - DS[k])
        pay_def = cash < 0
        run = np.where(breach, run + 1, 0)
        cov_def = (loan.min_dscr > 0) & (run >= loan.cure_periods)
        V = loan.pledged_share * loan.n_gpus * appraisal(k)
        C = loan.crypto_collateral * X(k)
        if loan.max_ltv is None:
            ltv_def = np.zeros(cells, dtype=bool)
        elif O[k] == 0:
            ltv_def = np.zeros(cells, dtype=bool)
        else:
            with np.errstate(divide="ignore"):
                ltv = np.where(V + C == 0, np.inf, O[k] / (V + C))
            ltv_def = ltv > loan.max_ltv
        if k == n:
            mat_def = balloon[n] > np.maximum(cash, 0) + loan.refi_advance_rate * (V + C)
        else:
            mat_def = np.zeros(cells, dtype=bool)
        new = open_ & (pay_def | cov_def | ltv_def | mat_def)
        if trace is not None and open_[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                ltv0 = 0.0 if O[k] == 0 else float(O[k] / (V[0] + C[0]))
            fired = [
                name
                for name, hit in (
                    ("payment", pay_def),
                    ("covenant", cov_def),
                    ("ltv", ltv_def),
                    ("maturity", mat_def),
                )
                if hit[0]
            ]
            trace.append(
                {
                    "loan_id": loan.loan_id,
                    "k": k,
                    "t_years": k * dt,
                    "rent": float(m_k[0]),
                    "utilization": float(u_k[0]),
                    "revenue": float(R[0]),
                    "power": float(P[0]),
                    "fixed": F,
                    "mining": float(M[0]),
                    "cfads": float(cfads[0]),
                    "debt_service": DS[k],
                    "dscr": float(cfads[0] / DS[k]) if DS[k] > 0 else None,
                    "cash": float(cash[0]),
                    "owed": O[k],
                    "gpu_collateral": float(V[0]),
                    "crypto_collateral": float(C[0]),
                    "ltv": ltv0,
                    "default": "+".join(fired),
                }
            )
        tau = np.where(new, k, tau)
        ead = np.where(new, np.where(pay_def, B[k - 1], O[k]), ead)
        V_tau = np.where(new, V, V_tau)
        C_tau = np.where(new, C, C_tau)
        cash_tau = np.where(new, cash, cash_tau)
    return tau, ead, V_tau, C_tau, cash_tau, dscr_low, wal


def evaluate_cells(loans, periods_per_year: int, cells: dict[str, np.ndarray]):
    """Per-cell results for cells given as flat arrays of every scenario parameter.

    ``cells`` maps each name of :data:`SCENARIO_PARAMS` to a 1-D array (one
    entry per cell).  Returns :data:`CELL_VARIABLES` as 1-D arrays and
    ``loss_by_segment`` as a dict of segment name to 1-D array.
    """
    f = periods_per_year
    p = {name: np.asarray(cells[name], dtype=np.float64) for name in SCENARIO_PARAMS}
    n_cells = p["deflation"].shape[0]
    total = sum(loan.principal for loan in loans)
    loss = np.zeros(n_cells)
    loss_pv = np.zeros(n_cells)
    defaults = np.zeros(n_cells)
    defaulted_principal = np.zeros(n_cells)
    first = np.full(n_cells, np.inf)
    dscr_min = np.full(n_cells, np.inf)
    rec_sum = np.zeros(n_cells)
    ead_sum = np.zeros(n_cells)
    principal_wal = 0.0
    by_segment: dict[str, np.ndarray] = {}
    for loan in loans:
        tau, ead, V, C, cash, dscr_low, wal = _loan_in_cells(loan, f, p)
        principal_wal += loan.principal * wal
        hit = tau > 0
        proceeds = (1 - p["liquidation_cost"]) * (
            V * (1 - p["haircut"]) + C * (1 - p["crypto_haircut"])
        ) + np.maximum(cash, 0)
        recovery = np.where(hit, np.minimum(ead, proceeds), 0.0)
        loan_loss = np.where(hit, ead - recovery, 0.0)
        t_tau = tau / f
        loss += loan_loss
        loss_pv += loan_loss * (1 + p["discount_rate"]) ** (-t_tau)
        defaults += hit
        defaulted_principal += np.where(hit, loan.principal, 0.0)
        first = np.where(hit, np.minimum(first, t_tau), first)
        dscr_min = np.minimum(dscr_min, dscr_low)
        rec_sum += recovery
        ead_sum += np.where(hit, ead, 0.0)
        by_segment.setdefault(loan.segment, np.zeros(n_cells))
        by_segment[loan.segment] += loan_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "loss": loss,
            "loss_pv": loss_pv,
            "loss_rate": loss / total,
            "defaults": defaults,
            "default_rate": defaulted_principal / total,
            "first_default_years": np.where(np.isinf(first), np.nan, first),
            "min_dscr": np.where(np.isinf(dscr_min), np.nan, dscr_min),
            "recovery_rate": np.where(ead_sum > 0, rec_sum / ead_sum, np.nan),
            "breakeven_spread_bps": 1e4 * loss_pv / principal_wal,
        }
    assert set(out) == set(CELL_VARIABLES)
    out["loss_by_segment"] = by_segment
    return out


def evaluate_grid(
    loans, periods_per_year: int, axes: dict[str, np.ndarray], fixed: dict[str, float]
):
    """Reference results on a full grid: every cell of the product of ``axes``.

    Returns arrays shaped like the grid; ``loss_by_segment`` has the
    segments (sorted by name) as its last dim.
    """
    names = list(axes)
    mesh = np.meshgrid(*[np.asarray(axes[n], dtype=np.float64) for n in names], indexing="ij")
    shape = mesh[0].shape if mesh else ()
    cells = {n: m.ravel() for n, m in zip(names, mesh)}
    size = int(np.prod(shape))
    for name, param in SCENARIO_PARAMS.items():
        if name not in cells:
            cells[name] = np.full(size, fixed.get(name, param.default), dtype=np.float64)
    flat = evaluate_cells(loans, periods_per_year, cells)
    segs = flat.pop("loss_by_segment")
    out = {k: v.reshape(shape) for k, v in flat.items()}
    out["loss_by_segment"] = np.stack([segs[s].reshape(shape) for s in sorted(segs)], axis=-1)
    return out


def trace_loan(loan: Loan, periods_per_year: int, point: dict[str, float]):
    """One loan's path, period by period, in the cell ``point``.

    ``point`` gives scenario parameters (missing ones take their defaults).
    Returns ``(rows, outcome)``: a dict per period up to maturity or default
    (cash flows, DSCR, reserve, collateral, LTV and the triggers that fired)
    and a dict with the default time, EAD, recovery and loss (None when the
    loan is repaid).
    """
    p = {
        name: np.array([float(point.get(name, param.default))])
        for name, param in SCENARIO_PARAMS.items()
    }
    rows: list[dict] = []
    tau, ead, V, C, cash, _, _ = _loan_in_cells(loan, periods_per_year, p, trace=rows)
    if tau[0] == 0:
        return rows, {
            "loan_id": loan.loan_id,
            "default_years": None,
            "trigger": None,
            "ead": None,
            "recovery": None,
            "loss": 0.0,
            "loss_pv": 0.0,
        }
    proceeds = (1 - p["liquidation_cost"][0]) * (
        V[0] * (1 - p["haircut"][0]) + C[0] * (1 - p["crypto_haircut"][0])
    ) + max(cash[0], 0.0)
    recovery = min(ead[0], proceeds)
    loss = ead[0] - recovery
    t = tau[0] / periods_per_year
    return rows, {
        "loan_id": loan.loan_id,
        "default_years": t,
        "trigger": rows[-1]["default"],
        "ead": float(ead[0]),
        "recovery": float(recovery),
        "loss": float(loss),
        "loss_pv": float(loss * (1 + p["discount_rate"][0]) ** (-t)),
    }
