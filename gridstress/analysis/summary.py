"""The summary of a cube: base and severe scenarios, worst cell, segments, spread,
the default rate by trigger, each loan's outcome, what the thin resale market costs
and, when given, what each loan should pay (a :class:`.price.Pricing`).

The per-loan tables and the market cost are computed from the cube's
embedded config (the resolved run config, loans inline) by running the
reference model (:mod:`gridstress.reference`) in the one cell asked for:
once as configured and once with ``market_depth_gpus: .inf`` (a deep
market where fire sales move no price).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import xarray as xr
import yaml

from ..inputs import RunConfig
from ..model import MODEL_VERSION
from ..variables import TRIGGERS
from .headline import Headline, headline, scenario_point

#: The copula correlation of the price table of ``summary`` and the report.
PRICE_RHO = 0.5
#: The per-loan variables (``run --per-loan``) that pricing needs.
PER_LOAN_VARS = ("loan_loss", "loan_default_years")
SCENARIO_VARS = (
    "loss",
    "loss_rate",
    "default_rate",
    "defaults",
    "recovery_rate",
    "breakeven_spread_bps",
    "market_price_min",
)


def weighted_spread_bps(ds: xr.Dataset) -> float:
    """The portfolio's principal-weighted actual spread [bp].

    Taken from the cube's ``weighted_spread_bps`` attribute, else computed
    from the loans of its resolved ``config``: ``1e4 * Σ spread_i·B0_i /
    Σ B0_i`` over the loans whose ``spread`` is given; NaN when none is.
    """
    value = ds.attrs.get("weighted_spread_bps")
    if value is not None:
        return float(value)
    loans = (yaml.safe_load(ds.attrs.get("config", "")) or {}).get("portfolio") or []
    given = [(ln["spread"], ln["principal"]) for ln in loans if ln.get("spread") is not None]
    if not given:
        return math.nan
    return 1e4 * sum(s * p for s, p in given) / sum(p for _, p in given)


def cube_config(ds: xr.Dataset) -> RunConfig | None:
    """The run config embedded in a cube of this model version; None for a cube of
    another version or one that embeds no whole run config (grid and loans)."""
    if str(ds.attrs.get("model_version")) != MODEL_VERSION:
        return None
    # libyaml's parser where there is one: a book of hundreds of loans is read in
    # milliseconds rather than a large part of a second
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(ds.attrs.get("config") or "", Loader=loader)  # noqa: S506 (a safe loader)
    if not isinstance(raw, dict) or not {"grid", "portfolio"} <= set(raw):
        return None
    return RunConfig.from_dict(raw, f"{ds.attrs.get('name', 'cube')} (embedded config)")


@dataclass(frozen=True)
class LoanResult:
    """One loan's outcome in one cell."""

    loan_id: str
    segment: str
    principal: float
    default_years: float | None
    """Time of default [year]; None when the loan is repaid."""
    trigger: str | None
    ead: float | None
    recovery: float | None
    loss: float

    def row(self) -> dict[str, object]:
        return {
            "loan_id": self.loan_id,
            "segment": self.segment,
            "principal": self.principal,
            "default_years": self.default_years,
            "trigger": self.trigger,
            "ead": self.ead,
            "recovery": self.recovery,
            "loss": self.loss,
        }


