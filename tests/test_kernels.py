"""The fused CUDA kernel, checked without a GPU.

The kernel's arithmetic (kernels/gridstress.cuh) is built with the C++
compiler into a host library and run through the kernel's own layout, phases
and launch shapes against the NumPy backend.  The CUDA file is compiled with
nvcc where nvcc is installed (no GPU needed).  Packaging, launch planning and
chunk planning are plain Python.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    GRIDS_GPU,
    ROOT,
    assert_parity,
    make_config,
    make_v1_config,
    random_loans,
    v1_config,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gridstress import kernels as K
from gridstress import run_grid
from gridstress.backend import resolve_backend
from gridstress.config import load_config
from gridstress.grid import plan_blocks
from gridstress.model import evaluate, scenario_arrays
from gridstress.params import LIQUIDATION_PARAMS
from gridstress.prepared import PreparedRun, gpu_plan, prepare
from gridstress.variables import TRIGGERS

CXX = shutil.which("g++") or shutil.which("c++")
NVCC = shutil.which("nvcc")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on this machine")


@pytest.fixture(scope="module")
def host_folder(tmp_path_factory):
    """Where the host libraries are built (each variant once)."""
    if CXX is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    return tmp_path_factory.mktemp("host")


@pytest.fixture(scope="module")
def host_build(host_folder):
    """``build(variant)``: the host library of a kernel variant, built once."""
    return lambda variant=K.Variant(): K.build_host_library(CXX, host_folder, variant)


@pytest.fixture(scope="module")
def host_library(host_build):
    return host_build()


def test_kernel_sources_are_found_and_inlined():
    folder = K.kernel_dir()
    assert (folder / K.KERNEL).is_file() and (folder / K.HEADER).is_file()
    src = K.kernel_source()
    assert '#include "' not in src
    assert 'extern "C" __global__ void gs_grid(' in src
    assert "GS_QV_SEG" in src  # the header is inside
    assert K.NVRTC_OPTIONS == ("--std=c++17", "--fmad=false")


def test_argument_block_layout_matches_the_compiler(host_library):
    """Every field of struct GsArgs where the C++ compiler puts it, as packed."""
    size, offsets = K.args_layout_on_host(host_library)
    assert size == K.ARGS_DTYPE.itemsize
    assert offsets == K.ARGS_OFFSETS
    assert offsets == {name: K.ARGS_DTYPE.fields[name][1] for name in K.ARGS_FIELDS}
    assert len(offsets) == 49  # 26 pointers, 19 int32, 4 float64


def test_a_field_packed_elsewhere_than_the_compiler_puts_it_stops_the_build(tmp_path, monkeypatch):
    """The layout is also checked at every compile (static_assert in the
    generated header): an offset off by 8 bytes fails the host build."""
    wrong = dict(K.ARGS_OFFSETS, dt=K.ARGS_OFFSETS["dt"] + 8)
    monkeypatch.setattr(K.tables, "ARGS_OFFSETS", wrong)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        K.build_host_library(CXX, tmp_path)
    assert "GsArgs.dt offset" in failed.value.stderr


def test_the_kernel_defines_come_from_the_python_tables_only():
    """The column, flag and output-index defines are generated, and no kernel
    source defines one of them by hand; the generated values are the tables'."""
    generated = re.findall(r"^#define (GS_\w+)", K.kernel_defines(), flags=re.MULTILINE)
    # guard, 21 + 1 float columns, 6 + 1 int columns, 5 flags, 5 + 1 recovery-cell
    # rows, 4 + 1 triggers, 5 + 3 path-cell rows, 5 + 2 record rows and 2
    # counts, 6 + 1 path rows, the field list and its layout check
    assert len(generated) == len(set(generated)) == 1 + 22 + 7 + 5 + 6 + 5 + 8 + 9 + 7 + 2
    for source in K.kernel_dir().iterdir():
        if source.suffix in (".cuh", ".cu", ".cpp", ".h"):
            by_hand = set(re.findall(r"^\s*#define (GS_\w+)", source.read_text(), re.MULTILINE))
            assert not by_hand & set(generated), source.name
    src = K.kernel_source()
    assert src.count("#define GS_NF 21") == 1 and "#define GS_NPV 10" in src
    values = dict(re.findall(r"^#define (GS_\w+) (\d+)", K.kernel_defines(), re.MULTILINE))
    assert [int(values[name]) for _, name, _ in K.LOAN_F_COLUMNS] == list(range(len(K.LOAN_F)))
    assert int(values["GS_PV_TRIGGER"]) == K.TRIGGER_ROW
    assert int(values["GS_QV_SEG"]) == len(K.Q_VARIABLES)
    assert int(values["GS_B_FREE"]) == K.B_FREE
    assert (int(values["GS_NREC"]), int(values["GS_NSTATE"])) == (K.RECORD_FIELDS, K.STATE_FIELDS)
    assert int(values["GS_NPATH"]) == K.PATH_FIELDS == int(values["GS_PATH_FLEET_PV"]) + 1


GRIDS = {
    "three axes": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 9},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 7},
        "haircut": {"values": [0.0, 0.3, 0.55, 0.9]},
    },
    "discount and cost axes": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 5},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 3},
        "haircut": {"values": [0.0, 0.9]},
        "discount_rate": {"values": [0.02, 0.12]},
        "liquidation_cost": {"values": [0.0, 0.3]},
    },
    "drawdown periods axis": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 4},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
        "drawdown_periods": {"values": [1.0, 2.5, 8.0]},
        "haircut": {"values": [0.2]},
        "crypto_haircut": {"values": [0.0, 0.5]},
    },
    "one deflation": {
        "deflation": {"values": [0.3]},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 40},
        "haircut": {"values": [0.1, 0.5]},
    },
    "one crypto": {
        "deflation": {"start": -0.5, "stop": 0.9, "num": 50},
        "crypto_drawdown": {"values": [0.5]},
        "haircut": {"values": [0.1, 0.5]},
    },
}


def tuned(pf, axes, fixed, slab_a=None, records_a=None, **settings) -> K.KernelSettings:
    """KernelSettings with slabs of ``slab_a`` values of ``a`` and path launches
    of ``records_a`` values of ``a`` (as many as their records then fit)."""
    layout = K.block_layout(axes, fixed)
    b, q = layout.size("b"), layout.size("q")
    if slab_a is not None:
        settings["slab_cells"] = slab_a * b * q
    if records_a is not None:
        market = K.market_table_doubles(pf) if layout.market else None
        settings["record_bytes"] = records_a * K.record_bytes_per_a(pf.n_loans, b, market)
    return K.KernelSettings(**settings)


def launches(pf) -> list[tuple[int, int]]:
    """(threads per block, shared bytes): the default, two a values per block
    with tiles of two loans, and one a value with one loan per tile."""
    K_, J, D, P = pf.horizon, K.rent_periods(pf), K.discount_periods(pf), K.PATH_FIELDS
    return [
        (128, 48 * 1024),
        (32, 2 * 8 * (2 * (2 * K_ + P) + D + J)),
        (64, 8 * (2 * K_ + D + J + P)),
    ]


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kernel_arithmetic_matches_numpy(host_build, grid, seed):
    rng = np.random.default_rng(seed)
    cfg = make_v1_config(random_loans(rng, 13), grid=GRIDS[grid])
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape)
    # The defaults (one pass with up to 8 recovery cells per thread, or two
    # stages beyond), two stages for any grid with more than one recovery
    # cell, and one pass with one recovery cell per thread.
    for max_q in (K.MAX_Q_PER_THREAD, 1, 3):
        for threads, shared in launches(pf):
            settings = K.KernelSettings(
                max_q_per_thread=max_q, threads=threads, path_shared_bytes=shared
            )
            got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings)
            if threads == 64:  # one a value and one loan per tile
                shape = K.launch_shape(
                    1,
                    1,
                    pf.n_loans,
                    pf.horizon,
                    threads,
                    shared,
                    rent_periods=K.rent_periods(pf),
                    discount_periods=K.discount_periods(pf),
                )
                assert (shape.na_block, shape.loan_tile) == (1, 1)
            assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    # Launched in slabs of a, as the GPU backend copies results.
    settings = tuned(pf, axes, cfg.scenario, slab_a=2, max_q_per_thread=1)
    got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)


