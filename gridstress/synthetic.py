"""Random but plausible portfolios, for tests and benchmarks."""

from __future__ import annotations

import numpy as np


def random_loans(rng: np.random.Generator, count: int, periods_per_year: int = 4):
    """Random but plausible loans that vary every field of model v1."""
    loans = []
    for i in range(count):
        amort = rng.choice(["annuity", "linear", "bullet"])
        loan = {
            "loan_id": f"L{i:03d}",
            "segment": rng.choice(["neocloud", "miner", "enterprise"]),
            "principal": float(rng.uniform(1e6, 5e8)),
            "rate": float(rng.choice([0.0, rng.uniform(0.0, 0.16)])),
            "spread": float(rng.uniform(0.0, 0.1)),
            "term_years": float(rng.integers(1, 4 * periods_per_year + 1) / periods_per_year
                                * rng.uniform(0.5, 2.0)),
            "amortization": str(amort),
            "n_gpus": float(rng.choice([0, rng.integers(100, 20000)])),
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
        loans.append(loan)
    return loans