def loan_results(config: RunConfig, point: dict[str, float]) -> list[LoanResult]:
    """Each loan's default time, trigger, EAD, recovery and loss in the cell ``point``
    (the whole portfolio in one market), loans in canonical order."""
    from ..reference import trace_cell

    loans = {ln.loan_id: ln for ln in config.loans}
    _, _, rows = trace_cell(
        config.loans,
        config.periods_per_year,
        {**config.scenario, **point},
        loan_ids=(),
        paths=config.paths,
    )
    return [
        LoanResult(
            r["loan_id"],
            loans[r["loan_id"]].segment,
            loans[r["loan_id"]].principal,
            r["default_years"],
            r["trigger"],
            r["ead"],
            r["recovery"],
            r["loss"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class MarketCost:
    """A cell's loss and default rate with the market step, and in a deep market."""

    loss: float
    loss_deep: float
    default_rate: float
    default_rate_deep: float

    @property
    def extra_loss(self) -> float:
        """What the missing resale market costs in this cell [USD]."""
        return self.loss - self.loss_deep


def market_cost(
    config: RunConfig, point: dict[str, float], results: list[LoanResult] | None = None
) -> MarketCost:
    """The loss of the cell ``point`` against the same cell with ``market_depth_gpus: .inf``.

    ``results`` are the cell's :func:`loan_results`, when already computed.
    """
    total = sum(ln.principal for ln in config.loans)

    def figures(rows: list[LoanResult]) -> tuple[float, float]:
        return (
            sum(r.loss for r in rows),
            sum(r.principal for r in rows if r.default_years is not None) / total,
        )

    loss, rate = figures(results or loan_results(config, point))
    loss_deep, rate_deep = figures(loan_results(config, {**point, "market_depth_gpus": math.inf}))
    return MarketCost(loss, loss_deep, rate, rate_deep)


@dataclass(frozen=True)
class Summary:
    headline: Headline
    scenarios: dict[str, dict[str, float]]
    """``{"base": {...}, "severe": {...}}``: the grid point and its figures."""
    points: dict[str, dict[str, float]]
    """Grid point of each scenario."""
    loss_by_segment: dict[str, float]
    """Loss [USD] per segment at the base (central) scenario."""
    breakeven_spread_bps: float
    """Breakeven spread at the base scenario [bp]."""
    actual_spread_bps: float
    """Principal-weighted actual spread of the portfolio [bp]."""
    total_principal: float
    by_trigger: dict[str, dict[str, float]]
    """Per scenario, the default rate by trigger (model.md's order)."""
    loans: dict[str, list[LoanResult]] | None = None
    """Per scenario, each loan's outcome (None: the cube embeds no v2 config)."""
    market: dict[str, MarketCost] | None = None
    """Per scenario, the loss with the market step against a deep market."""
    pricing: Any = None
    """What each loan should pay (a :class:`.price.Pricing`, at ``rho`` =
    :data:`PRICE_RHO` where the CLI and the report make it); None when not given."""

    @property
    def spread_cushion_bps(self) -> float:
        """Actual minus breakeven spread at the base scenario [bp]."""
        return self.actual_spread_bps - self.breakeven_spread_bps

    @property
    def most_underpriced(self) -> Any:
        """The price table's row (a pandas Series) of the loan with the lowest
        cushion; None without a pricing or when no loan gives a spread."""
        return None if self.pricing is None else self.pricing.most_underpriced()


def can_price(ds: xr.Dataset) -> bool:
    """Whether ``price`` can read the cube: per-loan outputs and an embedded run
    config of this model version (its loans' principal, schedule and spread)."""
    return set(PER_LOAN_VARS) <= set(ds.data_vars) and cube_config(ds) is not None


def summary(ds: xr.Dataset, pricing: Any = None) -> Summary:
    """Headline figures, base and severe scenarios, segments, spreads and per-loan
    outcomes of a cube.

    The base scenario is each axis's ``central`` value, the severe one its
    ``severe`` value (else the midpoint and the maximum of the axis), both
    rounded to the nearest grid value. ``pricing``, what each loan should pay
    (``price.price(ds, [PRICE_RHO])`` where :func:`can_price`), is kept as it
    is: this module does not import ``price``, which reads cubes with
    :func:`cube_config`.
    """
    points = {"base": scenario_point(ds, "central"), "severe": scenario_point(ds, "severe")}
    scenarios, by_trigger = {}, {}
    present = [v for v in SCENARIO_VARS if v in ds.data_vars]
    for label, point in points.items():
        at = ds[present].sel(point).load()
        scenarios[label] = {name: float(at[name]) for name in present}
        if "default_rate_by_trigger" in ds.data_vars:
            rates = ds["default_rate_by_trigger"].sel(point).load()
            by_trigger[label] = {str(t): float(rates.sel(trigger=t)) for t in TRIGGERS}
    by_segment = ds["loss_by_segment"].sel(points["base"]).load()
    segments = {str(s): float(v) for s, v in zip(by_segment["segment"].values, by_segment.values)}
    config = cube_config(ds)
    loans = market = None
    if config is not None:
        loans = {label: loan_results(config, point) for label, point in points.items()}
        market = {
            label: market_cost(config, point, loans[label]) for label, point in points.items()
        }
    return Summary(
        headline=headline(ds),
        scenarios=scenarios,
        points=points,
        loss_by_segment=segments,
        breakeven_spread_bps=scenarios["base"]["breakeven_spread_bps"],
        actual_spread_bps=weighted_spread_bps(ds),
        total_principal=float(ds.attrs.get("total_principal_usd", math.nan)),
        by_trigger=by_trigger,
        loans=loans,
        market=market,
        pricing=pricing,
    )
