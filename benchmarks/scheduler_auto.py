"""When a local Dask cluster pays for itself: ``--scheduler auto``'s threshold.

Runs the real CLI on the seed book on seed-dense's crypto and haircut axes
with a growing number of deflation values, with ``--scheduler synchronous``
and with ``--scheduler local`` (one worker per core), each in a fresh
process, and reports wall seconds and the grid's work in loan-periods of
default paths (path cells x the sum of the loans' periods).  From the
synchronous runs it fits one core's throughput, and it reports the work
from which the cluster was faster: ``gridstress.distributed`` takes its
``AUTO_LOCAL_SECONDS`` and ``CORE_PATH_LOAN_PERIODS_PER_S`` from here.

    python benchmarks/scheduler_auto.py [--out FILE]
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
DEFLATIONS = (51, 201, 401, 801, 1601, 3201)


def wall(args: list[str], repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from gridstress.prepared import prepare

    base = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    base["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for num in DEFLATIONS:
            raw = dict(base, name=f"auto-{num}", grid={k: dict(v) for k, v in base["grid"].items()})
            raw["grid"]["deflation"]["num"] = num
            path = Path(tmp) / f"auto-{num}.yaml"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            run = prepare(path, "numpy")
            path_cells = num * raw["grid"]["crypto_drawdown"]["num"]
            work = path_cells * int(run.portfolio.n.sum())
            t0 = time.perf_counter()
            for block in run.plan:
                run.evaluate_block(block, copy=False)
            model = time.perf_counter() - t0
            seconds = {}
            for scheduler in ("synchronous", "local"):
                seconds[scheduler] = wall(
                    [
                        EXE,
                        "run",
                        str(path),
                        "--scheduler",
                        scheduler,
                        "--out",
                        str(Path(tmp) / f"{num}-{scheduler}.zarr"),
                    ]
                )
            row = {
                "deflation_values": num,
                "cells": run.config.n_cells,
                "blocks": len(run.plan),
                "path_loan_periods": work,
                "model_s": round(model, 3),
                "path_loan_periods_per_s": round(work / model),
                "synchronous_s": round(seconds["synchronous"], 3),
                "local_s": round(seconds["local"], 3),
                "local_faster": seconds["local"] < seconds["synchronous"],
            }
            print(row, flush=True)
            runs.append(row)
    rates = sorted(r["path_loan_periods_per_s"] for r in runs)
    faster = [r for r in runs if r["local_faster"]]
    result = {
        "benchmark": "scheduler_auto",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/scheduler_auto.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "runs": runs,
        "core_path_loan_periods_per_s": rates[len(rates) // 2],
        "local_faster_from_model_s": min((r["model_s"] for r in faster), default=None),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
