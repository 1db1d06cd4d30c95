"""Draw the figures of docs/model.md, section 14, from the literal reference.

    .venv/bin/python docs/figures/make_figures.py

One H100 fleet (1,000 GPUs, rent $2.40, 5 years of life, 0.85 utilisation)
on a loan too small to default, traced period by period
(:func:`gridstress.reference.trace_cell`) at deflation 0.3:

- ``rent-index-shock.png``: the rent index without a launch and with a
  generation shock of 0.4 at 1.5 years (full exposure);
- ``appraisals.png``: the fleet's appraised value per GPU under the shock,
  by the foresight appraisal and by the market appraisal
  (``appraisal_deflation`` 0.3).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gridstress.config import config_from_dict  # noqa: E402
from gridstress.reference import trace_cell  # noqa: E402

HERE = Path(__file__).parent
LOAN = {
    "loan_id": "H100-FLEET",
    "principal": 1.0,
    "rate": 0.0,
    "term_years": 5,
    "amortization": "bullet",
    "n_gpus": 1000,
    "rent": 2.40,
    "utilization": 0.85,
    "economic_life_years": 5,
    "refi_term_years": 0,
    "cash_reserve": 1e12,  # never short of cash: the trace runs to maturity
}
GRID = {
    "deflation": {"values": [0.3]},
    "crypto_drawdown": {"values": [0.0]},
    "haircut": {"values": [0.0]},
}


def trace(**scenario):
    cfg = config_from_dict(
        {"name": "figure", "scenario": scenario, "grid": GRID, "portfolio": [LOAN]}, "figure"
    )
    point = {**cfg.scenario, "deflation": 0.3, "crypto_drawdown": 0.0, "haircut": 0.0}
    traces, _, _ = trace_cell(cfg.loans, cfg.periods_per_year, point, paths=cfg.paths)
    return traces["H100-FLEET"]


def main() -> None:
    plain = trace()
    shocked = trace(generation_shock=0.4, generation_years=1.5)
    market = trace(generation_shock=0.4, generation_years=1.5, appraisal_deflation=0.3)
    t = [r["t_years"] for r in plain]

    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    ax.plot(t, [r["rent"] for r in plain], label="deflation 0.3, no launch")
    ax.plot(t, [r["rent"] for r in shocked], label="with a generation shock of 0.4 at 1.5 years")
    ax.axvline(1.5, color="0.6", lw=0.8, ls="--")
    ax.set(xlabel="years", ylabel="rent index m_k (USD per GPU-hour)")
    ax.legend(frameon=False)
    fig.savefig(HERE / "rent-index-shock.png", dpi=120)

    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")

    def thousands_per_gpu(rows):
        return [r["gpu_fair_value"] / LOAN["n_gpus"] / 1e3 for r in rows]

    ax.plot(t, thousands_per_gpu(shocked), label="foresight (v2)")
    ax.plot(t, thousands_per_gpu(market), label="market appraisal, appraisal_deflation 0.3")
    ax.axvline(1.5, color="0.6", lw=0.8, ls="--")
    ax.set(xlabel="years", ylabel="appraised value per GPU (USD thousand)")
    ax.legend(frameon=False)
    fig.savefig(HERE / "appraisals.png", dpi=120)


if __name__ == "__main__":
    main()
