"""The real ``gridstress`` entry point: bad input refused, cubes written and read."""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
from conftest import ROOT

from gridstress import load_config, open_cube, run_grid
from gridstress.variables import variables

HEADER = "loan_id,principal,rate,term_years,utilization,n_gpus"
GOOD_ROW = "OK-1,1000000,0.1,3,0.8,100"
GRID = """\
grid:
  deflation: {start: 0.0, stop: 0.5, num: 6}
  crypto_drawdown: {values: [0.0, 0.5]}
  haircut: {values: [0.0, 0.5]}
"""


def write_case(tmp_path, rows=(GOOD_ROW,), header=HEADER, grid=GRID, extra=""):
    (tmp_path / "book.csv").write_text("\n".join([header, *rows]) + "\n")
    (tmp_path / "run.yaml").write_text(f"name: case\n{extra}{grid}portfolio: book.csv\n")
    return tmp_path / "run.yaml"


BAD_ROWS = [
    # (rows, the message expected on stderr)
    (
        ["IREN-1,1000000,0.1,3,0.8,100", "IREN-2,1000000,0.1,3,1.3,100"],
        "book.csv row 3 (loan_id=IREN-2): utilization=1.3 must be in [0, 1]",
    ),
    (["A,nan,0.1,3,0.8,100"], "book.csv row 2 (loan_id=A): principal=nan must be a finite number"),
    (["A,inf,0.1,3,0.8,100"], "book.csv row 2 (loan_id=A): principal=inf must be a finite number"),
    (["A,1000,0.1,-inf,0.8,100"], "term_years=-inf must be a finite number"),
    (["A,-5,0.1,3,0.8,100"], "book.csv row 2 (loan_id=A): principal=-5 must be > 0"),
    (["A,1000,abc,3,0.8,100"], "book.csv row 2 (loan_id=A): rate=abc must be a number"),
    (["A,1000,,3,0.8,100"], "book.csv row 2 (loan_id=A): rate=(empty) is required"),
    (
        ["A,1000,0.1,3,0.8,100", "A,2000,0.1,3,0.8,100"],
        "book.csv row 3 (loan_id=A): loan_id=A must be unique (already used in row 2)",
    ),
    ([], "book.csv: the portfolio is empty"),
]


@pytest.mark.parametrize("rows, message", BAD_ROWS)
def test_bad_portfolio_rows_are_refused(cli, tmp_path, rows, message):
    config = write_case(tmp_path, rows=rows)
    for command in ("validate", "run"):
        res = cli(command, config)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_column_is_named(cli, tmp_path):
    config = write_case(tmp_path, header=HEADER + ",colour", rows=[GOOD_ROW + ",red"])
    res = cli("run", config)
    assert res.returncode == 2
    assert "book.csv: unknown column(s) colour" in res.stderr
    assert not (tmp_path / "results").exists()


BAD_CONFIGS = [
    (
        GRID.replace(
            "deflation: {start: 0.0, stop: 0.5, num: 6}",
            "deflation: {start: 0.0, stop: 0.5, num: 0}",
        ),
        "run.yaml: grid.deflation.num=0 must be >= 1",
    ),
    (GRID + "  volatility: {values: [0.1]}\n", "run.yaml: grid.volatility is not a known axis"),
    (GRID.replace("  haircut: {values: [0.0, 0.5]}\n", ""), "run.yaml: grid.haircut is required"),
    (
        GRID.replace("[0.0, 0.5]}\n", "[0.0, 1.5]}\n"),
        "run.yaml: grid.haircut value 1.5 must be in [0, 1]",
    ),
    (GRID.replace("{values: [0.0, 0.5]}", "{values: [0.5, 0.0]}"), "must be strictly increasing"),
    (GRID + "colour: red\n", "run.yaml: colour=red is not a known key"),
    (
        GRID + "scenario: {discount_rate: .nan}\n",
        "run.yaml: scenario.discount_rate=nan must be a finite number",
    ),
    (GRID + "defaults: {utilization: 2}\n", "run.yaml: defaults.utilization=2 must be in [0, 1]"),
]


