"""``gridstress bench``: the three ways to evaluate a grid, timed in one run.

On one portfolio and one grid, in one process:

(a) ``numpy``: the NumPy backend on one CPU core;
(b) ``cupy-xp``: the same array code on CuPy arrays (the drop-in port);
(c) ``fused``: the fused CUDA kernel (:mod:`gridstress.kernels`).

Each is warmed up on a small grid first, then timed over every block of the
grid, the copy of the results to the host included.  Throughput is given in
loan-periods per second: cells x the sum of each loan's periods / seconds.
For the fused kernel the kernel's own time (CUDA events) is reported too,
with the share of the card's FP64 peak reached by the FLOPs of
:func:`flops_per_loan_period` (``benchmarks/flops.md`` explains the count).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .config import config_from_dict, load_config
from .errors import InputError
from .inputs import RunConfig
from .prepared import prepare
from .synthetic import random_loans, v1_loans

ENGINES = ("numpy", "cupy-xp", "fused")


#: The model settings a bench runs: v1's (a deep market: the loan-outer
#: kernel) or v2's defaults (the market step active: the period-outer kernels).
MODELS = ("v1", "v2")


def bench_config(
    loans: int = 100,
    cells: int = 1_000_000,
    config: str | Path | None = None,
    seed: int = 0,
    haircuts: int = 1,
    model: str = "v1",
) -> RunConfig:
    """A config with ``loans`` random loans on the grid of ``config`` or, without
    one, on a square deflation x crypto grid of about ``cells`` cells with
    ``haircuts`` haircut values (one: no default path is shared).

    ``model="v1"`` gives the loans and the scenario model v1's settings
    (model.md: a deep market, no cash above the reserve, no cash-flow
    refinancing, LTV on market value); ``"v2"`` keeps the v2 defaults, the
    market step included.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {model!r}")
    rng = np.random.default_rng(seed)
    portfolio = random_loans(rng, loans)
    if config is not None:
        base = load_config(config)
        raw: dict[str, Any] = {
            "name": f"bench-{base.name}",
            "periods_per_year": base.periods_per_year,
            "scenario": dict(base.scenario),
            "grid": {a.name: {"values": [float(x) for x in a.array]} for a in base.axes},
        }
    else:
        path_cells = max(1, math.ceil(cells / haircuts))
        n_d = max(1, round(math.sqrt(path_cells)))
        n_c = max(1, math.ceil(path_cells / n_d))
        raw = {
            "name": f"bench-{loans}-loans",
            "periods_per_year": 4,
            "grid": {
                "deflation": {"start": -0.1, "stop": 0.6, "num": n_d},
                "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": n_c},
                "haircut": (
                    {"values": [0.4]}
                    if haircuts == 1
                    else {"start": 0.0, "stop": 0.9, "num": haircuts}
                ),
            },
        }
    if model == "v1":
        portfolio = v1_loans(portfolio)
        raw["scenario"] = {**raw.get("scenario", {}), "market_depth_gpus": math.inf}
    raw["portfolio"] = portfolio
    return config_from_dict(raw, where="bench")


def loan_periods(run) -> int:
    """Cells x the sum of each loan's periods."""
    return int(math.prod(run.plan.shape) * int(np.sum(run.portfolio.n)))


def flops_per_loan_period(run) -> float:
    """FP64 operations per loan-period of the fused kernel on this portfolio and grid.

    Counted from ``kernels/gridstress.cuh`` (``benchmarks/flops.md``): each
    add, subtract, multiply, divide, min, max and comparison of doubles is one
    operation; ``pow`` is counted as 20.  The d-only tables are built once
    per thread block and shared by its mining values, so their cost per
    loan-period is divided by the block's ``nb_block``; the rent index and
    discount factors are shared by the loans as well, and so are the periods
    of a loan without mining or crypto collateral (its path is computed once
    per block).
    """
    from .kernels import launch_shape, rent_periods

    pf = run.portfolio
    v = pf.values
    shape = run.plan.shape
    dims = [a.name for a in run.config.axes]
    b_count = math.prod(
        n for d, n in zip(dims, shape) if d in ("crypto_drawdown", "drawdown_periods")
    )
    a_count = math.prod(n for d, n in zip(dims, shape) if d in ("deflation", "discount_rate"))
    q_count = math.prod(
        n for d, n in zip(dims, shape) if d in ("haircut", "crypto_haircut", "liquidation_cost")
    )
    nb = launch_shape(a_count, b_count, pf.n_loans, pf.horizon).nb_block
    n = pf.n.astype(float)
    # Per period of every loan: price (3), cash (3), payment test (1),
    # DSCR pre-test (4) and the division with its minimum (2, where it runs).
    base = 3 + 3 + 1 + 4 + 2
    mining = np.where(v["mining_revenue"] > 0, 5, 0)  # mul, sub, max, mul, add
    covenant = np.where(v["min_dscr"] > 0, 3, 0)  # compare, add, compare
    ltv = np.where(np.isfinite(pf.max_ltv), 6, 0)  # collateral (3), test (3)
    # A loan without mining or crypto collateral runs its periods once per
    # thread block; each of the block's cells then takes its path (1).
    b_free = (v["mining_revenue"] <= 0) & (v["crypto_collateral"] == 0)
    per_period = np.where(
        b_free, (base + covenant + ltv) * n / nb + 1, (base + mining + covenant + ltv) * n
    )
    # Tables, per (a value, loan): about 25 operations per period and the
    # appraisal's discount pow (20); per a value, one pow per period of the
    # discount factors and of the rent index.
    factors = 20 * (pf.horizon + rent_periods(pf)) / pf.n_loans
    tables = (25 * np.maximum(n, pf.n_life) + 20 + factors) / nb
    # Maturity test at k = n (5) and, per default, recovery set-up (8 + pow)
    # plus 9 per recovery cell; counted as if every loan defaulted.
    per_loan = 5 + 28 + 9 * q_count
    total = float(np.sum(per_period + tables + per_loan))
    return total / q_count / float(np.sum(n))