#: Grids and scenarios of model v2 for the kernels: the market step with its
#: parameters fixed or as axes among the mining axes (one depth infinite), and
#: a deep market (the loan-outer kernel) with every v2 loan field.
GRIDS_V2 = {
    "market step": (
        {
            "deflation": {"start": -0.2, "stop": 0.8, "num": 6},
            "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
            "haircut": {"values": [0.0, 0.5, 0.9]},
        },
        {"market_depth_gpus": 3e4},
    ),
    "market axes": (
        {
            "deflation": {"start": -0.2, "stop": 0.8, "num": 4},
            "market_depth_gpus": {"values": [2e3, 3e4, float("inf")]},
            "crypto_drawdown": {"values": [0.0, 0.6, 0.95]},
            "market_half_life_years": {"values": [0.25, float("inf")]},
            "book_share": {"values": [0.3, 1.0]},
            "haircut": {"values": [0.2, 0.6]},
            "discount_rate": {"values": [0.02, 0.12]},
        },
        {},
    ),
    "deep market": (
        {
            "deflation": {"start": -0.2, "stop": 0.8, "num": 7},
            "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 4},
            "haircut": {"values": [0.0, 0.3, 0.9]},
            "drawdown_periods": {"values": [1.0, 6.0]},
        },
        {"market_depth_gpus": float("inf")},
    ),
}


def _v2_case(grid: str, seed: int, loans: int = 13):
    rng = np.random.default_rng(seed)
    axes_spec, scenario = GRIDS_V2[grid]
    cfg = make_config(random_loans(rng, loans), grid=axes_spec, scenario=scenario)
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape, per_loan=True)
    return cfg, pf, axes, ref


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS_V2))
@pytest.mark.parametrize("seed", [41, 42])
def test_kernel_v2_arithmetic_matches_numpy(host_build, grid, seed):
    cfg, pf, axes, ref = _v2_case(grid, seed)
    # The v2 loan fields are all in play: kept cash, cash-flow refinancing
    # past the horizon, book-value covenants.
    assert np.any(pf.values["cash_cap"] > pf.values["cash_reserve"])
    assert np.max(pf.n + pf.n_refi) > pf.horizon and pf.book_basis.any()
    market = K.block_layout(axes, cfg.scenario).market
    assert market == (grid != "deep market")
    if market:  # the market moves prices, and so the defaults
        assert ref["market_price_min"].min() < 0.9
    else:
        assert np.all(ref["market_price_min"] == 1.0)
    for max_q in (K.MAX_Q_PER_THREAD, 1):
        for threads, shared in launches(pf):
            settings = K.KernelSettings(
                max_q_per_thread=max_q,
                threads=threads,
                path_shared_bytes=shared,
                recover_threads=threads,
                recover_shared_bytes=shared,
            )
            got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings, per_loan=True)
            assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    # Path launches of 2 values of a, finished in slabs of 1; without per-loan results.
    ref.pop("loan_loss"), ref.pop("loan_default_years")
    settings = tuned(pf, axes, cfg.scenario, slab_a=1, records_a=2)
    got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)


def _loan(**fields):
    base = {
        "segment": "neocloud",
        "principal": 1e8,
        "rate": 0.08,
        "term_years": 5.0,
        "amortization": "annuity",
        "n_gpus": 4000.0,
        "gpu_age_years": 0.0,
        "economic_life_years": 6.0,
        "rent": 2.5,
        "utilization": 0.9,
        "power_kw_per_gpu": 1.0,
        "power_price": 0.1,
        "fixed_opex_per_gpu_year": 1000.0,
        "cash_reserve": 1e7,
        "refi_advance_rate": 0.5,
        "refi_term_years": 0.0,
    }
    return base | fields


@needs_cxx
def test_market_step_with_many_loans_defaulting_in_the_same_period(host_build):
    # 12 loans whose GPUs earn nothing (rent 0.05 below the power cost 0.1:
    # idle) and who hold no cash default on their first payment; their
    # 12 x 5,000 GPUs are sold in period 1, so p_1 = 2^(-60,000 / W) = 0.5
    # where W = 60,000.  12 loans whose LTV covenant sits at 1.4 times
    # their LTV at full price then break it together in period 2 (tested
    # at p_1), and sell 12 x 4,000 GPUs more.  With W infinite they do not.
    sellers = [
        _loan(loan_id=f"A{i:02d}", rent=0.05, n_gpus=5000.0, cash_reserve=0.0, principal=5e7)
        for i in range(12)
    ]
    holders = [_loan(loan_id=f"B{i:02d}") for i in range(12)]
    grid = {
        "deflation": {"values": [0.0, 0.1]},
        "crypto_drawdown": {"values": [0.0]},
        "market_depth_gpus": {"values": [6e4, float("inf")]},
        "haircut": {"values": [0.0, 0.5]},
    }
    scenario = {"market_half_life_years": float("inf")}
    probe = prepare(make_config(holders[:1], grid=grid, scenario=scenario), "numpy").portfolio
    from gridstress.model import appraisal_table

    gpu_value = appraisal_table(probe, 0.0, 0.08, np, 0)
    ltv = [probe.owed[0, k] / (probe.values["n_gpus"][0] * gpu_value[k][0]) for k in (1, 2)]
    holders = [h | {"max_ltv": 1.4 * max(ltv)} for h in holders]
    cfg = make_config(sellers + holders, grid=grid, scenario=scenario)
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape, per_loan=True)
    ids = [ln.loan_id for ln in cfg.loans]
    years = ref["loan_default_years"][0, 0, :, 0]  # deflation 0, both depths
    sold_first = [ids.index(f"A{i:02d}") for i in range(12)]
    chained = [ids.index(f"B{i:02d}") for i in range(12)]
    np.testing.assert_array_equal(years[0, sold_first], 0.25)
    np.testing.assert_array_equal(years[0, chained], 0.5)
    assert np.all(np.isnan(years[1, chained]))  # a deep market: no chain
    # p_2 = 2^(-(60,000 + 48,000) / 60,000)
    assert ref["market_price_min"][0, 0, 0, 0] == pytest.approx(2.0 ** (-1.8), rel=1e-12)
    np.testing.assert_allclose(
        ref["default_rate_by_trigger"][0, 0, 0, 0, TRIGGERS.index("ltv")], 12e8 / 18e8
    )
    for max_q in (K.MAX_Q_PER_THREAD, 1):
        settings = K.KernelSettings(max_q_per_thread=max_q)
        got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings, per_loan=True)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@needs_cxx