@pytest.mark.parametrize("grid, message", BAD_CONFIGS)
def test_bad_configs_are_refused(cli, tmp_path, grid, message):
    config = write_case(tmp_path, grid=grid)
    res = cli("run", config, "--out", tmp_path / "cube.zarr")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "cube.zarr").exists()
    assert not list(tmp_path.glob("cube.zarr*"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("- just\n- a list\n", "run.yaml: the config must be a YAML mapping, not list"),
        ("", "run.yaml: the config must be a YAML mapping, not empty"),
        ("name: [unclosed\n", "run.yaml: not valid YAML"),
    ],
)
def test_config_that_is_not_a_mapping(cli, tmp_path, text, message):
    (tmp_path / "run.yaml").write_text(text)
    res = cli("run", tmp_path / "run.yaml")
    assert res.returncode == 2
    assert message in res.stderr
    assert not (tmp_path / "results").exists()


def test_missing_files(cli, tmp_path):
    res = cli("run", tmp_path / "nope.yaml")
    assert res.returncode == 2 and "config file not found" in res.stderr
    (tmp_path / "run.yaml").write_text(f"{GRID}portfolio: missing.csv\n")
    res = cli("validate", tmp_path / "run.yaml")
    assert res.returncode == 2 and "missing.csv: portfolio file not found" in res.stderr


def test_cupy_backend_without_gpu_exits_2(cli, tmp_path):
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    res = cli("run", write_case(tmp_path), "--backend", "cupy")
    assert res.returncode == 2
    assert "--backend cupy cannot run here" in res.stderr
    assert not (tmp_path / "results").exists()


def test_defaults_and_inline_portfolio(tmp_path):
    (tmp_path / "run.yaml").write_text(
        GRID
        + textwrap.dedent("""\
        defaults: {utilization: 0.5, segment: hosting}
        portfolio:
          - {loan_id: A, principal: 1.0e6, rate: 0.1, term_years: 2}
          - {loan_id: B, principal: 2.0e6, rate: 0.1, term_years: 2, utilization: 0.9,
             max_ltv: null}
        """)
    )
    cfg = load_config(tmp_path / "run.yaml")
    a, b = cfg.loans
    assert a.utilization == 0.5 and b.utilization == 0.9  # row beats defaults:
    assert a.segment == "hosting" and a.borrower == "A"  # defaults beat documented
    assert a.rent == 2.40 and a.contract_rent == 2.40  # documented defaults
    assert b.max_ltv is None


def test_parquet_portfolio_equals_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    csv_cfg = load_config(ROOT / "configs" / "seed.yaml")
    rows = [loan.as_dict() for loan in csv_cfg.loans]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "seed.parquet")
    text = (ROOT / "configs" / "seed.yaml").read_text()
    (tmp_path / "seed.yaml").write_text(text.replace("portfolios/seed.csv", "seed.parquet"))
    pq_cfg = load_config(tmp_path / "seed.yaml")
    assert pq_cfg.loans == csv_cfg.loans
    assert pq_cfg.portfolio_sha256 == csv_cfg.portfolio_sha256