def fp64_peak(cupy) -> tuple[float, str]:
    """The device's FP64 peak without tensor cores, in FLOP/s, and its basis."""
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    sms, major, minor = props["multiProcessorCount"], props["major"], props["minor"]
    clock_hz = _max_sm_clock_hz(cupy, dev.id)
    # FP64 FMA units per SM: 64 on the 9.0 parts (H100, H200), 32 on 6.0, 7.0
    # and 8.0 (P100, V100, A100), 2 on the rest.
    per_sm = {(9, 0): 64, (8, 0): 32, (7, 0): 32, (6, 0): 32}.get((major, minor), 2)
    peak = sms * per_sm * 2 * clock_hz
    return peak, (
        f"{sms} SMs x {per_sm} FP64 FMA/clock x 2 FLOP x "
        f"{clock_hz / 1e9:.3f} GHz (compute capability {major}.{minor})"
    )


def _max_sm_clock_hz(cupy, device: int) -> float:
    try:
        khz = cupy.cuda.runtime.deviceGetAttribute(13, device)  # cudaDevAttrClockRate
        if khz > 0:
            return khz * 1e3
    except Exception:
        pass
    out = subprocess.run(
        [
            "nvidia-smi",
            "-i",
            str(device),
            "--query-gpu=clocks.max.sm",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[0]) * 1e6


def time_engine(config: RunConfig, engine: str, repeats: int = 1) -> dict[str, Any]:
    """Evaluate every block of the grid with one engine; seconds and throughput.

    Results are taken as ``write_cube`` takes them (``copy=False``).  With
    ``repeats`` > 1 the grid is evaluated that many times by the same prepared
    run and the last pass is reported (first-use allocations excluded); the
    first pass's seconds are kept as ``first_pass_seconds``.
    """
    backend = "numpy" if engine == "numpy" else "cupy"
    run = prepare(config, backend, kernel="xp" if engine == "cupy-xp" else "fused")
    if engine == "fused" and run.fused is None:
        raise InputError(f"the fused kernel does not cover this run: {run.note}")
    sync = _synchronize(backend)
    passes = []
    for _ in range(repeats):
        if run.fused is not None:
            run.fused.reset_timers()
        sync()
        start = time.perf_counter()
        for block in run.plan:
            run.evaluate_block(block, copy=False)
        sync()
        passes.append(time.perf_counter() - start)
    seconds = passes[-1]
    result = {
        "engine": engine,
        "seconds": seconds,
        "cells": int(math.prod(run.plan.shape)),
        "blocks": len(run.plan),
        "block_shape": list(run.plan.chunks),
        "loan_periods": loan_periods(run),
        "loan_periods_per_s": loan_periods(run) / seconds,
        "passes": repeats,
        "first_pass_seconds": passes[0],
    }
    if run.fused is not None:
        result["kernel_seconds"] = run.fused.kernel_seconds
        result["kernel_loan_periods_per_s"] = loan_periods(run) / run.fused.kernel_seconds
        result["kernel_share_of_wall"] = run.fused.kernel_seconds / seconds
        result["stage_seconds"] = dict(run.fused.stage_seconds)
        from .kernels import block_layout

        # Some cell with a market of finite depth: the period-outer market step.
        axes = {a.name: a.array for a in run.config.axes}
        market = block_layout(axes, run.config.scenario).market
        result["kernel_mode"] = "market step" if market else "loan-outer"
        if not market:  # the count is the loan-outer kernel's
            result["flops_per_loan_period"] = flops_per_loan_period(run)
    return result


def _synchronize(backend: str):
    if backend == "numpy":
        return lambda: None
    import cupy

    return cupy.cuda.runtime.deviceSynchronize


def compile_times() -> dict[str, float]:
    """Seconds to get the compiled kernel in a new process: with an empty CuPy
    kernel cache (NVRTC compiles) and again with that cache filled."""
    code = (
        "import time, cupy; cupy.cuda.runtime.getDeviceCount(); "
        "from gridstress.kernels import kernel_function; t = time.perf_counter(); "
        "kernel_function(cupy); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, CUPY_CACHE_DIR=cache)
        times = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            )
            times.append(float(done.stdout.strip().splitlines()[-1]))
    return {"first_start_s": times[0], "warm_start_s": times[1]}


def run_bench(
    loans: int = 100,
    cells: int = 1_000_000,
    config: str | Path | None = None,
    engines: tuple[str, ...] = ENGINES,
    seed: int = 0,
    haircuts: int = 1,
    log=print,
    compile_timing: bool = True,
    model: str = "v1",
) -> dict[str, Any]:
    """Time the engines on one portfolio and grid; return the results as a dict."""
    cfg = bench_config(loans, cells, config, seed, haircuts, model)
    warm = bench_config(loans, 5_000, None, seed, 3, model)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["gridstress", "bench", *sys.argv[2:]])
        if sys.argv[1:2] == ["bench"]
        else " ".join(sys.argv),
        "host": platform.node(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "loans": loans,
        "seed": seed,
        "model": model,
        "grid": {a.name: len(a.array) for a in cfg.axes},
        "cells": int(math.prod(cfg.shape)),
        "engines": {},
    }
    from .backend import _cpu_name

    results["cpu"] = _cpu_name()
    if any(e != "numpy" for e in engines):
        import cupy

        from .backend import cupy_device_name

        results["device"] = cupy_device_name(cupy)
        results["cupy"] = cupy.__version__
        peak, how = fp64_peak(cupy)
        results["fp64_peak_flops"] = peak
        results["fp64_peak_basis"] = how
        if "fused" in engines and compile_timing:
            results["compile"] = compile_times()
            log(
                f"kernel compile: first start {results['compile']['first_start_s']:.2f} s, "
                f"warm start {results['compile']['warm_start_s']:.3f} s"
            )
    for engine in engines:
        time_engine(warm, engine)  # warm-up: compilation, caches, pools
        res = time_engine(cfg, engine, repeats=1 if engine == "numpy" else 3)
        results["engines"][engine] = res
        log(
            f"{engine:8s} {res['seconds']:10.4f} s  {res['loan_periods_per_s']:.3e} "
            "loan-periods/s"
            + (
                f"  (kernel {res['kernel_seconds']:.4f} s, "
                f"{res['kernel_loan_periods_per_s']:.3e}/s, "
                f"{res['kernel_share_of_wall']:.0%} of wall; path "
                f"{res['stage_seconds']['path']:.4f} s, recovery "
                f"{res['stage_seconds']['recover']:.4f} s)"
                if "kernel_seconds" in res
                else ""
            )
        )
    eng = results["engines"]
    ratios = {}
    if "fused" in eng:
        f = eng["fused"]
        if "fp64_peak_flops" in results and "flops_per_loan_period" in f:
            f["fp64_fraction_of_peak"] = (
                f["kernel_loan_periods_per_s"]
                * f["flops_per_loan_period"]
                / results["fp64_peak_flops"]
            )
        for other in ("numpy", "cupy-xp"):
            if other in eng:
                ratios[f"fused_vs_{other}_wall"] = eng[other]["seconds"] / f["seconds"]
                ratios[f"fused_kernel_vs_{other}_wall"] = (
                    eng[other]["seconds"] / f["kernel_seconds"]
                )
    if "cupy-xp" in eng and "numpy" in eng:
        ratios["cupy_xp_vs_numpy_wall"] = eng["numpy"]["seconds"] / eng["cupy-xp"]["seconds"]
    results["ratios"] = ratios
    for name, value in ratios.items():
        log(f"{name}: {value:,.1f}x")
    if "fused" in eng and "fp64_fraction_of_peak" in eng["fused"]:
        log(
            f"fused kernel: {eng['fused']['flops_per_loan_period']:.1f} FLOP/loan-period, "
            f"{eng['fused']['fp64_fraction_of_peak']:.1%} of FP64 peak"
        )
    return results


def write_results(results: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return out
