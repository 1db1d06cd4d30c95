"""The kernel plan: under the tuning settings (:class:`KernelSettings`), which
kernels evaluate a block, in which builds and shapes, over which ranges of
``a`` (:func:`launch_plan`), within how much device memory, and the launches
that carry it out (:meth:`KernelPlan.launches`), the same for the GPU driver
and the host build."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace

import numpy as np

from ..portfolio import PortfolioArrays
from .args import pack_args
from .launch import (
    MARKET_THREADS,
    MAX_Q_PER_THREAD,
    PATH_SHARED_BYTES,
    RECOVER_Q_PER_THREAD,
    RECOVER_THREADS,
    SHARED_BYTES,
    SLAB_CELLS,
    TABLES_THREADS,
    THREADS_PER_BLOCK,
    LaunchShape,
    RecoverShape,
    Variant,
    appraisal_periods,
    choose_variant,
    discount_periods,
    launch_shape,
    market_table_doubles,
    recover_shape,
    rent_periods,
    slabs,
    two_stage,
)
from .layout import BlockLayout
from .tables import (
    KERNEL_NAME,
    MARKET_NAME,
    P_ROWS,
    Q_VARIABLES,
    RECORD_BYTES,
    RECORD_FIELDS,
    RECOVER_NAME,
    STATE_FIELDS,
    TABLES_NAME,
)


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


def bytes_per_cell(n_segments: int, per_loan_loans: int = 0) -> int:
    """Device memory of one cell in a block: the kernel's results and their
    reordered copy, with the per-loan results of ``per_loan_loans`` loans (the
    default records and the market step's tables are bounded by
    :data:`RECORD_BYTES`)."""
    return 8 * (2 * (len(Q_VARIABLES) + n_segments) + P_ROWS + 3 * per_loan_loans)


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
    kernel and the market kernel, always in two stages.  ``path_variant`` is
    the build of the kernels that step the paths (the loan-outer kernel's is
    also ``shape.variant``), with model v3's scenario shapes where the block
    has them; ``appraisal_periods`` the expected-rent factors per value of
    ``a`` (``JA``: 0 without a market appraisal)."""

    staged: bool
    variant: Variant  # the one-pass recovery sums' build, or in two stages the recovery build
    path_variant: Variant
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
    appraisal_periods: int = 0

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
        JA = self.appraisal_periods
        out = []
        for p in self.plan:
            a0, a1 = p.path
            if self.market:
                args = pack_args(pf, layout, pointers, a0, a1, None, appraisal_periods=JA)
                out.append(
                    Launch(
                        TABLES_NAME,
                        self.path_variant,
                        p.path,
                        a1 - a0,
                        TABLES_THREADS,
                        8 * (self.rent_periods + JA),
                        args,
                        None,
                    )
                )
                out.append(
                    Launch(
                        MARKET_NAME,
                        self.path_variant,
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
                            self.horizon, self.rent_periods, self.discount_periods, JA
                        ),
                        pack_args(pf, layout, pointers, a0, a1, self.shape, appraisal_periods=JA),
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
    settings: KernelSettings = KernelSettings(),
    per_loan: bool = False,
    paths: Collection[str] = (),
) -> KernelPlan:
    """The kernel plan of a block under ``settings``, in builds that write the
    per-loan results where ``per_loan``; ``paths`` names the run's scenario
    paths (``rent_path``, ``crypto_path``).

    The paths, the generation shock and the market appraisal are builds of
    their own (:class:`Variant`'s ``rent_shape`` and ``crypto_path``): a
    block without them runs the builds of model v2, and the recovery kernel,
    which none of them changes, is always built without them.
    """
    st = settings
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    S = len(pf.segments)
    market = layout.market
    shapes = {
        "rent_shape": "rent_path" in paths or layout.generation_shock or layout.market_appraisal,
        "crypto_path": "crypto_path" in paths,
    }
    JA = appraisal_periods(pf, layout.market_appraisal)
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
    shape = None
    if market:  # the tables and market kernels share the recovery kernel's parameters
        path_variant = replace(variant, **shapes)
    else:
        path_variant = replace(
            variant.path_stage() if staged else variant,
            max_registers=st.path_max_registers,
            **shapes,
        )
        shape = launch_shape(
            A,
            B,
            pf.n_loans,
            pf.horizon,
            st.threads,
            st.path_shared_bytes,
            path_variant,
            rent_periods=rent_periods(pf),
            discount_periods=discount_periods(pf),
            appraisal_periods=JA,
        )
    market_tables = market_table_doubles(pf) if market else None
    records_a = record_a(pf.n_loans, B, st.record_bytes, market_tables) if staged else None
    plan = launch_plan(A, B * Q, records_a, st.slab_cells, slab_copies=layout.a_leads)
    return KernelPlan(
        staged,
        variant,
        path_variant,
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
        JA,
    )


__all__ = [
    "KernelPlan",
    "KernelSettings",
    "Launch",
    "PathLaunch",
    "bytes_per_cell",
    "kernel_plan",
    "launch_plan",
    "record_a",
    "record_bytes_per_a",
]
