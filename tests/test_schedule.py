"""Contractual schedules against numpy-financial and hand arithmetic."""

from __future__ import annotations

import numpy as np
import numpy_financial as npf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridstress.schedule import contractual_schedule, periods, round_half_up


@pytest.mark.parametrize(
    "x, expected",
    [
        (2.5, 3),
        (2.4999, 2),
        (0.5, 1),
        (1.5, 2),
        (0.0, 0),
        (0.3 * 4, 1),
        (4.5 * 4, 18),
        (0.125 * 4, 1),
    ],
)
def test_round_half_up(x, expected):
    assert round_half_up(x) == expected


def test_periods_uses_half_up():
    # 0.375 years x 4 = 1.5 periods -> 2; 0.625 x 4 = 2.5 -> 3 (banker's rounding gives 2)
    assert periods(0.375, 4) == 2
    assert periods(0.625, 4) == 3


@pytest.mark.parametrize(
    "rate, n, balloon", [(0.10, 8, 0.0), (0.0625, 24, 0.0), (0.12, 16, 0.3), (0.15, 18, 0.5)]
)
def test_annuity_matches_numpy_financial(rate, n, balloon):
    f, B0 = 4, 2.5e8
    s = contractual_schedule(B0, rate, n, "annuity", balloon, f)
    r = rate / f
    # numpy-financial: pv = B0 borrowed, fv = -balloon still owed after n payments
    payment = -npf.pmt(r, n, B0, -balloon * B0)
    k = np.arange(1, n + 1)
    np.testing.assert_allclose(s.debt_service[1:], payment, rtol=1e-12)
    np.testing.assert_allclose(s.principal[1:], -npf.ppmt(r, k, n, B0, -balloon * B0), rtol=1e-10)
    np.testing.assert_allclose(s.interest[1:], -npf.ipmt(r, k, n, B0, -balloon * B0), rtol=1e-10)
    assert s.balloon[n] == pytest.approx(balloon * B0)
    assert s.owed[n] == pytest.approx(balloon * B0)
    assert s.balance[n] == 0.0


def test_annuity_hand_worked():
    # B0 = 1000, 10%/yr, annual, 2 periods: P = 100 * 1.21 / 0.21 = 576.190476...
    s = contractual_schedule(1000.0, 0.10, 2, "annuity", 0.0, 1)
    P = 100 * 1.21 / 0.21
    assert s.debt_service[1] == pytest.approx(P, rel=1e-14)
    assert s.interest[1] == pytest.approx(100.0)
    assert s.principal[1] == pytest.approx(P - 100)  # 476.19
    assert s.balance[1] == pytest.approx(1000 - (P - 100))  # 523.81
    assert s.interest[2] == pytest.approx(0.1 * (1100 - P))  # 52.381
    # WAL = (1 * 476.19 + 2 * 523.81) / 1000
    assert s.wal_years == pytest.approx((1 * (P - 100) + 2 * (1100 - P)) / 1000)


def test_annuity_with_a_vanishing_rate_is_level():
    # (1 + 1e-200)^-n rounds to 1; the payment must still tend to B0 (1 - b) / n
    s = contractual_schedule(1000.0, 1e-200, 4, "annuity", 0.0, 4)
    np.testing.assert_allclose(s.debt_service[1:], 250.0, rtol=1e-15)


def test_annuity_zero_rate_is_level():
    # r = 0: P = B0 (1 - b) / n = 1000 * 0.8 / 4 = 200, balloon 200
    s = contractual_schedule(1000.0, 0.0, 4, "annuity", 0.2, 4)
    np.testing.assert_allclose(s.debt_service[1:], 200.0)
    assert s.balloon[4] == pytest.approx(200.0)
    assert s.owed[4] == pytest.approx(200.0)


def test_linear_with_balloon():
    # B0 = 1200, 8%/yr quarterly (r = 2%), n = 3, b = 0.25: A = 1200 * 0.75 / 3 = 300
    s = contractual_schedule(1200.0, 0.08, 3, "linear", 0.25, 4)
    np.testing.assert_allclose(s.principal[1:], 300.0)
    np.testing.assert_allclose(s.interest[1:], [24.0, 18.0, 12.0])  # 2% of 1200, 900, 600
    np.testing.assert_allclose(s.debt_service[1:], [324.0, 318.0, 312.0])
    np.testing.assert_allclose(s.owed[1:], [900.0, 600.0, 300.0])  # balloon 300 still owed
    assert s.balloon[3] == 300.0
    # WAL = (0.25 * 300 + 0.5 * 300 + 0.75 * (300 + 300)) / 1200 = 0.5625
    assert s.wal_years == pytest.approx(0.5625)


def test_bullet():
    # B0 = 1000, 5%/yr annual, n = 2: interest 50 each year, balloon 1000 at k = 2
    s = contractual_schedule(1000.0, 0.05, 2, "bullet", 0.0, 1)
    np.testing.assert_allclose(s.debt_service[1:], [50.0, 50.0])
    np.testing.assert_allclose(s.owed[1:], [1000.0, 1000.0])
    assert s.balloon[2] == 1000.0 and s.balance[2] == 0.0
    assert s.wal_years == 2.0


@given(
    principal=st.floats(1e3, 1e10),
    rate=st.floats(0, 0.3),
    n=st.integers(1, 60),
    amortization=st.sampled_from(["annuity", "linear", "bullet"]),
    balloon=st.floats(0, 0.95),
)
def test_schedule_repays_principal(principal, rate, n, amortization, balloon):
    s = contractual_schedule(principal, rate, n, amortization, balloon, 4)
    # regular principal plus balloon repays B0; balances never go negative
    assert s.principal.sum() + s.balloon.sum() == pytest.approx(principal, rel=1e-9)
    assert np.all(s.balance[:-1] >= -1e-6 * principal)
    np.testing.assert_allclose(
        s.interest[1:], s.balance[:-1] * rate / 4, rtol=1e-9, atol=1e-9 * principal
    )
    assert 0 < s.wal_years <= n / 4 + 1e-12
