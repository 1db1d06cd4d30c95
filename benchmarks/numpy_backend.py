"""NumPy backend speed on the seed portfolio at about 1 million cells.

Times, in one process on one machine:
  engine     gridstress.run_grid(..., backend="numpy"): paths shared across the
             liquidation axes, appraisal computed once per deflation value,
             after one warm-up run of the shipped config;
  reference  gridstress.reference: the straightforward implementation,
             vectorised over cells with Python loops over loans and periods,
             every cell evaluated on its own;
checks that they agree (rtol 1e-9) and reports loan-periods per second
(cells x sum of each loan's periods / wall seconds) and the ratio.

The default runs two grids of one million cells each: 250 x 200 x 20
(deflation x crypto drawdown x haircut; each path serves 20 haircut values)
and 1000 x 1000 x 1 (one haircut value: no path is shared).

    python benchmarks/numpy_backend.py [--grid N_D N_C N_H ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gridstress import load_config, reference, run_grid  # noqa: E402
from gridstress.config import Axis  # noqa: E402
from gridstress.portfolio import portfolio_arrays  # noqa: E402


def measure(base, n_d: int, n_c: int, n_h: int) -> dict:
    axes = (
        Axis("deflation", tuple(np.linspace(-0.2, 0.6, n_d))),
        Axis("crypto_drawdown", tuple(np.linspace(0.0, 0.9, n_c))),
        Axis("haircut", tuple(np.linspace(0.0, 0.9, n_h))),
    )
    cfg = replace(base, axes=axes)
    loan_periods = int(portfolio_arrays(cfg.loans, cfg.periods_per_year).n.sum())
    cells = cfg.n_cells

    t0 = time.perf_counter()
    cube = run_grid(cfg, backend="numpy")
    engine_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = reference.evaluate_grid(cfg.loans, cfg.periods_per_year,
                                  {a.name: a.array for a in axes}, cfg.scenario)
    reference_s = time.perf_counter() - t0

    for name, expected in ref.items():
        np.testing.assert_allclose(cube[name].values, expected, rtol=1e-9, atol=1e-3,
                                   equal_nan=True, err_msg=name)
    return {
        "grid": {a.name: len(a) for a in axes},
        "cells": cells,
        "loans": len(cfg.loans),
        "loan_periods_per_cell": loan_periods,
        "engine_seconds": round(engine_s, 3),
        "reference_seconds": round(reference_s, 3),
        "engine_loan_periods_per_s": round(cells * loan_periods / engine_s),
        "reference_loan_periods_per_s": round(cells * loan_periods / reference_s),
        "speedup": round(reference_s / engine_s, 2),
        "agree_rtol": 1e-9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "seed.yaml"))
    ap.add_argument("--grid", type=int, nargs=3, action="append", metavar=("N_D", "N_C", "N_H"),
                    help="grid to time (repeatable); default 250 200 20 and 1000 1000 1")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    grids = args.grid or [[250, 200, 20], [1000, 1000, 1]]
    base = load_config(args.config)
    run_grid(base, backend="numpy")  # warm-up: imports and first-call costs
    result = {
        "benchmark": "numpy_backend",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/numpy_backend.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "device": "CPU, one core (NumPy ufuncs)"},
        "config": os.path.relpath(args.config, ROOT),
        "runs": [measure(base, *g) for g in grids],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
