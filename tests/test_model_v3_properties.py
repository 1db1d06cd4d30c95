"""Properties of model v3 (model.md, "Properties that must hold", the v3 ones)
on random books, paths and generation shocks, and agreement of the engine
with the literal reference on them.

Portfolios vary every v2 field and ``generation_exposure``
(``random_loans(..., exposure=True)``); paths are random piecewise-linear
curves; the market step is active unless a test says otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_parity, make_config, random_loans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridstress import reference, run_grid
from gridstress.params import LIQUIDATION_PARAMS
from gridstress.paths import path_factor, read_years
from gridstress.portfolio import canonical_order, portfolio_arrays
from gridstress.rents import appraisal_table, time_shape
from gridstress.schedule import periods

# Example counts come from the hypothesis profile (tests/conftest.py).
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)
INF = float("inf")


def _path(rng, rises=True):
    """A random path: 1 to 5 points over 6 years, each index 0.2 to 1.6 (or
    at most 1, when ``rises`` is False) times the first, now and then 0."""
    n = int(rng.integers(1, 6))
    years = np.sort(rng.choice(np.arange(1, 25) / 4 + rng.uniform(-0.1, 0.1), n - 1, False))
    first = float(rng.uniform(0.5, 5.0))
    points = [[0.0, first]]
    for t in years:
        scale = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.2, 1.6 if rises else 1.0))
        points.append([float(t), first * scale])
    return points


def _grid(rng, n_d=3, n_c=2, n_h=2):
    d = np.sort(rng.choice(np.linspace(-0.3, 0.9, 121), n_d, replace=False))
    c = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_c, replace=False))
    h = np.sort(rng.choice(np.linspace(0.0, 1.0, 101), n_h, replace=False))
    return {
        "deflation": {"values": d.tolist()},
        "crypto_drawdown": {"values": c.tolist()},
        "haircut": {"values": h.tolist()},
    }


def _scenario(rng):
    """Fixed v2 scenario values, the market shallow enough to move prices."""
    return {
        "drawdown_periods": int(rng.integers(1, 9)),
        "crypto_haircut": float(rng.uniform(0, 0.5)),
        "liquidation_cost": float(rng.uniform(0, 0.2)),
        "discount_rate": float(rng.uniform(0, 0.2)),
        "market_depth_gpus": float(rng.choice([INF, rng.uniform(5e2, 5e4)])),
        "market_half_life_years": float(rng.choice([INF, rng.uniform(0.1, 2.0)])),
        "book_share": float(rng.uniform(0.05, 1.0)),
    }


def _shape_inputs(rng):
    """Random v3 inputs: paths (either, both or none), the launch's timing and,
    in half of the examples, the market appraisal."""
    out = {"generation_years": float(rng.choice([0.0, rng.uniform(0, 4)]))}
    for name in ("rent_path", "crypto_path"):
        if rng.random() < 0.7:
            out[name] = _path(rng)
    if rng.random() < 0.5:
        out["appraisal_deflation"] = float(rng.uniform(-0.3, 0.8))
    return out


def _years(cfg):
    """Per-loan default times of a run with "never" later than any time (1e9 years)."""
    return run_grid(cfg, backend="numpy", per_loan=True)["loan_default_years"].fillna(1e9)


def assert_cubes_equal(a, b):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def assert_cubes_close(a, b, rtol=1e-9):
    """Every variable equal to ``rtol`` (of the value, or of a dollar scale near
    0), NaN in the same cells; the coordinates may differ."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        scale = rtol * max(1.0, np.nanmax(np.abs(y), initial=0.0))
        np.testing.assert_allclose(x, y, rtol=rtol, atol=scale, equal_nan=True, err_msg=name)


def _reference(cfg):
    """The reference's cube arrays, per-loan default times without the liquidation axes."""
    axes = {a.name: a.array for a in cfg.axes}
    ref = reference.evaluate_grid(
        cfg.loans, cfg.periods_per_year, axes, cfg.scenario, paths=cfg.paths
    )
    years = ref["loan_default_years"]
    for i, axis in reversed(list(enumerate(cfg.axes))):
        if axis.name in LIQUIDATION_PARAMS:
            assert np.array_equal(years, np.take(years, [0], axis=i).repeat(len(axis), i), True)
            years = np.take(years, 0, axis=i)
    ref["loan_default_years"] = years
    return ref


