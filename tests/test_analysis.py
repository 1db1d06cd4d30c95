"""Analysis functions on small synthetic cubes whose answers are known by construction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr
import yaml
from scipy import stats

from gridstress.analysis import reverse as reverse_module
from gridstress.analysis.frontier import first_crossing, frontier, frontier_rows
from gridstress.analysis.headline import leading_slices
from gridstress.analysis.plot import facets, heatmap, save
from gridstress.analysis.reverse import reverse_stress
from gridstress.analysis.risk import (
    cell_edges,
    copula_mass,
    marginal_mass,
    risk,
    scenario_weights,
    tail_measures,
)
from gridstress.analysis.summary import summary
from gridstress.cube import open_cube
from gridstress.errors import InputError
from gridstress.model import MODEL_VERSION
from gridstress.variables import OUTPUTS, TRIGGERS

UNITS = {
    "deflation": ("1/year", "annual market GPU rent deflation"),
    "crypto_drawdown": ("1", "crypto price peak-to-trough drawdown"),
    "haircut": ("1", "GPU collateral liquidation haircut"),
    "discount_rate": ("1/year", "annual discount rate"),
    "market_depth_gpus": ("GPU", "GPUs whose sale halves the price"),
}


def synthetic_cube(
    axes: dict, loss_rate, default_rate=None, reference=None, principal=1e9, attrs=None
) -> xr.Dataset:
    """A cube with the variables of a gridstress cube, from formulas of the axis values.

    ``loss_rate`` and ``default_rate`` are functions of the broadcast axis
    DataArrays; ``reference`` maps an axis to its (central, severe) attrs.
    """
    coords = {}
    for name, values in axes.items():
        units, long_name = UNITS[name]
        a = {"units": units, "long_name": long_name}
        if reference and name in reference:
            a["central"], a["severe"] = reference[name]
        coords[name] = xr.DataArray(np.asarray(values, float), dims=name, attrs=a)
    grid = xr.broadcast(*coords.values())
    named = dict(zip(axes, grid))
    rate = loss_rate(**named).transpose(*axes) * xr.ones_like(grid[0])
    dr = (default_rate(**named) if default_rate else (rate > 0) * 1.0) * xr.ones_like(grid[0])
    split = xr.DataArray(
        [0.25, 0.75],
        dims="segment",
        coords={"segment": np.array(["miner", "neocloud"], dtype=object)},
    )
    data = {
        "loss": rate * principal,
        "loss_pv": rate * principal * 0.9,
        "loss_rate": rate,
        "defaults": (dr > 0) * 1.0,
        "default_rate": dr.transpose(*axes),
        "first_default_years": xr.where(dr > 0, 1.0, np.nan),
        "min_dscr": 2.0 - rate,
        "recovery_rate": xr.where(dr > 0, 0.5, np.nan),
        "breakeven_spread_bps": rate * 1e4 / 3.0,
        "loss_by_segment": (rate * principal * split).transpose(*axes, "segment"),
    }
    # Every default by payment.
    by_trigger = xr.DataArray(
        [1.0, 0.0, 0.0, 0.0], dims="trigger", coords={"trigger": np.array(TRIGGERS, dtype=object)}
    )
    data["default_rate_by_trigger"] = (dr * by_trigger).transpose(*axes, "trigger")
    data["market_price_min"] = 1.0 - 0.5 * rate.clip(0, 1)
    ds = xr.Dataset(
        {
            k: v.transpose(*axes, *[d for d in v.dims if d not in axes]).astype(float)
            for k, v in data.items()
        },
        coords={**coords, "segment": split["segment"], "trigger": by_trigger["trigger"]},
    )
    for name in ds.data_vars:
        ds[name].attrs = {"units": OUTPUTS[name].units, "long_name": OUTPUTS[name].long_name}
    ds.attrs = {
        "model_version": MODEL_VERSION,
        "name": "synthetic",
        "total_principal_usd": principal,
        **(attrs or {}),
    }
    return ds


LINEAR_AXES = {
    "deflation": np.linspace(0.0, 1.0, 11),
    "crypto_drawdown": [0.0, 0.5, 1.0],
    "haircut": [0.0, 0.5],
}


def linear_cube(**kw):
    # loss rate linear in deflation: 0.5 d + 0.1 c + 0.2 h
    return synthetic_cube(
        LINEAR_AXES,
        lambda deflation, crypto_drawdown, haircut: (
            0.5 * deflation + 0.1 * crypto_drawdown + 0.2 * haircut
        ),
        **kw,
    )


# ---------------------------------------------------------------------------
# frontier


def test_first_crossing_hand_cases():
    along = np.array([0.0, 0.5, 1.0])
    # 0.1 at 0.5, 0.3 at 1.0: reaches 0.2 half way, at 0.75
    assert first_crossing(np.array([0.0, 0.1, 0.3]), along, 0.2) == pytest.approx(0.75)
    assert first_crossing(np.array([0.5, 0.6, 0.7]), along, 0.2) == 0.0  # already at start
    assert np.isnan(first_crossing(np.array([0.0, 0.1, 0.2]), along, 0.2))  # never exceeds
    assert first_crossing(np.array([0.0, 0.0, 1.0]), along, 0.0) == 0.5  # last zero point
    assert first_crossing(np.array([np.nan, 0.1, 0.3]), along, 0.0) == 0.5  # NaN: not over
    rows = first_crossing(np.array([[0.0, 0.1, 0.3], [0.0, 0.0, 0.0]]), along, 0.2)
    np.testing.assert_allclose(rows, [0.75, np.nan])


def test_frontier_of_a_linear_surface_is_exact():
    ds = linear_cube()
    line = frontier(ds, "loss_rate", 0.23)
    assert line.dims == ("crypto_drawdown", "haircut")
    # 0.5 d + 0.1 c + 0.2 h = 0.23  =>  d = 0.46 - 0.2 c - 0.4 h
    c, h = np.meshgrid(LINEAR_AXES["crypto_drawdown"], LINEAR_AXES["haircut"], indexing="ij")
    np.testing.assert_allclose(line.values, 0.46 - 0.2 * c - 0.4 * h, rtol=1e-12)
    assert line.attrs["units"] == "1/year"
    rows = frontier_rows(line)
    assert list(rows[0]) == ["crypto_drawdown", "haircut", "deflation"]
    assert len(rows) == 6
    assert rows[1] == {"crypto_drawdown": 0.0, "haircut": 0.5, "deflation": pytest.approx(0.26)}


def test_frontier_never_and_from_the_start():
    ds = linear_cube()
    assert np.isnan(frontier(ds, "loss_rate", 0.9).values).all()  # max is 0.5+0.1+0.1
    np.testing.assert_array_equal(frontier(ds, "loss_rate", -1).values, 0.0)
    # default_rate > 0 from the first cell where loss > 0: d = 0 at c = h = 0, else d[0]
    line = frontier(ds, "default_rate", 0.0)
    assert line.sel(crypto_drawdown=0.0, haircut=0.0) == 0.0
    # The default frontier, loss_rate > 1%: 0.5 d = 0.01 at d = 0.02 where c = h = 0;
    # elsewhere 0.1 c + 0.2 h > 0.01 already at d = 0.
    line = frontier(ds)
    assert line.attrs["var"] == "loss_rate" and line.attrs["threshold"] == 0.01
    assert float(line.sel(crypto_drawdown=0.0, haircut=0.0)) == pytest.approx(0.02)
    assert (line.values.ravel()[1:] == 0.0).all()


def test_frontier_with_an_extra_axis_and_on_disk(tmp_path):
    axes = {**LINEAR_AXES, "discount_rate": [0.06, 0.1]}
    ds = synthetic_cube(
        axes,
        lambda deflation, crypto_drawdown, haircut, discount_rate: 0.5 * deflation + discount_rate,
    )
    expected = 2 * (0.3 - np.array([0.06, 0.1]))  # 0.5 d + r = 0.3
    line = frontier(ds, "loss_rate", 0.3)
    assert line.dims == ("crypto_drawdown", "haircut", "discount_rate")
    np.testing.assert_allclose(line.values[0, 0], expected, rtol=1e-12)
    assert list(frontier_rows(line)[0]) == [
        "crypto_drawdown",
        "haircut",
        "discount_rate",
        "deflation",
    ]
    ds.to_zarr(tmp_path / "c.zarr", consolidated=False)
    ds.to_netcdf(tmp_path / "c.nc", engine="h5netcdf")
    for path in (tmp_path / "c.zarr", tmp_path / "c.nc"):
        with open_cube(path) as cube:
            xr.testing.assert_allclose(frontier(cube, "loss_rate", 0.3), line)


def test_frontier_bad_names():
    ds = linear_cube()
    with pytest.raises(InputError, match="--var nope: not a variable of the cube"):
        frontier(ds, "nope")
    with pytest.raises(InputError, match="has a segment dim"):
        frontier(ds, "loss_by_segment")


# ---------------------------------------------------------------------------
# scenario weights


def test_cell_edges():
    # pricing.md, "no probability is dropped": the outer cells reach -inf and +inf
    # (a scenario beyond the grid counts at the edge value), not half a step out.
    np.testing.assert_array_equal(
        cell_edges(np.array([0.0, 0.2, 0.6])), [-np.inf, 0.1, 0.4, np.inf]
    )
    np.testing.assert_array_equal(cell_edges(np.array([0.3])), [-np.inf, np.inf])


@pytest.mark.parametrize("rho", [-0.6, 0.0, 0.4, 0.9])
def test_copula_mass_against_scipy_bivariate_normal(rho):
    # Normal marginals: the copula is the bivariate normal with those means and sds,
    # so each box is scipy's multivariate normal CDF between its lower and upper corners.
    x, y = np.array([-0.2, 0.1, 0.3, 0.6]), np.array([0.0, 0.4, 0.9])
    mx, sx, my, sy = 0.3, 0.15, 0.5, 0.3
    mass = copula_mass(x, y, stats.norm(mx, sx), stats.norm(my, sy), rho)
    joint = stats.multivariate_normal([mx, my], [[sx**2, rho * sx * sy], [rho * sx * sy, sy**2]])
    ex, ey = cell_edges(x), cell_edges(y)
    for i in range(len(x)):
        for j in range(len(y)):
            box = joint.cdf([ex[i + 1], ey[j + 1]], lower_limit=[ex[i], ey[j]])
            assert mass[i, j] == pytest.approx(box, abs=1e-7)


def test_rho_zero_is_the_product_of_the_marginals():
    x, y = np.linspace(-0.2, 0.6, 9), np.linspace(0.0, 0.9, 10)
    fx, fy = stats.norm(0.3, 0.15), stats.beta(2, 2)
    mass = copula_mass(x, y, fx, fy, 0.0)
    np.testing.assert_allclose(
        mass, np.outer(marginal_mass(x, fx), marginal_mass(y, fy)), atol=1e-14
    )


def test_weights_sum_to_one_and_report_the_edge_weights():
    # pricing.md, "no probability is dropped": the outer cells reach the ends of the
    # marginals' support, so the weights add up to 1 without renormalising, and the
    # weight on each axis's first and last cells is the marginal's tail beyond the
    # midpoint to the neighbour.
    ds = linear_cube()
    w = scenario_weights(ds, 0.5)
    assert float(w.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert w.weights.dims == ("deflation", "crypto_drawdown", "haircut")
    assert (w.weights >= 0).all()
    # deflation 0, 0.1, ..., 1 under norm(0.3, 0.15): the low edge cell holds
    # P(d < 0.05) = Φ((0.05 - 0.3) / 0.15) = Φ(-5/3) = 0.04779, the high one
    # P(d > 0.95) = 1 - Φ(13/3) = 7.3e-6.
    # crypto 0, 0.5, 1 under beta(2, 2), F(c) = 3c² - 2c³: F(0.25) = 0.15625 on
    # each edge (symmetric). haircut 0, 0.5 under beta(3.5, 6.5): low P(h < 0.25),
    # high P(h > 0.25).
    low_h = stats.beta(3.5, 6.5).cdf(0.25)
    expected = {
        "deflation": (stats.norm.cdf(-5 / 3), stats.norm.sf(13 / 3)),
        "crypto_drawdown": (0.15625, 0.15625),
        "haircut": (low_h, 1 - low_h),
    }
    assert list(w.edges) == ["deflation", "crypto_drawdown", "haircut"]
    for axis, (low, high) in expected.items():
        assert w.edges[axis] == pytest.approx((low, high), rel=1e-9)
        # the same as summing the weights over the first and last grid values
        assert float(w.weights.isel({axis: 0}).sum()) == pytest.approx(low, rel=1e-9)
        assert float(w.weights.isel({axis: -1}).sum()) == pytest.approx(high, rel=1e-9)
    assert w.edges["deflation"][0] == pytest.approx(0.0477903, abs=1e-7)
    # a corner box of the copula reaches -inf on both axes: C(0.05, 0.25), the
    # bivariate normal CDF at (Φ⁻¹(F_d(0.05)), Φ⁻¹(F_c(0.25))) with correlation 0.5
    joint = stats.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]])
    corner = joint.cdf(stats.norm.ppf([stats.norm(0.3, 0.15).cdf(0.05), 0.15625]))
    assert float(w.weights.isel(deflation=0, crypto_drawdown=0).sum()) == pytest.approx(
        corner, abs=1e-7
    )
    # the weights of a block are those of the whole grid
    block = w.block({"deflation": slice(3, 6)})
    np.testing.assert_array_equal(block, w.weights.isel(deflation=slice(3, 6)).values)
    with pytest.raises(InputError, match=r"--rho 1: must be in \(-1, 1\)"):
        scenario_weights(ds, 1.0)


def test_edge_weights_of_an_axis_of_one_value_and_of_equal_weights():
    # haircut has one value: its cell stands for the whole line, 1 on both edges;
    # discount_rate has no marginal: 1/3 per value, so 1/3 on each edge.
    axes = {
        "deflation": [0.1, 0.3, 0.5],
        "crypto_drawdown": [0.0, 0.5, 1.0],
        "haircut": [0.35],
        "discount_rate": [0.06, 0.08, 0.1],
    }
    ds = synthetic_cube(axes, lambda deflation, **_: 0.5 * deflation)
    w = scenario_weights(ds, 0.3)
    assert w.edges["haircut"] == (1.0, 1.0)
    assert w.edges["discount_rate"] == pytest.approx((1 / 3, 1 / 3), rel=1e-12)
    # deflation: P(d < 0.2) = Φ(-2/3) = 0.25249 on the low edge, P(d > 0.4) the same
    assert w.edges["deflation"] == pytest.approx((stats.norm.cdf(-2 / 3),) * 2, rel=1e-9)
    assert float(w.weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_axis_without_a_marginal_is_weighted_equally():
    axes = {**LINEAR_AXES, "discount_rate": [0.06, 0.08, 0.1]}
    ds = synthetic_cube(axes, lambda deflation, **_: 0.5 * deflation)
    w = scenario_weights(ds, 0.0).weights
    np.testing.assert_allclose(w.sum(["deflation", "crypto_drawdown", "haircut"]), 1 / 3)


def test_tail_measures_of_a_two_point_loss():
    # P(L = 0) = 0.97, P(L = 0.1) = 0.03
    tm = tail_measures(np.array([0.0, 0.1]), np.array([0.97, 0.03]))
    assert tm.expected_loss == pytest.approx(0.003)
    assert tm.var[0.95] == 0.0  # P(L <= 0) = 0.97 >= 0.95
    assert tm.es[0.95] == pytest.approx(0.06)  # 0.03 * 0.1 / 0.05
    assert tm.var[0.99] == 0.1
    assert tm.es[0.99] == pytest.approx(0.1)


def test_tail_measures_split_an_atom():
    # losses 1, 2, 3 with probabilities 0.9, 0.08, 0.02: VaR95 = 2,
    # ES95 = (0.02 * 3 + 0.03 * 2) / 0.05 = 2.4
    tm = tail_measures(np.array([3.0, 1.0, 2.0]), np.array([0.02, 0.9, 0.08]))
    assert tm.var[0.95] == 2.0 and tm.es[0.95] == pytest.approx(2.4)
    assert tm.var[0.99] == 3.0 and tm.es[0.99] == pytest.approx(3.0)


def test_risk_on_a_cube_with_a_two_point_weighting():
    # Loss depends on the haircut only: 0 at h = 0, 0.1 at h = 1. A uniform haircut
    # marginal on [-0.47, 0.53] puts 0.97 on the cell [-0.5, 0.5] and 0.03 on [0.5, 1.5].
    ds = synthetic_cube(
        {"deflation": [0.0, 0.3], "crypto_drawdown": [0.0, 0.5], "haircut": [0.0, 1.0]},
        lambda haircut, **_: 0.1 * haircut,
    )
    overrides = {"haircut": {"dist": "uniform", "loc": -0.47, "scale": 1.0}}
    rows = risk(ds, [0.0, 0.8], overrides=overrides)
    for row in rows:
        assert row.expected_loss == pytest.approx(0.003)
        assert row.var95 == 0.0 and row.es95 == pytest.approx(0.06)
        assert row.var99 == 0.1 and row.es99 == pytest.approx(0.1)
    # The haircut's edge weights are its two cells: 0.97 and 0.03. Deflation 0, 0.3
    # under norm(0.3, 0.15): P(d < 0.15) = Φ(-1) = 0.158655 and P(d > 0.15) = Φ(1);
    # crypto 0, 0.5 under beta(2, 2): F(0.25) = 3/16 - 2/64 = 0.15625 and 0.84375.
    edges = {
        "deflation_edge_low": pytest.approx(stats.norm.cdf(-1), rel=1e-9),
        "deflation_edge_high": pytest.approx(stats.norm.cdf(1), rel=1e-9),
        "crypto_drawdown_edge_low": pytest.approx(0.15625, rel=1e-9),
        "crypto_drawdown_edge_high": pytest.approx(0.84375, rel=1e-9),
        "haircut_edge_low": pytest.approx(0.97, rel=1e-9),
        "haircut_edge_high": pytest.approx(0.03, rel=1e-9),
    }
    assert rows[0].csv_row() == {
        "rho": 0.0,
        "expected_loss": rows[0].expected_loss,
        "var95": 0.0,
        "es95": rows[0].es95,
        "var99": 0.1,
        "es99": rows[0].es99,
        **edges,
    }


def test_tail_loss_grows_with_correlation():
    # Loss only where deflation and drawdown are both high: more likely as rho rises.
    ds = synthetic_cube(
        {
            "deflation": np.linspace(-0.2, 0.6, 17),
            "crypto_drawdown": np.linspace(0, 0.9, 10),
            "haircut": [0.35],
        },
        lambda deflation, crypto_drawdown, **_: (
            0.3 * ((deflation > 0.45) & (crypto_drawdown > 0.7))
        ),
    )
    rows = risk(ds, [0.0, 0.5, 0.9])
    expected = [r.expected_loss for r in rows]
    assert expected[0] < expected[1] < expected[2]
    # a loss of 0.3 with probability p = EL / 0.3: ES95 = 0.3 min(1, p / 0.05)
    for r in rows:
        assert r.es95 == pytest.approx(min(0.3, r.expected_loss / 0.05))
    assert rows[0].es95 < rows[2].es95


def test_bad_marginals_are_refused():
    ds = linear_cube()
    with pytest.raises(InputError, match="marginals: volatility is not an axis"):
        risk(ds, [0.0], overrides={"volatility": {"dist": "norm"}})
    with pytest.raises(InputError, match="dist=gamma2 is not a continuous distribution"):
        risk(ds, [0.0], overrides={"haircut": {"dist": "gamma2"}})
    with pytest.raises(InputError, match="marginals.haircut"):
        risk(ds, [0.0], overrides={"haircut": {"dist": "beta", "a": -1, "b": 2}})


# ---------------------------------------------------------------------------
# reverse stress

REVERSE_AXES = {
    "deflation": np.linspace(0, 1, 11),
    "crypto_drawdown": np.linspace(0, 1, 11),
    "haircut": [0.0, 0.5, 1.0],
}
REFERENCE = {"deflation": (0.2, 0.6), "crypto_drawdown": (0.2, 0.4), "haircut": (0.5, 1.0)}


def reverse_cube():
    return synthetic_cube(
        REVERSE_AXES,
        lambda deflation, crypto_drawdown, **_: deflation + crypto_drawdown,
        reference=REFERENCE,
    )


def test_reverse_stress_nearest_cell(monkeypatch):
    ds = reverse_cube()
    # breaking: d + c >= 0.75 (0.8 on this 0.1 grid). Distance^2 = ((d-0.2)/0.4)^2
    # + ((c-0.2)/0.2)^2 + ((h-0.5)/0.5)^2: (0.5, 0.3, 0.5) gives 0.5625 + 0.25 = 0.8125,
    # (0.6, 0.2, 0.5) gives 1, (0.4, 0.4, 0.5) gives 1.25.
    rs = reverse_stress(ds, 0.75)
    first = rs.nearest[0]
    assert first.point == pytest.approx({"deflation": 0.5, "crypto_drawdown": 0.3, "haircut": 0.5})
    assert first.distance == pytest.approx(np.sqrt(0.8125))
    assert first.loss_rate == pytest.approx(0.8)
    assert len(rs.nearest) == len(rs.probable) == 11
    # against a brute force over the whole grid
    d, c, h = np.meshgrid(*REVERSE_AXES.values(), indexing="ij")
    dist = np.sqrt(((d - 0.2) / 0.4) ** 2 + ((c - 0.2) / 0.2) ** 2 + ((h - 0.5) / 0.5) ** 2)
    breaks = d + c >= 0.75
    np.testing.assert_allclose([x.distance for x in rs.nearest], np.sort(dist[breaks])[:11])
    assert rs.n_breaking == int(breaks.sum())
    w = scenario_weights(ds, 0.5).weights.values
    assert rs.breaking_probability == pytest.approx(w[breaks].sum())
    np.testing.assert_allclose([x.probability for x in rs.probable], np.sort(w[breaks])[::-1][:11])
    # the weight on the edge cells, as risk reports it: deflation 0..1 under
    # norm(0.3, 0.15) holds P(d < 0.05) = Φ(-5/3) on its first cell
    assert rs.edges == scenario_weights(ds, 0.5).edges
    assert rs.edges["deflation"][0] == pytest.approx(stats.norm.cdf(-5 / 3), rel=1e-9)
    # the base scenario (0.2, 0.2, 0.5) loses 0.2 + 0.2 = 0.4 < 0.75: no note
    assert rs.base_loss_rate == pytest.approx(0.4)
    assert not rs.at_or_below_base and rs.base_line() is None
    rows = rs.rows()
    assert [r["ranking"] for r in rows] == ["nearest"] * 11 + ["probable"] * 11
    assert list(rows[0]) == [
        "ranking",
        "rank",
        "deflation",
        "crypto_drawdown",
        "haircut",
        "loss_rate",
        "distance",
        "probability",
        "deflation_edge_low",
        "deflation_edge_high",
        "crypto_drawdown_edge_low",
        "crypto_drawdown_edge_high",
        "haircut_edge_low",
        "haircut_edge_high",
    ]
    assert rows[0]["deflation"] == pytest.approx(0.5) and rows[11]["rank"] == 1
    # the same answer when the cube is read in blocks of 7 cells (the breaking
    # probability is summed block by block: equal to rounding)
    monkeypatch.setattr(
        reverse_module, "leading_slices", lambda shape: leading_slices(shape, max_cells=7)
    )
    blocked = reverse_stress(ds, 0.75)
    assert blocked.breaking_probability == pytest.approx(rs.breaking_probability, rel=1e-14)
    assert replace(blocked, breaking_probability=rs.breaking_probability) == rs


def test_reverse_stress_says_when_the_target_is_at_or_below_the_base():
    ds = reverse_cube()  # base (0.2, 0.2, 0.5): loss rate 0.2 + 0.2 = 0.4
    at = reverse_stress(ds, 0.4)
    assert at.base_loss_rate == pytest.approx(0.4) and at.at_or_below_base
    assert at.base_line() == (
        "the target loss rate 40.00% is at or below the base scenario's 40.00%: "
        "the base scenario itself breaks the book"
    )
    assert reverse_stress(ds, 0.1).at_or_below_base
    assert not reverse_stress(ds, 0.41).at_or_below_base


def test_reverse_stress_scales_without_central_and_severe():
    # no attrs: central = midpoint 0.5, severe = max 1, scale 0.5 on every axis
    ds = synthetic_cube(REVERSE_AXES, lambda deflation, **_: deflation)
    rs = reverse_stress(ds, 0.85, count=3)
    assert rs.nearest[0].point == pytest.approx(
        {"deflation": 0.9, "crypto_drawdown": 0.5, "haircut": 0.5}
    )
    assert rs.nearest[0].distance == pytest.approx(0.8)
    assert reverse_stress(ds, 1.0, count=3).n_breaking == 33  # d = 1: 11 x 3 cells
    with pytest.raises(InputError, match="--loss-rate 1.5: must be in"):
        reverse_stress(ds, 1.5)


def test_reverse_stress_nothing_breaks():
    rs = reverse_stress(linear_cube(), 0.9)  # the largest loss rate is 0.7
    assert rs.n_breaking == 0 and rs.nearest == [] and rs.breaking_probability == 0.0


# ---------------------------------------------------------------------------
# summary


def test_summary_of_a_synthetic_cube():
    config = yaml.safe_dump(
        {
            "portfolio": [
                {"loan_id": "A", "principal": 3e8, "spread": 0.02},
                {"loan_id": "B", "principal": 1e8, "spread": 0.06},
                {"loan_id": "C", "principal": 5e8, "spread": None},
            ]
        }
    )
    ds = reverse_cube()
    ds.attrs["config"] = config
    s = summary(ds)
    assert s.points["base"] == pytest.approx(
        {"deflation": 0.2, "crypto_drawdown": 0.2, "haircut": 0.5}
    )
    assert s.points["severe"] == pytest.approx(
        {"deflation": 0.6, "crypto_drawdown": 0.4, "haircut": 1.0}
    )
    assert s.scenarios["base"]["loss_rate"] == pytest.approx(0.4)
    assert s.scenarios["severe"]["loss_rate"] == pytest.approx(1.0)
    assert s.loss_by_segment == pytest.approx({"miner": 0.1e9, "neocloud": 0.3e9})
    assert s.breakeven_spread_bps == pytest.approx(4000 / 3)
    # no weighted_spread_bps attr: from the config, 1e4 (0.02 * 3 + 0.06 * 1) / 4 = 300
    assert s.actual_spread_bps == pytest.approx(300.0)
    ds.attrs["weighted_spread_bps"] = 450.0
    assert summary(ds).spread_cushion_bps == pytest.approx(450.0 - 4000 / 3)
    assert s.headline.worst_loss_rate == pytest.approx(2.0)


# ---------------------------------------------------------------------------
# plots


def test_heatmap_labels_title_and_frontier(tmp_path):
    ds = linear_cube()
    fig = heatmap(
        ds,
        "loss_rate",
        "deflation",
        "crypto_drawdown",
        {"haircut": 0.4},
        frontier_var="loss_rate",
        threshold=0.23,
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "annual market GPU rent deflation [1/year]"
    assert ax.get_ylabel() == "crypto price peak-to-trough drawdown [1]"
    assert "haircut=0.5 (grid point nearest 0.4)" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "loss over total principal [1]"  # the colour bar
    line = ax.get_lines()[-1]
    # frontier at h = 0.5: d = 0.46 - 0.2 c - 0.2
    np.testing.assert_allclose(line.get_xdata(), 0.26 - 0.2 * np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(line.get_ydata(), [0.0, 0.5, 1.0])
    assert save(fig, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in save(fig, tmp_path / "h.svg").read_bytes()[:500]
    assert save(fig, tmp_path / "h.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(InputError, match="must end in .png, .svg or .pdf"):
        save(fig, tmp_path / "h.jpg")
    # swapped axes: the frontier is drawn the other way round
    fig = heatmap(
        ds, "loss_rate", "crypto_drawdown", "deflation", frontier_var="loss_rate", threshold=0.23
    )
    assert "haircut=0 (central)" in fig.axes[0].get_title()
    np.testing.assert_allclose(
        fig.axes[0].get_lines()[-1].get_ydata(), 0.46 - 0.2 * np.array([0.0, 0.5, 1.0])
    )


def test_facets_one_panel_per_haircut():
    ds = linear_cube()
    fig = facets(ds, "loss_rate", facet="haircut")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["haircut=0", "haircut=0.5"]
    many = synthetic_cube(
        {**LINEAR_AXES, "haircut": np.linspace(0, 0.9, 25)}, lambda deflation, **_: deflation
    )
    fig = facets(many, "loss_rate", facet="haircut", max_panels=10)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 10 and titles[0] == "haircut=0" and titles[-1] == "haircut=0.9"
    assert "(10 of 25 values)" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ds: heatmap(ds, "nope"), "--var nope: not a variable"),
        (lambda ds: heatmap(ds, x="volatility"), "--x volatility: not an axis of the cube"),
        (lambda ds: heatmap(ds, y="deflation"), "--x and --y are both deflation"),
        (lambda ds: heatmap(ds, at={"haircut": 0.9}), r"--at haircut=0.9: outside .* \[0, 0.5\]"),
        (lambda ds: heatmap(ds, at={"discount_rate": 0.1}), "--at discount_rate: not an axis"),
        (lambda ds: heatmap(ds, at={"deflation": 0.1}), "--at deflation: is plotted"),
        (lambda ds: facets(ds, facet="deflation"), "--facet deflation: is plotted"),
    ],
)
def test_plot_bad_input(call, message):
    with pytest.raises(InputError, match=message):
        call(linear_cube())


def test_report_of_a_cube_with_an_extra_axis():
    from gridstress.analysis.report import render_report

    axes = {**LINEAR_AXES, "discount_rate": [0.06, 0.1]}
    ds = synthetic_cube(
        axes,
        lambda deflation, discount_rate, **_: 0.5 * deflation + discount_rate,
        attrs={"config": "name: synthetic\n"},
    )
    page = render_report(ds, frontier_var="loss_rate", threshold=0.3, loss_rates=[0.3])
    # loss surface, facets, triggers, market price, frontier
    assert page.count('src="data:image/png;base64,') == 5
    for section in ("Default triggers", "Secondary market", "Loss rate of 30.00%"):
        assert section in page
    assert "Other axes at their central values (discount_rate=0.06)" in page
    # frontier table at discount_rate 0.06: 0.5 d + 0.06 = 0.3 at d = 0.48
    assert "<td>0.48</td>" in page
    assert "<pre>name: synthetic\n</pre>" in page


# ---------------------------------------------------------------------------
# compare, a loan's frontier, reverse-stress targets


def test_compare_two_cubes_on_the_same_grid():
    from gridstress.analysis.compare import compare, largest_change

    a = linear_cube()
    # B loses 0.1 more where deflation > 0.55, and 0.02 less at zero haircut
    b = synthetic_cube(
        LINEAR_AXES,
        lambda deflation, crypto_drawdown, haircut: (
            0.5 * deflation
            + 0.1 * crypto_drawdown
            + 0.2 * haircut
            + 0.1 * (deflation > 0.55)
            - 0.02 * (haircut == 0.0)
        ),
    )
    c = compare(a, b)
    d = c.difference
    assert d.dims == ("deflation", "crypto_drawdown", "haircut")
    np.testing.assert_allclose(d.isel(deflation=6).sel(haircut=0.5).values, 0.1)
    np.testing.assert_allclose(d.isel(deflation=5).sel(haircut=0.0).values, -0.02, atol=1e-15)
    value, point = largest_change(d, 1)
    assert value == pytest.approx(0.1) and point["deflation"] == pytest.approx(0.6)
    assert point["haircut"] == 0.5
    value, point = largest_change(d, -1)
    assert value == pytest.approx(-0.02) and point["haircut"] == 0.0
    rows = {r["figure"]: r for r in c.rows()}
    worst = rows["worst loss rate"]  # 0.5 + 0.1 + 0.1 = 0.7, then + 0.1
    assert worst["a"] == pytest.approx(0.7) and worst["b_minus_a"] == pytest.approx(0.1)
    # the base cell (midpoints d = 0.5, c = 0.5, h = 0.25 -> 0): 0.3 in A, 0.28 in B
    base = rows["loss_rate at base"]
    assert base["a"] == pytest.approx(0.3) and base["b_minus_a"] == pytest.approx(-0.02)
    other = synthetic_cube(
        {**LINEAR_AXES, "deflation": np.linspace(0, 1, 5)}, lambda deflation, **_: deflation
    )
    with pytest.raises(
        InputError,
        match="B: not on the grid of A: deflation has 5 values from 0 to 1, against 11 from 0 to 1",
    ):
        compare(a, other)
    extra = synthetic_cube(
        {**LINEAR_AXES, "discount_rate": [0.1]}, lambda deflation, **_: deflation
    )
    with pytest.raises(
        InputError, match="its axes are deflation, crypto_drawdown, haircut, discount_rate"
    ):
        compare(a, extra)


def test_frontier_of_one_loan():
    from gridstress.analysis.frontier import frontier_table, loan_frontier

    ds = linear_cube()
    with pytest.raises(InputError, match="--loan X: the cube has no per-loan outputs"):
        loan_frontier(ds, "X")
    # loan X defaults where d >= 0.3 + 0.4 c (at t = 2), loan Y never
    d, c = np.meshgrid(LINEAR_AXES["deflation"], LINEAR_AXES["crypto_drawdown"], indexing="ij")
    years = np.stack(
        [np.where(d >= 0.3 + 0.4 * c - 1e-9, 2.0, np.nan), np.full(d.shape, np.nan)], axis=-1
    )
    ds = ds.assign_coords(loan=["X", "Y"])
    ds["loan_default_years"] = (("deflation", "crypto_drawdown", "loan"), years)
    line = loan_frontier(ds, "X")
    assert line.dims == ("crypto_drawdown",)
    np.testing.assert_allclose(line.values, [0.3, 0.5, 0.7])  # first grid point, no interpolation
    assert line.attrs["long_name"] == "smallest deflation at which X defaults"
    assert np.isnan(loan_frontier(ds, "Y").values).all()
    assert frontier_table(line, ds).dims == ("crypto_drawdown",)
    with pytest.raises(InputError, match="--loan Z: not a loan of the cube; loans are: X, Y"):
        loan_frontier(ds, "Z")


def test_reverse_stress_targets_lie_above_the_base_loss():
    from gridstress.analysis.reverse import targets_above

    assert targets_above(0.2394, 0.4062) == [0.289, 0.339]  # base + 5 and + 10 points
    assert targets_above(0.2394, 0.31) == [0.289]  # + 10 points is off the grid
    assert targets_above(0.30, 0.32) == [pytest.approx(0.31)]  # half way to the worst cell
    assert targets_above(0.30, 0.30) == []  # no cell loses more


def test_trigger_and_difference_figures(tmp_path):
    from gridstress.analysis.plot import difference_figure, trigger_figure

    ds = linear_cube()
    fig = trigger_figure(ds)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "annual market GPU rent deflation [1/year]"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(TRIGGERS)
    assert "crypto_drawdown=0.5 (central)" in ax.get_title()
    fig = difference_figure(ds["loss_rate"] - ds["loss_rate"] * 0.5, ds)
    assert fig.axes[0].get_title().startswith("B - A at haircut=0")
    assert save(fig, tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_reverse_stress_measures_an_axis_with_inf_in_grid_steps():
    # market_depth_gpus 1e5 (severe), 4e5 (central), inf: positions 0, 1, 2, scale 1 step.
    # Loss = d, plus 0.2 in the shallowest market. Reference: d central 0.2, severe 0.6.
    axes = {
        "deflation": np.linspace(0, 1, 11),
        "crypto_drawdown": [0.0],
        "haircut": [0.0],
        "market_depth_gpus": [1e5, 4e5, np.inf],
    }
    ds = synthetic_cube(
        axes,
        lambda deflation, market_depth_gpus, **_: deflation + 0.2 * (market_depth_gpus == 1e5),
        reference={"deflation": (0.2, 0.6), "market_depth_gpus": (4e5, 1e5)},
    )
    rs = reverse_stress(ds, 0.8)
    # (0.6, 1e5): ((0.6-0.2)/0.4)^2 + 1^2 = 2; (0.8, 4e5): 1.5^2 = 2.25;
    # (0.7, 1e5): 1.25^2 + 1 = 2.5625; (0.9, 4e5): 1.75^2 = 3.0625; then 1.5^2 + 1 = 3.25
    # at (0.8, 1e5) and (0.8, inf): a deep market is one step from the central one.
    assert [c.distance**2 for c in rs.nearest[:6]] == pytest.approx(
        [2.0, 2.25, 2.5625, 3.0625, 3.25, 3.25]
    )
    assert {c.point["market_depth_gpus"] for c in rs.nearest[4:6]} == {1e5, np.inf}
    assert np.isfinite([c.distance for c in rs.nearest]).all()


def test_the_headline_of_the_blocks_is_the_headline_of_the_cube_ties_included(tmp_path):
    """The seed's worst loss rate is flat along the haircut at its worst corner
    (the collateral is worth nothing there, whatever the haircut): 19 cells tie.
    Computed from blocks of 1,000 cells as a run finishes them, the headline names the first
    of them in C order and counts all 19, as the headline read from the cube does."""
    from gridstress.analysis.headline import headline
    from gridstress.config import load_config
    from gridstress.engine import execute, plan_run

    cfg = load_config("configs/seed.yaml")
    with plan_run(cfg, tmp_path / "c.zarr", chunk_cells=1000, scheduler="synchronous") as plan:
        written = execute(plan)
    with open_cube(written.path) as ds:
        read = headline(ds)
        rate = ds["loss_rate"].values
    assert written.headline == read
    assert read.worst_cells == int((rate == rate.max()).sum()) == 19
    assert read.worst_cell == {"deflation": 0.6, "crypto_drawdown": 0.9, "haircut": 0.0}
    assert read.lines()[0] == (
        "worst loss rate: 40.62% at deflation=0.6, crypto_drawdown=0.9, haircut=0 "
        "(the first of 19 cells at this rate)"
    )


@pytest.mark.parametrize("path", ["configs/seed.yaml", "configs/seed-contagion.yaml"])
def test_a_cube_embeds_its_config_whole(path):
    """The config a cube embeds (the resolved YAML) reads back, without the config
    reader, as the config that ran: every field but where it came from."""
    from dataclasses import replace

    import yaml

    from gridstress.config import load_config
    from gridstress.inputs import RunConfig

    cfg = load_config(path)
    back = RunConfig.from_dict(yaml.safe_load(cfg.to_yaml()), source=cfg.source)
    assert back == replace(cfg, warnings=())
    assert (back.config_sha256, back.portfolio_sha256) == (cfg.config_sha256, cfg.portfolio_sha256)


@pytest.mark.parametrize("name", ["replay-h100-2023", "seed-generations"])
def test_the_summary_loans_add_up_to_the_cube_on_a_v3_config(name):
    """The per-loan table of summary is traced again by the reference: with a
    rent path, a generation shock and the market appraisal it must trace the
    run's own cell, so its losses add up to the cube's loss there."""
    from gridstress import load_config, run_grid
    from gridstress.analysis.summary import summary

    cube = run_grid(load_config(f"configs/{name}.yaml"), backend="numpy")
    s = summary(cube)
    for label in ("base", "severe"):
        traced = sum(r.loss for r in s.loans[label])
        assert traced == pytest.approx(s.scenarios[label]["loss"], rel=1e-9, abs=1e-3), label
