"""The headline of a run, computed from its blocks as they finish.

A run prints its headline (worst cell, share of cells with a default, the
central scenario's loss) without reading the cube back: each block gives a
small :class:`BlockHeadline` (in this process or as a Dask task's receipt)
and :func:`combine` adds them up.  :func:`gridstress.analysis.headline.headline`
computes the same :class:`Headline` from a finished cube.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .grid import Block
    from .inputs import RunConfig


@dataclass(frozen=True)
class Headline:
    worst_loss_rate: float
    worst_cell: dict[str, float]
    default_share: float
    central: dict[str, float]
    central_loss: float
    central_loss_rate: float
    n_cells: int
    worst_cells: int = 1
    """Cells whose loss rate equals the worst; ``worst_cell`` is the first in C order."""

    def lines(self) -> list[str]:
        def where(point):
            return ", ".join(f"{k}={v:.4g}" for k, v in point.items())

        tied = (
            f" (the first of {self.worst_cells:,} cells at this rate)"
            if self.worst_cells > 1
            else ""
        )
        return [
            f"worst loss rate: {self.worst_loss_rate:.2%} at {where(self.worst_cell)}{tied}",
            f"cells with any default: {self.default_share:.1%} of {self.n_cells:,}",
            f"central scenario ({where(self.central)}): loss "
            f"${self.central_loss / 1e6:,.1f}M ({self.central_loss_rate:.2%} of principal)",
        ]


#: The variables a block's headline reads.
HEADLINE_VARIABLES = ("loss", "loss_rate", "defaults")


@dataclass(frozen=True)
class BlockHeadline:
    """One block's part of the headline: small, so a Dask task returns it."""

    worst_loss_rate: float
    worst_flat: int
    """Flat (C order) grid index of the worst cell; -1 when no cell is finite."""
    worst_cells: int
    """Cells of the block at its worst loss rate."""
    with_default: int
    central: tuple[float, float] | None
    """(loss, loss_rate) of the central cell when the block holds it."""


def block_headline(config: RunConfig, block: Block, results: dict[str, Any]) -> BlockHeadline:
    """A block's worst loss rate, its cells with a default and the central cell.

    Of tied worst cells the first in C order counts, as in
    :func:`gridstress.analysis.headline.headline`.
    """
    loss_rate = np.asarray(results["loss_rate"])
    starts = [s.start for s in block.slices]
    worst, worst_flat, ties = -np.inf, -1, 0
    if np.isfinite(loss_rate).any():
        local = np.unravel_index(int(np.nanargmax(loss_rate)), loss_rate.shape)
        worst = float(loss_rate[local])
        ties = int((loss_rate == worst).sum())
        worst_flat = int(
            np.ravel_multi_index(tuple(i + s for i, s in zip(local, starts)), config.shape)
        )
    central = None
    at = config.reference_cell("central")
    if all(s.start <= i < s.stop for s, i in zip(block.slices, at)):
        local = tuple(i - s for i, s in zip(at, starts))
        central = (float(np.asarray(results["loss"])[local]), float(loss_rate[local]))
    with_default = int((np.asarray(results["defaults"]) > 0).sum())
    return BlockHeadline(worst, worst_flat, ties, with_default, central)


def combine(config: RunConfig, parts: Iterable[BlockHeadline]) -> Headline:
    """The headline of a grid from the headlines of its blocks."""
    worst, worst_flat, with_default, central = -np.inf, -1, 0, (np.nan, np.nan)
    ties = 0
    for part in parts:
        if part.worst_flat < 0:
            pass
        elif part.worst_loss_rate > worst:
            worst, worst_flat, ties = part.worst_loss_rate, part.worst_flat, part.worst_cells
        elif part.worst_loss_rate == worst:
            worst_flat, ties = min(worst_flat, part.worst_flat), ties + part.worst_cells
        with_default += part.with_default
        if part.central is not None:
            central = part.central
    cell = (
        {
            a.name: float(a.values[i])
            for a, i in zip(config.axes, np.unravel_index(worst_flat, config.shape))
        }
        if worst_flat >= 0
        else {}
    )
    return Headline(
        worst_loss_rate=worst if worst_flat >= 0 else float("nan"),
        worst_cell=cell,
        default_share=with_default / config.n_cells,
        central=config.reference_point("central"),
        central_loss=central[0],
        central_loss_rate=central[1],
        n_cells=config.n_cells,
        worst_cells=max(ties, 1),
    )


__all__ = ["HEADLINE_VARIABLES", "BlockHeadline", "Headline", "block_headline", "combine"]
