"""The seed-book figures that docs/model.md quotes are those a run gives.

The paragraph "What the seed book shows" is rendered here from runs of the
shipped configs (NumPy) and must appear in the page word for word, so a
change of the model or of a config that moves a figure fails this test
until the page says the new figure.
"""

from __future__ import annotations

from conftest import ROOT

from gridstress import load_config, run_grid
from gridstress.analysis.frontier import frontier
from gridstress.analysis.summary import summary


def _seed_paragraph() -> str:
    cube = run_grid(load_config(ROOT / "configs" / "seed.yaml"), backend="numpy")
    s = summary(cube)
    mild = float(cube["loss_rate"].isel(deflation=0, crypto_drawdown=0, haircut=0))
    base, severe = s.points["base"], s.points["severe"]
    loans = {r.loan_id: r for r in s.loans["base"]}
    h100, hy, convert, ig = (
        loans[k] for k in ("NC-H100-2023", "NC-HY-H200", "MN-CONVERT-B200", "NC-IG-GB200")
    )
    # The per-loan story the paragraph tells at the base scenario.
    assert (h100.trigger, h100.default_years) == ("ltv", 0.25)
    assert hy.trigger == "payment" and convert.trigger == "maturity"
    assert ig.default_years is None
    contagion = run_grid(load_config(ROOT / "configs" / "seed-contagion.yaml"), backend="numpy")
    line = frontier(contagion, "loss_rate", 0.01).sel(crypto_drawdown=0.0, haircut=0.35)
    depth = {float(w): float(v) for w, v in zip(line["market_depth_gpus"].values, line.values)}
    return (
        "`gridstress run configs/seed.yaml` (NumPy, this page's model): the mildest\n"
        f"cell (deflation -0.2, no crypto drawdown, no haircut) loses {mild:.2%} of the\n"
        f"${s.total_principal / 1e9:.2f}B principal; the base scenario (deflation "
        f"{base['deflation']:g}, crypto drawdown {base['crypto_drawdown']:g},\n"
        f"haircut {base['haircut']:g}) {s.scenarios['base']['loss_rate']:.2%}; the severe "
        f"scenario ({severe['deflation']:g}, {severe['crypto_drawdown']:g}, "
        f"{severe['haircut']:g}) {s.scenarios['severe']['loss_rate']:.2%}. At the\n"
        "base, the H100 facility breaches its market-value LTV covenant in the first\n"
        "quarter, the non-IG neo-cloud SPV defaults on payment after "
        f"{hy.default_years:g} years, the\n"
        "convertible at maturity (its cash and cash-flow offer fall short), and the\n"
        "IG-contracted GB200 SPV is repaid; the thin resale market adds "
        f"${s.market['base'].extra_loss / 1e6:,.0f}M of loss\n"
        "against a deep one. With the depth of the market as an axis\n"
        "(`configs/seed-contagion.yaml`), the deflation at which the book first loses\n"
        f"1% falls from {depth[float('inf')]:.3f} with a deep market to "
        f"{depth[1.5e6]:.3f} at 1,500,000 GPUs, {depth[4e5]:.3f} at\n"
        f"400,000 and {depth[1e5]:.3f} at 100,000 (crypto drawdown 0, haircut 0.35)."
    )


def test_model_md_quotes_the_seed_runs():
    expected = _seed_paragraph()
    text = (ROOT / "docs" / "model.md").read_text()
    assert expected in text, "docs/model.md should say:\n\n" + expected
