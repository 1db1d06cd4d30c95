"""Startup and end-to-end time of the CLI, and where a run's time goes.

Measured on one machine in one run, each command in a fresh process (median
of several), the code of this working tree ("after") and, with ``--before
REV``, of commit REV ("before", from a temporary git worktree) run in
alternation, so that both see the same machine:

- startup: ``python -c "import numpy"`` (the floor), ``gridstress --help``,
  ``gridstress validate configs/seed.yaml`` and ``gridstress run
  configs/seed.yaml`` (default scheduler), wall seconds;
- end to end, for configs/seed.yaml, configs/seed-dense.yaml and a 10M-cell
  grid (seed-dense's axes with 801 crypto drawdowns), with the synchronous
  scheduler: the CLI's wall seconds;
- for this tree, the split of the same work done step by step in this
  process, under the heap settings the CLI uses (gridstress/heap.py):
  ``imports`` (a fresh ``python -c`` that imports what ``run`` imports),
  ``model`` (every block evaluated, nothing stored: the median of
  ``MODEL_PASSES`` passes), ``writes`` (the partial
  store created, every block written into it and the store finished) and
  ``headline`` (the figures ``run`` prints, from the blocks' results).
  ``end_to_end_over_model`` is the CLI's wall over this model time.

Both trees run as ``python -m gridstress`` with their bytecode compiled
first, so neither pays for compiling its sources.

    python benchmarks/startup.py [--before REV] [--label NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import yaml
from _common import emit

ROOT = Path(__file__).resolve().parents[1]
#: What ``gridstress run`` imports before it computes.
#: Passes over the blocks whose median is the model time.
MODEL_PASSES = 5
#: Runs of each end-to-end command, in alternation; the median is quoted.
E2E_REPEATS = 5
RUN_IMPORTS = (
    "import gridstress.cli.run, gridstress.config, gridstress.engine, gridstress.cube, "
    "gridstress.headline"
)


#: Where the commands run: not a source tree, which ``python -m`` would put
#: first on sys.path.
NEUTRAL = Path(tempfile.gettempdir())


def source_of(tree: Path) -> Path:
    """The gridstress package that ``cli(tree, ...)`` runs (checked to be ``tree``'s)."""
    found = subprocess.run(
        [
            "env",
            f"PYTHONPATH={tree}",
            sys.executable,
            "-c",
            "import gridstress; print(gridstress.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=NEUTRAL,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: python -m gridstress runs {found} instead")
    return Path(found)


def cli(tree: Path, *args: str) -> list[str]:
    """The command line of ``gridstress ARGS`` run from the sources in ``tree``
    (ahead of any PYTHONPATH already set, such as carried wheels)."""
    path = os.pathsep.join(
        [str(tree)] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])
    )
    return ["env", f"PYTHONPATH={path}", sys.executable, "-m", "gridstress", *args]


@contextlib.contextmanager
def worktree(rev: str, folder: Path) -> Iterator[Path]:
    """A checkout of ``rev`` under ``folder``, removed afterwards."""
    path = folder / "before"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=True
        )


def compiled(tree: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "gridstress")],
        check=True,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": ""},
    )
    return tree


def walls(
    commands: dict[str, list[str]], repeats: int, out: dict[str, Path] | None = None
) -> dict[str, float]:
    """Median wall seconds of each command, run ``repeats`` times in alternation
    in fresh processes; ``out[key]``, the command's output, is removed before
    each run (untimed)."""
    times: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(repeats):
        for key, args in commands.items():
            if out is not None and out[key].exists():
                shutil.rmtree(out[key])
            t0 = time.perf_counter()
            subprocess.run(
                args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=NEUTRAL
            )
            times[key].append(time.perf_counter() - t0)
    return {key: round(median(values), 3) for key, values in times.items()}


