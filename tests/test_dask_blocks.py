"""The cube does not depend on how the grid is cut into blocks (tasks)."""

from __future__ import annotations

import numpy as np
from conftest import make_config, random_loans

from gridstress import run_grid
from gridstress.variables import variables


def test_same_cube_for_every_chunk_size():
    """Bit for bit, down to one-cell blocks, whose sums over loans run down one column."""
    grid = {
        "deflation": {"start": -0.1, "stop": 0.6, "num": 5},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 7},
        "haircut": {"values": [0.0, 0.35, 0.9]},
    }
    config = make_config(random_loans(np.random.default_rng(11), 12), grid=grid)
    whole = run_grid(config, backend="numpy", chunk_cells=config.n_cells)
    assert float(whole["default_rate"].max()) > 0  # sums over defaulted loans are tested
    for chunk_cells in (1, 2, 3, 7, 20, 21, 50):
        cut = run_grid(config, backend="numpy", chunk_cells=chunk_cells)
        for name in variables():
            assert cut[name].identical(whole[name]), (chunk_cells, name)
