"""Shared fixtures: the gpu marker, config factories, random portfolios."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from gridstress.config import config_from_dict
from gridstress.synthetic import random_loans  # noqa: F401  (tests import it from here)

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


@pytest.fixture
def cli(tmp_path):
    """Run the installed ``gridstress`` console script in ``tmp_path``."""
    import subprocess

    exe = shutil.which("gridstress", path=str(Path(sys.executable).parent)) or "gridstress"

    def run(*args, cwd=None, timeout=300):
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
        return subprocess.run([exe, *map(str, args)], cwd=cwd or tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
