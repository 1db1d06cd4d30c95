"""Peak resident memory of ``gridstress run`` as the grid grows.

Runs the real CLI (NumPy backend, synchronous scheduler) on
configs/seed-dense.yaml (2.25 million cells), on the same config with
per-loan outputs (--per-loan), and with finer axes, each in a fresh
process, and reports the peak resident set size of that process.  Memory is
bounded by one block of cells, not by the grid.

    python benchmarks/peak_memory.py [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from _common import emit, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {  # deflation x crypto_drawdown x haircut, and extra run options
    "seed-dense": (None, ()),
    "seed-dense --per-loan": (None, ("--per-loan",)),
    "8M": ((401, 721, 31), ()),
    "20M": ((1001, 1001, 20), ()),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    exe = shutil.which("gridstress", path=str(Path(sys.executable).parent)) or "gridstress"
    base = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    base["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (label, (shape, options)) in enumerate(GRIDS.items()):
            cfg = dict(base, grid={k: dict(v) for k, v in base["grid"].items()})
            if shape is not None:
                for axis, num in zip(("deflation", "crypto_drawdown", "haircut"), shape):
                    cfg["grid"][axis]["num"] = num
            path = Path(tmp) / f"run{number}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            cells = 1
            for spec in cfg["grid"].values():
                cells *= spec["num"]
            out = Path(tmp) / f"run{number}.zarr"
            rss, seconds = peak_rss_mb(
                [
                    exe,
                    "run",
                    str(path),
                    "--backend",
                    "numpy",
                    "--scheduler",
                    "synchronous",
                    "--out",
                    str(out),
                    *options,
                ]
            )
            runs.append(
                {
                    "grid": label,
                    "cells": cells,
                    "peak_rss_mb": round(rss, 1),
                    "wall_seconds": round(seconds, 2),
                }
            )
            shutil.rmtree(out)
    result = {
        "benchmark": "peak_memory",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/peak_memory.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
