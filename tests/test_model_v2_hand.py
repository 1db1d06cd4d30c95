"""The mechanisms model v2 added, worked by hand on one or two loans.

Annual periods (f = 1, H = 8760 GPU-hours a period), no power or fixed cost,
discount rate 10%, numbers chosen so the arithmetic fits in a comment.  Each
case runs through the engine (gridstress.model, with per-loan outputs) and
is checked against the literal reference (gridstress.reference) first.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_config

from gridstress import reference, run_grid

INF = float("inf")
SCENARIO = {
    "liquidation_cost": 0.05,
    "discount_rate": 0.10,
    "crypto_haircut": 0.10,
    "drawdown_periods": 1,
    "market_depth_gpus": INF,
    "market_half_life_years": INF,
    "book_share": 1.0,
}
PLAIN = {
    "utilization": 1.0,
    "power_kw_per_gpu": 0.0,
    "fixed_opex_per_gpu_year": 0.0,
    "refi_advance_rate": 0.0,
    "refi_term_years": 0,
}


def cell(loans, d=0.0, h=0.0, **scenario):
    """One cell of the engine as a dict (per-loan values by loan id), after
    checking the reference agrees on every variable."""
    cfg = make_config(
        [{**PLAIN, **loan} for loan in loans],
        periods_per_year=1,
        scenario={**SCENARIO, **scenario},
        grid={
            "deflation": {"values": [d]},
            "crypto_drawdown": {"values": [0.0]},
            "haircut": {"values": [h]},
        },
    )
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    ref = reference.evaluate_grid(cfg.loans, 1, {a.name: a.array for a in cfg.axes}, cfg.scenario)
    for name, expected in ref.items():
        got = ds[name].values
        if name == "loan_default_years":  # the cube leaves out the haircut axis
            expected = expected[:, :, 0]
        np.testing.assert_allclose(
            got, expected, rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=name
        )
    out = {k: float(ds[k].values.ravel()[0]) for k in ds.data_vars if ds[k].ndim == 3}
    out["by_trigger"] = dict(
        zip(ds["trigger"].values, ds["default_rate_by_trigger"].values.ravel().tolist())
    )
    loans_ = [str(x) for x in ds["loan"].values]
    out["years"] = dict(zip(loans_, ds["loan_default_years"].values.reshape(-1).tolist()))
    out["loan_loss"] = dict(zip(loans_, ds["loan_loss"].values.reshape(-1).tolist()))
    return out


# A defaults in period 1 and its 1,000 GPUs are sold; B, whose LTV covenant
# holds at the full price, breaches it at the marked-down price one period later.
A = {
    "loan_id": "A",
    "principal": 1000,
    "rate": 0.10,
    "term_years": 2,
    "n_gpus": 1000,
    "rent": 0.1,
    "utilization": 0.0,
    "economic_life_years": 3,
}
B = {
    "loan_id": "B",
    "principal": 1500,
    "rate": 0.0,
    "term_years": 3,
    "amortization": "linear",
    "n_gpus": 1,
    "rent": 0.2,
    "economic_life_years": 4,
    "max_ltv": 0.3,
}
# Appraisal of B's GPU (d = 0): pi_j = 8760 * 0.2 = 1752 for j <= 4.
G1_B = 1752 / 1.1 + 1752 / 1.21 + 1752 / 1.331  # 4356.96
G2_B = 1752 / 1.1 + 1752 / 1.21  # 3040.66


def test_default_chain_through_the_resale_market():
    # A: utilization 0, so CFADS_1 = 0 < DS_1 = 576.19 and no reserve: payment
    #   default in period 1, EAD = B_0 = 1000; its GPUs earn nothing (G = 0), so
    #   recovery 0 and loss 1000.
    # Market step, W = 1000 GPUs, theta = 1, T infinite: S_1 = 1000 in-service
    #   GPUs sold, Q_1 = 1000, p_1 = 2^(-1000/1000) = 0.5.
    # B: linear 1500 over 3 years at 0%, A_k = DS_k = 500 < CFADS = 1752: it pays.
    #   k = 1: O_1 = 1000, LTV_1 = 1000 / (G_1 p_0) = 1000 / 4356.96 = 0.2295 <= 0.3.
    #   k = 2: O_2 = 500, LTV_2 = 500 / (G_2 p_1) = 500 / (3040.66 * 0.5) = 0.3289 > 0.3:
    #   LTV default one period after A's sale (at p = 1 it is 0.1644: no default).
    #   Its one GPU is sold too: Q_2 = 1001, p_2 = 2^(-1.001).
    #   EAD = O_2 = 500; at h = 0.7 recovery = 0.95 * 0.3 * G_2 p_2 = 432.99, loss 67.01.
    p2 = 2 ** (-1001 / 1000)
    loss_b = 500 - 0.95 * 0.3 * G2_B * p2
    r = cell([A, B], h=0.7, market_depth_gpus=1000)
    assert r["years"] == {"A": 1.0, "B": 2.0}
    assert r["by_trigger"] == {"payment": 0.4, "covenant": 0.0, "ltv": 0.6, "maturity": 0.0}
    assert r["loan_loss"]["A"] == pytest.approx(1000.0, rel=1e-12)
    assert r["loan_loss"]["B"] == pytest.approx(loss_b, rel=1e-12)
    assert r["loss"] == pytest.approx(1000 + loss_b, rel=1e-12)
    assert r["market_price_min"] == pytest.approx(p2, rel=1e-12)  # nothing sold in k = 3
    # In a deep market the chain does not happen: B is repaid.
    deep = cell([A, B], h=0.7)
    assert deep["years"]["A"] == 1.0 and math.isnan(deep["years"]["B"])
    assert deep["loss"] == pytest.approx(1000.0) and deep["market_price_min"] == 1.0
    # The book's share theta: the market sells 1/theta times the book's GPUs,
    # theta = 0.5: Q_1 = 2000, p_1 = 0.25 and B breaches as before.
    assert cell([A, B], market_depth_gpus=2000, book_share=0.5)["years"]["B"] == 2.0
    # A market twice as deep: p_1 = 2^(-0.5) = 0.7071, LTV_2 = 500 / 2150.1 = 0.2325 <= 0.3.
    assert math.isnan(cell([A, B], market_depth_gpus=2000)["years"]["B"])


def test_price_impact_fades_with_the_half_life():
    # T = 1 year: the overhang halves each period. Q_1 = 1000 (p_1 = 0.5),
    # B still breaches at k = 2 (LTV_2 uses p_1); Q_2 = 1000 * 0.5 + 1 = 501,
    # Q_3 = 250.5.  Lowest price p_1 = 0.5; B sold at p_2 = 2^(-0.501) = 0.7066:
    # at h = 0.8 recovery 0.95 * 0.2 * 3040.66 * 0.7066 = 408.23, loss 91.77,
    # against 0.95 * 0.2 * 3040.66 * 2^(-1.001) = 288.66, loss 211.34, when the
    # impact never fades.
    r = cell([A, B], h=0.8, market_depth_gpus=1000, market_half_life_years=1.0)
    assert r["years"]["B"] == 2.0
    assert r["market_price_min"] == pytest.approx(0.5, rel=1e-12)
    assert r["loan_loss"]["B"] == pytest.approx(500 - 0.95 * 0.2 * G2_B * 2**-0.501, rel=1e-12)
    assert r["loan_loss"]["B"] == pytest.approx(91.77, abs=0.01)
    lasting = cell([A, B], h=0.8, market_depth_gpus=1000)
    assert lasting["loan_loss"]["B"] == pytest.approx(211.34, abs=0.01)


def test_out_of_service_gpus_are_not_sold():
    # A's fleet out of service by period 1 (age 3 = life 3, n_L = 0): S_1 = 0, p stays 1.
    r = cell([{**A, "gpu_age_years": 3.0}, B], market_depth_gpus=1000)
    assert r["market_price_min"] == 1.0 and math.isnan(r["years"]["B"])


# An unsecured 2-year bullet at 5%: one GPU renting at 0.1 earns R = 876 a year,
# DS = 50 of interest, cash swept (cap = reserve = 0); the balloon of 1000 due
# at k = 2 can be refinanced only on cash flow.
BULLET = {
    "loan_id": "BUL",
    "principal": 1000,
    "rate": 0.05,
    "term_years": 2,
    "amortization": "bullet",
    "n_gpus": 1,
    "rent": 0.1,
    "economic_life_years": 5,
    "pledged_share": 0.0,
    "refi_min_dscr": 1.25,
}


def test_bullet_refinanced_on_cash_flow():
    # refi_term_years 2: K_2 = (876 / 1.1 + 876 / 1.21) / 1.25 = 1520.33 / 1.25
    # = 1216.26 >= 1000: refinanced, no default.
    assert cell([{**BULLET, "refi_term_years": 2}])["defaults"] == 0
    # One year of CFADS: K_2 = 796.36 / 1.25 = 637.09 < 1000: maturity default,
    # EAD = O_2 = 1000, nothing to recover (unsecured, no cash): loss 1000.
    r = cell([{**BULLET, "refi_term_years": 1}])
    assert r["first_default_years"] == 2.0 and r["by_trigger"]["maturity"] == 1.0
    assert r["loss"] == pytest.approx(1000.0)
    # No cash-flow offer (model v1): the same default.
    assert cell([{**BULLET, "refi_term_years": 0}])["first_default_years"] == 2.0
    # d = 0.5: CFADS_3 = 876 / 8 = 109.5, CFADS_4 = 54.75;
    # K_2 = (109.5 / 1.1 + 54.75 / 1.21) / 1.25 = 115.84 < 1000: default.
    assert cell([{**BULLET, "refi_term_years": 2}], d=0.5)["defaults"] == 1


# A 1% convertible bullet, unsecured, 3 years: one GPU at rent 0.05 earns
# R = 438 a year against DS = 10 of interest.
CONVERTIBLE = {
    "loan_id": "CONV",
    "principal": 1000,
    "rate": 0.01,
    "term_years": 3,
    "amortization": "bullet",
    "n_gpus": 1,
    "rent": 0.05,
    "economic_life_years": 5,
    "pledged_share": 0.0,
}


def test_convertible_pays_from_retained_cash():
    # cash_cap = face value 1000: cash_1 = 428, cash_2 = 856, cash_3 = min(1000, 1284)
    # = 1000; the balloon 1000 > 1000 + 0 does not hold: repaid from cash.
    assert cell([{**CONVERTIBLE, "cash_cap": 1000}])["defaults"] == 0
    # Cash swept (cap = reserve = 0, model v1): cash_3 = 0, maturity default, loss 1000.
    r = cell([CONVERTIBLE])
    assert r["by_trigger"]["maturity"] == 1.0 and r["loss"] == pytest.approx(1000.0)
    # d = 0.5: R_k = 219, 109.5, 54.75; cash_3 = 209 + 99.5 + 44.75 = 353.25 < 1000:
    # maturity default, EAD = O_3 = 1000, recovery = the cash, loss 646.75.
    r = cell([{**CONVERTIBLE, "cash_cap": 1000}], d=0.5)
    assert r["first_default_years"] == 3.0
    assert r["loss"] == pytest.approx(646.75, rel=1e-12)
    assert r["recovery_rate"] == pytest.approx(0.35325, rel=1e-12)


# Linear 1000 over 2 years at 0%, A_k = DS_k = 500, paid from a take-or-pay
# contract (R = 8760 * 0.1 = 876 a year whatever the market); LTV covenant 1.0.
# The GPU's merchant appraisal at d = 0.5 (market rent 0.05 * 0.5^j, life 3):
# pi_2 = 438 / 4 = 109.5, pi_3 = 54.75, G_1 = 109.5 / 1.1 + 54.75 / 1.21 = 144.79.
BOOK = {
    "loan_id": "BOOK",
    "principal": 1000,
    "rate": 0.0,
    "term_years": 2,
    "amortization": "linear",
    "n_gpus": 1,
    "rent": 0.05,
    "contracted_share": 1.0,
    "contract_years": 2,
    "contract_rent": 0.1,
    "economic_life_years": 3,
    "max_ltv": 1.0,
    "gpu_cost": 2000,
    "book_life_years": 4,
}


def test_book_value_covenant_does_not_fire_while_the_market_one_does():
    # Market basis: LTV_1 = O_1 / V_1 = 500 / 144.79 = 3.45 > 1: default at k = 1,
    # EAD = 500, recovery 0.95 * 144.79 = 137.55, loss 362.45.
    G1 = 109.5 / 1.1 + 54.75 / 1.21
    market = cell([{**BOOK, "ltv_basis": "market"}], d=0.5)
    assert market["first_default_years"] == 1.0 and market["by_trigger"]["ltv"] == 1.0
    assert market["loss"] == pytest.approx(500 - 0.95 * G1, rel=1e-12)
    # Book basis: BV_1 = 2000 * (1 - 1/4) = 1500, LTV_1 = 500 / 1500 = 0.33;
    # O_2 = 0: the covenant never fires though the GPU is worth 144.79 (the
    # collateral illusion), and the loan is repaid from the contract.
    book = cell([{**BOOK, "ltv_basis": "book"}], d=0.5)
    assert book["defaults"] == 0 and book["loss"] == 0.0
