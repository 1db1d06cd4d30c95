"""Model v3's inputs through the real entry point: paths inline and in CSV
files, the generation shock and the market appraisal; every bad input is one
line naming the file, key or row, the value and the rule, exit status 2, and
nothing written."""

from __future__ import annotations

import pytest
import yaml

from gridstress import load_config

GRID = {
    "deflation": {"values": [0.0, 0.3]},
    "crypto_drawdown": {"values": [0.0, 0.5]},
    "haircut": {"values": [0.0, 0.5]},
}
BOOK = "loan_id,principal,rate,term_years,n_gpus,generation_exposure\nA,1000000,0.1,3,100,0.5\n"


def write(tmp_path, scenario=None, grid=None, book=BOOK):
    (tmp_path / "book.csv").write_text(book)
    raw = {
        "name": "v3",
        "scenario": scenario or {},
        "grid": grid or GRID,
        "portfolio": "book.csv",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "run.yaml"


def refused(cli, tmp_path, message):
    res = cli("run", "run.yaml", "--out", "cube.zarr")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.glob("cube.zarr*")) and not (tmp_path / "results").exists()


BAD_PATHS = [
    ([[1, 1.0], [2, 0.5]], "scenario.rent_path: must start at years 0, not 1"),
    ([[0, 1.0], [1, 0.5], [1, 0.4]], "years must increase strictly: point 3 at 1 follows 1"),
    ([[0, 1.0], [2, 0.5], [1, 0.4]], "years must increase strictly: point 3 at 1 follows 2"),
    ([[0, 1.0], [1, -0.5]], "point 2 (1, -0.5): the index must be >= 0"),
    ([[0, 1.0], [1, ".nan"]], "point 2 (1, nan): years and index must be finite numbers"),
    ([[0, 1.0], [1, ".inf"]], "point 2 (1, inf): years and index must be finite numbers"),
    ([[0, 0.0], [1, 0.5]], "the first index must be > 0"),
    ([[0, "a"]], "every point must be two numbers [years, index]"),
    (3, "must be a list of [years, index] points or a CSV file"),
]


@pytest.mark.parametrize("path, message", BAD_PATHS)
def test_a_bad_inline_path_is_refused(cli, tmp_path, path, message):
    if isinstance(path, list):  # YAML's own spelling of NaN and infinity
        path = [
            [t, float(i[1:]) if isinstance(i, str) and i.startswith(".") else i] for t, i in path
        ]
    write(tmp_path, {"rent_path": path})
    refused(cli, tmp_path, message)


BAD_FILES = [
    ("years,index\n0,1\n1,0.5\n", None, None),  # a good one: no refusal
    (
        "when,index\n0,1\n",
        "rent.csv has columns when,index; a path needs years,index or date,index",
        None,
    ),
    ("years,level\n0,1\n", "a path needs years,index or date,index", None),
    (
        "date,index\n2023-01-01,4.7\n2023-13-01,3\n",
        "rent.csv row 3: date='2023-13-01' is not a date",
        None,
    ),
    ("years,index\n0,4.7\n0.5,x\n", "rent.csv row 3: index='x' must be a number", None),
    ("years,index\n0.5,4.7\n1,3\n", "(rent.csv): must start at years 0, not 0.5", None),
    (None, "scenario.rent_path=rent.csv: file", "not found"),
]


@pytest.mark.parametrize("text, message, tail", BAD_FILES)
def test_a_path_file_is_read_or_refused_by_row(cli, tmp_path, text, message, tail):
    if text is not None:
        (tmp_path / "rent.csv").write_text(text)
    write(tmp_path, {"rent_path": "rent.csv"})
    if message is None:
        res = cli("validate", "run.yaml")
        assert res.returncode == 0, res.stderr
        return
    refused(cli, tmp_path, message)
    if tail:
        refused(cli, tmp_path, tail)


