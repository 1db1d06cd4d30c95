"""The analysis commands end to end on the seed cube, through the real entry point."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, cli_runner

from gridstress import open_cube
from gridstress.analysis.frontier import frontier
from gridstress.analysis.price import price
from gridstress.analysis.reverse import reverse_stress
from gridstress.analysis.risk import risk
from gridstress.analysis.summary import summary

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """A folder with the seed cube as Zarr (seed.zarr) and NetCDF (seed.nc), with
    per-loan outputs (loans.zarr), without the H100 facility (without-h100.zarr),
    and a runner. The shipped config asks for per-loan outputs; here only
    loans.zarr has them (--per-loan), so that the others show a cube without."""
    where = tmp_path_factory.mktemp("seed")
    shutil.copytree(ROOT / "configs", where / "configs")
    config = (where / "configs" / "seed.yaml").read_text()
    assert "outputs: {per_loan: true}" in config
    (where / "configs" / "seed.yaml").write_text(
        config.replace("outputs: {per_loan: true}", "outputs: {per_loan: false}")
    )
    book = (where / "configs" / "portfolios" / "seed.csv").read_text().splitlines()
    (where / "configs" / "portfolios" / "without-h100.csv").write_text(
        "\n".join(line for line in book if not line.startswith("NC-H100-2023")) + "\n"
    )
    (where / "configs" / "without-h100.yaml").write_text(
        (where / "configs" / "seed.yaml")
        .read_text()
        .replace("portfolios/seed.csv", "portfolios/without-h100.csv")
    )
    run = cli_runner(where)
    for config, out, *extra in (
        ("seed", "seed.zarr"),
        ("seed", "seed.nc"),
        ("seed", "loans.zarr", "--per-loan"),
        ("without-h100", "without-h100.zarr"),
    ):
        res = run(
            "run", f"configs/{config}.yaml", "--out", out, "--scheduler", "synchronous", *extra
        )
        assert res.returncode == 0, res.stderr
    return where, run


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_summary(seed):
    where, run = seed
    with open_cube(where / "seed.zarr") as ds:
        s = summary(ds)
        at_base = ds.sel(s.points["base"]).load()
    for cube in ("seed.zarr", "seed.nc"):
        res = run("summary", cube)
        assert res.returncode == 0, res.stderr
        assert "worst loss rate: 40.62% at deflation=0.6, crypto_drawdown=0.9" in res.stdout
        assert "base scenario: deflation=0.3, crypto_drawdown=0.5, haircut=0.35" in res.stdout
        assert "severe scenario: deflation=0.6, crypto_drawdown=0.85, haircut=0.55" in res.stdout
        assert f"loss at base, miner: ${s.loss_by_segment['miner'] / 1e6:,.1f}M" in res.stdout
        assert (
            f"breakeven spread at base: {s.breakeven_spread_bps:,.0f} bp; portfolio "
            f"principal-weighted spread: {s.actual_spread_bps:,.0f} bp"
        ) in res.stdout
        for title in (
            "default rate by trigger",
            "what the thin resale market costs",
            "loans at the base scenario",
            "loans at the severe scenario",
        ):
            assert title in res.stdout
    # the seed book's spreads weighted by principal (configs/portfolios/seed.csv)
    # over the loans that give one
    loans = [r for r in read_csv(ROOT / "configs" / "portfolios" / "seed.csv") if r["spread"]]
    assert 0 < len(loans) < 8
    weighted = sum(float(r["spread"]) * float(r["principal"]) for r in loans) / sum(
        float(r["principal"]) for r in loans
    )
    assert s.actual_spread_bps == pytest.approx(1e4 * weighted)
    assert sum(s.loss_by_segment.values()) == pytest.approx(s.scenarios["base"]["loss"])
    # The per-loan table, computed from the embedded config, adds up to the cube's cell,
    # and so does the default rate by trigger.
    base = s.loans["base"]
    assert [r.loan_id for r in base] == list(
        read_csv(where / "configs" / "portfolios" / "seed.csv")[i]["loan_id"]
        for i in (5, 0, 1, 2, 4, 7, 3, 6)
    )
    assert sum(r.loss for r in base) == pytest.approx(float(at_base["loss"]), rel=1e-9)
    defaulted = sum(r.principal for r in base if r.default_years is not None)
    assert defaulted / s.total_principal == pytest.approx(float(at_base["default_rate"]))
    for trigger, rate in s.by_trigger["base"].items():
        share = sum(r.principal for r in base if r.trigger == trigger) / s.total_principal
        assert rate == pytest.approx(share, abs=1e-12)
    m = s.market["base"]
    assert m.loss == pytest.approx(float(at_base["loss"]), rel=1e-9)
    assert m.loss_deep < m.loss and m.extra_loss == pytest.approx(m.loss - m.loss_deep)


def test_summary_names_the_most_underpriced_loan(seed):
    where, run = seed
    res = run("summary", "loans.zarr")
    assert res.returncode == 0, res.stderr
    with open_cube(where / "loans.zarr") as ds:
        worst = price(ds, [0.5]).most_underpriced(0.5)
    assert worst is not None and worst["cushion_bps"] < 0
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("most underpriced loan"))
    assert line == (
        "most underpriced loan (rho=0.5, capital for the 99% expected shortfall at 10% a "
        f"year): {worst['loan_id']}, cushion {worst['cushion_bps']:+,.0f} bp (needs "
        f"{worst['required_bps']:,.0f} bp, pays {worst['actual_bps']:,.0f}); gridstress "
        "price loans.zarr prices every loan"
    )
    # without per-loan outputs: one line on how to get them
    res = run("summary", "seed.zarr")
    assert res.returncode == 0, res.stderr
    hints = [ln for ln in res.stdout.splitlines() if "what each loan should pay" in ln]
    assert hints == [
        "what each loan should pay: run the config with --per-loan (or outputs: "
        "{per_loan: true}), then gridstress price seed.zarr"
    ]
    assert "most underpriced" not in res.stdout


def test_summary_names_the_loan_that_breaks_first(seed):
    where, run = seed
    res = run("summary", "loans.zarr")
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("loans at the base scenario", 1)[1].split("loans at the severe")[0]
    # the 2023 H100 facility breaches its LTV covenant in the first quarter of the base cell
    h100 = next(line for line in table.splitlines() if "NC-H100-2023" in line)
    assert "t=0.25" in h100 and "ltv" in h100
    ig = next(line for line in table.splitlines() if "NC-IG-GB200" in line)
    assert "repaid" in ig


def test_frontier_csv_and_plot(seed):
    where, run = seed
    rows = {}
    for cube in ("seed.zarr", "seed.nc"):
        res = run(
            "frontier",
            cube,
            "--var",
            "loss_rate",
            "--threshold",
            "0.3",
            "--csv",
            f"{cube}.csv",
            "--plot",
            f"{cube}.png",
        )
        assert res.returncode == 0, res.stderr
        assert "smallest deflation at which loss_rate > 0.3" in res.stdout
        rows[cube] = read_csv(where / f"{cube}.csv")
        assert (where / f"{cube}.png").read_bytes()[:4] == b"\x89PNG"
    assert rows["seed.zarr"] == rows["seed.nc"]
    table = rows["seed.zarr"]
    assert list(table[0]) == ["crypto_drawdown", "haircut", "deflation"]
    assert len(table) == 37 * 19
    with open_cube(where / "seed.zarr") as ds:
        line = frontier(ds, "loss_rate", 0.3)
        assert 0 < int(line.isnull().sum()) < line.size  # crossed in some cells, not all
        for row in table[::37]:
            at = {
                "crypto_drawdown": float(row["crypto_drawdown"]),
                "haircut": float(row["haircut"]),
            }
            assert float(row["deflation"]) == pytest.approx(
                float(line.sel(at)), rel=1e-12, nan_ok=True
            )
            d = float(row["deflation"])
            if np.isnan(d):  # never on the grid
                assert (ds["loss_rate"].sel(at).values <= 0.3).all()
                continue
            # the crossing lies between two grid points that straddle the threshold
            below = ds["loss_rate"].sel(at).sel(deflation=slice(None, d - 1e-12)).values
            above = ds["loss_rate"].sel(at).sel(deflation=slice(d + 1e-12, None)).values
            assert (below <= 0.3).all() and above[0] > 0.3


def test_a_frontier_at_the_grid_floor_is_shown_as_a_bound(seed):
    """Where the loss rate passes 1% already at the lowest deflation on the grid
    (rents rising 20% a year), the frontier lies at or below it: '<=-0.200'.
    Seed, crypto drawdown 0.4, haircut 0.9 is such a cell (the frontier is
    first_crossing's along[0] there)."""
    where, run = seed
    res = run("frontier", "seed.zarr")
    assert res.returncode == 0, res.stderr
    assert "'<=': already at -0.2, the grid's lowest deflation" in res.stdout.splitlines()[0]
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("│   0.4 │"))
    assert row.split("│")[-2].strip() == "<=-0.200"
    with open_cube(where / "seed.zarr") as ds:
        assert float(ds["loss_rate"].sel(deflation=-0.2, crypto_drawdown=0.4, haircut=0.9)) > 0.01
    assert run("report", "seed.zarr", "-o", "floor.html").returncode == 0
    page = (where / "floor.html").read_text()
    assert "<td>&le; -0.2</td>" in page and "already at the grid&#x27;s lowest deflation" in page