def test_run_writes_a_cube_that_open_cube_reads(cli, tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    res = cli("run", "configs/seed.yaml")
    assert res.returncode == 0, res.stderr
    assert "cube: results/seed-ai-infra-2025.zarr" in res.stdout
    assert "worst loss rate:" in res.stdout and "cells with any default:" in res.stdout
    assert "central scenario (deflation=0.3, crypto_drawdown=0.5, haircut=0.35)" in res.stdout
    assert "using NumPy" in res.stderr or "on cupy" in res.stderr
    cfg = load_config(tmp_path / "configs" / "seed.yaml")
    with open_cube(tmp_path / "results" / "seed-ai-infra-2025.zarr") as ds:
        assert ds["loss"].dims == ("deflation", "crypto_drawdown", "haircut")
        assert ds.sizes["deflation"] == 81 and ds.sizes["haircut"] == 19
        assert cfg.n_cells >= 50_000
        assert set(ds.data_vars) == set(variables(per_loan=True))  # seed.yaml asks for them
        assert list(ds["segment"].values) == ["miner", "neocloud"]
        for name in variables():
            assert ds[name].dtype == np.float64
            assert ds[name].attrs["units"] and ds[name].attrs["long_name"]
        for dim in ("deflation", "crypto_drawdown", "haircut"):
            assert ds[dim].attrs["units"] and ds[dim].attrs["long_name"]
        for key in (
            "model_version",
            "gridstress_version",
            "config",
            "config_sha256",
            "portfolio_sha256",
            "backend",
            "device",
            "created",
        ):
            assert ds.attrs[key]
        assert ds.attrs["config_sha256"] == cfg.config_sha256
        assert ds.attrs["portfolio_sha256"] == cfg.portfolio_sha256
        memory = run_grid(cfg, backend="numpy")
        for name in variables():
            np.testing.assert_array_equal(ds[name].values, memory[name].values)
    assert not list((tmp_path / "results").glob("*.partial"))
    res = cli("summary", "results/seed-ai-infra-2025.zarr")
    assert res.returncode == 0 and "worst loss rate:" in res.stdout


def test_netcdf_output_and_resume(cli, tmp_path):
    config = write_case(tmp_path, rows=[GOOD_ROW, "OK-2,5000000,0.12,2,0.9,300"])
    res = cli("run", config, "--out", "cube.nc", "--chunk-cells", "5")
    assert res.returncode == 0, res.stderr
    with open_cube(tmp_path / "cube.nc") as nc:
        full = nc.load()
    assert not list(tmp_path.glob("cube.nc.partial*"))
    # An interrupted Zarr run: mark three blocks done, spoil the rest, resume.
    from gridstress.engine import write_cube
    from gridstress.prepared import prepare
    from gridstress.store import partial_path

    out = tmp_path / "cube.zarr"
    run = prepare(config, "numpy", chunk_cells=4)
    calls = []

    class Stop(Exception):
        pass

    def stop_after_three(block):
        calls.append(block.index)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        write_cube(run, out, progress=stop_after_three)
    assert partial_path(out).exists() and not out.exists()
    res = cli("run", config, "--out", "cube.zarr", "--chunk-cells", "999", "--resume")
    assert res.returncode == 0, res.stderr
    with open_cube(out) as ds:
        for name in variables():
            np.testing.assert_array_equal(ds[name].values, full[name].values)


def test_resume_refuses_a_changed_portfolio(cli, tmp_path):
    config = write_case(tmp_path)
    from gridstress.engine import write_cube
    from gridstress.prepared import prepare
    from gridstress.store import partial_path

    run = prepare(config, "numpy", chunk_cells=2)

    def stop(block):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_cube(run, tmp_path / "c.zarr", progress=stop)
    assert partial_path(tmp_path / "c.zarr").exists()
    write_case(tmp_path, rows=["OK-1,2000000,0.1,3,0.8,100"])
    res = cli("run", config, "--out", "c.zarr", "--resume")
    assert res.returncode == 2
    assert "cannot resume: the portfolio changed" in res.stderr


def test_run_refuses_to_replace_what_is_not_a_cube(cli, tmp_path):
    config = write_case(tmp_path)
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    res = cli("run", config, "--out", precious)
    assert res.returncode == 2
    assert "exists and is not a gridstress cube" in res.stderr
    assert (precious / "keep.txt").read_text() == "mine"
    # a cube is replaced, atomically, by the new run
    assert cli("run", config, "--out", "cube.zarr").returncode == 0
    res = cli("run", config, "--out", "cube.zarr")
    assert res.returncode == 0, res.stderr


V2_HEADER = (
    HEADER + ",cash_reserve,cash_cap,refi_term_years,refi_min_dscr,ltv_basis,gpu_cost,"
    "book_life_years"
)
V2_ROW = GOOD_ROW + ",100,200,4,1.35,book,30000,5"


def _v2_row(**changes):
    values = dict(zip(V2_HEADER.split(","), V2_ROW.split(",")))
    values.update({k: str(v) for k, v in changes.items()})
    return ",".join(values.values())


BAD_V2_ROWS = [
    (
        _v2_row(cash_cap=50),
        "book.csv row 2 (loan_id=OK-1): cash_cap=50.0 must be >= cash_reserve (100.0)",
    ),
    (_v2_row(refi_term_years=-1), "book.csv row 2 (loan_id=OK-1): refi_term_years=-1 must be >= 0"),
    (_v2_row(refi_min_dscr=0), "book.csv row 2 (loan_id=OK-1): refi_min_dscr=0 must be > 0"),
    (
        _v2_row(ltv_basis="cost"),
        "book.csv row 2 (loan_id=OK-1): ltv_basis=cost must be one of market, book",
    ),
    (
        _v2_row(gpu_cost=""),
        "book.csv row 2 (loan_id=OK-1): gpu_cost=(empty) is required when ltv_basis is book",
    ),
    (_v2_row(book_life_years=0), "book.csv row 2 (loan_id=OK-1): book_life_years=0 must be > 0"),
]


@pytest.mark.parametrize("row, message", BAD_V2_ROWS)
def test_bad_v2_loan_fields_are_refused(cli, tmp_path, row, message):
    config = write_case(tmp_path, rows=[row], header=V2_HEADER)
    for command in ("validate", "run"):
        res = cli(command, config)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "scenario: {market_depth_gpus: 0}\n",
            "run.yaml: scenario.market_depth_gpus=0 must be > 0 (or .inf)",
        ),
        (
            "scenario: {market_depth_gpus: -5}\n",
            "run.yaml: scenario.market_depth_gpus=-5 must be > 0 (or .inf)",
        ),
        (
            "scenario: {market_half_life_years: 0}\n",
            "run.yaml: scenario.market_half_life_years=0 must be > 0 (or .inf)",
        ),
        ("scenario: {book_share: 0}\n", "run.yaml: scenario.book_share=0 must be in (0, 1]"),
        ("scenario: {book_share: 1.5}\n", "run.yaml: scenario.book_share=1.5 must be in (0, 1]"),
        (
            "scenario: {book_share: .inf}\n",
            "run.yaml: scenario.book_share=inf must be a finite number",
        ),
        (
            "scenario: {market_depth_gpus: .nan}\n",
            "run.yaml: scenario.market_depth_gpus=nan must be a number or .inf",
        ),
        ("outputs: {per_loan: maybe}\n", "run.yaml: outputs.per_loan=maybe"),
    ],
)
def test_bad_market_settings_are_refused(cli, tmp_path, extra, message):
    config = write_case(tmp_path, extra=extra)
    res = cli("run", config, "--out", tmp_path / "cube.zarr")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not list(tmp_path.glob("cube.zarr*"))


