"""The validated inputs of a run: frozen objects, free of any file format.

:mod:`gridstress.config` reads and validates user files into these objects;
everything downstream (the model, the engine, the cube) takes them as they
are, so the model path needs no YAML or validation library.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .params import LOAN_FIELDS, PATHS

__all__ = ["REFERENCES", "Axis", "Loan", "Points", "RunConfig", "reference_index"]

#: A scenario path (:mod:`gridstress.paths`): ``((years, index), ...)``, the
#: first at years 0.
Points = tuple[tuple[float, float], ...]

#: The reference scenarios of an axis: ``central`` (the base case the
#: summaries report) and ``severe``.
REFERENCES = ("central", "severe")


def reference_index(values, given: float | None, which: str = "central") -> int:
    """Index of an axis's ``central`` (or ``severe``) grid value: the one rule
    for a config's axes (:meth:`Axis.reference_index`) and a cube's coordinates.

    The value its config gave (``given``), else the midpoint of its range
    (the maximum for ``severe``), rounded to the nearest grid value (the
    lower on a tie).
    """
    if which not in REFERENCES:
        raise ValueError(f"which must be one of {REFERENCES}, not {which!r}")
    values = np.asarray(values, dtype=np.float64)
    target = given
    if target is None:
        target = values.max() if which == "severe" else (values.min() + values.max()) / 2
    with np.errstate(invalid="ignore"):
        gap = np.where(values == target, 0.0, np.abs(values - target))  # inf == inf
    return int(np.nanargmin(gap)) if np.isfinite(gap).any() else 0


@dataclass(frozen=True)
class Axis:
    """One grid axis: a scenario parameter and its strictly increasing values."""

    name: str
    values: tuple[float, ...]
    central: float | None = None
    severe: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)

    def reference_index(self, which: str = "central") -> int:
        """Index of the grid value that stands for the ``central`` (or ``severe``)
        scenario (:func:`reference_index`)."""
        return reference_index(self.values, getattr(self, which), which)

    def reference(self, which: str = "central") -> float:
        """The grid value that stands for the ``central`` (or ``severe``) scenario."""
        return self.values[self.reference_index(which)]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": list(self.values)}
        if self.central is not None:
            out["central"] = self.central
        if self.severe is not None:
            out["severe"] = self.severe
        return out


@dataclass(frozen=True)
class Loan:
    """One loan with every field of model v3 resolved (see params.LOAN_FIELDS)."""

    loan_id: str
    borrower: str
    segment: str
    principal: float
    rate: float
    spread: float | None
    term_years: float
    amortization: str
    balloon: float
    n_gpus: float
    gpu_age_years: float
    economic_life_years: float
    pledged_share: float
    rent: float
    utilization: float
    contracted_share: float
    contract_years: float
    contract_rent: float
    power_kw_per_gpu: float
    power_price: float
    fixed_opex_per_gpu_year: float
    mining_revenue: float
    mining_cost: float
    crypto_collateral: float
    cash_reserve: float
    cash_cap: float
    min_dscr: float
    cure_periods: int
    max_ltv: float | None
    ltv_basis: str
    gpu_cost: float | None
    book_life_years: float
    refi_advance_rate: float
    refi_term_years: float
    refi_min_dscr: float
    generation_exposure: float

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LOAN_FIELDS}


@dataclass(frozen=True)
class RunConfig:
    """A validated run: grid axes, fixed scenario values, the portfolio and outputs."""

    name: str
    periods_per_year: int
    scenario: dict[str, float | None]
    """The fixed scenario parameters (not axes), by name; None where a
    parameter is left empty (``appraisal_deflation``: the foresight appraisal)."""
    axes: tuple[Axis, ...]
    loans: tuple[Loan, ...]
    source: str = "<dict>"
    per_loan: bool = False
    """Also write the per-loan variables (``outputs: {per_loan: true}``)."""
    paths: dict[str, Points] = field(default_factory=dict)
    """The scenario paths given (``rent_path``, ``crypto_path``) as
    ``((years, index), ...)`` points (:mod:`gridstress.paths`)."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Plausibility warnings of the inputs (values accepted, but they look like
    a percentage, basis points or months)."""

    def __hash__(self) -> int:  # dict field: hash by content
        return hash(self.config_sha256 + self.portfolio_sha256)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    def reference_point(self, which: str = "central") -> dict[str, float]:
        """The grid point of the ``central`` (or ``severe``) scenario, by axis name."""
        return {a.name: a.reference(which) for a in self.axes}

    def reference_cell(self, which: str = "central") -> tuple[int, ...]:
        """Grid indices of the ``central`` (or ``severe``) scenario."""
        return tuple(a.reference_index(which) for a in self.axes)

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self, with_portfolio: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "periods_per_year": self.periods_per_year,
            "scenario": dict(self.scenario)
            | {name: [list(point) for point in points] for name, points in self.paths.items()},
            "grid": {a.name: a.as_dict() for a in self.axes},
            "outputs": {"per_loan": self.per_loan},
        }
        if with_portfolio:
            out["portfolio"] = [loan.as_dict() for loan in self.loans]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
        """The config that :meth:`to_dict` wrote (every default applied, loans
        inline), as a cube embeds it; user files go through
        :func:`gridstress.config.load_config`, which validates them."""
        grid = raw["grid"]
        given = raw["scenario"]
        return cls(
            name=str(raw["name"]),
            periods_per_year=int(raw["periods_per_year"]),
            scenario={
                k: None if v is None else float(v) for k, v in given.items() if k not in PATHS
            },
            paths={
                k: tuple((float(t), float(i)) for t, i in v) for k, v in given.items() if k in PATHS
            },
            axes=tuple(Axis(name, **spec) for name, spec in grid.items()),
            loans=tuple(Loan(**row) for row in raw["portfolio"]),
            source=source,
            per_loan=bool(raw.get("outputs", {}).get("per_loan", False)),
        )

    def to_yaml(self) -> str:
        """The resolved config (every default applied, loans inline) as YAML."""
        import yaml

        # libyaml's emitter when PyYAML has it: the same text, three times as fast.
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(self.to_dict(), Dumper=dumper, sort_keys=False)

    @cached_property
    def config_sha256(self) -> str:
        """Hash of everything but the portfolio, in canonical JSON."""
        text = json.dumps(self.to_dict(with_portfolio=False), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @cached_property
    def portfolio_sha256(self) -> str:
        """Hash of the resolved loans sorted by loan_id: loan order does not matter."""
        loans = sorted((loan.as_dict() for loan in self.loans), key=lambda d: d["loan_id"])
        text = json.dumps(loans, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()
