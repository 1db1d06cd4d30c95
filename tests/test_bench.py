"""``gridstress bench`` and its FLOP count, on the CPU (the GPU engines run in
benchmarks/device_check.sh)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import HAVE_GPU, ROOT, cli_runner, make_config, random_loans

from gridstress.bench import flops_per_loan_period
from gridstress.prepared import prepare

gridstress = cli_runner(ROOT)


@pytest.mark.parametrize("crypto", [1e6, 0.0])
def test_flop_count_of_one_plain_loan_by_hand(crypto):
    loan = random_loans(np.random.default_rng(0), 1)[0]
    loan.update(
        term_years=2.0,
        gpu_age_years=0.0,
        economic_life_years=5.0,
        mining_revenue=0.0,
        crypto_collateral=crypto,
        min_dscr=0.0,
        max_ltv=None,
    )
    cfg = make_config(
        [loan],
        grid={
            "deflation": {"values": [0.3]},
            "crypto_drawdown": {"values": [0.0, 0.5, 0.9]},
            "haircut": {"values": [0.35]},
        },
    )
    run = prepare(cfg, "numpy")
    # n = 8 periods, n_life = 20, K = 8, J = 20; a block holds the 3 crypto values.
    nb = 3
    if crypto:  # price, cash, payment, DSCR test and division, in every cell
        per_period = 13 * 8
    else:  # without mining or crypto: once per block, then 1 per cell
        per_period = 13 * 8 / nb + 1
    tables = (25 * 20 + 20 + 20 * (8 + 20)) / nb  # build, appraisal pow, shared pows
    per_loan = 5 + 28 + 9  # maturity, default set-up, one recovery
    assert flops_per_loan_period(run) == pytest.approx((per_period + tables + per_loan) / 8)


def test_bench_cli_times_the_numpy_engine(tmp_path):
    out = tmp_path / "bench.json"
    res = gridstress(
        "bench",
        "--cells",
        "400",
        "--loans",
        "5",
        "--haircuts",
        "2",
        "--engines",
        "numpy",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["command"].startswith("gridstress bench")
    assert data["loans"] == 5 and data["cells"] >= 400
    assert data["grid"]["haircut"] == 2
    numpy = data["engines"]["numpy"]
    assert numpy["seconds"] > 0 and numpy["cells"] == data["cells"]
    assert numpy["loan_periods_per_s"] == pytest.approx(numpy["loan_periods"] / numpy["seconds"])
    assert "numpy" in res.stdout


def test_bench_refuses_an_unknown_engine():
    res = gridstress("bench", "--engines", "numpy,warp")
    assert res.returncode == 2
    assert "--engines numpy,warp" in res.stderr


def test_bench_configs_of_either_model():
    from gridstress.bench import bench_config

    v1 = bench_config(20, cells=400, model="v1")
    v2 = bench_config(20, cells=400, model="v2")
    # v1: a deep market, no cash kept above the reserve, no cash-flow
    # refinancing, LTV on market value; v2 keeps the defaults.
    assert v1.scenario["market_depth_gpus"] == float("inf")
    assert all(ln.cash_cap == ln.cash_reserve and ln.refi_term_years == 0 for ln in v1.loans)
    assert {ln.ltv_basis for ln in v1.loans} == {"market"}
    assert v2.scenario["market_depth_gpus"] == 400_000
    assert any(ln.refi_term_years > 0 for ln in v2.loans)
    assert [ln.principal for ln in v1.loans] == [ln.principal for ln in v2.loans]


def test_bench_cli_times_model_v2(tmp_path):
    out = tmp_path / "bench.json"
    res = gridstress(
        "bench",
        "--cells",
        "300",
        "--loans",
        "4",
        "--model",
        "v2",
        "--backend",
        "numpy",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["model"] == "v2" and list(data["engines"]) == ["numpy"]
    res = gridstress("bench", "--model", "v3")
    assert res.returncode == 2 and "--model v3: must be one of v1, v2" in res.stderr
    if not HAVE_GPU:  # the fused kernel needs CuPy and a GPU, and says so
        res = gridstress("bench", "--model", "v2", "--engines", "fused")
        assert res.returncode == 2
        assert "--engines fused: needs CuPy and a GPU, which cannot run here" in res.stderr


def test_the_end_to_end_benchmarks_split_a_run(tmp_path):
    # benchmarks/startup.py on the CPU and benchmarks/gpu_end_to_end.py (on a
    # GPU) time a run's steps with startup.split.
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import startup
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    steps = startup.split(ROOT / "configs" / "seed.yaml", tmp_path, "numpy")
    assert steps["cells"] == 81 * 37 * 19 and steps["blocks"] == 1
    assert steps["model_s"] > 0 and steps["writes_s"] > 0
    assert "kernel_s" not in steps  # no fused kernel on the CPU
    helped = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_end_to_end.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "against the kernels' time" in helped.stdout