@pytest.mark.parametrize(
    "axis, message",
    [
        (
            "market_depth_gpus: {values: [0, 1000]}",
            "run.yaml: grid.market_depth_gpus value 0.0 must be > 0 (or .inf)",
        ),
        (
            "market_depth_gpus: {start: 1000, stop: .inf, num: 3}",
            "run.yaml: grid.market_depth_gpus.start and stop must be finite numbers",
        ),
        ("book_share: {values: [0.5, 2]}", "run.yaml: grid.book_share value 2.0 must be in (0, 1]"),
        (
            "market_half_life_years: {values: [-1, 1]}",
            "run.yaml: grid.market_half_life_years value -1.0 must be > 0 (or .inf)",
        ),
    ],
)
def test_bad_market_axes_are_refused(cli, tmp_path, axis, message):
    config = write_case(tmp_path, grid=GRID + f"  {axis}\n")
    res = cli("run", config, "--out", tmp_path / "cube.zarr")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not list(tmp_path.glob("cube.zarr*"))


def test_plausibility_warnings_are_shown_and_the_run_goes_on(cli, tmp_path):
    header = "loan_id,principal,rate,spread,term_years,max_ltv,n_gpus"
    rows = [
        "PCT,1000000,12,0.05,3,0.8,100",
        "BPS,1000000,0.1,650,3,0.8,100",
        "LTV,1000000,0.1,0.05,3,80,100",
        "MONTHS,1000000,0.1,0.05,60,0.8,100",
    ]
    config = write_case(tmp_path, rows=rows, header=header)
    res = cli("run", config, "--out", "cube.zarr", "--scheduler", "synchronous")
    assert res.returncode == 0, res.stderr
    for line in (
        "warning: book.csv row 2 (loan_id=PCT): rate=12.0 looks like a percentage: "
        "rates are annual fractions (0.12 for 12%)",
        "warning: book.csv row 3 (loan_id=BPS): spread=650.0 looks like a percentage or "
        "basis points",
        "warning: book.csv row 4 (loan_id=LTV): max_ltv=80.0 looks like a percentage: "
        "max_ltv is a ratio (0.8 for 80%)",
        "warning: book.csv row 5 (loan_id=MONTHS): term_years=60.0 looks like months",
    ):
        assert line in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]) == 4
    assert (tmp_path / "cube.zarr").is_dir()
    res = cli("validate", config)
    assert res.returncode == 0 and res.stderr.count("warning:") == 4


