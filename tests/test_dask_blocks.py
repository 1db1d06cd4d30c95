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


def test_store_chunks_are_sized_for_readers_inside_each_block(tmp_path, monkeypatch):
    """One block of 105 cells stored in chunks of at most 16 cells (of 2 cells
    per loan for the per-loan losses of 6 loans), each inside the block; the
    cube is the same."""
    from dataclasses import replace

    import zarr

    from gridstress import cube
    from gridstress.engine import write_cube
    from gridstress.grid import reader_chunks
    from gridstress.prepared import prepare

    grid = {
        "deflation": {"start": -0.1, "stop": 0.6, "num": 5},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 7},
        "haircut": {"values": [0.0, 0.35, 0.9]},
    }
    config = replace(
        make_config(random_loans(np.random.default_rng(12), 6), grid=grid), per_loan=True
    )
    run = prepare(config, "numpy", chunk_cells=config.n_cells)
    assert run.plan.chunks == (5, 7, 3)
    monkeypatch.setattr(cube, "READER_CHUNK_CELLS", 16)
    out = write_cube(run, tmp_path / "small-chunks.zarr")
    root = zarr.open_group(str(out), mode="r")
    assert root["loss"].chunks == reader_chunks((5, 7, 3), 16) == (5, 1, 3)
    # 16 // 6 = 2 cells of 6 loans: no divisor of 5, 7 or 3 is 2, so one cell.
    assert root["loan_loss"].chunks == (1, 1, 1, 6)
    assert root["loan_default_years"].chunks == (1, 1, 6)  # no haircut dim
    whole = run_grid(config, backend="numpy", chunk_cells=config.n_cells)
    stored = cube.open_cube(out)
    for name in variables(per_loan=True):
        np.testing.assert_array_equal(stored[name].values, whole[name].values, err_msg=name)
