"""What the commands print: the consoles, tables, figures in words and the progress bar."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..terminal import console, table, write_csv


class Console:
    """stdout or stderr as a rich console, made when first used and made anew
    by :meth:`reset`.

    :func:`gridstress.cli.main` resets both once it has put the streams
    behind their pipe guards; the command modules, imported after that or
    by an earlier call of ``main``, hold this object rather than the console
    it stands for, so they always print to the current one.
    """

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    def reset(self) -> None:
        self._console = console(stderr=self._stderr)

    @property
    def rich(self) -> Any:
        """The rich console itself (for what needs one, such as a progress bar)."""
        if self._console is None:
            self.reset()
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)


out = Console()
err = Console(stderr=True)


def warn(cfg) -> None:
    """The config's plausibility warnings, one line each (the run goes on)."""
    for line in cfg.warnings:
        err.print(f"warning: {line}")


def show(title: str | None, columns: list[str], rows: list[list[str]], left: int = 1) -> None:
    """A title line, then a table."""
    if title:
        out.print(title)
    out.print(table(columns, rows, left))


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows as a CSV file, and a line that says where."""
    write_csv(path, rows)
    out.print(f"rows written to {path}")


def frame_rows(frame, blank_nan: bool = False) -> list[dict[str, Any]]:
    """The rows of a pandas DataFrame as dicts; NaN as None (an empty cell) with
    ``blank_nan``, else as it is (a CSV file writes ``nan``)."""
    rows = frame.to_dict(orient="records")
    if blank_nan:
        rows = [
            {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}
            for row in rows
        ]
    return rows


def pct(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2%}"


def usd_m(value) -> str:
    return "" if value is None else f"{value / 1e6:,.1f}"


def cell(point: Mapping[str, float | None]) -> str:
    """A scenario point as ``name=value`` pairs; an empty parameter as ``empty``."""
    return ", ".join(f"{k}={'empty' if v is None else format(v, 'g')}" for k, v in point.items())


def describe_paths(paths: dict) -> str:
    """The scenario paths of a run in one line, e.g. ``rent_path: 8 points over
    3.33 years (index 4.7 to 2.42); crypto_path: none``."""
    from ..params import PATHS

    parts = []
    for name in PATHS:
        points = paths.get(name)
        if not points:
            parts.append(f"{name}: none")
            continue
        parts.append(
            f"{name}: {len(points)} points over {points[-1][0]:.3g} years "
            f"(index {points[0][1]:g} to {points[-1][1]:g})"
        )
    return "; ".join(parts)


def progress_bar(total_cells: int, label: str, log_every_s: float = 10.0, total_blocks: int = 0):
    """Progress over blocks and cells: a rich bar on a terminal, else a log line every 10 s.

    ``advance(block)`` counts a computed block; ``advance(block, skipped=True)``
    one kept from an interrupted run, which does not count towards the rate.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class CellRate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} cells/s" if task.speed else "")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells, {task.fields[blocks]}/" + f"{total_blocks} blocks"),
        CellRate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err.rich,
        disable=not err.is_terminal,
        transient=False,
    )
    task = progress.add_task(label, total=total_cells, blocks=0)
    started = last = time.monotonic()
    done = blocks = 0
    kept = {"cells": 0}  # cells of blocks kept from an interrupted run

    def advance(block, skipped: bool = False) -> None:
        nonlocal last, done, blocks, started
        done += block.size
        blocks += 1
        if skipped:
            kept["cells"] += block.size
            started = time.monotonic()
            progress.reset(task, total=total_cells, completed=done, blocks=blocks)
            return
        progress.update(task, advance=block.size, blocks=blocks)
        now = time.monotonic()
        if not err.is_terminal and now - last >= log_every_s and done < total_cells:
            last = now
            rate = (done - kept["cells"]) / (now - started)
            err.print(
                f"{label}: {done:,} of {total_cells:,} cells ({done / total_cells:.0%}), "
                f"{blocks} of {total_blocks} blocks, {rate:,.0f} cells/s, "
                f"about {(total_cells - done) / rate:.0f} s left"
            )

    return progress, advance, kept
