"""What the kernels and Python share: the sources, the loan matrices' columns,
the output rows and the argument block, with the ``#define``s generated from
these tables (:func:`kernel_defines`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..params import MARKET_PARAMS
from ..variables import OUTPUTS, TRIGGERS

#: Kernel sources, in the order they are joined into one compilation unit.
HEADER = "gridstress.cuh"
KERNEL = "grid.cu"
HOST = "host.cpp"
KERNEL_NAME = "gs_grid"
RECOVER_NAME = "gs_recover"
#: The market step's kernels (period-outer): the loans' tables, then the paths.
TABLES_NAME = "gs_tables"
MARKET_NAME = "gs_market"
#: NVRTC options: float64 operation by operation, as the NumPy backend.
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false")

#: The ``a`` group: what the rent index, the fleet's cash flow and the appraisal
#: depend on (model v3's generation shock and market appraisal among them).
APPRAISAL_AXES = (
    "deflation",
    "discount_rate",
    "generation_shock",
    "generation_years",
    "appraisal_deflation",
)
#: The ``b`` group: the mining axes and the market's (which change no table).
MINING_AXES = ("crypto_drawdown", "drawdown_periods") + MARKET_PARAMS
RECOVERY_AXES = ("haircut", "crypto_haircut", "liquidation_cost")

#: Columns of the per-loan float64 matrix: (field, kernel define, note). The
#: kernel's GS_* defines are generated from this table (:func:`kernel_defines`).
LOAN_F_COLUMNS = (
    ("principal", "GS_PRINCIPAL", ""),
    ("n_gpus", "GS_NGPUS", ""),
    ("rent", "GS_RENT", ""),
    ("utilization", "GS_UTIL", ""),
    ("contracted_share", "GS_CONTRACTED", ""),
    ("contract_rent", "GS_CONTRACT_RENT", ""),
    ("power_cost", "GS_POWER_COST", "power_kw_per_gpu * power_price [USD/GPU-hour]"),
    ("opex", "GS_OPEX", "fixed_opex_per_gpu_year / f [USD/GPU/period]"),
    ("mining_revenue", "GS_MINING_REVENUE", ""),
    ("mining_cost", "GS_MINING_COST", ""),
    ("crypto_collateral", "GS_CRYPTO", ""),
    ("pledged_gpus", "GS_PLEDGED_GPUS", "pledged_share * n_gpus"),
    ("cash_reserve", "GS_CASH0", ""),
    ("cash_cap", "GS_CASH_CAP", "most cash kept [USD]"),
    ("dscr_floor", "GS_DSCR_FLOOR", "min_dscr, or -inf without a covenant"),
    ("max_ltv", "GS_MAX_LTV", "+inf without an LTV covenant"),
    ("refi_advance_rate", "GS_REFI", ""),
    ("refi_min_dscr", "GS_REFI_MIN_DSCR", ""),
    ("balloon", "GS_BALLOON", "balloon due at maturity [USD]"),
    ("cure_periods", "GS_CURE", ""),
    ("generation_exposure", "GS_EXPOSURE", "share of a generation shock the fleet takes"),
)
#: Columns of the per-loan int32 matrix, as :data:`LOAN_F_COLUMNS`.
LOAN_I_COLUMNS = (
    ("n", "GS_N", "periods to maturity"),
    ("n_life", "GS_NLIFE", "periods in service"),
    ("n_contract", "GS_NCONTRACT", "periods under contract"),
    ("n_refi", "GS_NREFI", "periods a cash-flow refinancing offer projects"),
    ("segment", "GS_SEGMENT", ""),
    ("flags", "GS_FLAGS", "the LOAN_FLAGS below"),
)
LOAN_F = tuple(column for column, _, _ in LOAN_F_COLUMNS)
LOAN_I = tuple(column for column, _, _ in LOAN_I_COLUMNS)
HAS_COVENANT, HAS_LTV, HAS_MINING, B_FREE, BOOK_BASIS = 1, 2, 4, 8, 16
#: Bits of a loan's flags column: (value, kernel define, note).
LOAN_FLAGS = (
    (HAS_COVENANT, "GS_HAS_COVENANT", ""),
    (HAS_LTV, "GS_HAS_LTV", ""),
    (HAS_MINING, "GS_HAS_MINING", ""),
    (
        B_FREE,
        "GS_B_FREE",
        "no mining, no crypto collateral: one path for all mining values",
    ),
    (BOOK_BASIS, "GS_BOOK_BASIS", "LTV covenant on book value"),
)
#: Doubles per loan of a tile after its tables in shared memory, (name, note):
#: a b-free loan's path and every loan's fleet refinancing PV (GS_PATH_*).
PATH_ROWS = (
    ("tau", "default period, 0: none"),
    ("payment", "1: a payment default"),
    ("cash", "cash at tau"),
    ("dscr_min", "lowest DSCR"),
    ("trigger", "the trigger that names the default"),
    ("fleet_pv", "the fleet's part of the cash-flow refinancing offer"),
)
PATH_FIELDS = len(PATH_ROWS)
#: Output variables of the kernel, in the cube's table order, which is the
#: kernel's (the GS_QV_* and GS_PV_* defines): per recovery cell, then per
#: path cell.
Q_VARIABLES = tuple(
    name for name, o in OUTPUTS.items() if o.level == "recovery" and o.extra_dim is None
)
P_VARIABLES = tuple(
    name for name, o in OUTPUTS.items() if o.level == "path" and o.extra_dim is None
)
#: Rows of the kernel's per-path-cell output: P_VARIABLES, the EAD sum, and
#: the default rate by trigger (rows TRIGGER_ROW + trigger).
TRIGGER_ROW = len(P_VARIABLES) + 1
P_ROWS = TRIGGER_ROW + len(TRIGGERS)
#: Rows of a default record (two-stage mode), (name, note), stored
#: [row][loan][path cell] (GS_REC_*); then the rows the market kernel adds for
#: each loan's state.
RECORD_ROWS = (
    ("ead", "exposure at default; 0: nothing to recover"),
    ("gpu", "GPU collateral at default, V*_tau p_tau"),
    ("crypto", "crypto collateral at default"),
    ("cash", "cash left at default (market kernel: the running cash account till then)"),
    ("discount", "discount factor at default"),
)
STATE_ROWS = (
    ("status", "covenant breaches while the loan runs, -tau once it has defaulted"),
    ("trigger", "the trigger that names the default"),
)
#: Doubles of one default record, and of one loan's state in the market kernel.
RECORD_FIELDS = len(RECORD_ROWS)
STATE_FIELDS = RECORD_FIELDS + len(STATE_ROWS)
#: Device memory for the default records of one slab [bytes].
RECORD_BYTES = 2**30

#: The kernel's argument block (struct GsArgs), C layout.
ARGS_DTYPE = np.dtype(
    [
        (name, np.uint64)
        for name in (
            "loan_f",
            "loan_i",
            "debt_service",
            "owed",
            "balance",
            "book_value",
            "rent_path",
            "crypto_path",
            "a_deflation",
            "a_discount",
            "a_shock",
            "a_shock_period",
            "a_appraisal",
            "b_crypto",
            "b_periods",
            "b_depth",
            "b_half_life",
            "b_book_share",
            "q_keep",
            "q_keep_crypto",
            "out_q",
            "out_p",
            "records",
            "tables",
            "out_loan_loss",
            "out_loan_years",
        )
    ]
    + [
        (name, np.int32)
        for name in (
            "n_loans",
            "K1",
            "A",
            "B",
            "Q",
            "n_segments",
            "KD",
            "J",
            "JA",
            "a_begin",
            "a_end",
            "rec_begin",
            "rec_end",
            "na_block",
            "nb_block",
            "loan_tile",
            "rb",
            "rq",
            "rec_tile",
        )
    ]
    + [(name, np.float64) for name in ("dt", "hours", "total_principal", "principal_wal")],
    align=True,
)
#: Its fields, in order, and their offsets [bytes].
ARGS_FIELDS: tuple[str, ...] = tuple(ARGS_DTYPE.names or ())
ARGS_OFFSETS: dict[str, int] = {name: ARGS_DTYPE.fields[name][1] for name in ARGS_FIELDS}  # type: ignore[index]

#: The header the kernel sources include for the defines of :func:`kernel_defines`.
TABLES_HEADER = "gs_tables.h"


def kernel_defines() -> str:
    """The kernel's column, flag and output-index ``#define``s, and the argument
    block's field list, generated from this module's tables (one list, not two)."""
    lines = [
        "// Generated by gridstress/kernels/tables.py (kernel_defines) from its tables.",
        "#ifndef GS_TABLES_H",
        "#define GS_TABLES_H",
    ]

    def define(name: str, value, note: str = "") -> None:
        lines.append(f"#define {name} {value}" + (f"  // {note}" if note else ""))

    lines.append("// Columns of the per-loan float64 matrix.")
    for index, (_, name, note) in enumerate(LOAN_F_COLUMNS):
        define(name, index, note)
    define("GS_NF", len(LOAN_F_COLUMNS))
    lines.append("// Columns of the per-loan int32 matrix.")
    for index, (_, name, note) in enumerate(LOAN_I_COLUMNS):
        define(name, index, note)
    define("GS_NI", len(LOAN_I_COLUMNS))
    lines.append("// Bits of the flags column.")
    for value, name, note in LOAN_FLAGS:
        define(name, value, note)
    lines.append("// Outputs per recovery cell, [var][a][q][b]; segment losses from GS_QV_SEG.")
    for index, name in enumerate(Q_VARIABLES):
        define(f"GS_QV_{name.upper()}", index)
    define("GS_QV_SEG", len(Q_VARIABLES))
    lines.append("// Default triggers, in the order that names a default when several fire.")
    for index, name in enumerate(TRIGGERS):
        define(f"GS_TRIGGER_{name.upper()}", index)
    define("GS_NTRIGGER", len(TRIGGERS))
    lines.append("// Outputs per path cell, [var][a][b].")
    for index, name in enumerate(P_VARIABLES):
        define(f"GS_PV_{name.upper()}", index)
    define("GS_PV_EAD_SUM", TRIGGER_ROW - 1, "sum of EAD over defaulted loans (recovery rate)")
    define("GS_PV_TRIGGER", TRIGGER_ROW, "default rate by trigger: rows GS_PV_TRIGGER + trigger")
    define("GS_NPV", P_ROWS)
    lines.append("// Rows of the default records and of the market kernel's loan states.")
    for index, (name, note) in enumerate(RECORD_ROWS + STATE_ROWS):
        define(f"GS_REC_{name.upper()}", index, note)
    define("GS_NREC", RECORD_FIELDS)
    define("GS_NSTATE", STATE_FIELDS)
    lines.append("// Doubles per loan of a tile after its shared-memory tables.")
    for index, (name, note) in enumerate(PATH_ROWS):
        define(f"GS_PATH_{name.upper()}", index, note)
    define("GS_NPATH", PATH_FIELDS)
    lines.append("// The fields of struct GsArgs in ARGS_DTYPE's order, for X(field).")
    define("GS_ARGS_FIELDS(X)", " ".join(f"X({name})" for name in ARGS_FIELDS))
    lines.append("// Checked where struct GsArgs is defined: the layout ARGS_DTYPE packs.")
    checks = [f'static_assert(sizeof(GsArgs) == {ARGS_DTYPE.itemsize}, "GsArgs size");']
    checks += [
        f"static_assert(__builtin_offsetof(GsArgs, {name}) == {ARGS_OFFSETS[name]}, "
        f'"GsArgs.{name} offset");'
        for name in ARGS_FIELDS
    ]
    define("GS_CHECK_ARGS_LAYOUT", " ".join(checks))
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def kernel_dir() -> Path:
    """Folder holding the CUDA sources: in the installed package, else the repository."""
    here = Path(__file__).resolve().parents[1]  # the gridstress package
    for candidate in (here / "_cuda", here.parent / "kernels"):
        if (candidate / KERNEL).is_file() and (candidate / HEADER).is_file():
            return candidate
    raise FileNotFoundError(
        f"the CUDA sources {KERNEL} and {HEADER} are missing from {here / '_cuda'} "
        f"and {here.parent / 'kernels'}; reinstall gridstress"
    )


def _inline(path: Path) -> str:
    """A source file with its local ``#include "..."`` lines replaced by the files
    (those of the files too), :data:`TABLES_HEADER` by :func:`kernel_defines`."""
    folder = path.parent

    def include(match: re.Match) -> str:
        name = match.group(1)
        return kernel_defines() if name == TABLES_HEADER else _inline(folder / name)

    return re.sub(
        r'^#include "([^"]+)"\s*$', include, path.read_text(encoding="utf-8"), flags=re.MULTILINE
    )


def kernel_source() -> str:
    """The kernel as one compilation unit (the header inlined), as NVRTC gets it."""
    return _inline(kernel_dir() / KERNEL)


def source_sha256() -> str:
    return hashlib.sha256(kernel_source().encode()).hexdigest()


__all__ = [
    "PATH_ROWS",
    "RECORD_ROWS",
    "STATE_ROWS",
    "BOOK_BASIS",
    "B_FREE",
    "HAS_COVENANT",
    "HAS_LTV",
    "HAS_MINING",
    "APPRAISAL_AXES",
    "ARGS_DTYPE",
    "ARGS_FIELDS",
    "ARGS_OFFSETS",
    "HEADER",
    "HOST",
    "KERNEL",
    "KERNEL_NAME",
    "LOAN_F",
    "LOAN_FLAGS",
    "LOAN_F_COLUMNS",
    "LOAN_I",
    "LOAN_I_COLUMNS",
    "MARKET_NAME",
    "MINING_AXES",
    "NVRTC_OPTIONS",
    "PATH_FIELDS",
    "P_ROWS",
    "P_VARIABLES",
    "Q_VARIABLES",
    "RECORD_BYTES",
    "RECORD_FIELDS",
    "RECOVERY_AXES",
    "RECOVER_NAME",
    "STATE_FIELDS",
    "TABLES_HEADER",
    "TABLES_NAME",
    "TRIGGER_ROW",
    "kernel_defines",
    "kernel_dir",
    "kernel_source",
    "source_sha256",
]
