"""Launch geometry and argument packing: how a block of cells is grouped for
the kernels, which kernels run over which ranges, with which thread blocks
and argument blocks, and the tuning settings (:class:`KernelSettings`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..portfolio import PortfolioArrays
from ..variables import TRIGGERS
from .tables import (
    APPRAISAL_AXES,
    ARGS_DTYPE,
    B_FREE,
    BOOK_BASIS,
    HAS_COVENANT,
    HAS_LTV,
    HAS_MINING,
    KERNEL_NAME,
    LOAN_F,
    LOAN_I,
    MARKET_NAME,
    MINING_AXES,
    P_ROWS,
    P_VARIABLES,
    PATH_FIELDS,
    Q_VARIABLES,
    RECORD_BYTES,
    RECORD_FIELDS,
    RECOVER_NAME,
    RECOVERY_AXES,
    STATE_FIELDS,
    TABLES_NAME,
    TRIGGER_ROW,
)

THREADS_PER_BLOCK = 128
#: Threads per block of the market step's kernels: the tables kernel (over
#: loans, one block per value of a) and the market kernel (one per path cell).
TABLES_THREADS = 128
MARKET_THREADS = 128
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
    per_loan: bool = False  # writes the per-loan results (a build without them keeps registers)
    max_registers: int = 0  # NVRTC's --maxrregcount for the build (0: ptxas chooses)

    def defines(self) -> tuple[str, ...]:
        return (
            f"-DGS_QT={self.q_per_thread}",
            f"-DGS_NSEG_REG={self.segments_in_registers}",
            f"-DGS_RECORDS={int(self.records)}",
            f"-DGS_PER_LOAN={int(self.per_loan)}",
        )

    def compile_options(self) -> tuple[str, ...]:
        """The NVRTC options of the build beyond :data:`NVRTC_OPTIONS`."""
        cap = (f"--maxrregcount={self.max_registers}",) if self.max_registers else ()
        return self.defines() + cap

    def path_stage(self) -> Variant:
        """The build of ``gs_grid`` that writes default records for this variant."""
        return Variant(1, self.segments_in_registers, True, self.per_loan, self.max_registers)


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


def discount_periods(pf: PortfolioArrays) -> int:
    """Periods of the discount factors the kernel tabulates (``KD``): the
    horizon, or the longest cash-flow refinancing projection if longer."""
    return int(max(pf.horizon, int(np.max(pf.n_refi, initial=0))))


def rent_periods(pf: PortfolioArrays) -> int:
    """Periods of the rent index the kernel tabulates (``J``): the horizon, the
    longest maturity plus refinancing projection (the offer's cash flows) or
    the longest service life (the appraisal runs to the end of service)."""
    longest = max(int(np.max(pf.n + pf.n_refi, initial=0)), int(np.max(pf.n_life, initial=0)))
    return int(max(pf.horizon, longest))


def market_table_doubles(pf: PortfolioArrays) -> int:
    """Doubles of the market step's tables per value of ``a``: each loan's net
    cash flow, appraisal and fleet refinancing PV, and the discount factors."""
    return pf.n_loans * (2 * pf.horizon + 1) + discount_periods(pf)


@dataclass(frozen=True)
class LaunchShape:
    """How a launch covers its path cells: thread blocks and shared-memory tiles."""

    na_block: int
    nb_block: int
    threads: int
    loan_tile: int
    variant: Variant = Variant()

    def shared_bytes(
        self, horizon: int, rent_periods: int | None = None, discount_periods: int | None = None
    ) -> int:
        """Two tables per (a, loan, period) and a loan's path fields per (a,
        loan), and per a value the discount factors (``discount_periods``) and
        the rent index (``rent_periods``; both default ``horizon``)."""
        factors = (discount_periods or horizon) + (rent_periods or horizon)
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
    discount_periods: int | None = None,
) -> LaunchShape:
    """Thread-block shape for ``a_count x b_count`` path cells.

    A block takes up to ``threads`` mining values ``b``, the same number in
    every block along ``b``; when there are fewer ``b`` than threads it takes
    several ``a`` values, as many as fit their factors and tables of at least
    one loan in ``shared_bytes``.  Loans are then tiled to fill the shared
    memory.  ``rent_periods`` and ``discount_periods`` (default ``horizon``)
    are the lengths of the rent index and the discount factors
    (:func:`rent_periods`, :func:`discount_periods`).
    """
    if min(a_count, b_count, n_loans, horizon) < 1:
        raise ValueError("a launch needs at least one a value, b value, loan and period")
    per_loan = 8 * (2 * horizon + PATH_FIELDS)  # two tables and a path, per a value
    factors = 8 * ((discount_periods or horizon) + (rent_periods or horizon))
    if per_loan + factors > shared_bytes:
        raise ValueError(
            f"a horizon of {horizon} periods (rent index of {rent_periods or horizon}, "
            f"discount factors of {discount_periods or horizon}) does not fit the shared memory"
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
    args["KD"] = discount_periods(pf)
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


def args_bytes(args: np.ndarray) -> np.ndarray:
    """Argument blocks (:data:`ARGS_DTYPE`) as the bytes uploaded to the device."""
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


def assemble(
    layout: BlockLayout, q_host: np.ndarray, seg_host: np.ndarray, p_host: np.ndarray, copy: bool
) -> dict[str, np.ndarray]:
    """The block's variables from host buffers already in the block's dim order
    (recovery-cell rows, segment losses, path-cell rows); ``copy`` copies them
    out of the buffers."""
    take = np.array if copy else np.asarray
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(Q_VARIABLES):
        out[name] = take(q_host[i].reshape(layout.shape))
    out.update(_path_results(layout, p_host, take))
    out["loss_by_segment"] = take(seg_host.reshape(layout.shape + (seg_host.shape[-1],)))
    return out


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
    (:func:`evaluate_on_host`).  With the market step (``market_tables``, the
    doubles of its tables per value of ``a``) each path launch is the tables
    kernel and the market kernel, always in two stages."""

    staged: bool
    variant: Variant  # the one-pass build, or in two stages the recovery build
    shape: LaunchShape | None  # the path kernel's (None with the market step)
    rshape: RecoverShape | None
    plan: list[PathLaunch]
    horizon: int
    rent_periods: int
    discount_periods: int
    n_loans: int
    b_count: int
    q_count: int
    market_tables: int | None = None

    @property
    def market(self) -> bool:
        return self.market_tables is not None

    def record_doubles(self) -> int:
        """Doubles of the default records (the market kernel's loan states) of
        the widest path launch."""
        widest = max(p.path[1] - p.path[0] for p in self.plan)
        fields = STATE_FIELDS if self.market else RECORD_FIELDS
        return fields * self.n_loans * widest * self.b_count

    def table_doubles(self) -> int:
        """Doubles of the market step's tables for the widest path launch (0 without it)."""
        if self.market_tables is None:
            return 0
        widest = max(p.path[1] - p.path[0] for p in self.plan)
        return widest * self.market_tables

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
                        self.shape.shared_bytes(
                            self.horizon, self.rent_periods, self.discount_periods
                        ),
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


