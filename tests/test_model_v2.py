"""Model v3 reproduces model v2 exactly with no path, no shock and no
``appraisal_deflation`` (model.md, section 14, "Reproducing v2").

The golden cubes (tests/data/README.md) were written by the v2 engine with
per-loan outputs; each embeds its resolved config, which carries none of the
v3 inputs, so the config reader gives them their empty defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from gridstress import run_grid
from gridstress.config import config_from_dict
from gridstress.params import PATHS

DATA = Path(__file__).parent / "data"
#: As tests/test_model_v1.py: NumPy's SIMD sums may differ in the last bit or
#: two between x86-64 CPUs; 1e-12 relative holds that with room.
GOLDEN_RTOL = 1e-12
#: Counts and period times, whatever the summation order.
EXACT = ("defaults", "first_default_years", "loan_default_years")


@pytest.mark.parametrize("name", ["v2-golden-seed", "v2-golden-random"])
def test_v2_golden_cubes_are_reproduced(name):
    with xr.open_dataset(DATA / f"{name}.nc", engine="h5netcdf") as golden:
        golden = golden.load()
    assert golden.attrs["model_version"] == "2"
    raw = yaml.safe_load(golden.attrs["config"])
    cfg = config_from_dict(raw, f"{name}.nc")
    # The v2 config knows no v3 input: the reader fills in the ones that give v2.
    assert cfg.paths == {} and not set(raw["scenario"]) & set(PATHS)
    assert cfg.scenario["generation_shock"] == 0.0
    assert cfg.scenario["appraisal_deflation"] is None
    assert all(loan.generation_exposure == 1.0 for loan in cfg.loans)
    cube = run_grid(cfg, backend="numpy", per_loan=True)
    assert cube.attrs["model_version"] == "3"
    assert set(golden.data_vars) == set(cube.data_vars)
    for var in golden.data_vars:
        got, expected = cube[var].values, golden[var].values
        assert cube[var].dims == golden[var].dims, var
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=var)
        if var in EXACT:
            np.testing.assert_array_equal(got, expected, err_msg=var)
        else:
            np.testing.assert_allclose(got, expected, rtol=GOLDEN_RTOL, atol=0, err_msg=var)
    # The goldens are not trivial: some cells lose, some do not, the market moves.
    assert float(golden["loss"].min()) < float(golden["loss"].max())
    assert float(golden["market_price_min"].min()) < 1.0
    assert np.isnan(golden["loan_default_years"].values).any()
    assert not np.isnan(golden["loan_default_years"].values).all()
