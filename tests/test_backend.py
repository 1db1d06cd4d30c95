"""Backend choice (CPU side) and parity of the xp model on CuPy (gpu marker)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HAVE_GPU, make_config, random_loans

from gridstress import run_grid
from gridstress.backend import resolve_backend
from gridstress.errors import BackendUnavailable


def test_numpy_backend():
    b = resolve_backend("numpy")
    assert b.name == "numpy" and b.xp is np and b.note is None and b.device.startswith("CPU")


def test_unknown_backend_is_refused():
    with pytest.raises(BackendUnavailable, match="must be one of auto, numpy, cupy"):
        resolve_backend("tpu")


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU")
def test_auto_falls_back_to_numpy_with_a_reason():
    b = resolve_backend("auto")
    assert b.name == "numpy"
    assert b.note and b.note.startswith("using NumPy on the CPU: ")
    with pytest.raises(BackendUnavailable, match="--backend cupy cannot run here"):
        resolve_backend("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_xp_model_on_cupy_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    cfg = make_config(random_loans(rng, 12), grid={
        "deflation": {"start": -0.2, "stop": 0.8, "num": 23},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 17},
        "haircut": {"values": [0.0, 0.3, 0.55, 0.9]}})
    cpu = run_grid(cfg, backend="numpy")
    gpu = run_grid(cfg, backend="cupy", chunk_cells=97)  # uneven blocks
    assert gpu.attrs["backend"] == "cupy"
    for name in cpu.data_vars:
        np.testing.assert_allclose(gpu[name].values, cpu[name].values, rtol=1e-9,
                                   atol=1e-9 * float(np.nanmax(np.abs(cpu[name].values),
                                                               initial=1.0)),
                                   equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(np.isnan(gpu[name].values), np.isnan(cpu[name].values))