@SETTINGS
@given(seed=seeds, f=st.sampled_from([1, 4, 12]))
def test_engine_matches_reference_with_paths_and_shocks(seed, f):
    rng = np.random.default_rng(seed)
    grid = _grid(rng)
    grid["generation_shock"] = {"values": [0.0, float(rng.uniform(0.05, 0.95))]}
    scenario = {**_scenario(rng), **_shape_inputs(rng)}
    extra = rng.choice(["generation_years", "appraisal_deflation", ""])
    if extra == "generation_years":
        grid[extra] = {"values": [0.0, float(rng.uniform(0.1, 1.5)), float(rng.uniform(2, 5))]}
    elif extra == "appraisal_deflation":
        grid[extra] = {"values": [float(rng.uniform(-0.5, 0.2)), float(rng.uniform(0.3, 0.9))]}
    for name in grid:
        scenario.pop(name, None)
    cfg = make_config(
        random_loans(rng, int(rng.integers(1, 6)), f, exposure=True),
        grid=grid,
        periods_per_year=f,
        scenario=scenario,
    )
    ds = run_grid(cfg, backend="numpy", per_loan=True)
    pf = portfolio_arrays(cfg.loans, f)
    got = {name: ds[name].values for name in ds.data_vars}
    assert_parity(got, _reference(cfg), pf.total_principal, pf.principal_wal)


@SETTINGS
@given(seed=seeds)
def test_v3_inputs_that_move_nothing_give_the_v2_run(seed):
    # Paths of constant index (P = Q = 1 at every period) and a launch after
    # the last period anything reads: the v3 code paths run and must give the
    # cube of the run without them, bit for bit, on every shock value.
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, int(rng.integers(1, 7)), exposure=True)
    grid, scenario = _grid(rng), _scenario(rng)
    plain = run_grid(
        make_config(loans, grid=grid, scenario=scenario), backend="numpy", per_loan=True
    )
    level = float(rng.uniform(0.1, 10))
    flat = [[0.0, level], [float(rng.uniform(0.1, 5)), level]]
    neutral = {**scenario, "rent_path": flat, "crypto_path": [[0.0, 7.0]], "generation_years": 100}
    shocks = {"generation_shock": {"values": [0.0, 0.5, 0.9]}}
    cfg = make_config(loans, grid={**grid, **shocks}, scenario=neutral)
    shaped = run_grid(cfg, backend="numpy", per_loan=True)
    for j in (0.0, 0.5, 0.9):
        assert_cubes_equal(shaped.sel(generation_shock=j, drop=True), plain)


@SETTINGS
@given(seed=seeds)
def test_appraisal_deflation_at_the_deflation_is_the_foresight_appraisal(seed):
    # No fixed cost: every pi_j >= 0, so the option to retire is worth nothing
    # and extrapolating m_k at d gives the scenario's own rents.
    rng = np.random.default_rng(seed)
    loans = [
        loan | {"fixed_opex_per_gpu_year": 0.0} for loan in random_loans(rng, 5, exposure=True)
    ]
    d = float(rng.uniform(-0.3, 0.9))
    grid = {**_grid(rng, 1, 3, 2), "deflation": {"values": [d]}}
    scenario = _scenario(rng)
    cfg = make_config(loans, grid=grid, scenario=scenario)
    foresight = run_grid(cfg, backend="numpy", per_loan=True)
    cfg = make_config(loans, grid=grid, scenario={**scenario, "appraisal_deflation": d})
    assert_cubes_close(run_grid(cfg, backend="numpy", per_loan=True), foresight)


@SETTINGS
@given(seed=seeds, f=st.sampled_from([1, 4, 12]))
def test_market_appraisal_is_never_below_the_foresight_formula(seed, f):
    # G_k of the xp model against max(0, sum_j pi~_{k,j} (1+y)^{-(j-k)/f}), the
    # foresight formula on the same expected rents m~_{k,j} = m_k (1-d_a)^{(j-k)/f},
    # with m_k = rent P(t_k) (1-d)^{t_k} (1 - j e 1{k > n_g}) written out here.
    rng = np.random.default_rng(seed)
    loans = make_config(random_loans(rng, 4, f, exposure=True), periods_per_year=f).loans
    pf = portfolio_arrays(loans, f)
    d, d_a, y = (float(rng.uniform(-0.3, 0.9)) for _ in range(3))
    j, t_g = float(rng.uniform(0, 0.9)), float(rng.uniform(0, 3))
    paths = {"rent_path": tuple(map(tuple, _path(rng)))}
    scenario = {"generation_shock": j, "generation_years": t_g}
    ts = time_shape(pf, scenario, paths, int(pf.n_life.max()) + pf.horizon, 0, np)
    table = appraisal_table(pf, d, y, np, 0, ts, d_a)
    dt, hours = 1 / f, 8760 / f
    for i, loan in enumerate(canonical_order(loans, f)):
        assert pf.loan_id[i] == loan.loan_id
        n_life = pf.n_life[i]
        for k in range(pf.horizon + 1):
            shock = 1 - j * loan.generation_exposure * (k > periods(t_g, f))
            m_k = loan.rent * path_factor(paths["rent_path"], k * dt) * (1 - d) ** (k * dt) * shock
            power = loan.power_kw_per_gpu * loan.power_price
            total = 0.0
            for step in range(k + 1, n_life + 1):
                expected = m_k * (1 - d_a) ** ((step - k) * dt)
                income = hours * loan.utilization * max(0.0, expected - power)
                income -= loan.fixed_opex_per_gpu_year * dt
                total += income * (1 + y) ** (-(step - k) * dt)
            bound = max(0.0, total)
            assert table[k][i] >= bound - 1e-9 * max(1.0, bound), (loan.loan_id, k)


