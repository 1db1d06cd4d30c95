"""The mechanisms model v3 added, worked by hand on one loan.

No power cost, utilization 1 and, but for case (b), no fixed cost, a deep
market and a zero discount rate, so that the arithmetic fits in a comment.
Each case runs through the engine (``run_grid`` on NumPy, per-loan outputs),
which must agree with the literal reference (``reference.evaluate_grid``) on
every variable first; the per-period figures are read from the reference's
trace (``reference.trace_cell``), which carries the path and shock factors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_config

from gridstress import reference, run_grid
from gridstress.config import config_from_dict

INF = float("inf")
SCENARIO = {
    "discount_rate": 0.0,
    "liquidation_cost": 0.0,
    "crypto_haircut": 0.0,
    "market_depth_gpus": INF,
}
PLAIN = {
    "rate": 0.0,
    "utilization": 1.0,
    "power_kw_per_gpu": 0.0,
    "fixed_opex_per_gpu_year": 0.0,
    "refi_term_years": 0,
}


def config(loan, f=4, d=0.0, c=0.0, h=0.0, **scenario):
    """A one-cell config of one loan."""
    return make_config(
        [{**PLAIN, **loan}],
        periods_per_year=f,
        scenario={**SCENARIO, **scenario},
        grid={
            "deflation": {"values": [d]},
            "crypto_drawdown": {"values": [c]},
            "haircut": {"values": [h]},
        },
    )


def cell(cfg):
    """The engine's one cell as a dict of floats (per-loan values of the one
    loan), after checking that the reference agrees on every variable."""
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    axes = {a.name: a.array for a in cfg.axes}
    ref = reference.evaluate_grid(
        cfg.loans, cfg.periods_per_year, axes, cfg.scenario, paths=cfg.paths
    )
    for name, expected in ref.items():
        got = ds[name].values
        if name == "loan_default_years":  # the cube leaves out the haircut axis
            expected = expected[:, :, 0]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-6, equal_nan=True)
    out = {k: float(ds[k].values.ravel()[0]) for k in ds.data_vars if ds[k].ndim == 3}
    by_trigger = ds["default_rate_by_trigger"].values[0, 0, 0]
    out["trigger"] = [str(t) for t, v in zip(ds["trigger"].values, by_trigger) if v > 0]
    out["years"] = float(ds["loan_default_years"].values[0, 0, 0])
    return out


def trace(cfg):
    """The reference's periods of the one loan in the one cell."""
    point = {**cfg.scenario, **{a.name: a.values[0] for a in cfg.axes}}
    traces, _, _ = reference.trace_cell(cfg.loans, cfg.periods_per_year, point, paths=cfg.paths)
    return traces[cfg.loans[0].loan_id]


# (a) Quarterly (f = 4, H = 2190 GPU-hours a period).  1,000 H100s renting at
# $2.00 for 1.5 years (n_L = 6), financed by $12M over 1.5 years (n = 6),
# linear at 0%: DS_k = $2M, O_k = 12M - 2M k.  A new generation ships at
# generation_years 0.5: n_g = round_half_up(0.5 * 4) = 2, so from period 3 on
# S_k = 1 - 0.4 * 1 = 0.6 and m_k = 2.00 * 0.6 = $1.20.
LAUNCH = {
    "loan_id": "H100",
    "principal": 12e6,
    "term_years": 1.5,
    "amortization": "linear",
    "n_gpus": 1000,
    "rent": 2.0,
    "economic_life_years": 1.5,
    "generation_exposure": 1.0,
}
SHOCK = {"generation_shock": 0.4, "generation_years": 0.5}


