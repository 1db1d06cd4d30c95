"""Argument packing: what the kernels read, in the form they read it: the
portfolio as the loan matrices (:func:`loan_matrices`), a block's scenario
parameters by their argument-block names (:func:`param_arrays`), and the
argument block of one launch (:func:`pack_args`, :data:`ARGS_DTYPE`)."""

from __future__ import annotations

import numpy as np

from ..paths import Points, period_factors
from ..portfolio import PortfolioArrays
from ..schedule import periods
from .launch import LaunchShape, RecoverShape, discount_periods, rent_periods
from .layout import BlockLayout
from .tables import (
    ARGS_DTYPE,
    B_FREE,
    BOOK_BASIS,
    HAS_COVENANT,
    HAS_LTV,
    HAS_MINING,
    LOAN_F,
    LOAN_I,
)


def loan_matrices(pf: PortfolioArrays) -> tuple[np.ndarray, np.ndarray]:
    """The portfolio as the kernel's ``[L][GS_NF]`` float64 and ``[L][GS_NI]`` int32 rows."""
    v = pf.values
    dt = 1.0 / pf.periods_per_year
    last = np.arange(pf.n_loans)
    columns = {
        "principal": v["principal"],
        "n_gpus": v["n_gpus"],
        "rent": v["rent"],
        "utilization": v["utilization"],
        "contracted_share": v["contracted_share"],
        "contract_rent": v["contract_rent"],
        # The products the NumPy backend forms, formed here the same way.
        "power_cost": v["power_kw_per_gpu"] * v["power_price"],
        "opex": v["fixed_opex_per_gpu_year"] * dt,
        "mining_revenue": v["mining_revenue"],
        "mining_cost": v["mining_cost"],
        "crypto_collateral": v["crypto_collateral"],
        "pledged_gpus": v["pledged_share"] * v["n_gpus"],
        "cash_reserve": v["cash_reserve"],
        "cash_cap": v["cash_cap"],
        "dscr_floor": np.where(v["min_dscr"] > 0, v["min_dscr"], -np.inf),
        "max_ltv": pf.max_ltv,
        "refi_advance_rate": v["refi_advance_rate"],
        "refi_min_dscr": v["refi_min_dscr"],
        "balloon": pf.balloon[last, pf.n],
        "cure_periods": v["cure_periods"],
        "generation_exposure": v["generation_exposure"],
    }
    loan_f = np.ascontiguousarray(np.stack([columns[k] for k in LOAN_F], axis=1), dtype=np.float64)
    # Without mining revenue M_k = max(0, 0 - mining_cost) / f = 0, as
    # mining_cost >= 0 (validated): the kernel skips the margin.
    mining = v["mining_revenue"] > 0
    flags = (
        HAS_COVENANT * (v["min_dscr"] > 0)
        + HAS_LTV * np.isfinite(pf.max_ltv)
        + HAS_MINING * mining
        # No mining and no crypto collateral: a path independent of b.
        + B_FREE * (~mining & (v["crypto_collateral"] == 0))
        + BOOK_BASIS * np.asarray(pf.book_basis)
    )
    ints = {
        "n": pf.n,
        "n_life": pf.n_life,
        "n_contract": pf.n_contract,
        "n_refi": pf.n_refi,
        "segment": pf.segment_index,
        "flags": flags,
    }
    loan_i = np.ascontiguousarray(np.stack([ints[k] for k in LOAN_I], axis=1), dtype=np.int32)
    return loan_f, loan_i


def path_arrays(pf: PortfolioArrays, paths: dict[str, Points] | None) -> dict[str, np.ndarray]:
    """The run's paths as the kernels read them, by their argument-block names:
    ``P(t_k)`` and ``Q(t_k)`` for ``k = 0..J`` (:func:`rent_periods`), ones
    for a path not given."""
    paths = paths or {}
    J = rent_periods(pf)
    return {
        name: period_factors(paths.get(name), pf.periods_per_year, J)
        for name in ("rent_path", "crypto_path")
    }


def shock_periods(generation_years: np.ndarray, periods_per_year: int) -> np.ndarray:
    """``n_g = round_half_up(t_g f)`` of each value of ``a``, as the model converts
    durations (float64, as the argument block carries it)."""
    years, where = np.unique(generation_years, return_inverse=True)
    n_g = np.array([periods(float(t), periods_per_year) for t in years], dtype=np.float64)
    # The kernels read n_g as an int32; a shock dated later than that falls after
    # every period they read either way.
    return np.minimum(n_g, np.iinfo(np.int32).max)[where.reshape(-1)]


def param_arrays(layout: BlockLayout, periods_per_year: int) -> dict[str, np.ndarray]:
    """The scenario parameters of a block per group, by their argument-block names."""
    a, b, q = layout.a_params, layout.b_params, layout.q_params
    return {
        "a_deflation": a["deflation"],
        "a_discount": a["discount_rate"],
        "a_shock": a["generation_shock"],
        "a_shock_period": shock_periods(a["generation_years"], periods_per_year),
        "a_appraisal": a["appraisal_deflation"],
        "b_crypto": b["crypto_drawdown"],
        "b_periods": b["drawdown_periods"],
        "b_depth": b["market_depth_gpus"],
        "b_half_life": b["market_half_life_years"],
        "b_book_share": b["book_share"],
        "q_keep": q["keep"],
        "q_keep_crypto": q["keep_crypto"],
    }


def pack_args(
    pf: PortfolioArrays,
    layout: BlockLayout,
    pointers: dict[str, int],
    a_begin: int,
    a_end: int,
    shape: LaunchShape | None,
    records: tuple[int, int] | None = None,
    recover: RecoverShape | None = None,
    appraisal_periods: int = 0,
) -> np.ndarray:
    """The kernel's argument block for one launch of ``a_begin <= a < a_end``;
    ``records`` is the range of ``a`` the default records cover (default: the
    launch's), ``shape`` the path kernel's (None for the market step's),
    ``recover`` the shape of a recovery launch, ``appraisal_periods`` the
    expected-rent factors per value of ``a`` (``JA``)."""
    args = np.zeros((), dtype=ARGS_DTYPE)
    for name, ptr in pointers.items():
        args[name] = ptr
    args["n_loans"] = pf.n_loans
    args["K1"] = pf.horizon + 1
    args["A"] = layout.size("a")
    args["B"] = layout.size("b")
    args["Q"] = layout.size("q")
    args["n_segments"] = len(pf.segments)
    args["KD"] = discount_periods(pf)
    args["J"] = rent_periods(pf)
    args["JA"] = appraisal_periods
    args["a_begin"], args["a_end"] = a_begin, a_end
    args["rec_begin"], args["rec_end"] = records or (a_begin, a_end)
    if shape is not None:
        args["na_block"], args["nb_block"] = shape.na_block, shape.nb_block
        args["loan_tile"] = shape.loan_tile
    if recover is not None:
        args["rb"], args["rq"], args["rec_tile"] = recover.rb, recover.rq, recover.rec_tile
    args["dt"] = 1.0 / pf.periods_per_year
    args["hours"] = 8760.0 * (1.0 / pf.periods_per_year)
    args["total_principal"] = pf.total_principal
    args["principal_wal"] = pf.principal_wal
    return args


def args_bytes(args: np.ndarray) -> np.ndarray:
    """Argument blocks (:data:`ARGS_DTYPE`) as the bytes uploaded to the device."""
    return np.frombuffer(args.tobytes(), dtype=np.uint8)


__all__ = [
    "args_bytes",
    "loan_matrices",
    "pack_args",
    "param_arrays",
    "path_arrays",
    "shock_periods",
]