@SETTINGS
@given(seed=seeds, f=st.sampled_from([1, 4]))
def test_a_rent_path_of_yearly_falls_is_a_deflation(seed, f):
    # Points at every period end t_k read (k = 0..N) with index (1-a)^{t_k}:
    # m_k = rent ((1-d)(1-a))^{t_k}, the run with deflation 1 - (1-d)(1-a).
    # Shock and market appraisal (when drawn) read the same m_k in both runs.
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, int(rng.integers(1, 6)), f, exposure=True)
    a = float(rng.uniform(-0.3, 0.6))
    grid = _grid(rng)
    d = np.asarray(grid["deflation"]["values"])
    scenario = {**_scenario(rng), **_shape_inputs(rng)}
    scenario.pop("rent_path", None)
    if rng.random() < 0.5:
        scenario["generation_shock"] = float(rng.uniform(0, 0.9))
    plain = make_config(loans, grid=grid, periods_per_year=f, scenario=scenario)
    last = max(round(read_years(loan, f, "rent_path") * f) for loan in plain.loans)
    points = [[k / f, (1 - a) ** (k / f)] for k in range(last + 1)]
    shaped = make_config(
        loans, grid=grid, periods_per_year=f, scenario={**scenario, "rent_path": points}
    )
    combined = {**grid, "deflation": {"values": (1 - (1 - d) * (1 - a)).tolist()}}
    deflated = make_config(loans, grid=combined, periods_per_year=f, scenario=scenario)
    assert_cubes_close(
        run_grid(shaped, backend="numpy", per_loan=True),
        run_grid(deflated, backend="numpy", per_loan=True),
    )


@SETTINGS
@given(seed=seeds)
def test_a_constant_crypto_path_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, int(rng.integers(1, 6)), exposure=True)
    grid = _grid(rng)
    scenario = {**_scenario(rng), **_shape_inputs(rng)}
    scenario.pop("crypto_path", None)
    level = float(rng.uniform(0.1, 1e5))
    steady = [[0.0, level]] + [[float(t), level] for t in np.sort(rng.uniform(0.1, 9, 3))]
    a = run_grid(make_config(loans, grid=grid, scenario=scenario), backend="numpy", per_loan=True)
    cfg = make_config(loans, grid=grid, scenario={**scenario, "crypto_path": steady})
    assert_cubes_equal(run_grid(cfg, backend="numpy", per_loan=True), a)


@SETTINGS
@given(seed=seeds)
def test_a_launch_at_time_zero_is_a_lower_rent(seed):
    # generation_shock j at generation_years 0 with exposure 1: S_k = 1 - j for
    # every k >= 1, the rent scaled by (1 - j) with contract_rent kept (G_0, the
    # only value that would differ, is never read).
    rng = np.random.default_rng(seed)
    loans = [loan | {"generation_exposure": 1.0} for loan in random_loans(rng, 5)]
    j = float(rng.uniform(0.01, 0.95))
    grid = _grid(rng)
    scenario = {**_scenario(rng), **_shape_inputs(rng), "generation_years": 0.0}
    launch = make_config(loans, grid=grid, scenario={**scenario, "generation_shock": j})
    lower = make_config(
        [loan | {"rent": loan["rent"] * (1 - j)} for loan in loans], grid=grid, scenario=scenario
    )
    assert [ln.contract_rent for ln in lower.loans] == [ln.contract_rent for ln in launch.loans]
    assert_cubes_close(
        run_grid(launch, backend="numpy", per_loan=True),
        run_grid(lower, backend="numpy", per_loan=True),
    )


