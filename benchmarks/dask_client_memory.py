"""Peak memory of the client of a grid run on a Dask cluster, 1M vs 8M cells.

Starts a ``dask scheduler`` and 2 single-threaded ``dask worker`` processes
on 127.0.0.1 and runs configs/seed-dense.yaml refined to about 1 and 8
million cells against them, each run in a fresh process, reporting that
process's peak resident set size:

- ``write_cube_peak_rss_mb``: ``gridstress.write_cube(..., scheduler_file=...)``,
  the client while blocks stream into the store.  Workers write the blocks;
  the client receives a receipt per block, so this does not grow with the
  grid (the cube itself is 88 bytes a cell).
- ``cli_peak_rss_mb``: the real ``gridstress run --scheduler-file``, which
  also reads the cube back for its headline figures, slice by slice (at most
  2**22 cells a slice, so that part grows up to 4 million cells, then stays).

    python benchmarks/dask_client_memory.py [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import emit, peak_rss_mb

from gridstress.backend import resolve_backend
from gridstress.distributed import WORKER_MALLOC_ENV

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRIDS = {  # deflation x crypto_drawdown x haircut
    "1M": (201, 161, 31),
    "8M": (401, 645, 31),
}
N_WORKERS = 2


def start_cluster(folder: Path) -> tuple[Path, list[subprocess.Popen]]:
    dask = shutil.which("dask", path=str(BIN)) or "dask"
    env = dict(os.environ, **{k: str(v) for k, v in WORKER_MALLOC_ENV.items()})
    file = folder / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    ]
    while not file.exists():
        time.sleep(0.1)
    for _ in range(N_WORKERS):
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    "--scheduler-file",
                    str(file),
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        )
    from distributed import Client

    with Client(scheduler_file=str(file), timeout=60) as client:
        client.wait_for_workers(N_WORKERS, timeout=120)
    return file, procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    exe = shutil.which("gridstress", path=str(BIN)) or "gridstress"
    base = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    base["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        file, procs = start_cluster(Path(tmp))
        try:
            for label, shape in GRIDS.items():
                cfg = dict(base, grid={k: dict(v) for k, v in base["grid"].items()})
                cells = 1
                for axis, num in zip(("deflation", "crypto_drawdown", "haircut"), shape):
                    cfg["grid"][axis]["num"] = num
                    cells *= num
                path = Path(tmp) / f"{label}.yaml"
                path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                cube = Path(tmp) / f"{label}.zarr"
                api = (
                    f"from gridstress import write_cube; write_cube({str(path)!r}, "
                    f"{str(cube)!r}, backend='numpy', scheduler_file={str(file)!r})"
                )
                api_rss, api_seconds = peak_rss_mb([sys.executable, "-c", api])
                shutil.rmtree(cube)
                rss, seconds = peak_rss_mb(
                    [
                        exe,
                        "run",
                        str(path),
                        "--backend",
                        "numpy",
                        "--scheduler-file",
                        str(file),
                        "--out",
                        str(cube),
                    ]
                )
                runs.append(
                    {
                        "grid": label,
                        "cells": cells,
                        "cube_mb_in_memory": round(cells * 88 / 2**20, 1),
                        "write_cube_peak_rss_mb": round(api_rss, 1),
                        "write_cube_seconds": round(api_seconds, 2),
                        "cli_peak_rss_mb": round(rss, 1),
                        "cli_seconds": round(seconds, 2),
                    }
                )
                shutil.rmtree(cube)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
    result = {
        "benchmark": "dask_client_memory",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/dask_client_memory.py", *sys.argv[1:]]),
        "machine": {
            "cpu": resolve_backend("numpy").device,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "cluster": f"dask scheduler + {N_WORKERS} dask workers (1 thread each) on 127.0.0.1",
        "runs": runs,
        "write_cube_growth_8M_over_1M": round(
            runs[1]["write_cube_peak_rss_mb"] / runs[0]["write_cube_peak_rss_mb"], 3
        ),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
