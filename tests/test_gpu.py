"""The CuPy backend on a GPU: the fused kernel and the xp model against NumPy.

Every test here carries the ``gpu`` marker and is skipped without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

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

from gridstress import load_config, run_grid
from gridstress.prepared import gpu_plan, prepare

pytestmark = pytest.mark.gpu


SCHEDULERS = ("synchronous", "local", "local-cuda")


def _reference(cfg):
    return run_grid(cfg, backend="numpy")


def _check(cube, ref, pf):
    _check_arrays({name: cube[name].values for name in ref.data_vars}, ref, pf)


def _check_arrays(got: dict, ref, pf):
    want = {name: ref[name].values for name in ref.data_vars}
    assert_parity(got, want, pf.total_principal, pf.principal_wal)


def _random_config(seed: int, loans: int, n_deflation: int, n_crypto: int, model: str = "v1"):
    """Random loans on a grid; ``model`` "v2" keeps every v2 field and a
    market of 20,000 GPUs' depth (the market step)."""
    rng = np.random.default_rng(seed)
    grid = {
        "deflation": {"start": -0.1, "stop": 0.7, "num": n_deflation},
        "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": n_crypto},
        "haircut": {"values": [0.0, 0.4, 0.8]},
    }
    if model == "v1":
        return make_v1_config(random_loans(rng, loans), grid=grid)
    return make_config(random_loans(rng, loans), grid=grid, scenario={"market_depth_gpus": 2e4})


@pytest.mark.parametrize("grid", list(GRIDS_GPU))
@pytest.mark.parametrize(
    "seed,model", [(1, "v1"), (2, "v1"), (3, "v1"), (4, "v1"), (1, "v2"), (2, "v2")]
)
def test_fused_kernel_matches_numpy(grid, seed, model):
    rng = np.random.default_rng(1000 + seed)
    loans = random_loans(rng, int(rng.integers(5, 60)))
    if model == "v1":
        cfg = make_v1_config(loans, grid=GRIDS_GPU[grid])
    else:  # every v2 field, the market step active
        cfg = make_config(loans, grid=GRIDS_GPU[grid], scenario={"market_depth_gpus": 2e4})
    ref = _reference(cfg)
    run = prepare(cfg, "cupy")
    assert run.fused is not None
    for chunk in (None, 97, 1000):  # one block; uneven blocks; several blocks
        cube = run_grid(cfg, backend="cupy", chunk_cells=chunk)
        assert cube.attrs["backend"] == "cupy" and cube.attrs["device"]
        _check(cube, ref, run.portfolio)


@pytest.mark.parametrize("stages", ["one", "two"])
@pytest.mark.parametrize("max_q", [1, 3, 8])
def test_fused_kernel_stages_and_tiles_match_numpy(stages, max_q):
    import cupy

    from gridstress.kernels import FusedGrid, KernelSettings

    rng = np.random.default_rng(77 + max_q)
    cfg = make_v1_config(random_loans(rng, 40), grid=GRIDS_GPU["many haircuts"])
    ref = _reference(cfg)
    pf = prepare(cfg, "numpy").portfolio
    fused = FusedGrid(pf, cupy, KernelSettings(max_q_per_thread=max_q, stages=stages))
    axes = {a.name: a.array for a in cfg.axes}
    got = fused.evaluate(axes, cfg.scenario)
    _check_arrays(got, ref, pf)


@pytest.mark.parametrize("recover_q,threads", [(1, 32), (2, 256), (5, 64)])
def test_two_stages_in_several_launches_and_slabs_match_numpy(recover_q, threads):
    import cupy

    from gridstress.kernels import RECORD_FIELDS, FusedGrid, KernelSettings

    rng = np.random.default_rng(90 + recover_q)
    cfg = make_v1_config(random_loans(rng, 23), grid=GRIDS_GPU["many haircuts"])
    ref = _reference(cfg)
    pf = prepare(cfg, "numpy").portfolio
    axes = {a.name: a.array for a in cfg.axes}
    b_count = len(axes["crypto_drawdown"])
    q_count = len(axes["haircut"])
    # Records of 3 values of a per path launch; slabs of 2 values of a.
    settings = KernelSettings(
        stages="two",
        recover_q_per_thread=recover_q,
        recover_threads=threads,
        record_bytes=3 * 8 * RECORD_FIELDS * pf.n_loans * b_count,
        slab_cells=2 * b_count * q_count,
    )
    fused = FusedGrid(pf, cupy, settings)
    got = fused.evaluate(axes, cfg.scenario)
    _check_arrays(got, ref, pf)
    assert fused.stage_seconds["path"] > 0 and fused.stage_seconds["recover"] > 0
    assert fused.kernel_seconds == pytest.approx(sum(fused.stage_seconds.values()))


@pytest.mark.parametrize("seed", [17, 18])
def test_model_v2_runs_on_the_fused_kernel(seed):
    # The market step (a market axis with one depth infinite), retained cash,
    # refinancing on cash flow and book-value covenants, with per-loan
    # outputs, on the fused kernel; and on the xp model when asked.
    rng = np.random.default_rng(seed)
    cfg = make_config(
        random_loans(rng, 15),
        grid={**GRIDS_GPU["three axes"], "market_depth_gpus": {"values": [2e3, 4e4, float("inf")]}},
        scenario={"book_share": 0.3},
    )
    run = prepare(replace(cfg, per_loan=True), "cupy")
    assert run.fused is not None and run.note is None
    assert run.engine == "fused CUDA kernel"
    ref = run_grid(cfg, backend="numpy", per_loan=True)
    assert float(ref["market_price_min"].min()) < 0.9
    for chunk in (None, 97):
        cube = run_grid(cfg, backend="cupy", chunk_cells=chunk, per_loan=True)
        assert cube.attrs["engine"] == "fused CUDA kernel"
        _check(cube, ref, run.portfolio)
    xp = prepare(cfg, "cupy", kernel="xp")
    assert xp.fused is None and xp.engine == "xp model (cupy)"


