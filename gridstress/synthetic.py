"""Random but plausible portfolios, for tests and benchmarks."""

from __future__ import annotations

import numpy as np


def random_loans(
    rng: np.random.Generator, count: int, periods_per_year: int = 4, exposure: bool = False
):
    """Random but plausible loans that vary every field of model v2 and, with
    ``exposure``, model v3's ``generation_exposure`` (0, 1 or between).

    The fields model v2 added are drawn after those of v1, and model v3's
    after those, loan by loan, so that loans drawn without ``exposure`` are
    the loans earlier versions drew from the same generator; :func:`v1_loans`
    turns such loans into ones model v1 covers.
    """
    loans = []
    for i in range(count):
        amort = rng.choice(["annuity", "linear", "bullet"])
        loan = {
            "loan_id": f"L{i:03d}",
            "segment": rng.choice(["neocloud", "miner", "enterprise"]),
            "principal": float(rng.uniform(1e6, 5e8)),
            "rate": float(rng.choice([0.0, rng.uniform(0.0, 0.16)])),
            "spread": float(rng.uniform(0.0, 0.1)),
            "term_years": float(
                rng.integers(1, 4 * periods_per_year + 1) / periods_per_year * rng.uniform(0.5, 2.0)
            ),
            "amortization": str(amort),
            "n_gpus": float(rng.choice([0, int(rng.integers(100, 20000))])),
            "gpu_age_years": float(rng.uniform(0, 3)),
            "economic_life_years": float(rng.uniform(2, 7)),
            "pledged_share": float(rng.choice([0.0, 1.0, rng.uniform(0, 1)])),
            "rent": float(rng.uniform(0.5, 4.0)),
            "utilization": float(rng.uniform(0.3, 1.0)),
            "contracted_share": float(rng.choice([0.0, rng.uniform(0, 1)])),
            "contract_years": float(rng.uniform(0, 5)),
            "contract_rent": float(rng.uniform(0.5, 4.0)),
            "power_kw_per_gpu": float(rng.uniform(0.5, 2.5)),
            "power_price": float(rng.uniform(0.03, 0.5)),
            "fixed_opex_per_gpu_year": float(rng.uniform(0, 6000)),
            "mining_revenue": float(rng.choice([0.0, rng.uniform(1e6, 2e8)])),
            "mining_cost": float(rng.uniform(0, 1e8)),
            "crypto_collateral": float(rng.choice([0.0, rng.uniform(1e6, 3e8)])),
            "cash_reserve": float(rng.choice([0.0, rng.uniform(0, 5e7)])),
            "min_dscr": float(rng.choice([0.0, rng.uniform(1.0, 1.6)])),
            "cure_periods": int(rng.integers(1, 4)),
            "max_ltv": None if rng.random() < 0.5 else float(rng.uniform(0.5, 1.5)),
            "refi_advance_rate": float(rng.uniform(0, 1)),
        }
        if amort != "bullet":
            loan["balloon"] = float(rng.choice([0.0, rng.uniform(0, 0.6)]))
        # Model v2: retained cash, refinancing on cash flow, book-value covenants.
        loan["cash_cap"] = (
            None if rng.random() < 0.4 else loan["cash_reserve"] + float(rng.uniform(0, 1e8))
        )
        loan["refi_term_years"] = float(rng.choice([0.0, rng.uniform(0.25, 6.0)]))
        loan["refi_min_dscr"] = float(rng.uniform(1.0, 1.8))
        loan["ltv_basis"] = str(rng.choice(["market", "book"]))
        if loan["ltv_basis"] == "book" or rng.random() < 0.5:
            loan["gpu_cost"] = float(rng.uniform(5e3, 6e4))
        if rng.random() < 0.5:
            loan["book_life_years"] = float(rng.uniform(2, 8))
        if exposure:
            loan["generation_exposure"] = float(rng.choice([0.0, 1.0, rng.uniform(0, 1)]))
        loans.append(loan)
    return loans


def v1_loans(loans):
    """The same loans with the v2 fields set as model v1 has them (model.md):
    no cash kept above the reserve, no cash-flow refinancing, LTV on market value."""
    return [
        {**loan, "cash_cap": None, "refi_term_years": 0.0, "ltv_basis": "market"} for loan in loans
    ]
