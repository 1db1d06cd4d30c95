"""The fused CUDA kernels of model v3: their source, compilation and launch.

Seven modules, each depending only on those listed before it:

- :mod:`.tables`: sources, columns, output rows, argument block, generated
  defines;
- :mod:`.launch`: launch geometry (builds, stages, thread-block shapes,
  slabs, :func:`fused_covers`);
- :mod:`.layout`: the block layout on the kernels' ``(a, b, q)`` index
  space and the reordering of the results back to the block's dims;
- :mod:`.args`: argument packing (loan matrices, parameter arrays,
  argument blocks);
- :mod:`.plan`: the kernel plan, its launches and :class:`KernelSettings`;
- :mod:`.driver`: :class:`FusedGrid`, the GPU driver;
- :mod:`.host`: the host build.

The package exports what the engine, the tests and the benchmarks use; the
rest is imported from its module.

The kernels compute every input of model v3 (docs/model.md) whose loan
tables fit a thread block's shared memory (:func:`fused_covers`); for the
rest :func:`gridstress.prepared.prepare` runs the xp model on CuPy.  The
run's scenario paths are constants of a :class:`FusedGrid` (``paths``);
the paths, the generation shock and the market's appraisal are builds of
their own (:class:`Variant`), so a run without them runs model v2's code.

This is the one package that reads ``kernels/`` (shipped in the wheel as
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

- *appraisal* axes (``deflation``, ``discount_rate``, ``generation_shock``,
  ``generation_years``, ``appraisal_deflation``), index ``a``: they fix the
  rent index, the fleet's cash flow and the appraisal of each loan;
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

from .args import loan_matrices
from .driver import FusedGrid, kernel_function
from .host import args_layout_on_host, build_host_library, evaluate_on_host
from .launch import (
    MAX_Q_PER_THREAD,
    MAX_SUM_REGISTERS,
    PATH_SHARED_BYTES,
    RECOVER_Q_PER_THREAD,
    RECOVER_THREADS,
    SHARED_BYTES,
    THREADS_PER_BLOCK,
    Variant,
    appraisal_periods,
    choose_variant,
    discount_periods,
    fused_covers,
    launch_shape,
    market_table_doubles,
    recover_shape,
    rent_periods,
    slabs,
    two_stage,
)
from .layout import block_layout
from .plan import (
    KernelSettings,
    bytes_per_cell,
    kernel_plan,
    launch_plan,
    record_a,
    record_bytes_per_a,
)
from .tables import (
    ARGS_DTYPE,
    ARGS_FIELDS,
    ARGS_OFFSETS,
    B_FREE,
    HAS_COVENANT,
    HAS_LTV,
    HAS_MINING,
    HEADER,
    KERNEL,
    KERNEL_NAME,
    LOAN_F,
    LOAN_F_COLUMNS,
    LOAN_I,
    MARKET_NAME,
    NVRTC_OPTIONS,
    PATH_FIELDS,
    Q_VARIABLES,
    RECORD_FIELDS,
    RECOVER_NAME,
    STATE_FIELDS,
    TABLES_NAME,
    TRIGGER_ROW,
    kernel_defines,
    kernel_dir,
    kernel_source,
)

__all__ = [
    # tables
    "ARGS_DTYPE",
    "ARGS_FIELDS",
    "ARGS_OFFSETS",
    "B_FREE",
    "HAS_COVENANT",
    "HAS_LTV",
    "HAS_MINING",
    "HEADER",
    "KERNEL",
    "KERNEL_NAME",
    "LOAN_F",
    "LOAN_F_COLUMNS",
    "LOAN_I",
    "MARKET_NAME",
    "NVRTC_OPTIONS",
    "PATH_FIELDS",
    "Q_VARIABLES",
    "RECORD_FIELDS",
    "RECOVER_NAME",
    "STATE_FIELDS",
    "TABLES_NAME",
    "TRIGGER_ROW",
    "kernel_defines",
    "kernel_dir",
    "kernel_source",
    # launch
    "MAX_Q_PER_THREAD",
    "MAX_SUM_REGISTERS",
    "PATH_SHARED_BYTES",
    "RECOVER_Q_PER_THREAD",
    "RECOVER_THREADS",
    "SHARED_BYTES",
    "THREADS_PER_BLOCK",
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
    # layout
    "block_layout",
    # args
    "loan_matrices",
    # plan
    "KernelSettings",
    "bytes_per_cell",
    "kernel_plan",
    "launch_plan",
    "record_a",
    "record_bytes_per_a",
    # driver
    "FusedGrid",
    "kernel_function",
    # host
    "args_layout_on_host",
    "build_host_library",
    "evaluate_on_host",
]
