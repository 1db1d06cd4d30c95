"""``price``: expected loss, Euler ES contributions and required spreads (pricing.md).

A hand-worked two-loan book whose every figure is computed in the comments
(the same example as docs/analysis.md), properties on random books and
grids, the exact block-by-block quantiles against numpy's, and the bounded
reading of the cube.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridstress
from gridstress.analysis import price as price_module
from gridstress.analysis.price import COLUMNS, PORTFOLIO, price
from gridstress.analysis.risk import (
    TailQuantiles,
    key_value,
    order_keys,
    risk,
    scenario_weights,
    tail_measures,
)
from gridstress.config import config_from_dict
from gridstress.errors import InputError
from gridstress.model import MODEL_VERSION
from gridstress.params import LIQUIDATION_PARAMS

M = 1e6


def pricing_cube(
    axes: dict,
    loans: list[dict],
    loan_loss: np.ndarray,
    default_years: np.ndarray,
    scenario: dict | None = None,
) -> xr.Dataset:
    """A cube with per-loan outputs and the run config it embeds.

    ``loan_loss`` has the axes' shape plus a last loan dim (in the order of
    ``loans``); ``default_years`` the same without the liquidation axes (NaN:
    repaid). The book's ``loss`` is the sum over loans.
    """
    dims = list(axes)
    path = [d for d in dims if d not in LIQUIDATION_PARAMS]
    coords = {d: np.asarray(v, dtype=float) for d, v in axes.items()}
    ids = [ln["loan_id"] for ln in loans]
    loss = loan_loss.sum(axis=-1)
    total = float(sum(ln["principal"] for ln in loans))
    scenario = {"discount_rate": 0.08, **(scenario or {})}
    config = {
        "name": "priced",
        "periods_per_year": 4,
        "scenario": {k: v for k, v in scenario.items() if k not in axes},
        "grid": {d: {"values": [float(x) for x in v]} for d, v in coords.items()},
        "portfolio": loans,
    }
    ds = xr.Dataset(
        {
            "loss": (dims, loss),
            "loss_rate": (dims, loss / total),
            "loan_loss": ([*dims, "loan"], loan_loss),
            "loan_default_years": ([*path, "loan"], default_years),
        },
        coords={**coords, "loan": np.array(ids, dtype=object)},
    )
    ds.attrs = {
        "model_version": MODEL_VERSION,
        "name": "priced",
        # the resolved config, every default applied, as a run embeds it
        "config": config_from_dict(config, where="priced.yaml").to_yaml(),
        "total_principal_usd": total,
        **{f"scenario_{k}": v for k, v in config["scenario"].items()},
    }
    return ds


# ---------------------------------------------------------------------------
# The hand-worked book (docs/analysis.md, "What each loan should pay")
#
# Grid: deflation 0, 0.3, 0.6; crypto drawdown 0.5 (one value: weight 1, so rho
# does not matter); haircut 0.2, 0.8. Marginals: deflation uniform on
# [-0.35, 0.65], so the cells (-inf, 0.15], (0.15, 0.45], (0.45, inf) weigh
# 0.5, 0.3, 0.2; haircut uniform on [-0.25, 0.75]: (-inf, 0.5] 0.75, (0.5, inf) 0.25.
#
#   cell (d, h)   weight   loss A  loss B  book L     default years
#   (0,   0.2)    0.375      0       0       0        A repaid, B repaid
#   (0,   0.8)    0.125      0       0       0
#   (0.3, 0.2)    0.225      0      10      10        A repaid, B at 2
#   (0.3, 0.8)    0.075      0      60      60
#   (0.6, 0.2)    0.150     30      30      60        A at 2, B at 1
#   (0.6, 0.8)    0.050     80      70     150
#   ($M)
#
# A: neocloud, $200M, 4-year bullet (WAL 4), spread 3%; B: miner, $100M,
# 2.5-year bullet (WAL 2.5), spread 6%. Discount rate 25%: 1.25^-1 = 0.8,
# 1.25^-2 = 0.64. Confidence 0.9, capital cost 10%.

HAND_MARGINALS = {
    "deflation": {"dist": "uniform", "loc": -0.35, "scale": 1.0},
    "haircut": {"dist": "uniform", "loc": -0.25, "scale": 1.0},
}
HAND_LOANS = [
    {
        "loan_id": "A",
        "segment": "neocloud",
        "principal": 200 * M,
        "rate": 0.05,
        "spread": 0.03,
        "term_years": 4.0,
        "amortization": "bullet",
    },
    {
        "loan_id": "B",
        "segment": "miner",
        "principal": 100 * M,
        "rate": 0.09,
        "spread": 0.06,
        "term_years": 2.5,
        "amortization": "bullet",
    },
]


def hand_cube() -> xr.Dataset:
    nan = math.nan
    loss = np.zeros((3, 1, 2, 2))  # deflation, crypto, haircut, loan
    loss[1, 0, :, 1] = [10 * M, 60 * M]
    loss[2, 0, :, 0] = [30 * M, 80 * M]
    loss[2, 0, :, 1] = [30 * M, 70 * M]
    years = np.array([[[nan, nan]], [[nan, 2.0]], [[2.0, 1.0]]])  # deflation, crypto, loan
    return pricing_cube(
        {"deflation": [0.0, 0.3, 0.6], "crypto_drawdown": [0.5], "haircut": [0.2, 0.8]},
        HAND_LOANS,
        loss,
        years,
        scenario={"discount_rate": 0.25},
    )


def test_hand_worked_book():
    ds = hand_cube()
    w = scenario_weights(ds, 0.5, HAND_MARGINALS).weights.values.reshape(-1)
    np.testing.assert_allclose(w, [0.375, 0.125, 0.225, 0.075, 0.15, 0.05], rtol=1e-12)
    result = price(ds, [0.5, 0.0], confidence=0.9, capital_cost=0.10, marginals=HAND_MARGINALS)
    table = result.at(0.5)
    assert list(table.columns) == list(COLUMNS)
    # B is the underpriced loan, then A, then the book
    assert list(table["loan_id"]) == ["B", "A", PORTFOLIO]
    b, a, book = (table.iloc[i] for i in range(3))

    # pd: A defaults at d = 0.6 (0.2); B at d = 0.3 and 0.6 (0.5)
    # el: A 0.15·30 + 0.05·80 = 8.5; B 0.225·10 + 0.075·60 + 0.15·30 + 0.05·70 = 14.75
    # el_pv: A 8.5·0.64 = 5.44; B (2.25 + 4.5)·0.64 + (4.5 + 3.5)·0.8 = 4.32 + 6.4 = 10.72
    # lgd = el / (pd·B0): A 8.5 / 40 = 0.2125; B 14.75 / 50 = 0.295
    # el_bps = 1e4·el_pv / (B0·WAL): A 1e4·5.44/800 = 68; B 1e4·10.72/250 = 428.8
    #
    # The book's loss: 0 (0.5), 10 (0.225), 60 (0.075 + 0.15), 150 (0.05), so
    # F(10) = 0.725 < 0.9 <= F(60) = 0.95: VaR = 60, an atom of two cells, and
    # ES = (0.05·150 + (0.95 - 0.9)·60) / 0.1 = (7.5 + 3) / 0.1 = 105.
    # At the atom, A's mean loss is (0.075·0 + 0.15·30) / 0.225 = 20 and B's
    # (0.075·60 + 0.15·30) / 0.225 = 40 (they add up to 60), so
    # es_contribution A = (0.05·80 + 0.05·20) / 0.1 = 50, B = (0.05·70 + 0.05·40) / 0.1 = 55.
    # ec = es_contribution - el: A 41.5, B 40.25
    # capital_bps = 1e4·0.1·ec / B0: A 207.5, B 402.5
    # required = el_bps + capital_bps: A 275.5, B 831.3; cushion A 300 - 275.5 = 24.5,
    # B 600 - 831.3 = -231.3
    # standalone ES: A's losses 0 (0.8), 30 (0.15), 80 (0.05): VaR 30,
    # ES (0.05·80 + 0.05·30) / 0.1 = 55; B's 0 (0.5), 10 (0.225), 30 (0.15),
    # 60 (0.075), 70 (0.05): F(30) = 0.875, F(60) = 0.95, VaR 60, ES (0.05·70 + 0.05·60) / 0.1 = 65
    expected = {
        "A": dict(
            segment="neocloud",
            principal=200 * M,
            wal_years=4.0,
            pd=0.2,
            lgd=0.2125,
            el=8.5 * M,
            el_pv=5.44 * M,
            el_bps=68.0,
            es_contribution=50 * M,
            ec=41.5 * M,
            capital_bps=207.5,
            required_bps=275.5,
            actual_bps=300.0,
            cushion_bps=24.5,
            standalone_es=55 * M,
        ),
        "B": dict(
            segment="miner",
            principal=100 * M,
            wal_years=2.5,
            pd=0.5,
            lgd=0.295,
            el=14.75 * M,
            el_pv=10.72 * M,
            el_bps=428.8,
            es_contribution=55 * M,
            ec=40.25 * M,
            capital_bps=402.5,
            required_bps=831.3,
            actual_bps=600.0,
            cushion_bps=-231.3,
            standalone_es=65 * M,
        ),
        # The book: sums of el (23.25), el_pv (16.16), es_contribution (105 = ES),
        # ec (81.75) and standalone ES (120: diversification 105/120 = 0.875);
        # pd: any default, d >= 0.3: 0.5; lgd = 23.25 / (0.2·200 + 0.5·100) = 23.25/90;
        # WAL (200·4 + 100·2.5) / 300 = 3.5; spreads weighted by B0·WAL (800, 250):
        # el_bps (800·68 + 250·428.8) / 1050 = 161600/1050 = 153.90 (= 1e4·16.16/1050),
        # capital_bps (800·207.5 + 250·402.5) / 1050 = 266625/1050 = 253.93,
        # required 428225/1050 = 407.83, actual (800·300 + 250·600) / 1050 = 371.43,
        # cushion (800·24.5 - 250·231.3) / 1050 = -38225/1050 = -36.40
        PORTFOLIO: dict(
            segment="",
            principal=300 * M,
            wal_years=3.5,
            pd=0.5,
            lgd=23.25 / 90,
            el=23.25 * M,
            el_pv=16.16 * M,
            el_bps=161600 / 1050,
            es_contribution=105 * M,
            ec=81.75 * M,
            capital_bps=266625 / 1050,
            required_bps=428225 / 1050,
            actual_bps=390000 / 1050,
            cushion_bps=-38225 / 1050,
            standalone_es=120 * M,
        ),
    }
    for row in (a, b, book):
        for column, value in expected[row["loan_id"]].items():
            if isinstance(value, str):
                assert row[column] == value
            else:
                assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-9), (
                    row["loan_id"],
                    column,
                )
    # The book line: EL 23.25 (7.75% of 300), VaR 60 (20%), ES 105 (35%)
    line = result.book[0]
    assert line.rho == 0.5 and line.confidence == 0.9
    assert (line.expected_loss, line.var, line.es) == pytest.approx(
        (23.25 * M, 60 * M, 105 * M), rel=1e-12
    )
    assert (line.expected_loss_rate, line.var_rate, line.es_rate) == pytest.approx(
        (0.0775, 0.2, 0.35), rel=1e-12
    )
    assert line.line() == (
        "rho=0.5: EL $23.3M (7.75%), VaR 90% $60.0M (20.00%), ES 90% $105.0M (35.00%) of principal"
    )
    # the edge weights: deflation 0.5 and 0.2, crypto's one cell 1, haircut 0.75 and 0.25
    assert line.edges["deflation"] == pytest.approx((0.5, 0.2), rel=1e-12)
    assert line.edges["crypto_drawdown"] == (1.0, 1.0)
    assert line.edges["haircut"] == pytest.approx((0.75, 0.25), rel=1e-12)
    # one crypto value: the copula's rho changes nothing
    other = result.at(0.0)
    pd.testing.assert_frame_equal(
        other.drop(columns="rho"), table.drop(columns="rho"), rtol=1e-12, atol=1e-9
    )
    assert result.most_underpriced(0.5)["loan_id"] == "B"
    assert result.table["rho"].tolist() == [0.5] * 3 + [0.0] * 3


def test_hand_worked_book_at_99_matches_risk():
    # At 0.99 the VaR is the worst cell, 150 (F(60) = 0.95 < 0.99), and ES = 150:
    # the contributions are the loans' losses there, 80 and 70.
    ds = hand_cube()
    result = price(ds, [0.5], marginals=HAND_MARGINALS)
    table = result.at(0.5).set_index("loan_id")
    assert table.loc["A", "es_contribution"] == pytest.approx(80 * M, rel=1e-12)
    assert table.loc["B", "es_contribution"] == pytest.approx(70 * M, rel=1e-12)
    row = risk(ds, [0.5], overrides=HAND_MARGINALS)[0]
    assert result.book[0].es == pytest.approx(row.es99 * 300 * M, rel=1e-12)
    assert result.book[0].var == pytest.approx(row.var99 * 300 * M, rel=1e-12)
    assert result.book[0].expected_loss == pytest.approx(row.expected_loss * 300 * M, rel=1e-12)


def test_a_loan_without_a_spread_and_one_that_never_defaults():
    loans = [
        {**HAND_LOANS[0], "spread": None},
        HAND_LOANS[1],
        {
            "loan_id": "C",
            "principal": 50 * M,
            "rate": 0.04,
            "term_years": 1.0,
            "spread": 0.01,
            "amortization": "bullet",
        },
    ]
    base = hand_cube()
    loss = np.concatenate([base["loan_loss"].values, np.zeros((3, 1, 2, 1))], axis=-1)
    years = np.concatenate([base["loan_default_years"].values, np.full((3, 1, 1), np.nan)], axis=-1)
    ds = pricing_cube(
        {"deflation": [0.0, 0.3, 0.6], "crypto_drawdown": [0.5], "haircut": [0.2, 0.8]},
        loans,
        loss,
        years,
        scenario={"discount_rate": 0.25},
    )
    table = price(ds, 0.5, confidence=0.9, marginals=HAND_MARGINALS).at(0.5)
    # B (cushion -231.3), C (never defaults: requires 0, carries 100 bp), then A
    # (no spread: last), then the book
    assert list(table["loan_id"]) == ["B", "C", "A", PORTFOLIO]
    c = table.iloc[1]
    assert c["pd"] == 0 and math.isnan(c["lgd"]) and c["required_bps"] == 0
    assert c["cushion_bps"] == pytest.approx(100.0) and c["standalone_es"] == 0
    a = table.iloc[2]
    assert math.isnan(a["actual_bps"]) and math.isnan(a["cushion_bps"])
    book = table.iloc[3]
    # actual and cushion over the loans that give a spread: B (250) and C (50·1 = 50):
    # actual (250·600 + 50·100) / 300 = 516.67; cushion (250·-231.3 + 50·100) / 300
    assert book["actual_bps"] == pytest.approx((250 * 600 + 50 * 100) / 300, rel=1e-12)
    assert book["cushion_bps"] == pytest.approx((250 * -231.3 + 50 * 100) / 300, rel=1e-12)
    # el_bps and required over every loan: (800·68 + 250·428.8 + 50·0) / 1100
    assert book["el_bps"] == pytest.approx((800 * 68 + 250 * 428.8) / 1100, rel=1e-12)
    assert book["es_contribution"] == pytest.approx(105 * M, rel=1e-12)


# ---------------------------------------------------------------------------
# Bad input


def test_price_refuses_bad_input():
    ds = hand_cube()
    with pytest.raises(InputError, match=r"--confidence 1: must be in \(0, 1\)"):
        price(ds, [0.5], confidence=1.0)
    with pytest.raises(InputError, match=r"--confidence 0: must be in \(0, 1\)"):
        price(ds, [0.5], confidence=0.0)
    with pytest.raises(InputError, match="--capital-cost -0.1: must be >= 0"):
        price(ds, [0.5], capital_cost=-0.1)
    with pytest.raises(InputError, match=r"--rho 1: must be in \(-1, 1\)"):
        price(ds, [1.0])
    with pytest.raises(InputError, match="marginals: volatility is not an axis"):
        price(ds, [0.5], marginals={"volatility": {"dist": "norm"}})
    without = ds.drop_vars(["loan_loss", "loan_default_years"])
    with pytest.raises(InputError) as err:
        price(without, [0.5])
    assert err.value.problems == [price_module.PER_LOAN_HINT]
    assert "--per-loan" in price_module.PER_LOAN_HINT
    assert "outputs: {per_loan: true}" in price_module.PER_LOAN_HINT
    no_config = ds.copy()
    no_config.attrs = {k: v for k, v in ds.attrs.items() if k != "config"}
    with pytest.raises(InputError, match="embeds no run config"):
        price(no_config, [0.5])


# ---------------------------------------------------------------------------
# Exact quantiles block by block


def run_quantiles(x, w, alpha, bounds, collect):
    q = TailQuantiles(x.shape[1], alpha, collect)
    for _ in range(10):
        if q.done:
            break
        for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi > lo and q.needs(b):
                q.add(order_keys(x[lo:hi]), x[lo:hi], w[lo:hi], b)
        q.end_pass()
    assert q.done
    return q.tails


@st.composite
def weighted_columns(draw):
    n = draw(st.integers(1, 60))
    m = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["ties", "zeros", "signed", "close"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "ties":
        x = rng.integers(0, 4, (n, m)) * 1e6
    elif kind == "zeros":
        x = np.where(rng.random((n, m)) < 0.6, 0.0, rng.random((n, m)) * 1e8)
    elif kind == "signed":
        x = np.where(rng.random((n, m)) < 0.2, -0.0, rng.normal(size=(n, m)) * 10)
    else:  # values apart in the last bits only: every 16-bit level is read
        x = 1.0 + rng.integers(0, 3, (n, m)) * 2.0**-50
    w = rng.random(n) ** 3 + 1e-3
    w = w / w.sum()
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    alpha = draw(st.sampled_from([0.5, 0.9, 0.95, 0.99]))
    collect = draw(st.sampled_from([0, 1, 7, 1000]))
    return x.astype(float), w, alpha, [0, *cuts, n], collect


@given(weighted_columns())
@settings(deadline=None)
def test_tail_quantiles_are_numpys_weighted_quantile(case):
    x, w, alpha, bounds, collect = case
    tails = run_quantiles(x, w, alpha, bounds, collect)
    for j, tail in enumerate(tails):
        assert tail is not None
        want = tail_measures(x[:, j], w, levels=(alpha,))
        assert tail.var == want.var[alpha]
        assert tail.cdf == pytest.approx(w[x[:, j] <= tail.var].sum(), abs=1e-12)
        assert tail.es == pytest.approx(want.es[alpha], rel=1e-9, abs=1e-9)


def test_order_keys_keep_the_order_and_read_back():
    values = np.array([-np.inf, -1e300, -2.5, -1e-300, 0.0, 5e-324, 1e-300, 1.0, 2.5, np.inf])
    keys = order_keys(values)
    assert (np.diff(keys.astype(object)) > 0).all()
    assert order_keys(np.array([-0.0]))[0] == order_keys(np.array([0.0]))[0]
    for v, k in zip(values, keys):
        assert key_value(k) == v


def test_an_atom_is_found_in_one_pass():
    # weights 0.5, 0.3, 0.15, 0.05; alpha 0.9.
    # Column 0: 0, 0, 0, 5: F(0) = 0.95 >= 0.9, VaR 0 (the zero slot),
    #   ES = (0.05·5 + (0.95 - 0.9)·0) / 0.1 = 2.5.
    # Column 1: 1, 7, 7, 7: the VaR's bin holds 7 alone: VaR 7, F(7) = 1,
    #   ES = (0 + (1 - 0.9)·7) / 0.1 = 7.
    # Column 2: 1, 1.01, 1.02, 1.03, one bin (1 to 1.0625) of four values: a
    #   second pass keeps them, F(1.01) = 0.8, F(1.02) = 0.95: VaR 1.02,
    #   ES = (0.05·1.03 + 0.05·1.02) / 0.1 = 1.025.
    x = np.array([[0.0, 1.0, 1.0], [0.0, 7.0, 1.01], [0.0, 7.0, 1.02], [5.0, 7.0, 1.03]])
    w = np.array([0.5, 0.3, 0.15, 0.05])
    q = TailQuantiles(3, 0.9)
    q.add(order_keys(x), x, w, 0)
    q.end_pass()
    first, second = q.tails[0], q.tails[1]
    assert first is not None and first.var == 0.0 and first.es == pytest.approx(2.5)
    assert second is not None and second.var == 7.0 and second.es == pytest.approx(7.0)
    assert q.tails[2] is None and not q.done and q.needs(0)
    q.add(None, x, w, 0)
    q.end_pass()
    third = q.tails[2]
    assert q.done and third is not None and third.var == 1.02
    assert third.cdf == pytest.approx(0.95) and third.es == pytest.approx(1.025)


# ---------------------------------------------------------------------------
# Properties on random books and grids


@st.composite
def books(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_loans = draw(st.integers(1, 4))
    axes = {
        "deflation": np.round(np.sort(rng.choice(np.linspace(-0.2, 0.8, 11), 3, False)), 2)[
            : draw(st.integers(1, 3))
        ],
        "crypto_drawdown": np.linspace(0.0, 0.9, draw(st.integers(1, 4))),
        "haircut": np.linspace(0.1, 0.8, draw(st.integers(1, 3))),
    }
    if draw(st.booleans()):
        axes["discount_rate"] = np.array([0.05, 0.12])
    shape = tuple(len(v) for v in axes.values())
    path_shape = tuple(len(v) for k, v in axes.items() if k not in LIQUIDATION_PARAMS)
    loans = [
        {
            "loan_id": f"L{i}",
            "principal": float(rng.integers(1, 50)) * 10 * M,
            "rate": 0.08,
            "spread": float(rng.uniform(0, 0.1)),
            "term_years": float(rng.integers(1, 20)) / 4,
            "amortization": str(rng.choice(["annuity", "linear", "bullet"])),
        }
        for i in range(n_loans)
    ]
    years = np.where(
        rng.random((*path_shape, n_loans)) < 0.5,
        np.nan,
        rng.uniform(0.25, 5, (*path_shape, n_loans)),
    )
    # losses on a coarse lattice (ties in the book's loss) where the loan defaults
    lattice = rng.integers(0, 5, (*shape, n_loans)) * 5 * M
    liquidation = tuple(i for i, k in enumerate(axes) if k in LIQUIDATION_PARAMS)
    defaulted = np.isfinite(np.expand_dims(years, liquidation))
    loss = np.where(defaulted, lattice, 0.0)
    ds = pricing_cube(axes, loans, loss, years)
    rho = draw(st.sampled_from([-0.5, 0.0, 0.5, 0.9]))
    confidence = draw(st.sampled_from([0.5, 0.9, 0.99]))
    return ds, rho, confidence


@given(books())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_price_properties(case):
    ds, rho, confidence = case
    result = price(ds, [rho], confidence=confidence, capital_cost=0.1)
    table = result.at(rho)
    loans, book = table[table["loan_id"] != PORTFOLIO], table.iloc[-1]
    total = float(loans["principal"].sum())
    scale = total * 1e-12
    es = result.book[0].es
    # the contributions add up to the ES
    assert loans["es_contribution"].sum() == pytest.approx(es, rel=1e-9, abs=scale)
    assert book["es_contribution"] == pytest.approx(es, rel=1e-9, abs=scale)
    # subadditivity: the book's ES is at most the sum of the loans' own
    assert es <= loans["standalone_es"].sum() * (1 + 1e-12) + scale
    # the loans' expected losses add up to the book's, as risk computes it
    row = risk(ds, [rho])[0]
    assert loans["el"].sum() == pytest.approx(row.expected_loss * total, rel=1e-9, abs=scale)
    assert result.book[0].expected_loss == pytest.approx(loans["el"].sum(), rel=1e-9, abs=scale)
    if confidence == 0.99:
        assert es == pytest.approx(row.es99 * total, rel=1e-9, abs=scale)
        assert result.book[0].var == pytest.approx(row.var99 * total, rel=1e-9, abs=scale)
    # probabilities, and EL within [0, ES]
    assert ((loans["pd"] >= 0) & (loans["pd"] <= 1 + 1e-12)).all()
    assert 0 <= book["pd"] <= 1 + 1e-12 and book["pd"] >= loans["pd"].max() - 1e-12
    assert result.book[0].expected_loss <= es * (1 + 1e-12) + scale
    # the book's capital ES - EL is >= 0; a loan's required spread moves with the
    # capital cost by exactly 1e4·Δκ·ec/B0 (up for a loan that uses capital, down
    # for one whose losses fall outside the book's tail)
    assert book["ec"] >= -scale
    dearer = price(ds, [rho], confidence=confidence, capital_cost=0.3).at(rho)
    dearer = dearer.set_index("loan_id").loc[table["loan_id"]]
    step = dearer["required_bps"].to_numpy() - table["required_bps"].to_numpy()
    want = 1e4 * 0.2 * table["ec"].to_numpy() / table["principal"].to_numpy()
    np.testing.assert_allclose(step[:-1], want[:-1], rtol=1e-9, atol=1e-9)
    uses_capital = table["ec"].to_numpy()[:-1] >= 0
    assert (step[:-1][uses_capital] >= -1e-9).all()
    # the table is sorted by cushion, most underpriced first
    cushions = loans["cushion_bps"].to_numpy()
    assert (np.diff(cushions[np.isfinite(cushions)]) >= 0).all()
    if len(loans) == 1:  # one loan alone: its ES share is its own ES
        assert loans["es_contribution"].iloc[0] == pytest.approx(
            loans["standalone_es"].iloc[0], rel=1e-12, abs=scale
        )


# ---------------------------------------------------------------------------
# A cube written by run: el_pv against loss_pv, and bounded reading


@pytest.fixture(scope="module")
def run_cube(tmp_path_factory):
    """The seed book on a small grid with a discount-rate axis, run with per-loan
    outputs into a Zarr store of 2-row chunks."""
    raw = yaml.safe_load((ROOT / "configs" / "seed.yaml").read_text())
    raw["grid"] = {
        "deflation": {"start": -0.2, "stop": 0.6, "num": 9},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 5},
        "haircut": {"values": [0.0, 0.35, 0.7]},
        "discount_rate": {"values": [0.04, 0.1]},
    }
    raw["scenario"].pop("discount_rate", None)
    cfg = config_from_dict(raw, where="seed-small.yaml", base_dir=ROOT / "configs")
    ds = gridstress.run_grid(cfg, per_loan=True)
    path = tmp_path_factory.mktemp("cube") / "c.zarr"
    ds.chunk({"deflation": 2}).to_zarr(path, consolidated=False)
    return path


def test_price_of_a_run_cube(run_cube):
    with gridstress.open_cube(run_cube) as ds:
        result = price(ds, [0.0, 0.7])
        for rho, line in zip([0.0, 0.7], result.book):
            w = scenario_weights(ds, rho).weights
            table = result.at(rho)
            loans = table[table["loan_id"] != PORTFOLIO]
            total = float(ds.attrs["total_principal_usd"])
            # sum over loans of w·loss·(1+y)^-tau is the weighted loss_pv of the cube
            want_pv = float((w * ds["loss_pv"]).sum())
            assert loans["el_pv"].sum() == pytest.approx(want_pv, rel=1e-9, abs=total * 1e-12)
            assert table.iloc[-1]["el_pv"] == pytest.approx(want_pv, rel=1e-9, abs=total * 1e-12)
            # the book's el_bps is the weighted mean of the cube's breakeven spread
            breakeven = float((w * ds["breakeven_spread_bps"]).sum())
            assert table.iloc[-1]["el_bps"] == pytest.approx(breakeven, rel=1e-9, abs=1e-9)
            # pd: the weight of the cells where the loan defaults (default times
            # broadcast over the haircut)
            tau = ds["loan_default_years"]
            defaulted = np.isfinite(tau).broadcast_like(ds["loan_loss"])
            want_pd = (w * defaulted).sum([d for d in w.dims])
            got_pd = loans.set_index("loan_id")["pd"]
            for loan in ds["loan"].values:
                assert got_pd[str(loan)] == pytest.approx(float(want_pd.sel(loan=loan)), abs=1e-12)
            # the book's pd: any loan defaults
            any_default = (ds["defaults"] > 0) * 1.0
            assert table.iloc[-1]["pd"] == pytest.approx(float((w * any_default).sum()), abs=1e-12)
            row = risk(ds, [rho])[0]
            assert line.es == pytest.approx(row.es99 * total, rel=1e-9)
            # the loan without a spread
            assert math.isnan(table.set_index("loan_id").loc["MN-CONVERT-B200", "actual_bps"])
            # a book whose loans differ: some never default, ES above EL, and
            # correlation adds tail loss
            assert loans["pd"].min() < 0.5 < loans["pd"].max()
            assert line.es > 1.2 * line.expected_loss
            # WAL from the contractual schedule
            from gridstress.analysis.summary import cube_config
            from gridstress.portfolio import portfolio_arrays

            config = cube_config(ds)
            assert config is not None
            pf = portfolio_arrays(config.loans, 4)
            wal = dict(zip(pf.loan_id, pf.wal_years))
            for _, loan in loans.iterrows():
                assert loan["wal_years"] == wal[loan["loan_id"]]


def test_reading_block_by_block_gives_the_same_answer(run_cube, monkeypatch):
    with gridstress.open_cube(run_cube) as ds:
        whole = price(ds, [0.5], confidence=0.95)
        sizes = []
        read = price_module._Reader.read

        def spy(self, name, rows):
            out = read(self, name, rows)
            sizes.append((name, out.size, rows.stop - rows.start))
            return out

        monkeypatch.setattr(price_module._Reader, "read", spy)
        # one row of deflation at a time (5 x 3 x 2 cells x 8 loans = 240 values), parts
        # of one row, and no room to keep values: every level of the radix is read
        monkeypatch.setattr(price_module, "BLOCK_VALUES", 240)
        monkeypatch.setattr(price_module, "PART_VALUES", 1)
        monkeypatch.setattr(price_module, "COLLECT_VALUES", 0)
        blocked = price(ds, [0.5], confidence=0.95)
    assert {n for n, _, _ in sizes} == {"loss", "loan_loss", "loan_default_years"}
    assert max(size for _, size, _ in sizes) <= 240  # memory of one block
    # the loans' variables a row at a time; the book's loss (1 value a cell) 8 rows
    # (whole chunks of 2) and the last 1 (and a row at a time in the allocation
    # pass, with the loans)
    assert {rows for name, _, rows in sizes if name != "loss"} == {1}
    assert {rows for name, _, rows in sizes if name == "loss"} == {8, 1}
    # sums taken in another order: equal to 1e-12 of the values, or of a dollar/1000
    pd.testing.assert_frame_equal(blocked.table, whole.table, rtol=1e-12, atol=1e-3)
    assert blocked.book[0].var == whole.book[0].var
    assert blocked.book[0].es == pytest.approx(whole.book[0].es, rel=1e-12)


def test_a_grid_that_leads_with_a_liquidation_axis():
    # haircut first: blocks go along deflation, the first axis of the default times
    base = hand_cube()
    loss = base["loan_loss"].transpose("haircut", "deflation", "crypto_drawdown", "loan").values
    ds = pricing_cube(
        {"haircut": [0.2, 0.8], "deflation": [0.0, 0.3, 0.6], "crypto_drawdown": [0.5]},
        HAND_LOANS,
        loss,
        base["loan_default_years"].values,
        scenario={"discount_rate": 0.25},
    )
    got = price(ds, [0.5], confidence=0.9, marginals=HAND_MARGINALS).table
    want = price(base, [0.5], confidence=0.9, marginals=HAND_MARGINALS).table
    pd.testing.assert_frame_equal(got, want, rtol=1e-12, atol=1e-9)
