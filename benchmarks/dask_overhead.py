"""Dask overhead of a grid run on a local cluster of 2 workers.

The grid: configs/seed-dense.yaml's axes refined to 401 x 361 x 31 =
4,487,591 cells, and a 256-loan book (the 8 seed loans in 32 variants of
principal and utilisation).  Blocks are the default plan's unless
``--chunk-cells`` is given.

Each task times itself: ``compute_s`` in the model, ``write_s`` writing its
block into the Zarr store.  With ``W`` workers busy for the Dask wall time
``T`` (first submission to last result, the cluster already started), the
overhead is the share of worker time that no task used::

    overhead = (W * T - sum(compute_s + write_s)) / (W * T)

(with one worker this is ``(T - sum) / T``).  ``overhead_with_writes`` also
counts the writes as overhead.  The run's cube is compared with a
synchronous run of the same blocks in this process, which also gives the
speed-up.

    python benchmarks/dask_overhead.py [--workers 2] [--chunk-cells N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import emit

from gridstress import load_config, open_cube
from gridstress.backend import resolve_backend
from gridstress.distributed import RunSpec, Scheduler, connect, run_blocks, worker_backends
from gridstress.engine import write_cube
from gridstress.prepared import prepare
from gridstress.store import create_store, partial_path
from gridstress.variables import variables

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"deflation": 401, "crypto_drawdown": 361, "haircut": 31}
VARIANTS = 32


def dense_config(folder: Path) -> Path:
    """seed-dense's axes at SHAPE, with the seed book in VARIANTS variants."""
    raw = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    seed = load_config(ROOT / "configs" / "seed-dense.yaml")
    for axis, num in SHAPE.items():
        raw["grid"][axis]["num"] = num
    loans = []
    for j in range(VARIANTS):
        scale = 0.5 + j / (VARIANTS - 1)  # principal x 0.5 .. 1.5
        busy = 0.85 + 0.3 * j / (VARIANTS - 1)  # utilisation x 0.85 .. 1.15
        for loan in seed.loans:
            row = loan.as_dict()
            row["loan_id"] = f"{loan.loan_id}-{j:02d}"
            row["principal"] = loan.principal * scale
            row["utilization"] = min(1.0, loan.utilization * busy)
            loans.append(row)
    raw["name"] = "dask-overhead"
    raw["portfolio"] = loans
    path = folder / "dense.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-cells", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(dense_config(Path(tmp)))
        run = prepare(config, "numpy", args.chunk_cells)
        blocks = list(run.plan)
        receipts = []
        with connect(Scheduler("local", workers=args.workers), n_blocks=len(blocks)) as client:
            used = set(worker_backends(client, "numpy").values())
            store = partial_path(Path(tmp) / "dask.zarr")
            create_store(store, run, used)
            spec = RunSpec(run.config, "numpy", str(store))
            started = time.perf_counter()
            run_blocks(client, spec, blocks, lambda block, receipt: receipts.append(receipt))
            wall = time.perf_counter() - started
            workers_used = len({r.worker for r in receipts})
        # The same blocks, synchronously in this process, for the speed-up and the check.
        started = time.perf_counter()
        write_cube(
            config,
            Path(tmp) / "sync.zarr",
            backend="numpy",
            chunk_cells=args.chunk_cells,
            scheduler="synchronous",
        )
        serial = time.perf_counter() - started
        import zarr

        with open_cube(Path(tmp) / "sync.zarr") as sync:
            group = zarr.open_group(str(store), mode="r")
            same = all(
                np.array_equal(group[name][:], sync[name].values, equal_nan=True)
                for name in variables()
            )
    compute = sum(r.compute_s for r in receipts)
    write = sum(r.write_s for r in receipts)
    busy = args.workers * wall
    result = {
        "benchmark": "dask_overhead",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/dask_overhead.py", *sys.argv[1:]]),
        "machine": {
            "cpu": resolve_backend("numpy").device,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "grid": {"cells": config.n_cells, "shape": list(config.shape), "loans": len(config.loans)},
        "blocks": {
            "count": len(blocks),
            "chunks": list(run.plan.chunks),
            "cells_per_block": int(np.prod(run.plan.chunks)),
            "chunk_cells_option": args.chunk_cells,
        },
        "workers": args.workers,
        "workers_that_ran_tasks": workers_used,
        "dask_wall_s": round(wall, 3),
        "sum_task_s": round(compute + write, 3),
        "sum_compute_s": round(compute, 3),
        "sum_write_s": round(write, 3),
        "task_s_mean_min_max": [
            round((compute + write) / len(receipts), 4),
            round(min(r.compute_s + r.write_s for r in receipts), 4),
            round(max(r.compute_s + r.write_s for r in receipts), 4),
        ],
        "overhead": round((busy - compute - write) / busy, 4),
        "overhead_with_writes": round((busy - compute) / busy, 4),
        "synchronous_s": round(serial, 3),
        "speedup_vs_synchronous": round(serial / wall, 3),
        "cube_equals_synchronous": same,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
