"""``gridstress price`` through the real entry point, on the seed cube with and
without per-loan outputs; and the one-pass tails that make it fast."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
from conftest import ROOT, cli_runner
from hypothesis import given, settings
from hypothesis import strategies as st

from gridstress import open_cube
from gridstress.analysis import price as price_module
from gridstress.analysis.price import COLUMNS, PER_LOAN_HINT, PORTFOLIO, price
from gridstress.analysis.risk import tail_measures

LOANS = 8  # configs/portfolios/seed.csv


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The seed cube with per-loan outputs (loans.zarr) and without (plain.zarr)."""
    where = tmp_path_factory.mktemp("price")
    shutil.copytree(ROOT / "configs", where / "configs")
    config = (where / "configs" / "seed.yaml").read_text()
    (where / "configs" / "plain.yaml").write_text(
        config.replace("outputs: {per_loan: true}", "outputs: {per_loan: false}")
    )
    run = cli_runner(where)
    for config_name, out, *extra in (
        ("seed", "loans.zarr", "--per-loan"),
        ("plain", "plain.zarr"),
    ):
        res = run(
            "run", f"configs/{config_name}.yaml", "--out", out, "--scheduler", "synchronous", *extra
        )
        assert res.returncode == 0, res.stderr
    with open_cube(where / "plain.zarr") as ds:
        assert "loan_loss" not in ds.data_vars
    return where, run


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def number(text: str) -> float:
    return math.nan if text in ("", "nan") else float(text)


def test_price_prints_a_line_and_a_table_per_rho(seed):
    where, run = seed
    res = run("price", "loans.zarr", "--rho", "0.5", "--rho", "0.9")
    assert res.returncode == 0, res.stderr
    with open_cube(where / "loans.zarr") as ds:
        want = price(ds, [0.5, 0.9])
    lines = res.stdout.splitlines()
    assert lines[0].startswith("seed-ai-infra-2025: 8 loans, $5,080.0M of principal")
    for book in want.book:
        # the book's EL, VaR and ES in USD and as shares, then the edge weights
        line = next(ln for ln in lines if ln.startswith(f"rho={book.rho:g}: EL"))
        assert line.startswith(book.line() + "; weight on the edge cells: deflation ")
        assert f"{100 * book.edges['deflation'][1]:.3g}%" in line
        assert f"VaR 99% ${book.var / 1e6:,.1f}M ({book.var_rate:.2%})" in line
        # the loans sorted by cushion, most underpriced first, then the portfolio
        title = f"what each loan should pay at rho={book.rho:g}"
        table = res.stdout.split(title, 1)[1].split("└", 1)[0]
        header = next(ln for ln in table.splitlines() if "principal $M" in ln)
        for name in ("PD", "LGD", "EL bp", "capital bp", "required bp", "actual bp", "cushion bp"):
            assert name in header
        rows = [ln.split("│")[1].strip() for ln in table.splitlines() if ln.startswith("│")]
        assert rows == list(want.at(book.rho)["loan_id"])
        assert rows[-1] == PORTFOLIO and len(rows) == LOANS + 1
        worst = want.most_underpriced(book.rho)
        assert worst is not None and worst["cushion_bps"] < 0
        assert (
            f"most underpriced: {worst['loan_id']}, {-worst['cushion_bps']:,.1f} bp"
            in (res.stdout.split(title, 1)[1])
        )
    # readable units: $M with one decimal, shares in %, spreads in bp
    row = next(ln for ln in lines if ln.startswith("│ NC-IG-GB200"))
    assert "│      2,000.0 │" in row and "n/a" in row  # $2B; LGD n/a: it never defaults


def test_price_csv_has_the_columns_of_pricing_md(seed):
    where, run = seed
    res = run("price", "loans.zarr", "--rho", "0", "--rho", "0.5", "--csv", "price.csv")
    assert res.returncode == 0, res.stderr
    assert "rows written to price.csv" in res.stdout
    rows = read_csv(where / "price.csv")
    assert (
        list(rows[0])
        == list(COLUMNS)
        == (
            "rho,loan_id,segment,principal,wal_years,pd,lgd,el,el_pv,el_bps,es_contribution,ec,"
            "capital_bps,required_bps,actual_bps,cushion_bps,standalone_es"
        ).split(",")
    )
    assert len(rows) == 2 * (LOANS + 1)
    for rho in (0.0, 0.5):
        mine = [r for r in rows if float(r["rho"]) == rho]
        assert [r["loan_id"] for r in mine].count(PORTFOLIO) == 1
        assert mine[-1]["loan_id"] == PORTFOLIO and mine[-1]["segment"] == ""
        assert len({r["loan_id"] for r in mine}) == LOANS + 1
    with open_cube(where / "loans.zarr") as ds:
        want = price(ds, [0.0, 0.5]).table
    for row, (_, expected) in zip(rows, want.iterrows()):
        assert row["loan_id"] == expected["loan_id"]
        for column in COLUMNS[3:]:
            assert number(row[column]) == pytest.approx(expected[column], rel=1e-12, nan_ok=True)
    # the loan without a spread: actual and cushion NaN, listed after the priced loans
    convert = next(r for r in rows if r["loan_id"] == "MN-CONVERT-B200" and r["rho"] == "0.0")
    assert convert["actual_bps"] == "nan" and convert["cushion_bps"] == "nan"


