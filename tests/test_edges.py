"""The command line at its edges, through the real entry point: mistakes, pipes,
replacing cubes, output off a terminal, Excel, conventions, startup."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT, cli_runner

from gridstress import load_config, open_cube
from gridstress.model import MODEL_VERSION

GRID = """\
grid:
  deflation: {start: 0.0, stop: 0.5, num: 6}
  crypto_drawdown: {values: [0.0, 0.5]}
  haircut: {values: [0.0, 0.5]}
"""
BOOK = (
    "loan_id,principal,rate,term_years,utilization,n_gpus\nA,1000000,0.1,3,0.8,100\n"
    "B,2000000,0.12,2,0.9,300\n"
)


@pytest.fixture
def case(tmp_path):
    """A folder with a small config (run.yaml, book.csv) and the seed configs, and a runner."""
    (tmp_path / "book.csv").write_text(BOOK)
    (tmp_path / "run.yaml").write_text(f"name: case\n{GRID}portfolio: book.csv\n")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path, cli_runner(tmp_path)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """The seed cube, written once."""
    where = tmp_path_factory.mktemp("cube")
    run = cli_runner(where)
    res = run("run", ROOT / "configs" / "seed.yaml", "--out", "seed.zarr")
    assert res.returncode == 0, res.stderr
    return where / "seed.zarr"


MISTAKES = [
    # (arguments, a part of the one line on stderr)
    (
        ("summary", "run.yaml"),
        "run.yaml: not a gridstress cube (a cube is the .zarr directory "
        "or .nc file that gridstress run writes); it looks like a run config",
    ),
    (("summary", "book.csv"), "it looks like a portfolio"),
    (("summary", "configs"), "configs: not a gridstress cube"),
    (("summary", "nope.zarr"), "nope.zarr: no such cube"),
    (("validate", "book.csv"), "book.csv: looks like a portfolio, not a run config"),
    (("validate", "configs"), "configs: is a folder; a run config is a YAML file"),
    (("trace", "configs"), "configs: is a folder"),
    (("run", "nope.yaml"), "nope.yaml: config file not found"),
    (
        ("run", "run.yaml", "--out", "cube.csv"),
        "--out cube.csv: a cube is a Zarr directory (.zarr, or no suffix) or a NetCDF file (.nc)",
    ),
    (("run", "run.yaml", "--chunk-cells", "1.5"), "'1.5' is not a whole number"),
    (("run", "run.yaml", "--scheduelr", "local"), "No such option: --scheduelr"),
    (("run", "run.yaml", "--backend", "tpu"), "--backend tpu: must be one of auto, numpy, cupy"),
    (("summry", "x"), "no such command 'summry'; did you mean summary?"),
    (("summary",), "Missing argument 'CUBE'"),
    (("bench", "--cells", "lots"), "'lots' is not a number"),
    (("bench", "--model", "v3"), "--model v3: must be one of v1, v2"),
    (("trace", "run.yaml", "--at", "deflaton=0.1"), "(did you mean deflation?)"),
    (("trace", "run.yaml", "--loan", "a"), "--loan a: not in the portfolio (did you mean A?)"),
]
CUBE_MISTAKES = [
    (
        ("report", "CUBE", "-o", "nodir/r.html"),
        "--output nodir/r.html: the folder nodir does not exist",
    ),
    (("report", "CUBE", "-o", "r.pdf"), "--output r.pdf: must end in .html or .htm"),
    (("plot", "CUBE", "-o", "nodir/x.png"), "the folder nodir does not exist"),
    (("plot", "CUBE", "-o", "x.jpg"), "--output x.jpg: must end in .png, .svg or .pdf"),
    (("plot", "CUBE", "--x", "deflaton", "-o", "x.png"), "(did you mean deflation?)"),
    (("frontier", "CUBE", "--csv", "nodir/f.csv"), "--csv nodir/f.csv: the folder nodir"),
    (("frontier", "CUBE", "--csv", "f.txt"), "--csv f.txt: must end in .csv"),
    (("frontier", "CUBE", "--var", "loss_rat"), "(did you mean loss_rate?)"),
    (("frontier", "CUBE", "--max-columns", "0"), "--max-columns 0: must be >= 1"),
    (("bench", "--loans", "0"), "--loans 0: must be >= 1"),
    (("summary", "CUBE", "--xlsx", "s.csv"), "--xlsx s.csv: must end in .xlsx"),
    (("reverse", "CUBE", "--loss-rate", "0.2", "--csv", "nodir/r.csv"), "the folder nodir"),
    (
        ("risk", "CUBE", "--marginals", "m.yaml"),
        "marginals.deflation: lco is not a parameter "
        "of norm (did you mean loc?); its parameters are: loc, scale",
    ),
    (("compare", "CUBE", "run.yaml"), "it looks like a run config"),
]


@pytest.mark.parametrize("args, message", MISTAKES + CUBE_MISTAKES)
def test_a_mistake_is_one_line_exit_2_and_nothing_written(case, cube, args, message):
    where, run = case
    (where / "m.yaml").write_text("deflation: {dist: norm, lco: 0.3, scale: 0.1}\n")
    before = _files(where)
    res = run(*(str(cube) if a == "CUBE" else a for a in args))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert _files(where) == before


def test_an_internal_error_is_one_line_and_the_debug_switch_shows_it(case):
    where, run = case
    # A cube whose loss_rate was removed by hand: the analysis breaks inside.
    res = run("run", "run.yaml", "--out", "c.zarr")
    assert res.returncode == 0, res.stderr
    shutil.rmtree(where / "c.zarr" / "trigger")
    (where / "c.zarr" / "zarr.json").write_text(
        (where / "c.zarr" / "zarr.json").read_text().replace('"consolidated_metadata"', '"x"')
    )
    res = run("summary", "c.zarr")
    assert res.returncode in (1, 2) and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1


@pytest.mark.parametrize("pipe", ["2>&1 | head -1", "| head -1", "2>/dev/null | true"])
def test_a_closed_pipe_never_stops_a_run(case, pipe):
    where, _ = case
    exe = shutil.which("gridstress", path=str(ROOT / ".venv" / "bin")) or str(
        __import__("pathlib").Path(sys.executable).parent / "gridstress"
    )
    res = subprocess.run(
        [
            "bash",
            "-c",
            f"{exe} run configs/seed.yaml --out s.zarr {pipe}; echo status=${{PIPESTATUS[0]}}",
        ],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "status=0" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    with open_cube(where / "s.zarr") as ds:
        assert int(ds.sizes["deflation"]) == 81 and np.isfinite(ds["loss"].values).all()
    assert not (where / "s.zarr.partial").exists()


def test_a_cube_of_another_run_is_replaced_only_with_overwrite(case):
    where, run = case
    assert run("run", "run.yaml").returncode == 0  # results/case.zarr
    assert run("run", "run.yaml").returncode == 0  # the same run: replaced
    (where / "other.csv").write_text(BOOK.replace("1000000", "3000000"))
    (where / "other.yaml").write_text(f"name: case\n{GRID}portfolio: other.csv\n")
    res = run("run", "other.yaml")  # same name: the same default path
    assert res.returncode == 2
    assert (
        "--out results/case.zarr: holds a cube of another run (the portfolio changed "
        "(portfolio_sha256"
    ) in res.stderr and "--overwrite replaces it" in res.stderr
    with open_cube(where / "results" / "case.zarr") as ds:
        assert ds.attrs["portfolio_sha256"] == load_config(where / "run.yaml").portfolio_sha256
    assert run("run", "other.yaml", "--overwrite").returncode == 0
    with open_cube(where / "results" / "case.zarr") as ds:
        assert ds.attrs["portfolio_sha256"] == load_config(where / "other.yaml").portfolio_sha256


def _interrupt(config, out, chunk_cells=4):
    from gridstress.engine import write_cube
    from gridstress.prepared import prepare

    run = prepare(config, "numpy", chunk_cells=chunk_cells)

    def stop_after_two(block, calls=[]):  # noqa: B006 (counts the calls of this run)
        calls.append(block)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_cube(run, out, progress=stop_after_two, scheduler="synchronous")
    return run


def test_an_unfinished_run_is_discarded_only_with_overwrite(case):
    where, run = case
    _interrupt(where / "run.yaml", where / "c.zarr")
    res = run("run", "run.yaml", "--out", "c.zarr")
    assert res.returncode == 2
    assert (
        "c.zarr.partial: holds 2 finished block(s) of an interrupted run of this config: "
        "--resume finishes it, --overwrite starts again" in res.stderr
    )
    (where / "other.csv").write_text(BOOK.replace("0.8", "0.7"))
    (where / "other.yaml").write_text(f"name: other\n{GRID}portfolio: other.csv\n")
    res = run("run", "other.yaml", "--out", "c.zarr")
    assert res.returncode == 2
    assert (
        "holds an unfinished run of another config or portfolio; --overwrite discards it"
        in res.stderr
    )
    assert (where / "c.zarr.partial").is_dir()
    res = run("run", "other.yaml", "--out", "c.zarr", "--overwrite")
    assert res.returncode == 0, res.stderr
    with open_cube(where / "c.zarr") as ds:
        assert ds.attrs["name"] == "other"


def test_a_resume_with_other_chunks_reports_the_blocks_it_keeps(case):
    where, run = case
    kept = _interrupt(where / "run.yaml", where / "c.zarr", chunk_cells=4)
    res = run("run", "run.yaml", "--out", "c.zarr", "--resume", "--chunk-cells", "1e3")
    assert res.returncode == 0, res.stderr
    n = len(kept.plan)
    assert f", {n} block(s)" in res.stderr
    assert f"resuming: 2 of {n} blocks already done, computing {n - 2}" in res.stderr


def test_tables_keep_their_width_off_a_terminal(case, cube):
    where, run = case
    res = run("trace", "configs/seed.yaml", "--loan", "NC-IG-GB200")
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout
    header = next(line for line in res.stdout.splitlines() if "CFADS $M" in line)
    for name in ("refi coll. $M", "refi CF $M", "LTV book", "default"):
        assert name in header
    rows = [line for line in res.stdout.splitlines() if line.startswith("│ ")]
    assert len({len(line) for line in rows}) <= 3  # each table's rows one width
    res = run("reverse", str(cube), "--loss-rate", "0.3")
    assert res.returncode == 0, res.stderr
    cells = [line for line in res.stdout.splitlines() if "deflation=" in line]
    assert len(cells) == 22 and all("haircut=" in line for line in cells)  # one line a cell


def test_summary_tables_as_csv_and_excel(case, cube):
    where, run = case
    from openpyxl import load_workbook

    res = run("summary", str(cube), "--csv", "s.csv", "--xlsx", "s.xlsx")
    assert res.returncode == 0, res.stderr
    with (where / "s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    tables = {r["table"] for r in rows}
    # the seed config writes per-loan outputs, so the summary prices the loans too
    assert tables == {
        "scenarios",
        "default_rate_by_trigger",
        "segments",
        "market",
        "loans",
        "price",
    }
    loans = [r for r in rows if r["table"] == "loans"]
    assert len(loans) == 16 and {r["scenario"] for r in loans} == {"base", "severe"}
    book = load_workbook(where / "s.xlsx", read_only=True)
    assert book.sheetnames == [
        "scenarios",
        "default_rate_by_trigger",
        "segments",
        "market",
        "loans",
        "price",
    ]
    sheet = list(book["loans"].iter_rows(values_only=True))
    assert sheet[0][:3] == ("scenario", "loan_id", "segment") and len(sheet) == 17
    # the price sheet: the price table at rho 0.5, most underpriced first, then the book
    from gridstress.analysis.price import COLUMNS, price

    prices = list(book["price"].iter_rows(values_only=True))
    assert prices[0] == COLUMNS and len(prices) == 1 + 8 + 1
    with open_cube(cube) as ds:
        table = price(ds, [0.5]).at(0.5)
    assert [r[1] for r in prices[1:]] == list(table["loan_id"])
    assert {r[0] for r in prices[1:]} == {0.5}
    first = next(ln for ln in res.stdout.splitlines() if ln.startswith("most underpriced loan"))
    assert f": {table['loan_id'][0]}, cushion " in first
    assert "gridstress price " in first
    base = [r for r in loans if r["scenario"] == "base"]
    with open_cube(cube) as ds:
        total = float(ds["loss"].sel(deflation=0.3, crypto_drawdown=0.5, haircut=0.35))
    assert sum(float(r["loss"]) for r in base) == pytest.approx(total, rel=1e-9)


def _seed_workbook(path, sheet="Loans", notes=True):
    from openpyxl import Workbook

    with (ROOT / "configs" / "portfolios" / "seed.csv").open() as fh:
        rows = list(csv.reader(fh))
    book = Workbook()
    first = book.active
    if notes:
        first.title = "Notes"
        first.append(["the loans are on the next sheet"])
        ws = book.create_sheet(sheet)
    else:
        ws = first
    ws.append(rows[0])
    for row in rows[1:]:
        values = []
        for text in row:
            try:
                values.append(float(text))
            except ValueError:
                values.append(text or None)
        ws.append(values)
    book.save(path)


def test_an_excel_portfolio_reads_as_the_csv_does(case):
    where, run = case
    _seed_workbook(where / "book.xlsx")
    _seed_workbook(where / "plain.xlsx", notes=False)
    seed = (ROOT / "configs" / "seed.yaml").read_text()
    (where / "named.yaml").write_text(
        seed.replace("portfolio: portfolios/seed.csv", "portfolio: {path: book.xlsx, sheet: Loans}")
    )
    (where / "first.yaml").write_text(
        seed.replace("portfolio: portfolios/seed.csv", "portfolio: plain.xlsx")
    )
    csv_cfg = load_config(ROOT / "configs" / "seed.yaml")
    for name in ("named", "first"):
        cfg = load_config(where / f"{name}.yaml")
        assert cfg.loans == csv_cfg.loans
        assert cfg.portfolio_sha256 == csv_cfg.portfolio_sha256
    (where / "wrong.yaml").write_text(
        seed.replace("portfolio: portfolios/seed.csv", "portfolio: {path: book.xlsx, sheet: Lns}")
    )
    res = run("validate", "wrong.yaml")
    assert res.returncode == 2
    assert "book.xlsx: no sheet named 'Lns'; sheets are: Notes, Loans" in res.stderr
    # Row numbers as Excel shows them: the header is row 1, loans from row 2.
    from openpyxl import load_workbook

    book = load_workbook(where / "book.xlsx")
    ws = book["Loans"]
    ws.cell(
        row=4, column=ws[1].index(next(c for c in ws[1] if c.value == "utilization")) + 1, value=1.3
    )
    book.save(where / "book.xlsx")
    res = run("validate", "named.yaml")
    assert res.returncode == 2
    assert (
        "book.xlsx sheet Loans row 4 (loan_id=NC-H100-2023): utilization=1.3 must be in "
        "[0, 1]" in res.stderr
    )


@pytest.mark.parametrize(
    "header, message",
    [
        (
            "Loan_ID,principal,rate,term_years",
            "unknown column(s) Loan_ID (names are case-sensitive: loan_id)",
        ),
        ("loan_id,principal,rate,term_yeras", "term_yeras (did you mean term_years?)"),
        (
            "loan_id;principal;rate;term_years",
            "book.csv: the header 'loan_id;principal;rate;"
            "term_years' holds semicolons: gridstress reads comma-separated CSV",
        ),
    ],
)
def test_column_mistakes_get_a_hint(case, header, message):
    where, run = case
    sep = ";" if ";" in header else ","
    (where / "book.csv").write_text(header + "\n" + sep.join(["A", "1000", "0.1", "3"]) + "\n")
    res = run("validate", "run.yaml")
    assert res.returncode == 2 and message in res.stderr, res.stderr


def test_a_missing_required_column_is_reported_once(case):
    where, run = case
    (where / "book.csv").write_text(
        "loan_id,principal,term_years\n" + "".join(f"L{i},1000,3\n" for i in range(50))
    )
    res = run("validate", "run.yaml")
    assert res.returncode == 2
    assert res.stderr.count("error:") == 1
    assert (
        "book.csv: column rate is missing; it is required (or a value under defaults:)"
        in res.stderr
    )
    (where / "run.yaml").write_text(
        f"name: case\n{GRID}defaults: {{rate: 0.1}}\nportfolio: book.csv\n"
    )
    assert run("validate", "run.yaml").returncode == 0  # the default fills the column


def test_conventions_version_help_and_whole_numbers(case, cube):
    where, run = case
    from gridstress import __version__

    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"gridstress {__version__} (model v3)"
    for flag in ("-h", "--help"):
        res = run(flag)
        assert res.returncode == 0 and "summary" in res.stdout and "compare" in res.stdout
    res = run("run", "-h")
    assert res.returncode == 0 and "--overwrite" in res.stdout
    res = run("run", "run.yaml", "--out", "c.zarr", "--chunk-cells", "1e1")
    assert res.returncode == 0 and ", 3 block(s)" in res.stderr, res.stderr
    res = run("frontier", str(cube), "--max-columns", "4e0")
    assert res.returncode == 0 and "4 of 19 haircut values" in res.stdout


def test_plain_xarray_opens_a_cube_without_a_warning(cube):
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_zarr(cube) as ds:
            assert float(ds["loss"].max()) > 0 and ds.attrs["model_version"] == MODEL_VERSION


def test_the_figure_format_follows_the_suffix(case, cube):
    where, run = case
    for name, magic in (("f.png", b"\x89PNG"), ("f.svg", b"<?xml"), ("f.pdf", b"%PDF-")):
        res = run("plot", str(cube), "-o", name)
        assert res.returncode == 0, res.stderr
        assert (where / name).read_bytes()[:5].startswith(magic)


def test_a_small_grid_runs_in_this_process_and_a_large_one_on_a_cluster(case, monkeypatch):
    from gridstress import distributed
    from gridstress.distributed import AUTO_LOCAL_MIN_CORES, auto_scheduler
    from gridstress.prepared import prepare

    where, run = case
    res = run("run", "configs/seed.yaml", "--out", "s.zarr")
    assert res.returncode == 0 and "Dask worker" not in res.stderr
    big = prepare(ROOT / "configs" / "seed-dense.yaml", "numpy")
    small = prepare(ROOT / "configs" / "seed.yaml", "numpy")
    assert auto_scheduler(small, len(small.plan)) == "synchronous"
    assert auto_scheduler(big, 1) == "synchronous"  # one block: nothing to share
    from dataclasses import replace

    from gridstress.inputs import Axis

    cfg = big.config
    # 4001 x 181 path cells x 134 loan-periods: about 6 s on one core.
    huge = prepare(
        replace(cfg, axes=(Axis("deflation", tuple(np.linspace(-0.2, 0.6, 4001))), *cfg.axes[1:])),
        "numpy",
    )
    monkeypatch.setattr(distributed, "_cpu_count", lambda: AUTO_LOCAL_MIN_CORES)
    assert auto_scheduler(huge, len(huge.plan)) == "local"
    assert auto_scheduler(big, len(big.plan)) == "synchronous"  # under a second of work
    monkeypatch.setattr(distributed, "_cpu_count", lambda: AUTO_LOCAL_MIN_CORES - 1)
    assert auto_scheduler(huge, len(huge.plan)) == "synchronous"


def test_import_and_help_load_no_array_library():
    code = (
        "import sys, gridstress; from gridstress.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('xarray', 'pandas', 'pyarrow', 'dask', 'zarr', 'scipy',"
        " 'matplotlib') if m in sys.modules]\n"
        "print('heavy:', heavy)\nsys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-500:] + done.stderr
