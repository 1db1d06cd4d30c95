"""The cube's codec: write time and size of GPU-sized blocks under each candidate.

A block's results (model v2 on the seed book) are evaluated once with NumPy,
then written as ``gridstress run`` writes a block (``cube.empty_zarr`` and
``cube.write_block``, chunks sized for readers) under each codec, each into
a fresh store, ``REPEATS`` times; the median write seconds and the bytes on
disk are reported.  Grids: seed-dense (401 x 181 x 37, 2.7M cells, one GPU
block) and a block of 2^24 cells (401 x 1130 x 37, the fused kernel's
largest).  Codec work runs on the CPU, so this measures what a GPU run's
writes cost without a GPU.

    python benchmarks/zarr_codecs.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import yaml
from _common import emit

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3


def codecs() -> dict:
    import zarr

    blosc = zarr.codecs.BloscCodec
    return {
        "blosc-lz4-shuffle": blosc(cname="lz4", clevel=5, shuffle="shuffle"),
        "blosc-lz4-bitshuffle": blosc(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "blosc-zstd-shuffle": blosc(cname="zstd", clevel=3, shuffle="shuffle"),
        "zstd (zarr default)": zarr.codecs.ZstdCodec(level=0),
        "none": None,
    }


def grid_config(folder: Path, crypto: int) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    raw["grid"]["crypto_drawdown"]["num"] = crypto
    raw["name"] = f"seed-dense-{crypto}"
    raw["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    path = folder / f"seed-dense-{crypto}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def block_results(config: Path):
    """Every result of the grid as one block, and the run (NumPy, block by block)."""
    from gridstress import load_config
    from gridstress.grid import plan_blocks
    from gridstress.prepared import evaluate_checked, prepare

    run = prepare(load_config(config), "numpy")
    whole: dict[str, np.ndarray] = {}
    for block in run.plan:
        for name, value in evaluate_checked(run, block).items():
            if name not in whole:  # the grid's shape and the variable's extra dim
                whole[name] = np.empty(run.config.shape + value.shape[len(block.shape) :])
            whole[name][block.slices] = value
    run.plan = plan_blocks(run.config.shape, run.config.n_cells)  # one block
    return run, whole


def measure(run, results, folder: Path) -> dict:
    from gridstress import cube
    from gridstress.grid import reader_chunks

    block = next(iter(run.plan))
    rows = {}
    original = cube.compressor
    try:
        for label, codec in codecs().items():
            cube.compressor = lambda codec=codec: codec
            seconds, size = [], 0
            for _ in range(REPEATS):
                store = folder / "codec.zarr"
                shutil.rmtree(store, ignore_errors=True)
                cube.empty_zarr(store, run.config, run.plan, {}, run.portfolio.segments)
                t0 = time.perf_counter()
                cube.write_block(store, run.config, block, results)
                seconds.append(time.perf_counter() - t0)
                size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
            rows[label] = {"write_s": round(median(seconds), 3), "bytes": size}
            print(label, rows[label], flush=True)
    finally:
        cube.compressor = original
    raw = sum(v.nbytes for v in results.values())
    return {
        "cells": run.config.n_cells,
        "chunks": list(reader_chunks(run.plan.chunks, cube.READER_CHUNK_CELLS)),
        "raw_bytes": raw,
        "codecs": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seed-dense only")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    from gridstress.backend import _cpu_name

    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_name(),
        "command": "python benchmarks/zarr_codecs.py" + (" --quick" if args.quick else ""),
        "repeats": REPEATS,
        "grids": {},
    }
    with tempfile.TemporaryDirectory(prefix="gridstress-codecs-") as tmp:
        folder = Path(tmp)
        grids = {"seed-dense": 181} if args.quick else {"seed-dense": 181, "2^24 cells": 1130}
        for name, crypto in grids.items():
            run, block = block_results(grid_config(folder, crypto))
            results["grids"][name] = measure(run, block, folder)
            del block
    emit(results, args.out)


if __name__ == "__main__":
    main()
