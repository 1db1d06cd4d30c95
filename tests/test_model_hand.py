"""Single-loan cases of model v1 worked by hand, one per amortisation type and trigger.

Every case runs annual periods (f = 1, H = 8760 GPU-hours a period) with
numbers chosen so the arithmetic fits in a comment, and with the settings
under which model v2 is model v1 (a deep market, no cash kept above the
reserve, no cash-flow refinancing; tests/test_model_v2_hand.py has the v2
mechanisms).  Each is checked on the engine (gridstress.model) and on the
literal reference (gridstress.reference).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_config

from gridstress import reference, run_grid

BASE = {
    "loan_id": "A",
    "utilization": 1.0,
    "power_kw_per_gpu": 0.0,
    "fixed_opex_per_gpu_year": 0.0,
    "economic_life_years": 3,
    "refi_advance_rate": 0.0,
    "refi_term_years": 0,
}


def cell(loan, d=0.0, c=0.0, h=0.0, **scenario):
    """Scalars of one cell from the engine, after checking the reference agrees."""
    scenario = {
        "liquidation_cost": 0.05,
        "discount_rate": 0.10,
        "crypto_haircut": 0.10,
        "drawdown_periods": 1,
        "market_depth_gpus": float("inf"),
        **scenario,
    }
    cfg = make_config(
        [{**BASE, **loan}],
        periods_per_year=1,
        scenario=scenario,
        grid={
            "deflation": {"values": [d]},
            "crypto_drawdown": {"values": [c]},
            "haircut": {"values": [h]},
        },
    )
    ds = run_grid(cfg, backend="numpy")
    got = {k: float(ds[k].values.ravel()[0]) for k in ds.data_vars if ds[k].ndim == 3}
    ref = reference.evaluate_grid(
        cfg.loans, 1, {"deflation": [d], "crypto_drawdown": [c], "haircut": [h]}, cfg.scenario
    )
    for k, v in got.items():
        np.testing.assert_allclose(v, ref[k].ravel()[0], rtol=1e-12, err_msg=k)
    got["by_trigger"] = dict(
        zip(ds["trigger"].values, ds["default_rate_by_trigger"].values.ravel().tolist())
    )
    assert got["market_price_min"] == 1.0  # a deep market: no sale moves the price
    return got


P = 100 * 1.21 / 0.21  # annuity payment on 1000 at 10%, 2 years: 576.190476...
ANNUITY = {
    "principal": 1000,
    "rate": 0.10,
    "term_years": 2,
    "amortization": "annuity",
    "n_gpus": 1,
    "rent": 0.1,
}


def test_annuity_repaid_without_stress():
    # R_k = 8760 * 0.1 = 876 > DS = 576.19 in both years: no default.
    # DSCR = 876 / 576.19 = 1.5203
    r = cell(ANNUITY, d=0.0, h=0.2)
    assert r["defaults"] == 0 and r["loss"] == 0
    assert math.isnan(r["first_default_years"]) and math.isnan(r["recovery_rate"])
    assert r["min_dscr"] == pytest.approx(876 / P, rel=1e-12)


def test_annuity_payment_default_with_gpu_recovery():
    # d = 0.5: R_1 = 876 * 0.5 = 438 < 576.19 and no reserve: cash_1 = -138.19,
    # payment default at tau = 1, EAD = B_0 = 1000.
    # Appraisal (n_L = 3, y = 10%): pi_j = 876 * 0.5^j; pi_2 = 219, pi_3 = 109.5;
    # G_1 = 219 / 1.1 + 109.5 / 1.21 = 289.5868.
    # Recovery (l = 5%, h = 20%): 0.95 * 0.8 * 289.5868 = 220.0860; loss = 779.9140.
    r = cell(ANNUITY, d=0.5, h=0.2)
    G1 = 219 / 1.1 + 109.5 / 1.21
    loss = 1000 - 0.95 * 0.8 * G1
    assert r["defaults"] == 1 and r["default_rate"] == 1.0
    assert r["first_default_years"] == 1.0
    assert r["by_trigger"] == {"payment": 1.0, "covenant": 0.0, "ltv": 0.0, "maturity": 0.0}
    assert r["loss"] == pytest.approx(loss, rel=1e-12)
    assert r["loss_pv"] == pytest.approx(loss / 1.1, rel=1e-12)
    assert r["recovery_rate"] == pytest.approx(0.95 * 0.8 * G1 / 1000, rel=1e-12)
    assert r["min_dscr"] == pytest.approx(438 / P, rel=1e-12)
    # WAL = (1 * 476.19 + 2 * 523.81) / 1000; breakeven = 1e4 * loss_pv / (1000 * WAL)
    wal = (1 * (P - 100) + 2 * (1100 - P)) / 1000
    assert r["breakeven_spread_bps"] == pytest.approx(1e4 * loss / 1.1 / (1000 * wal))


def test_pledged_share_scales_collateral():
    # Same as above with half the fleet pledged: recovery 0.95 * 0.8 * 0.5 * G_1.
    r = cell({**ANNUITY, "pledged_share": 0.5}, d=0.5, h=0.2)
    G1 = 219 / 1.1 + 109.5 / 1.21
    assert r["loss"] == pytest.approx(1000 - 0.95 * 0.8 * 0.5 * G1, rel=1e-12)


LINEAR = {
    "principal": 1200,
    "rate": 0.0,
    "term_years": 3,
    "amortization": "linear",
    "n_gpus": 1,
    "rent": 0.05,
    "economic_life_years": 2,
    "cash_reserve": 100,
    "min_dscr": 1.0,
}


def test_linear_covenant_default():
    # A_k = DS_k = 400. R_k = 438 * 0.9^k: R_1 = 394.2, R_2 = 354.78.
    # DSCR_1 = 0.9855 < 1, DSCR_2 = 0.88695 < 1: two breaches, cure_periods = 2
    # -> covenant default at tau = 2 with the period's debt service paid.
    # cash_1 = min(100, 100 + 394.2 - 400) = 94.2; cash_2 = 94.2 + 354.78 - 400 = 48.98.
    # EAD = O_2 = 1200 - 400 - 400 = 400. n_L = 2 so V_2 = 0: recovery = 48.98.
    r = cell({**LINEAR, "cure_periods": 2}, d=0.1, discount_rate=0.0)
    assert r["first_default_years"] == 2.0
    assert r["by_trigger"]["covenant"] == 1.0
    assert r["loss"] == pytest.approx(400 - 48.98, rel=1e-12)
    assert r["loss_pv"] == pytest.approx(400 - 48.98, rel=1e-12)  # y = 0
    assert r["min_dscr"] == pytest.approx(354.78 / 400, rel=1e-12)


def test_linear_payment_default_when_cure_is_longer():
    # cure_periods = 3: no covenant default by k = 2. k = 3: GPUs out of service
    # (n_L = 2) so R_3 = 0; cash_3 = 48.98 + 0 - 400 < 0: payment default,
    # EAD = B_2 = 400, nothing recovered (cash negative, V = 0): loss = 400.
    r = cell({**LINEAR, "cure_periods": 3}, d=0.1, discount_rate=0.0)
    assert r["first_default_years"] == 3.0
    assert r["loss"] == pytest.approx(400.0, rel=1e-12)
    assert r["recovery_rate"] == 0.0
    assert r["min_dscr"] == 0.0  # DSCR_3 = 0 / 400


BULLET = {
    "principal": 1000,
    "rate": 0.05,
    "term_years": 2,
    "amortization": "bullet",
    "n_gpus": 0,
    "mining_revenue": 100,
    "crypto_collateral": 1000,
    "cash_reserve": 100,
    "refi_advance_rate": 0.5,
}


def test_bullet_maturity_default_on_crypto():
    # c = 0.4 reached in D = 1 period: X_1 = X_2 = 0.6. M = 60 > DS = 50, cash stays 100.
    # Maturity: balloon 1000 > 100 + 0.5 * 600 = 400 -> default at tau = 2, EAD = O_2 = 1000.
    # Recovery = 0.95 * (600 * (1 - 0.1)) + 100 = 613; loss = 387; PV at 5%: 387 / 1.05^2.
    r = cell(BULLET, c=0.4, discount_rate=0.05)
    assert r["first_default_years"] == 2.0
    assert r["by_trigger"]["maturity"] == 1.0
    assert r["loss"] == pytest.approx(387.0, rel=1e-12)
    assert r["loss_pv"] == pytest.approx(387.0 / 1.05**2, rel=1e-12)
    assert r["min_dscr"] == pytest.approx(60 / 50)


def test_bullet_refinanced_when_collateral_suffices():
    # refi 1.0, c = 0: 1000 <= 100 + 1.0 * 1000 -> refinanced, no default.
    r = cell({**BULLET, "refi_advance_rate": 1.0}, c=0.0)
    assert r["defaults"] == 0 and r["loss"] == 0


def test_ltv_default():
    # max_ltv 1.5, c = 0.4: LTV_1 = O_1 / C_1 = 1000 / 600 = 1.667 > 1.5 -> default at tau = 1
    # (debt service paid), EAD = O_1 = 1000; recovery 0.95 * 540 + 100 = 613; PV 387 / 1.05.
    r = cell({**BULLET, "max_ltv": 1.5}, c=0.4, discount_rate=0.05)
    assert r["first_default_years"] == 1.0
    assert r["by_trigger"]["ltv"] == 1.0
    assert r["loss"] == pytest.approx(387.0, rel=1e-12)
    assert r["loss_pv"] == pytest.approx(387.0 / 1.05, rel=1e-12)
    # At c = 0.2: LTV = 1000 / 800 = 1.25 <= 1.5, and maturity 1000 > 100 + 400: default at 2.
    assert cell({**BULLET, "max_ltv": 1.5}, c=0.2)["first_default_years"] == 2.0


CONTRACT = {
    "principal": 10000,
    "rate": 0.01,
    "term_years": 2,
    "amortization": "bullet",
    "n_gpus": 10,
    "rent": 0.2,
    "utilization": 0.8,
    "power_kw_per_gpu": 1.0,
    "power_price": 0.15,
    "fixed_opex_per_gpu_year": 100,
    "contracted_share": 0.5,
    "contract_years": 1,
    "contract_rent": 0.3,
    "refi_advance_rate": 0.7,
}


def test_contract_expiry_and_idle_gpus():
    # e = 0.15 $/GPU-h. d = 0.5: m_1 = 0.1, m_2 = 0.05, both <= e: merchant GPUs idle.
    # k = 1 (contract runs, s = 0.5): R = 87600 * 0.5 * 0.3 = 13140,
    #   P = 87600 * 0.5 * 0.15 = 6570, F = 1000: CFADS_1 = 5570; DS = 100, cash capped at 0.
    # k = 2 (contract over, idle): CFADS_2 = -1000, cash_2 = -1100: payment default,
    #   EAD = B_1 = 10000; pi_3 = 0 - 100 < 0 so G_2 = 0: loss 10000.
    r = cell(CONTRACT, d=0.5, discount_rate=0.08)
    assert r["first_default_years"] == 2.0
    assert r["loss"] == pytest.approx(10000.0)
    assert r["min_dscr"] == pytest.approx(-1000 / 100)  # DSCR_2 = CFADS_2 / DS_2


def test_contract_then_merchant_maturity_default():
    # d = 0: m = 0.2 > e. k = 1: R = 87600 * (0.15 + 0.5 * 0.8 * 0.2) = 20148,
    #   P = 87600 * (0.5 + 0.4) * 0.15 = 11826, F = 1000: CFADS_1 = 7322.
    # k = 2: R = 87600 * 0.16 = 14016, P = 87600 * 0.8 * 0.15 = 10512: CFADS_2 = 2504.
    # Appraisal at k = 2 (n_L = 3): pi_3 = 8760 * 0.8 * 0.05 - 100 = 250.4, G_2 = 250.4 / 1.08.
    # V_2 = 10 G_2 = 2318.52; maturity: 10000 > 0 + 0.7 * 2318.52 -> default, EAD = 10000.
    # Recovery (h = 0.2) = 0.95 * 0.8 * 2318.52 = 1762.07.
    r = cell(CONTRACT, d=0.0, h=0.2, discount_rate=0.08)
    V2 = 10 * 250.4 / 1.08
    assert r["first_default_years"] == 2.0
    assert r["loss"] == pytest.approx(10000 - 0.95 * 0.8 * V2, rel=1e-12)
    assert r["min_dscr"] == pytest.approx(2504 / 100, rel=1e-12)


def test_mining_only_loan_defaults_first_period():
    # No GPUs, no mining, no reserve: CFADS = 0 < DS_1 -> default in period 1.
    r = cell({"principal": 500, "rate": 0.08, "term_years": 3, "n_gpus": 0}, d=0.0)
    assert r["first_default_years"] == 1.0
    assert r["loss"] == pytest.approx(500.0)  # EAD = B_0, nothing to recover
