"""Cutting the grid into blocks of cells (pure geometry, no model).

A block is a hyper-rectangle of the grid: one index on each of the leading
axes, a run of indices on one axis (the *split axis*) and every index of the
trailing axes.  Blocks tile the grid in C order, never overlap, hold at most
``max_cells`` cells each and align with the chunks of the Zarr store, so each
block is written into its own chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """One block: its number in the plan and its slice on every axis."""

    index: int
    slices: tuple[slice, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class BlockPlan:
    """How a grid of ``shape`` is cut: the block (chunk) shape and the blocks."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunks))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def __iter__(self) -> Iterator[Block]:
        for i in range(len(self)):
            yield self.block(i)

    def block(self, index: int) -> Block:
        if not 0 <= index < len(self):
            raise IndexError(index)
        slices = []
        rest = index
        for n, c, count in reversed(list(zip(self.shape, self.chunks, self.counts))):
            rest, j = divmod(rest, count)
            slices.append(slice(j * c, min(n, (j + 1) * c)))
        return Block(index, tuple(reversed(slices)))


def plan_blocks(shape: tuple[int, ...], max_cells: int) -> BlockPlan:
    """Blocks of at most ``max_cells`` cells, as large as possible.

    The split axis is the first axis ``p`` such that the trailing axes after it
    fit in ``max_cells``; the block takes as many indices on ``p`` as fit.
    """
    if max_cells < 1:
        raise ValueError("max_cells must be >= 1")
    shape = tuple(int(n) for n in shape)
    if any(n < 1 for n in shape):
        raise ValueError(f"every axis needs at least one value, got shape {shape}")
    for p in range(len(shape)):
        trailing = math.prod(shape[p + 1 :])
        if trailing <= max_cells:
            run = min(shape[p], max_cells // trailing)
            chunks = (1,) * p + (run,) + shape[p + 1 :]
            return BlockPlan(shape, chunks)
    return BlockPlan(shape, shape)  # zero-dimensional grid: one cell


def largest_plan(shape: tuple[int, ...], fits) -> BlockPlan:
    """The plan with the largest blocks that ``fits(plan)`` accepts.

    Blocks only grow with ``max_cells``, so a cost that grows with the block
    shape is searched by bisection; blocks of one cell are always accepted.
    """
    lo, hi = 1, max(1, math.prod(shape))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(plan_blocks(shape, mid)):
            lo = mid
        else:
            hi = mid - 1
    return plan_blocks(shape, lo)


def smallest_plan(shape: tuple[int, ...], accept) -> BlockPlan:
    """The plan with the smallest blocks that ``accept(plan)`` accepts.

    ``accept`` must hold for the one-block plan and keep holding as blocks
    grow (e.g. "at most N blocks"), so it is searched by bisection.
    """
    lo, hi = 1, max(1, math.prod(shape))
    while lo < hi:
        mid = (lo + hi) // 2
        if accept(plan_blocks(shape, mid)):
            hi = mid
        else:
            lo = mid + 1
    return plan_blocks(shape, lo)


def reader_chunks(chunks: tuple[int, ...], max_cells: int) -> tuple[int, ...]:
    """The largest chunks of at most ``max_cells`` cells that tile ``chunks`` exactly.

    Each returned size divides the block's size along its axis, so every
    chunk lies inside one block (blocks written at once never share a
    chunk).  Of the divisor combinations within the limit the one with the
    most cells is taken, the earlier axes kept larger on a tie; a block
    already within ``max_cells`` keeps its chunks.
    """
    limit = max(1, max_cells)
    if math.prod(chunks) <= limit:
        return tuple(chunks)
    options = [[d for d in range(size, 0, -1) if size % d == 0] for size in chunks]
    # The most cells the axes from i on can add within a budget: the product
    # of their full sizes, for pruning.
    tail = [math.prod(chunks[i:]) for i in range(len(chunks) + 1)]
    best: list = [1, (1,) * len(chunks)]

    def search(i: int, cells: int, picked: tuple[int, ...]) -> None:
        if cells * tail[i] <= best[0]:
            return  # even the full sizes of the rest cannot beat the best
        if i == len(chunks):
            best[0], best[1] = cells, picked
            return
        for d in options[i]:
            if cells * d <= limit:
                search(i + 1, cells * d, picked + (d,))
                if best[0] == limit:
                    return

    search(0, 1, ())
    return best[1]
