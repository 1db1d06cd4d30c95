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


def make_config(loans, grid=None, periods_per_year=4, scenario=None, defaults=None,
                name="test"):
    """A validated RunConfig with inline loans (dicts of loan fields)."""
    raw = {
        "name": name,
        "periods_per_year": periods_per_year,
        "scenario": scenario or {},
        "grid": grid or {
            "deflation": {"values": [0.0, 0.3]},
            "crypto_drawdown": {"values": [0.0, 0.5]},
            "haircut": {"values": [0.0, 0.5]},
        },
        "portfolio": list(loans),
    }
    if defaults:
        raw["defaults"] = defaults
    return config_from_dict(raw, where="test.yaml")


def random_loans(rng: np.random.Generator, count: int, periods_per_year: int = 4):
    """Random but plausible loans that vary every field of model v1."""
    loans = []
    for i in range(count):
        amort = rng.choice(["annuity", "linear", "bullet"])
        loan = {
            "loan_id": f"L{i:03d}",
            "segment": rng.choice(["neocloud", "miner", "enterprise"]),
            "principal": float(rng.uniform(1e6, 5e8)),
            "rate": float(rng.choice([0.0, rng.uniform(0.0, 0.16)])),
            "spread": float(rng.uniform(0.0, 0.1)),
            "term_years": float(rng.integers(1, 4 * periods_per_year + 1) / periods_per_year
                                * rng.uniform(0.5, 2.0)),
            "amortization": str(amort),
            "n_gpus": float(rng.choice([0, rng.integers(100, 20000)])),
            "gpu_age_years": float(rng.uniform(0, 3)),
            "economic_life_years": float(rng.uniform(2, 7)),
            "pledged_share": float(rng.choice([0.0, 1.0, rng.uniform(0, 1)])),
            "rent": float(rng.uniform(0.5, 4.0)),
            "utilization": float(rng.uniform(0.3, 1.0)),
            "contracted_share": float(rng.choice([0.0, rng.uniform(0, 1)])),
            "contract_years": float(rng.uniform(0, 5)),
            "contract_rent": float(rng.uniform(0.5, 4.0)),
            "power_kw_per_gpu": float(rng.uniform(0.5, 2.5)),
            "power_price": float(rng.uniform(0.03, 0.5)),
            "fixed_opex_per_gpu_year": float(rng.uniform(0, 6000)),
            "mining_revenue": float(rng.choice([0.0, rng.uniform(1e6, 2e8)])),
            "mining_cost": float(rng.uniform(0, 1e8)),
            "crypto_collateral": float(rng.choice([0.0, rng.uniform(1e6, 3e8)])),
            "cash_reserve": float(rng.choice([0.0, rng.uniform(0, 5e7)])),
            "min_dscr": float(rng.choice([0.0, rng.uniform(1.0, 1.6)])),
            "cure_periods": int(rng.integers(1, 4)),
            "max_ltv": None if rng.random() < 0.5 else float(rng.uniform(0.5, 1.5)),
            "refi_advance_rate": float(rng.uniform(0, 1)),
        }
        if amort != "bullet":
            loan["balloon"] = float(rng.choice([0.0, rng.uniform(0, 0.6)]))
        loans.append(loan)
    return loans


def cli_runner(default_cwd: Path):
    """A function that runs the installed ``gridstress`` console script."""
    import subprocess

    exe = shutil.which("gridstress", path=str(Path(sys.executable).parent)) or "gridstress"

    def run(*args, cwd=None, timeout=300):
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
        return subprocess.run([exe, *map(str, args)], cwd=cwd or default_cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def cli(tmp_path):
    """Run the installed ``gridstress`` console script in ``tmp_path``."""
    return cli_runner(tmp_path)
