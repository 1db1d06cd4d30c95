"""Startup and end-to-end time of the CLI, and where a run's time goes.

Measured on one machine in one process tree, each command in a fresh
process (median of several):

- startup: ``python -c "import numpy"`` (the floor), ``gridstress --help``,
  ``gridstress validate configs/seed.yaml`` and ``gridstress run
  configs/seed.yaml`` (default scheduler), wall seconds;
- end to end, for configs/seed.yaml, configs/seed-dense.yaml and a 10M-cell
  grid (seed-dense's axes with 801 crypto drawdowns), with the synchronous
  scheduler: the CLI's wall seconds, and the split of the same work done
  step by step in this process: ``imports`` (a fresh ``python -c`` that
  imports what ``run`` imports), ``model`` (every block evaluated, nothing
  stored), ``writes`` (the partial store created, every block written
  into it and the store finished) and ``headline`` (the figures ``run`` prints, from the finished
  cube).  ``end_to_end_over_model`` is the CLI's wall over the model time.

    python benchmarks/startup.py [--label NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import yaml
from _common import emit

ROOT = Path(__file__).resolve().parents[1]
EXE = shutil.which("gridstress", path=str(Path(sys.executable).parent)) or "gridstress"
#: What ``gridstress run`` imports before it computes.
RUN_IMPORTS = ("import gridstress.cli, gridstress.config, gridstress.engine, gridstress.cube, "
               "gridstress.analysis.headline")


def wall(args: list[str], repeats: int, cwd: Path | None = None) -> float:
    """Median wall seconds of ``args`` run ``repeats`` times in fresh processes."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=cwd)
        times.append(time.perf_counter() - t0)
    return median(times)


def ten_million(folder: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    raw["grid"]["crypto_drawdown"]["num"] = 801
    raw["name"] = "seed-10m"
    raw["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    path = folder / "seed-10m.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def split(config: Path, folder: Path) -> dict:
    """The run's steps one after another in this process, timed apart."""
    from gridstress import load_config, open_cube
    from gridstress.analysis.headline import headline
    from gridstress.prepared import evaluate_checked, prepare
    from gridstress.store import create_store, finish_store, partial_path, store_block

    imports = wall([sys.executable, "-c", RUN_IMPORTS], 5)
    run = prepare(load_config(config), "numpy")
    store = partial_path(folder / "split.zarr")
    model = writes = 0.0
    t0 = time.perf_counter()
    create_store(store, run, {(run.backend.name, run.backend.device, run.engine)})
    writes += time.perf_counter() - t0
    for block in run.plan:
        t0 = time.perf_counter()
        results = evaluate_checked(run, block, copy=False)
        t1 = time.perf_counter()
        store_block(store, run.config, block, results)
        model += t1 - t0
        writes += time.perf_counter() - t1
    t0 = time.perf_counter()
    out = finish_store(store, folder / "split.zarr", set())
    writes += time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_cube(out) as ds:
        headline(ds)
    figures = time.perf_counter() - t0
    shutil.rmtree(out)
    return {"imports_s": round(imports, 3), "model_s": round(model, 3),
            "writes_s": round(writes, 3), "headline_s": round(figures, 3),
            "cells": run.config.n_cells, "blocks": len(run.plan)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="", help="what this measures (e.g. before, after)")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    result = {
        "benchmark": "startup",
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/startup.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        numpy_s = wall([sys.executable, "-c", "import numpy"], 10)
        help_s = wall([EXE, "--help"], 10)
        result["startup"] = {
            "python_import_numpy_s": round(numpy_s, 3),
            "help_s": round(help_s, 3),
            "help_over_import_numpy": round(help_s / numpy_s, 2),
            "validate_seed_s": round(wall([EXE, "validate", str(ROOT / "configs/seed.yaml")],
                                          5), 3),
            "run_seed_default_scheduler_s": round(wall(
                [EXE, "run", str(ROOT / "configs/seed.yaml"), "--out",
                 str(folder / "seed-default.zarr")], 3), 3),
        }
        runs = {}
        for label, config in (("seed", ROOT / "configs/seed.yaml"),
                              ("seed-dense", ROOT / "configs/seed-dense.yaml"),
                              ("10M", ten_million(folder))):
            cli = wall([EXE, "run", str(config), "--scheduler", "synchronous", "--out",
                        str(folder / f"{label}.zarr")], 1 if label == "10M" else 3)
            steps = split(config, folder)
            runs[label] = {"cli_synchronous_s": round(cli, 3), **steps,
                           "end_to_end_over_model": round(cli / steps["model_s"], 2)}
            print(label, runs[label], flush=True)
        result["end_to_end"] = runs
    emit(result, args.out)


if __name__ == "__main__":
    main()