def test_price_xlsx_has_a_sheet_per_rho(seed):
    from openpyxl import load_workbook

    where, run = seed
    res = run("price", "loans.zarr", "--rho", "0.5", "--rho", "0.9", "--xlsx", "price.xlsx")
    assert res.returncode == 0, res.stderr
    book = load_workbook(where / "price.xlsx", read_only=True)
    assert book.sheetnames == ["rho 0.5", "rho 0.9"]
    with open_cube(where / "loans.zarr") as ds:
        want = price(ds, [0.5, 0.9])
    for name, rho in zip(book.sheetnames, (0.5, 0.9)):
        sheet = list(book[name].iter_rows(values_only=True))
        assert sheet[0] == COLUMNS
        assert len(sheet) == LOANS + 2  # header, loans, portfolio
        expected = want.at(rho)
        assert [r[1] for r in sheet[1:]] == list(expected["loan_id"])
        for got, (_, row) in zip(sheet[1:], expected.iterrows()):
            for value, column in zip(got[3:], COLUMNS[3:]):
                if math.isnan(row[column]):
                    assert value is None  # an empty cell, not a NaN Excel cannot read
                else:
                    assert value == pytest.approx(row[column], rel=1e-12)


def test_a_cube_without_per_loan_outputs_is_refused(seed):
    where, run = seed
    res = run("price", "plain.zarr", "--csv", "no.csv", "--xlsx", "no.xlsx")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"error: {PER_LOAN_HINT}"]
    assert "--per-loan" in res.stderr and "outputs: {per_loan: true}" in res.stderr
    assert res.stdout == ""
    assert not (where / "no.csv").exists() and not (where / "no.xlsx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--confidence", "1"), "--confidence 1: must be in (0, 1)"),
        (("--confidence", "0"), "--confidence 0: must be in (0, 1)"),
        (("--confidence", "1.5"), "--confidence 1.5: must be in (0, 1)"),
        (("--confidence", "-0.5"), "--confidence -0.5: must be in (0, 1)"),
        (("--capital-cost", "-0.1"), "--capital-cost -0.1: must be >= 0"),
        (("--rho", "1"), "--rho 1: must be in (-1, 1)"),
        (("--marginals", "none.yaml"), "--marginals none.yaml: no such file"),
        (("--csv", "bad.txt"), "--csv bad.txt: must end in .csv"),
        (("--xlsx", "bad.csv"), "--xlsx bad.csv: must end in .xlsx"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_nothing_written(seed, args, message):
    where, run = seed
    extra = [] if "--csv" in args or "--xlsx" in args else ["--csv", "x.csv", "--xlsx", "x.xlsx"]
    res = run("price", "loans.zarr", *args, *extra)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.splitlines() == [f"error: {message}"]
    assert "Traceback" not in res.stderr and res.stdout == ""
    for name in ("x.csv", "x.xlsx", "bad.txt", "bad.csv"):
        assert not (where / name).exists()


def test_a_zero_capital_cost_prices_the_expected_loss_alone(seed):
    where, run = seed
    res = run(
        "price", "loans.zarr", "--capital-cost", "0", "--confidence", "0.95", "--csv", "z.csv"
    )
    assert res.returncode == 0, res.stderr
    assert "expected shortfall at 95%, costing 0% a year" in res.stdout
    for row in read_csv(where / "z.csv"):
        assert float(row["capital_bps"]) == 0.0
        assert float(row["required_bps"]) == pytest.approx(float(row["el_bps"]), rel=1e-12)


# ---------------------------------------------------------------------------
# The one-pass tails behind price's speed (price._OwnTails): each loan's own
# VaR and ES from the values of its worst 1 - alpha of probability, against
# numpy's weighted quantile; a column that does not fit goes to the radix
# quantiles of risk.TailQuantiles.


@st.composite
def columns(draw):
    n = draw(st.integers(1, 80))
    m = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["ties", "zeros", "signed", "close", "atom"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "ties":
        x = rng.integers(0, 4, (n, m)) * 1e6
    elif kind == "zeros":
        x = np.where(rng.random((n, m)) < 0.7, 0.0, rng.random((n, m)) * 1e8)
    elif kind == "signed":
        x = np.where(rng.random((n, m)) < 0.2, -0.0, rng.normal(size=(n, m)) * 10)
    elif kind == "close":
        x = 1.0 + rng.integers(0, 3, (n, m)) * 2.0**-50
    else:  # a loan that loses all it can in many cells
        x = np.where(rng.random((n, m)) < 0.5, 7e7, rng.random((n, m)) * 7e7)
    w = rng.random(n) ** 3 + 1e-3
    w = w / w.sum()
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    alpha = draw(st.sampled_from([0.5, 0.9, 0.95, 0.99]))
    room = draw(st.sampled_from([0, 2, 9, 10_000]))
    merge = draw(st.sampled_from([1, 5, 2**16]))
    return x.astype(float), w, alpha, [0, *cuts, n], room, merge


@given(columns())
@settings(deadline=None)
def test_own_tails_are_numpys_weighted_quantile(case):
    x, w, alpha, bounds, room, merge = case
    tails = price_module._OwnTails(x.shape[1], alpha, room)
    saved = price_module.MERGE_VALUES
    price_module.MERGE_VALUES = merge
    try:
        for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:]))):
            tails.add(x[lo:hi], w[lo:hi])
        found = tails.tails()
    finally:
        price_module.MERGE_VALUES = saved
    for j, tail in enumerate(found):
        if tail is None:  # too many values for the room: left to TailQuantiles
            assert tails.failed[j]
            continue
        want = tail_measures(x[:, j], w, levels=(alpha,))
        assert tail.var == want.var[alpha]
        assert tail.cdf == pytest.approx(w[x[:, j] <= tail.var].sum(), abs=1e-12)
        assert tail.es == pytest.approx(want.es[alpha], rel=1e-9, abs=1e-9)
    if room >= 2 * x.size:
        assert not tails.failed.any()
