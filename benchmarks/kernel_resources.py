"""Registers, spills and occupancy of the fused kernels on Hopper, without a GPU.

Compiles the kernel source as NVRTC gets it with nvcc for sm_90, for the
builds that the seed-dense bench (100 random loans, 37 haircuts: two
stages) and the single-haircut bench (one pass) use, with a deep market (the
loan-outer kernel) and with the market step, and the model v3 builds of the
seed-generations grid (rent and crypto paths, the generation shock as an
axis, the market's appraisal) in both, reads ptxas's resource
report, and works out from the launch shapes how many thread blocks and
warps of each launch an H100/H200 SM holds at once (65,536 registers,
228 KB of shared memory, 64 warps and 32 blocks per SM): with the default
launch parameters, and for the path kernel over threads per block and
shared-memory budgets.

    python benchmarks/kernel_resources.py --out benchmarks/results/kernel_resources.json
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from _common import emit

from gridstress import kernels as K
from gridstress.bench import bench_config
from gridstress.prepared import prepare

ROOT = Path(__file__).resolve().parents[1]
SM = {
    "registers": 65536,
    "shared_bytes": 233472,
    "warps": 64,
    "blocks": 32,
    "reserved_shared_per_block": 1024,
    "register_unit": 256,
    "sms": 132,
}


def resources(variant: K.Variant) -> dict[str, dict[str, int]]:
    """ptxas's report for each kernel of a build: registers, stack, spills."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("nvcc is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "gs.cu"
        src.write_text(K.kernel_source(), encoding="utf-8")
        res = subprocess.run(
            [
                nvcc,
                "-arch=sm_90",
                *K.NVRTC_OPTIONS,
                *variant.compile_options(),
                "-cubin",
                "-Xptxas",
                "-v",
                "-o",
                str(Path(tmp) / "gs.cubin"),
                str(src),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    out: dict[str, dict[str, int]] = {}
    lines = res.stderr.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"Function properties for (gs_\w+)", line)
        if not m:
            continue
        stack = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
            r"(\d+) bytes spill loads",
            lines[i + 1],
        )
        regs = re.search(r"Used (\d+) registers", lines[i + 2])
        out[m.group(1)] = {
            "registers": int(regs.group(1)),
            "stack_bytes": int(stack.group(1)),
            "spill_store_bytes": int(stack.group(2)),
            "spill_load_bytes": int(stack.group(3)),
        }
    return out


def occupancy(registers: int, threads: int, shared_bytes: int) -> dict[str, int]:
    """Thread blocks and warps of one launch that an SM holds at once."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(registers * 32 / SM["register_unit"]) * SM["register_unit"]
    by_registers = (SM["registers"] // per_warp) // warps
    by_shared = SM["shared_bytes"] // (shared_bytes + SM["reserved_shared_per_block"])
    blocks = min(by_registers, by_shared, SM["warps"] // warps, SM["blocks"])
    return {
        "blocks_per_sm": blocks,
        "warps_per_sm": blocks * warps,
        "limited_by": min(
            (by_registers, "registers"),
            (by_shared, "shared memory"),
            (SM["warps"] // warps, "warps"),
            (SM["blocks"], "blocks"),
        )[1],
    }


def launches(
    label: str,
    cfg,
    threads: int = K.THREADS_PER_BLOCK,
    path_shared: int = K.PATH_SHARED_BYTES,
    recovery: bool = True,
    paths: tuple[str, ...] = (),
) -> list[dict]:
    pf = prepare(cfg, "numpy").portfolio
    layout = K.block_layout({a.name: a.array for a in cfg.axes}, cfg.scenario)
    settings = K.KernelSettings(threads=threads, path_shared_bytes=path_shared)
    kp = K.kernel_plan(pf, layout, settings, paths=paths)
    rows = []
    for kernel, label_blocks in (
        (K.KERNEL_NAME, "blocks_in_widest_launch"),
        (K.TABLES_NAME, "blocks_in_widest_launch"),
        (K.MARKET_NAME, "blocks_in_widest_launch"),
        (K.RECOVER_NAME, "blocks_in_all_launches"),
    ):
        runs = [ln for ln in kp.launches(pf, layout, {}) if ln.kernel == kernel]
        if not runs or (kernel == K.RECOVER_NAME and not recovery):
            continue
        first = runs[0]
        res = resources(first.variant)[kernel]
        occ = occupancy(res["registers"], first.threads, first.shared_bytes)
        blocks = (
            sum(ln.blocks for ln in runs)
            if kernel == K.RECOVER_NAME
            else max(ln.blocks for ln in runs)
        )
        row = {"grid": label, "kernel": kernel, "variant": list(first.variant.defines()), **res}
        if kernel == K.KERNEL_NAME and kp.shape is not None:
            row |= {
                "threads_setting": threads,
                "shared_budget": path_shared,
                "loan_tile": kp.shape.loan_tile,
            }
        rows.append(
            row
            | {
                "threads_per_block": first.threads,
                "shared_bytes": first.shared_bytes,
                "launches": len(runs),
                label_blocks: blocks,
                **occ,
                "waves": blocks / (occ["blocks_per_sm"] * SM["sms"]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grids = {
        "seed-dense, 100 random loans, v1 (deep market)": bench_config(
            100, config=ROOT / "configs/seed-dense.yaml"
        ),
        "1M cells, one haircut, 100 random loans, v1 (deep market)": bench_config(
            100, cells=1_000_000
        ),
    }
    market = {
        "seed-dense, 100 random loans, v2 (market step)": bench_config(
            100, config=ROOT / "configs/seed-dense.yaml", model="v2"
        ),
        "1M cells, one haircut, 100 random loans, v2 (market step)": bench_config(
            100, cells=1_000_000, model="v2"
        ),
    }
    # Model v3: the shipped generation-shock grid with a rent and a crypto path.
    generations = ROOT / "configs/seed-generations.yaml"
    v3 = {
        "seed-generations, 100 random loans, v3 with both paths (deep market)": bench_config(
            100, config=generations
        ),
        "seed-generations, 100 random loans, v3 with both paths (market step)": bench_config(
            100, config=generations, model="v2"
        ),
    }
    rows = [row for label, cfg in (grids | market).items() for row in launches(label, cfg)]
    rows += [
        row
        for label, cfg in v3.items()
        for row in launches(label, cfg, paths=("rent_path", "crypto_path"))
    ]
    sweep = [
        row
        for label, cfg in grids.items()
        for threads in (64, 128, 256)
        for budget in (16 * 1024, K.PATH_SHARED_BYTES, K.SHARED_BYTES)
        for row in launches(label, cfg, threads, budget, recovery=False)
    ]
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    emit(
        {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "compiler": nvcc.strip().splitlines()[-1],
            "target": "sm_90 (H100, H200)",
            "sm_limits": SM,
            "defaults": rows,
            "path_kernel_sweep": sweep,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