def test_frontier_of_a_loan(seed):
    where, run = seed
    res = run("frontier", "loans.zarr", "--loan", "NC-HY-H200", "--csv", "hy.csv")
    assert res.returncode == 0, res.stderr
    assert "smallest deflation at which NC-HY-H200 defaults" in res.stdout
    rows = read_csv(where / "hy.csv")
    assert list(rows[0]) == ["crypto_drawdown", "deflation"] and len(rows) == 37
    with open_cube(where / "loans.zarr") as ds:
        years = ds["loan_default_years"].sel(loan="NC-HY-H200").load()
    for row in rows[::9]:
        line = years.sel(crypto_drawdown=float(row["crypto_drawdown"]))
        first = float(line["deflation"][line.notnull()].min())
        assert float(row["deflation"]) == first
        assert line.sel(deflation=slice(None, first - 1e-9)).isnull().all()
    res = run("frontier", "seed.zarr", "--loan", "NC-HY-H200")
    assert res.returncode == 2
    assert (
        "--loan NC-HY-H200: the cube has no per-loan outputs; run it again with "
        "--per-loan" in res.stderr
    )
    res = run("frontier", "loans.zarr", "--loan", "NOPE")
    assert res.returncode == 2 and "--loan NOPE: not a loan of the cube; loans are:" in res.stderr


