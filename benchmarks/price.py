"""Wall time and peak memory of ``price`` against ``risk`` on two cubes.

(a) configs/seed-dense.yaml run with per-loan outputs (401 x 181 x 37 =
2,685,497 cells, 8 loans); (b) a random book of 100 loans
(:func:`gridstress.bench.bench_config`, model v2) on a grid of about one
million cells with 10 haircuts. Each cube is written once (or taken from
``--dense`` / ``--book`` when it is there); each measurement runs in a fresh
Python process that opens the cube and times the call; its peak resident set
size (``ru_maxrss``, read by a bare launcher process) is reported with its
peak before the call (imports and the opened cube) beside it. The best of
``--repeat`` times is kept, and the largest peak.

    python benchmarks/price.py [--dense PATH] [--book PATH] [--rho 0.5 ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import emit

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import gridstress
from gridstress.analysis.price import price
from gridstress.analysis.risk import risk

what, path, rhos = sys.argv[1], sys.argv[2], [float(r) for r in sys.argv[3].split(",")]
with gridstress.open_cube(path) as ds:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if what == "price":
        price(ds, rhos)
    else:
        risk(ds, rhos)
    seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "before_mb": before / 1024}))
"""

#: Runs CHILD and adds its peak RSS. A process's ru_maxrss starts from its
#: parent's resident size at the fork, so the child is started by this bare
#: launcher, not by the benchmark (which holds the cubes' metadata in memory).
LAUNCHER = r"""
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True)
result = json.loads(done.stdout.strip().splitlines()[-1])
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(result))
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(what: str, path: Path, rhos: list[float], repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        child = [sys.executable, "-c", CHILD, what, str(path), ",".join(map(str, rhos))]
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *child], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "seconds": round(min(r["seconds"] for r in runs), 3),
        "seconds_all": [round(r["seconds"], 3) for r in runs],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "rss_before_call_mb": round(max(r["before_mb"] for r in runs), 1),
    }


def write(config, path: Path) -> float:
    """Run ``config`` with per-loan outputs into ``path``; return the seconds it took."""
    from gridstress.engine import write_cube

    t = time.perf_counter()
    write_cube(config, path, per_loan=True, overwrite=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", default="/tmp/seed-dense-perloan.zarr", help="cube (a)")
    ap.add_argument("--book", default="/tmp/price-book-100.zarr", help="cube (b)")
    ap.add_argument("--cells", type=float, default=1e6, help="cells of cube (b)")
    ap.add_argument("--rho", type=float, action="append", help="copula correlations")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON result file")
    ap.add_argument("--note", default=None, help="a line kept with the result")
    args = ap.parse_args()
    rhos = args.rho or [0.5]

    from gridstress.bench import bench_config
    from gridstress.config import load_config
    from gridstress.cube import open_cube

    cubes = {
        "seed-dense --per-loan": (
            Path(args.dense),
            lambda: load_config(ROOT / "configs/seed-dense.yaml"),
        ),
        "random book, 100 loans": (
            Path(args.book),
            lambda: bench_config(loans=100, cells=int(args.cells), haircuts=10, model="v2"),
        ),
    }
    results = []
    for label, (path, config) in cubes.items():
        written = None
        if not path.exists():
            written = round(write(config(), path), 1)
        with open_cube(path) as ds:
            shape = {d: int(n) for d, n in ds["loss"].sizes.items()}
            loans = int(ds.sizes["loan"])
        cells = 1
        for n in shape.values():
            cells *= n
        price_run = measure("price", path, rhos, args.repeat)
        risk_run = measure("risk", path, rhos, args.repeat)
        results.append(
            {
                "cube": label,
                "path": str(path),
                "grid": shape,
                "cells": cells,
                "loans": loans,
                "loan_values": cells * loans,
                "write_seconds": written,
                "price": price_run,
                "risk": risk_run,
                "price_over_risk_time": round(price_run["seconds"] / risk_run["seconds"], 2),
            }
        )
    emit(
        {
            "benchmark": "price",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "benchmarks/price.py", *sys.argv[1:]]),
            "machine": {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            **({"note": args.note} if args.note else {}),
            "rhos": rhos,
            "targets": {"price_over_risk_time": 3.0, "peak_rss_mb": 1024},
            "runs": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
