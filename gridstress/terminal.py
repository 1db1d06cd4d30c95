"""Where the command line's output goes: pipes, consoles, tables, CSV and Excel files.

- **Pipes.**  :func:`guard_pipes` puts stdout and stderr behind writers that
  keep going when the reader of a pipe goes away (``gridstress run ... | head
  -1``): the rest of the output is dropped, the run finishes and writes its
  cube, and the exit status is the run's.
- **Width.**  On a terminal tables fit the window; elsewhere (a file, a pipe)
  they keep their full width and no cell is wrapped or cut.
- **Files.**  :func:`check_output` refuses, before anything is computed, an
  output path whose folder does not exist or whose suffix is not one the
  command writes; :func:`write_csv` and :func:`write_xlsx` write tables.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

#: Console width off a terminal: wide enough that no table is wrapped.
WIDE = 100_000


class PipeSafe:
    """A text stream that stops writing, silently, once its pipe is closed."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._break(exc)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except OSError as exc:
                self._break(exc)

    def _break(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.EINVAL):
            raise exc
        self.broken = True
        # What is still buffered would fail again when Python flushes at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_pipes() -> None:
    """Put sys.stdout and sys.stderr behind :class:`PipeSafe` writers (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafe):
            setattr(sys, name, PipeSafe(stream))


def console(stderr: bool = False):
    """A rich console on stdout or stderr: the window's width on a terminal,
    :data:`WIDE` elsewhere; no highlighting, no markup, long lines not wrapped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=True,
        markup=False,
        width=None if terminal else WIDE,
        force_terminal=None,
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1):
    """A rich table: the first ``left`` columns left-aligned, the others right-aligned."""
    from rich.table import Table

    out = Table()
    for i, name in enumerate(columns):
        out.add_column(name, justify="left" if i < left else "right")
    for row in rows:
        out.add_row(*row)
    return out


def check_output(path: Path | None, suffixes: tuple[str, ...], option: str) -> None:
    """Refuse an output path before anything is computed: its folder must exist,
    it must not be a folder, and it must end in one of ``suffixes``."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        want = ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]
        raise InputError(f"{option} {path}: must end in {want}")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) as a CSV file with a header."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def write_xlsx(path: Path, sheets: Mapping[str, Sequence[dict[str, Any]]]) -> None:
    """One worksheet per table (rows as dicts), header in bold, written atomically."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title[:31])  # Excel's limit on sheet names
        header = list(rows[0]) if rows else []
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append([row[k] for k in header])
        for i, name in enumerate(header, start=1):
            width = max([len(str(name))] + [len(str(r[name])) for r in rows[:200]])
            sheet.column_dimensions[sheet.cell(1, i).column_letter].width = min(60, width + 2)
    tmp = path.with_name(path.name + ".partial")
    book.save(tmp)
    tmp.replace(path)


__all__ = ["PipeSafe", "check_output", "console", "guard_pipes", "table", "write_csv", "write_xlsx"]