def test_compare_the_book_with_and_without_a_loan(seed):
    where, run = seed
    res = run(
        "compare", "seed.zarr", "without-h100.zarr", "--csv", "delta.csv", "--plot", "delta.png"
    )
    assert res.returncode == 0, res.stderr
    assert "headline figures" in res.stdout and "largest decrease of loss_rate" in res.stdout
    rows = {r["figure"]: r for r in read_csv(where / "delta.csv")}
    with open_cube(where / "seed.zarr") as a, open_cube(where / "without-h100.zarr") as b:
        point = summary(a).points["base"]
        loss_a, loss_b = (float(x["loss"].sel(point)) for x in (a, b))
    row = rows["loss at base"]
    assert float(row["a"]) == pytest.approx(loss_a) and float(row["b"]) == pytest.approx(loss_b)
    assert float(row["b_minus_a"]) == pytest.approx(loss_b - loss_a)
    assert loss_b < loss_a  # the H100 facility loses money at the base scenario
    assert (where / "delta.png").read_bytes()[:4] == b"\x89PNG"
    res = run("compare", "seed.zarr", "configs")
    assert res.returncode == 2 and "not a gridstress cube" in res.stderr


def test_compare_refuses_cubes_on_different_grids(seed, tmp_path):
    where, run = seed
    res = run(
        "run",
        "configs/seed-contagion.yaml",
        "--out",
        "contagion.zarr",
        "--scheduler",
        "synchronous",
    )
    assert res.returncode == 0, res.stderr
    res = run("compare", "seed.zarr", "contagion.zarr")
    assert res.returncode == 2
    assert (
        "contagion.zarr: not on the grid of seed.zarr: its axes are deflation, "
        "crypto_drawdown, haircut, market_depth_gpus"
    ) in res.stderr
    # The contagion cube: the thinner the market, the earlier the book breaks.
    with open_cube(where / "contagion.zarr") as ds:
        line = frontier(ds).sel(crypto_drawdown=0.0, haircut=0.35)
    shallow, deep = (
        float(line.sel(market_depth_gpus=1e5)),
        float(line.sel(market_depth_gpus=float("inf"))),
    )
    assert shallow < deep


