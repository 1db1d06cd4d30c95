"""The fused CUDA kernel, checked without a GPU.

The kernel's arithmetic (kernels/gridstress_v1.cuh) is built with the C++
compiler into a host library and run through the kernel's own layout, phases
and launch shapes against the NumPy backend.  The CUDA file is compiled with
nvcc where nvcc is installed (no GPU needed).  Packaging, launch planning and
chunk planning are plain Python.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_parity, make_config, random_loans

from gridstress import kernels as K
from gridstress.engine import gpu_plan, prepare
from gridstress.model import evaluate, scenario_arrays

CXX = shutil.which("g++") or shutil.which("c++")
NVCC = shutil.which("nvcc")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on this machine")


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """``build(variant)``: the host library of a kernel variant, built once."""
    if CXX is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    folder = tmp_path_factory.mktemp("host")
    return lambda variant=K.Variant(): K.build_host_library(CXX, folder, variant)


@pytest.fixture(scope="module")
def host_library(host_build):
    return host_build()


def test_kernel_sources_are_found_and_inlined():
    folder = K.kernel_dir()
    assert (folder / K.KERNEL).is_file() and (folder / K.HEADER).is_file()
    src = K.kernel_source()
    assert '#include "' not in src
    assert 'extern "C" __global__ void gs_grid_v1(' in src
    assert "GS_QV_SEG" in src  # the header is inside
    assert K.NVRTC_OPTIONS == ("--std=c++17", "--fmad=false")


def test_argument_block_layout_matches_the_compiler(host_library):
    assert K.args_layout_on_host(host_library) == (
        K.ARGS_DTYPE.itemsize, K.ARGS_DTYPE.fields["dt"][1])


GRIDS = {
    "three axes": {"deflation": {"start": -0.2, "stop": 0.8, "num": 9},
                   "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 7},
                   "haircut": {"values": [0.0, 0.3, 0.55, 0.9]}},
    "discount and cost axes": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 5},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 3},
        "haircut": {"values": [0.0, 0.9]}, "discount_rate": {"values": [0.02, 0.12]},
        "liquidation_cost": {"values": [0.0, 0.3]}},
    "drawdown periods axis": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 4},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
        "drawdown_periods": {"values": [1.0, 2.5, 8.0]}, "haircut": {"values": [0.2]},
        "crypto_haircut": {"values": [0.0, 0.5]}},
    "one deflation": {"deflation": {"values": [0.3]},
                      "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 40},
                      "haircut": {"values": [0.1, 0.5]}},
    "one crypto": {"deflation": {"start": -0.5, "stop": 0.9, "num": 50},
                   "crypto_drawdown": {"values": [0.5]}, "haircut": {"values": [0.1, 0.5]}},
}
# (threads per block, shared bytes): the default, several a per block and
# many loan tiles, and one loan per tile.
LAUNCHES = [(128, 48 * 1024), (32, 2000), (64, 700)]


@needs_cxx
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kernel_arithmetic_matches_numpy(host_build, grid, seed):
    rng = np.random.default_rng(seed)
    cfg = make_config(random_loans(rng, 13), grid=GRIDS[grid])
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape)
    assert pf.horizon * 24 <= 700  # every launch below fits one loan's tables
    # The defaults (one pass with up to 8 recovery cells per thread, or two
    # stages beyond), two stages for any grid with more than one recovery
    # cell, and one pass with one recovery cell per thread.
    for max_q in (K.MAX_Q_PER_THREAD, 1, 3):
        for threads, shared in LAUNCHES:
            got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, threads, shared,
                                     max_q_per_thread=max_q)
            assert_parity(got, ref, pf.total_principal, pf.principal_wal)
    # Launched in slabs of a, as the GPU backend copies results.
    got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario, max_q_per_thread=1,
                             slab_a=2)
    assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@needs_cxx
def test_many_recovery_cells_and_segments_in_two_stages(host_build):
    rng = np.random.default_rng(21)
    loans = random_loans(rng, 17)
    for i, loan in enumerate(loans):  # more segments than registers hold
        loan["segment"] = f"s{i % 11}"
    cfg = make_config(loans, grid={
        "deflation": {"start": -0.2, "stop": 0.8, "num": 6},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
        "haircut": {"start": 0.0, "stop": 1.0, "num": 13},
        "crypto_haircut": {"values": [0.0, 0.5]}})
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    ref = evaluate(pf, scenario_arrays(axes, cfg.scenario), cfg.shape)
    assert K.two_stage(26) and K.choose_variant(26, 11).segments_in_registers == 0
    for max_q in (K.MAX_Q_PER_THREAD, 5):
        got = K.evaluate_on_host(host_build, pf, axes, cfg.scenario,
                                 max_q_per_thread=max_q, slab_a=4)
        assert_parity(got, ref, pf.total_principal, pf.principal_wal)


@pytest.mark.parametrize("q,seg,cap,expect", [
    (1, 3, 8, K.Variant(1, 3)), (31, 3, 8, K.Variant(8, 3)), (9, 3, 8, K.Variant(5, 3)),
    (31, 8, 8, K.Variant(4, 8)), (5, 40, 8, K.Variant(5, 0)), (31, 3, 1, K.Variant(1, 3))])
def test_variant_spreads_recovery_cells_evenly_within_registers(q, seg, cap, expect):
    v = K.choose_variant(q, seg, cap)
    assert v == expect
    assert v.q_per_thread * (3 + v.segments_in_registers) <= max(
        K.MAX_SUM_REGISTERS, 3 + v.segments_in_registers)


@needs_cxx
def test_kernel_arithmetic_on_the_seed_portfolio(host_build):
    cfg = prepare(ROOT / "configs" / "seed.yaml", "numpy")
    axes = {a.name: a.array[::4] for a in cfg.config.axes}
    shape = tuple(len(v) for v in axes.values())
    ref = evaluate(cfg.portfolio, scenario_arrays(axes, cfg.config.scenario), shape)
    got = K.evaluate_on_host(host_build, cfg.portfolio, axes, cfg.config.scenario)
    assert_parity(got, ref, cfg.portfolio.total_principal, cfg.portfolio.principal_wal)
    # Every seed cell has a default (docs/model.md, unsecured bullets).
    assert np.all(got["defaults"] >= 1)


@pytest.mark.parametrize("a,b,loans,horizon", [
    (1, 1, 1, 1), (401, 181, 100, 40), (1000, 1000, 100, 40), (50, 1, 8, 40),
    (3, 7, 500, 120), (1, 300, 2, 400)])
def test_launch_shape_covers_the_cells_within_shared_memory(a, b, loans, horizon):
    s = K.launch_shape(a, b, loans, horizon)
    assert s.threads % 32 == 0 and s.threads <= K.THREADS_PER_BLOCK
    assert s.na_block * s.nb_block <= s.threads
    assert 1 <= s.loan_tile <= loans
    assert s.shared_bytes(horizon) <= K.SHARED_BYTES
    assert s.n_blocks(a, b) * s.na_block * s.nb_block >= a * b
    tiled = K.launch_shape(a, b, loans, horizon, variant=K.Variant(4, 0))
    assert tiled.n_blocks(a, b, 9) == 3 * s.n_blocks(a, b)
    # Few b values: a block takes several a values instead of idling.
    if b < 32 and a > 1:
        assert s.na_block > 1


def test_launch_shape_refuses_a_horizon_beyond_shared_memory():
    with pytest.raises(ValueError, match="does not fit the shared memory"):
        K.launch_shape(1, 1, 1, K.SHARED_BYTES // 16 + 1)


def test_block_layout_groups_axes_and_forms_recovery_factors():
    axes = {"deflation": np.array([0.1, 0.2]), "crypto_drawdown": np.array([0.0, 0.5, 0.9]),
            "haircut": np.array([0.25]), "liquidation_cost": np.array([0.0, 0.5])}
    fixed = {"drawdown_periods": 4.0, "crypto_haircut": 0.1, "discount_rate": 0.08,
             "liquidation_cost": 0.05}
    lay = K.block_layout(axes, fixed)
    assert (lay.a_dims, lay.b_dims, lay.q_dims) == (
        ("deflation",), ("crypto_drawdown",), ("haircut", "liquidation_cost"))
    assert (lay.size("a"), lay.size("b"), lay.size("q")) == (2, 3, 2)
    np.testing.assert_array_equal(lay.a_params["discount_rate"], [0.08, 0.08])
    np.testing.assert_array_equal(lay.b_params["drawdown_periods"], [4.0] * 3)
    np.testing.assert_allclose(lay.q_params["keep"], [0.75, 0.375])
    np.testing.assert_allclose(lay.q_params["keep_crypto"], [0.9, 0.45])
    assert lay.a_leads
    assert not K.block_layout({"crypto_drawdown": axes["crypto_drawdown"],
                               "deflation": axes["deflation"],
                               "haircut": axes["haircut"]}, fixed).a_leads


def test_loan_matrices_carry_the_flags_and_covenants():
    loans = [
        {"loan_id": "A", "principal": 1e6, "rate": 0.1, "term_years": 2, "min_dscr": 1.2,
         "max_ltv": 0.8, "mining_revenue": 5e5, "segment": "miner"},
        {"loan_id": "B", "principal": 2e6, "rate": 0.1, "term_years": 3,
         "amortization": "bullet"},
    ]
    pf = prepare(make_config(loans), "numpy").portfolio
    loan_f, loan_i = K.loan_matrices(pf)
    assert loan_f.shape == (2, len(K.LOAN_F)) and loan_i.shape == (2, len(K.LOAN_I))
    rows = {lid: i for i, lid in enumerate(pf.loan_id)}
    f = dict(zip(K.LOAN_F, loan_f[rows["A"]]))
    i = dict(zip(K.LOAN_I, loan_i[rows["A"]]))
    assert f["dscr_floor"] == 1.2 and f["max_ltv"] == 0.8
    assert i["flags"] == K.HAS_COVENANT | K.HAS_LTV | K.HAS_MINING and i["n"] == 8
    f = dict(zip(K.LOAN_F, loan_f[rows["B"]]))
    i = dict(zip(K.LOAN_I, loan_i[rows["B"]]))
    assert f["dscr_floor"] == -np.inf and f["max_ltv"] == np.inf and i["flags"] == 0
    assert f["balloon"] == 2e6 and i["n"] == 12  # a bullet: all of it at maturity


def test_gpu_plan_fits_the_free_memory_and_caps_blocks():
    cfg = make_config(random_loans(np.random.default_rng(0), 5), grid={
        "deflation": {"start": 0.0, "stop": 0.6, "num": 300},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 200},
        "haircut": {"start": 0.0, "stop": 0.9, "num": 10}})
    pf = prepare(cfg, "numpy").portfolio
    per_cell = K.bytes_per_cell(len(pf.segments))
    roomy = gpu_plan(cfg, pf, free_bytes=2**40)
    assert roomy.chunks == cfg.shape  # 600k cells: one block
    capped = gpu_plan(cfg, pf, free_bytes=2**40, max_cells=50_000)
    assert math.prod(capped.chunks) <= 50_000
    tight = gpu_plan(cfg, pf, free_bytes=2 * per_cell * 10_000)
    assert math.prod(tight.chunks) <= 10_000 and len(tight) > 1


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("variant", [K.Variant(1, 0), K.choose_variant(31, 3),
                                     K.choose_variant(31, 8), K.Variant(1, 3, True)],
                         ids=repr)
def test_cuda_source_compiles_for_hopper_without_spills(tmp_path, variant):
    # The single compilation unit NVRTC gets, compiled by nvcc for sm_90.
    src = tmp_path / "gs.cu"
    src.write_text(K.kernel_source(), encoding="utf-8")
    res = subprocess.run([NVCC, "-arch=sm_90", *K.NVRTC_OPTIONS, *variant.defines(),
                          "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "gs.cubin"), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = res.stderr
    assert "gs_grid_v1" in report and "gs_recover_v1" in report
    lines = report.splitlines()
    at = next(i for i, ln in enumerate(lines) if "Function properties for gs_grid_v1" in ln)
    line = lines[at + 1]
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in line, report
    assert "error" not in report.lower()


@pytest.mark.slow
def test_the_wheel_ships_the_kernel_sources(tmp_path):
    """Build the wheel, install it into a fresh venv and find the sources there."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("gridstress-*.whl")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    # The fresh venv takes gridstress from the wheel and its dependencies from
    # this environment (a plain path entry: the editable install is not seen).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = ("import gridstress, gridstress.kernels as k; print(gridstress.__file__); "
            "print(k.kernel_dir()); print(len(k.kernel_source()))")
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                            if k not in ("PYTHONPATH",)})
    assert res.returncode == 0, res.stderr
    module, folder, size = res.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(folder) == site / "gridstress" / "_cuda"
    assert int(size) > 5000
