"""Properties of model v1 (model.md, last section) on random loans and grid points,
and agreement of the engine with the literal reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config, random_loans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridstress import reference, run_grid
from gridstress.engine import prepare

# Example counts come from the hypothesis profile (tests/conftest.py).
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def _grid(rng, n_d=5, n_c=4, n_h=3):
    d = np.sort(rng.choice(np.linspace(-0.3, 0.9, 121), n_d, replace=False))
    c = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_c, replace=False))
    h = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_h, replace=False))
    return {"deflation": {"values": d.tolist()}, "crypto_drawdown": {"values": c.tolist()},
            "haircut": {"values": h.tolist()}}


def _scenario(rng):
    return {"drawdown_periods": int(rng.integers(1, 9)),
            "crypto_haircut": float(rng.uniform(0, 0.5)),
            "liquidation_cost": float(rng.uniform(0, 0.2)),
            "discount_rate": float(rng.uniform(0, 0.2))}


def assert_cubes_equal(a, b, rtol=0.0):
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if rtol == 0.0:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, equal_nan=True, err_msg=name)


@SETTINGS
@given(seed=seeds, f=st.sampled_from([1, 4, 12]))
def test_engine_matches_reference(seed, f):
    rng = np.random.default_rng(seed)
    cfg = make_config(random_loans(rng, int(rng.integers(1, 6)), f), grid=_grid(rng),
                      periods_per_year=f, scenario=_scenario(rng))
    ds = run_grid(cfg, backend="numpy")
    axes = {a.name: a.array for a in cfg.axes}
    ref = reference.evaluate_grid(cfg.loans, f, axes, cfg.scenario)
    for name, expected in ref.items():
        got = ds[name].values
        # absolute slack of 1e-9 of a dollar-sized scale for sums that cancel to ~0
        scale = 1e-9 * max(1.0, np.nanmax(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=scale, equal_nan=True,
                                   err_msg=name)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)


def _single_loan_paths(seed):
    rng = np.random.default_rng(seed)
    loan = random_loans(rng, 1)[0]
    grid = {"deflation": {"start": -0.3, "stop": 0.9, "num": 13},
            "crypto_drawdown": {"start": 0.0, "stop": 1.0, "num": 11},
            "haircut": {"start": 0.0, "stop": 1.0, "num": 6}}
    cfg = make_config([loan], grid=grid, scenario=_scenario(rng))
    return run_grid(cfg, backend="numpy")


@SETTINGS
@given(seed=seeds)
def test_default_never_later_as_stress_rises(seed):
    ds = _single_loan_paths(seed)
    tau = ds["first_default_years"].fillna(1e9).values  # no default: later than any
    assert np.all(np.diff(tau, axis=0) <= 0), "default moved later as deflation rose"
    assert np.all(np.diff(tau, axis=1) <= 0), "default moved later as crypto drawdown rose"
    # the haircut changes no default
    assert np.all(tau == tau[:, :, :1])
    assert np.all(ds["defaults"].values == ds["defaults"].values[:, :, :1])


@SETTINGS
@given(seed=seeds)
def test_loss_bounds_and_monotone_in_haircut(seed):
    rng = np.random.default_rng(seed)
    cfg = make_config(random_loans(rng, 4), grid={
        "deflation": {"start": -0.2, "stop": 0.8, "num": 6},
        "crypto_drawdown": {"start": 0.0, "stop": 1.0, "num": 5},
        "haircut": {"start": 0.0, "stop": 1.0, "num": 7}}, scenario=_scenario(rng))
    ds = run_grid(cfg, backend="numpy")
    loss = ds["loss"].values
    assert np.all(np.diff(loss, axis=2) >= -1e-9 * np.abs(loss).max(initial=1.0))
    assert np.all(ds["loss_rate"].values >= 0) and np.all(ds["loss_rate"].values <= 1 + 1e-12)
    rr = ds["recovery_rate"].values
    assert np.all((rr[~np.isnan(rr)] >= 0) & (rr[~np.isnan(rr)] <= 1 + 1e-12))
    assert np.all(ds["loss_pv"].values <= loss * (1 + 1e-12))
    np.testing.assert_allclose(ds["loss_by_segment"].sum("segment").values, loss,
                               rtol=1e-12, atol=1e-6)
    defaults = ds["defaults"].values
    assert np.all(np.isnan(rr[defaults == 0]))  # no default: no recovery rate
    assert np.all(defaults[~np.isnan(rr)] > 0)


@SETTINGS
@given(seed=seeds)
def test_recovery_within_exposure_per_loan(seed):
    # one loan a config: recovery_rate in [0, 1] means 0 <= recovery <= EAD
    rng = np.random.default_rng(seed)
    for loan in random_loans(rng, 3):
        ds = run_grid(make_config([loan], grid=_grid(rng), scenario=_scenario(rng)),
                      backend="numpy")
        rr = ds["recovery_rate"].values
        assert np.all(rr[~np.isnan(rr)] >= 0) and np.all(rr[~np.isnan(rr)] <= 1 + 1e-12)
        loss, principal = ds["loss"].values, loan["principal"]
        assert np.all((loss >= 0) & (loss <= principal * (1 + 1e-12)))


@SETTINGS
@given(seed=seeds, rate=st.floats(0.001, 0.3), term=st.floats(0.25, 8),
       amortization=st.sampled_from(["annuity", "linear", "bullet"]))
def test_no_income_no_reserve_defaults_in_period_one(seed, rate, term, amortization):
    rng = np.random.default_rng(seed)
    loan = {"loan_id": "X", "principal": float(rng.uniform(1e3, 1e9)), "rate": rate,
            "term_years": term, "amortization": amortization, "n_gpus": 0,
            "mining_revenue": 0, "cash_reserve": 0,
            "mining_cost": float(rng.uniform(0, 1e6))}
    ds = run_grid(make_config([loan], grid=_grid(rng)), backend="numpy")
    assert np.all(ds["first_default_years"].values == 0.25)


@SETTINGS
@given(seed=seeds)
def test_chunking_and_loan_order_do_not_change_the_cube(seed):
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, 6)
    grid = {"deflation": {"start": -0.2, "stop": 0.6, "num": 7},
            "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 5},
            "haircut": {"values": [0.0, 0.35, 0.55, 0.9]}}
    cfg = make_config(loans, grid=grid)
    whole = run_grid(cfg, backend="numpy", chunk_cells=10**6)
    for chunk in (1, 3, 4, 17, 20, 64):
        assert_cubes_equal(run_grid(cfg, backend="numpy", chunk_cells=chunk), whole)
    shuffled = make_config([loans[i] for i in rng.permutation(len(loans))], grid=grid)
    assert_cubes_equal(run_grid(shuffled, backend="numpy", chunk_cells=13), whole)


def test_extra_axis_matches_separate_runs():
    # discount_rate as a fourth axis equals runs with it fixed
    rng = np.random.default_rng(7)
    loans = random_loans(rng, 5)
    grid = {"deflation": {"values": [0.0, 0.3, 0.6]}, "crypto_drawdown": {"values": [0.0, 0.5]},
            "haircut": {"values": [0.2, 0.6]}}
    cube = run_grid(make_config(loans, grid={**grid, "discount_rate": {"values": [0.0, 0.12]}}),
                    backend="numpy")
    assert cube["loss"].dims == ("deflation", "crypto_drawdown", "haircut", "discount_rate")
    for y in (0.0, 0.12):
        fixed = run_grid(make_config(loans, grid=grid, scenario={"discount_rate": y}),
                         backend="numpy")
        for name in fixed.data_vars:
            np.testing.assert_allclose(cube[name].sel(discount_rate=y).values,
                                       fixed[name].values, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("extra", ["drawdown_periods", "crypto_haircut", "liquidation_cost"])
def test_every_scenario_parameter_can_be_an_axis(extra):
    rng = np.random.default_rng(3)
    values = {"drawdown_periods": [1, 4, 8], "crypto_haircut": [0.0, 0.5],
              "liquidation_cost": [0.0, 0.2]}[extra]
    grid = {**_grid(rng, 3, 3, 2), extra: {"values": values}}
    cfg = make_config(random_loans(rng, 4), grid=grid)
    ds = run_grid(cfg, backend="numpy")
    ref = reference.evaluate_grid(cfg.loans, 4, {a.name: a.array for a in cfg.axes},
                                  cfg.scenario)
    np.testing.assert_allclose(ds["loss"].values, ref["loss"], rtol=1e-9, atol=1e-3)


def test_block_plan_bounds_memory_for_a_dense_grid():
    # 2 million cells of the seed portfolio are cut into blocks within the budget
    from gridstress.engine import BLOCK_BUDGET_BYTES, CACHE_LOAN_CELLS
    from gridstress.model import block_bytes

    run = prepare("configs/seed-dense.yaml", "numpy")
    assert run.config.n_cells >= 2_000_000
    n_h = run.config.axis("haircut").values
    chunks = dict(zip([a.name for a in run.config.axes], run.plan.chunks))
    assert chunks["haircut"] == len(n_h)  # every path serves every haircut
    path_cells = chunks["deflation"] * chunks["crypto_drawdown"]
    loans, segments = run.portfolio.n_loans, len(run.portfolio.segments)
    assert loans * path_cells <= CACHE_LOAN_CELLS
    assert block_bytes(loans, segments, path_cells, path_cells * len(n_h)) <= BLOCK_BUDGET_BYTES
    assert len(run.plan) > 1
