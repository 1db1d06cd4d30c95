"""A literal transcription of model v3, kept as the test oracle.

This is the straightforward implementation: vectorised over cells only, with
Python loops over periods and, inside each period, over loans (the market
step needs every loan's default of period ``k`` before any loan's period
``k + 1``), every cell evaluated on its own (no path shared across haircut
values) and each appraisal ``G_k`` and each refinancing offer summed term by
term as model.md writes them, the market appraisal's recursion once per
period.  It shares no code with :mod:`gridstress.model` except the input
objects (it interpolates the scenario paths itself), so that agreement
between the two is evidence, and it is the baseline that
``benchmarks/numpy_backend.py`` measures the engine against.  It also
records the period-by-period path of chosen loans in one cell, which
``gridstress trace`` and ``gridstress summary`` print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from .inputs import Loan
from .params import SCENARIO_PARAMS
from .variables import TRIGGERS


def _round_half_up(x: float) -> int:
    return math.floor(round(x, 9) + 0.5)


def _path_at(points, t: float) -> float:
    """P(t) = I(t) / I(0): I linear between points, flat after the last (1: no path)."""
    if not points:
        return 1.0
    if t >= points[-1][0]:
        return points[-1][1] / points[0][1]
    i = 1
    while points[i][0] < t:
        i += 1
    (t0, i0), (t1, i1) = points[i - 1], points[i]
    return (i0 + (i1 - i0) * (t - t0) / (t1 - t0)) / points[0][1]


def _schedule(loan: Loan, f: int):
    """Lists balloon, DS, O, B indexed 0..n, and the WAL, as model.md states them."""
    n = _round_half_up(loan.term_years * f)
    r = loan.rate / f
    B0 = loan.principal
    b = loan.balloon
    interest, regular, balloon, owed, balance = ([0.0] * (n + 1) for _ in range(5))
    balance[0] = B0
    if loan.amortization == "bullet":
        balloon[n] = B0
    else:
        balloon[n] = b * B0
    if loan.amortization == "annuity":
        if r == 0:
            payment = B0 * (1 - b) / n
        else:
            # v^n = exp(-n log1p(r)), 1 - v^n = -expm1(-n log1p(r)): exact for tiny r
            v_n = math.exp(-n * math.log1p(r))
            payment = (B0 - b * B0 * v_n) * r / -math.expm1(-n * math.log1p(r))
    for k in range(1, n + 1):
        interest[k] = balance[k - 1] * r
        if loan.amortization == "linear":
            regular[k] = B0 * (1 - b) / n
        elif loan.amortization == "annuity":
            regular[k] = payment - interest[k]
        owed[k] = balance[k - 1] - regular[k]
        balance[k] = owed[k] - balloon[k]
    balance[n] = 0.0  # closes exactly; see gridstress.schedule
    owed[n] = balloon[n]
    ds = [interest[k] + regular[k] for k in range(n + 1)]
    wal = sum(k / f * (regular[k] + balloon[k]) for k in range(n + 1)) / B0
    return n, balloon, ds, owed, balance, wal


@dataclass
class _Path:
    """One loan in every cell: its constants, and its state as the periods run."""

    loan: Loan
    f: int
    p: dict
    paths: dict = field(default_factory=dict)
    n: int = 0
    n_life: int = 0
    n_contract: int = 0
    n_refi: int = 0
    balloon: list = field(default_factory=list)
    DS: list = field(default_factory=list)
    O: list = field(default_factory=list)
    B: list = field(default_factory=list)
    wal: float = 0.0

    def __post_init__(self):
        ln, f = self.loan, self.f
        self.n, self.balloon, self.DS, self.O, self.B, self.wal = _schedule(ln, f)
        self.n_life = max(0, _round_half_up((ln.economic_life_years - ln.gpu_age_years) * f))
        self.n_contract = _round_half_up(ln.contract_years * f)
        self.n_refi = _round_half_up(ln.refi_term_years * f)
        cells = self.p["deflation"].shape[0]
        self.n_g = np.array([_round_half_up(t * f) for t in self.p["generation_years"]])
        self.cash = np.full(cells, ln.cash_reserve)
        self.run = np.zeros(cells)
        self.tau = np.zeros(cells, dtype=int)  # 0: no default
        self.trigger = np.full(cells, "", dtype=object)
        self.ead = np.zeros(cells)
        self.fair_tau = np.zeros(cells)  # V*_tau
        self.V_tau = np.zeros(cells)  # V*_tau p_tau, once the market step ran
        self.C_tau = np.zeros(cells)
        self.cash_tau = np.zeros(cells)
        self.dscr_low = np.full(cells, np.inf)

    # Steps 1-4 of model.md, for any period j >= 1 (past maturity too).
    def P(self, j):
        """Rent path factor P(t_j)."""
        return _path_at(self.paths.get("rent_path"), j / self.f)

    def Q(self, j):
        """Crypto path factor Q(t_j)."""
        return _path_at(self.paths.get("crypto_path"), j / self.f)

    def S(self, j):
        """Generation shock factor 1 - j e 1{j > n_g}, per cell."""
        shocked = j > self.n_g
        return 1 - self.p["generation_shock"] * self.loan.generation_exposure * shocked

    def rent(self, j):
        """m_j = rent P(t_j) (1 - d)^(t_j) S_j."""
        d = self.p["deflation"]
        return self.loan.rent * self.P(j) * (1 - d) ** (j * (1 / self.f)) * self.S(j)

    def X(self, k):
        c, D = self.p["crypto_drawdown"], self.p["drawdown_periods"]
        return self.Q(k) * (1 - c * np.minimum(k, D) / D)

    def cfads(self, j):
        ln, dt = self.loan, 1 / self.f
        H = 8760 * dt
        e = ln.power_kw_per_gpu * ln.power_price
        g = 1.0 if j <= self.n_life else 0.0
        s_j = ln.contracted_share if j <= self.n_contract else 0.0
        m_j = self.rent(j)
        u_j = np.where(m_j > e, ln.utilization, 0.0)
        R = g * ln.n_gpus * H * (s_j * ln.contract_rent + (1 - s_j) * u_j * m_j)
        P = g * ln.n_gpus * H * (s_j + (1 - s_j) * u_j) * e
        F = g * ln.n_gpus * ln.fixed_opex_per_gpu_year * dt
        M = np.maximum(0, ln.mining_revenue * self.X(j) - ln.mining_cost) * dt
        return R - P - F + M, m_j, u_j, R, P, F, M

    def appraisal(self, k):
        """G_k per GPU: the foresight appraisal where appraisal_deflation is
        empty (NaN), the market appraisal where it is given."""
        d_a = self.p["appraisal_deflation"]
        foresight = self.foresight_appraisal(k)
        if np.isnan(d_a).all():
            return foresight
        return np.where(np.isnan(d_a), foresight, self.market_appraisal(k))

    def foresight_appraisal(self, k):
        """G_k: the discounted merchant net income per GPU after period k."""
        ln, dt = self.loan, 1 / self.f
        H = 8760 * dt
        e = ln.power_kw_per_gpu * ln.power_price
        y = self.p["discount_rate"]
        total = np.zeros(self.p["deflation"].shape[0])
        for j in range(k + 1, self.n_life + 1):
            pi_j = (
                H * ln.utilization * np.maximum(0, self.rent(j) - e)
                - ln.fixed_opex_per_gpu_year * dt
            )
            total += pi_j * (1 + y) ** (-(j - k) * dt)
        return np.maximum(0, total)

    def market_appraisal(self, k):
        """G_k = W_{k,k}: period k's rent extrapolated at d_a, with the option to retire."""
        ln, dt = self.loan, 1 / self.f
        H = 8760 * dt
        e = ln.power_kw_per_gpu * ln.power_price
        y, d_a = self.p["discount_rate"], self.p["appraisal_deflation"]
        m_k = self.rent(k)  # m_0 = rent: P(0) = 1, (1 - d)^0 = 1, S_0 = 1
        W = np.zeros(self.p["deflation"].shape[0])  # W_{k,n_L}
        for j in range(self.n_life, k, -1):
            m_kj = m_k * (1 - d_a) ** ((j - k) * dt)
            pi_kj = H * ln.utilization * np.maximum(0, m_kj - e) - ln.fixed_opex_per_gpu_year * dt
            W = np.maximum(0, (1 + y) ** (-dt) * (pi_kj + W))  # W_{k,j-1}
        return W

    def book_value(self, k):
        ln = self.loan
        if ln.gpu_cost is None:
            return None
        life_left = max(0.0, 1 - (ln.gpu_age_years + k / self.f) / ln.book_life_years)
        return ln.pledged_share * ln.n_gpus * ln.gpu_cost * life_left

    def cash_flow_offer(self):
        """K_n: what the next n_r periods of CFADS after maturity cover refi_min_dscr times."""
        if self.n_refi == 0:
            return 0.0
        y, n = self.p["discount_rate"], self.n
        pv = 0.0
        for j in range(n + 1, n + self.n_refi + 1):
            pv = pv + self.cfads(j)[0] * (1 + y) ** (-(j - n) / self.f)
        return np.maximum(0, pv) / self.loan.refi_min_dscr

    def period(self, k, price_before, trace):
        """Steps 1-8 in period k with the market price index p_{k-1}; returns the new defaults."""
        ln, dt = self.loan, 1 / self.f
        open_ = self.tau == 0
        cf, m_k, u_k, R, P, F, M = self.cfads(k)
        DS = self.DS[k]
        if DS > 0:
            dscr = cf / DS
            self.dscr_low = np.where(open_, np.minimum(self.dscr_low, dscr), self.dscr_low)
            breach = (ln.min_dscr > 0) & (dscr < ln.min_dscr)
        else:
            breach = np.zeros_like(open_)
        self.cash = np.minimum(ln.cash_cap, self.cash + cf - DS)
        pay_def = self.cash < 0
        self.run = np.where(breach, self.run + 1, 0)
        cov_def = (ln.min_dscr > 0) & (self.run >= ln.cure_periods)
        fair = ln.pledged_share * ln.n_gpus * self.appraisal(k)  # V*_k
        V = fair * price_before  # V_k = V*_k p_{k-1}
        C = ln.crypto_collateral * self.X(k)
        BV = self.book_value(k)
        with np.errstate(divide="ignore"):
            ltv_market = (
                np.zeros_like(V)
                if self.O[k] == 0
                else np.where(V + C == 0, np.inf, self.O[k] / (V + C))
            )
            ltv_book = (
                None
                if BV is None
                else (
                    np.zeros_like(V)
                    if self.O[k] == 0
                    else np.where(BV + C == 0, np.inf, self.O[k] / (BV + C))
                )
            )
        ltv = ltv_market
        if ln.ltv_basis == "book":
            if ltv_book is None:  # config validation refuses a book basis without gpu_cost
                raise ValueError(f"{ln.loan_id}: ltv_basis book needs gpu_cost")
            ltv = ltv_book
        ltv_def = np.zeros_like(open_) if ln.max_ltv is None else ltv > ln.max_ltv
        collateral_offer = cash_flow_offer = None
        if k == self.n and self.balloon[k] > 0:
            collateral_offer = ln.refi_advance_rate * (V + C)
            cash_flow_offer = self.cash_flow_offer() + np.zeros_like(V)
            mat_def = self.balloon[k] > np.maximum(self.cash, 0) + np.maximum(
                collateral_offer, cash_flow_offer
            )
        else:
            mat_def = np.zeros_like(open_)
        new = open_ & (pay_def | cov_def | ltv_def | mat_def)
        fired = [(name, hit) for name, hit in zip(TRIGGERS, (pay_def, cov_def, ltv_def, mat_def))]
        if trace is not None and open_[0]:
            trace.append(
                {
                    "loan_id": ln.loan_id,
                    "k": k,
                    "t_years": k * dt,
                    "rent": float(m_k[0]),
                    "rent_path_factor": self.P(k),
                    "shock_factor": float(self.S(k)[0]),
                    "rent_index": float(m_k[0]),
                    "crypto_path_factor": self.Q(k),
                    "crypto_index": float(self.X(k)[0]),
                    "utilization": float(u_k[0]),
                    "revenue": float(R[0]),
                    "power": float(P[0]),
                    "fixed": F,
                    "mining": float(M[0]),
                    "cfads": float(cf[0]),
                    "debt_service": DS,
                    "dscr": float(cf[0] / DS) if DS > 0 else None,
                    "cash": float(self.cash[0]),
                    "owed": self.O[k],
                    "gpu_fair_value": float(fair[0]),
                    "price_index": float(price_before[0]),
                    "gpu_collateral": float(V[0]),
                    "crypto_collateral": float(C[0]),
                    "book_value": None if BV is None else float(BV),
                    "ltv_market": float(ltv_market[0]),
                    "ltv_book": None if ltv_book is None else float(ltv_book[0]),
                    "ltv_basis": ln.ltv_basis,
                    "refi_collateral_offer": (
                        None if collateral_offer is None else float(collateral_offer[0])
                    ),
                    "refi_cash_flow_offer": (
                        None if cash_flow_offer is None else float(cash_flow_offer[0])
                    ),
                    "balloon": self.balloon[k],
                    "default": "+".join(name for name, hit in fired if hit[0]),
                }
            )
        first = np.full(new.shape, "", dtype=object)
        for name, hit in reversed(fired):
            first = np.where(hit, name, first)
        self.tau = np.where(new, k, self.tau)
        self.trigger = np.where(new, first, self.trigger)
        self.ead = np.where(new, np.where(pay_def, self.B[k - 1], self.O[k]), self.ead)
        self.fair_tau = np.where(new, fair, self.fair_tau)
        self.C_tau = np.where(new, C, self.C_tau)
        self.cash_tau = np.where(new, self.cash, self.cash_tau)
        return new