@pytest.mark.parametrize("grid", ["paths, market step", "appraisal axis, market axis"])
def test_model_v3_runs_on_the_fused_kernel(grid):
    # Rent and crypto paths, the generation shock, the market's appraisal (or
    # the foresight appraisal on the v3 rent index), per-loan outputs: the
    # kernels' v3 builds through FusedGrid with the run's paths, and the
    # engine's run on the GPU, against NumPy.
    import cupy
    from test_kernels import _numpy_engine, _v3_case

    from gridstress.kernels import FusedGrid

    cfg, pf, axes = _v3_case(grid, 101, loans=23)
    cfg = replace(cfg, per_loan=True)
    fused = FusedGrid(pf, cupy, per_loan=True, paths=cfg.paths)
    got = fused.evaluate(axes, cfg.scenario)
    assert_parity(got, _numpy_engine(cfg), pf.total_principal, pf.principal_wal)
    run = prepare(cfg, "cupy")
    assert run.fused is not None and run.note is None
    ref = _reference(cfg)
    for chunk in (None, 97):
        _check(run_grid(cfg, backend="cupy", chunk_cells=chunk), ref, run.portfolio)


def test_xp_model_on_cupy_matches_numpy():
    rng = np.random.default_rng(7)
    cfg = make_v1_config(random_loans(rng, 12), grid=GRIDS_GPU["three axes"])
    ref = _reference(cfg)
    run = prepare(cfg, "cupy", chunk_cells=97, kernel="xp")
    assert run.fused is None
    got = {name: np.empty(ref[name].shape) for name in ref.data_vars}
    for block in run.plan:
        for name, value in run.evaluate_block(block).items():
            got[name][block.slices] = value
    _check_arrays(got, ref, run.portfolio)


@pytest.mark.parametrize("model", ["v1", "v2"])
def test_out_of_memory_halves_the_block_and_retries(model):
    import cupy

    cfg = _random_config(8, 20, 300, 200, model)
    ref = _reference(cfg)
    run = prepare(cfg, "cupy")
    assert len(run.plan) == 1  # 180k cells: one block when memory is plentiful
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    limit = pool.get_limit()
    try:
        pool.set_limit(size=pool.used_bytes() + 8 * 2**20)  # far less than the block needs
        block = next(iter(run.plan))
        got = run.evaluate_block(block)
    finally:
        pool.set_limit(size=limit)
    _check_arrays(got, ref, run.portfolio)


@pytest.mark.parametrize("model", ["v1", "v2"])
def test_grid_larger_than_one_block_streams_to_disk(tmp_path, model):
    from gridstress.cube import open_cube
    from gridstress.engine import write_cube

    cfg = _random_config(9, 10, 64, 50, model)
    ref = _reference(cfg)
    run = prepare(cfg, "cupy")
    run.plan = gpu_plan(cfg, run.portfolio, free_bytes=2 * 1000 * 8 * 40)  # ~1000-cell blocks
    assert len(run.plan) >= 4
    out = write_cube(run, tmp_path / "cube.zarr")
    cube = open_cube(out)
    _check(cube, ref, run.portfolio)


def test_compiled_kernel_is_cached_on_disk(tmp_path):
    code = "import cupy; from gridstress.kernels import kernel_function; kernel_function(cupy)"
    env = dict(os.environ, CUPY_CACHE_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    first = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert first, "the first start wrote no compiled kernel to the cache"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    again = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert again == first  # the second start loaded it: nothing compiled anew


@pytest.mark.parametrize(
    "model,scheduler",
    [
        *((model, scheduler) for model in ("v1", "v2") for scheduler in SCHEDULERS),
        ("seed-generations.yaml", "synchronous"),
        ("replay-h100-2023.yaml", "synchronous"),
    ],
)
def test_cli_run_on_the_gpu_matches_numpy(tmp_path, scheduler, model):
    """``gridstress run`` end to end on the GPU, in this process or on Dask workers:
    the seed config (model v2, the market step) and the seed book with v1's
    settings, both on the fused kernel; and the shipped model v3 configs (the
    generation shock with the market's appraisal, a rent path replayed)."""
    import yaml

    from gridstress.cube import open_cube

    if scheduler == "local-cuda":
        pytest.importorskip("dask_cuda", reason="dask-cuda (the gpu extra) is not installed")
    config = ROOT / "configs" / (model if model.endswith(".yaml") else "seed.yaml")
    if model == "v1":
        raw = v1_config(load_config(config)).to_dict()
        config = tmp_path / "seed-v1.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))

    def run(backend: str, sched: str, out: str):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "gridstress",
                "run",
                str(config),
                "--backend",
                backend,
                "--scheduler",
                sched,
                "--chunk-cells",
                "20000",
                "--out",
                str(tmp_path / out),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr
        return open_cube(tmp_path / out)

    gpu = run("cupy", scheduler, "gpu.zarr")
    cpu = run("numpy", "synchronous", "cpu.zarr")
    assert "cupy" in gpu.attrs["backend"] and gpu.attrs["device"]
    assert gpu.attrs["engine"] == "fused CUDA kernel"
    pf = prepare(config, "numpy").portfolio
    _check(gpu, cpu, pf)