def test_a_launch_cuts_rent_cfads_dscr_and_the_appraisals():
    # Rent and cash flow, no covenant (every period runs):
    #   k = 1, 2: m = 2.00, CFADS = 1000 * 2190 * 2.00 = 4,380,000, DSCR = 2.19
    #   k = 3..6: m = 1.20, CFADS = 1000 * 2190 * 1.20 = 2,628,000, DSCR = 1.314
    # Foresight appraisal (y = 0): G_k = sum_{j=k+1..6} 2190 m_j per GPU:
    #   G_1 = 4380 + 4 * 2628 = 14,892; G_2 = 4 * 2628 = 10,512; G_3 = 7,884;
    #   G_4 = 5,256; G_5 = 2,628; G_6 = 0.
    # Market appraisal (d_a = 0, y = 0): G_k = (6 - k) * 2190 m_k, period k's rent
    #   held flat: G_1 = 5 * 4380 = 21,900; G_2 = 4 * 4380 = 17,520, unaware of the
    #   launch; from k = 3 the launch is in m_k: G_3 = 3 * 2628 = 7,884 as foresight.
    cfg = config(LAUNCH, **SHOCK)
    rows = trace(cfg)
    assert [r["k"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["shock_factor"] for r in rows] == pytest.approx([1, 1, 0.6, 0.6, 0.6, 0.6])
    assert [r["rent_path_factor"] for r in rows] == [1.0] * 6
    assert [r["rent_index"] for r in rows] == pytest.approx([2.0, 2.0, 1.2, 1.2, 1.2, 1.2])
    assert [r["rent"] for r in rows] == [r["rent_index"] for r in rows]
    assert [r["cfads"] for r in rows] == pytest.approx([4.38e6] * 2 + [2.628e6] * 4)
    assert [r["dscr"] for r in rows] == pytest.approx([2.19] * 2 + [1.314] * 4)
    foresight = [14_892e3, 10_512e3, 7_884e3, 5_256e3, 2_628e3, 0.0]
    assert [r["gpu_fair_value"] for r in rows] == pytest.approx(foresight)
    r = cell(cfg)
    assert math.isnan(r["years"]) and r["loss"] == 0.0
    assert r["min_dscr"] == pytest.approx(1.314, rel=1e-12)
    market = trace(config(LAUNCH, appraisal_deflation=0.0, **SHOCK))
    assert [r["gpu_fair_value"] for r in market] == pytest.approx(
        [21_900e3, 17_520e3, 7_884e3, 5_256e3, 2_628e3, 0.0]
    )
    # A market that expects rents to halve every year (d_a = 0.5) extrapolates
    #   period 1's $2.00: G_1 = 2190 * 2.00 * sum_{l=1..5} 0.5^(l/4)
    #   = 4380 * (0.8409 + 0.7071 + 0.5946 + 0.5 + 0.4204) = 4380 * 3.0631 = 13,416.
    halving = config(LAUNCH, appraisal_deflation=0.5, **SHOCK)
    g_1 = 4380 * sum(0.5 ** (lag / 4) for lag in range(1, 6))
    assert g_1 == pytest.approx(13_416, abs=1)
    assert trace(halving)[0]["gpu_fair_value"] == pytest.approx(1000 * g_1, rel=1e-12)
    assert math.isnan(cell(halving)["years"])
    # Without the launch: m = 2.00 throughout, DSCR 2.19 in every period.
    assert cell(config(LAUNCH))["min_dscr"] == pytest.approx(2.19, rel=1e-12)


def test_a_launch_breaks_an_ltv_covenant_earlier_under_foresight():
    # max_ltv 0.7, haircut 0.5.  Foresight: LTV_1 = 10M / 14.892M = 0.6715,
    #   LTV_2 = 8M / 10.512M = 0.7610 > 0.7: LTV default at t = 0.5 (the appraisal
    #   already knows the launch), EAD = O_2 = 8M, recovery 0.5 * 10.512M = 5.256M
    #   (cash 0: the cap is the reserve, 0), loss 2.744M; DSCR so far 2.19.
    # Market: LTV_1 = 10M / 21.9M = 0.4566, LTV_2 = 8M / 17.52M = 0.4566,
    #   LTV_3 = 6M / 7.884M = 0.7610 > 0.7: default at t = 0.75, when the launch
    #   happens; EAD = O_3 = 6M, recovery 0.5 * 7.884M = 3.942M, loss 2.058M;
    #   lowest DSCR 1.314 (period 3, the default's own).
    # Without the launch LTV_k = O_k / ((6 - k) 4.38M) = 0.4566 in every period.
    covenant = {**LAUNCH, "max_ltv": 0.7}
    r = cell(config(covenant, h=0.5, **SHOCK))
    assert r["years"] == 0.5 and r["trigger"] == ["ltv"]
    assert r["loss"] == pytest.approx(8e6 - 0.5 * 10.512e6, rel=1e-12)
    assert r["loss_rate"] == pytest.approx(2.744e6 / 12e6, rel=1e-12)
    assert r["min_dscr"] == pytest.approx(2.19, rel=1e-12)
    rows = trace(config(covenant, h=0.5, **SHOCK))
    assert [r["ltv_market"] for r in rows] == pytest.approx([10 / 14.892, 8 / 10.512])
    m = cell(config(covenant, h=0.5, appraisal_deflation=0.0, **SHOCK))
    assert m["years"] == 0.75 and m["trigger"] == ["ltv"]
    assert m["loss"] == pytest.approx(6e6 - 0.5 * 7.884e6, rel=1e-12)
    assert m["min_dscr"] == pytest.approx(1.314, rel=1e-12)
    assert math.isnan(cell(config(covenant, h=0.5))["years"])


# (b) Annual (f = 1, H = 8760).  1,000 GPUs renting at $2.00 with fixed cost
# $1,095 a GPU-year for 5 years, rents halving every year (d = 0.5):
# m_j = 2 * 0.5^j = 1, 0.5, 0.25, 0.125, 0.0625 and
# pi_j = 8760 m_j - 1095 = 7665, 3285, 1095, 0, -547.5: the last year loses money.
# $3M over 3 years, linear at 0%: DS = 1M, O_1 = 2M, O_2 = 1M, O_3 = 0;
# CFADS_j = 1000 pi_j >= 1.095M covers it.  LTV covenant 1.0.
RETIRING = {
    "loan_id": "OLD-FLEET",
    "principal": 3e6,
    "term_years": 3,
    "amortization": "linear",
    "n_gpus": 1000,
    "rent": 2.0,
    "fixed_opex_per_gpu_year": 1095.0,
    "economic_life_years": 5,
    "max_ltv": 1.0,
}


def test_b_the_market_appraisal_retires_a_fleet_that_stops_paying():
    # Foresight (y = 0): G_1 = 3285 + 1095 + 0 - 547.5 = 3,832.5; G_2 = 1095 + 0
    #   - 547.5 = 547.5: the losing fifth year is netted against the others.
    #   LTV_1 = 2M / 3.8325M = 0.5219; LTV_2 = 1M / 547,500 = 1.8265 > 1: LTV
    #   default at t = 2, EAD = O_2 = 1M, recovery 547,500 (haircut 0, no
    #   cash kept), loss 452,500.
    # Market, d_a = d = 0.5: the expected rents are the scenario's, and the owner
    #   retires the fleet after year 4: W_{1,4} = max(0, -547.5) = 0,
    #   W_{1,3} = max(0, 0 + 0) = 0, W_{1,2} = 1095, G_1 = W_{1,1} = 1095 + 3285
    #   = 4,380 (547.5 above foresight); G_2 = 1,095; G_3 = 0.
    #   LTV_1 = 2M / 4.38M = 0.4566, LTV_2 = 1M / 1.095M = 0.9132 <= 1, LTV_3 = 0
    #   (nothing owed): repaid.
    cfg = config(RETIRING, f=1, d=0.5)
    rows = trace(cfg)
    assert [r["rent_index"] for r in rows] == pytest.approx([1.0, 0.5])
    assert [r["cfads"] for r in rows] == pytest.approx([7.665e6, 3.285e6])
    assert [r["gpu_fair_value"] for r in rows] == pytest.approx([3_832.5e3, 547.5e3])
    r = cell(cfg)
    assert r["years"] == 2.0 and r["trigger"] == ["ltv"]
    assert r["loss"] == pytest.approx(1e6 - 547.5e3, rel=1e-12)
    market = config(RETIRING, f=1, d=0.5, appraisal_deflation=0.5)
    rows = trace(market)
    assert [r["gpu_fair_value"] for r in rows] == pytest.approx([4_380e3, 1_095e3, 0.0])
    assert [r["ltv_market"] for r in rows] == pytest.approx([2 / 4.38, 1 / 1.095, 0.0])
    m = cell(market)
    assert math.isnan(m["years"]) and m["loss"] == 0.0
    assert m["min_dscr"] == pytest.approx(1.095, rel=1e-12)  # CFADS_3 / DS_3


# (c) and (d): the scenario paths.
DATES = ["2023-03-01", "2023-08-01", "2024-03-01", "2024-10-01", "2027-03-01"]
DAYS = [0, 153, 366, 580, 1461]  # since 2023-03-01 (2024 is a leap year)
INDEX = [4.70, 8.00, 2.85, 2.00, 2.50]
REPLAY = {
    "loan_id": "REPLAY",
    "principal": 8e6,
    "term_years": 2,
    "amortization": "linear",
    "n_gpus": 1000,
    "rent": 4.70,
    "economic_life_years": 6,
}


def _path_config(tmp_path, name, rows):
    (tmp_path / name).write_text("\n".join(rows) + "\n")
    raw = {
        "name": name,
        "scenario": {**SCENARIO, "rent_path": name},
        "grid": {
            "deflation": {"values": [0.0, 0.1]},
            "crypto_drawdown": {"values": [0.0]},
            "haircut": {"values": [0.0]},
        },
        "portfolio": [{**PLAIN, **REPLAY}],
    }
    return config_from_dict(raw, "replay.yaml", base_dir=tmp_path)


def test_c_a_path_by_dates_is_the_same_path_by_years(tmp_path):
    # years = days since the first date / 365.25: 0, 0.4189, 1.0021, 1.5880, 4.
    by_date = _path_config(
        tmp_path, "dates.csv", ["date,index"] + [f"{d},{i}" for d, i in zip(DATES, INDEX)]
    )
    by_years = _path_config(
        tmp_path,
        "years.csv",
        ["years,index"] + [f"{n / 365.25!r},{i}" for n, i in zip(DAYS, INDEX)],
    )
    assert by_date.paths == by_years.paths
    assert by_date.paths["rent_path"][-1] == (4.0, 2.5)
    a = run_grid(by_date, backend="numpy", per_loan=True)
    b = run_grid(by_years, backend="numpy", per_loan=True)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    # At deflation 0 the lowest rent of the 8 quarters is at t_7 = 1.75, between
    # the Oct 2024 low (1.5880, 2.00) and (4, 2.50):
    #   I(1.75) = 2.00 + 0.50 * (1.75 - 1.5880) / (4 - 1.5880) = 2.0336,
    #   P(1.75) = 2.0336 / 4.70 = 0.4327, m_7 = 4.70 P = $2.0336,
    #   CFADS_7 = 1000 * 2190 * 2.0336 = 4.4536M, DS = 8M / 8 = 1M: DSCR 4.4536.
    # Without the path the rent stays at 4.70: DSCR 10.293 in every quarter.
    t_low = 580 / 365.25
    index = 2.0 + 0.5 * (1.75 - t_low) / (4.0 - t_low)
    r = cell(by_date)
    np.testing.assert_allclose(a["min_dscr"].values[0, 0, 0], 2.19 * index, rtol=1e-12)
    assert r["min_dscr"] == pytest.approx(2.19 * index, rel=1e-12)
    point = {**by_date.scenario, "deflation": 0.0, "crypto_drawdown": 0.0, "haircut": 0.0}
    traces, _, _ = reference.trace_cell(by_date.loans, 4, point, paths=by_date.paths)
    row = traces["REPLAY"][6]
    assert row["k"] == 7 and row["rent_path_factor"] == pytest.approx(index / 4.70, rel=1e-12)
    assert row["rent_index"] == pytest.approx(index, rel=1e-12)
    plain = run_grid(config(REPLAY), backend="numpy")
    assert float(plain["min_dscr"].values.ravel()[0]) == pytest.approx(2.19 * 4.70, rel=1e-12)


# (d) A miner with no GPUs: mining revenue $40M a year, cost $10M, $50M of coins
# pledged, $30M bullet for 1 year (f = 4, n = 4, DS = 0), cash kept up to
# $100M, no reserve.  The crypto path falls 60% in half a year and recovers to
# 70% of its start: Q(t_k) = 0.7, 0.4, 0.55, 0.7 for k = 1..4.  On top, a
# drawdown c = 0.5 over D = 2 periods: 1 - c min(k, 2) / 2 = 0.75, 0.5, 0.5, 0.5,
# so X_k = 0.525, 0.2, 0.275, 0.35 and C_k = 50M X_k = 26.25M, 10M, 13.75M, 17.5M.
# M_k = max(0, 40M X_k - 10M) / 4 = 2.75M, 0 (8M < 10M: switched off), 0.25M, 1M.
MINER = {
    "loan_id": "MINER",
    "principal": 30e6,
    "term_years": 1,
    "amortization": "bullet",
    "mining_revenue": 40e6,
    "mining_cost": 10e6,
    "crypto_collateral": 50e6,
    "cash_cap": 100e6,
    "refi_advance_rate": 0.6,
}
FALL_AND_RECOVERY = {"crypto_path": [[0, 100], [0.5, 40], [1.0, 70]], "drawdown_periods": 2}


def test_d_a_crypto_path_that_falls_and_recovers():
    cfg = config(MINER, c=0.5, **FALL_AND_RECOVERY)
    rows = trace(cfg)
    assert [r["crypto_path_factor"] for r in rows] == pytest.approx([0.7, 0.4, 0.55, 0.7])
    assert [r["crypto_index"] for r in rows] == pytest.approx([0.525, 0.2, 0.275, 0.35])
    assert [r["mining"] for r in rows] == pytest.approx([2.75e6, 0.0, 0.25e6, 1e6])
    assert [r["crypto_collateral"] for r in rows] == pytest.approx([26.25e6, 10e6, 13.75e6, 17.5e6])
    assert [r["ltv_market"] for r in rows] == pytest.approx(
        [30 / 26.25, 3.0, 30 / 13.75, 30 / 17.5]
    )
    # No covenant: at maturity cash_4 = 2.75 + 0 + 0.25 + 1 = 4M and the collateral
    #   offer 0.6 * 17.5M = 10.5M cannot pay the 30M balloon: maturity default,
    #   EAD 30M, recovery 17.5M + 4M = 21.5M, loss 8.5M.
    r = cell(cfg)
    assert r["years"] == 1.0 and r["trigger"] == ["maturity"]
    assert r["loss"] == pytest.approx(30e6 - 21.5e6, rel=1e-12)
    # LTV covenant 2.5: LTV_1 = 30 / 26.25 = 1.143, LTV_2 = 30 / 10 = 3 > 2.5:
    #   default at the trough, t = 0.5; recovery C_2 + cash_2 = 10M + 2.75M.
    r = cell(config({**MINER, "max_ltv": 2.5}, c=0.5, **FALL_AND_RECOVERY))
    assert r["years"] == 0.5 and r["trigger"] == ["ltv"]
    assert r["loss"] == pytest.approx(30e6 - 12.75e6, rel=1e-12)
    assert r["recovery_rate"] == pytest.approx(12.75 / 30, rel=1e-12)
    # Without the path X = 0.75, 0.5, 0.5, 0.5: LTV 0.8 then 1.2, no breach;
    #   M = 5M, 2.5M, 2.5M, 2.5M, cash_4 = 12.5M, offer 0.6 * 25M = 15M < 30M - 12.5M:
    #   maturity default, recovery 25M + 12.5M > 30M: loss 0.
    r = cell(config({**MINER, "max_ltv": 2.5}, c=0.5, drawdown_periods=2))
    assert r["years"] == 1.0 and r["trigger"] == ["maturity"] and r["loss"] == 0.0
