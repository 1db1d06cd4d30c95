"""Defaults and shown tables of the analysis commands, in one place (no heavy
imports: the CLI reads them to build its options and tables)."""

from __future__ import annotations

import math
from typing import Any

#: The frontier's variable and threshold: the smallest deflation at which the
#: book loses more than 1% of its principal.
FRONTIER_VAR = "loss_rate"
FRONTIER_THRESHOLD = 0.01

#: The columns of the price table as `price` and the report show it:
#: (header, column of :func:`gridstress.analysis.price.price`, format).
PRICE_TABLE = (
    ("loan", "loan_id", "text"),
    ("segment", "segment", "text"),
    ("principal $M", "principal", "usd"),
    ("WAL y", "wal_years", "years"),
    ("PD", "pd", "pct"),
    ("LGD", "lgd", "pct"),
    ("EL $M", "el", "usd"),
    ("EL bp", "el_bps", "bp"),
    ("ES share $M", "es_contribution", "usd"),
    ("capital $M", "ec", "usd"),
    ("capital bp", "capital_bps", "bp"),
    ("required bp", "required_bps", "bp"),
    ("actual bp", "actual_bps", "bp"),
    ("cushion bp", "cushion_bps", "signed_bp"),
    ("standalone ES $M", "standalone_es", "usd"),
)


def price_cell(value: Any, kind: str) -> str:
    """A value of the price table in readable units ($M, %, bp); ``n/a`` for NaN."""
    if kind == "text":
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "usd":
        return f"{value / 1e6:,.1f}"
    if kind == "years":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "signed_bp":
        return f"{value:+,.1f}"
    return f"{value:,.1f}"