def ten_million(folder: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "seed-dense.yaml").read_text())
    raw["grid"]["crypto_drawdown"]["num"] = 801
    raw["name"] = "seed-10m"
    raw["portfolio"] = str(ROOT / "configs" / "portfolios" / "seed.csv")
    path = folder / "seed-10m.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def split(config: Path, folder: Path, backend: str = "numpy") -> dict:
    """The run's steps one after another in this process, timed apart; on a
    GPU backend ``model_s`` is the kernels' time with the copy of the results
    to the host, and ``kernel_s`` the kernels' own (CUDA events)."""
    sys.path.insert(0, str(ROOT))
    from gridstress import load_config
    from gridstress.headline import block_headline, combine
    from gridstress.heap import keep_freed_memory
    from gridstress.prepared import evaluate_checked, prepare
    from gridstress.store import create_store, finish_store, partial_path, store_block

    keep_freed_memory()
    imports = walls({"imports": [sys.executable, "-c", RUN_IMPORTS]}, 5)["imports"]
    run = prepare(load_config(config), backend)
    passes, kernel = [], []
    for _ in range(MODEL_PASSES):
        if run.fused is not None:
            run.fused.reset_timers()
        t0 = time.perf_counter()
        for block in run.plan:
            evaluate_checked(run, block, copy=False)
        passes.append(time.perf_counter() - t0)
        if run.fused is not None:
            kernel.append(run.fused.kernel_seconds)
    model = median(passes)
    store = partial_path(folder / "split.zarr")
    writes = figures = 0.0
    t0 = time.perf_counter()
    create_store(store, run, {(run.backend.name, run.backend.device, run.engine)})
    writes += time.perf_counter() - t0
    parts = []
    for block in run.plan:
        results = evaluate_checked(run, block, copy=False)
        t1 = time.perf_counter()
        parts.append(block_headline(run.config, block, results))
        t2 = time.perf_counter()
        store_block(store, run.config, block, results)
        figures += t2 - t1
        writes += time.perf_counter() - t2
    t0 = time.perf_counter()
    combine(run.config, parts)
    figures += time.perf_counter() - t0
    t0 = time.perf_counter()
    out = finish_store(store, folder / "split.zarr", set())
    writes += time.perf_counter() - t0
    shutil.rmtree(out)
    return {
        "imports_s": round(imports, 3),
        "model_s": round(model, 4),
        **({"kernel_s": round(median(kernel), 4), "engine": run.engine} if kernel else {}),
        "writes_s": round(writes, 3),
        "headline_s": round(figures, 3),
        "cells": run.config.n_cells,
        "blocks": len(run.plan),
    }


def measure(trees: dict[str, Path], folder: Path) -> dict:
    for tree in trees.values():
        source_of(tree)

    def each(*args: str) -> dict[str, list[str]]:
        return {label: cli(tree, *args) for label, tree in trees.items()}

    numpy_s = walls({"numpy": [sys.executable, "-c", "import numpy"]}, 10)["numpy"]
    help_s = walls(each("--help"), 10)
    startup: dict[str, dict] = {
        label: {
            "python_import_numpy_s": numpy_s,
            "help_s": help_s[label],
            "help_over_import_numpy": round(help_s[label] / numpy_s, 2),
        }
        for label in trees
    }
    validate = walls(each("validate", str(ROOT / "configs/seed.yaml")), 5)
    outs = {label: folder / f"seed-default-{label}.zarr" for label in trees}
    run_seed = walls(
        {
            label: cli(tree, "run", str(ROOT / "configs/seed.yaml"), "--out", str(outs[label]))
            for label, tree in trees.items()
        },
        3,
        outs,
    )
    for label in trees:
        startup[label] |= {
            "validate_seed_s": validate[label],
            "run_seed_default_scheduler_s": run_seed[label],
        }
    ends: dict[str, dict] = {label: {} for label in trees}
    for name, config in (
        ("seed", ROOT / "configs/seed.yaml"),
        ("seed-dense", ROOT / "configs/seed-dense.yaml"),
        ("10M", ten_million(folder)),
    ):
        outs = {label: folder / f"{name}-{label}.zarr" for label in trees}
        e2e = walls(
            {
                label: cli(
                    tree,
                    "run",
                    str(config),
                    "--scheduler",
                    "synchronous",
                    "--out",
                    str(outs[label]),
                )
                for label, tree in trees.items()
            },
            E2E_REPEATS,
            outs,
        )
        for label in trees:
            ends[label][name] = {"cli_synchronous_s": e2e[label]}
        steps = split(config, folder)
        ends["after"][name] |= steps | {
            "end_to_end_over_model": round(e2e["after"] / steps["model_s"], 2)
        }
        print(name, {label: ends[label][name] for label in trees}, flush=True)
    return {label: {"startup": startup[label], "end_to_end": ends[label]} for label in trees}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--before",
        default=None,
        metavar="REV",
        help="also measure commit REV, in alternation with this tree",
    )
    ap.add_argument("--label", default="", help="what this measures")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()
    result = {
        "benchmark": "startup",
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/startup.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            trees = {"after": compiled(ROOT)}
            if args.before:
                result["before"] = subprocess.run(
                    ["git", "-C", str(ROOT), "rev-parse", args.before],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                trees = {
                    "before": compiled(stack.enter_context(worktree(args.before, folder))),
                    **trees,
                }
            result |= measure(trees, folder)
    emit(result, args.out)


if __name__ == "__main__":
    main()
