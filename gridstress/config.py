"""Run configs and portfolios: the only module that reads user files.

``load_config(path)`` reads the YAML run config and its portfolio (CSV,
Parquet, Excel or inline), checks every value against the rules of
:mod:`gridstress.params`, and returns a frozen
:class:`~gridstress.inputs.RunConfig`.  Every broken rule is reported at
once, each on its own line, in the form
``portfolio.csv row 7 (loan_id=IREN-2): utilization=1.3 must be in [0, 1]``,
by raising :class:`gridstress.errors.InputError`.  Values that pass the
rules but look like a percentage, basis points or months (``rate=12``) are
kept, with one line each in ``RunConfig.warnings``.

Rows of a CSV file or an Excel sheet are numbered as a spreadsheet shows
them (the header is row 1, the first loan row 2); rows of a Parquet file,
which has no header row, are counted from 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator
from pydantic.functional_validators import AfterValidator
from pydantic_core import ErrorDetails

from .errors import InputError, did_you_mean
from .files import PORTFOLIO_SUFFIXES, read_path_csv, read_portfolio_file
from .inputs import REFERENCES, Axis, Loan, RunConfig
from .params import (
    LOAN_FIELDS,
    PATHS,
    REQUIRED_AXES,
    REQUIRED_FIELDS,
    SCENARIO_PARAMS,
    Field,
    Rule,
)
from .paths import Points, check_points, path_end, read_years

__all__ = ["Axis", "Loan", "RunConfig", "load_config", "config_from_dict"]


# --------------------------------------------------------------------------
# Loan validation: a pydantic model generated from params.LOAN_FIELDS


def _rule_validator(rule: Rule):
    def check(value):
        if value is None:
            return value
        problem = rule.check(float(value))
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _annotation(field: Field):
    if field.kind == "str":
        return str | None
    if field.kind == "choice":
        return str | None
    return Annotated[float | None, _rule_validator(field.rule or Rule())]


def _strip_str(value):
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _choice_validator(choices: tuple[str, ...]):
    def check(value):
        if value is not None and value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value

    return check


_LOAN_ROW_FIELDS: dict[str, Any] = {name: (_annotation(f), None) for name, f in LOAN_FIELDS.items()}
"""The fields of ``_LoanRow``: (annotation, default) by name."""

_LoanRow = create_model(
    "LoanRow",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True),
    __validators__={
        "blank_is_missing": field_validator("*", mode="before")(_strip_str),
        **{
            f"choice_{name}": field_validator(name, mode="after")(_choice_validator(f.choices))
            for name, f in LOAN_FIELDS.items()
            if f.kind == "choice"
        },
    },
    **_LOAN_ROW_FIELDS,
)


_PYDANTIC_RULES = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be text",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}


def _describe(err: ErrorDetails) -> str:
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    return _PYDANTIC_RULES.get(err["type"], err["msg"])


def _show(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def _validate_fields(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any, str]]]:
    """Validate one mapping of loan fields; return (clean values, problems)."""
    try:
        row = _LoanRow(**raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            problems.append((name, raw.get(name, err.get("input")), _describe(err)))
        return {}, problems
    return row.model_dump(), []


def _resolve_loan(values: dict[str, Any], defaults: dict[str, Any]) -> tuple[Loan | None, list]:
    """Apply config defaults then documented defaults, and the cross-field rules."""
    merged: dict[str, Any] = {}
    for name, field in LOAN_FIELDS.items():
        value = values.get(name)
        if value is None:
            value = defaults.get(name)
        if value is None and not field.optional:
            value = field.default
        merged[name] = value
    problems = [(name, None, "is required") for name in REQUIRED_FIELDS if merged[name] is None]
    if problems:
        return None, problems
    # Defaults that are other fields of the same loan.
    for name, source in (
        ("borrower", "loan_id"),
        ("contract_rent", "rent"),
        ("cash_cap", "cash_reserve"),
        ("book_life_years", "economic_life_years"),
    ):
        if merged[name] is None:
            merged[name] = merged[source]
    if merged["amortization"] == "bullet" and merged["balloon"]:
        problems.append(
            (
                "balloon",
                merged["balloon"],
                "must be 0 or empty for a bullet loan (all of it is balloon)",
            )
        )
    if merged["cash_cap"] < merged["cash_reserve"]:
        problems.append(
            (
                "cash_cap",
                merged["cash_cap"],
                f"must be >= cash_reserve ({_show(merged['cash_reserve'])}): the "
                "reserve is kept, only cash above the cap is paid out",
            )
        )
    if merged["ltv_basis"] == "book" and merged["gpu_cost"] is None:
        problems.append(
            (
                "gpu_cost",
                None,
                "is required when ltv_basis is book (the book "
                "value is gpu_cost depreciated over book_life_years)",
            )
        )
    if problems:
        return None, problems
    merged["cure_periods"] = int(merged["cure_periods"])
    return Loan(**merged), []


def _plausibility(loan: Loan) -> list[tuple[str, Any, str]]:
    """The fields of a loan whose values pass the rules but look like a unit mistake."""
    out = []
    for name, field in LOAN_FIELDS.items():
        value = getattr(loan, name)
        if field.plausible is not None and value is not None and value > field.plausible.hi:
            out.append((name, value, field.plausible.hint))
    return out


def _unknown_column(name: str) -> str:
    """An unknown column's name with a hint at the loan field it may be."""
    lower = name.strip().lower()
    if lower in LOAN_FIELDS:
        return f"{name} (names are case-sensitive: {lower})"
    return name + did_you_mean(name, LOAN_FIELDS, cutoff=0.75)


