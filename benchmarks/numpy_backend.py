"""NumPy backend speed of model v2 at about 1 million cells, on two portfolios.

Times, in one process on one machine, for the seed portfolio and for 100
random loans (gridstress.synthetic.random_loans, seed 0), each on two grids
of one million cells, 250 x 200 x 20 (deflation x crypto drawdown x haircut;
each default path serves 20 haircut values) and 1000 x 1000 x 1 (one haircut
value: no path is shared):

  v2         gridstress.run_grid(..., backend="numpy", scheduler="synchronous")
             with the market step active (the seed config's calibration;
             the v2 defaults for the random loans);
  v1         the same portfolio and grid with model v1's settings (model.md:
             market_depth_gpus .inf, cash_cap = cash_reserve,
             refi_term_years 0, ltv_basis market);
  reference  gridstress.reference, the literal transcription of v2
             (vectorised over cells, Python loops over periods and loans),
             on every cell for the seed, on every 10th deflation value
             (100,000 cells) for the 100 loans; it is linear in cells.

Each engine time is the median of 3 to 9 runs (as many as fit in about 5 s,
after the first), v2 and v1 taking turns: the first run of a grid in a
process pays for growing the heap, and alternating spreads that and the
machine's noise over both; the minimum is reported too. Throughput is
loan-periods per second (cells x sum of each loan's periods / seconds); the
engine and the reference are checked to agree to 1e-9 on the reference's
cells.

    python benchmarks/numpy_backend.py [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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
from gridstress.config import config_from_dict  # noqa: E402
from gridstress.inputs import Axis  # noqa: E402
from gridstress.portfolio import portfolio_arrays  # noqa: E402
from gridstress.synthetic import random_loans  # noqa: E402

GRIDS = ((250, 200, 20), (1000, 1000, 1))


def v1_settings(cfg):
    """The config with model v1's settings (model.md, "Reproducing model v1")."""
    loans = tuple(
        replace(ln, cash_cap=ln.cash_reserve, refi_term_years=0.0, ltv_basis="market")
        for ln in cfg.loans
    )
    return replace(cfg, scenario={**cfg.scenario, "market_depth_gpus": math.inf}, loans=loans)


def portfolios():
    seed = load_config(ROOT / "configs" / "seed.yaml")
    loans = random_loans(np.random.default_rng(0), 100)
    grid = {a.name: a.as_dict() for a in seed.axes}
    random = config_from_dict({"name": "random-100", "grid": grid, "portfolio": loans}, "bench")
    return {"seed (configs/seed.yaml)": (seed, 1), "100 random loans (seed 0)": (random, 10)}


def timed_runs(configs: dict) -> dict[str, list[float]]:
    """Seconds of each run of each config, taking turns, 3 to 9 runs each (as
    many as fit in about 5 s); no cube is kept alive between runs."""
    times: dict[str, list[float]] = {name: [] for name in configs}
    rounds = 3
    while len(times[next(iter(configs))]) < rounds:
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            run_grid(cfg, backend="numpy", scheduler="synchronous")
            times[name].append(time.perf_counter() - t0)
        if len(times[next(iter(configs))]) == 1:
            slowest = max(t[0] for t in times.values())
            rounds = max(3, min(9, math.ceil(5.0 / max(slowest, 1e-3))))
    return times


def measure(base, n_d: int, n_c: int, n_h: int, stride: int) -> dict:
    axes = (
        Axis("deflation", tuple(np.linspace(-0.2, 0.6, n_d))),
        Axis("crypto_drawdown", tuple(np.linspace(0.0, 0.9, n_c))),
        Axis("haircut", tuple(np.linspace(0.0, 0.9, n_h))),
    )
    cfg = replace(base, axes=axes)
    loan_periods = int(portfolio_arrays(cfg.loans, cfg.periods_per_year).n.sum())
    cells = cfg.n_cells
    runs = timed_runs({"v2": cfg, "v1": v1_settings(cfg)})
    v2_s, v1_s = (float(np.median(runs[name])) for name in ("v2", "v1"))
    cube = run_grid(cfg, backend="numpy", scheduler="synchronous")

    ref_axes = {a.name: a.array for a in axes}
    ref_axes["deflation"] = ref_axes["deflation"][::stride]
    ref_cells = math.prod(len(v) for v in ref_axes.values())
    t0 = time.perf_counter()
    ref = reference.evaluate_grid(cfg.loans, cfg.periods_per_year, ref_axes, cfg.scenario)
    reference_s = time.perf_counter() - t0
    for name, expected in ref.items():
        if name in cube.data_vars:
            got = cube[name].values[::stride]
            np.testing.assert_allclose(
                got, expected, rtol=1e-9, atol=1e-3, equal_nan=True, err_msg=name
            )
    v2_rate = cells * loan_periods / v2_s
    reference_rate = ref_cells * loan_periods / reference_s
    return {
        "grid": {a.name: len(a) for a in axes},
        "cells": cells,
        "loans": len(cfg.loans),
        "loan_periods_per_cell": loan_periods,
        "market_price_min": float(cube["market_price_min"].min()),
        "default_rate_mean": float(cube["default_rate"].mean()),
        "runs_each": len(runs["v2"]),
        "v2_seconds": round(v2_s, 3),
        "v1_settings_seconds": round(v1_s, 3),
        "v2_seconds_min": round(min(runs["v2"]), 3),
        "v1_settings_seconds_min": round(min(runs["v1"]), 3),
        "v2_loan_periods_per_s": round(v2_rate),
        "v1_settings_loan_periods_per_s": round(cells * loan_periods / v1_s),
        "v2_over_v1_throughput": round(v1_s / v2_s, 3),
        "reference_cells": ref_cells,
        "reference_seconds": round(reference_s, 3),
        "reference_loan_periods_per_s": round(reference_rate),
        "v2_over_reference_throughput": round(v2_rate / reference_rate, 2),
        "agree_rtol": 1e-9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    run_grid(
        load_config(ROOT / "configs" / "seed.yaml"), backend="numpy", scheduler="synchronous"
    )  # warm-up: imports and first-call costs
    runs = []
    for label, (cfg, stride) in portfolios().items():
        for shape in GRIDS:
            row = {"portfolio": label, **measure(cfg, *shape, stride)}
            print(json.dumps(row), flush=True)
            runs.append(row)
    result = {
        "benchmark": "numpy_backend",
        "model_version": 2,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/numpy_backend.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "device": "CPU, one core (NumPy ufuncs)",
        },
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