def test_many_recovery_cells_and_segments_in_two_stages(host_build):
    rng = np.random.default_rng(21)
    loans = random_loans(rng, 17)
    for i, loan in enumerate(loans):  # more segments than registers hold
        loan["segment"] = f"s{i % 11}"
    cfg = make_v1_config(
        loans,
        grid={
            "deflation": {"start": -0.2, "stop": 0.8, "num": 6},
            "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
            "haircut": {"start": 0.0, "stop": 1.0, "num": 13},
            "crypto_haircut": {"values": [0.0, 0.5]},
        },
    )
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape)
    assert K.two_stage(26) and K.choose_variant(26, 11).segments_in_registers == 0
    # Recovery kernels of 1, 2 (default) and 5 recovery cells per thread, in
    # blocks of 256 threads (5 mining values x 13 recovery tiles), 64 and 32
    # (several blocks along q), with the records of all 17 loans copied at
    # once, or a few at a time (the least shared memory the path kernel
    # runs with).
    least = 8 * (2 * pf.horizon + K.discount_periods(pf) + K.rent_periods(pf) + K.PATH_FIELDS)
    for max_q, recover_q, threads, shared in (
        (K.MAX_Q_PER_THREAD, K.RECOVER_Q_PER_THREAD, K.RECOVER_THREADS, K.SHARED_BYTES),
        (5, 5, 64, least),
        (8, 1, 32, K.SHARED_BYTES),
    ):
        q_tiles = math.ceil(26 / recover_q)
        rshape = K.recover_shape(5, q_tiles, pf.n_loans, threads, shared)
        assert rshape.rb == 5 and rshape.rq == min(q_tiles, threads // 5)
        assert rshape.rec_tile == (
            pf.n_loans if shared == K.SHARED_BYTES else least // (8 * K.RECORD_FIELDS * 5)
        )
        settings = tuned(
            pf,
            axes,
            cfg.scenario,
            slab_a=4,
            path_shared_bytes=shared,
            max_q_per_thread=max_q,
            recover_q_per_thread=recover_q,
            recover_threads=threads,
            recover_shared_bytes=shared,
        )
        got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    assert 1 < least // (8 * K.RECORD_FIELDS * 5) < pf.n_loans
    # Path launches of 5 and 1 values of a (as when the records fill their
    # memory), each finished in slabs.
    settings = tuned(pf, axes, cfg.scenario, slab_a=2, records_a=5)
    got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, settings)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@pytest.mark.parametrize(
    "a_count,per_a,records_a,slab_cells",
    [
        (401, 5611, 1483, 2**21),
        (401, 5611, 100, 2**21),
        (1000, 1000, None, 2**21),
        (7, 10, 3, 20),
        (1, 1, None, 1),
        (1, 1, 1, 1),
        (50, 3, 7, 4),
    ],
)
@pytest.mark.parametrize("slab_copies", [True, False])
def test_launch_plan_covers_each_a_once(a_count, per_a, records_a, slab_cells, slab_copies):
    plan = K.launch_plan(a_count, per_a, records_a, slab_cells, slab_copies)
    paths = [p.path for p in plan]
    slabs = [s for p in plan for s in p.slabs]
    for ranges in (paths, slabs):
        assert ranges[0][0] == 0 and ranges[-1][1] == a_count
        assert all(r0 < r1 for r0, r1 in ranges)
        assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
    for p in plan:  # slabs lie inside their path launch
        assert p.path[0] == p.slabs[0][0] and p.path[1] == p.slabs[-1][1]
    if records_a is None:
        assert all(p.slabs == (p.path,) for p in plan)
        assert len(plan) == (len(K.slabs(a_count, per_a, slab_cells)) if slab_copies else 1)
    else:
        # The path kernel runs over as many a as the records hold, not slab by slab.
        assert all(r1 - r0 <= records_a for r0, r1 in paths)
        assert len(plan) == math.ceil(a_count / records_a)
        if not slab_copies:
            assert all(p.slabs == (p.path,) for p in plan)


def test_seed_dense_runs_the_path_kernel_once():
    # 401 x 181 path cells of 100 loans: records of 290 MB, one path launch
    # (it fills the GPU) and the recovery in slabs of about SLAB_CELLS cells.
    records_a = K.record_a(100, 181)
    assert records_a >= 401
    plan = K.launch_plan(401, 181 * 31, records_a)
    assert len(plan) == 1 and plan[0].path == (0, 401) and len(plan[0].slabs) > 1


@pytest.fixture()
def host_cupy(host_folder, monkeypatch):
    """``make(memory_limit=None)``: a CuPy stand-in over the host build (tests/hostcupy.py)."""
    from hostcupy import HostCupy, pinned

    monkeypatch.setattr(K.driver, "_pinned", pinned)
    return lambda memory_limit=None: HostCupy(host_folder, CXX, memory_limit)


def _fused_case(grid: str, seed: int, loans: int = 13):
    rng = np.random.default_rng(seed)
    cfg = make_v1_config(random_loans(rng, loans), grid=GRIDS_GPU[grid])
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape)
    return cfg, pf, axes, ref


# FusedGrid settings: the defaults; two stages with records of 3 values of a
# per path launch and slabs of 2; one pass in slabs of 2, 3 recovery cells
# per thread.
FUSED_SETTINGS = {
    "defaults": lambda pf, b, q: {},
    "two stages in launches of 3 a": lambda pf, b, q: {
        "stages": "two",
        "recover_q_per_thread": 5,
        "recover_threads": 64,
        "record_bytes": 3 * 8 * K.RECORD_FIELDS * pf.n_loans * b,
        "slab_cells": 2 * b * q,
    },
    "one pass in slabs of 2 a": lambda pf, b, q: {
        "stages": "one",
        "max_q_per_thread": 3,
        "slab_cells": 2 * b * q,
    },
}


@needs_cxx
@pytest.mark.parametrize("setting", list(FUSED_SETTINGS))
@pytest.mark.parametrize("grid", list(GRIDS_GPU))
def test_fused_grid_orchestration_on_the_host_build(host_cupy, grid, setting):
    # FusedGrid itself (plan, argument blocks, launches, reordering, slab
    # copies) with the kernels built for the CPU, against NumPy.
    cfg, pf, axes, ref = _fused_case(grid, 31)
    cp = host_cupy()
    layout = K.block_layout(axes, cfg.scenario)
    b, q = layout.size("b"), layout.size("q")
    fused = K.FusedGrid(pf, cp, K.KernelSettings(**FUSED_SETTINGS[setting](pf, b, q)))
    for copy in (True, False):
        got = fused.evaluate(axes, cfg.scenario, copy=copy)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    paths = [ln for ln in cp.launches if ln[0] == K.KERNEL_NAME]
    recovers = [ln for ln in cp.launches if ln[0] == K.RECOVER_NAME]
    a_count = layout.size("a")
    if setting == "two stages in launches of 3 a":
        assert len(paths) == 2 * math.ceil(a_count / 3)  # two evaluations
        if layout.a_leads:  # finished slab by slab
            assert len(recovers) > len(paths)
        assert fused.stage_seconds["recover"] > 0
    elif setting == "one pass in slabs of 2 a":
        assert not recovers
        if layout.a_leads:
            assert len(paths) == 2 * len(K.slabs(a_count, b * q, 2 * b * q))
    assert fused.kernel_seconds == pytest.approx(sum(fused.stage_seconds.values()))


@needs_cxx
def test_every_tuning_setting_runs_and_matches_numpy(host_cupy):
    # benchmarks/tune_fused.py times these FusedGrid settings on a GPU.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tune_fused
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cfg, pf, axes, ref = _fused_case("many haircuts", 33)
    cases = [s for group in tune_fused.settings().values() for s in group]
    assert len(cases) > 20
    for setting in cases:
        fused = K.FusedGrid(pf, host_cupy(), K.KernelSettings(**setting))
        got = fused.evaluate(axes, cfg.scenario)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)


def test_a_register_cap_reaches_the_path_kernel_build_only():
    # benchmarks/tune_fused.py times --maxrregcount on the loan-outer path kernel.
    rng = np.random.default_rng(34)
    cfg = make_v1_config(random_loans(rng, 5), grid=GRIDS_GPU["many haircuts"])
    pf = prepare(cfg, "numpy").portfolio
    layout = K.block_layout({a.name: a.array for a in cfg.axes}, cfg.scenario)
    kp = K.kernel_plan(pf, layout, K.KernelSettings(path_max_registers=128))
    assert kp.staged  # 21 haircuts: the path kernel, then the recovery kernel
    builds = {launch.kernel: launch.variant for launch in kp.launches(pf, layout, {})}
    assert "--maxrregcount=128" in builds[K.KERNEL_NAME].compile_options()
    assert builds[K.RECOVER_NAME].compile_options() == builds[K.RECOVER_NAME].defines()
    assert K.Variant().compile_options() == K.Variant().defines()  # no cap by default


