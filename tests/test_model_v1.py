"""Model v3 reproduces model v1 exactly with the v1 settings of model.md.

With ``market_depth_gpus: .inf``, ``cash_cap`` = ``cash_reserve``,
``refi_term_years: 0`` and ``ltv_basis: market``, every v1 variable equals
model v1: to float64 rounding against cubes the v1 engine wrote (tests/data),
and to 1e-9 against the literal v1 reference (tests/reference_v1.py) on random
portfolios and grids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import reference_v1
import xarray as xr
import yaml
from conftest import V1_SCENARIO, make_config, random_loans, v1_loans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridstress import run_grid
from gridstress.config import config_from_dict

DATA = Path(__file__).parent / "data"
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: What "equal to the golden cube" means on any x86-64 CPU: NumPy's SIMD sums
#: add in an order that depends on the instruction set (AVX2 or AVX-512), so
#: sums over loans and periods may differ in the last bit or two (1.7e-16
#: relative seen between such CPUs).  1e-12 relative holds that with room,
#: and is still a million times tighter than any change of the model.
GOLDEN_RTOL = 1e-12
#: Variables that are counts or period times, whatever the summation order.
EXACT = ("defaults", "first_default_years")


@pytest.mark.parametrize("name", ["v1-golden-seed", "v1-golden-random"])
def test_v1_golden_cubes_are_reproduced(name):
    with xr.open_dataset(DATA / f"{name}.nc", engine="h5netcdf") as golden:
        golden = golden.load()
    assert golden.attrs["model_version"] == "1"
    raw = yaml.safe_load(golden.attrs["config"])
    raw["scenario"].update(V1_SCENARIO)
    raw["portfolio"] = v1_loans(raw["portfolio"])
    cube = run_grid(config_from_dict(raw, f"{name}.nc"), backend="numpy")
    assert cube.attrs["model_version"] == "3"
    for var in golden.data_vars:
        got, expected = cube[var].values, golden[var].values
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=var)
        if var in EXACT:
            np.testing.assert_array_equal(got, expected, err_msg=var)
        else:
            np.testing.assert_allclose(got, expected, rtol=GOLDEN_RTOL, atol=0, err_msg=var)
    # What v2 adds is consistent with it: nothing sold, and the triggers add up.
    assert (cube["market_price_min"] == 1.0).all()
    np.testing.assert_allclose(
        cube["default_rate_by_trigger"].sum("trigger"), cube["default_rate"], rtol=1e-12, atol=1e-15
    )
    assert float(golden["default_rate"].min()) < float(golden["default_rate"].max())


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), f=st.sampled_from([1, 4, 12]))
def test_v1_settings_equal_the_v1_reference(seed, f):
    rng = np.random.default_rng(seed)
    grid = {
        "deflation": {
            "values": sorted(rng.choice(np.linspace(-0.3, 0.9, 61), 4, replace=False).tolist())
        },
        "crypto_drawdown": {"values": [0.0, float(rng.uniform(0.2, 1.0))]},
        "haircut": {"values": [0.0, float(rng.uniform(0.2, 1.0))]},
        "discount_rate": {"values": [0.0, float(rng.uniform(0.02, 0.2))]},
    }
    cfg = make_config(
        v1_loans(random_loans(rng, int(rng.integers(1, 7)), f)),
        grid=grid,
        periods_per_year=f,
        scenario={**V1_SCENARIO, "drawdown_periods": int(rng.integers(1, 9))},
    )
    cube = run_grid(cfg, backend="numpy")
    ref = reference_v1.evaluate_grid(
        cfg.loans, f, {a.name: a.array for a in cfg.axes}, cfg.scenario
    )
    for name, expected in ref.items():
        got = cube[name].values
        scale = 1e-9 * max(1.0, np.nanmax(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(
            got, expected, rtol=1e-9, atol=scale, equal_nan=True, err_msg=name
        )
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)
