"""NumPy backend speed of model v3's scenario shapes at about 1 million cells.

Times, in one process on one machine, for the seed portfolio (the loans and
scenario of configs/seed.yaml) and for 100 random loans
(gridstress.synthetic.random_loans, seed 0, with generation_exposure drawn),
each on two grid shapes of about one million cells:

  plain    deflation x crypto drawdown x haircut, 250 x 200 x 20 and
           1000 x 1000 x 1, no path, no shock, no appraisal_deflation (the
           v2 model: model.md, "Reproducing v2");
  v3       the same deflation and haircut values with a quarter of the crypto
           drawdowns (250 x 50 x 20 x 4, 1000 x 250 x 1 x 4), a
           generation_shock axis {0, 0.15, 0.3, 0.45} (generation_years 1.5)
           and the rent path of configs/paths/h100-rent-2023.csv: as many
           cells and default paths as plain;
  v3 full  v3 with the crypto path below as well and the market appraisal
           (appraisal_deflation 0.3): for information, not the target.

  gridstress.run_grid(..., backend="numpy", scheduler="synchronous")

The target is v3 at 0.9 times plain's throughput or more.  Each time is the
median of 3 to 9 runs (as many as fit in about 5 s, after the first), the
variants taking turns so that the machine's noise falls on all of them; the
minimum is reported too.  Throughput is loan-periods per second (cells x
sum of each loan's periods / seconds).

With ``--v2-tree DIR`` (a copy of the committed v2 code, e.g. ``git archive
c289b0c | tar -x -C DIR``: its gridstress/model.py is HEAD's, and its config
reader predates the v3 inputs), it also runs ``gridstress bench --backend
numpy --loans 100 --model v2 --no-compile-times`` with ``--cells 200000`` and
with ``--config configs/seed.yaml`` three times in that tree and in this
one, taking turns: plain v3 against v2 on the same random books and grids.

    python benchmarks/model_v3.py [--v2-tree DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gridstress import load_config, run_grid  # noqa: E402
from gridstress.config import config_from_dict  # noqa: E402
from gridstress.files import read_path_csv  # noqa: E402
from gridstress.inputs import Axis  # noqa: E402
from gridstress.portfolio import portfolio_arrays  # noqa: E402
from gridstress.synthetic import random_loans  # noqa: E402

#: (deflation, crypto drawdown, haircut) of plain; v3 takes a quarter of the
#: crypto drawdowns and four generation shocks.
GRIDS = ((250, 200, 20), (1000, 1000, 1))
SHOCKS = (0.0, 0.15, 0.3, 0.45)
#: A crypto path that falls 77% and half recovers (E: the shape of 2021-23).
CRYPTO_PATH = ((0.0, 1.0), (1.0, 0.23), (2.0, 0.6))
#: ``gridstress bench`` runs of plain v3 against v2: a square random grid whose
#: blocks keep their axis order, and the seed grid with 100 random loans, whose
#: blocks the xp model lays out with deflation last (model.axis_order).
_V2 = ["--backend", "numpy", "--loans", "100", "--model", "v2", "--no-compile-times"]
BENCH_V2 = (["--cells", "200000", *_V2], ["--config", str(ROOT / "configs" / "seed.yaml"), *_V2])


def portfolios():
    seed = load_config(ROOT / "configs" / "seed.yaml")
    loans = random_loans(np.random.default_rng(0), 100, exposure=True)
    grid = {a.name: a.as_dict() for a in seed.axes}
    random = config_from_dict({"name": "random-100", "grid": grid, "portfolio": loans}, "bench")
    return {"seed (configs/seed.yaml)": seed, "100 random loans (seed 0)": random}


def variants(base, n_d: int, n_c: int, n_h: int) -> dict:
    rent_path, broken = read_path_csv(ROOT / "configs" / "paths" / "h100-rent-2023.csv", "bench")
    assert rent_path is not None, broken
    deflation = Axis("deflation", tuple(np.linspace(-0.2, 0.6, n_d)))
    haircut = Axis("haircut", tuple(np.linspace(0.0, 0.9, n_h)))

    def crypto(n):
        return Axis("crypto_drawdown", tuple(np.linspace(0.0, 0.9, n)))

    plain = replace(base, axes=(deflation, crypto(n_c), haircut))
    shaped = replace(
        base,
        axes=(deflation, crypto(n_c // 4), haircut, Axis("generation_shock", SHOCKS)),
        scenario={
            **{k: v for k, v in base.scenario.items() if k != "generation_shock"},
            "generation_years": 1.5,
        },
        paths={"rent_path": rent_path},
    )
    full = replace(
        shaped,
        scenario={**shaped.scenario, "appraisal_deflation": 0.3},
        paths={"rent_path": rent_path, "crypto_path": CRYPTO_PATH},
    )
    return {"plain": plain, "v3": shaped, "v3 full": full}


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


def measure(base, n_d: int, n_c: int, n_h: int) -> dict:
    configs = variants(base, n_d, n_c, n_h)
    loan_periods = int(portfolio_arrays(base.loans, base.periods_per_year).n.sum())
    runs = timed_runs(configs)
    out: dict = {"loans": len(base.loans), "loan_periods_per_cell": loan_periods}
    for name, cfg in configs.items():
        seconds = float(np.median(runs[name]))
        cube = run_grid(cfg, backend="numpy", scheduler="synchronous")
        out[name] = {
            "grid": {a.name: len(a) for a in cfg.axes},
            "cells": cfg.n_cells,
            "paths": sorted(cfg.paths),
            "appraisal_deflation": cfg.scenario.get("appraisal_deflation"),
            "runs": len(runs[name]),
            "seconds": round(seconds, 3),
            "seconds_min": round(min(runs[name]), 3),
            "loan_periods_per_s": round(cfg.n_cells * loan_periods / seconds),
            "default_rate_mean": round(float(cube["default_rate"].mean()), 4),
        }
    for name in ("v3", "v3 full"):
        ratio = (
            out["plain"]["seconds"]
            / out[name]["seconds"]
            * (out[name]["cells"] / out["plain"]["cells"])
        )
        out[f"{name}_over_plain_throughput"] = round(ratio, 3)
    out["target_v3_over_plain"] = 0.9
    return out


def against_v2(tree: Path) -> list[dict]:
    """Each of BENCH_V2 in the v2 tree and in this one, three times each, taking turns."""
    out = []
    for args in BENCH_V2:
        exe = [sys.executable, "-m", "gridstress", "bench", *args]
        seconds: dict[str, list[float]] = {"v2 (committed)": [], "v3 (this tree), plain": []}
        for _ in range(3):
            for name, where in zip(seconds, (tree, ROOT)):
                env = dict(os.environ, PYTHONPATH=str(where))
                text = subprocess.run(
                    exe, cwd=where, env=env, check=True, capture_output=True, text=True
                ).stdout
                found = re.search(r"numpy\s+([\d.]+) s", text)
                assert found is not None, text
                seconds[name].append(float(found.group(1)))
        v2, v3 = (float(np.median(s)) for s in seconds.values())
        out.append(
            {
                "command": "gridstress bench " + " ".join(args),
                "v2_tree": str(tree),
                "seconds": {name: [round(x, 3) for x in s] for name, s in seconds.items()},
                "median_seconds": {"v2": round(v2, 3), "v3 plain": round(v3, 3)},
                "v3_over_v2_throughput": round(v2 / v3, 3),
            }
        )
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--v2-tree", type=Path, default=None, help="a copy of the v2 code")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    run_grid(
        load_config(ROOT / "configs" / "seed.yaml"), backend="numpy", scheduler="synchronous"
    )  # warm-up: imports and first-call costs
    runs = []
    for label, cfg in portfolios().items():
        for shape in GRIDS:
            row = {"portfolio": label, **measure(cfg, *shape)}
            print(json.dumps(row), flush=True)
            runs.append(row)
    result = {
        "benchmark": "model_v3",
        "model_version": 3,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/model_v3.py", *sys.argv[1:]]),
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "device": "CPU, one core (NumPy ufuncs)",
        },
        "runs": runs,
    }
    if args.v2_tree is not None:
        result["against_v2"] = against_v2(args.v2_tree.resolve())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
