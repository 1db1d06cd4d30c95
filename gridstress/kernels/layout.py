"""The block layout: how a block of cells maps onto the kernels' ``(a, b, q)``
index space (:func:`block_layout`), and how the kernels' ``[var][a][q][b]``
results are put back in the block's dim order (:func:`kernel_to_block`,
:func:`q_to_block`, :func:`p_to_block`, :func:`assemble`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..variables import TRIGGERS
from .tables import (
    APPRAISAL_AXES,
    MINING_AXES,
    P_ROWS,
    P_VARIABLES,
    Q_VARIABLES,
    RECOVERY_AXES,
    TRIGGER_ROW,
)


@dataclass(frozen=True)
class BlockLayout:
    """The block's axes grouped for the kernel, and the parameter arrays per group."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    a_dims: tuple[str, ...]
    b_dims: tuple[str, ...]
    q_dims: tuple[str, ...]
    a_params: dict[str, np.ndarray]  # the APPRAISAL_AXES parameters over a (NaN: empty)
    b_params: dict[str, np.ndarray]  # the MINING_AXES parameters over b
    q_params: dict[str, np.ndarray]  # keep, keep_crypto over q

    def size(self, group: str) -> int:
        return math.prod(self.shape[self.dims.index(d)] for d in getattr(self, group + "_dims"))

    @property
    def market(self) -> bool:
        """True when some cell has a secondary market of finite depth: the market step runs."""
        return not bool(np.all(np.isinf(self.b_params["market_depth_gpus"])))

    @property
    def market_appraisal(self) -> bool:
        """True when some cell has ``appraisal_deflation`` given: the market's appraisal."""
        return not bool(np.all(np.isnan(self.a_params["appraisal_deflation"])))

    @property
    def generation_shock(self) -> bool:
        """True when some cell has a new GPU generation's rent shock."""
        return bool(np.any(self.a_params["generation_shock"] != 0))

    @property
    def a_leads(self) -> bool:
        """True when the appraisal axes come first: an ``a`` range is a slab of the block."""
        return self.dims[: len(self.a_dims)] == self.a_dims


def block_layout(axes_values: dict[str, np.ndarray], fixed: dict[str, float | None]) -> BlockLayout:
    """Group a block's axes into ``a``, ``b``, ``q`` and tabulate each group's
    parameters; a parameter left empty (None: ``appraisal_deflation``'s
    foresight appraisal) is NaN, as in the per-cell scenario arrays."""
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
                value = fixed[name]
                out[name] = np.full(count, np.nan if value is None else float(value))
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


__all__ = [
    "BlockLayout",
    "assemble",
    "block_layout",
    "kernel_to_block",
    "p_to_block",
    "q_to_block",
]