def test_reverse(seed):
    where, run = seed
    res = run("reverse", "seed.zarr", "--loss-rate", "0.35", "--csv", "reverse.csv")
    assert res.returncode == 0, res.stderr
    rows = read_csv(where / "reverse.csv")
    assert [r["ranking"] for r in rows] == ["nearest"] * 11 + ["probable"] * 11
    assert all(float(r["loss_rate"]) >= 0.35 for r in rows)
    distances = [float(r["distance"]) for r in rows[:11]]
    assert distances == sorted(distances)
    with open_cube(where / "seed.zarr") as ds:
        rs = reverse_stress(ds, 0.35)
    first = rs.nearest[0]
    assert float(rows[0]["deflation"]) == first.point["deflation"]
    assert float(rows[11]["probability"]) == pytest.approx(rs.probable[0].probability)
    assert f"{rs.n_breaking:,} of 56,943 cells reach a loss rate of 35.00%" in res.stdout
    assert list(rows[0]) == list(rs.rows()[0])
    assert list(rows[0])[-6:] == [
        f"{axis}_edge_{end}"
        for axis in ("deflation", "crypto_drawdown", "haircut")
        for end in ("low", "high")
    ]
    assert float(rows[0]["deflation_edge_high"]) == pytest.approx(rs.edges["deflation"][1])
    assert "the base scenario itself breaks the book" not in res.stdout  # 35% > 23.94%


def test_reverse_says_when_the_base_scenario_already_breaks_the_book(seed):
    where, run = seed
    res = run("reverse", "seed.zarr", "--loss-rate", "0.05")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1] == (
        "the target loss rate 5.00% is at or below the base scenario's 23.94%: the base "
        "scenario itself breaks the book"
    )
    nearest = res.stdout.split("least severe", 1)[1].splitlines()
    first = next(ln for ln in nearest if ln.startswith("│  1 │"))
    assert "deflation=0.3, crypto_drawdown=0.5, haircut=0.35" in first  # the base cell


