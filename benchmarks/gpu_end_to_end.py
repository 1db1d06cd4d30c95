"""``gridstress run`` end to end on a GPU, against the kernels' time.

For configs/seed-dense.yaml and a 10M-cell grid (seed-dense's axes with 801
crypto drawdowns, ``startup.ten_million``), in one run on one machine:

- ``cli_synchronous_s``: the wall seconds of ``gridstress run CONFIG
  --backend cupy --scheduler synchronous`` in a fresh process (median of
  ``REPEATS``; the kernel cache is warm after the first);
- the same work step by step in this process (``startup.split`` on the cupy
  backend): ``model_s``, the kernels with the copy of the results to the
  host, ``kernel_s``, the kernels alone (CUDA events), ``writes_s``,
  ``headline_s``, ``imports_s``;
- ``end_to_end_over_kernel_copy``: the CLI's wall over ``model_s``.

    python benchmarks/gpu_end_to_end.py [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
from pathlib import Path

from _common import emit
from startup import ROOT, cli, split, ten_million, walls

#: Runs of each CLI command; the median is quoted.
REPEATS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    import cupy

    from gridstress.backend import cupy_device_name

    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": cupy_device_name(cupy),
        "command": "python benchmarks/gpu_end_to_end.py",
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="gridstress-e2e-") as tmp:
        folder = Path(tmp)
        for name, config in (
            ("seed-dense", ROOT / "configs" / "seed-dense.yaml"),
            ("10M", ten_million(folder)),
        ):
            out = folder / f"{name}.zarr"
            command = cli(
                ROOT,
                "run",
                str(config),
                "--backend",
                "cupy",
                "--scheduler",
                "synchronous",
                "--out",
                str(out),
            )
            wall = walls({name: command}, REPEATS, {name: out})[name]
            steps = split(config, folder, "cupy")
            results["runs"][name] = {
                "cli_synchronous_s": wall,
                **steps,
                "end_to_end_over_kernel_copy": round(wall / steps["model_s"], 2),
            }
            print(name, results["runs"][name], flush=True)
    emit(results, args.out)


if __name__ == "__main__":
    main()
