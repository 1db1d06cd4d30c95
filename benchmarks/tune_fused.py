"""Launch parameters of the fused kernels: one or two stages, recovery cells per
thread and threads per block of the recovery kernel, threads per block,
shared-memory budget and register cap of the loan-outer path kernel; with
the market step, the recovery kernel's shared memory and the path
launches' width.

Times the kernels (CUDA events, last of three passes; the path and recovery
kernels apart) on the seed-dense grid (37 haircut values) and on a 1M-cell
single-haircut grid with a deep market, and on the 1M-cell grid with the
market step, 100 random loans, for each setting; prints a table and writes
JSON.  Needs a GPU.

    python benchmarks/tune_fused.py --out benchmarks/results/gpu-tune-fused.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gridstress.bench import bench_config, loan_periods
from gridstress.kernels import SHARED_BYTES, FusedGrid, KernelSettings
from gridstress.prepared import prepare

ROOT = Path(__file__).resolve().parents[1]
SEED_DENSE = "seed-dense (401x181x37)"
ONE_HAIRCUT = "1M cells, one haircut"
ONE_HAIRCUT_MARKET = "1M cells, one haircut, market step"


def settings() -> dict[str, list[dict]]:
    """The KernelSettings fields timed on each grid."""
    big = {"path_shared_bytes": SHARED_BYTES}
    return {
        SEED_DENSE: (
            [
                {"stages": "one", "max_q_per_thread": q, "threads": t}
                for q in (2, 4, 8)
                for t in (128, 256)
            ]
            + [
                {"stages": "two", "recover_q_per_thread": q, "recover_threads": r}
                for q in (1, 2, 4)
                for r in (128, 256, 512)
            ]
            + [
                {"stages": "two", "threads": t, **extra}
                for t in (64, 128, 256)
                for extra in ({}, big)
            ]
            + [{"stages": "two", "path_max_registers": r} for r in (128, 120)]
        ),
        ONE_HAIRCUT: (
            [
                {"stages": "one", "threads": t, **extra}
                for t in (64, 128, 256)
                for extra in ({}, big)
            ]
            + [{"stages": "two"}]
            + [{"stages": "one", "path_max_registers": r} for r in (128, 120)]
        ),
        ONE_HAIRCUT_MARKET: (
            [{}]
            + [{"recover_shared_bytes": b} for b in (6 * 1024, 12 * 1024, 24 * 1024)]
            + [{"recover_threads": t} for t in (64, 128)]
            + [{"record_bytes": b} for b in (2**28, 2**32)]
        ),
    }


def kernel_time(run, fused: FusedGrid) -> float:
    for _ in range(3):
        fused.reset_timers()
        for block in run.plan:
            axes = {a.name: a.array[s] for a, s in zip(run.config.axes, block.slices)}
            fused.evaluate(axes, run.config.scenario, copy=False)
    return fused.kernel_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import cupy

    from gridstress.backend import cupy_device_name

    grids = {
        SEED_DENSE: bench_config(100, config=ROOT / "configs/seed-dense.yaml"),
        ONE_HAIRCUT: bench_config(100, cells=1_000_000),
        ONE_HAIRCUT_MARKET: bench_config(100, cells=1_000_000, model="v2"),
    }
    rows = []
    for label, cfg in grids.items():
        run = prepare(cfg, "cupy")
        lp = loan_periods(run)
        for setting in settings()[label]:
            fused = FusedGrid(run.portfolio, cupy, KernelSettings(**setting))
            seconds = kernel_time(run, fused)
            stages = dict(fused.stage_seconds)
            rows.append(
                {
                    "grid": label,
                    **setting,
                    "kernel_seconds": seconds,
                    "path_seconds": stages["path"],
                    "recover_seconds": stages["recover"],
                    "loan_periods_per_s": lp / seconds,
                }
            )
            knobs = " ".join(f"{k}={v}" for k, v in setting.items())
            print(
                f"{label:24s} {knobs:60s} kernel {seconds * 1e3:7.3f} ms "
                f"(path {stages['path'] * 1e3:7.3f}, recovery {stages['recover'] * 1e3:7.3f})"
                f"  {lp / seconds:.3e} loan-periods/s",
                flush=True,
            )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "device": cupy_device_name(cupy),
        "cupy": cupy.__version__,
        "numpy": np.__version__,
        "loans": 100,
        "rows": rows,
        "cells": {k: int(math.prod(c.shape)) for k, c in grids.items()},
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