@needs_cxx
def test_fused_grid_halves_a_block_that_does_not_fit(host_cupy):
    cfg, pf, axes, ref = _fused_case("many haircuts", 32)
    layout = K.block_layout(axes, cfg.scenario)
    out_bytes = 8 * (len(K.Q_VARIABLES) + len(pf.segments)) * math.prod(layout.shape)
    cp = host_cupy(memory_limit=out_bytes // 3)  # the block's outputs do not fit
    fused = K.FusedGrid(pf, cp)
    got = fused.evaluate(axes, cfg.scenario)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    paths = [ln for ln in cp.launches if ln[0] == K.KERNEL_NAME]
    assert len(paths) >= 4  # split at least twice


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS_V2))
@pytest.mark.parametrize("per_loan", [False, True])
def test_fused_grid_runs_model_v2_on_the_host_build(host_cupy, grid, per_loan):
    # FusedGrid with the market step (tables and market kernels, then the
    # recovery in slabs) or the loan-outer kernel, with and without per-loan
    # results, path launches of two values of a.
    cfg, pf, axes, ref = _v2_case(grid, 51)
    if not per_loan:
        ref.pop("loan_loss"), ref.pop("loan_default_years")
    cp = host_cupy()
    layout = K.block_layout(axes, cfg.scenario)
    settings = tuned(pf, axes, cfg.scenario, slab_a=1, records_a=2, stages="two")
    fused = K.FusedGrid(pf, cp, settings, per_loan=per_loan)
    for copy in (True, False):
        got = fused.evaluate(axes, cfg.scenario, copy=copy)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    names = [ln[0] for ln in cp.launches]
    if layout.market:
        assert K.KERNEL_NAME not in names
        # Each market launch reads the tables built just before it, over the same a.
        tables = [ln for ln in cp.launches if ln[0] == K.TABLES_NAME]
        markets = [ln for ln in cp.launches if ln[0] == K.MARKET_NAME]
        assert [t[1:3] for t in tables] == [m[1:3] for m in markets]
        assert len(markets) == 2 * math.ceil(layout.size("a") / 2)  # two evaluations
    else:
        assert K.MARKET_NAME not in names and K.TABLES_NAME not in names
    assert K.RECOVER_NAME in names


@needs_cxx
@pytest.mark.parametrize("per_loan", [False, True])
def test_fused_grid_halves_a_block_under_the_market_step(host_cupy, per_loan):
    # Haircut the longest axis: the block is halved along it first, and each
    # half's default times (size 1 on the recovery axes) are the same.
    rng = np.random.default_rng(52)
    grid = {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 9},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 6},
        "haircut": {"start": 0.0, "stop": 0.9, "num": 11},
    }
    cfg = make_config(random_loans(rng, 9), grid=grid, scenario={"market_depth_gpus": 2e4})
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape, per_loan=per_loan)
    out_bytes = 8 * (len(K.Q_VARIABLES) + len(pf.segments)) * math.prod(cfg.shape)
    assert out_bytes // 3 > pf.owed.nbytes  # the portfolio fits
    cp = host_cupy(memory_limit=out_bytes // 3)
    got = K.FusedGrid(pf, cp, per_loan=per_loan).evaluate(axes, cfg.scenario)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    markets = [ln for ln in cp.launches if ln[0] == K.MARKET_NAME]
    assert len(markets) >= 4  # split at least twice


# ---------------------------------------------------------------------------
# Model v3 (docs/model.md, "What v3 changed"): the rent and crypto paths, the
# generation shock and the market's appraisal, in the kernels' v3 builds.


def _v3_loans(rng: np.random.Generator, count: int) -> list[dict]:
    """Random loans (every v2 field varied) with every share of a generation
    shock: none (the new generation), some, all (the generation it displaces)."""
    loans = random_loans(rng, count)
    for loan in loans:
        loan["generation_exposure"] = float(rng.choice([0.0, rng.uniform(0, 1), 1.0]))
    return loans


def _random_path(rng: np.random.Generator) -> list[list[float]]:
    """A path of 2 to 6 random [years, index] points over about 0 to 6 years,
    its index anywhere from 0 to twice the first point's."""
    count = int(rng.integers(2, 7))
    years = np.concatenate([[0.0], np.cumsum(rng.uniform(0.1, 1.6, count - 1))])
    first = float(rng.uniform(0.5, 5e4))
    index = [first] + [float(first * rng.uniform(0.0, 2.0)) for _ in range(count - 1)]
    return [[float(t), i] for t, i in zip(years, index)]


#: Grids of model v3 for the kernels: (axes, fixed scenario, paths given).
#: appraisal_deflation is empty (the foresight appraisal on the v3 rent index)
#: in the first two, given in the others, as an axis or a fixed value; the
#: generation shock is an axis, its date too, or fixed; the market step and
#: a deep market both run; the last grid leads with a mining axis.
GRIDS_V3 = {
    "paths, market step": (
        {
            "deflation": {"start": -0.2, "stop": 0.7, "num": 5},
            "crypto_drawdown": {"values": [0.0, 0.6, 0.95]},
            "haircut": {"values": [0.0, 0.5]},
        },
        {"market_depth_gpus": 3e4, "generation_shock": 0.35, "generation_years": 1.25},
        ("rent_path", "crypto_path"),
    ),
    "shock axes, deep market": (
        {
            "deflation": {"start": -0.2, "stop": 0.7, "num": 3},
            "generation_shock": {"values": [0.0, 0.3, 0.7]},
            "generation_years": {"values": [0.0, 0.625, 2.0]},
            "crypto_drawdown": {"values": [0.0, 0.8]},
            "haircut": {"values": [0.0, 0.5]},
        },
        {"market_depth_gpus": float("inf")},
        ("crypto_path",),
    ),
    "appraisal axis, market axis": (
        {
            "deflation": {"values": [-0.1, 0.3, 0.6]},
            "appraisal_deflation": {"values": [-0.2, 0.25, 0.6]},
            "crypto_drawdown": {"values": [0.0, 0.7]},
            "market_depth_gpus": {"values": [5e3, float("inf")]},
            "haircut": {"values": [0.2, 0.6]},
        },
        {"generation_shock": 0.5, "generation_years": 1.0},
        ("rent_path",),
    ),
    "appraisal given, deep market, mining first": (
        {
            "crypto_drawdown": {"values": [0.0, 0.5, 0.9]},
            "haircut": {"values": [0.1, 0.7]},
            "deflation": {"start": -0.2, "stop": 0.7, "num": 4},
            "discount_rate": {"values": [0.03, 0.12]},
        },
        {
            "appraisal_deflation": 0.3,
            "generation_shock": 0.2,
            "generation_years": 0.5,
            "market_depth_gpus": float("inf"),
        },
        ("rent_path", "crypto_path"),
    ),
}


def _v3_case(grid: str, seed: int, loans: int = 13):
    rng = np.random.default_rng(seed)
    axes_spec, scenario, paths = GRIDS_V3[grid]
    given = {name: _random_path(rng) for name in paths}
    cfg = make_config(_v3_loans(rng, loans), grid=axes_spec, scenario={**scenario, **given})
    pf = prepare(cfg, "numpy").portfolio
    return cfg, pf, {a.name: a.array for a in cfg.axes}


def _numpy_engine(cfg) -> dict[str, np.ndarray]:
    """The NumPy engine's cube (``run_grid``) as the kernels return a block: the
    per-loan default times with size 1 on the liquidation axes."""
    cube = run_grid(cfg, backend="numpy", per_loan=True)
    out = {name: cube[name].values for name in cube.data_vars}
    for i, axis in enumerate(cfg.axes):
        if axis.name in LIQUIDATION_PARAMS:
            out["loan_default_years"] = np.expand_dims(out["loan_default_years"], i)
    return out


def _v3_builds(cfg, layout) -> dict[str, bool]:
    """Which v3 builds a block of ``cfg`` needs."""
    return {
        "rent_shape": "rent_path" in cfg.paths
        or layout.generation_shock
        or layout.market_appraisal,
        "crypto_path": "crypto_path" in cfg.paths,
    }


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS_V3))
@pytest.mark.parametrize("seed", [61, 62])
def test_kernel_v3_arithmetic_matches_numpy(host_build, grid, seed):
    cfg, pf, axes = _v3_case(grid, seed)
    layout = K.block_layout(axes, cfg.scenario)
    kp = K.kernel_plan(pf, layout, paths=cfg.paths)
    assert kp.path_variant.rent_shape and (
        kp.path_variant.crypto_path == ("crypto_path" in cfg.paths)
    )
    assert kp.appraisal_periods == (K.rent_periods(pf) if layout.market_appraisal else 0)
    ref = _numpy_engine(cfg)
    for max_q in (K.MAX_Q_PER_THREAD, 1):
        for threads, shared in launches(pf):
            settings = K.KernelSettings(
                max_q_per_thread=max_q,
                threads=threads,
                path_shared_bytes=shared,
                recover_threads=threads,
                recover_shared_bytes=shared,
            )
            got = K.evaluate_on_host(
                host_build, pf, axes, cfg.scenario, settings, per_loan=True, paths=cfg.paths
            )
            assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@needs_cxx