@dataclass
class Simulation:
    """Every loan of a portfolio through every cell, period by period."""

    paths: list[_Path]
    price_min: np.ndarray
    market: list[dict]
    """Per period, in cell 0: GPUs sold, overhang and price index after the sales."""
    traces: dict[str, list[dict]]
    """Per traced loan, its periods in cell 0 up to default or maturity."""


def simulate(
    loans,
    periods_per_year: int,
    p: dict[str, np.ndarray],
    trace: tuple[str, ...] = (),
    paths: dict | None = None,
) -> Simulation:
    """Run model v3 on flat cells ``p`` (every scenario parameter, one entry a
    cell; NaN ``appraisal_deflation``: empty) with the scenario ``paths``
    (``rent_path``, ``crypto_path``: ``((years, index), ...)``, those given).

    Loans run in the canonical order (longest maturity first, then loan_id),
    in which every sum over loans is taken.  ``trace`` names loans whose
    periods in cell 0 are recorded.
    """
    f = periods_per_year
    dt = 1 / f
    runs = [_Path(loan, f, p, dict(paths or {})) for loan in loans]
    runs.sort(key=lambda path: (-path.n, path.loan.loan_id))
    traces: dict[str, list[dict]] = {loan_id: [] for loan_id in trace}
    cells = p["deflation"].shape[0]
    Q = np.zeros(cells)
    price = np.ones(cells)  # p_0
    price_min = np.ones(cells)
    market = []
    W, T, theta = p["market_depth_gpus"], p["market_half_life_years"], p["book_share"]
    for k in range(1, max(path.n for path in runs) + 1):
        defaults = [
            (path, path.period(k, price, traces.get(path.loan.loan_id)))
            for path in runs
            if k <= path.n
        ]
        # Market step: the in-service pledged GPUs of this period's defaults are sold.
        S = np.zeros(cells)
        for path, new in defaults:
            in_service = 1.0 if k <= path.n_life else 0.0
            S = S + np.where(new, path.loan.pledged_share * path.loan.n_gpus * in_service, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            Q = Q * np.where(np.isinf(T), 1.0, 2.0 ** (-dt / T)) + S / theta
            price = np.where(np.isinf(W), 1.0, 2.0 ** (-Q / W))
        price_min = np.minimum(price_min, price)
        for path, new in defaults:
            path.V_tau = np.where(new, path.fair_tau * price, path.V_tau)  # sold at p_k
        market.append(
            {
                "k": k,
                "t_years": k * dt,
                "sold_gpus": float(S[0]),
                "overhang_gpus": float(Q[0]),
                "price_index": float(price[0]),
            }
        )
    return Simulation(runs, price_min, market, traces)


@dataclass(frozen=True)
class LoanOutcome:
    """One loan's result in every cell."""

    loan_id: str
    default_years: np.ndarray  # NaN: no default
    trigger: np.ndarray  # "" for no default
    ead: np.ndarray
    recovery: np.ndarray
    loss: np.ndarray
    loss_pv: np.ndarray


def outcomes(sim: Simulation, p: dict[str, np.ndarray]) -> list[LoanOutcome]:
    """Exposure, recovery and loss of each loan (canonical order) in each cell."""
    out = []
    for path in sim.paths:
        hit = path.tau > 0
        proceeds = (1 - p["liquidation_cost"]) * (
            path.V_tau * (1 - p["haircut"]) + path.C_tau * (1 - p["crypto_haircut"])
        ) + np.maximum(path.cash_tau, 0)
        recovery = np.where(hit, np.minimum(path.ead, proceeds), 0.0)
        loss = np.where(hit, path.ead - recovery, 0.0)
        t_tau = path.tau / path.f
        out.append(
            LoanOutcome(
                path.loan.loan_id,
                np.where(hit, t_tau, np.nan),
                path.trigger,
                np.where(hit, path.ead, 0.0),
                recovery,
                loss,
                loss * (1 + p["discount_rate"]) ** (-t_tau),
            )
        )
    return out


def evaluate_cells(
    loans, periods_per_year: int, cells: dict[str, np.ndarray], paths: dict | None = None
):
    """Per-cell results for cells given as flat arrays of every scenario parameter.

    ``cells`` maps each name of :data:`SCENARIO_PARAMS` to a 1-D array (one
    entry per cell; NaN ``appraisal_deflation``: empty), ``paths`` the
    scenario paths as :func:`simulate` takes them.  Returns the cell
    variables as 1-D arrays, ``loss_by_segment`` as a dict of segment name to 1-D array,
    ``default_rate_by_trigger`` as a dict of trigger to 1-D array, and
    ``loan_default_years`` and ``loan_loss`` as dicts of loan id to 1-D array.
    """
    f = periods_per_year
    p = {name: np.asarray(cells[name], dtype=np.float64) for name in SCENARIO_PARAMS}
    sim = simulate(loans, f, p, paths=paths)
    results = outcomes(sim, p)
    n_cells = p["deflation"].shape[0]
    total = sum(loan.principal for loan in loans)
    principal = {loan.loan_id: loan.principal for loan in loans}
    segment = {loan.loan_id: loan.segment for loan in loans}
    principal_wal = sum(path.loan.principal * path.wal for path in sim.paths)
    zeros = np.zeros(n_cells)
    loss, loss_pv, defaults, defaulted, rec_sum, ead_sum = (zeros.copy() for _ in range(6))
    first = np.full(n_cells, np.inf)
    by_segment: dict[str, np.ndarray] = {}
    by_trigger = {t: zeros.copy() for t in TRIGGERS}
    for r in results:
        hit = ~np.isnan(r.default_years)
        loss += r.loss
        loss_pv += r.loss_pv
        defaults += hit
        defaulted += np.where(hit, principal[r.loan_id], 0.0)
        first = np.where(hit, np.minimum(first, r.default_years), first)
        rec_sum += r.recovery
        ead_sum += r.ead
        by_segment.setdefault(segment[r.loan_id], zeros.copy())
        by_segment[segment[r.loan_id]] += r.loss
        for t in TRIGGERS:
            by_trigger[t] += np.where(r.trigger == t, principal[r.loan_id], 0.0)
    dscr_min = np.min([path.dscr_low for path in sim.paths], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "loss": loss,
            "loss_pv": loss_pv,
            "loss_rate": loss / total,
            "defaults": defaults,
            "default_rate": defaulted / total,
            "first_default_years": np.where(np.isinf(first), np.nan, first),
            "min_dscr": np.where(np.isinf(dscr_min), np.nan, dscr_min),
            "recovery_rate": np.where(ead_sum > 0, rec_sum / ead_sum, np.nan),
            "breakeven_spread_bps": 1e4 * loss_pv / principal_wal,
            "market_price_min": sim.price_min,
        }
    out["loss_by_segment"] = by_segment
    out["default_rate_by_trigger"] = {t: v / total for t, v in by_trigger.items()}
    out["loan_default_years"] = {r.loan_id: r.default_years for r in results}
    out["loan_loss"] = {r.loan_id: r.loss for r in results}
    return out


def evaluate_grid(
    loans,
    periods_per_year: int,
    axes: dict[str, np.ndarray],
    fixed: dict[str, float | None],
    paths: dict | None = None,
):
    """Reference results on a full grid: every cell of the product of ``axes``.

    ``fixed`` gives the other scenario parameters (missing ones take their
    defaults; None is empty), ``paths`` the run's scenario paths
    (``RunConfig.paths``).

    Returns arrays shaped like the grid, with an extra last dim for
    ``loss_by_segment`` (segments sorted by name), ``default_rate_by_trigger``
    (model.md's trigger order) and the per-loan ``loan_default_years`` and
    ``loan_loss`` (loans in canonical order; every grid dim, liquidation axes
    included).
    """
    names = list(axes)
    mesh = np.meshgrid(*[np.asarray(axes[n], dtype=np.float64) for n in names], indexing="ij")
    shape = mesh[0].shape if mesh else ()
    cells = {n: m.ravel() for n, m in zip(names, mesh)}
    size = int(np.prod(shape))
    for name, param in SCENARIO_PARAMS.items():
        if name not in cells:
            value = fixed.get(name, param.default)
            cells[name] = np.full(size, math.nan if value is None else value, dtype=np.float64)
    flat = evaluate_cells(loans, periods_per_year, cells, paths)
    out = {}
    for name, value in flat.items():
        if isinstance(value, dict):
            keys = sorted(value) if name == "loss_by_segment" else list(value)
            out[name] = np.stack([value[k].reshape(shape) for k in keys], axis=-1)
        else:
            out[name] = value.reshape(shape)
    return out


def trace_cell(
    loans,
    periods_per_year: int,
    point: dict[str, float | None],
    loan_ids: tuple[str, ...] | None = None,
    paths: dict | None = None,
):
    """The paths of loans in the cell ``point``, with the whole portfolio in the market.

    ``point`` gives scenario parameters (missing ones take their defaults;
    None is empty); ``loan_ids`` the loans traced (default all); ``paths``
    the run's scenario paths (``RunConfig.paths``).  Returns ``(traces,
    market, outcomes)``: per traced loan, a dict per period up to maturity
    or default (the rent path factor, shock factor and rent index, the crypto
    path factor and crypto index, cash flows, DSCR, cash, collateral at fair
    value and at the market price, book value, market and book LTV,
    refinancing offers and the triggers that fired); per period, the GPUs
    sold, the overhang and the price index after the period's sales; and per
    loan (canonical order) a dict of default time, trigger, EAD, recovery and
    loss (None when repaid).
    """

    def value(name: str) -> float:
        given = point.get(name, SCENARIO_PARAMS[name].default)
        if given is None and SCENARIO_PARAMS[name].empty is not None:
            return math.nan
        # Only grid axes lack a default, and ``point`` gives them (else float(None) raises).
        return float(cast(float, given))

    p = {name: np.array([value(name)]) for name in SCENARIO_PARAMS}
    ids = tuple(loan.loan_id for loan in loans) if loan_ids is None else tuple(loan_ids)
    sim = simulate(loans, periods_per_year, p, trace=ids, paths=paths)
    rows = []
    for r in outcomes(sim, p):
        repaid = bool(np.isnan(r.default_years[0]))
        rows.append(
            {
                "loan_id": r.loan_id,
                "default_years": None if repaid else float(r.default_years[0]),
                "trigger": None if repaid else str(r.trigger[0]),
                "ead": None if repaid else float(r.ead[0]),
                "recovery": None if repaid else float(r.recovery[0]),
                "loss": float(r.loss[0]),
                "loss_pv": float(r.loss_pv[0]),
            }
        )
    return sim.traces, sim.market, rows
