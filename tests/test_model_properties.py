"""Properties of model v2 (model.md, "Properties that must hold") on random loans
and grid points, and agreement of the engine with the literal reference.

Portfolios vary every v2 field (gridstress.synthetic.random_loans); grids
include the market parameters as axes; the market step is active unless a
test says otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config, random_loans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridstress import reference, run_grid
from gridstress.params import LIQUIDATION_PARAMS
from gridstress.portfolio import canonical_order
from gridstress.prepared import prepare

# Example counts come from the hypothesis profile (tests/conftest.py).
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)
INF = float("inf")


def _grid(rng, n_d=4, n_c=3, n_h=2):
    d = np.sort(rng.choice(np.linspace(-0.3, 0.9, 121), n_d, replace=False))
    c = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_c, replace=False))
    h = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_h, replace=False))
    return {
        "deflation": {"values": d.tolist()},
        "crypto_drawdown": {"values": c.tolist()},
        "haircut": {"values": h.tolist()},
    }


def _market(rng):
    """Market settings deep and shallow enough that fire sales move prices."""
    return {
        "market_depth_gpus": float(rng.choice([INF, rng.uniform(5e2, 5e4)])),
        "market_half_life_years": float(rng.choice([INF, rng.uniform(0.1, 2.0)])),
        "book_share": float(rng.uniform(0.05, 1.0)),
    }


def _scenario(rng):
    return {
        "drawdown_periods": int(rng.integers(1, 9)),
        "crypto_haircut": float(rng.uniform(0, 0.5)),
        "liquidation_cost": float(rng.uniform(0, 0.2)),
        "discount_rate": float(rng.uniform(0, 0.2)),
        **_market(rng),
    }


def _years(ds):
    """Per-loan default times with "never" later than any time (1e9 years)."""
    return ds["loan_default_years"].fillna(1e9)


def assert_cubes_equal(a, b):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@SETTINGS
@given(seed=seeds, f=st.sampled_from([1, 4, 12]))
def test_engine_matches_reference(seed, f):
    rng = np.random.default_rng(seed)
    grid = _grid(rng)
    scenario = _scenario(rng)
    # A market parameter as an axis, in about half of the examples.
    axis = rng.choice(["market_depth_gpus", "market_half_life_years", "book_share", ""])
    if axis:
        values = {
            "market_depth_gpus": [float(rng.uniform(5e2, 5e3)), 4e4, INF],
            "market_half_life_years": [0.25, 1.0, INF],
            "book_share": [0.1, 0.5, 1.0],
        }[str(axis)]
        grid[str(axis)] = {"values": values}
        scenario.pop(str(axis))
    cfg = make_config(
        random_loans(rng, int(rng.integers(1, 7)), f),
        grid=grid,
        periods_per_year=f,
        scenario=scenario,
    )
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    ref = reference.evaluate_grid(cfg.loans, f, {a.name: a.array for a in cfg.axes}, cfg.scenario)
    # Loans in canonical order (longest maturity first, then loan_id), as the reference's.
    assert list(ds["loan"].values) == [ln.loan_id for ln in canonical_order(cfg.loans, f)]
    for name, expected in ref.items():
        got = ds[name].values
        if name == "loan_default_years":  # the same on every value of the haircut axis
            assert np.array_equal(
                expected, expected[:, :, :1].repeat(expected.shape[2], 2), equal_nan=True
            )
            expected = expected[:, :, 0]
        # absolute slack of 1e-9 of a dollar-sized scale for sums that cancel to ~0
        scale = 1e-9 * max(1.0, np.nanmax(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(
            got, expected, rtol=1e-9, atol=scale, equal_nan=True, err_msg=name
        )
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)


@SETTINGS
@given(seed=seeds)
def test_liquidation_axes_change_no_default_and_no_price(seed):
    rng = np.random.default_rng(seed)
    grid = {
        **_grid(rng, 3, 3, 3),
        "crypto_haircut": {"values": [0.0, 0.4]},
        "liquidation_cost": {"values": [0.0, 0.1, 0.3]},
    }
    scenario = {k: v for k, v in _scenario(rng).items() if k not in LIQUIDATION_PARAMS}
    cfg = make_config(random_loans(rng, 5), grid=grid, scenario=scenario)
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    assert not set(ds["loan_default_years"].dims) & set(LIQUIDATION_PARAMS)
    for name in (
        "defaults",
        "default_rate",
        "first_default_years",
        "min_dscr",
        "market_price_min",
        "default_rate_by_trigger",
    ):
        values = ds[name]
        for axis in LIQUIDATION_PARAMS:
            first = values.isel({axis: 0})
            np.testing.assert_array_equal(
                values.values, first.broadcast_like(values).values, err_msg=f"{name} along {axis}"
            )


@SETTINGS
@given(seed=seeds, lasting=st.booleans())
def test_default_never_later_as_stress_rises(seed, lasting):
    # Each loan's default time, in a portfolio of several, with the market step:
    # never later as d or c rises, as W falls or as theta falls, when the price
    # impact does not fade (T infinite) or the market is deep (W infinite).
    rng = np.random.default_rng(seed)
    grid = {
        "deflation": {"start": -0.3, "stop": 0.9, "num": 7},
        "crypto_drawdown": {"start": 0.0, "stop": 1.0, "num": 5},
        "haircut": {"values": [0.3]},
        "market_depth_gpus": {"values": [float(rng.uniform(5e2, 5e3)), 3e4, INF]},
        "book_share": {"values": [0.1, 0.4, 1.0]},
    }
    scenario = {
        **{k: v for k, v in _scenario(rng).items() if k not in ("market_depth_gpus", "book_share")},
        "market_half_life_years": INF if lasting else float(rng.uniform(0.1, 2)),
    }
    cfg = make_config(random_loans(rng, int(rng.integers(1, 6))), grid=grid, scenario=scenario)
    years = _years(run_grid(cfg, backend="numpy", per_loan=True))
    dims = years.dims
    for axis, sign in (
        ("deflation", -1),
        ("crypto_drawdown", -1),
        ("market_depth_gpus", 1),
        ("book_share", 1),
    ):
        steps = np.diff(years.values, axis=dims.index(axis))
        if axis in ("deflation", "crypto_drawdown") or lasting:
            assert np.all(sign * steps >= 0), f"a default moved later as {axis} moved"
    # With W infinite nothing is sold: the half-life and theta change nothing.
    deep = years.sel(market_depth_gpus=INF)
    np.testing.assert_array_equal(
        deep.values, deep.isel(book_share=0, drop=True).broadcast_like(deep).values
    )


@SETTINGS
@given(seed=seeds)
def test_book_basis_never_defaults_earlier_than_market_basis(seed):
    # One loan with an LTV covenant whose book value stays above its market value:
    # a GPU cost of $10M depreciated over 10 years beyond maturity.
    rng = np.random.default_rng(seed)
    loan = random_loans(rng, 1)[0]
    loan.update(
        max_ltv=float(rng.uniform(0.3, 1.5)),
        gpu_cost=1e7,
        book_life_years=loan["gpu_age_years"] + loan["term_years"] + 10,
    )
    grid = {**_grid(rng, 5, 3, 1), "market_depth_gpus": {"values": [1e3, INF]}}
    scenario = {k: v for k, v in _scenario(rng).items() if k != "market_depth_gpus"}
    years = {}
    for basis in ("market", "book"):
        cfg = make_config([{**loan, "ltv_basis": basis}], grid=grid, scenario=scenario)
        years[basis] = _years(run_grid(cfg, backend="numpy", per_loan=True)).values
    assert np.all(years["book"] >= years["market"])


@SETTINGS
@given(seed=seeds)
def test_sums_over_triggers_loans_and_segments(seed):
    rng = np.random.default_rng(seed)
    cfg = make_config(
        random_loans(rng, int(rng.integers(1, 9))),
        grid=_grid(rng, 4, 3, 3),
        scenario=_scenario(rng),
    )
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    np.testing.assert_allclose(
        ds["default_rate_by_trigger"].sum("trigger").values,
        ds["default_rate"].values,
        rtol=1e-12,
        atol=1e-15,
    )
    scale = 1e-12 * cfg.n_cells * max(ln.principal for ln in cfg.loans)
    np.testing.assert_allclose(
        ds["loan_loss"].sum("loan").values, ds["loss"].values, rtol=1e-12, atol=scale
    )
    np.testing.assert_allclose(
        ds["loss_by_segment"].sum("segment").values, ds["loss"].values, rtol=1e-12, atol=scale
    )
    # A loan loses only in the cells where it defaults.
    defaulted = ds["loan_default_years"].notnull().broadcast_like(ds["loan_loss"])
    assert (ds["loan_loss"].where(~defaulted, 0.0) == 0).all()
    assert ((ds["market_price_min"] > 0) & (ds["market_price_min"] <= 1)).all()


@SETTINGS
@given(seed=seeds)
def test_loss_bounds_and_monotone_in_haircut(seed):
    rng = np.random.default_rng(seed)
    cfg = make_config(
        random_loans(rng, 4),
        grid={
            "deflation": {"start": -0.2, "stop": 0.8, "num": 6},
            "crypto_drawdown": {"start": 0.0, "stop": 1.0, "num": 5},
            "haircut": {"start": 0.0, "stop": 1.0, "num": 7},
        },
        scenario=_scenario(rng),
    )
    ds = run_grid(cfg, backend="numpy")
    loss = ds["loss"].values
    assert np.all(np.diff(loss, axis=2) >= -1e-9 * np.abs(loss).max(initial=1.0))
    assert np.all(ds["loss_rate"].values >= 0) and np.all(ds["loss_rate"].values <= 1 + 1e-12)
    rr = ds["recovery_rate"].values
    assert np.all((rr[~np.isnan(rr)] >= 0) & (rr[~np.isnan(rr)] <= 1 + 1e-12))
    assert np.all(ds["loss_pv"].values <= loss * (1 + 1e-12))
    defaults = ds["defaults"].values
    assert np.all(np.isnan(rr[defaults == 0]))  # no default: no recovery rate
    assert np.all(defaults[~np.isnan(rr)] > 0)


@SETTINGS
@given(seed=seeds)
def test_recovery_within_exposure_per_loan(seed):
    # one loan a config: recovery_rate in [0, 1] means 0 <= recovery <= EAD
    rng = np.random.default_rng(seed)
    for loan in random_loans(rng, 3):
        ds = run_grid(
            make_config([loan], grid=_grid(rng), scenario=_scenario(rng)), backend="numpy"
        )
        rr = ds["recovery_rate"].values
        assert np.all(rr[~np.isnan(rr)] >= 0) and np.all(rr[~np.isnan(rr)] <= 1 + 1e-12)
        loss, principal = ds["loss"].values, loan["principal"]
        assert np.all((loss >= 0) & (loss <= principal * (1 + 1e-12)))


@SETTINGS
@given(
    seed=seeds,
    rate=st.floats(0.001, 0.3),
    term=st.floats(0.25, 8),
    amortization=st.sampled_from(["annuity", "linear", "bullet"]),
)
def test_no_income_no_reserve_defaults_in_period_one(seed, rate, term, amortization):
    rng = np.random.default_rng(seed)
    loan = {
        "loan_id": "X",
        "principal": float(rng.uniform(1e3, 1e9)),
        "rate": rate,
        "term_years": term,
        "amortization": amortization,
        "n_gpus": 0,
        "mining_revenue": 0,
        "cash_reserve": 0,
        "mining_cost": float(rng.uniform(0, 1e6)),
        "refi_term_years": float(rng.uniform(0, 6)),
    }
    ds = run_grid(make_config([loan], grid=_grid(rng), scenario=_scenario(rng)), backend="numpy")
    assert np.all(ds["first_default_years"].values == 0.25)
    assert np.all(ds["default_rate_by_trigger"].sel(trigger="payment").values == 1.0)


@SETTINGS
@given(seed=seeds)
def test_chunking_and_loan_order_do_not_change_the_cube(seed):
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, 6)
    grid = {
        "deflation": {"start": -0.2, "stop": 0.6, "num": 7},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 5},
        "haircut": {"values": [0.0, 0.35, 0.55, 0.9]},
    }
    scenario = {"market_depth_gpus": float(rng.uniform(5e2, 5e4)), "book_share": 0.3}
    cfg = make_config(loans, grid=grid, scenario=scenario)
    whole = run_grid(cfg, backend="numpy", chunk_cells=10**6, per_loan=True)
    for chunk in (1, 3, 4, 17, 20, 64):
        assert_cubes_equal(run_grid(cfg, backend="numpy", chunk_cells=chunk, per_loan=True), whole)
    shuffled = make_config(
        [loans[i] for i in rng.permutation(len(loans))], grid=grid, scenario=scenario
    )
    assert_cubes_equal(run_grid(shuffled, backend="numpy", chunk_cells=13, per_loan=True), whole)


@pytest.mark.parametrize(
    "extra, values",
    [
        ("discount_rate", [0.0, 0.12]),
        ("market_depth_gpus", [2e3, INF]),
        ("market_half_life_years", [0.25, INF]),
        ("book_share", [0.2, 1.0]),
    ],
)
def test_extra_axis_matches_separate_runs(extra, values):
    rng = np.random.default_rng(7)
    loans = random_loans(rng, 5)
    grid = {
        "deflation": {"values": [0.0, 0.3, 0.6]},
        "crypto_drawdown": {"values": [0.0, 0.5]},
        "haircut": {"values": [0.2, 0.6]},
    }
    market = {"market_depth_gpus": 5e3}
    cube = run_grid(
        make_config(
            loans,
            grid={**grid, extra: {"values": values}},
            scenario={k: v for k, v in market.items() if k != extra},
        ),
        backend="numpy",
        per_loan=True,
    )
    assert cube["loss"].dims == ("deflation", "crypto_drawdown", "haircut", extra)
    for value in values:
        fixed = run_grid(
            make_config(loans, grid=grid, scenario={**market, extra: value}),
            backend="numpy",
            per_loan=True,
        )
        for name in fixed.data_vars:
            np.testing.assert_allclose(
                cube[name].sel({extra: value}).values,
                fixed[name].values,
                rtol=1e-12,
                equal_nan=True,
                err_msg=name,
            )


@pytest.mark.parametrize(
    "extra",
    [
        "drawdown_periods",
        "crypto_haircut",
        "liquidation_cost",
        "market_depth_gpus",
        "market_half_life_years",
        "book_share",
    ],
)
def test_every_scenario_parameter_can_be_an_axis(extra):
    rng = np.random.default_rng(3)
    values = {
        "drawdown_periods": [1, 4, 8],
        "crypto_haircut": [0.0, 0.5],
        "liquidation_cost": [0.0, 0.2],
        "market_depth_gpus": [1e3, 1e5, INF],
        "market_half_life_years": [0.1, 1.0, INF],
        "book_share": [0.05, 1.0],
    }[extra]
    grid = {**_grid(rng, 3, 3, 2), extra: {"values": values}}
    cfg = make_config(
        random_loans(rng, 4),
        grid=grid,
        scenario={} if extra == "market_depth_gpus" else {"market_depth_gpus": 2e3},
    )
    ds = run_grid(cfg, backend="numpy")
    ref = reference.evaluate_grid(cfg.loans, 4, {a.name: a.array for a in cfg.axes}, cfg.scenario)
    np.testing.assert_allclose(ds["loss"].values, ref["loss"], rtol=1e-9, atol=1e-3)


def test_block_plan_bounds_memory_for_a_dense_grid():
    # 2 million cells of the seed portfolio are cut into blocks within the budget
    from dataclasses import replace

    from gridstress.model import block_bytes
    from gridstress.prepared import BLOCK_BUDGET_BYTES, CACHE_LOAN_CELLS

    run = prepare("configs/seed-dense.yaml", "numpy")
    assert run.config.n_cells >= 2_000_000
    for per_loan in (False, True):
        if per_loan:
            run = prepare(replace(run.config, per_loan=True), "numpy")
        n_h = run.config.axis("haircut").values
        chunks = dict(zip([a.name for a in run.config.axes], run.plan.chunks))
        assert chunks["haircut"] == len(n_h)  # every path serves every haircut
        path_cells = chunks["deflation"] * chunks["crypto_drawdown"]
        loans, segments = run.portfolio.n_loans, len(run.portfolio.segments)
        assert loans * path_cells <= CACHE_LOAN_CELLS
        assert (
            block_bytes(loans, segments, path_cells, path_cells * len(n_h), per_loan)
            <= BLOCK_BUDGET_BYTES
        )
        assert len(run.plan) > 1