def _check_columns(columns: list[str], where: str, defaults: dict[str, Any], inline: bool) -> None:
    """The columns of a portfolio file: all loan fields, the required ones present."""
    if any(";" in c for c in columns):
        raise InputError(
            f"{where}: the header {';'.join(columns)[:60]!r} holds semicolons: "
            "gridstress reads comma-separated CSV; save the file with commas "
            "(or as .xlsx)"
        )
    unknown = [c for c in columns if c not in LOAN_FIELDS]
    if unknown:
        raise InputError(
            f"{where}: unknown column(s) "
            + ", ".join(_unknown_column(c) for c in unknown)
            + "; loan fields are: "
            + ", ".join(LOAN_FIELDS)
        )
    if inline:
        return
    missing = [c for c in REQUIRED_FIELDS if c not in columns and defaults.get(c) is None]
    if missing:
        raise InputError(
            [
                f"{where}: column {name} is missing; it is required"
                + ("" if name == "loan_id" else " (or a value under defaults:)")
                for name in missing
            ]
        )


def _build_loans(
    rows: list[dict[str, Any]],
    columns: list[str],
    where: str,
    labels: list[str],
    defaults: dict,
    inline: bool = False,
) -> tuple[tuple[Loan, ...], list[str]]:
    """The loans of a portfolio and its plausibility warnings."""
    problems: list[str] = []
    warnings: list[str] = []
    _check_columns(columns, where, defaults, inline)
    if not rows:
        raise InputError(f"{where}: the portfolio is empty (at least one loan is required)")
    loans: list[Loan] = []
    seen: dict[str, str] = {}
    for raw, row_label in zip(rows, labels):
        values, field_problems = _validate_fields(raw)
        loan = None
        if not field_problems:
            loan, field_problems = _resolve_loan(values, defaults)
        loan_id = _strip_str(raw.get("loan_id"))
        label = f"{where} {row_label}" + (f" (loan_id={loan_id})" if loan_id else "")
        for name, value, rule in field_problems:
            problems.append(f"{label}: {name}={_show(value)} {rule}")
        if loan is None:
            continue
        for name, value, hint in _plausibility(loan):
            warnings.append(f"{label}: {name}={_show(value)} {hint}")
        if loan.loan_id in seen:
            problems.append(
                f"{label}: loan_id={loan.loan_id} must be unique "
                f"(already used in {seen[loan.loan_id]})"
            )
            continue
        seen[loan.loan_id] = row_label
        loans.append(loan)
    if problems:
        raise InputError(problems)
    return tuple(loans), warnings