@pytest.mark.parametrize(
    "scenario, grid, message",
    [
        ({"generation_shock": 1.0}, None, "scenario.generation_shock=1.0 must be in [0, 1)"),
        ({"generation_shock": -0.1}, None, "scenario.generation_shock=-0.1 must be in [0, 1)"),
        ({"generation_years": -1}, None, "scenario.generation_years=-1 must be >= 0"),
        ({"appraisal_deflation": 1.0}, None, "scenario.appraisal_deflation=1.0 must be in (-1, 1)"),
        ({"appraisal_deflation": -1.0}, None, "must be in (-1, 1)"),
        (
            None,
            {**GRID, "generation_shock": {"values": [0.0, 1.0]}},
            "grid.generation_shock value 1.0 must be in [0, 1)",
        ),
        (
            None,
            {**GRID, "rent_path": {"values": [0.0, 1.0]}},
            "grid.rent_path is not an axis: a path is the same in every cell",
        ),
        (
            None,
            {**GRID, "crypto_path": {"values": [0.0, 1.0]}},
            "grid.crypto_path is not an axis",
        ),
    ],
)
def test_bad_v3_scenario_values_are_refused(cli, tmp_path, scenario, grid, message):
    write(tmp_path, scenario, grid)
    refused(cli, tmp_path, message)


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_a_bad_generation_exposure_is_refused_by_row(cli, tmp_path, value):
    write(
        tmp_path,
        book=f"loan_id,principal,rate,term_years,generation_exposure\nA,1e6,0.1,3,{value}\n",
    )
    refused(
        cli, tmp_path, f"book.csv row 2 (loan_id=A): generation_exposure={value} must be in [0, 1]"
    )


def test_a_path_by_dates_is_the_same_path_in_years(tmp_path):
    """Dates become years since the first date / 365.25: 2024-01-01 to
    2024-07-01 is 182 days = 0.49829 years, to 2025-01-01 366 days = 1.00205."""
    (tmp_path / "by-date.csv").write_text(
        "date,index\n2024-01-01,8.0\n2024-07-01,4.0\n2025-01-01,2.0\n"
    )
    (tmp_path / "by-years.csv").write_text(
        f"years,index\n0,8.0\n{182 / 365.25!r},4.0\n{366 / 365.25!r},2.0\n"
    )
    by_date = load_config(write(tmp_path, {"crypto_path": "by-date.csv"}))
    by_years = load_config(write(tmp_path, {"crypto_path": "by-years.csv"}))
    assert by_date.paths == by_years.paths
    assert by_date.paths["crypto_path"][1] == pytest.approx((0.49829, 4.0), abs=1e-5)


def test_a_path_is_resolved_into_the_config_as_points(tmp_path):
    """The cube's config attribute carries the points, not the file name, so a
    cube is self-contained and a changed file changes the config's hash."""
    (tmp_path / "rent.csv").write_text("years,index\n0,4.7\n1,2.35\n")
    first = load_config(write(tmp_path, {"rent_path": "rent.csv"}))
    assert yaml.safe_load(first.to_yaml())["scenario"]["rent_path"] == [[0.0, 4.7], [1.0, 2.35]]
    (tmp_path / "rent.csv").write_text("years,index\n0,4.7\n1,2.0\n")
    second = load_config(tmp_path / "run.yaml")
    assert first.config_sha256 != second.config_sha256


def test_a_path_that_ends_before_the_horizon_is_a_warning(cli, tmp_path):
    """The loan runs 3 years and its fleet earns for 5 (the default life): the
    model reads the rent path to 5 years; the path ends at 2."""
    write(tmp_path, {"rent_path": [[0, 1.0], [2, 0.5]]})
    res = cli("validate", "run.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines() == [
        "warning: run.yaml: scenario.rent_path ends at 2 years, before the 5 years the "
        "model reads; it is held flat after its last point"
    ]


def test_an_empty_appraisal_deflation_is_the_foresight_appraisal(tmp_path):
    cfg = load_config(write(tmp_path, {"appraisal_deflation": None}))
    assert cfg.scenario["appraisal_deflation"] is None
    assert load_config(write(tmp_path)).scenario == cfg.scenario