def test_risk(seed):
    where, run = seed
    res = run(
        "risk", "seed.zarr", "--rho", "0", "--rho", "0.5", "--rho", "0.9", "--csv", "risk.csv"
    )
    assert res.returncode == 0, res.stderr
    assert "deflation ~ norm(loc=0.3, scale=0.15)" in res.stdout
    rows = read_csv(where / "risk.csv")
    assert list(rows[0]) == [
        "rho",
        "expected_loss",
        "var95",
        "es95",
        "var99",
        "es99",
        "deflation_edge_low",
        "deflation_edge_high",
        "crypto_drawdown_edge_low",
        "crypto_drawdown_edge_high",
        "haircut_edge_low",
        "haircut_edge_high",
    ]
    assert [float(r["rho"]) for r in rows] == [0.0, 0.5, 0.9]
    # the table shows the edge weights, not a mass outside the grid
    header = next(ln for ln in res.stdout.splitlines() if "ES 99%" in ln)
    assert "deflation edges" in header and "haircut edges" in header
    assert "outside" not in res.stdout
    with open_cube(where / "seed.nc") as ds:
        expected = risk(ds, [0.0, 0.5, 0.9])
    for row, want in zip(rows, expected):
        for key, value in want.csv_row().items():
            assert float(row[key]) == pytest.approx(value, rel=1e-12)
        assert want.expected_loss <= want.es95 <= want.es99
        assert want.var95 <= want.es95 and want.var99 <= want.es99


def test_plot_png_svg_and_facets(seed):
    where, run = seed
    res = run(
        "plot",
        "seed.zarr",
        "--var",
        "loss_rate",
        "--x",
        "deflation",
        "--y",
        "crypto_drawdown",
        "--at",
        "haircut=0.4",
        "-o",
        "h.png",
    )
    assert res.returncode == 0, res.stderr
    assert (where / "h.png").read_bytes()[:4] == b"\x89PNG"
    res = run("plot", "seed.nc", "--facet", "haircut", "-o", "f.svg")
    assert res.returncode == 0, res.stderr
    svg = (where / "f.svg").read_text()
    assert "<svg" in svg[:1000] and "haircut=0.9" in svg