@pytest.mark.parametrize("seed", [63, 64])
def test_kernel_v3_matches_the_reference(host_build, seed):
    # The literal transcription of the model (gridstress/reference.py), on a
    # grid with every v3 input: both paths, the shock, and the market's
    # appraisal beside the foresight appraisal (an axis cannot hold an empty
    # value, so the two are two blocks).
    from gridstress import reference

    if "paths" not in inspect.signature(reference.evaluate_grid).parameters:
        pytest.skip("gridstress/reference.py does not take the scenario paths yet (model v2)")
    rng = np.random.default_rng(seed)
    grid = {
        "deflation": {"values": [-0.1, 0.25, 0.6]},
        "crypto_drawdown": {"values": [0.0, 0.85]},
        "generation_shock": {"values": [0.0, 0.45]},
        "market_depth_gpus": {"values": [8e3, float("inf")]},
        "haircut": {"values": [0.0, 0.6]},
    }
    paths = {"rent_path": _random_path(rng), "crypto_path": _random_path(rng)}
    loans = _v3_loans(rng, 9)
    for appraisal in (None, 0.35):
        scenario = {"appraisal_deflation": appraisal, "generation_years": 0.75, **paths}
        cfg = make_config(loans, grid=grid, scenario=scenario)
        pf = prepare(cfg, "numpy").portfolio
        axes = {a.name: a.array for a in cfg.axes}
        ref = reference.evaluate_grid(
            cfg.loans, cfg.periods_per_year, axes, cfg.scenario, paths=cfg.paths
        )
        ref["loan_default_years"] = ref["loan_default_years"][:, :, :, :, :1]
        got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, per_loan=True, paths=cfg.paths)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS_V3))
@pytest.mark.parametrize("per_loan", [False, True])
def test_fused_grid_runs_model_v3_on_the_host_build(host_cupy, grid, per_loan):
    # FusedGrid with the run's paths: the v3 builds of the path kernels (the
    # recovery kernel's build is v2's), path launches of two values of a
    # finished in slabs; then the engine's run of the grid cut into blocks of
    # several sizes gives the same cube, bit for bit.
    cfg, pf, axes = _v3_case(grid, 71)
    cfg = replace(cfg, per_loan=per_loan)
    ref = _numpy_engine(cfg)
    if not per_loan:
        ref.pop("loan_loss"), ref.pop("loan_default_years")
    cp = host_cupy()
    layout = K.block_layout(axes, cfg.scenario)
    settings = tuned(pf, axes, cfg.scenario, slab_a=1, records_a=2)
    fused = K.FusedGrid(pf, cp, settings, per_loan=per_loan, paths=cfg.paths)
    got = fused.evaluate(axes, cfg.scenario)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    shapes = _v3_builds(cfg, layout)
    for kernel, variant in cp.builds:
        on = shapes if kernel != K.RECOVER_NAME else {"rent_shape": False, "crypto_path": False}
        assert (variant.rent_shape, variant.crypto_path) == tuple(on.values()), kernel
    cubes = []
    for chunk in (math.prod(cfg.shape), 7, 11):
        run = PreparedRun(cfg, resolve_backend("numpy"), pf, plan_blocks(cfg.shape, chunk), fused)
        assert (len(run.plan) > 1) == (chunk < math.prod(cfg.shape))
        cubes.append(run_grid(run, scheduler="synchronous"))
    for cube in cubes[1:]:
        for name in cubes[0].data_vars:
            np.testing.assert_array_equal(cube[name].values, cubes[0][name].values, err_msg=name)


@needs_cxx
def test_v3_builds_with_neutral_inputs_give_the_v2_results_exactly(host_cupy):
    # Flat paths and a shock of nothing run the v3 builds (the rent path's
    # factor, the shock's and the crypto path's are all exactly 1): every
    # result is v2's, bit for bit.  Without them a run takes the v2 builds.
    rng = np.random.default_rng(81)
    axes_spec = GRIDS_V3["paths, market step"][0]
    loans = _v3_loans(rng, 13)
    flat = {"rent_path": [[0.0, 2.5], [3.0, 2.5]], "crypto_path": [[0.0, 7e4]]}
    for depth in (3e4, float("inf")):  # the market step; the loan-outer kernel
        plain = make_config(loans, grid=axes_spec, scenario={"market_depth_gpus": depth})
        shaped = make_config(
            loans,
            grid={**axes_spec, "generation_years": {"values": [0.0, 2.0]}},
            scenario={"market_depth_gpus": depth, "generation_shock": 0.0, **flat},
        )
        pf = prepare(plain, "numpy").portfolio
        cp = host_cupy()
        v2 = K.FusedGrid(pf, cp, per_loan=True).evaluate(
            {a.name: a.array for a in plain.axes}, plain.scenario
        )
        assert not any(v.rent_shape or v.crypto_path for _, v in cp.builds)
        cp = host_cupy()
        v3 = K.FusedGrid(pf, cp, per_loan=True, paths=shaped.paths).evaluate(
            {a.name: a.array for a in shaped.axes}, shaped.scenario
        )
        assert {(v.rent_shape, v.crypto_path) for k, v in cp.builds if k != K.RECOVER_NAME} == {
            (True, True)
        }
        for name, value in v2.items():
            for t in range(2):  # either date of the shock of nothing
                np.testing.assert_array_equal(np.take(v3[name], t, axis=3), value, err_msg=name)


def _kernel(host_build, cfg, per_loan=False) -> dict[str, np.ndarray]:
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    return K.evaluate_on_host(
        host_build, pf, axes, cfg.scenario, per_loan=per_loan, paths=cfg.paths
    )


@needs_cxx
def test_market_appraisal_is_the_foresight_appraisal_where_income_never_falls_below_zero(
    host_build,
):
    # model.md: with appraisal_deflation = d, no path and no shock, and every
    # pi_j non-negative, the market's appraisal is the foresight appraisal.
    # Fleets whose merchant income per GPU covers power and fixed costs at
    # every rent the grid reaches: rent >= 1.5, at most 40% a year off for
    # at most 4 years of service (>= 0.19 USD/GPU-hour) against 0.05 of power
    # and 200 USD a year of fixed costs (0.03 per hour at 80% utilization).
    rng = np.random.default_rng(91)
    loans = _v3_loans(rng, 11)
    for loan in loans:
        loan |= {
            "rent": float(rng.uniform(1.5, 4.0)),
            "utilization": 0.8,
            "power_kw_per_gpu": 0.5,
            "power_price": 0.1,
            "fixed_opex_per_gpu_year": 200.0,
            "gpu_age_years": 0.0,
            "economic_life_years": float(rng.uniform(1.0, 4.0)),
        }
    for d in (-0.2, 0.1, 0.4):
        grid = {
            "deflation": {"values": [d]},
            "crypto_drawdown": {"values": [0.0, 0.7]},
            "market_depth_gpus": {"values": [4e3, float("inf")]},
            "haircut": {"values": [0.0, 0.5]},
        }
        foresight = _kernel(host_build, make_config(loans, grid=grid), per_loan=True)
        market = make_config(loans, grid=grid, scenario={"appraisal_deflation": d})
        got = _kernel(host_build, market, per_loan=True)
        pf = prepare(market, "numpy").portfolio
        assert_parity(got, foresight, pf.total_principal, pf.principal_wal)
        assert np.nanmin(foresight["market_price_min"]) < 1.0  # defaults sell GPUs


