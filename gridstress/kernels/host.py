"""The host build of the kernels' arithmetic (``kernels/host.cpp``), for the
tests and for machines without a GPU: the same launches, one thread after another."""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..paths import Points
from ..portfolio import PortfolioArrays
from .args import loan_matrices, param_arrays, path_arrays
from .launch import Variant
from .layout import block_layout, kernel_to_block
from .plan import KernelSettings, kernel_plan
from .tables import (
    ARGS_FIELDS,
    HOST,
    KERNEL_NAME,
    MARKET_NAME,
    P_ROWS,
    Q_VARIABLES,
    RECOVER_NAME,
    TABLES_HEADER,
    TABLES_NAME,
    kernel_defines,
    kernel_dir,
    source_sha256,
)


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
    fixed: dict[str, float | None],
    settings: KernelSettings = KernelSettings(),
    per_loan: bool = False,
    paths: dict[str, Points] | None = None,
) -> dict[str, np.ndarray]:
    """One block through the kernel code built for the CPU: the GPU backend's
    variants, stages, layout and launch plan under ``settings``, one thread
    after another.

    ``build(variant)`` returns the host library of a variant
    (:func:`build_host_library`); ``per_loan`` adds the per-loan results;
    ``paths`` are the run's scenario paths (``RunConfig.paths``).
    """
    paths = paths or {}
    layout = block_layout(axes_values, fixed)
    A, B, Q = layout.size("a"), layout.size("b"), layout.size("q")
    S = len(pf.segments)
    kp = kernel_plan(pf, layout, settings, per_loan, paths)
    loan_f, loan_i = loan_matrices(pf)
    keep = {
        "loan_f": loan_f,
        "loan_i": loan_i,
        "debt_service": np.ascontiguousarray(pf.debt_service),
        "owed": np.ascontiguousarray(pf.owed),
        "balance": np.ascontiguousarray(pf.balance),
        "book_value": np.ascontiguousarray(pf.book_value),
        **path_arrays(pf, paths),
        **{
            k: np.ascontiguousarray(v) for k, v in param_arrays(layout, pf.periods_per_year).items()
        },
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
    return kernel_to_block(
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


__all__ = [
    "args_layout_on_host",
    "build_host_library",
    "evaluate_on_host",
]