# --------------------------------------------------------------------------
# Run config


class _AxisSpec(BaseModel):
    # .inf is a value of some axes (a deep market); Rule.check refuses it elsewhere.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True, strict=False)
    start: float | None = None
    stop: float | None = None
    num: int | None = None
    values: list[float] | None = None
    central: float | None = None
    severe: float | None = None


class _PortfolioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    sheet: str | None = None


class _Outputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_loan: bool = False


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = None
    periods_per_year: int = 4
    scenario: dict[str, Any] = {}
    grid: dict[str, _AxisSpec]
    defaults: dict[str, Any] = {}
    portfolio: str | _PortfolioFile | list[dict[str, Any]]
    outputs: _Outputs = _Outputs()


def _config_problems(exc: ValidationError, raw: dict, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value: Any = raw
        for part in err["loc"]:
            value = value.get(part) if isinstance(value, dict) else None
        rule = _describe(err)
        if err["type"] == "extra_forbidden":
            rule = "is not a known key"
        elif err["type"] in ("int_parsing", "int_from_float", "int_type"):
            rule = "must be a whole number"
        elif err["type"] in ("dict_type", "model_type"):
            rule = "must be a mapping"
        elif err["type"] == "list_type":
            rule = "must be a list"
        if err["type"] == "missing":
            out.append(f"{where}: {key} is required")
        else:
            out.append(f"{where}: {key}={_show(value)} {rule}")
    return out


def _axis_from_spec(name: str, spec: _AxisSpec, where: str) -> tuple[Axis | None, list[str]]:
    key = f"grid.{name}"
    linspace = [spec.start, spec.stop, spec.num]
    if spec.values is not None and any(v is not None for v in linspace):
        return None, [f"{where}: {key} must give either values or start, stop and num, not both"]
    if spec.values is not None:
        values = list(spec.values)
        if not values:
            return None, [f"{where}: {key}.values=[] must hold at least one value"]
    elif spec.start is not None and spec.stop is not None and spec.num is not None:
        if not (math.isfinite(spec.start) and math.isfinite(spec.stop)):
            return None, [
                f"{where}: {key}.start and stop must be finite numbers "
                "(give values: [...] for an axis that holds .inf)"
            ]
        if spec.num < 1:
            return None, [f"{where}: {key}.num={spec.num} must be >= 1"]
        if spec.num > 1 and not spec.stop > spec.start:
            return None, [
                f"{where}: {key}.stop={spec.stop} must be greater than start={spec.start}"
            ]
        # Rounded to 12 decimals so grid points print and select as written
        # (linspace gives 0.35000000000000003 for 0.35).
        values = [round(v, 12) for v in np.linspace(spec.start, spec.stop, spec.num).tolist()]
    else:
        missing = [k for k, v in zip(("start", "stop", "num"), linspace) if v is None]
        return None, [
            f"{where}: {key} needs values, or start, stop and num ({', '.join(missing)} missing)"
        ]
    problems = []
    if any(b <= a for a, b in zip(values, values[1:])):
        problems.append(f"{where}: {key}.values={values} must be strictly increasing")
    rule = SCENARIO_PARAMS[name].rule
    for v in values:
        broken = rule.check(v)
        if broken:
            problems.append(f"{where}: {key} value {_show(v)} {broken}")
            break
    for label in REFERENCES:
        v = getattr(spec, label)
        if v is not None and (broken := rule.check(v)):
            problems.append(f"{where}: {key}.{label}={_show(v)} {broken}")
    if problems:
        return None, problems
    return Axis(name, tuple(float(v) for v in values), spec.central, spec.severe), []


def config_from_dict(raw: Any, where: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a parsed config mapping; ``where`` names it in messages."""
    if not isinstance(raw, dict):
        kind = type(raw).__name__ if raw is not None else "empty"
        raise InputError(f"{where}: the config must be a YAML mapping, not {kind}")
    try:
        spec = _ConfigFile(**raw)
    except ValidationError as exc:
        raise InputError(_config_problems(exc, raw, where)) from None
    problems: list[str] = []
    if spec.periods_per_year < 1:
        problems.append(f"{where}: periods_per_year={spec.periods_per_year} must be >= 1")

    axes: list[Axis] = []
    for name, axis_spec in spec.grid.items():
        if name in PATHS:
            continue  # refused below, with what a path is
        if name not in SCENARIO_PARAMS:
            problems.append(
                f"{where}: grid.{name} is not a known axis; axes are scenario parameters: "
                + ", ".join(SCENARIO_PARAMS)
            )
            continue
        axis, axis_problems = _axis_from_spec(name, axis_spec, where)
        problems += axis_problems
        if axis is not None:
            axes.append(axis)
    for name in REQUIRED_AXES:
        if name not in spec.grid:
            problems.append(f"{where}: grid.{name} is required (the three named axes are)")

    scenario: dict[str, float | None] = {}
    paths: dict[str, Points] = {}
    for name in PATHS:
        if name in spec.grid:
            problems.append(
                f"{where}: grid.{name} is not an axis: a path is the same in every cell; "
                f"give it under scenario: ({name}: [[0, 1], [1, 0.6], ...] or a CSV file)"
            )
    for name, value in spec.scenario.items():
        if name in PATHS:
            points, broken = _path_points(name, value, where, base_dir)
            if broken:
                problems.append(broken)
            elif points is not None:
                paths[name] = points
            continue
        param = SCENARIO_PARAMS.get(name)
        if param is None or not param.fixed:
            allowed = ", ".join([*(n for n, p in SCENARIO_PARAMS.items() if p.fixed), *PATHS])
            problems.append(
                f"{where}: scenario.{name} is not a fixed scenario parameter (those are: {allowed})"
            )
            continue
        if name in spec.grid:
            problems.append(f"{where}: scenario.{name} is also a grid axis; give it in one place")
            continue
        if value is None and param.empty is not None:
            scenario[name] = None
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{where}: scenario.{name}={_show(value)} must be a number")
            continue
        if broken := param.rule.check(number):
            problems.append(f"{where}: scenario.{name}={_show(value)} {broken}")
            continue
        scenario[name] = number
    for name, param in SCENARIO_PARAMS.items():
        if param.fixed and name not in spec.grid:
            scenario.setdefault(name, param.default)

    defaults: dict[str, Any] = {}
    for name, value in spec.defaults.items():
        if name not in LOAN_FIELDS or name == "loan_id":
            problems.append(f"{where}: defaults.{name} is not a loan field that takes a default")
            continue
        clean, field_problems = _validate_fields({name: value})
        for fname, fvalue, rule in field_problems:
            problems.append(f"{where}: defaults.{fname}={_show(fvalue)} {rule}")
        if not field_problems:
            defaults[name] = clean[name]
    if problems:
        raise InputError(problems)

    if isinstance(spec.portfolio, str | _PortfolioFile):
        source = (
            spec.portfolio
            if isinstance(spec.portfolio, _PortfolioFile)
            else _PortfolioFile(path=spec.portfolio)
        )
        path = Path(source.path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        columns, rows, labels = read_portfolio_file(path, source.sheet)
        name = path.name + (f" sheet {source.sheet}" if source.sheet else "")
        loans, warnings = _build_loans(rows, columns, name, labels, defaults)
    else:
        columns = sorted({k for row in spec.portfolio for k in row})
        loans, warnings = _build_loans(
            spec.portfolio,
            columns,
            f"{where} portfolio",
            [f"loan {i}" for i in range(1, len(spec.portfolio) + 1)],
            defaults,
            inline=True,
        )

    return RunConfig(
        name=spec.name or Path(where).stem,
        periods_per_year=spec.periods_per_year,
        scenario=scenario,
        axes=tuple(axes),
        loans=loans,
        source=where,
        per_loan=spec.outputs.per_loan,
        paths=paths,
        warnings=tuple(
            _off_grid(axes, where)
            + _short_paths(paths, loans, spec.periods_per_year, where)
            + warnings
        ),
    )


def _path_points(
    name: str, value: Any, where: str, base_dir: Path | None
) -> tuple[Points | None, str | None]:
    """A path from its config value: inline ``[[years, index], ...]`` points or
    a CSV file (``years,index`` or ``date,index``); or the broken rule."""
    key = f"{where}: scenario.{name}"
    if value is None:
        return None, None
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return read_path_csv(path, f"{key}={value}")
    if not isinstance(value, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        return None, (
            f"{key}={_show(value)} must be a list of [years, index] points or a CSV file "
            "(columns years,index or date,index)"
        )
    try:
        points = tuple((float(t), float(i)) for t, i in value)
    except (TypeError, ValueError):
        return None, f"{key}={_show(value)}: every point must be two numbers [years, index]"
    if broken := check_points(points):
        return None, f"{key}: {broken}"
    return points, None


def _short_paths(
    paths: dict[str, Points], loans: tuple[Loan, ...], periods_per_year: int, where: str
) -> list[str]:
    """A warning for each path that ends before the last period the model reads
    (it is held flat after its last point)."""
    out = []
    for name, points in paths.items():
        reads = max(read_years(loan, periods_per_year, name) for loan in loans)
        if path_end(points) < reads:
            out.append(
                f"{where}: scenario.{name} ends at {path_end(points):g} years, before the "
                f"{reads:g} years the model reads; it is held flat after its last point"
            )
    return out


def _off_grid(axes: list[Axis], where: str) -> list[str]:
    """A warning for each central or severe value given between grid values:
    the summaries report the nearest grid value in its place."""
    lines = []
    for axis in axes:
        for which in REFERENCES:
            given = getattr(axis, which)
            if given is None or given in axis.values:
                continue
            nearest = axis.reference(which)
            lines.append(
                f"{where}: grid.{axis.name}.{which}={_show(given)} is not a grid value; "
                f"the nearest, {_show(nearest)}, stands for it"
            )
    return lines


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config and its portfolio.

    Raises :class:`gridstress.errors.InputError` naming every broken rule.
    """
    path = Path(path)
    if path.suffix.lower() in PORTFOLIO_SUFFIXES:
        raise InputError(
            f"{path}: looks like a portfolio, not a run config: a run config is "
            "a YAML file that names it under portfolio: (configs/seed.yaml)"
        )
    if path.is_dir():
        raise InputError(f"{path}: is a folder; a run config is a YAML file (configs/seed.yaml)")
    raw = _read_yaml(path, "config")
    return config_from_dict(raw, where=path.name, base_dir=path.parent)


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{path.name}: not valid YAML ({exc})") from None


def load_marginals(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a YAML file of scenario marginals: ``{axis: {dist: NAME, **params}}``.

    Only the shape is checked here; :func:`gridstress.analysis.risk.marginals`
    checks the axes and builds the distributions.
    """
    path = Path(path)
    raw = _read_yaml(path, "marginals")
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise InputError(
            f"{path.name}: must map each axis to {{dist: NAME, ...}}, e.g. "
            "deflation: {dist: norm, loc: 0.3, scale: 0.15}"
        )
    return {str(k): dict(v) for k, v in raw.items()}