@needs_cxx
def test_a_rent_path_of_period_ends_is_a_deflation(host_build):
    # model.md: a rent path with points at every period end t_k of index
    # (1 - a)^t_k gives the run with deflation 1 - (1 - d)(1 - a); a flat
    # crypto path changes nothing.
    rng = np.random.default_rng(93)
    loans = _v3_loans(rng, 11)
    pf = prepare(make_config(loans), "numpy").portfolio
    a = 0.15
    t = np.arange(K.rent_periods(pf) + 1) / pf.periods_per_year
    path = [[float(x), float((1 - a) ** x)] for x in t]
    scenario = {"market_depth_gpus": 2e4, "generation_shock": 0.3}
    grid = {
        "crypto_drawdown": {"values": [0.0, 0.8]},
        "haircut": {"values": [0.0, 0.5]},
        "appraisal_deflation": {"values": [0.1, 0.5]},
    }
    for d in (-0.1, 0.2, 0.5):
        on_path = make_config(
            loans,
            grid={"deflation": {"values": [d]}, **grid},
            scenario={**scenario, "rent_path": path, "crypto_path": [[0.0, 5.0], [2.0, 5.0]]},
        )
        steeper = make_config(
            loans,
            grid={"deflation": {"values": [1 - (1 - d) * (1 - a)]}, **grid},
            scenario=scenario,
        )
        got, want = _kernel(host_build, on_path, True), _kernel(host_build, steeper, True)
        assert_parity(got, want, pf.total_principal, pf.principal_wal)


@needs_cxx
def test_a_generation_shock_at_time_zero_scales_the_merchant_rent(host_build):
    # model.md: generation_shock = j with generation_years = 0 and
    # generation_exposure = 1 gives the results of rent scaled by (1 - j),
    # contract_rent kept.
    rng = np.random.default_rng(95)
    loans = [loan | {"generation_exposure": 1.0} for loan in _v3_loans(rng, 11)]
    grid = {
        "deflation": {"values": [-0.1, 0.3]},
        "crypto_drawdown": {"values": [0.0, 0.8]},
        "market_depth_gpus": {"values": [3e3, float("inf")]},
        "haircut": {"values": [0.0, 0.5]},
    }
    for j in (0.2, 0.6):
        shocked = make_config(
            loans, grid=grid, scenario={"generation_shock": j, "generation_years": 0.0}
        )
        scaled = make_config([loan | {"rent": loan["rent"] * (1 - j)} for loan in loans], grid=grid)
        pf = prepare(scaled, "numpy").portfolio
        assert_parity(
            _kernel(host_build, shocked, True),
            _kernel(host_build, scaled, True),
            pf.total_principal,
            pf.principal_wal,
        )


@needs_cxx
def test_default_times_never_move_later_as_the_shock_or_its_exposure_rises(host_build):
    # model.md: with W infinite, no loan defaults later as j or e rises.
    rng = np.random.default_rng(97)
    loans = _v3_loans(rng, 17)
    grid = {
        "deflation": {"values": [-0.1, 0.2, 0.5]},
        "crypto_drawdown": {"values": [0.0, 0.8]},
        "generation_shock": {"values": [0.0, 0.2, 0.5, 0.9]},
        "haircut": {"values": [0.3]},
    }
    scenario = {"market_depth_gpus": float("inf"), "generation_years": 0.5}
    years = []
    for exposure in (0.3, 1.0):
        shared = [loan | {"generation_exposure": exposure} for loan in loans]
        cfg = make_config(shared, grid=grid, scenario=scenario)
        tau = _kernel(host_build, cfg, per_loan=True)["loan_default_years"]
        years.append(np.where(np.isnan(tau), np.inf, tau))
    for tau in years:  # along the shock axis (no default: infinitely late)
        assert np.all(tau[:, :, 1:] <= tau[:, :, :-1])
    assert np.all(years[1] <= years[0]) and np.any(years[1] < years[0])


def test_block_layout_puts_the_v3_parameters_with_the_appraisal():
    axes = {
        "deflation": np.array([0.1, 0.2]),
        "generation_years": np.array([0.3, 0.625, 1.0]),
        "crypto_drawdown": np.array([0.0, 0.5]),
        "haircut": np.array([0.25]),
    }
    cfg = make_config([{"loan_id": "A", "principal": 1e6, "rate": 0.1, "term_years": 2}])
    fixed = {**cfg.scenario, "generation_shock": 0.4, "appraisal_deflation": 0.2}
    lay = K.block_layout(axes, fixed)
    assert lay.a_dims == ("deflation", "generation_years") and lay.b_dims == ("crypto_drawdown",)
    v3 = {"generation_shock", "generation_years", "appraisal_deflation"}
    assert v3 <= set(K.tables.APPRAISAL_AXES)
    assert lay.market_appraisal and lay.generation_shock
    params = K.args.param_arrays(lay, periods_per_year=4)
    np.testing.assert_array_equal(params["a_shock"], [0.4] * 6)
    np.testing.assert_array_equal(params["a_appraisal"], [0.2] * 6)
    # n_g = round_half_up(t_g f): 0.3 * 4 = 1.2000000000000002 -> 1, 2.5 -> 3, 4.
    np.testing.assert_array_equal(params["a_shock_period"], [1, 3, 4] * 2)
    # Fixed for the run: the paths' factors P(t_k), k = 0..J, ones without a path.
    pf = prepare(cfg, "numpy").portfolio
    factors = K.args.path_arrays(pf, {"rent_path": ((0.0, 2.0), (1.0, 1.0))})
    J = K.rent_periods(pf)
    np.testing.assert_array_equal(factors["rent_path"][:6], [1.0, 0.875, 0.75, 0.625, 0.5, 0.5])
    assert factors["rent_path"].shape == factors["crypto_path"].shape == (J + 1,)
    np.testing.assert_array_equal(factors["crypto_path"], 1.0)


def test_kernel_plan_builds_the_v3_code_only_for_blocks_that_need_it():
    # The v3 builds where a block has a path, a shock or a market appraisal,
    # for the path kernels only (the loan-outer kernel in one pass or two
    # stages, the market step's two); the recovery kernel's is v2's.
    rng = np.random.default_rng(99)
    for grid in ("market axes", "deep market"):
        axes_spec, scenario = GRIDS_V2[grid]
        run = make_config(_v3_loans(rng, 6), grid=axes_spec, scenario=scenario)
        pf = prepare(run, "numpy").portfolio
        J = K.rent_periods(pf)
        axes = {a.name: a.array for a in run.axes}
        for v3, paths, shapes, JA in (
            ({}, (), (False, False), 0),
            ({}, ("crypto_path",), (False, True), 0),
            ({}, ("rent_path",), (True, False), 0),
            ({"generation_shock": 0.2}, (), (True, False), 0),
            ({"appraisal_deflation": 0.3}, ("rent_path", "crypto_path"), (True, True), J),
        ):
            layout = K.block_layout(axes, {**run.scenario, **v3})
            for stages in ("one", "two"):
                kp = K.kernel_plan(pf, layout, K.KernelSettings(stages=stages), paths=paths)
                assert kp.appraisal_periods == JA
                kernels = set()
                for launch in kp.launches(pf, layout, {}):
                    kernels.add(launch.kernel)
                    v = launch.variant
                    recovery = launch.kernel == K.RECOVER_NAME
                    want = (False, False) if recovery else shapes
                    assert (v.rent_shape, v.crypto_path) == want, launch.kernel
                    assert launch.args["JA"] == (0 if recovery else JA)
                assert (K.MARKET_NAME in kernels) == (grid == "market axes")


def _ratio_tests(host_library):
    import ctypes

    lib = ctypes.CDLL(str(host_library))
    for name in ("gs_ratio_below_host", "gs_ratio_above_host"):
        getattr(lib, name).argtypes = [ctypes.c_double] * 3
        getattr(lib, name).restype = ctypes.c_int
    return (
        lambda x, y, lim: bool(lib.gs_ratio_below_host(x, y, lim)),
        lambda x, y, lim: bool(lib.gs_ratio_above_host(x, y, lim)),
    )


def _near(x: float, steps: int) -> float:
    """x moved by ``steps`` units in the last place."""
    for _ in range(abs(steps)):
        x = math.nextafter(x, math.inf if steps > 0 else -math.inf)
    return x