@SETTINGS
@given(seed=seeds, lasting=st.booleans())
def test_default_never_later_as_the_shock_or_exposure_rises_or_the_rent_path_falls(seed, lasting):
    # With T infinite (the impact never fades) or W infinite (no impact).
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, int(rng.integers(1, 6)), exposure=True)
    shocks = np.sort(rng.uniform(0, 0.95, 3))
    grid = {**_grid(rng, 3, 2, 1), "generation_shock": {"values": [0.0, *shocks.tolist()]}}
    scenario = {**_scenario(rng), **_shape_inputs(rng)}
    scenario["rent_path"] = _path(rng)
    if lasting:
        scenario["market_half_life_years"] = INF
    else:
        scenario["market_depth_gpus"] = INF
    base = _years(make_config(loans, grid=grid, scenario=scenario))
    steps = np.diff(base.values, axis=base.dims.index("generation_shock"))
    assert np.all(steps <= 0), "a default moved later as the shock rose"
    more = []
    for loan in loans:
        e = loan["generation_exposure"]
        more.append(loan | {"generation_exposure": e + (1 - e) * float(rng.random())})
    exposed = _years(make_config(more, grid=grid, scenario=scenario))
    assert np.all(exposed.values <= base.values), "a default moved later as the exposure rose"
    path = [list(p) for p in scenario["rent_path"]]
    if len(path) > 1:
        i = int(rng.integers(1, len(path)))
        path[i][1] *= float(rng.uniform(0, 1))
    else:  # one point: the path is flat; lower it after a year
        path.append([1.0, path[0][1] * float(rng.uniform(0, 1))])
    lowered = _years(make_config(loans, grid=grid, scenario={**scenario, "rent_path": path}))
    assert np.all(lowered.values <= base.values), "a default moved later as the rent path fell"


@SETTINGS
@given(seed=seeds)
def test_chunking_and_loan_order_do_not_change_a_shaped_cube(seed):
    rng = np.random.default_rng(seed)
    loans = random_loans(rng, 6, exposure=True)
    grid = {
        "deflation": {"start": -0.2, "stop": 0.6, "num": 4},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 3},
        "haircut": {"values": [0.0, 0.35, 0.9]},
        "generation_shock": {"values": [0.0, 0.6]},
        "generation_years": {"values": [0.5, 1.5]},
    }
    scenario = {
        "market_depth_gpus": float(rng.uniform(5e2, 5e4)),
        "book_share": 0.3,
        "rent_path": _path(rng),
        "crypto_path": _path(rng),
        "appraisal_deflation": float(rng.choice([0.1, 0.4])) if rng.random() < 0.5 else None,
    }
    cfg = make_config(loans, grid=grid, scenario=scenario)
    whole = run_grid(cfg, backend="numpy", chunk_cells=10**6, per_loan=True)
    for chunk in (7, 50):
        assert_cubes_equal(run_grid(cfg, backend="numpy", chunk_cells=chunk, per_loan=True), whole)
    shuffled = make_config(
        [loans[i] for i in rng.permutation(len(loans))], grid=grid, scenario=scenario
    )
    assert_cubes_equal(run_grid(shuffled, backend="numpy", chunk_cells=13, per_loan=True), whole)


@pytest.mark.parametrize("extra", ["generation_shock", "generation_years", "appraisal_deflation"])
def test_an_axis_of_a_v3_parameter_matches_separate_runs(extra):
    rng = np.random.default_rng(11)
    loans = random_loans(rng, 5, exposure=True)
    values = {
        "generation_shock": [0.0, 0.25, 0.6],
        "generation_years": [0.0, 0.75, 2.0],
        "appraisal_deflation": [-0.2, 0.3],
    }[extra]
    grid = _grid(rng)
    scenario = {
        "market_depth_gpus": 5e3,
        "generation_shock": 0.4,
        "rent_path": [[0, 3.0], [1, 1.5], [3, 2.0]],
    }
    scenario.pop(extra, None)
    cube = run_grid(
        make_config(loans, grid={**grid, extra: {"values": values}}, scenario=scenario),
        backend="numpy",
        per_loan=True,
    )
    for value in values:
        fixed = make_config(loans, grid=grid, scenario={**scenario, extra: value})
        alone = run_grid(fixed, backend="numpy", per_loan=True)
        assert_cubes_close(cube.sel({extra: value}, drop=True), alone, rtol=1e-12)
