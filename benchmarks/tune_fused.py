"""Launch parameters of the fused kernel: one or two stages, recovery cells per
thread, threads per block.

Times the kernel (CUDA events, last of three passes) on the seed-dense grid
(31 haircut values) and on a 1M-cell single-haircut grid, 100 random loans,
for each setting; prints a table and writes JSON.  Needs a GPU.

    python benchmarks/tune_fused.py --out benchmarks/results/gpu-tune-fused.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import cupy
import numpy as np

from gridstress.backend import cupy_device_name
from gridstress.bench import bench_config, loan_periods
from gridstress.engine import prepare
from gridstress.kernels import FusedGrid

ROOT = Path(__file__).resolve().parents[1]


def kernel_time(run, fused: FusedGrid) -> float:
    for _ in range(3):
        fused.kernel_seconds = 0.0
        for block in run.plan:
            axes = {a.name: a.array[s] for a, s in zip(run.config.axes, block.slices)}
            fused.evaluate(axes, run.config.scenario, copy=False)
    return fused.kernel_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grids = {
        "seed-dense (401x181x31)": bench_config(100, config=ROOT / "configs/seed-dense.yaml"),
        "1M cells, one haircut": bench_config(100, cells=1_000_000),
    }
    rows = []
    for label, cfg in grids.items():
        run = prepare(cfg, "cupy")
        lp = loan_periods(run)
        for stages in ("one", "two"):
            for q in (2, 4, 8):
                for threads in (128, 256):
                    fused = FusedGrid(run.portfolio, cupy, max_q_per_thread=q,
                                      threads=threads, stages=stages)
                    seconds = kernel_time(run, fused)
                    rows.append({"grid": label, "stages": stages, "max_q_per_thread": q,
                                 "threads": threads, "kernel_seconds": seconds,
                                 "loan_periods_per_s": lp / seconds})
                    print(f"{label:24s} {stages:3s} stage(s) q/thread<={q} threads={threads:3d}"
                          f" kernel {seconds * 1e3:8.3f} ms  {lp / seconds:.3e} loan-periods/s",
                          flush=True)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", *sys.argv]),
              "device": cupy_device_name(cupy), "cupy": cupy.__version__,
              "numpy": np.__version__, "loans": 100, "rows": rows,
              "cells": {k: int(math.prod(c.shape)) for k, c in grids.items()}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