@pytest.mark.parametrize(
    "args, message",
    [
        (("frontier", "seed.zarr", "--var", "nope"), "--var nope: not a variable of the cube"),
        (("plot", "seed.zarr", "--x", "volatility", "-o", "x.png"), "--x volatility: not an axis"),
        (
            ("plot", "seed.zarr", "--at", "haircut=2", "-o", "x.png"),
            "--at haircut=2: haircut=2 must be in [0, 1]",
        ),
        (
            ("plot", "seed.zarr", "--at", "haircut", "-o", "x.png"),
            "--at haircut: must be NAME=VALUE",
        ),
        (
            ("plot", "seed.zarr", "--at", "discount_rate=0.1", "-o", "x.png"),
            "--at discount_rate: not an axis of the cube",
        ),
        (("plot", "seed.zarr", "-o", "x.jpg"), "--output x.jpg: must end in .png, .svg or .pdf"),
        (("risk", "seed.zarr", "--rho", "1"), "--rho 1: must be in (-1, 1)"),
        (("risk", "seed.zarr", "--rho", "-1.5"), "--rho -1.5: must be in (-1, 1)"),
        (("reverse", "seed.zarr", "--loss-rate", "2"), "--loss-rate 2: must be in [0, 1]"),
        (("risk", "seed.zarr", "--marginals", "none.yaml"), "--marginals none.yaml: no such file"),
        (("summary", "missing.zarr"), "missing.zarr: no such cube"),
        (("report", "configs", "-o", "r.html"), "not a gridstress cube"),
    ],
)
def test_bad_input_exits_2(seed, args, message):
    where, run = seed
    res = run(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (where / "x.png").exists() and not (where / "x.jpg").exists()


def test_marginals_file_changes_the_weights(seed):
    where, run = seed
    (where / "m.yaml").write_text("haircut: {dist: uniform, loc: 0.0, scale: 0.9}\n")
    res = run("risk", "seed.zarr", "--rho", "0.5", "--marginals", "m.yaml", "--csv", "m.csv")
    assert res.returncode == 0, res.stderr
    assert "haircut ~ uniform(loc=0, scale=0.9)" in res.stdout
    with open_cube(where / "seed.zarr") as ds:
        want = risk(
            ds, [0.5], overrides={"haircut": {"dist": "uniform", "loc": 0.0, "scale": 0.9}}
        )[0]
    assert float(read_csv(where / "m.csv")[0]["es99"]) == pytest.approx(want.es99)


def chromium() -> str:
    """Path of Debian's chromium, installed with apt-get when missing and possible."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "chromium is not installed and cannot be installed here "
            "(apt-get install chromium needs root and apt-get)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(
                f"chromium could not be installed ({' '.join(cmd)}: {done.stderr.strip()[-300:]})"
            )
    return shutil.which("chromium") or "/usr/bin/chromium"


def test_report_renders_offline_in_chromium(seed, tmp_path):
    where, run = seed
    # the cube with per-loan outputs: the report prices each loan too
    res = run("report", "loans.zarr", "-o", "report.html")
    assert res.returncode == 0, res.stderr
    page = (where / "report.html").read_text()
    for section in (
        "Summary",
        "Loss surface",
        "Default triggers",
        "Secondary market",
        "Deflation frontier",
        "Reverse stress",
        "Scenario weights",
        "What each loan should pay",
        "Provenance",
        "Config",
    ):
        assert f"<h2>{section}" in page
    # the risk table gives the edge weights, and no longer a renormalised mass outside
    risk_part = page.split("<h2>Scenario weights", 1)[1].split("<h2>", 1)[0]
    assert "<th>deflation edges</th>" in risk_part and "renormalised" not in risk_part
    assert "outside" not in risk_part
    # the price table at rho 0.5, most underpriced first, and its figure
    with open_cube(where / "loans.zarr") as ds:
        pricing = price(ds, [0.5])
    priced = page.split("<h2>What each loan should pay", 1)[1].split("<h2>", 1)[0]
    assert pricing.book[0].line() in priced
    order = [str(i) for i in pricing.at(0.5)["loan_id"]]
    cells = [priced.index(f"<td class=l>{loan}</td>") for loan in order]
    assert cells == sorted(cells) and order[-1] == "portfolio"
    assert "<th>EL bp</th>" in priced and "<th>capital bp</th>" in priced
    assert priced.count('src="data:image/png;base64,') == 1
    for part in (
        "Default rate by trigger",
        "What the thin resale market costs",
        "Loans at the base scenario",
        "Loans at the severe scenario",
        "Contour lines at loss rates of 1%, 5%, 10%, 20%, 30%, 40%, 50%",
    ):
        assert part in page
    # Reverse stress at 5 and 10 points above the base loss rate (23.94%), which
    # some but not all cells reach: neither "no cell" nor "every cell".
    with open_cube(where / "seed.zarr") as ds:
        s = summary(ds)
        for target in (0.289, 0.339):
            rs = reverse_stress(ds, target)
            assert 0 < rs.n_breaking < rs.n_cells
            assert f"<h3>Loss rate of {target:.2%}</h3>" in page
    assert s.scenarios["base"]["loss_rate"] == pytest.approx(0.2394, abs=5e-5)
    assert page.count('src="data:image/png;base64,') == 6
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened
    assert "seed-ai-infra-2025" in page and "config_sha256" in page
    browser = chromium()
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (where / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and a figure
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert 0.05 < not_white < 0.95


def test_a_report_without_per_loan_outputs_says_how_to_price(seed):
    where, run = seed
    res = run("report", "seed.zarr", "-o", "plain.html")
    assert res.returncode == 0, res.stderr
    page = (where / "plain.html").read_text()
    priced = page.split("<h2>What each loan should pay</h2>", 1)[1].split("<h2>", 1)[0]
    assert "--per-loan" in priced and "outputs: {per_loan: true}" in priced
    assert "The cube has no per-loan outputs (loan_loss, loan_default_years)" in priced
    assert page.count('src="data:image/png;base64,') == 5  # no spread figure
