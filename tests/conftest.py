"""Shared fixtures: the gpu marker, config factories, random portfolios."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from gridstress.config import config_from_dict
from gridstress.synthetic import random_loans, v1_loans  # noqa: F401  (tests import them here)

ROOT = Path(__file__).resolve().parents[1]

# HYPOTHESIS_PROFILE=thorough runs ten times the examples of the default.
settings.register_profile("default", max_examples=30)
settings.register_profile("thorough", max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = _gpu_available()


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_config(loans, grid=None, periods_per_year=4, scenario=None, defaults=None, name="test"):
    """A validated RunConfig with inline loans (dicts of loan fields)."""
    raw = {
        "name": name,
        "periods_per_year": periods_per_year,
        "scenario": scenario or {},
        "grid": grid
        or {
            "deflation": {"values": [0.0, 0.3]},
            "crypto_drawdown": {"values": [0.0, 0.5]},
            "haircut": {"values": [0.0, 0.5]},
        },
        "portfolio": list(loans),
    }
    if defaults:
        raw["defaults"] = defaults
    return config_from_dict(raw, where="test.yaml")


#: The scenario setting that, with v1_loans, reproduces model v1 (model.md).
V1_SCENARIO = {"market_depth_gpus": float("inf")}


def v1_config(cfg):
    """A validated config with model v1's settings for its loans and scenario."""
    from dataclasses import replace

    loans = tuple(
        replace(ln, cash_cap=ln.cash_reserve, refi_term_years=0.0, ltv_basis="market")
        for ln in cfg.loans
    )
    return replace(cfg, scenario={**cfg.scenario, **V1_SCENARIO}, loans=loans)


def make_v1_config(loans, grid=None, scenario=None, **kw):
    """``make_config`` with model v1's settings: what the fused kernel computes."""
    return make_config(
        v1_loans(loans), grid=grid, scenario={**V1_SCENARIO, **(scenario or {})}, **kw
    )


def cli_runner(default_cwd: Path):
    """A function that runs the installed ``gridstress`` console script."""
    import subprocess

    exe = shutil.which("gridstress", path=str(Path(sys.executable).parent)) or "gridstress"

    def run(*args, cwd=None, timeout=300):
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
        return subprocess.run(
            [exe, *map(str, args)],
            cwd=cwd or default_cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def cli(tmp_path):
    """Run the installed ``gridstress`` console script in ``tmp_path``."""
    return cli_runner(tmp_path)


#: Scale of each variable for the parity tolerance: results agree to 1e-9 of
#: the value, or of this scale near zero (USD variables: the total principal).
def parity_scale(name: str, total_principal: float, principal_wal: float) -> float:
    if name in ("loss", "loss_pv", "loss_by_segment"):
        return total_principal
    if name == "breakeven_spread_bps":
        return 1e4 * total_principal / principal_wal
    return 1.0


def assert_parity(
    got: dict, ref: dict, total_principal: float, principal_wal: float, rtol: float = 1e-9
) -> None:
    """Every variable of ``got`` equals ``ref`` to ``rtol``, NaN where ``ref`` is NaN."""

    assert set(got) == set(ref)
    for name in ref:
        g, r = np.asarray(got[name]), np.asarray(ref[name])
        assert g.shape == r.shape, (name, g.shape, r.shape)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=f"{name}: NaN cells")
        scale = parity_scale(name, total_principal, principal_wal)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=name)


#: Grids for the GPU parity tests: uneven sizes, extra axes, axes out of order.
GRIDS_GPU = {
    "three axes": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 23},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 17},
        "haircut": {"values": [0.0, 0.3, 0.55, 0.9]},
    },
    "single haircut": {
        "deflation": {"start": -0.3, "stop": 0.9, "num": 61},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 45},
        "haircut": {"values": [0.35]},
    },
    "many haircuts": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 19},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 13},
        "haircut": {"start": 0.0, "stop": 1.0, "num": 21},
    },
    "extra axes": {
        "deflation": {"start": -0.2, "stop": 0.8, "num": 7},
        "crypto_drawdown": {"start": 0.0, "stop": 0.95, "num": 5},
        "haircut": {"values": [0.0, 0.9]},
        "discount_rate": {"values": [0.02, 0.12]},
        "drawdown_periods": {"values": [1.0, 6.0]},
        "liquidation_cost": {"values": [0.0, 0.3]},
    },
}
