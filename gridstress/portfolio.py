"""A portfolio as column arrays, ready for the vectorised model.

Loans are put in a canonical order, longest maturity first and then by
``loan_id``, whatever order the input had: every sum over loans is then taken
in the same order, so results do not depend on the order of rows, and the
loans still running in period ``k`` are always the first ``active[k]`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .inputs import Loan
from .schedule import contractual_schedule, periods

#: Loan fields copied to per-loan float64 arrays.
NUMERIC_FIELDS = (
    "principal",
    "rate",
    "n_gpus",
    "pledged_share",
    "rent",
    "utilization",
    "contracted_share",
    "contract_rent",
    "power_kw_per_gpu",
    "power_price",
    "fixed_opex_per_gpu_year",
    "mining_revenue",
    "mining_cost",
    "crypto_collateral",
    "cash_reserve",
    "cash_cap",
    "min_dscr",
    "cure_periods",
    "refi_advance_rate",
    "refi_min_dscr",
    "generation_exposure",
)


#: Index arrays used for slicing from the host, never moved to a device.
_HOST_ONLY = (
    "active",
    "segment_index",
    "has_covenant",
    "has_ltv_covenant",
    "balloon_due",
    "n_refi",
    "book_basis",
    "sells_until",
)


@dataclass(frozen=True)
class PortfolioArrays:
    """Per-loan arrays (shape ``(L,)``) and schedules (shape ``(L, K + 1)``).

    ``n``, ``n_life``, ``n_contract``, ``n_refi`` are periods to maturity, in
    service, under contract and of the cash-flow refinancing offer;
    ``max_ltv`` is +inf where there is no LTV covenant; ``active[k]`` is the
    number of loans with ``n >= k``.  ``book_value[i, k]`` is the pledged
    fleet's book value ``BV_k`` at the end of period k [USD] (0 where
    ``gpu_cost`` is not given).  ``has_covenant``, ``has_ltv_covenant``,
    ``book_basis`` (the LTV covenant is tested on book value), ``n_refi`` and
    ``balloon_due`` (per loan and period) stay on the host and let the model
    skip a test that no loan can fail; so does ``sells_until``, the last
    period in which a default puts the loan's pledged GPUs on the market
    (``n_life``, or 0 without pledged GPUs).
    """

    loan_id: tuple[str, ...]
    segments: tuple[str, ...]
    segment_index: np.ndarray
    periods_per_year: int
    horizon: int
    n: np.ndarray
    n_life: np.ndarray
    n_contract: np.ndarray
    n_refi: np.ndarray
    max_ltv: np.ndarray
    wal_years: np.ndarray
    active: np.ndarray
    interest: np.ndarray
    debt_service: np.ndarray
    balloon: np.ndarray
    owed: np.ndarray
    balance: np.ndarray
    book_value: np.ndarray
    has_covenant: np.ndarray
    book_basis: np.ndarray
    sells_until: np.ndarray
    has_ltv_covenant: np.ndarray
    balloon_due: np.ndarray
    total_principal: float
    """``sum_i B0_i`` [USD]."""
    principal_wal: float
    """``sum_i B0_i WAL_i`` [USD year]: the denominator of the breakeven spread."""
    values: dict[str, np.ndarray]

    @property
    def n_loans(self) -> int:
        return len(self.loan_id)

    def to(self, xp) -> PortfolioArrays:
        """The same portfolio with its arrays on ``xp``'s device (NumPy or CuPy)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "values":
                value = {k: xp.asarray(v) for k, v in value.items()}
            elif isinstance(value, np.ndarray) and f.name not in _HOST_ONLY:
                value = xp.asarray(value)
            moved[f.name] = value
        return PortfolioArrays(**moved)


def canonical_order(loans: tuple[Loan, ...] | list[Loan], periods_per_year: int) -> list[Loan]:
    """Loans sorted by maturity in periods, longest first, then by loan_id."""
    return sorted(loans, key=lambda ln: (-periods(ln.term_years, periods_per_year), ln.loan_id))


def portfolio_arrays(loans, periods_per_year: int) -> PortfolioArrays:
    """Build the column arrays and contractual schedules of a portfolio."""
    f = periods_per_year
    ordered = canonical_order(loans, f)
    n = np.array([periods(ln.term_years, f) for ln in ordered], dtype=np.int64)
    if np.any(n < 1):
        bad = ordered[int(np.argmin(n))]
        raise ValueError(
            f"loan {bad.loan_id}: term_years={bad.term_years} is less than one period "
            f"at periods_per_year={f}"
        )
    horizon = int(n.max())
    L = len(ordered)
    shape = (L, horizon + 1)
    interest, debt_service, balloon, owed, balance = (np.zeros(shape) for _ in range(5))
    wal = np.zeros(L)
    for i, ln in enumerate(ordered):
        s = contractual_schedule(ln.principal, ln.rate, int(n[i]), ln.amortization, ln.balloon, f)
        m = s.n + 1
        interest[i, :m] = s.interest
        debt_service[i, :m] = s.debt_service
        balloon[i, :m] = s.balloon
        owed[i, :m] = s.owed
        balance[i, :m] = s.balance
        wal[i] = s.wal_years

    segments = tuple(sorted({ln.segment for ln in ordered}))
    segment_index = np.array([segments.index(ln.segment) for ln in ordered], dtype=np.int64)
    n_life = np.array(
        [max(0, periods(ln.economic_life_years - ln.gpu_age_years, f)) for ln in ordered],
        dtype=np.int64,
    )
    n_contract = np.array([periods(ln.contract_years, f) for ln in ordered], dtype=np.int64)
    n_refi = np.array([periods(ln.refi_term_years, f) for ln in ordered], dtype=np.int64)
    book_value = np.zeros(shape)
    t = np.arange(horizon + 1) / f
    for i, ln in enumerate(ordered):
        if ln.gpu_cost is not None:
            remaining = np.maximum(0.0, 1.0 - (ln.gpu_age_years + t) / ln.book_life_years)
            book_value[i] = ln.pledged_share * ln.n_gpus * ln.gpu_cost * remaining
    max_ltv = np.array([np.inf if ln.max_ltv is None else ln.max_ltv for ln in ordered])
    active = np.array([int(np.sum(n >= k)) for k in range(horizon + 1)], dtype=np.int64)
    values = {
        name: np.array([float(getattr(ln, name)) for ln in ordered], dtype=np.float64)
        for name in NUMERIC_FIELDS
    }
    return PortfolioArrays(
        loan_id=tuple(ln.loan_id for ln in ordered),
        segments=segments,
        segment_index=segment_index,
        periods_per_year=f,
        horizon=horizon,
        n=n,
        n_life=n_life,
        n_contract=n_contract,
        n_refi=n_refi,
        max_ltv=max_ltv,
        wal_years=wal,
        active=active,
        interest=interest,
        debt_service=debt_service,
        balloon=balloon,
        owed=owed,
        balance=balance,
        book_value=book_value,
        has_covenant=values["min_dscr"] > 0,
        book_basis=np.array([ln.ltv_basis == "book" for ln in ordered], dtype=bool),
        sells_until=np.where(values["pledged_share"] * values["n_gpus"] > 0, n_life, 0),
        has_ltv_covenant=np.isfinite(max_ltv),
        balloon_due=balloon > 0,
        total_principal=float(values["principal"].sum()),
        principal_wal=float(np.sum(values["principal"] * wal)),
        values=values,
    )
