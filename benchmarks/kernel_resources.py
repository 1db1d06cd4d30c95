"""Registers, spills and occupancy of the fused kernels on Hopper, without a GPU.

Compiles the kernel source as NVRTC gets it with nvcc for sm_90, for the
builds that the seed-dense bench (100 random loans, 31 haircuts: two
stages) and the single-haircut bench (one pass) use, reads ptxas's resource
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
from gridstress.engine import prepare

ROOT = Path(__file__).resolve().parents[1]
SM = {"registers": 65536, "shared_bytes": 233472, "warps": 64, "blocks": 32,
      "reserved_shared_per_block": 1024, "register_unit": 256, "sms": 132}


def resources(variant: K.Variant) -> dict[str, dict[str, int]]:
    """ptxas's report for each kernel of a build: registers, stack, spills."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("nvcc is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "gs.cu"
        src.write_text(K.kernel_source(), encoding="utf-8")
        res = subprocess.run([nvcc, "-arch=sm_90", *K.NVRTC_OPTIONS, *variant.defines(),
                              "-cubin", "-Xptxas", "-v", "-o", str(Path(tmp) / "gs.cubin"),
                              str(src)], capture_output=True, text=True, check=True)
    out: dict[str, dict[str, int]] = {}
    lines = res.stderr.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"Function properties for (gs_\w+)", line)
        if not m:
            continue
        stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads", lines[i + 1])
        regs = re.search(r"Used (\d+) registers", lines[i + 2])
        out[m.group(1)] = {"registers": int(regs.group(1)), "stack_bytes": int(stack.group(1)),
                           "spill_store_bytes": int(stack.group(2)),
                           "spill_load_bytes": int(stack.group(3))}
    return out


def occupancy(registers: int, threads: int, shared_bytes: int) -> dict[str, int]:
    """Thread blocks and warps of one launch that an SM holds at once."""
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(registers * 32 / SM["register_unit"]) * SM["register_unit"]
    by_registers = (SM["registers"] // per_warp) // warps
    by_shared = SM["shared_bytes"] // (shared_bytes + SM["reserved_shared_per_block"])
    blocks = min(by_registers, by_shared, SM["warps"] // warps, SM["blocks"])
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps,
            "limited_by": min((by_registers, "registers"), (by_shared, "shared memory"),
                              (SM["warps"] // warps, "warps"), (SM["blocks"], "blocks"))[1]}


def launches(label: str, cfg, threads: int = K.THREADS_PER_BLOCK,
             path_shared: int = K.PATH_SHARED_BYTES, recovery: bool = True) -> list[dict]:
    run = prepare(cfg, "numpy")
    pf = run.portfolio
    layout = K.block_layout({a.name: a.array for a in cfg.axes}, cfg.scenario)
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    staged = K.two_stage(Q)
    variant = (K.choose_variant(Q, len(pf.segments), K.RECOVER_Q_PER_THREAD) if staged
               else K.choose_variant(Q, len(pf.segments)))
    shape = K.launch_shape(A, B, pf.n_loans, pf.horizon, threads, path_shared,
                           variant=variant.path_stage() if staged else variant,
                           rent_periods=K.rent_periods(pf))
    rows = []
    path = resources(shape.variant)["gs_grid_v1"]
    plan = K.launch_plan(A, B * Q, K.record_a(pf.n_loans, B) if staged else None)
    widest = max(p.path[1] - p.path[0] for p in plan)
    shared = shape.shared_bytes(pf.horizon, K.rent_periods(pf))
    occ = occupancy(path["registers"], shape.threads, shared)
    blocks = shape.n_blocks(widest, B, 1 if staged else Q)
    rows.append({"grid": label, "kernel": "gs_grid_v1", "variant": list(shape.variant.defines()),
                 **path, "threads_setting": threads, "shared_budget": path_shared,
                 "threads_per_block": shape.threads, "loan_tile": shape.loan_tile,
                 "shared_bytes": shared,
                 "launches": len(plan), "blocks_in_widest_launch": blocks, **occ,
                 "waves": blocks / (occ["blocks_per_sm"] * SM["sms"])})
    if staged and recovery:
        q_tiles = math.ceil(Q / variant.q_per_thread)
        rshape = K.recover_shape(B, q_tiles, pf.n_loans)
        rec = resources(variant)["gs_recover_v1"]
        occ = occupancy(rec["registers"], rshape.threads, rshape.shared_bytes())
        blocks = rshape.n_blocks(A, B, q_tiles)
        rows.append({"grid": label, "kernel": "gs_recover_v1",
                     "variant": list(variant.defines()), **rec,
                     "threads_per_block": rshape.threads, "shared_bytes": rshape.shared_bytes(),
                     "launches": sum(len(p.slabs) for p in plan),
                     "blocks_in_all_launches": blocks, **occ,
                     "waves": blocks / (occ["blocks_per_sm"] * SM["sms"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grids = {
        "seed-dense (401x181x31), 100 random loans": bench_config(
            100, config=ROOT / "configs/seed-dense.yaml"),
        "1M cells, one haircut, 100 random loans": bench_config(100, cells=1_000_000),
    }
    rows = [row for label, cfg in grids.items() for row in launches(label, cfg)]
    sweep = [row for label, cfg in grids.items() for threads in (64, 128, 256)
             for budget in (16 * 1024, K.PATH_SHARED_BYTES, K.SHARED_BYTES)
             for row in launches(label, cfg, threads, budget, recovery=False)]
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    emit({"date": datetime.now(UTC).isoformat(timespec="seconds"),
          "command": " ".join(["python", *sys.argv]),
          "compiler": nvcc.strip().splitlines()[-1], "target": "sm_90 (H100, H200)",
          "sm_limits": SM, "defaults": rows, "path_kernel_sweep": sweep}, args.out)


if __name__ == "__main__":
    main()