@needs_cxx
@settings(max_examples=300)
@given(y=st.floats(1e-2, 1e12), limit=st.one_of(st.floats(0.0, 10.0), st.just(0.0)))
def test_ratio_tests_decide_as_the_division_does(host_library, y, limit):
    # The DSCR covenant (cfads / ds < min_dscr) and LTV (owed / collateral >
    # max_ltv) tests divide only near the boundary; they must answer as the
    # division does, at the boundary, a few units in the last place off it
    # (where the rounding of limit * y decides) and further away.
    below, above = _ratio_tests(host_library)
    for rel in (0.0, 1e-16, -1e-16, 1e-13, -1e-13, 2e-12, -2e-12, 0.5, -0.5):
        for ulps in range(-3, 4):
            x = _near(limit * y * (1.0 + rel), ulps)  # 5e-324 and so on for a zero limit
            for signed in (x, -x):
                assert below(signed, y, limit) == (signed / y < limit), (signed, y, limit)
            if x > 0:
                assert above(x, y, limit) == (x / y > limit), (x, y, limit)
                assert above(x, 0.0, limit)  # nothing to secure it: an infinite LTV


@pytest.mark.parametrize(
    "q,seg,cap,expect",
    [
        (1, 3, 8, K.Variant(1, 3)),
        (31, 3, 8, K.Variant(8, 3)),
        (9, 3, 8, K.Variant(5, 3)),
        (31, 8, 8, K.Variant(4, 8)),
        (5, 40, 8, K.Variant(5, 0)),
        (31, 3, 1, K.Variant(1, 3)),
    ],
)
def test_variant_spreads_recovery_cells_evenly_within_registers(q, seg, cap, expect):
    v = K.choose_variant(q, seg, cap)
    assert v == expect
    assert v.q_per_thread * (3 + v.segments_in_registers) <= max(
        K.MAX_SUM_REGISTERS, 3 + v.segments_in_registers
    )


@needs_cxx
def test_kernel_arithmetic_on_the_seed_portfolio(host_build):
    cfg = prepare(v1_config(load_config(ROOT / "configs" / "seed.yaml")), "numpy")
    axes = {a.name: a.array[::4] for a in cfg.config.axes}
    shape = tuple(len(v) for v in axes.values())
    ref = evaluate(cfg.portfolio, scenario_arrays(axes, cfg.config.scenario), shape)
    got = K.evaluate_on_host(host_build, cfg.portfolio, axes, cfg.config.scenario)
    assert_parity(got, ref, cfg.portfolio.total_principal, cfg.portfolio.principal_wal)
    # With v1's settings every seed cell has a default: the unsecured convertible
    # bullet keeps no cash and cannot refinance on cash flow (docs/model.md).
    assert np.all(got["defaults"] >= 1)
    np.testing.assert_allclose(
        got["default_rate_by_trigger"].sum(axis=-1), got["default_rate"], rtol=1e-12
    )
    assert set(
        np.flatnonzero(got["default_rate_by_trigger"].reshape(-1, len(TRIGGERS)).any(axis=0))
    ) == {0, 1, 2, 3}  # every trigger fires somewhere


@needs_cxx
@pytest.mark.parametrize("config", ["seed-generations.yaml", "replay-h100-2023.yaml"])
def test_kernel_arithmetic_on_the_shipped_v3_configs(host_build, config):
    # The generation shock as an axis with the market's appraisal on the seed
    # book; a replay of the H100 rent path since 2023 (every third grid value).
    cfg = load_config(ROOT / "configs" / config)
    axes = tuple(replace(a, values=a.values[::3], central=None, severe=None) for a in cfg.axes)
    cfg = replace(cfg, axes=axes, per_loan=True)
    pf = prepare(cfg, "numpy").portfolio
    assert cfg.scenario["appraisal_deflation"] is not None
    got = K.evaluate_on_host(
        host_build,
        pf,
        {a.name: a.array for a in cfg.axes},
        cfg.scenario,
        per_loan=True,
        paths=cfg.paths,
    )
    assert_parity(got, _numpy_engine(cfg), pf.total_principal, pf.principal_wal)


def test_fused_kernel_covers_every_portfolio_whose_tables_fit_shared_memory():
    seed = load_config(ROOT / "configs" / "seed.yaml")
    pf = prepare(seed, "numpy").portfolio
    assert K.fused_covers(pf) is None
    # The seed's longest loan runs 6 years (24 quarters) and refinances on 4
    # more years of cash flow: a rent index of 40 periods.
    assert pf.horizon == 24 and K.rent_periods(pf) == int(np.max(pf.n + pf.n_refi)) == 40
    assert K.discount_periods(pf) == 24

    def longest(years: float):
        first = replace(seed.loans[0], term_years=years, economic_life_years=years + 1.0)
        return prepare(replace(seed, loans=(first,) + seed.loans[1:]), "numpy").portfolio

    # A loan of 200 years (800 quarters, 816 with its refinancing): tables of
    # 2 * 800 + 6 path doubles, 800 discount factors, a rent index of 816 and
    # as many expected-rent factors (a market appraisal), 8 * 4,038 = 32,304
    # bytes: beyond the path kernel's 24 KB budget, within the 48 KB a thread
    # block may take, so a launch takes that.
    long = longest(200.0)
    assert (long.horizon, K.discount_periods(long), K.rent_periods(long)) == (800, 800, 816)
    assert K.fused_covers(long) is None
    shape = K.launch_shape(
        1, 5, long.n_loans, 800, rent_periods=816, discount_periods=800, appraisal_periods=816
    )
    assert (shape.na_block, shape.loan_tile) == (1, 1)
    assert shape.shared_bytes(800, 816, 800, 816) == 32_304 <= K.SHARED_BYTES
    # 325 years (1,300 quarters, a rent index of 1,316): 8 * 5,222 = 41,776
    # bytes without a market appraisal, 52,304 with its expected rents.
    longer = longest(325.0)
    assert K.rent_periods(longer) == 1316
    assert K.fused_covers(longer, market_appraisal=False) is None
    assert K.fused_covers(longer).startswith(
        "loan tables of 1300 periods, rent index of 1316, expected rents of 1316"
    )


@pytest.mark.parametrize(
    "a,b,loans,horizon",
    [
        (1, 1, 1, 1),
        (401, 181, 100, 40),
        (1000, 1000, 100, 40),
        (50, 1, 8, 40),
        (3, 7, 500, 120),
        (1, 300, 2, 400),
    ],
)
def test_launch_shape_covers_the_cells_within_shared_memory(a, b, loans, horizon):
    s = K.launch_shape(a, b, loans, horizon)
    assert s.threads % 32 == 0 and s.threads <= K.THREADS_PER_BLOCK
    assert s.na_block * s.nb_block <= s.threads
    assert 1 <= s.loan_tile <= loans
    assert s.shared_bytes(horizon) <= K.PATH_SHARED_BYTES
    assert s.n_blocks(a, b) * s.na_block * s.nb_block >= a * b
    tiled = K.launch_shape(a, b, loans, horizon, variant=K.Variant(4, 0))
    assert tiled.n_blocks(a, b, 9) == 3 * s.n_blocks(a, b)
    # Few b values: a block takes several a values instead of idling.
    if b < 32 and a > 1:
        assert s.na_block > 1
    # Fleets in service beyond the horizon: a longer rent index, in the budget.
    long = K.launch_shape(a, b, loans, horizon, rent_periods=3 * horizon)
    assert long.shared_bytes(horizon, 3 * horizon) <= K.PATH_SHARED_BYTES
    assert long.loan_tile <= s.loan_tile and long.na_block <= s.na_block


@pytest.mark.parametrize(
    "b,q_tiles,loans,threads,shared",
    [
        (181, 16, 100, 256, K.SHARED_BYTES),
        (1000, 1, 100, 256, K.SHARED_BYTES),
        (5, 51, 17, 256, K.SHARED_BYTES),
        (1, 3, 1, 32, 40),
        (40, 9, 300, 512, 2000),
        (7, 2, 5, 128, 100),
    ],
)
def test_recover_shape_covers_the_cells_within_shared_memory(b, q_tiles, loans, threads, shared):
    r = K.recover_shape(b, q_tiles, loans, threads, shared)
    assert 1 <= r.rb <= min(b, 32) and 1 <= r.rq <= q_tiles
    assert r.rb * r.rq <= max(threads, r.rb) and r.threads % 32 == 0
    assert 1 <= r.rec_tile <= loans and r.shared_bytes() <= shared
    assert r.n_blocks(3, b, q_tiles) * r.rb * r.rq >= 3 * b * q_tiles
    if b >= 32 and shared >= 32 * 8 * K.RECORD_FIELDS:
        assert r.rb == 32  # a warp copies 32 neighbouring path cells


