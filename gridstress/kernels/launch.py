"""Launch geometry: the builds of the kernels (:class:`Variant`), the stages a
block runs in, the thread-block shapes of the path and recovery kernels and
the shared memory they take, the slabs of ``a`` copied to the host, and
whether a portfolio fits at all (:func:`fused_covers`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..portfolio import PortfolioArrays
from .tables import PATH_FIELDS, RECORD_FIELDS

#: Threads per block of the loan-outer path kernel (at most: see launch_shape).
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
    """The compile-time parameters of one build of the kernel.

    ``rent_shape`` and ``crypto_path`` build in model v3's scenario shapes
    (the rent path, the generation shock and the market's appraisal; the
    crypto path): a run without them gets the build without their code.
    """

    q_per_thread: int = 1
    segments_in_registers: int = 0
    records: bool = False
    per_loan: bool = False  # writes the per-loan results (a build without them keeps registers)
    max_registers: int = 0  # NVRTC's --maxrregcount for the build (0: ptxas chooses)
    rent_shape: bool = False
    crypto_path: bool = False

    def defines(self) -> tuple[str, ...]:
        return (
            f"-DGS_QT={self.q_per_thread}",
            f"-DGS_NSEG_REG={self.segments_in_registers}",
            f"-DGS_RECORDS={int(self.records)}",
            f"-DGS_PER_LOAN={int(self.per_loan)}",
            f"-DGS_RENT_SHAPE={int(self.rent_shape)}",
            f"-DGS_CRYPTO_PATH={int(self.crypto_path)}",
        )

    def compile_options(self) -> tuple[str, ...]:
        """The NVRTC options of the build beyond :data:`NVRTC_OPTIONS`."""
        cap = (f"--maxrregcount={self.max_registers}",) if self.max_registers else ()
        return self.defines() + cap

    def path_stage(self) -> Variant:
        """The build of ``gs_grid`` that writes default records for this variant."""
        return replace(self, q_per_thread=1, records=True)


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


def appraisal_periods(pf: PortfolioArrays, market_appraisal: bool) -> int:
    """Expected-rent factors ``(1 - d_a)^(t_i)`` the kernels tabulate per value
    of ``a`` (``JA``): the rent index's length with a market appraisal, else none."""
    return rent_periods(pf) if market_appraisal else 0


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
        self,
        horizon: int,
        rent_periods: int | None = None,
        discount_periods: int | None = None,
        appraisal_periods: int = 0,
    ) -> int:
        """Two tables per (a, loan, period) and a loan's path fields per (a,
        loan), and per a value the discount factors (``discount_periods``),
        the rent index (``rent_periods``; both default ``horizon``) and the
        expected-rent factors (``appraisal_periods``)."""
        factors = (discount_periods or horizon) + (rent_periods or horizon) + appraisal_periods
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
    appraisal_periods: int = 0,
) -> LaunchShape:
    """Thread-block shape for ``a_count x b_count`` path cells.

    A block takes up to ``threads`` mining values ``b``, the same number in
    every block along ``b``; when there are fewer ``b`` than threads it takes
    several ``a`` values, as many as fit their factors and tables of at least
    one loan in ``shared_bytes``.  Loans are then tiled to fill the shared
    memory.  ``rent_periods``, ``discount_periods`` (default ``horizon``)
    and ``appraisal_periods`` are the lengths of the rent index, the
    discount factors and the expected-rent factors (:func:`rent_periods`,
    :func:`discount_periods`, :func:`appraisal_periods`).  A ``shared_bytes``
    budget too small for one value of ``a`` and one loan grows to what they
    take, up to :data:`SHARED_BYTES`: the budget is a tuning choice, the
    limit the hardware's.
    """
    if min(a_count, b_count, n_loans, horizon) < 1:
        raise ValueError("a launch needs at least one a value, b value, loan and period")
    per_loan = 8 * (2 * horizon + PATH_FIELDS)  # two tables and a path, per a value
    factors = 8 * ((discount_periods or horizon) + (rent_periods or horizon) + appraisal_periods)
    if per_loan + factors > max(shared_bytes, SHARED_BYTES):
        raise ValueError(
            f"a horizon of {horizon} periods (rent index of {rent_periods or horizon}, "
            f"discount factors of {discount_periods or horizon}, expected rents of "
            f"{appraisal_periods}) does not fit the shared memory"
        )
    shared_bytes = max(shared_bytes, per_loan + factors)
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


def fused_covers(pf: PortfolioArrays, market_appraisal: bool = True) -> str | None:
    """None when the fused kernels run this portfolio, else why not.

    The kernels compute every input of model v3, paths, generation shock and
    market appraisal included; what bounds them is shared memory: a thread
    block of the loan-outer path kernel holds one loan's tables and its
    value's factors, one of the market step's tables kernel the rent index,
    each with the expected-rent factors where ``market_appraisal`` (some
    cell has ``appraisal_deflation`` given; without that knowledge assume so).
    """
    rent = rent_periods(pf)
    expect = appraisal_periods(pf, market_appraisal)
    try:  # the smallest launch: one value of a, one loan per tile
        launch_shape(
            1,
            1,
            1,
            pf.horizon,
            rent_periods=rent,
            discount_periods=discount_periods(pf),
            appraisal_periods=expect,
        )
    except ValueError:
        fits = False
    else:
        fits = 8 * (rent + expect) <= SHARED_BYTES
    if fits:
        return None
    expected = f", expected rents of {expect}" if expect else ""
    return (
        f"loan tables of {pf.horizon} periods, rent index of {rent}{expected}: more than a "
        f"thread block's shared memory holds"
    )


__all__ = [
    "MARKET_THREADS",
    "MAX_Q_PER_THREAD",
    "MAX_SEGMENTS_IN_REGISTERS",
    "MAX_SUM_REGISTERS",
    "PATH_SHARED_BYTES",
    "RECOVER_Q_PER_THREAD",
    "RECOVER_THREADS",
    "SHARED_BYTES",
    "SLAB_CELLS",
    "TABLES_THREADS",
    "THREADS_PER_BLOCK",
    "LaunchShape",
    "RecoverShape",
    "Variant",
    "appraisal_periods",
    "choose_variant",
    "discount_periods",
    "fused_covers",
    "launch_shape",
    "market_table_doubles",
    "recover_shape",
    "rent_periods",
    "slabs",
    "two_stage",
]
