"""The GPU driver: :class:`FusedGrid` evaluates blocks of cells with the fused
kernels on the current CUDA device through CuPy."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..paths import Points
from ..portfolio import PortfolioArrays
from ..variables import OUTPUTS
from .args import args_bytes, loan_matrices, param_arrays, path_arrays
from .launch import Variant
from .layout import BlockLayout, assemble, block_layout, kernel_to_block, q_to_block
from .plan import KernelSettings, Launch, kernel_plan
from .tables import (
    ARGS_DTYPE,
    KERNEL_NAME,
    NVRTC_OPTIONS,
    P_ROWS,
    Q_VARIABLES,
    RECOVER_NAME,
    RECOVERY_AXES,
    kernel_source,
)

_MODULES: dict[tuple[str, int, Variant], Any] = {}


def kernel_function(cupy, variant: Variant = Variant(), name: str = KERNEL_NAME):
    """A kernel of the build ``variant`` for the current device (each build is
    compiled once per process; CuPy's disk cache keeps it between processes)."""
    key = (cupy.__name__, cupy.cuda.Device().id, variant)
    if key not in _MODULES:
        _MODULES[key] = cupy.RawModule(
            code=kernel_source(), options=NVRTC_OPTIONS + variant.compile_options()
        )
    return _MODULES[key].get_function(name)


class FusedGrid:
    """Evaluates blocks of cells with the fused kernel on the current CUDA device
    (a :class:`gridstress.prepared.BlockEvaluator`)."""

    #: The engine's name, as the cube's ``engine`` attribute gives it.
    engine = "fused CUDA kernel"

    def __init__(
        self,
        pf: PortfolioArrays,
        cupy,
        settings: KernelSettings = KernelSettings(),
        per_loan: bool = False,
        paths: dict[str, Points] | None = None,
    ):
        """Launches tuned by ``settings``; ``per_loan`` adds the per-loan
        results (``loan_default_years``, ``loan_loss``); ``paths`` are the
        run's scenario paths (``RunConfig.paths``: ``rent_path``,
        ``crypto_path``), the same in every block."""
        self.pf = pf
        self.cp = cupy
        self.settings = settings
        self.per_loan = per_loan
        self.paths = dict(paths or {})
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
            **{name: cupy.asarray(v) for name, v in path_arrays(pf, self.paths).items()},
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
        self, axes_values: dict[str, np.ndarray], fixed: dict[str, float | None], copy: bool = True
    ) -> dict[str, np.ndarray]:
        """Results of one block, on the host; an out-of-memory halves the block and retries.

        With ``copy=False`` the arrays are views of pinned buffers that the
        next-but-one call overwrites: for a consumer that writes each block
        away before asking for the one after next (``write_cube``).
        """
        with self._lock:
            return self._evaluate_or_split(axes_values, fixed, copy)

    def _evaluate_or_split(
        self, axes_values: dict[str, np.ndarray], fixed: dict[str, float | None], copy: bool
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
            # Variables without the liquidation axes (per-loan default times)
            # have size 1 there: either half has them all.
            name: parts[0][name]
            if not OUTPUTS[name].liquidation_dims and dims[axis] in RECOVERY_AXES
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
        kp = kernel_plan(pf, layout, self.settings, self.per_loan, self.paths)
        with self.compute:
            params = {
                name: cp.asarray(np.ascontiguousarray(value))
                for name, value in param_arrays(layout, pf.periods_per_year).items()
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
            arg_bytes = cp.asarray(args_bytes(np.stack([launch.args for launch in launches])))
        size = ARGS_DTYPE.itemsize
        events: list[tuple[str, Any, Any]] = []
        if not layout.a_leads or self.per_loan:
            # Copied whole at the end: the per-loan results are reordered with the rest.
            for n, launch in enumerate(launches):
                self._launch(launch, arg_bytes[n * size : (n + 1) * size], events)
            with self.compute:
                out = kernel_to_block(
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
        return assemble(
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


__all__ = [
    "FusedGrid",
    "kernel_function",
]
