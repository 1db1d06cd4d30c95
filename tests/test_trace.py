"""Period-by-period traces of loans in one cell (``gridstress trace``), the market included."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from conftest import ROOT, make_config

from gridstress import load_config, run_grid
from gridstress.inputs import Axis
from gridstress.reference import trace_cell

PLAIN = {
    "utilization": 1.0,
    "power_kw_per_gpu": 0,
    "fixed_opex_per_gpu_year": 0,
    "refi_term_years": 0,
}


def test_trace_of_a_hand_worked_payment_default():
    # As tests/test_model_hand.py: R_1 = 8760 * 0.1 * 0.5 = 438 < DS_1 = 576.19,
    # no reserve -> payment default in period 1, EAD = 1000.
    cfg = make_config(
        [
            {
                **PLAIN,
                "loan_id": "A",
                "principal": 1000,
                "rate": 0.10,
                "term_years": 2,
                "n_gpus": 1,
                "rent": 0.1,
                "economic_life_years": 3,
            }
        ],
        periods_per_year=1,
    )
    traces, market, outcomes = trace_cell(
        cfg.loans,
        1,
        {
            "deflation": 0.5,
            "crypto_drawdown": 0.0,
            "haircut": 0.2,
            "discount_rate": 0.1,
            "market_depth_gpus": float("inf"),
        },
    )
    rows = traces["A"]
    assert len(rows) == 1
    assert rows[0]["cfads"] == pytest.approx(438.0)
    assert rows[0]["debt_service"] == pytest.approx(100 * 1.21 / 0.21)
    assert rows[0]["default"] == "payment"
    G1 = 219 / 1.1 + 109.5 / 1.21
    assert outcomes[0]["ead"] == 1000.0 and outcomes[0]["trigger"] == "payment"
    assert outcomes[0]["loss"] == pytest.approx(1000 - 0.95 * 0.8 * G1, rel=1e-12)
    # One GPU of one loan sold in a deep market: nothing moves the price; the
    # overhang fades with the default half-life of 0.5 year, 2^(-1 / 0.5) a year.
    assert market == [
        {"k": 1, "t_years": 1.0, "sold_gpus": 1.0, "overhang_gpus": 1.0, "price_index": 1.0},
        {"k": 2, "t_years": 2.0, "sold_gpus": 0.0, "overhang_gpus": 0.25, "price_index": 1.0},
    ]


def test_trace_shows_the_default_chain():
    # tests/test_model_v2_hand.py: A's 1,000 GPUs sold in period 1 halve the price
    # (W = 1000); B's market LTV 500 / (3040.66 * 0.5) = 0.3289 breaches 0.3 in period 2.
    from test_model_v2_hand import PLAIN as V2_PLAIN
    from test_model_v2_hand import SCENARIO, A, B

    cfg = make_config([{**V2_PLAIN, **A}, {**V2_PLAIN, **B}], periods_per_year=1)
    traces, market, outcomes = trace_cell(
        cfg.loans,
        1,
        {
            **SCENARIO,
            "deflation": 0.0,
            "crypto_drawdown": 0.0,
            "haircut": 0.7,
            "market_depth_gpus": 1000,
        },
    )
    assert market[0]["sold_gpus"] == 1000 and market[0]["price_index"] == 0.5
    b = traces["B"]
    assert [r["price_index"] for r in b] == [1.0, 0.5]  # p_{k-1} marks period k
    assert b[1]["gpu_fair_value"] == pytest.approx(1752 / 1.1 + 1752 / 1.21)
    assert b[1]["ltv_market"] == pytest.approx(500 / (0.5 * (1752 / 1.1 + 1752 / 1.21)))
    assert b[1]["default"] == "ltv" and b[1]["ltv_book"] is None  # no gpu_cost: no book value
    # canonical order, longest maturity first: B (n = 3), then A (n = 2)
    assert [(o["loan_id"], o["trigger"]) for o in outcomes] == [("B", "ltv"), ("A", "payment")]


def test_traces_add_up_to_the_cube_at_the_central_cell():
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    point = {"deflation": 0.3, "crypto_drawdown": 0.5, "haircut": 0.35}
    one_cell = replace(cfg, axes=tuple(Axis(a.name, (point[a.name],)) for a in cfg.axes))
    cube = run_grid(one_cell, backend="numpy", per_loan=True)
    _, market, outcomes = trace_cell(cfg.loans, cfg.periods_per_year, {**cfg.scenario, **point})
    assert sum(o["loss"] for o in outcomes) == pytest.approx(float(cube["loss"].item()), rel=1e-12)
    assert sum(o["loss_pv"] for o in outcomes) == pytest.approx(
        float(cube["loss_pv"].item()), rel=1e-12
    )
    first = min(o["default_years"] for o in outcomes if o["default_years"] is not None)
    assert first == float(cube["first_default_years"].item())
    assert min(m["price_index"] for m in market) == pytest.approx(
        float(cube["market_price_min"].item()), rel=1e-12
    )
    for o in outcomes:
        assert o["loss"] == pytest.approx(
            float(cube["loan_loss"].sel(loan=o["loan_id"]).item()), rel=1e-12, abs=1e-6
        )


def test_trace_cli(cli, tmp_path):
    res = cli(
        "trace",
        ROOT / "configs" / "seed.yaml",
        "--loan",
        "MN-BTC-LOAN",
        "--at",
        "crypto_drawdown=0.5",
        "--csv",
        "periods.csv",
    )
    assert res.returncode == 0, res.stderr
    assert "ltv default at t=0.5" in res.stdout
    assert "secondary market (every loan of the book" in res.stdout
    for column in ("price", "LTV mkt", "LTV book", "refi coll. $M", "refi CF $M"):
        assert column in res.stdout
    with (tmp_path / "periods.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["k"] for r in rows] == ["1", "2"] and rows[-1]["default"] == "ltv"
    assert {"price_index", "ltv_market", "ltv_book", "refi_cash_flow_offer"} <= set(rows[0])
    # The convertible's refinancing offers at maturity (k = 24) with no crypto
    # drawdown: unsecured, so no collateral offer; the fleet is out of service
    # after 5 years, so the cash-flow offer is 16 quarters of mining margin,
    # (300M - 180M) / 4 = 30M, at 8% over 1.35x: 30M * sum 1.08^(-m/4) / 1.35.
    # Its cash (kept up to the face value) repays the bullet.
    res = cli(
        "trace",
        ROOT / "configs" / "seed.yaml",
        "--loan",
        "MN-CONVERT-B200",
        "--at",
        "crypto_drawdown=0",
        "--csv",
        "convert.csv",
    )
    assert res.returncode == 0, res.stderr
    assert "repaid, no default" in res.stdout
    with (tmp_path / "convert.csv").open() as fh:
        last = list(csv.DictReader(fh))[-1]
    assert last["k"] == "24" and float(last["cash"]) == 1e9 and last["default"] == ""
    assert float(last["refi_collateral_offer"]) == 0
    assert float(last["refi_cash_flow_offer"]) == pytest.approx(
        30e6 * sum(1.08 ** (-m / 4) for m in range(1, 17)) / 1.35, rel=1e-12
    )
    res = cli("trace", ROOT / "configs" / "seed.yaml", "--at", "haircut=1.5")
    assert res.returncode == 2 and "--at haircut=1.5: haircut=1.5 must be in [0, 1]" in res.stderr
    res = cli("trace", ROOT / "configs" / "seed.yaml", "--loan", "NOPE")
    assert res.returncode == 2 and "--loan NOPE: not in the portfolio" in res.stderr
