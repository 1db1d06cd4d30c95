"""The file formats :mod:`gridstress.config` reads: portfolio tables (CSV,
Parquet, Excel) and scenario paths (CSV).

Each reader returns what the file holds, with each row labelled as an
editor or a spreadsheet numbers it (the header is row 1), and refuses a
file it cannot read with an :class:`~gridstress.errors.InputError` naming
the file and row; :mod:`gridstress.config` validates what they return.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .errors import InputError
from .params import LOAN_FIELDS
from .paths import DAYS_PER_YEAR, Points, check_points

Table = tuple[list[str], list[dict[str, Any]], list[str]]
"""A portfolio file as read: its columns, one dict a loan, and each loan's row label."""


def _read_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows: list[dict[str, Any]] = []
        labels: list[str] = []
        for raw in reader:
            # The file's line, as an editor or a spreadsheet numbers it (the header is 1).
            label = f"row {reader.line_num}"
            if None in raw:  # more cells than header columns
                raise InputError(f"{path.name} {label}: has more cells than the header has columns")
            if not any((v or "").strip() for v in raw.values()):
                continue  # a blank line is not a loan
            rows.append({k.strip(): v for k, v in raw.items()})
            labels.append(label)
    return columns, rows, labels


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    rows = table.to_pylist()
    return list(table.column_names), rows, [f"row {i}" for i in range(1, len(rows) + 1)]


def _excel_value(name: str, value: Any) -> Any:
    """An Excel cell as the loan field reads it: text fields take numbers as text
    (a loan_id of 1001), empty text is no value."""
    field = LOAN_FIELDS.get(name)
    if isinstance(value, str):
        return value.strip() or None
    if field is not None and field.kind in ("str", "choice") and isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _read_xlsx(path: Path, sheet: str | None) -> Table:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several types for a file it cannot read
        raise InputError(f"{path.name}: not a readable Excel workbook ({exc})") from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise InputError(
                f"{path.name}: no sheet named {sheet!r}; sheets are: " + ", ".join(book.sheetnames)
            )
        lines = ws.iter_rows(values_only=True)
        header = next(lines, ())
        columns = [str(c).strip() for c in header if c is not None and str(c).strip()]
        width = len(header)
        rows, labels = [], []
        for number, cells in enumerate(lines, start=2):  # Excel numbers the header row 1
            cells = tuple(cells) + (None,) * (width - len(cells))
            if any(v is not None and str(v).strip() for v in cells[width:]):
                raise InputError(
                    f"{path.name} row {number}: has cells right of the header's last column"
                )
            raw = {
                str(h).strip(): _excel_value(str(h).strip(), v)
                for h, v in zip(header, cells)
                if h is not None and str(h).strip()
            }
            if all(v is None for v in raw.values()):
                continue  # a blank row is not a loan
            rows.append(raw)
            labels.append(f"row {number}")
    finally:
        book.close()
    return columns, rows, labels


#: Portfolio files by suffix.
PORTFOLIO_SUFFIXES = (".csv", ".parquet", ".pq", ".xlsx")


def read_portfolio_file(path: Path, sheet: str | None = None) -> Table:
    if not path.is_file():
        raise InputError(f"{path}: portfolio file not found")
    suffix = path.suffix.lower()
    if sheet is not None and suffix != ".xlsx":
        raise InputError(f"{path.name}: sheet={sheet} is only for an Excel (.xlsx) portfolio")
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    if suffix == ".xlsx":
        return _read_xlsx(path, sheet)
    raise InputError(f"{path.name}: portfolio must be a .csv, .parquet or .xlsx file")


def read_path_csv(path: Path, key: str) -> tuple[Points | None, str | None]:
    """A path from a CSV file whose columns are ``years,index`` or ``date,index``
    (ISO dates; years = days since the first date / 365.25)."""
    import datetime as dt

    if not path.is_file():
        return None, f"{key}: file {path} not found"
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [({k.strip(): v for k, v in row.items() if k}, reader.line_num) for row in reader]
    time_column = next((c for c in ("years", "date") if c in columns), None)
    if time_column is None or "index" not in columns:
        return None, (
            f"{key}: {path.name} has columns {','.join(columns)}; a path needs "
            "years,index or date,index"
        )
    times: list[float] = []
    values: list[float] = []
    first: dt.date | None = None
    for row, line in rows:
        cell, index = (row.get(time_column) or "").strip(), (row.get("index") or "").strip()
        if not cell and not index:
            continue
        try:
            values.append(float(index))
        except ValueError:
            return None, f"{key}: {path.name} row {line}: index={index!r} must be a number"
        if time_column == "years":
            try:
                times.append(float(cell))
            except ValueError:
                return None, f"{key}: {path.name} row {line}: years={cell!r} must be a number"
            continue
        try:
            day = dt.date.fromisoformat(cell)
        except ValueError:
            return None, (
                f"{key}: {path.name} row {line}: date={cell!r} is not a date (YYYY-MM-DD)"
            )
        first = first or day
        times.append((day - first).days / DAYS_PER_YEAR)
    points = tuple(zip(times, values))
    if broken := check_points(points):
        return None, f"{key} ({path.name}): {broken}"
    return points, None


__all__ = ["PORTFOLIO_SUFFIXES", "Table", "read_path_csv", "read_portfolio_file"]