def test_launch_shape_refuses_a_horizon_beyond_shared_memory():
    with pytest.raises(ValueError, match="does not fit the shared memory"):
        K.launch_shape(1, 1, 1, K.SHARED_BYTES // 16 + 1)


def test_block_layout_groups_axes_and_forms_recovery_factors():
    axes = {
        "deflation": np.array([0.1, 0.2]),
        "crypto_drawdown": np.array([0.0, 0.5, 0.9]),
        "haircut": np.array([0.25]),
        "liquidation_cost": np.array([0.0, 0.5]),
    }
    fixed = {
        "drawdown_periods": 4.0,
        "crypto_haircut": 0.1,
        "discount_rate": 0.08,
        "liquidation_cost": 0.05,
        "market_depth_gpus": 4e5,
        "market_half_life_years": float("inf"),
        "book_share": 0.5,
        "generation_shock": 0.0,
        "generation_years": 1.5,
        "appraisal_deflation": None,
    }
    lay = K.block_layout(axes, fixed)
    assert (lay.a_dims, lay.b_dims, lay.q_dims) == (
        ("deflation",),
        ("crypto_drawdown",),
        ("haircut", "liquidation_cost"),
    )
    assert (lay.size("a"), lay.size("b"), lay.size("q")) == (2, 3, 2)
    np.testing.assert_array_equal(lay.a_params["discount_rate"], [0.08, 0.08])
    np.testing.assert_array_equal(lay.b_params["drawdown_periods"], [4.0] * 3)
    np.testing.assert_array_equal(lay.b_params["book_share"], [0.5] * 3)
    # An empty appraisal_deflation is NaN (the foresight appraisal), as in the model's cells.
    assert np.all(np.isnan(lay.a_params["appraisal_deflation"]))
    assert not (lay.market_appraisal or lay.generation_shock)
    assert lay.market  # a finite depth: the market step runs
    assert not K.block_layout(axes, {**fixed, "market_depth_gpus": float("inf")}).market
    np.testing.assert_allclose(lay.q_params["keep"], [0.75, 0.375])
    np.testing.assert_allclose(lay.q_params["keep_crypto"], [0.9, 0.45])
    assert lay.a_leads
    assert not K.block_layout(
        {
            "crypto_drawdown": axes["crypto_drawdown"],
            "deflation": axes["deflation"],
            "haircut": axes["haircut"],
        },
        fixed,
    ).a_leads


def test_loan_matrices_carry_the_flags_and_covenants():
    loans = [
        {
            "loan_id": "A",
            "principal": 1e6,
            "rate": 0.1,
            "term_years": 2,
            "min_dscr": 1.2,
            "max_ltv": 0.8,
            "mining_revenue": 5e5,
            "segment": "miner",
        },
        {"loan_id": "B", "principal": 2e6, "rate": 0.1, "term_years": 3, "amortization": "bullet"},
        {"loan_id": "C", "principal": 1e6, "rate": 0.1, "term_years": 1, "crypto_collateral": 5e5},
    ]
    pf = prepare(make_config(loans), "numpy").portfolio
    loan_f, loan_i = K.loan_matrices(pf)
    assert loan_f.shape == (3, len(K.LOAN_F)) and loan_i.shape == (3, len(K.LOAN_I))
    rows = {lid: i for i, lid in enumerate(pf.loan_id)}
    f = dict(zip(K.LOAN_F, loan_f[rows["A"]]))
    i = dict(zip(K.LOAN_I, loan_i[rows["A"]]))
    assert f["dscr_floor"] == 1.2 and f["max_ltv"] == 0.8
    assert i["flags"] == K.HAS_COVENANT | K.HAS_LTV | K.HAS_MINING and i["n"] == 8
    f = dict(zip(K.LOAN_F, loan_f[rows["B"]]))
    i = dict(zip(K.LOAN_I, loan_i[rows["B"]]))
    # No mining, no crypto: a path independent of the mining axes.
    assert f["dscr_floor"] == -np.inf and f["max_ltv"] == np.inf and i["flags"] == K.B_FREE
    assert f["balloon"] == 2e6 and i["n"] == 12  # a bullet: all of it at maturity
    # Pledged coins make the path depend on the crypto drawdown.
    assert loan_i[rows["C"], K.LOAN_I.index("flags")] == 0


def test_gpu_plan_fits_the_free_memory_and_caps_blocks():
    cfg = make_v1_config(
        random_loans(np.random.default_rng(0), 5),
        grid={
            "deflation": {"start": 0.0, "stop": 0.6, "num": 300},
            "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 200},
            "haircut": {"start": 0.0, "stop": 0.9, "num": 10},
        },
    )
    pf = prepare(cfg, "numpy").portfolio
    per_cell = K.bytes_per_cell(len(pf.segments))
    roomy = gpu_plan(cfg, pf, free_bytes=2**40)
    assert roomy.chunks == cfg.shape  # 600k cells: one block
    capped = gpu_plan(cfg, pf, free_bytes=2**40, max_cells=50_000)
    assert math.prod(capped.chunks) <= 50_000
    tight = gpu_plan(cfg, pf, free_bytes=2 * per_cell * 10_000)
    assert math.prod(tight.chunks) <= 10_000 and len(tight) > 1


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize(
    "variant",
    [
        K.Variant(1, 0),
        K.choose_variant(31, 3),
        K.choose_variant(31, 8),
        K.Variant(1, 3, True),
        K.choose_variant(31, 3, K.RECOVER_Q_PER_THREAD),
        # Model v3's builds: the rent shape (paths, shock, market appraisal)
        # and the crypto path, in the loan-outer kernel's two modes and the
        # market step's.
        K.Variant(1, 3, True, rent_shape=True, crypto_path=True),
        replace(K.choose_variant(31, 3), rent_shape=True),
        replace(K.choose_variant(31, 3, K.RECOVER_Q_PER_THREAD), crypto_path=True),
    ],
    ids=repr,
)
def test_cuda_source_compiles_for_hopper_without_spills(tmp_path, variant):
    # The single compilation unit NVRTC gets, compiled by nvcc for sm_90 (with the
    # generated defines and the argument block's static_assert layout checks).
    src = tmp_path / "gs.cu"
    src.write_text(K.kernel_source(), encoding="utf-8")
    res = subprocess.run(
        [
            NVCC,
            "-arch=sm_90",
            *K.NVRTC_OPTIONS,
            *variant.defines(),
            "-cubin",
            "-Xptxas",
            "-v",
            "-o",
            str(tmp_path / "gs.cubin"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    report = res.stderr
    lines = report.splitlines()
    for kernel in (K.KERNEL_NAME, K.RECOVER_NAME, K.TABLES_NAME, K.MARKET_NAME):
        at = next(i for i, ln in enumerate(lines) if f"Function properties for {kernel}" in ln)
        line = lines[at + 1]
        assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in line, report
    assert "error" not in report.lower()


@pytest.mark.slow
def test_the_wheel_ships_the_kernel_sources(tmp_path):
    """Build the wheel, install it into a fresh venv and find the sources there."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("gridstress-*.whl")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # The fresh venv takes gridstress from the wheel and its dependencies from
    # this environment (a plain path entry: the editable install is not seen).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import gridstress, gridstress.kernels as k; print(gridstress.__file__); "
        "print(k.kernel_dir()); print(len(k.kernel_source()))"
    )
    res = subprocess.run(
        [str(py), "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)},
    )
    assert res.returncode == 0, res.stderr
    module, folder, size = res.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(folder) == site / "gridstress" / "_cuda"
    assert int(size) > 5000