def test_a_reference_point_between_grid_values_is_named_with_its_stand_in(cli, tmp_path):
    """central 0.35 on haircuts 0, 0.3, 0.6: 0.3 is nearer (0.05 against 0.25);
    severe 0.5 is nearer 0.6 (0.1 against 0.2). A blank
    line in the portfolio still counts as a row of the file."""
    grid = (
        "grid:\n  deflation: {values: [0.0, 0.2]}\n  crypto_drawdown: {values: [0.0]}\n"
        "  haircut: {values: [0.0, 0.3, 0.6], central: 0.35, severe: 0.5}\n"
    )
    config = write_case(tmp_path, rows=["", "A,1000000,12,3,0.8,100"], grid=grid)
    res = cli("validate", config)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "warning: run.yaml: grid.haircut.central=0.35 is not a grid value; the nearest, 0.3, "
        "stands for it",
        "warning: run.yaml: grid.haircut.severe=0.5 is not a grid value; the nearest, 0.6, "
        "stands for it",
        "warning: book.csv row 3 (loan_id=A): rate=12.0 looks like a percentage: rates are "
        "annual fractions (0.12 for 12%)",
    ]
    res = cli("run", config, "--out", "c.zarr", "--scheduler", "synchronous")
    assert res.returncode == 0, res.stderr
    # deflation: no central given, the midpoint 0.1 ties between 0 and 0.2: the lower
    assert "central scenario (deflation=0, crypto_drawdown=0, haircut=0.3)" in res.stdout


def test_per_loan_outputs_from_the_flag_and_the_config(cli, tmp_path):
    config = write_case(tmp_path, rows=[GOOD_ROW, "OK-2,5000000,0.12,2,0.9,300"])
    assert cli("run", config, "--out", "plain.zarr").returncode == 0
    res = cli("run", config, "--out", "loans.zarr", "--per-loan", "--chunk-cells", "5")
    assert res.returncode == 0, res.stderr
    config_too = write_case(
        tmp_path,
        rows=[GOOD_ROW, "OK-2,5000000,0.12,2,0.9,300"],
        extra="outputs: {per_loan: true}\n",
    )
    assert cli("run", config_too, "--out", "config.zarr").returncode == 0
    with open_cube(tmp_path / "plain.zarr") as plain:
        assert "loan_loss" not in plain.data_vars and "loan" not in plain.dims
    for name in ("loans.zarr", "config.zarr"):
        with open_cube(tmp_path / name) as ds:
            assert ds["loan_default_years"].dims == ("deflation", "crypto_drawdown", "loan")
            assert ds["loan_loss"].dims == ("deflation", "crypto_drawdown", "haircut", "loan")
            assert ds["loan_loss"].attrs["units"] == "USD"
            assert ds["loan_default_years"].attrs["long_name"]
            assert sorted(ds["loan"].values) == ["OK-1", "OK-2"]
            np.testing.assert_allclose(ds["loan_loss"].sum("loan"), ds["loss"], rtol=1e-12)
            assert "per_loan: true" in ds.attrs["config"]
