"""The fused CUDA kernels of model v2: their source, compilation and launch.

The kernels compute every input of model v2 (docs/model.md) whose loan
tables fit a thread block's shared memory (:func:`fused_covers`); for the
rest :func:`gridstress.prepared.prepare` runs the xp model on CuPy.

This is the one module that reads ``kernels/`` (shipped in the wheel as
``gridstress/_cuda``).  :class:`FusedGrid` evaluates blocks of cells on the
GPU, compiled at run time by NVRTC through :class:`cupy.RawModule`; CuPy
caches the compiled module on disk (``CUPY_CACHE_DIR``, default
``~/.cupy/kernel_cache``), so later runs start without compiling.  A block
with a deep market everywhere runs the loan-outer kernel ``gs_grid``; a
block with a market of finite depth runs the market step period-outer
(``gs_tables``, ``gs_market``, then ``gs_recover``).

How a block is laid out for the kernel
--------------------------------------
The axes of a block fall into three groups:

- *appraisal* axes (``deflation``, ``discount_rate``), index ``a``: they fix
  the rent index, the fleet's cash flow and the appraisal of each loan;
- *mining* axes (``crypto_drawdown``, ``drawdown_periods`` and the market's
  parameters, which change no table), index ``b``;
- *recovery* axes (``haircut``, ``crypto_haircut``, ``liquidation_cost``),
  index ``q``: they enter only the recovery at default.

One GPU thread owns a path cell ``(a, b)`` and up to 8 recovery cells ``q``,
runs every loan through the path cell and sums each default's recovery for
its recovery cells in registers (a loan without mining or crypto collateral
has one path per ``a``: a thread block computes it once for all its ``b``).
With more recovery cells than that, two kernels share the work
(:func:`two_stage`): the path kernel writes each loan's default record
once, over as many ``a`` as the records' memory allows, and
``gs_recover`` sums the records for every ``q``, thread blocks of
recovery tiles sharing a copy of them in shared memory.  Results come out as
``[var][a][q][b]`` (coalesced writes) and are put in the block's dim order
on the device before they are copied to the host, slab by slab of ``a`` so
that copies overlap the next slab's kernel (:func:`launch_plan`).

The same arithmetic (``kernels/gridstress.cuh``) also builds with a C++
compiler into a host library (:func:`build_host_library`), which the tests
run against the NumPy backend on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .params import MARKET_PARAMS
from .portfolio import PortfolioArrays
from .variables import OUTPUTS, TRIGGERS

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

APPRAISAL_AXES = ("deflation", "discount_rate")
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
#: Doubles of a b-free loan's path in shared memory (GS_NPATH).
PATH_FIELDS = 5
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
#: Doubles of one default record (two-stage mode): EAD, GPU and crypto
#: collateral, cash left, discount factor.
RECORD_FIELDS = 5
#: Doubles per loan and path cell of the market kernel: the record, then the
#: default period, trigger and covenant breaches (GS_NSTATE).
STATE_FIELDS = 8
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
            "a_deflation",
            "a_discount",
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
            "KR",
            "J",
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

THREADS_PER_BLOCK = 128
#: Threads per block of the market step's kernels: the tables kernel (over
#: loans, one block per value of a) and the market kernel (one per path cell).
TABLES_THREADS = 128
MARKET_THREADS = 128
#: The header the kernel sources include for the defines of :func:`kernel_defines`.
TABLES_HEADER = "gs_tables.h"


def kernel_defines() -> str:
    """The kernel's column, flag and output-index ``#define``s, and the argument
    block's field list, generated from this module's tables (one list, not two)."""
    lines = [
        "// Generated by gridstress/kernels.py (kernel_defines) from its tables.",
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


#: Threads per block of the recovery kernel (two stages): 32 mining values
#: x 8 recovery tiles, which share each copy of the records.
RECOVER_THREADS = 256
#: Shared memory a thread block may use without opting in to more.
SHARED_BYTES = 48 * 1024
#: Shared memory of a path-kernel block (its loan tiles): half the limit, so
#: that the registers, not the shared memory, bound the blocks an SM holds
#: (benchmarks/kernel_resources.py: 6 blocks of 96 threads on seed-dense
#: against 4 with 48 KB).
PATH_SHARED_BYTES = 24 * 1024
#: Cells per slab: the unit in which the kernel's results are copied to the
#: host while the next slab computes.
SLAB_CELLS = 2**21


def fused_covers(pf: PortfolioArrays) -> str | None:
    """None when the fused kernels run this portfolio, else why not.

    The kernels compute every input of model v2; what bounds them is shared
    memory: a thread block of the loan-outer path kernel holds one loan's
    tables and its value's factors, one of the market step's tables kernel
    the rent index.
    """
    periods, rent = table_periods(pf), rent_periods(pf)
    need = 8 * (2 * periods + PATH_FIELDS + periods + rent)
    if need > PATH_SHARED_BYTES or 8 * rent > SHARED_BYTES:
        return (
            f"loan tables of {periods} periods, rent index of {rent}: more than a "
            f"thread block's shared memory holds"
        )
    return None


def kernel_dir() -> Path:
    """Folder holding the CUDA sources: in the installed package, else the repository."""
    here = Path(__file__).resolve().parent
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


#: Most recovery cells a thread sums in registers, and most segments whose
#: sums it keeps there (more segments are summed in global memory).
MAX_Q_PER_THREAD = 8
MAX_SEGMENTS_IN_REGISTERS = 8
#: Doubles of recovery sums one thread may hold in registers.
MAX_SUM_REGISTERS = 48
#: Recovery cells per thread of the two-stage mode's recovery kernel (fewer
#: registers, more threads: the best setting in benchmarks/tune_fused.py on
#: an H200).
RECOVER_Q_PER_THREAD = 2


@dataclass(frozen=True)
class Variant:
    """The compile-time parameters of one build of the kernel."""

    q_per_thread: int = 1
    segments_in_registers: int = 0
    records: bool = False

    def defines(self) -> tuple[str, ...]:
        return (
            f"-DGS_QT={self.q_per_thread}",
            f"-DGS_NSEG_REG={self.segments_in_registers}",
            f"-DGS_RECORDS={int(self.records)}",
        )

    def path_stage(self) -> Variant:
        """The build of ``gs_grid`` that writes default records for this variant."""
        return Variant(1, self.segments_in_registers, True)


def choose_variant(
    q_count: int, n_segments: int, max_q_per_thread: int = MAX_Q_PER_THREAD
) -> Variant:
    """Recovery cells per thread and segment sums in registers for a block.

    A thread sums up to ``max_q_per_thread`` recovery cells (its default paths
    are computed once for all of them); the recovery cells are spread evenly
    over ``ceil(q_count / max_q_per_thread)`` threads.  Each holds
    ``3 + segments`` sums per recovery cell in registers, within
    :data:`MAX_SUM_REGISTERS`.
    """
    seg = n_segments if n_segments <= MAX_SEGMENTS_IN_REGISTERS else 0
    fit = max(1, MAX_SUM_REGISTERS // (3 + seg))
    cap = max(1, min(max_q_per_thread, fit, q_count))
    tiles = math.ceil(q_count / cap)
    return Variant(math.ceil(q_count / tiles), seg)


def two_stage(q_count: int, max_q_per_thread: int = MAX_Q_PER_THREAD) -> bool:
    """Whether a block runs in two stages: default records, then recoveries.

    With more recovery cells than one thread sums in registers, a single pass
    would compute each default path once per tile of recovery cells; the
    path kernel instead writes each loan's default record once and a second
    kernel sums the records for every recovery cell.
    """
    return q_count > max_q_per_thread


_MODULES: dict[tuple[str, int, Variant], Any] = {}


def kernel_function(cupy, variant: Variant = Variant(), name: str = KERNEL_NAME):
    """A kernel of the build ``variant`` for the current device (each build is
    compiled once per process; CuPy's disk cache keeps it between processes)."""
    key = (cupy.__name__, cupy.cuda.Device().id, variant)
    if key not in _MODULES:
        _MODULES[key] = cupy.RawModule(
            code=kernel_source(), options=NVRTC_OPTIONS + variant.defines()
        )
    return _MODULES[key].get_function(name)


def table_periods(pf: PortfolioArrays) -> int:
    """Periods of a loan's tables in the kernel (``KR``): the horizon, or the
    longest maturity plus cash-flow refinancing projection if that is longer."""
    return int(max(pf.horizon, int(np.max(pf.n + pf.n_refi, initial=0))))


def rent_periods(pf: PortfolioArrays) -> int:
    """Periods of the rent index the kernel tabulates (``J``): the loans' tables,
    or the longest service life if longer (the appraisal runs to the end of service)."""
    return int(max(table_periods(pf), int(np.max(pf.n_life, initial=0))))


@dataclass(frozen=True)
class LaunchShape:
    """How a launch covers its path cells: thread blocks and shared-memory tiles."""

    na_block: int
    nb_block: int
    threads: int
    loan_tile: int
    variant: Variant = Variant()

    def shared_bytes(self, horizon: int, rent_periods: int | None = None) -> int:
        """Two tables per (a, loan, period) and a b-free loan's path per (a,
        loan), and per a value the discount factors (``horizon`` periods: the
        tables' :func:`table_periods`) and the rent index (``rent_periods``,
        default ``horizon``)."""
        factors = horizon + (horizon if rent_periods is None else rent_periods)
        per_loan = 2 * horizon + PATH_FIELDS
        return (self.loan_tile * per_loan + factors) * self.na_block * 8

    def n_blocks(self, a_count: int, b_count: int, q_count: int = 1) -> int:
        return (
            math.ceil(a_count / self.na_block)
            * math.ceil(b_count / self.nb_block)
            * math.ceil(q_count / self.variant.q_per_thread)
        )


def launch_shape(
    a_count: int,
    b_count: int,
    n_loans: int,
    horizon: int,
    threads: int = THREADS_PER_BLOCK,
    shared_bytes: int = PATH_SHARED_BYTES,
    variant: Variant = Variant(),
    rent_periods: int | None = None,
) -> LaunchShape:
    """Thread-block shape for ``a_count x b_count`` path cells.

    A block takes up to ``threads`` mining values ``b``, the same number in
    every block along ``b``; when there are fewer ``b`` than threads it takes
    several ``a`` values, as many as fit their factors and tables of at least
    one loan in ``shared_bytes``.  Loans are then tiled to fill the shared
    memory.  ``rent_periods`` (default ``horizon``) is the length of the rent
    index (:func:`rent_periods`).
    """
    if min(a_count, b_count, n_loans, horizon) < 1:
        raise ValueError("a launch needs at least one a value, b value, loan and period")
    per_loan = 8 * (2 * horizon + PATH_FIELDS)  # two tables and a path, per a value
    factors = 8 * (horizon + (horizon if rent_periods is None else rent_periods))
    if per_loan + factors > shared_bytes:
        raise ValueError(
            f"a horizon of {horizon} periods (rent index of "
            f"{factors // 8 - horizon}) does not fit the shared memory"
        )
    # b values per block: as many as fit, spread evenly over the blocks.
    nb = math.ceil(b_count / math.ceil(b_count / threads))
    na = max(1, min(a_count, threads // nb, shared_bytes // (per_loan + factors)))
    tile = max(1, min(n_loans, (shared_bytes // na - factors) // per_loan))
    used = na * nb
    return LaunchShape(na, nb, 32 * math.ceil(used / 32), tile, variant)


@dataclass(frozen=True)
class RecoverShape:
    """How the recovery kernel (two stages) covers its cells: each thread block
    takes ``rb`` mining values of one appraisal value and ``rq`` tiles of
    recovery cells, and copies their default records into shared memory
    ``rec_tile`` loans at a time."""

    rb: int
    rq: int
    rec_tile: int

    @property
    def threads(self) -> int:
        return 32 * math.ceil(self.rb * self.rq / 32)

    def shared_bytes(self) -> int:
        return 8 * RECORD_FIELDS * self.rec_tile * self.rb

    def n_blocks(self, a_count: int, b_count: int, q_tiles: int) -> int:
        return a_count * math.ceil(b_count / self.rb) * math.ceil(q_tiles / self.rq)


def recover_shape(
    b_count: int,
    q_tiles: int,
    n_loans: int,
    threads: int = RECOVER_THREADS,
    shared_bytes: int = SHARED_BYTES,
) -> RecoverShape:
    """Thread-block shape of the recovery kernel: up to 32 mining values (a
    warp's coalesced copy; fewer if ``shared_bytes`` cannot hold their
    records of one loan) times as many recovery tiles as fill ``threads``,
    and as many loans per copy as fit ``shared_bytes``."""
    record = 8 * RECORD_FIELDS
    if min(b_count, q_tiles, n_loans, threads) < 1 or shared_bytes < record:
        raise ValueError(
            "a recovery launch needs at least one b value, recovery tile, "
            "loan and thread, and shared memory for one default record"
        )
    rb = min(b_count, 32, threads, shared_bytes // record)
    rq = max(1, min(q_tiles, threads // rb))
    return RecoverShape(rb, rq, min(n_loans, shared_bytes // (record * rb)))


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
    }
    loan_f = np.ascontiguousarray(np.stack([columns[k] for k in LOAN_F], axis=1), dtype=np.float64)
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


@dataclass(frozen=True)
class BlockLayout:
    """The block's axes grouped for the kernel, and the parameter arrays per group."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    a_dims: tuple[str, ...]
    b_dims: tuple[str, ...]
    q_dims: tuple[str, ...]
    a_params: dict[str, np.ndarray]  # deflation, discount_rate over a
    b_params: dict[str, np.ndarray]  # the MINING_AXES parameters over b
    q_params: dict[str, np.ndarray]  # keep, keep_crypto over q

    def size(self, group: str) -> int:
        return math.prod(self.shape[self.dims.index(d)] for d in getattr(self, group + "_dims"))

    @property
    def market(self) -> bool:
        """True when some cell has a secondary market of finite depth: the market step runs."""
        return not bool(np.all(np.isinf(self.b_params["market_depth_gpus"])))

    @property
    def a_leads(self) -> bool:
        """True when the appraisal axes come first: an ``a`` range is a slab of the block."""
        return self.dims[: len(self.a_dims)] == self.a_dims


def block_layout(axes_values: dict[str, np.ndarray], fixed: dict[str, float]) -> BlockLayout:
    """Group a block's axes into ``a``, ``b``, ``q`` and tabulate each group's parameters."""
    dims = tuple(axes_values)
    values = {k: np.asarray(v, dtype=np.float64) for k, v in axes_values.items()}
    shape = tuple(len(v) for v in values.values())

    def table(names: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
        group_dims = tuple(d for d in dims if d in names)
        grids = np.meshgrid(*(values[d] for d in group_dims), indexing="ij")
        out = {}
        for name in names:
            if name in group_dims:
                out[name] = np.ascontiguousarray(grids[group_dims.index(name)].ravel())
            else:
                count = math.prod(len(values[d]) for d in group_dims)
                out[name] = np.full(count, float(fixed[name]))
        return group_dims, out

    a_dims, a_params = table(APPRAISAL_AXES)
    b_dims, b_params = table(MINING_AXES)
    q_dims, q_raw = table(RECOVERY_AXES)
    lc = q_raw["liquidation_cost"]
    q_params = {  # as the NumPy backend forms them
        "keep": (1.0 - lc) * (1.0 - q_raw["haircut"]),
        "keep_crypto": (1.0 - lc) * (1.0 - q_raw["crypto_haircut"]),
    }
    return BlockLayout(dims, shape, a_dims, b_dims, q_dims, a_params, b_params, q_params)


def _sizes(layout: BlockLayout, names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(layout.shape[layout.dims.index(d)] for d in names)


def q_to_block(layout: BlockLayout, a_count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Reshape and transpose that take a kernel result ``[a][q][b]`` (``a_count``
    values of ``a``) to the block's dim order (leading ``a`` dims flattened)."""
    order = ("a",) + layout.q_dims + layout.b_dims
    shape = (a_count,) + _sizes(layout, layout.q_dims) + _sizes(layout, layout.b_dims)
    target = ("a",) + tuple(d for d in layout.dims if d not in layout.a_dims)
    return shape, tuple(order.index(d) for d in target)


def p_to_block(layout: BlockLayout, array: np.ndarray, broadcast: bool = True) -> np.ndarray:
    """A path result ``[a][b]`` as a read-only view of the block's shape (with
    size 1 on the recovery axes unless ``broadcast``)."""
    order = layout.a_dims + layout.b_dims
    shaped = array.reshape(_sizes(layout, layout.a_dims) + _sizes(layout, layout.b_dims))
    target = tuple(d for d in layout.dims if d not in layout.q_dims)
    shaped = shaped.transpose(tuple(order.index(d) for d in target))
    for i, d in enumerate(layout.dims):
        if d in layout.q_dims:
            shaped = np.expand_dims(shaped, i)
    return np.broadcast_to(shaped, layout.shape) if broadcast else shaped


def pack_args(
    pf: PortfolioArrays,
    layout: BlockLayout,
    pointers: dict[str, int],
    a_begin: int,
    a_end: int,
    shape: LaunchShape | None,
    records: tuple[int, int] | None = None,
    recover: RecoverShape | None = None,
) -> np.ndarray:
    """The kernel's argument block for one launch of ``a_begin <= a < a_end``;
    ``records`` is the range of ``a`` the default records cover (default: the
    launch's), ``shape`` the path kernel's (None for the market step's),
    ``recover`` the shape of a recovery launch."""
    args = np.zeros((), dtype=ARGS_DTYPE)
    for name, ptr in pointers.items():
        args[name] = ptr
    args["n_loans"] = pf.n_loans
    args["K1"] = pf.horizon + 1
    args["A"] = layout.size("a")
    args["B"] = layout.size("b")
    args["Q"] = layout.size("q")
    args["n_segments"] = len(pf.segments)
    args["KR"] = table_periods(pf)
    args["J"] = rent_periods(pf)
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


def param_arrays(layout: BlockLayout) -> dict[str, np.ndarray]:
    """The scenario parameters of a block per group, by their argument-block names."""
    a, b, q = layout.a_params, layout.b_params, layout.q_params
    return {
        "a_deflation": a["deflation"],
        "a_discount": a["discount_rate"],
        "b_crypto": b["crypto_drawdown"],
        "b_periods": b["drawdown_periods"],
        "b_depth": b["market_depth_gpus"],
        "b_half_life": b["market_half_life_years"],
        "b_book_share": b["book_share"],
        "q_keep": q["keep"],
        "q_keep_crypto": q["keep_crypto"],
    }


def _bytes(args: np.ndarray) -> np.ndarray:
    return np.frombuffer(args.tobytes(), dtype=np.uint8)


def bytes_per_cell(n_segments: int, per_loan_loans: int = 0) -> int:
    """Device memory of one cell in a block: the kernel's results and their
    reordered copy, with the per-loan results of ``per_loan_loans`` loans (the
    default records and the market step's tables are bounded by
    :data:`RECORD_BYTES`)."""
    return 8 * (2 * (len(Q_VARIABLES) + n_segments) + P_ROWS + 3 * per_loan_loans)


def _path_results(layout: BlockLayout, p_host: np.ndarray, take) -> dict[str, np.ndarray]:
    """The per-path-cell rows ``[row][a * b]`` as the block's variables."""
    out = {name: p_to_block(layout, take(p_host[i])) for i, name in enumerate(P_VARIABLES)}
    out["default_rate_by_trigger"] = np.stack(
        [p_to_block(layout, p_host[TRIGGER_ROW + t]) for t in range(len(TRIGGERS))], axis=-1
    )
    return out


def _assemble(
    layout: BlockLayout, q_host: np.ndarray, seg_host: np.ndarray, p_host: np.ndarray, copy: bool
) -> dict[str, np.ndarray]:
    take = np.array if copy else np.asarray
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(Q_VARIABLES):
        out[name] = take(q_host[i].reshape(layout.shape))
    out.update(_path_results(layout, p_host, take))
    out["loss_by_segment"] = take(seg_host.reshape(layout.shape + (seg_host.shape[-1],)))
    return out


class FusedGrid:
    """Evaluates blocks of cells with the fused kernel on the current CUDA device."""

    def __init__(
        self,
        pf: PortfolioArrays,
        cupy,
        max_q_per_thread: int = MAX_Q_PER_THREAD,
        threads: int = THREADS_PER_BLOCK,
        stages: str = "auto",
        recover_q_per_thread: int = RECOVER_Q_PER_THREAD,
        recover_threads: int = RECOVER_THREADS,
        record_bytes: int = RECORD_BYTES,
        slab_cells: int = SLAB_CELLS,
        path_shared_bytes: int = PATH_SHARED_BYTES,
        per_loan: bool = False,
    ):
        """``max_q_per_thread`` recovery cells per thread in one pass (beyond
        it, two stages); ``recover_q_per_thread`` and ``recover_threads`` (per
        block) for the recovery kernel of the two-stage mode; ``stages``
        forces one or two;
        ``record_bytes`` bounds the default records of one path launch,
        ``slab_cells`` the slabs copied to the host and ``path_shared_bytes``
        the shared memory of a path-kernel block; ``per_loan`` adds the
        per-loan results (``loan_default_years``, ``loan_loss``)."""
        if stages not in ("auto", "one", "two"):
            raise ValueError(f"stages must be 'auto', 'one' or 'two', not {stages!r}")
        self.pf = pf
        self.cp = cupy
        self.max_q_per_thread = max_q_per_thread
        self.recover_q_per_thread = recover_q_per_thread
        self.recover_threads = recover_threads
        self.record_bytes = record_bytes
        self.slab_cells = slab_cells
        self.path_shared_bytes = path_shared_bytes
        self.threads = threads
        self.stages = stages
        self.per_loan = per_loan
        # One block at a time: the streams and transfer buffers are shared
        # (a Dask worker may run several tasks in threads).
        self._lock = threading.RLock()
        loan_f, loan_i = loan_matrices(pf)
        self.device = {
            "loan_f": cupy.asarray(loan_f),
            "loan_i": cupy.asarray(loan_i),
            "debt_service": cupy.asarray(np.ascontiguousarray(pf.debt_service)),
            "owed": cupy.asarray(np.ascontiguousarray(pf.owed)),
            "balance": cupy.asarray(np.ascontiguousarray(pf.balance)),
            "book_value": cupy.asarray(np.ascontiguousarray(pf.book_value)),
        }
        cupy.cuda.runtime.deviceSynchronize()  # the portfolio is on the device
        self.compute = cupy.cuda.Stream(non_blocking=True)
        self.copy = cupy.cuda.Stream(non_blocking=True)
        # Summed over launches, measured with CUDA events: in all, and per
        # stage (the path kernel; the recovery kernel of the two-stage mode).
        self.reset_timers()
        # Page-locked host buffers that receive the results, kept between
        # blocks (allocating and pinning them costs more than the kernel);
        # two sets, used in turn.
        self._host: list[dict[str, np.ndarray]] = [{}, {}]
        self._turn = 0

    def evaluate(
        self, axes_values: dict[str, np.ndarray], fixed: dict[str, float], copy: bool = True
    ) -> dict[str, np.ndarray]:
        """Results of one block, on the host; an out-of-memory halves the block and retries.

        With ``copy=False`` the arrays are views of pinned buffers that the
        next-but-one call overwrites: for a consumer that writes each block
        away before asking for the one after next (``write_cube``).
        """
        with self._lock:
            return self._evaluate_or_split(axes_values, fixed, copy)

    def _evaluate_or_split(
        self, axes_values: dict[str, np.ndarray], fixed: dict[str, float], copy: bool
    ) -> dict[str, np.ndarray]:
        cp = self.cp
        try:
            return self._evaluate(block_layout(axes_values, fixed), copy)
        except cp.cuda.memory.OutOfMemoryError:
            if max(len(v) for v in axes_values.values()) < 2:
                raise
        # Outside the except clause, so that the failed attempt's arrays are freed.
        cp.get_default_memory_pool().free_all_blocks()
        dims = list(axes_values)
        sizes = [len(axes_values[d]) for d in dims]
        axis = int(np.argmax(sizes))
        half = sizes[axis] // 2
        parts = []
        for part in (slice(0, half), slice(half, sizes[axis])):
            sub = dict(axes_values)
            sub[dims[axis]] = np.asarray(axes_values[dims[axis]])[part]
            parts.append(self._evaluate_or_split(sub, fixed, copy=True))
        return {
            # Default times have size 1 on the recovery axes: either half has them all.
            name: parts[0][name]
            if name == "loan_default_years" and dims[axis] in RECOVERY_AXES
            else np.concatenate([p[name] for p in parts], axis=axis)
            for name in parts[0]
        }

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A pinned host array of ``shape`` from the current set, grown as needed."""
        size = math.prod(shape)
        buffers = self._host[self._turn]
        if name not in buffers or buffers[name].size < size:
            buffers.pop(name, None)
            buffers[name] = _pinned(self.cp, (size,))
        return buffers[name][:size].reshape(shape)

    def _evaluate(self, layout: BlockLayout, copy: bool) -> dict[str, np.ndarray]:
        cp = self.cp
        pf = self.pf
        A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
        S = len(pf.segments)
        n_q = len(Q_VARIABLES) + S
        rest = B * Q  # cells per value of a
        kp = kernel_plan(
            pf,
            layout,
            stages=self.stages,
            max_q_per_thread=self.max_q_per_thread,
            threads=self.threads,
            path_shared_bytes=self.path_shared_bytes,
            recover_q_per_thread=self.recover_q_per_thread,
            recover_threads=self.recover_threads,
            record_bytes=self.record_bytes,
            slab_cells=self.slab_cells,
        )
        with self.compute:
            params = {
                name: cp.asarray(np.ascontiguousarray(value))
                for name, value in param_arrays(layout).items()
            }
            out_q = cp.empty((n_q, A, Q, B))
            out_p = cp.empty((P_ROWS, A, B))
            scratch = {
                "records": cp.empty(kp.record_doubles()) if kp.staged else None,
                "tables": cp.empty(kp.table_doubles()) if kp.market else None,
                "out_loan_loss": cp.zeros((pf.n_loans, A, Q, B)) if self.per_loan else None,
                "out_loan_years": cp.full((pf.n_loans, A, B), np.nan) if self.per_loan else None,
            }
        pointers = {k: v.data.ptr for k, v in (self.device | params).items()}
        pointers["out_q"] = out_q.data.ptr
        pointers["out_p"] = out_p.data.ptr
        pointers |= {k: 0 if v is None else v.data.ptr for k, v in scratch.items()}
        launches = kp.launches(pf, layout, pointers)
        with self.compute:  # every launch's argument block, in one upload
            arg_bytes = cp.asarray(_bytes(np.stack([launch.args for launch in launches])))
        size = ARGS_DTYPE.itemsize
        events: list[tuple[str, Any, Any]] = []
        if not layout.a_leads or self.per_loan:
            # Copied whole at the end: the per-loan results are reordered with the rest.
            for n, launch in enumerate(launches):
                self._launch(launch, arg_bytes[n * size : (n + 1) * size], events)
            with self.compute:
                out = _kernel_to_block(
                    layout,
                    out_q,
                    out_p,
                    cp,
                    cp.asnumpy,
                    scratch["out_loan_loss"],
                    scratch["out_loan_years"],
                )
            self.compute.synchronize()
            self._add_kernel_time(events)
            return out
        with self.compute:
            ordered_q = cp.empty((len(Q_VARIABLES), A, rest))
            ordered_seg = cp.empty((A, rest, S))
        self._turn ^= 1
        q_host = self._buffer("q", (len(Q_VARIABLES), A, rest))
        seg_host = self._buffer("seg", (A, rest, S))
        p_host = self._buffer("p", (P_ROWS, A, B))
        q_shape, q_perm = q_to_block(layout, 0)
        for n, launch in enumerate(launches):
            self._launch(launch, arg_bytes[n * size : (n + 1) * size], events)
            if launch.finishes is None:
                continue
            a0, a1 = launch.finishes
            with self.compute:
                # Put the slab in the block's dim order (a leading, flattened).
                sub_shape = (a1 - a0,) + q_shape[1:]
                for i in range(len(Q_VARIABLES)):
                    ordered_q[i, a0:a1] = (
                        out_q[i, a0:a1].reshape(sub_shape).transpose(q_perm).reshape(a1 - a0, rest)
                    )
                seg = out_q[len(Q_VARIABLES) :, a0:a1].reshape((S,) + sub_shape)
                ordered_seg[a0:a1] = cp.moveaxis(
                    seg.transpose((0,) + tuple(1 + i for i in q_perm)), 0, -1
                ).reshape(a1 - a0, rest, S)
                done = self.compute.record()
            self.copy.wait_event(done)
            _copy_async(cp, q_host[:, a0:a1], ordered_q[:, a0:a1], self.copy)
            _copy_async(cp, seg_host[a0:a1], ordered_seg[a0:a1], self.copy)
            _copy_async(cp, p_host[:, a0:a1], out_p[:, a0:a1], self.copy)
        self.compute.synchronize()
        self.copy.synchronize()
        self._add_kernel_time(events)
        return _assemble(
            layout,
            q_host.reshape(len(Q_VARIABLES), -1),
            seg_host.reshape(-1, S),
            p_host.reshape(P_ROWS, -1),
            copy,
        )

    def _launch(self, launch: Launch, args, events: list) -> None:
        """Queue one launch on the compute stream with its argument block
        ``args`` (on the device), between two events (appended to ``events``)."""
        cp = self.cp
        with self.compute:
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            kernel_function(cp, launch.variant, launch.kernel)(
                (launch.blocks,), (launch.threads,), (args,), shared_mem=launch.shared_bytes
            )
            stop.record()
        events.append(("recover" if launch.kernel == RECOVER_NAME else "path", start, stop))

    def reset_timers(self) -> None:
        self.kernel_seconds = 0.0
        self.stage_seconds = {"path": 0.0, "recover": 0.0}

    def _add_kernel_time(self, events: list) -> None:
        for stage, start, stop in events:
            seconds = self.cp.cuda.get_elapsed_time(start, stop) / 1e3
            self.kernel_seconds += seconds
            self.stage_seconds[stage] += seconds


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a block: the kernel and its build, the range of
    ``a`` it covers, its grid, and its argument block.  ``finishes`` is the
    slab whose results are complete once it ran (then reordered and copied)."""

    kernel: str
    variant: Variant
    bounds: tuple[int, int]
    blocks: int
    threads: int
    shared_bytes: int
    args: np.ndarray
    finishes: tuple[int, int] | None


@dataclass(frozen=True)
class KernelPlan:
    """How the kernels evaluate one block: stages, builds, shapes and the launch
    plan, the same on the GPU (:class:`FusedGrid`) and in the host build
    (:func:`evaluate_on_host`).  With the market step (``market``) each path
    launch is the tables kernel and the market kernel, always in two stages."""

    staged: bool
    variant: Variant  # the one-pass build, or in two stages the recovery build
    shape: LaunchShape | None  # the path kernel's (None with the market step)
    rshape: RecoverShape | None
    plan: list[PathLaunch]
    horizon: int  # periods of the loans' tables (table_periods)
    rent_periods: int
    n_loans: int
    b_count: int
    q_count: int
    market: bool = False

    def record_doubles(self) -> int:
        """Doubles of the default records (the market kernel's loan states) of
        the widest path launch."""
        widest = max(p.path[1] - p.path[0] for p in self.plan)
        fields = STATE_FIELDS if self.market else RECORD_FIELDS
        return fields * self.n_loans * widest * self.b_count

    def table_doubles(self) -> int:
        """Doubles of the market step's tables for the widest path launch (0 without it)."""
        if not self.market:
            return 0
        widest = max(p.path[1] - p.path[0] for p in self.plan)
        return widest * (2 * self.n_loans * self.horizon + self.horizon)

    def launches(
        self, pf: PortfolioArrays, layout: BlockLayout, pointers: dict[str, int]
    ) -> list[Launch]:
        """The launches in the order they run: each path launch (with the
        market step, the tables kernel and the market kernel), then in two
        stages the recovery of each of its slabs."""
        B, Q = self.b_count, self.q_count
        q_tiles = math.ceil(Q / self.variant.q_per_thread)
        out = []
        for p in self.plan:
            a0, a1 = p.path
            if self.market:
                args = pack_args(pf, layout, pointers, a0, a1, None)
                out.append(
                    Launch(
                        TABLES_NAME,
                        self.variant,
                        p.path,
                        a1 - a0,
                        TABLES_THREADS,
                        8 * self.rent_periods,
                        args,
                        None,
                    )
                )
                out.append(
                    Launch(
                        MARKET_NAME,
                        self.variant,
                        p.path,
                        math.ceil((a1 - a0) * B / MARKET_THREADS),
                        MARKET_THREADS,
                        0,
                        args,
                        None,
                    )
                )
            else:
                assert self.shape is not None  # kernel_plan sets it without the market step
                out.append(
                    Launch(
                        KERNEL_NAME,
                        self.shape.variant,
                        p.path,
                        self.shape.n_blocks(a1 - a0, B, 1 if self.staged else Q),
                        self.shape.threads,
                        self.shape.shared_bytes(self.horizon, self.rent_periods),
                        pack_args(pf, layout, pointers, a0, a1, self.shape),
                        None if self.staged else p.path,
                    )
                )
            if self.staged:
                rs = self.rshape
                assert rs is not None  # kernel_plan sets rshape whenever staged
                out.extend(
                    Launch(
                        RECOVER_NAME,
                        self.variant,
                        slab,
                        rs.n_blocks(slab[1] - slab[0], B, q_tiles),
                        rs.threads,
                        rs.shared_bytes(),
                        pack_args(
                            pf, layout, pointers, *slab, self.shape, records=p.path, recover=rs
                        ),
                        slab,
                    )
                    for slab in p.slabs
                )
        return out


def kernel_plan(
    pf: PortfolioArrays,
    layout: BlockLayout,
    *,
    stages: str = "auto",
    max_q_per_thread: int = MAX_Q_PER_THREAD,
    threads: int = THREADS_PER_BLOCK,
    path_shared_bytes: int = PATH_SHARED_BYTES,
    recover_q_per_thread: int = RECOVER_Q_PER_THREAD,
    recover_threads: int = RECOVER_THREADS,
    recover_shared_bytes: int = SHARED_BYTES,
    records_a: int | None = None,
    slab_cells: int = SLAB_CELLS,
    record_bytes: int = RECORD_BYTES,
) -> KernelPlan:
    """The kernel plan of a block (``stages`` "auto" chooses by :func:`two_stage`;
    the market step always runs in two stages).  ``records_a`` caps the
    values of ``a`` of one path launch, which :func:`record_a` otherwise
    fits in ``record_bytes``."""
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    S = len(pf.segments)
    market = layout.market
    staged = market or (two_stage(Q, max_q_per_thread) if stages == "auto" else stages == "two")
    variant = (
        choose_variant(Q, S, recover_q_per_thread)
        if staged
        else choose_variant(Q, S, max_q_per_thread)
    )
    rshape = (
        recover_shape(
            B,
            math.ceil(Q / variant.q_per_thread),
            pf.n_loans,
            recover_threads,
            recover_shared_bytes,
        )
        if staged
        else None
    )
    periods = table_periods(pf)
    shape = (
        None
        if market
        else launch_shape(
            A,
            B,
            pf.n_loans,
            periods,
            threads,
            path_shared_bytes,
            variant.path_stage() if staged else variant,
            rent_periods=rent_periods(pf),
        )
    )
    if staged and records_a is None:
        records_a = record_a(pf.n_loans, B, record_bytes, periods if market else None)
    plan = launch_plan(
        A, B * Q, records_a if staged else None, slab_cells, slab_copies=layout.a_leads
    )
    return KernelPlan(
        staged,
        variant,
        shape,
        rshape,
        plan,
        periods,
        rent_periods(pf),
        pf.n_loans,
        B,
        Q,
        market,
    )


def record_a(
    n_loans: int,
    b_count: int,
    record_bytes: int = RECORD_BYTES,
    market_periods: int | None = None,
) -> int:
    """Values of ``a`` whose default records (two-stage mode) fit ``record_bytes``;
    with the market step (``market_periods``, the tables' periods), the loans'
    states and tables."""
    if market_periods is None:
        per_a = 8 * RECORD_FIELDS * n_loans * b_count
    else:
        per_a = 8 * (STATE_FIELDS * n_loans * b_count + (2 * n_loans + 1) * market_periods)
    return max(1, record_bytes // per_a)


@dataclass(frozen=True)
class PathLaunch:
    """One launch of the path kernel over ``path`` (a range of ``a``), and the
    slabs of it whose results are then finished (by the recovery kernel, in
    two stages), reordered and copied to the host one after another."""

    path: tuple[int, int]
    slabs: tuple[tuple[int, int], ...]


def launch_plan(
    a_count: int,
    cells_per_a: int,
    records_a: int | None,
    slab_cells: int = SLAB_CELLS,
    slab_copies: bool = True,
) -> list[PathLaunch]:
    """The launches of one block.

    In one pass (``records_a`` None) each slab is its own path launch.  In
    two stages the path kernel runs once per ``records_a`` values of ``a``
    (as many as the default records allow), so that it fills the GPU, and
    the recovery kernel then runs slab by slab.  Without ``slab_copies``
    (a block whose dims do not lead with the appraisal axes, copied whole)
    every launch is one slab.
    """
    if records_a is None:
        if not slab_copies:
            return [PathLaunch((0, a_count), ((0, a_count),))]
        return [PathLaunch(s, (s,)) for s in slabs(a_count, cells_per_a, slab_cells)]
    out = []
    for r0 in range(0, a_count, records_a):
        r1 = min(a_count, r0 + records_a)
        parts = slabs(r1 - r0, cells_per_a, slab_cells) if slab_copies else [(0, r1 - r0)]
        out.append(PathLaunch((r0, r1), tuple((r0 + s0, r0 + s1) for s0, s1 in parts)))
    return out


def slabs(a_count: int, cells_per_a: int, slab_cells: int = SLAB_CELLS) -> list[tuple[int, int]]:
    """Ranges of ``a`` whose results are copied to the host while the next computes.

    Slabs of about ``slab_cells`` cells, the last ones smaller (a quarter,
    then a sixteenth), so that little copying is left after the last kernel.
    """
    step = max(1, slab_cells // max(1, cells_per_a))
    out, a0 = [], 0
    while a0 < a_count:
        left = a_count - a0
        if left > 2 * step:
            size = step
        elif left > step // 2:
            size = max(1, step // 4)
        else:
            size = max(1, step // 16)
        out.append((a0, min(a_count, a0 + size)))
        a0 = out[-1][1]
    return out


def _pinned(cp, shape: tuple[int, ...]) -> np.ndarray:
    import cupyx

    return cupyx.empty_pinned(shape, dtype=np.float64)


def _copy_async(cp, host: np.ndarray, device, stream) -> None:
    """Copy a device array into a host array (both C-contiguous over the copied rows)."""
    if device.size == 0:
        return
    if not host.flags.c_contiguous:
        # Rows of a leading-axis slice of a C-contiguous array: copy each row.
        for i in range(host.shape[0]):
            _copy_async(cp, host[i], device[i], stream)
        return
    cp.cuda.runtime.memcpyAsync(
        host.ctypes.data,
        device.data.ptr,
        device.nbytes,
        cp.cuda.runtime.memcpyDeviceToHost,
        stream.ptr,
    )


def _kernel_to_block(
    layout: BlockLayout, out_q, out_p, xp, to_host, loan_loss=None, loan_years=None
) -> dict[str, np.ndarray]:
    """Block-ordered host results from the kernel's ``[var][a][q][b]`` arrays, for
    any dim order (reordered on ``xp``'s device, then ``to_host``), with the
    per-loan ``[loan][a][q][b]`` losses and ``[loan][a][b]`` default times
    where given (the times with size 1 on the recovery axes, as the NumPy
    backend returns them)."""
    order = layout.a_dims + layout.q_dims + layout.b_dims
    shape = (
        _sizes(layout, layout.a_dims)
        + _sizes(layout, layout.q_dims)
        + _sizes(layout, layout.b_dims)
    )
    perm = tuple(order.index(d) for d in layout.dims)
    n = len(Q_VARIABLES)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(Q_VARIABLES):
        out[name] = to_host(xp.ascontiguousarray(out_q[i].reshape(shape).transpose(perm)))
    seg = out_q[n:].reshape((-1,) + shape).transpose((0,) + tuple(1 + p for p in perm))
    out["loss_by_segment"] = to_host(xp.ascontiguousarray(xp.moveaxis(seg, 0, -1)))
    out.update(_path_results(layout, to_host(out_p).reshape(P_ROWS, -1), np.asarray))
    if loan_loss is not None:
        loans = loan_loss.reshape((-1,) + shape).transpose((0,) + tuple(1 + p for p in perm))
        out["loan_loss"] = to_host(xp.ascontiguousarray(xp.moveaxis(loans, 0, -1)))
        years = to_host(loan_years).reshape(loan_years.shape[0], -1)
        out["loan_default_years"] = np.stack(
            [p_to_block(layout, row, broadcast=False) for row in years], axis=-1
        )
    return out


# -- The host build of the kernel's arithmetic (tests, machines without a GPU) --


def build_host_library(
    cxx: str = "g++", folder: Path | None = None, variant: Variant = Variant()
) -> Path:
    """Compile ``kernels/host.cpp`` for ``variant`` into a shared library."""
    folder = Path(folder or tempfile.mkdtemp(prefix="gridstress-host-"))
    tag = "_".join(d.removeprefix("-D").replace("=", "") for d in variant.defines())
    target = folder / f"gs_host_{source_sha256()[:12]}_{tag}.so"
    if not target.exists():
        generated = folder / f"gs_include_{source_sha256()[:12]}"
        generated.mkdir(exist_ok=True)
        (generated / TABLES_HEADER).write_text(kernel_defines(), encoding="utf-8")
        subprocess.run(
            [
                cxx,
                "-O2",
                "-std=c++17",
                "-ffp-contract=off",
                "-fPIC",
                "-shared",
                *variant.defines(),
                "-I",
                str(generated),
                "-I",
                str(kernel_dir()),
                "-o",
                str(target),
                str(kernel_dir() / HOST),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    return target


def evaluate_on_host(
    build,
    pf: PortfolioArrays,
    axes_values: dict[str, np.ndarray],
    fixed: dict[str, float],
    threads: int = THREADS_PER_BLOCK,
    shared_bytes: int = PATH_SHARED_BYTES,
    max_q_per_thread: int = MAX_Q_PER_THREAD,
    slab_a: int | None = None,
    records_a: int | None = None,
    recover_q_per_thread: int = RECOVER_Q_PER_THREAD,
    recover_threads: int = RECOVER_THREADS,
    recover_shared_bytes: int = SHARED_BYTES,
    per_loan: bool = False,
) -> dict[str, np.ndarray]:
    """One block through the kernel code built for the CPU: the GPU backend's
    variants, stages, layout and launch plan, one thread after another.

    ``build(variant)`` returns the host library of a variant
    (:func:`build_host_library`).  ``slab_a`` sizes the slabs as the GPU
    backend sizes them for ``slab_a`` values of ``a`` (default: the whole
    block in one slab); ``records_a`` caps the values of ``a`` one path
    launch records in two stages (default: as on the GPU, :func:`record_a`);
    ``shared_bytes`` and ``recover_shared_bytes`` are the shared-memory
    budgets of the path and recovery kernels' blocks; ``per_loan`` adds the
    per-loan results.
    """
    layout = block_layout(axes_values, fixed)
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    S = len(pf.segments)
    kp = kernel_plan(
        pf,
        layout,
        max_q_per_thread=max_q_per_thread,
        threads=threads,
        path_shared_bytes=shared_bytes,
        recover_q_per_thread=recover_q_per_thread,
        recover_threads=recover_threads,
        recover_shared_bytes=recover_shared_bytes,
        records_a=records_a,
        slab_cells=(slab_a or A) * B * Q,
    )
    loan_f, loan_i = loan_matrices(pf)
    keep = {
        "loan_f": loan_f,
        "loan_i": loan_i,
        "debt_service": np.ascontiguousarray(pf.debt_service),
        "owed": np.ascontiguousarray(pf.owed),
        "balance": np.ascontiguousarray(pf.balance),
        "book_value": np.ascontiguousarray(pf.book_value),
        **{k: np.ascontiguousarray(v) for k, v in param_arrays(layout).items()},
        # Poisoned: every output the kernels should write is checked to be written.
        "out_q": np.full((len(Q_VARIABLES) + S, A, Q, B), np.nan),
        "out_p": np.full((P_ROWS, A, B), np.nan),
        "records": np.full(kp.record_doubles() if kp.staged else 0, np.nan),
        "tables": np.full(kp.table_doubles(), np.nan),
    }
    if per_loan:
        keep["out_loan_loss"] = np.zeros((pf.n_loans, A, Q, B))
        keep["out_loan_years"] = np.full((pf.n_loans, A, B), np.nan)
    pointers = {k: v.ctypes.data for k, v in keep.items()}
    pointers.setdefault("out_loan_loss", 0)
    pointers.setdefault("out_loan_years", 0)
    host = {name: f"{name}_host" for name in (KERNEL_NAME, RECOVER_NAME, TABLES_NAME, MARKET_NAME)}
    for launch in kp.launches(pf, layout, pointers):
        if launch.kernel in (KERNEL_NAME, TABLES_NAME):
            # Records and tables left by another launch would show.
            keep["records"][:] = np.nan
            keep["tables"][:] = np.nan
        rc = getattr(ctypes.CDLL(str(build(launch.variant))), host[launch.kernel])(
            ctypes.c_void_p(launch.args.ctypes.data),
            ctypes.c_long(launch.blocks),
            ctypes.c_int(launch.threads),
        )
        if rc != 0:
            raise RuntimeError(f"the host build of {launch.kernel} returned {rc}")
    return _kernel_to_block(
        layout,
        keep["out_q"],
        keep["out_p"],
        np,
        np.asarray,
        keep.get("out_loan_loss"),
        keep.get("out_loan_years"),
    )


def args_layout_on_host(library: Path) -> tuple[int, dict[str, int]]:
    """``sizeof(GsArgs)`` and the offset of each of its fields, by name, as the
    C++ compiler lays them out: checks :data:`ARGS_DTYPE`."""
    lib = ctypes.CDLL(str(library))
    lib.gs_args_size.restype = ctypes.c_long
    offsets = (ctypes.c_long * len(ARGS_FIELDS))()
    count = lib.gs_args_offsets(offsets)
    return int(lib.gs_args_size()), dict(zip(ARGS_FIELDS[:count], map(int, offsets)))
