"""Contractual debt schedules (scenario-free): model.md, "Contractual schedule".

Periods are ``k = 1..n`` of length ``1/f`` years.  Arrays returned here have
``n + 1`` entries so that index ``k`` is period ``k``; index 0 holds the
opening balance and zeros elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up: ``round_half_up(2.5) == 3``.

    ``x`` is first rounded to 9 decimals so that a duration such as
    ``0.3 * 4 = 1.2000000000000002`` converts as written.
    """
    return math.floor(round(x, 9) + 0.5)


def periods(years: float, periods_per_year: int) -> int:
    """Duration in years to a whole number of periods: ``round_half_up(x * f)``."""
    return round_half_up(years * periods_per_year)


@dataclass(frozen=True)
class Schedule:
    """One loan's contractual schedule, indexed by period ``k = 0..n``.

    Attributes (USD): ``interest`` I_k, ``principal`` A_k (regular, balloon
    excluded), ``balloon`` (nonzero at k = n only), ``debt_service``
    DS_k = I_k + A_k, ``owed`` O_k = B_{k-1} - A_k (balloon still included),
    ``balance`` B_k = O_k - balloon_k (B_0 = principal).
    """

    n: int
    interest: np.ndarray
    principal: np.ndarray
    balloon: np.ndarray
    debt_service: np.ndarray
    owed: np.ndarray
    balance: np.ndarray
    wal_years: float


def contractual_schedule(
    principal: float,
    rate: float,
    n: int,
    amortization: str,
    balloon_share: float,
    periods_per_year: int,
) -> Schedule:
    """Interest, principal, balloon and balances of one loan.

    Parameters
    ----------
    principal : float
        B0 [USD], outstanding at t = 0.
    rate : float
        Annual coupon i [1/year]; the periodic rate is ``r = i / f``.
    n : int
        Periods to maturity (>= 1).
    amortization : {"annuity", "linear", "bullet"}
    balloon_share : float
        b in [0, 1): share of B0 repaid at maturity by refinancing.
    periods_per_year : int
        f.

    Notes
    -----
    - linear: ``A_k = B0 (1 - b) / n``.
    - annuity: level payment ``P = (B0 - b B0 v^n) r / (1 - v^n)``,
      ``v = 1 / (1 + r)`` (``P = B0 (1 - b) / n`` when r = 0); ``A_k = P - I_k``;
      ``v^n`` and ``1 - v^n`` are evaluated as ``exp(-n log1p(r))`` and
      ``-expm1(-n log1p(r))``.
    - bullet: ``A_k = 0``, balloon ``B0`` at k = n.
    ``WAL = sum_k t_k (A_k + balloon_k) / B0`` [years].
    """
    if n < 1:
        raise ValueError("a loan needs at least one period")
    r = rate / periods_per_year
    b = 0.0 if amortization == "bullet" else balloon_share
    balloon_amount = principal if amortization == "bullet" else b * principal

    interest = np.zeros(n + 1)
    regular = np.zeros(n + 1)
    balloon = np.zeros(n + 1)
    owed = np.zeros(n + 1)
    balance = np.zeros(n + 1)
    balance[0] = principal
    owed[0] = principal
    balloon[n] = balloon_amount

    if amortization == "annuity":
        if r == 0.0:
            payment = principal * (1.0 - b) / n
        else:
            # v^n and 1 - v^n through log1p/expm1: exact to rounding even for a
            # rate so small that (1 + r)^-n rounds to 1.
            log_v_n = -n * math.log1p(r)
            payment = (principal - b * principal * math.exp(log_v_n)) * r / -math.expm1(log_v_n)
    elif amortization == "linear":
        level = principal * (1.0 - b) / n
    elif amortization != "bullet":
        raise ValueError(f"unknown amortization {amortization!r}")

    for k in range(1, n + 1):
        interest[k] = balance[k - 1] * r
        if amortization == "annuity":
            regular[k] = payment - interest[k]
        elif amortization == "linear":
            regular[k] = level
        owed[k] = balance[k - 1] - regular[k]
        balance[k] = owed[k] - balloon[k]
    # The last period closes the loan exactly; floating error would otherwise
    # leave a residue of a few ulps of B0.
    balance[n] = 0.0
    owed[n] = balloon_amount

    t = np.arange(n + 1) / periods_per_year
    wal = float(np.sum(t * (regular + balloon)) / principal)
    return Schedule(
        n=n,
        interest=interest,
        principal=regular,
        balloon=balloon,
        debt_service=interest + regular,
        owed=owed,
        balance=balance,
        wal_years=wal,
    )