@dataclass(frozen=True)
class KernelSettings:
    """The fused kernels' tuning settings: one object for the GPU driver
    (:class:`gridstress.kernels.FusedGrid`), the launch plan (:func:`kernel_plan`)
    and the host build (:func:`gridstress.kernels.evaluate_on_host`).

    ``stages`` is "auto" (two stages beyond ``max_q_per_thread`` recovery
    cells per thread, :func:`two_stage`), "one" or "two"; the market step
    always runs in two.  ``threads`` and ``path_shared_bytes`` shape the
    loan-outer path kernel's blocks, ``recover_q_per_thread``,
    ``recover_threads`` and ``recover_shared_bytes`` the recovery kernel's;
    ``record_bytes`` bounds the default records (and the market step's
    tables) of one path launch, ``slab_cells`` the slabs copied to the host;
    ``path_max_registers`` caps the loan-outer path kernel's registers
    (NVRTC's ``--maxrregcount``; 0 leaves them to ptxas).
    """

    stages: str = "auto"
    max_q_per_thread: int = MAX_Q_PER_THREAD
    threads: int = THREADS_PER_BLOCK
    path_shared_bytes: int = PATH_SHARED_BYTES
    recover_q_per_thread: int = RECOVER_Q_PER_THREAD
    recover_threads: int = RECOVER_THREADS
    recover_shared_bytes: int = SHARED_BYTES
    record_bytes: int = RECORD_BYTES
    slab_cells: int = SLAB_CELLS
    path_max_registers: int = 0

    def __post_init__(self) -> None:
        if self.stages not in ("auto", "one", "two"):
            raise ValueError(f"stages must be 'auto', 'one' or 'two', not {self.stages!r}")


