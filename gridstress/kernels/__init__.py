"""The fused CUDA kernels of model v2: their source, compilation and launch.

Four modules: :mod:`.tables` (sources, columns, output rows, argument
block, generated defines), :mod:`.launch` (geometry, argument packing, the
launch plan and :class:`KernelSettings`), :mod:`.driver` (:class:`FusedGrid`,
the GPU driver) and :mod:`.host` (the host build).

The kernels compute every input of model v2 (docs/model.md) whose loan
tables fit a thread block's shared memory (:func:`fused_covers`); for the
rest :func:`gridstress.prepared.prepare` runs the xp model on CuPy.

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

from .driver import *  # noqa: F403
from .host import *  # noqa: F403
from .launch import *  # noqa: F403
from .tables import *  # noqa: F403
