"""Period-by-period traces of one loan in one cell (``gridstress trace``)."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from conftest import ROOT, make_config

from gridstress import load_config, run_grid
from gridstress.config import Axis
from gridstress.reference import trace_loan


def test_trace_of_a_hand_worked_payment_default():
    # As tests/test_model_hand.py: R_1 = 8760 * 0.1 * 0.5 = 438 < DS_1 = 576.19,
    # no reserve -> payment default in period 1, EAD = 1000.
    cfg = make_config([{"loan_id": "A", "principal": 1000, "rate": 0.10, "term_years": 2,
                        "n_gpus": 1, "rent": 0.1, "utilization": 1.0, "power_kw_per_gpu": 0,
                        "fixed_opex_per_gpu_year": 0, "economic_life_years": 3}],
                      periods_per_year=1)
    rows, outcome = trace_loan(cfg.loans[0], 1, {"deflation": 0.5, "crypto_drawdown": 0.0,
                                                 "haircut": 0.2, "discount_rate": 0.1})
    assert len(rows) == 1
    assert rows[0]["cfads"] == pytest.approx(438.0)
    assert rows[0]["debt_service"] == pytest.approx(100 * 1.21 / 0.21)
    assert rows[0]["default"] == "payment"
    G1 = 219 / 1.1 + 109.5 / 1.21
    assert outcome["ead"] == 1000.0
    assert outcome["loss"] == pytest.approx(1000 - 0.95 * 0.8 * G1, rel=1e-12)


def test_traces_add_up_to_the_cube_at_the_central_cell():
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    point = {"deflation": 0.3, "crypto_drawdown": 0.5, "haircut": 0.35}
    one_cell = replace(cfg, axes=tuple(Axis(a.name, (point[a.name],)) for a in cfg.axes))
    cube = run_grid(one_cell, backend="numpy")
    outcomes = [trace_loan(ln, cfg.periods_per_year, {**cfg.scenario, **point})[1]
                for ln in cfg.loans]
    assert sum(o["loss"] for o in outcomes) == pytest.approx(float(cube["loss"].item()), rel=1e-12)
    assert sum(o["loss_pv"] for o in outcomes) == pytest.approx(float(cube["loss_pv"].item()),
                                                                rel=1e-12)
    first = min(o["default_years"] for o in outcomes if o["default_years"] is not None)
    assert first == float(cube["first_default_years"].item())


def test_trace_cli(cli, tmp_path):
    res = cli("trace", ROOT / "configs" / "seed.yaml", "--loan", "MN-BTC-LOAN",
              "--at", "crypto_drawdown=0.5", "--csv", "periods.csv")
    assert res.returncode == 0, res.stderr
    assert "ltv default at t=0.5" in res.stdout
    with (tmp_path / "periods.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["k"] for r in rows] == ["1", "2"] and rows[-1]["default"] == "ltv"
    res = cli("trace", ROOT / "configs" / "seed.yaml", "--at", "haircut=1.5")
    assert res.returncode == 2 and "--at haircut=1.5: haircut=1.5 must be in [0, 1]" in res.stderr
    res = cli("trace", ROOT / "configs" / "seed.yaml", "--loan", "NOPE")
    assert res.returncode == 2 and "--loan NOPE: not in the portfolio" in res.stderr
