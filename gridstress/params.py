"""Names, defaults, units and validity rules of every model input.

One table for the scenario parameters and one for the loan fields of model
v3 (``docs/model.md``).  The config reader validates against these rules
(and warns where a value looks like a percentage, basis points or months),
the cube takes units and long names from them, and the docs list them.
Defaults marked (E) are estimates; the others cite ``docs/model.md#sources``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A numeric range, with open or closed ends, an optional integer check and,
    where the model gives infinity a meaning (a deep market), ``.inf`` allowed."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    allow_inf: bool = False

    def check(self, value: float) -> str | None:
        """Return the broken rule as text (``"must be in [0, 1]"``), or None."""
        if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
            return "must be a number or .inf" if self.allow_inf else "must be a finite number"
        if math.isinf(value):
            return None if value == self.hi else f"must be {self.describe()}"
        if self.integer and value != int(value):
            return "must be a whole number"
        low_ok = value > self.lo if self.lo_open else value >= self.lo
        high_ok = value < self.hi if self.hi_open else value <= self.hi
        if low_ok and high_ok:
            return None
        return f"must be {self.describe()}"

    def describe(self) -> str:
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if math.isinf(self.hi):
            text = f"> {lo}" if self.lo_open else f">= {lo}"
            return text + " (or .inf)" if self.allow_inf else text
        if math.isinf(self.lo):
            return f"< {hi}" if self.hi_open else f"<= {hi}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"in {left}{lo}, {hi}{right}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Param:
    """A scenario parameter: one value per cell, the same for every loan."""

    name: str
    default: float | None
    rule: Rule
    units: str
    long_name: str
    symbol: str
    path: bool
    """True when it changes cash flows or default times; False when it enters
    only the recovery, so default paths are shared across its values."""
    empty: str | None = None
    """What leaving it out (or ``null``) means, for a parameter whose default is
    no value (``appraisal_deflation``: the foresight appraisal); None for one
    that always has a value."""

    @property
    def fixed(self) -> bool:
        """Whether a config may give it under ``scenario:`` (not only as an axis)."""
        return self.default is not None or self.empty is not None


SCENARIO_PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param(
            "deflation",
            None,
            Rule(-1, 1, True, True),
            "1/year",
            "annual market GPU rent deflation",
            "d",
            True,
        ),
        Param(
            "crypto_drawdown",
            None,
            Rule(0, 1),
            "1",
            "crypto price peak-to-trough drawdown",
            "c",
            True,
        ),
        Param("haircut", None, Rule(0, 1), "1", "GPU collateral liquidation haircut", "h", False),
        Param(
            "drawdown_periods",
            4.0,
            Rule(1, math.inf),
            "period",
            "periods over which the crypto drawdown is reached",
            "D",
            True,
        ),
        Param(
            "crypto_haircut",
            0.10,
            Rule(0, 1),
            "1",
            "crypto collateral liquidation haircut",
            "h_c",
            False,
        ),
        Param(
            "liquidation_cost",
            0.05,
            Rule(0, 1),
            "1",
            "share of gross liquidation proceeds lost to costs",
            "l",
            False,
        ),
        Param(
            "discount_rate",
            0.08,
            Rule(-1, math.inf, lo_open=True),
            "1/year",
            "annual rate for appraisals, PV of losses and refinancing",
            "y",
            True,
        ),
        # (E) calibration.md: about $10B of used-H100 value, one to two
        # quarters of Hopper shipments; .inf is a deep market (model v1).
        Param(
            "market_depth_gpus",
            400_000.0,
            Rule(0, lo_open=True, allow_inf=True),
            "GPU",
            "GPUs whose sale into the secondary market halves its price",
            "W",
            True,
        ),
        # (E) fund fire sales revert in 2-6 months; .inf: the impact never fades.
        Param(
            "market_half_life_years",
            0.5,
            Rule(0, lo_open=True, allow_inf=True),
            "year",
            "half-life of the price impact of past fire sales",
            "T",
            True,
        ),
        Param(
            "book_share",
            1.0,
            Rule(0, 1, lo_open=True),
            "1",
            "the book's share of GPU-backed lending (the market sells 1/share times its GPUs)",
            "theta",
            True,
        ),
        # Model v3: a new GPU generation's launch, and the market's appraisal.
        Param(
            "generation_shock",
            0.0,
            Rule(0, 1, hi_open=True),
            "1",
            "step fall of the old generation's merchant rents when a new generation ships",
            "j",
            True,
        ),
        # (E) calibration.md: Blackwell volume about 1.5 years after Hopper's.
        Param(
            "generation_years",
            1.5,
            Rule(0),
            "year",
            "when the new GPU generation ships",
            "t_g",
            True,
        ),
        Param(
            "appraisal_deflation",
            None,
            Rule(-1, 1, True, True),
            "1/year",
            "yearly rent deflation the secondary market prices into GPU appraisals",
            "d_a",
            True,
            empty="the appraisal sees the scenario's own future rents (model v2)",
        ),
    )
}
#: Parameters that a config gives as a value or not at all (None: ``empty``).
EMPTY_PARAMS = tuple(name for name, p in SCENARIO_PARAMS.items() if p.empty is not None)
REQUIRED_AXES = ("deflation", "crypto_drawdown", "haircut")
#: Scenario inputs that are fixed for a run and never an axis: curves over time
#: given as ``[years, index]`` points (model.md, "Paths").
PATHS = ("rent_path", "crypto_path")
#: Parameters that enter only the recovery at default: default times and the
#: market price index are shared across their values.
LIQUIDATION_PARAMS = tuple(name for name, p in SCENARIO_PARAMS.items() if not p.path)
#: Parameters of the market step (model.md, "Market step").
MARKET_PARAMS = ("market_depth_gpus", "market_half_life_years", "book_share")


@dataclass(frozen=True)
class Plausible:
    """The largest value a field plausibly takes, and what a larger one suggests.

    Values above ``hi`` are accepted with a warning that names the likely
    mistake (a percentage for a fraction, months for years).
    """

    hi: float
    hint: str


@dataclass(frozen=True)
class Field:
    """A loan field: one column of the portfolio."""

    name: str
    kind: str  # "str", "float", "int", "choice"
    default: Any
    rule: Rule | None = None
    units: str = ""
    doc: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False
    optional: bool = False
    """True when "not given" is itself a value (``max_ltv``: no covenant)."""
    plausible: Plausible | None = None


_UNIT = Rule(0, 1)
_NONNEG = Rule(0)
_POS = Rule(0, lo_open=True)

LOAN_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("loan_id", "str", None, required=True, doc="unique identifier"),
        Field("borrower", "str", None, doc="borrower name; defaults to loan_id"),
        Field("segment", "str", "other", doc="group for loss_by_segment"),
        Field("principal", "float", None, _POS, "USD", "outstanding at t = 0", required=True),
        Field(
            "rate",
            "float",
            None,
            _NONNEG,
            "1/year",
            "annual all-in coupon",
            required=True,
            plausible=Plausible(
                1, "looks like a percentage: rates are annual fractions (0.12 for 12%)"
            ),
        ),
        Field(
            "spread",
            "float",
            None,
            Rule(),
            "1/year",
            "annual credit spread over the base rate, compared with the breakeven spread",
            optional=True,
            plausible=Plausible(
                1,
                "looks like a percentage or basis points: spreads are "
                "annual fractions (0.065 for 650 bp)",
            ),
        ),
        Field(
            "term_years",
            "float",
            None,
            _POS,
            "year",
            "years to maturity",
            required=True,
            plausible=Plausible(30, "looks like months: term_years is in years (5 for 60 months)"),
        ),
        Field(
            "amortization",
            "choice",
            "annuity",
            doc="repayment profile",
            choices=("annuity", "linear", "bullet"),
        ),
        Field(
            "balloon",
            "float",
            0.0,
            Rule(0, 1, hi_open=True),
            "1",
            "share of principal repaid at maturity by refinancing (annuity, linear)",
        ),
        Field("n_gpus", "float", 0.0, _NONNEG, "GPU", "GPUs in the revenue-earning fleet"),
        Field("gpu_age_years", "float", 0.0, _NONNEG, "year", "fleet age at t = 0"),
        Field(
            "economic_life_years", "float", 5.0, _POS, "year", "age at which a GPU stops earning"
        ),
        Field(
            "pledged_share",
            "float",
            1.0,
            _UNIT,
            "1",
            "share of the fleet's value the lender can claim",
        ),
        Field("rent", "float", 2.40, _POS, "USD/GPU-hour", "market rent at t = 0"),
        Field("utilization", "float", 0.85, _UNIT, "1", "rented share of merchant capacity"),
        Field("contracted_share", "float", 0.0, _UNIT, "1", "take-or-pay share of capacity"),
        Field("contract_years", "float", 0.0, _NONNEG, "year", "years the contract runs"),
        Field(
            "contract_rent",
            "float",
            None,
            _NONNEG,
            "USD/GPU-hour",
            "contract price; defaults to rent",
        ),
        Field(
            "power_kw_per_gpu",
            "float",
            1.2,
            _NONNEG,
            "kW",
            "all-in power per GPU, server share and PUE included",
        ),
        Field("power_price", "float", 0.081, _NONNEG, "USD/kWh", "electricity price"),
        Field(
            "fixed_opex_per_gpu_year",
            "float",
            3000.0,
            _NONNEG,
            "USD/GPU/year",
            "fixed operating cost per GPU in service",
        ),
        Field(
            "mining_revenue",
            "float",
            0.0,
            _NONNEG,
            "USD/year",
            "mining revenue at the t = 0 crypto price",
        ),
        Field("mining_cost", "float", 0.0, _NONNEG, "USD/year", "mining operating cost"),
        Field(
            "crypto_collateral",
            "float",
            0.0,
            _NONNEG,
            "USD",
            "value at t = 0 of coins pledged to the lender",
        ),
        Field("cash_reserve", "float", 0.0, _NONNEG, "USD", "debt-service reserve at t = 0"),
        Field(
            "cash_cap",
            "float",
            None,
            _NONNEG,
            "USD",
            "most cash the borrower keeps for this loan (>= cash_reserve; the rest is "
            "paid out to equity); defaults to cash_reserve",
        ),
        Field("min_dscr", "float", 0.0, _NONNEG, "1", "DSCR covenant; 0 means none"),
        Field(
            "cure_periods",
            "int",
            1,
            Rule(1, integer=True),
            "period",
            "consecutive breaches before a covenant default",
        ),
        Field(
            "max_ltv",
            "float",
            None,
            _POS,
            "1",
            "LTV covenant; empty means none",
            optional=True,
            plausible=Plausible(5, "looks like a percentage: max_ltv is a ratio (0.8 for 80%)"),
        ),
        Field(
            "ltv_basis",
            "choice",
            "market",
            doc="collateral value the LTV covenant is tested on: market (appraisal at "
            "the secondary-market price) or book (straight-line book value)",
            choices=("market", "book"),
        ),
        Field(
            "gpu_cost",
            "float",
            None,
            _POS,
            "USD/GPU",
            "purchase price of a new GPU; required when ltv_basis is book",
            optional=True,
        ),
        Field(
            "book_life_years",
            "float",
            None,
            _POS,
            "year",
            "straight-line accounting life of a GPU; defaults to economic_life_years",
        ),
        Field(
            "refi_advance_rate",
            "float",
            0.7,
            _UNIT,
            "1",
            "share of collateral value a new lender advances at maturity",
        ),
        # (S, practitioner guides; E for GPUs) calibration.md: project finance
        # sizes debt at CFADS / 1.25-1.40x; 1.35x over 4 years for GPU cash flows.
        Field(
            "refi_term_years",
            "float",
            4.0,
            _NONNEG,
            "year",
            "years of projected CFADS a new lender lends against at maturity; 0: no "
            "cash-flow refinancing",
        ),
        Field(
            "refi_min_dscr", "float", 1.35, _POS, "1", "DSCR the cash-flow refinancing must meet"
        ),
        Field(
            "generation_exposure",
            "float",
            1.0,
            _UNIT,
            "1",
            "share of a generation_shock this loan's GPUs take (1: the generation a "
            "launch displaces; 0: the new generation itself)",
        ),
    )
}
REQUIRED_FIELDS = tuple(f.name for f in LOAN_FIELDS.values() if f.required)
