"""Block plans: geometry properties (hypothesis)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridstress.grid import plan_blocks, reader_chunks

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, max_cells=st.integers(1, 500))
def test_blocks_tile_the_grid_once(shape, max_cells):
    plan = plan_blocks(shape, max_cells)
    cover = np.zeros(shape, dtype=int)
    for block in plan:
        assert 1 <= block.size <= max_cells
        cover[block.slices] += 1
    assert np.all(cover == 1)
    assert sum(b.size for b in plan) == math.prod(shape)


@given(shape=shapes, max_cells=st.integers(1, 500))
def test_blocks_are_chunk_aligned_and_as_large_as_allowed(shape, max_cells):
    plan = plan_blocks(shape, max_cells)
    for block in plan:
        for s, c in zip(block.slices, plan.chunks):
            assert s.start % c == 0
    # blocks are (1, ..., 1, run, full trailing axes) and one more index on the
    # split axis (the last one not taken whole) would exceed max_cells
    chunk_cells = math.prod(plan.chunks)
    partial = [i for i, (c, n) in enumerate(zip(plan.chunks, shape)) if c != n]
    if partial:
        split = partial[-1]
        assert all(plan.chunks[i] == 1 for i in range(split))
        run = plan.chunks[split]
        assert chunk_cells // run * (run + 1) > max_cells
    else:
        assert chunk_cells <= max_cells


def test_block_index_round_trip():
    plan = plan_blocks((5, 4, 3), 7)
    assert plan.chunks == (1, 2, 3)
    assert len(plan) == 5 * 2
    assert plan.block(3).slices == (slice(1, 2), slice(2, 4), slice(0, 3))
    with pytest.raises(IndexError):
        plan.block(len(plan))


def test_bad_plans_are_refused():
    with pytest.raises(ValueError):
        plan_blocks((3, 3), 0)
    with pytest.raises(ValueError):
        plan_blocks((3, 0), 5)


@given(
    chunks=st.lists(st.integers(1, 120), min_size=1, max_size=4).map(tuple),
    max_cells=st.integers(1, 100_000),
)
def test_reader_chunks_tile_each_block_within_the_cell_limit(chunks, max_cells):
    got = reader_chunks(chunks, max_cells)
    # Each size divides the block's: every chunk lies inside one block.
    assert all(c % r == 0 for c, r in zip(chunks, got))
    assert math.prod(got) <= max_cells
    if math.prod(chunks) <= max_cells:
        assert got == chunks
    else:  # no tiling within the limit has more cells
        divisors = [[d for d in range(1, c + 1) if c % d == 0] for c in chunks]
        most = max(
            (math.prod(combo) for combo in itertools.product(*divisors)),
            key=lambda cells: cells if cells <= max_cells else 0,
        )
        assert math.prod(got) == most


def test_reader_chunks_of_gpu_blocks():
    # seed-dense in one GPU block: 401, 181 and 37 are prime, so one chunk
    # per haircut, 72,581 cells (581 KB).
    assert reader_chunks((401, 181, 37), 2**20) == (401, 181, 1)
    assert reader_chunks((5, 7, 3), 16) == (5, 1, 3)
    # A 2^24-cell block of 4096 x 4096: 16 chunks of 2^20 cells, the first
    # axis whole.
    assert reader_chunks((4096, 4096, 1), 2**20) == (4096, 256, 1)
    assert reader_chunks((100, 50, 3), 2**20) == (100, 50, 3)  # small blocks keep theirs