def kernel_plan(
    pf: PortfolioArrays,
    layout: BlockLayout,
    settings: KernelSettings = KernelSettings(),
    per_loan: bool = False,
) -> KernelPlan:
    """The kernel plan of a block under ``settings``, in builds that write the
    per-loan results where ``per_loan``."""
    st = settings
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    S = len(pf.segments)
    market = layout.market
    staged = market or (
        two_stage(Q, st.max_q_per_thread) if st.stages == "auto" else st.stages == "two"
    )
    variant = replace(
        choose_variant(Q, S, st.recover_q_per_thread if staged else st.max_q_per_thread),
        per_loan=per_loan,
    )
    rshape = (
        recover_shape(
            B,
            math.ceil(Q / variant.q_per_thread),
            pf.n_loans,
            st.recover_threads,
            st.recover_shared_bytes,
        )
        if staged
        else None
    )
    shape = (
        None
        if market
        else launch_shape(
            A,
            B,
            pf.n_loans,
            pf.horizon,
            st.threads,
            st.path_shared_bytes,
            replace(
                variant.path_stage() if staged else variant, max_registers=st.path_max_registers
            ),
            rent_periods=rent_periods(pf),
            discount_periods=discount_periods(pf),
        )
    )
    market_tables = market_table_doubles(pf) if market else None
    records_a = record_a(pf.n_loans, B, st.record_bytes, market_tables) if staged else None
    plan = launch_plan(A, B * Q, records_a, st.slab_cells, slab_copies=layout.a_leads)
    return KernelPlan(
        staged,
        variant,
        shape,
        rshape,
        plan,
        pf.horizon,
        rent_periods(pf),
        discount_periods(pf),
        pf.n_loans,
        B,
        Q,
        market_tables,
    )


def record_bytes_per_a(n_loans: int, b_count: int, market_tables: int | None = None) -> int:
    """Device memory of the default records of one value of ``a`` (two stages);
    with the market step (``market_tables``: :func:`market_table_doubles`), of
    the loans' states and tables [bytes]."""
    if market_tables is None:
        return 8 * RECORD_FIELDS * n_loans * b_count
    return 8 * (STATE_FIELDS * n_loans * b_count + market_tables)


def record_a(
    n_loans: int,
    b_count: int,
    record_bytes: int = RECORD_BYTES,
    market_tables: int | None = None,
) -> int:
    """Values of ``a`` whose records (:func:`record_bytes_per_a`) fit ``record_bytes``."""
    return max(1, record_bytes // record_bytes_per_a(n_loans, b_count, market_tables))


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


def kernel_to_block(
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


def fused_covers(pf: PortfolioArrays) -> str | None:
    """None when the fused kernels run this portfolio, else why not.

    The kernels compute every input of model v2; what bounds them is shared
    memory: a thread block of the loan-outer path kernel holds one loan's
    tables and its value's factors, one of the market step's tables kernel
    the rent index.
    """
    rent = rent_periods(pf)
    try:  # the smallest launch: one value of a, one loan per tile
        launch_shape(1, 1, 1, pf.horizon, rent_periods=rent, discount_periods=discount_periods(pf))
    except ValueError:
        fits = False
    else:
        fits = 8 * rent <= SHARED_BYTES
    if fits:
        return None
    return (
        f"loan tables of {pf.horizon} periods, rent index of {rent}: more than a "
        f"thread block's shared memory holds"
    )


__all__ = [
    "args_bytes",
    "assemble",
    "kernel_to_block",
    "record_bytes_per_a",
    "BlockLayout",
    "KernelPlan",
    "KernelSettings",
    "Launch",
    "LaunchShape",
    "MARKET_THREADS",
    "MAX_Q_PER_THREAD",
    "MAX_SEGMENTS_IN_REGISTERS",
    "MAX_SUM_REGISTERS",
    "PATH_SHARED_BYTES",
    "PathLaunch",
    "RECOVER_Q_PER_THREAD",
    "RECOVER_THREADS",
    "RecoverShape",
    "SHARED_BYTES",
    "SLAB_CELLS",
    "TABLES_THREADS",
    "THREADS_PER_BLOCK",
    "Variant",
    "block_layout",
    "bytes_per_cell",
    "choose_variant",
    "fused_covers",
    "kernel_plan",
    "launch_plan",
    "launch_shape",
    "loan_matrices",
    "p_to_block",
    "pack_args",
    "param_arrays",
    "q_to_block",
    "record_a",
    "recover_shape",
    "rent_periods",
    "discount_periods",
    "slabs",
    "market_table_doubles",
    "two_stage",
]
