"""What each loan should pay: expected loss and capital under the scenario weights.

``pricing.md`` is the contract. The cells of a cube with per-loan outputs are
weighted by :func:`.risk.scenario_weights` (the one weight function of the
analyses), and for each loan ``i`` and each ``rho``:

- ``pd``, ``el``, ``el_pv``: weighted default probability, loss and loss
  discounted from the default time at the cell's discount rate;
- ``es_contribution``: the loan's Euler share of the book's expected
  shortfall at ``confidence``, the cells above the book's VaR in full and
  the atom at the VaR in part, so that the shares add up to the ES;
- ``el_bps + capital_bps = required_bps``: the yearly spread that pays for
  the expected loss over the loan's weighted average life and for the cost
  ``capital_cost`` of the capital ``ec = es_contribution - el`` it uses;
- ``cushion_bps = actual_bps - required_bps``: negative, underpriced.

The cube is read block by block along one axis, so memory stays bounded by
two blocks (one read while the other is computed on) whatever the grid and
the book: a pass over the book's ``loss`` finds its VaR and one pass over the
per-loan variables makes the allocations and each loan's standalone VaR and
ES, all exact (:class:`_OwnTails`: the values of each column's worst
``1 - confidence`` of probability, kept as they come); a column whose tail
does not fit in ``COLLECT_VALUES`` pairs is found by the radix quantiles of
:class:`.risk.TailQuantiles` in further passes. See ``docs/analysis.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError
from ..portfolio import portfolio_arrays
from .headline import grid_dims, leading_slices
from .risk import Tail, TailQuantiles, Weights, order_keys, scenario_weights
from .summary import cube_config

#: Values of the per-loan variables read at once (cells x loans): 32 MiB of float64.
BLOCK_VALUES = 2**22
#: Values computed on at a time, a part of a block (small temporaries stay in cache).
PART_VALUES = 2**18
#: Most (value, weight) pairs the exact quantiles keep at once, over all columns.
COLLECT_VALUES = 2**22
#: Pairs that :class:`_OwnTails` gathers before it merges them into what it keeps.
MERGE_VALUES = 2**16

#: The columns of the table and of ``--csv`` (pricing.md), in order.
COLUMNS = tuple(
    "rho,loan_id,segment,principal,wal_years,pd,lgd,el,el_pv,el_bps,es_contribution,ec,"
    "capital_bps,required_bps,actual_bps,cushion_bps,standalone_es".split(",")
)

#: ``loan_id`` of the book's row.
PORTFOLIO = "portfolio"

PER_LOAN_HINT = (
    "the cube has no per-loan outputs (loan_loss, loan_default_years): run it again "
    "with `gridstress run CONFIG --per-loan` (or `outputs: {per_loan: true}` in the config)"
)


# ---------------------------------------------------------------------------
# The book and its loans


@dataclass(frozen=True)
class _Loans:
    """The cube's loans in the order of its ``loan`` coordinate."""

    loan_id: list[str]
    segment: list[str]
    principal: np.ndarray
    wal_years: np.ndarray
    spread: np.ndarray
    """Annual spread, NaN where the loan gives none."""


def _loans(ds: xr.Dataset) -> _Loans:
    """Principal, segment, spread and contractual WAL of the cube's loans, from the
    run config the cube embeds."""
    config = cube_config(ds)
    if config is None:
        raise InputError(
            "the cube embeds no run config of this model version: price needs its loans' "
            "principal, schedule and spread; run the config again with --per-loan"
        )
    by_id = {ln.loan_id: ln for ln in config.loans}
    pf = portfolio_arrays(config.loans, config.periods_per_year)
    wal = dict(zip(pf.loan_id, pf.wal_years))
    ids = [str(i) for i in ds["loan"].values]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InputError(
            f"loan {missing[0]} of the cube is not in the config it embeds; "
            "the cube's per-loan outputs and its config disagree"
        )
    loans = [by_id[i] for i in ids]
    return _Loans(
        loan_id=ids,
        segment=[ln.segment for ln in loans],
        principal=np.array([ln.principal for ln in loans], dtype=np.float64),
        wal_years=np.array([wal[i] for i in ids], dtype=np.float64),
        spread=np.array(
            [math.nan if ln.spread is None else ln.spread for ln in loans], dtype=np.float64
        ),
    )


def _discount_rate(ds: xr.Dataset) -> float | xr.DataArray:
    """The cells' discount rate: the axis when the grid has one, else the run's value."""
    if "discount_rate" in grid_dims(ds):
        return ds["discount_rate"]
    value = ds.attrs.get("scenario_discount_rate")
    if value is None:
        config = cube_config(ds)
        value = None if config is None else config.scenario.get("discount_rate")
    if value is None:
        raise InputError("the cube does not say its discount rate (scenario_discount_rate)")
    return float(value)


class _Reader:
    """Blocks of the cube along one axis: the first whose values the loans' default
    times have (they have no liquidation axes), at most ``BLOCK_VALUES`` values of
    the per-loan variables each and aligned with their chunks."""

    def __init__(self, ds: xr.Dataset, weights: Sequence[Weights]):
        self.ds = ds
        self.dims = grid_dims(ds)
        self.path = [str(d) for d in ds["loan_default_years"].dims if d != "loan"]
        self.dim = self.path[0]
        self.order = [self.dim] + [d for d in self.dims if d != self.dim]
        self.path_order = [d for d in self.order if d in self.path]
        self.liquidation = tuple(i for i, d in enumerate(self.order) if d not in self.path)
        # einsum of w·x summed over the liquidation axes: weighted losses per default path
        axes = "abcdefghijklmnopqrstuvwxy"[: len(self.order)]
        path_axes = "".join(a for i, a in enumerate(axes) if i not in self.liquidation)
        self.path_sum = f"{axes},{axes}z->{path_axes}z"
        self.n_loans = ds.sizes["loan"]
        self.weights = weights
        self.loss: np.ndarray | None = None
        self.scheduler: str | None = None  # dask's for the reads (None: its default)

    def slices(self, values_per_cell: int) -> Iterator[slice]:
        n = self.ds.sizes[self.dim]
        per_row = values_per_cell * math.prod(self.ds.sizes[d] for d in self.order[1:])
        rows = max(1, BLOCK_VALUES // per_row)
        chunks = self.ds["loan_loss"].chunks
        if chunks is not None:  # whole chunks along the axis where they fit
            size = chunks[self.ds["loan_loss"].dims.index(self.dim)][0]
            if rows >= size:
                rows -= rows % size
        return leading_slices((n, per_row), max_cells=rows * per_row)

    def blocks(self, values_per_cell: int) -> Iterator[tuple[int, slice, list[slice]]]:
        """The blocks read: their number, rows along the axis, and their parts of at
        most ``PART_VALUES`` values (rows within the block) computed on at a time
        where that keeps the temporaries small."""
        per_row = values_per_cell * math.prod(self.ds.sizes[d] for d in self.order[1:])
        for number, rows in enumerate(self.slices(values_per_cell)):
            parts = list(leading_slices((rows.stop - rows.start, per_row), PART_VALUES))
            yield number, rows, parts

    def weight_blocks(self, rows: slice) -> list[np.ndarray]:
        """Each rho's weights of the block's cells, over the axes in the reader's order."""
        at = self.dims.index(self.dim)
        return [np.moveaxis(w.block({self.dim: rows}), at, 0) for w in self.weights]

    def overlapped(
        self,
        blocks: Sequence[tuple[int, slice, list[slice]]],
        names: Sequence[str],
        work: Callable[[slice, list[slice], list[np.ndarray]], None],
    ) -> None:
        """Read the variables ``names`` of each block and call ``work(rows, parts,
        arrays)`` on them on a second thread while the next block is read (in this
        thread): two blocks at most in memory. On two cores or fewer the reads
        take one (dask's synchronous scheduler) and the work the other."""
        from concurrent.futures import Future, ThreadPoolExecutor

        self.scheduler = "synchronous" if (os.cpu_count() or 1) <= 2 else None
        try:
            with ThreadPoolExecutor(1) as pool:
                pending: Future | None = None
                for _, rows, parts in blocks:
                    arrays = [self.read(name, rows) for name in names]
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(work, rows, parts, arrays)
                if pending is not None:
                    pending.result()
        finally:
            self.scheduler = None

    def keep_loss(self) -> None:
        """Keep the book's ``loss`` in memory when it fits in one block (it is read
        with every block of the per-loan variables)."""
        if len(list(self.slices(1))) == 1:
            self.loss = self.read("loss", slice(None))

    def read(self, name: str, rows: slice) -> np.ndarray:
        if name == "loss" and self.loss is not None:
            return self.loss[rows]
        var = self.ds[name].isel({self.dim: rows})
        order = self.path_order if name == "loan_default_years" else self.order
        extra = ["loan"] if "loan" in var.dims else []
        data = var.transpose(*order, *extra).data
        if hasattr(data, "dask"):
            data = data.compute(scheduler=self.scheduler)
        return np.asarray(data, dtype=np.float64)


class _Sums:
    """The weighted sums of the allocation pass, per rho (and loan)."""

    def __init__(self, n_rho: int, n_loans: int):
        def per_loan() -> np.ndarray:
            return np.zeros((n_rho, n_loans))

        self.pd, self.el, self.el_pv = per_loan(), per_loan(), per_loan()
        self.above, self.at = per_loan(), per_loan()
        """``sum of w·loan_loss`` over the cells whose book loss is above, at the VaR."""
        self.book_pd, self.book_el = np.zeros(n_rho), np.zeros(n_rho)
        self.book_above, self.book_at, self.cdf = np.zeros(n_rho), np.zeros(n_rho), np.zeros(n_rho)

    def add(
        self,
        r: int,
        reader: _Reader,
        w: np.ndarray,
        loss: np.ndarray,
        x: np.ndarray,
        tau: np.ndarray,
        discount: np.ndarray,
        var: float,
    ) -> None:
        """Add a part of a block at rho number ``r``: the weights ``w`` and book
        ``loss`` over its cells, ``x`` the loans' losses, ``tau`` and
        ``discount`` over its default paths."""
        n_loans = x.shape[-1]
        # per default path (the liquidation axes summed): weights and weighted losses
        w_path = w.sum(axis=reader.liquidation) if reader.liquidation else w
        wx_path = np.einsum(reader.path_sum, w, x).reshape(-1, n_loans)
        defaulted = np.isfinite(tau).reshape(-1, n_loans)
        self.pd[r] += w_path.reshape(-1) @ defaulted
        self.el[r] += wx_path.sum(axis=0)
        self.el_pv[r] += (wx_path * discount.reshape(-1, n_loans)).sum(axis=0)
        self.book_pd[r] += float(w_path.reshape(-1)[defaulted.any(axis=-1)].sum())
        w, loss, x = w.reshape(-1), loss.reshape(-1), x.reshape(-1, n_loans)
        self.book_el[r] += float(w @ loss)
        # the cells above the book's VaR and at it, weighted, in one product with x
        tail = np.stack([np.where(loss > var, w, 0.0), np.where(loss == var, w, 0.0)])
        above, at = tail @ x
        self.above[r] += above
        self.at[r] += at
        self.book_above[r] += float(tail[0] @ loss)
        self.book_at[r] += float(tail[1].sum())
        self.cdf[r] += float(w[loss <= var].sum())


@dataclass(frozen=True)
class BookRisk:
    """The book's expected loss, VaR and ES at one rho [USD]."""

    rho: float
    confidence: float
    total_principal: float
    expected_loss: float
    var: float
    es: float
    edges: dict[str, tuple[float, float]]
    """``{axis: (low, high)}``: weight on each axis's edge cells (see ``risk``)."""

    @property
    def expected_loss_rate(self) -> float:
        return self.expected_loss / self.total_principal

    @property
    def var_rate(self) -> float:
        return self.var / self.total_principal

    @property
    def es_rate(self) -> float:
        return self.es / self.total_principal

    def line(self) -> str:
        """``rho=0.5: EL $36.0M (12.00%), VaR 99% $60.0M (20.00%), ES 99% ...``"""
        pct = f"{100 * self.confidence:g}%"

        def usd(x: float, rate: float) -> str:
            return f"${x / 1e6:,.1f}M ({rate:.2%})"

        return (
            f"rho={self.rho:g}: EL {usd(self.expected_loss, self.expected_loss_rate)}, "
            f"VaR {pct} {usd(self.var, self.var_rate)}, ES {pct} {usd(self.es, self.es_rate)}"
            " of principal"
        )


@dataclass(frozen=True)
class Pricing:
    """The answer of :func:`price`."""

    table: pd.DataFrame
    """One row per (rho, loan), loans sorted by ``cushion_bps`` (most underpriced
    first, no spread last), then the ``portfolio`` row of that rho; the columns
    are :data:`COLUMNS` (pricing.md's CSV)."""
    book: list[BookRisk]
    """The book's EL, VaR and ES per rho, in the order of ``rhos``."""
    confidence: float
    capital_cost: float

    def at(self, rho: float) -> pd.DataFrame:
        """The rows of one rho (its loans, then the portfolio row)."""
        return self.table[self.table["rho"] == float(rho)].reset_index(drop=True)

    def most_underpriced(self, rho: float | None = None) -> pd.Series | None:
        """The loan with the lowest ``cushion_bps`` at ``rho`` (default: the first
        rho); None when no loan gives a spread."""
        rows = self.at(self.book[0].rho if rho is None else rho)
        loans = rows[(rows["loan_id"] != PORTFOLIO) & rows["cushion_bps"].notna()]
        return None if loans.empty else loans.iloc[0]


def price(
    ds: xr.Dataset,
    rhos: Sequence[float] | float,
    confidence: float = 0.99,
    capital_cost: float = 0.10,
    marginals: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pricing:
    """The spread each loan needs for its expected loss and its capital, against
    the spread it carries, for each ``rho`` (``docs/analysis.md``, pricing.md).

    Parameters
    ----------
    ds : xarray.Dataset
        A cube with per-loan outputs (``run --per-loan``) and the run config it
        embeds; read block by block.
    rhos : float or sequence of float
        Copula correlations of the scenario weights, each in (-1, 1).
    confidence : float
        ``alpha`` of the expected shortfall, in (0, 1).
    capital_cost : float
        ``kappa`` >= 0: the yearly return the risk capital must earn above the
        risk-free rate.
    marginals : mapping, optional
        Marginal distributions replacing the defaults (as ``risk --marginals``).
    """
    rhos = [float(rhos)] if isinstance(rhos, int | float) else [float(r) for r in rhos]
    if not rhos:
        raise InputError("--rho: give at least one correlation")
    for rho in rhos:
        if not -1 < rho < 1:
            raise InputError(f"--rho {rho:g}: must be in (-1, 1)")
    if not 0 < confidence < 1:
        raise InputError(f"--confidence {confidence:g}: must be in (0, 1)")
    if not capital_cost >= 0:
        raise InputError(f"--capital-cost {capital_cost:g}: must be >= 0")
    if "loan_loss" not in ds.data_vars or "loan_default_years" not in ds.data_vars:
        raise InputError(PER_LOAN_HINT)
    loans = _loans(ds)
    weights = [scenario_weights(ds, rho, marginals) for rho in rhos]
    reader = _Reader(ds, weights)
    alpha = float(confidence)
    n_rho, n_loans = len(rhos), reader.n_loans
    room = COLLECT_VALUES // n_rho

    # Pass 1: the book's VaR at each rho, from the cube's loss.
    reader.keep_loss()
    book = [_OwnTails(1, alpha, room) for _ in rhos]
    for _, rows, parts in reversed(list(reader.blocks(1))):
        loss = reader.read("loss", rows)
        weights_block = reader.weight_blocks(rows)
        for part in reversed(parts):
            for t, w in zip(book, weights_block):
                t.add(loss[part].reshape(-1, 1), w[part].reshape(-1))
    var = [tails[0].var for tails in _finish(book, reader, "loss", 1)]

    # Pass 2: the allocations, and each loan's own tail. The rows come from the
    # last down: where losses grow along the axis (deflation), the worst cells
    # come first and the floor of each loan's tail rises at once.
    sums = _Sums(n_rho, n_loans)
    own = [_OwnTails(n_loans, alpha, room) for _ in rhos]
    y = _discount_rate(ds)

    def work(rows: slice, parts: list[slice], arrays: list[np.ndarray]) -> None:
        loss, x, tau = arrays
        discount = _discount(reader, rows, tau, y)
        weights_block = reader.weight_blocks(rows)
        for part in reversed(parts):
            x_part = x[part].reshape(-1, n_loans)
            for r, w in enumerate(weights_block):
                sums.add(r, reader, w[part], loss[part], x[part], tau[part], discount[part], var[r])
                own[r].add(x_part, w[part].reshape(-1))

    blocks = list(reversed(list(reader.blocks(n_loans))))
    reader.overlapped(blocks, ("loss", "loan_loss", "loan_default_years"), work)
    tails = _finish(own, reader, "loan_loss", n_loans)

    tables, books = [], []
    total = float(loans.principal.sum())
    for r, rho in enumerate(rhos):
        excess = sums.cdf[r] - alpha
        mean_at = sums.at[r] / sums.book_at[r] if sums.book_at[r] > 0 else 0.0
        es_contribution = (sums.above[r] + excess * mean_at) / (1 - alpha)
        es = (sums.book_above[r] + excess * var[r]) / (1 - alpha)
        standalone = np.array([t.es for t in tails[r]])
        tables.append(
            _table(
                rho,
                loans,
                sums.pd[r],
                sums.el[r],
                sums.el_pv[r],
                es_contribution,
                standalone,
                float(sums.book_pd[r]),
                capital_cost,
            )
        )
        books.append(
            BookRisk(
                rho=rho,
                confidence=alpha,
                total_principal=total,
                expected_loss=float(sums.book_el[r]),
                var=var[r],
                es=float(es),
                edges=weights[r].edges,
            )
        )
    return Pricing(
        table=pd.concat(tables, ignore_index=True),
        book=books,
        confidence=alpha,
        capital_cost=float(capital_cost),
    )


def _narrow(
    quantiles: list[TailQuantiles],
    reader: _Reader,
    name: str,
    columns: int,
    select: Sequence[np.ndarray] | None = None,
) -> None:
    """Read ``name`` in passes until every quantile is found: the first histogram
    part by part, later passes (a few columns, each on its own) a block at once,
    skipping the blocks that hold no cell of an open bracket. ``select`` gives,
    per quantile (per rho), the columns it reads (default: all)."""
    while not all(q.done for q in quantiles):
        for b, rows, parts in reader.blocks(columns):
            if not any(q.needs(b) for q in quantiles):
                continue
            x = reader.read(name, rows)
            weights_block = reader.weight_blocks(rows)
            first = any(q.first for q in quantiles)
            for part in parts if first else [slice(None)]:
                x2 = x[part].reshape(-1, columns)
                keys = order_keys(x2) if first and select is None else None
                for r, (q, w) in enumerate(zip(quantiles, weights_block)):
                    if q.needs(b):
                        xq = x2 if select is None else np.ascontiguousarray(x2[:, select[r]])
                        kq = order_keys(xq) if keys is None and q.first else keys
                        q.add(kq, xq, w[part].reshape(-1), b)
        for q in quantiles:
            if not q.done:
                q.end_pass()


def _finish(own: list[_OwnTails], reader: _Reader, name: str, columns: int) -> list[list[Tail]]:
    """Each rho's tails of the columns of ``name`` after the pass of ``own``: the
    columns that did not fit found by :class:`.risk.TailQuantiles` in further passes."""
    tails = [t.tails() for t in own]
    failed = [np.flatnonzero(t.failed) for t in own]
    rest = [TailQuantiles(f.size, t.alpha, t.room) for f, t in zip(failed, own)]
    _narrow(rest, reader, name, columns, failed)
    for found, f, q in zip(tails, failed, rest):
        for k, j in enumerate(f):
            found[j] = q.tails[k]
        assert None not in found
    return cast(list[list[Tail]], tails)


class _OwnTails:
    """Each column's weighted VaR and ES at ``alpha``, exact, in one pass that
    keeps only the values of each column's worst ``1 - alpha`` of probability.

    A column's ``floor`` is a value its VaR cannot be below: the greatest value
    ``v`` seen with weight ``P(x >= v) > 1 - alpha`` among the cells read so far
    (so ``F(v-) < alpha`` whatever the cells still to come; a margin of
    :attr:`MARGIN` covers the rounding of the weights' sum). Cells at or below
    the floor count only by their weight, ``F(floor)`` (an atom at the VaR
    costs nothing); cells above it are kept, as (value, weight) pairs with
    equal values merged, and the floor rises as they come. After the pass
    the VaR is the smallest kept value (the floor included) at which the
    weight from below reaches ``alpha``, exactly as numpy's weighted
    ``inverted_cdf`` quantile. A column whose pairs pass half of ``room`` is
    dropped (:attr:`failed`; the largest first) for :class:`.risk.TailQuantiles`.
    """

    MARGIN = 1e-9

    def __init__(self, m: int, alpha: float, room: int):
        self.m, self.alpha, self.room = m, float(alpha), int(room)
        self.floor = np.full(m, -np.inf)
        self.to_floor = np.zeros(m)
        """``F(floor)``: the weight of the cells at or below the floor."""
        self.failed = np.zeros(m, dtype=bool)
        # the kept pairs above the floors, sorted by (column, value), values distinct
        self.cols = np.zeros(0, dtype=np.intp)
        self.vals, self.ws = np.zeros(0), np.zeros(0)
        self._new: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_new = 0

    def add(self, x: np.ndarray, w: np.ndarray) -> None:
        """Cells: values ``x`` of shape ``(cells, m)`` and their weights ``w``."""
        above = x > self.floor
        hit = np.flatnonzero(above.any(axis=1))  # the few rows with a cell above a floor
        rows, cols = np.nonzero(above[hit])
        rows = hit[rows]
        weights = w[rows]
        self.to_floor += float(w.sum()) - np.bincount(cols, weights=weights, minlength=self.m)
        if rows.size:
            self._new.append((cols, x[rows, cols] + 0.0, weights))  # -0.0 read as 0.0
            self._n_new += cols.size
        if self._n_new > max(MERGE_VALUES, self.vals.size) or (
            self._n_new + self.vals.size > self.room
        ):
            self._merge()

    def _merge(self) -> None:
        """Merge the new pairs into the kept ones and raise the floors."""
        cols = np.concatenate([self.cols, *(c for c, _, _ in self._new)])
        vals = np.concatenate([self.vals, *(v for _, v, _ in self._new)])
        ws = np.concatenate([self.ws, *(w for _, _, w in self._new)])
        self._new, self._n_new = [], 0
        order = np.lexsort((vals, cols))
        cols, vals, ws = cols[order], vals[order], ws[order]
        if cols.size:
            start = np.flatnonzero(
                np.concatenate([[True], (cols[1:] != cols[:-1]) | (vals[1:] != vals[:-1])])
            )
            cols, vals, ws = cols[start], vals[start], np.add.reduceat(ws, start)
        # weight at or above each kept value of its column
        first = np.searchsorted(cols, np.arange(self.m))
        position = np.arange(cols.size) - first[cols]
        before = np.cumsum(ws) - ws
        at_or_above = (
            np.bincount(cols, weights=ws, minlength=self.m)[cols] - before + before[first[cols]]
        )
        # the new floor: the last value of its column with more than 1 - alpha at or above
        rises = np.bincount(cols[at_or_above > (1 - self.alpha) + self.MARGIN], minlength=self.m)
        up = np.flatnonzero(rises)
        if up.size:
            under = position < rises[cols]  # at or below the new floor
            self.to_floor += np.bincount(cols[under], weights=ws[under], minlength=self.m)
            self.floor[up] = vals[first[up] + rises[up] - 1]
            cols, vals, ws = cols[~under], vals[~under], ws[~under]
        counts = np.bincount(cols, minlength=self.m)
        if cols.size > self.room // 2:  # the columns with the most pairs give way
            order = np.argsort(-counts, kind="stable")
            left = cols.size - np.cumsum(counts[order])
            drop = order[: int(np.searchsorted(-left, -(self.room // 2))) + 1]
            self.failed[drop] = True
            self.floor[drop] = np.inf
            keep = ~self.failed[cols]
            cols, vals, ws = cols[keep], vals[keep], ws[keep]
        self.cols, self.vals, self.ws = cols, vals, ws

    def tails(self) -> list[Tail | None]:
        """Each column's VaR and ES (None for a failed column), after the pass."""
        self._merge()
        first = np.searchsorted(self.cols, np.arange(self.m + 1))
        out: list[Tail | None] = []
        for j in range(self.m):
            if self.failed[j]:
                out.append(None)
                continue
            vals = self.vals[first[j] : first[j + 1]]
            ws = self.ws[first[j] : first[j + 1]]
            floor, cdf = float(self.floor[j]), float(self.to_floor[j])
            if vals.size == 0 or (np.isfinite(floor) and cdf >= self.alpha):
                var = floor if np.isfinite(floor) else 0.0
                above = float(np.dot(ws, vals))
            else:
                cum = cdf + np.cumsum(ws)
                i = min(int(np.searchsorted(cum, self.alpha, side="left")), vals.size - 1)
                var, cdf = float(vals[i]), float(cum[i])
                above = float(np.dot(ws[i + 1 :], vals[i + 1 :]))
            out.append(Tail(var=var, cdf=cdf, above=above, alpha=self.alpha))
        return out


def _discount(reader: _Reader, rows: slice, tau: np.ndarray, y: float | xr.DataArray) -> np.ndarray:
    """``(1 + y)^(-tau)`` of each default path and loan, 0 where the loan is repaid."""
    if isinstance(y, xr.DataArray):  # an axis of the grid, hence of the default paths
        if reader.dim == "discount_rate":
            y = y.isel(discount_rate=rows)
        shape = [1] * tau.ndim
        shape[reader.path_order.index("discount_rate")] = -1
        rate = np.asarray(y.values, dtype=np.float64).reshape(shape)
    else:
        rate = np.asarray(y, dtype=np.float64)
    repaid = ~np.isfinite(tau)
    factor = (1.0 + rate) ** (-np.where(repaid, 0.0, tau))
    return np.where(repaid, 0.0, factor)


def _table(
    rho: float,
    loans: _Loans,
    pd_: np.ndarray,
    el: np.ndarray,
    el_pv: np.ndarray,
    es_contribution: np.ndarray,
    standalone: np.ndarray,
    book_pd: float,
    kappa: float,
) -> pd.DataFrame:
    b0, wal = loans.principal, loans.wal_years
    with np.errstate(invalid="ignore", divide="ignore"):
        lgd = np.where(pd_ > 0, el / (pd_ * b0), np.nan)
    el_bps = 1e4 * el_pv / (b0 * wal)
    ec = es_contribution - el
    capital_bps = 1e4 * kappa * ec / b0
    required = el_bps + capital_bps
    actual = 1e4 * loans.spread
    cushion = actual - required
    rows = pd.DataFrame(
        {
            "rho": rho,
            "loan_id": loans.loan_id,
            "segment": loans.segment,
            "principal": b0,
            "wal_years": wal,
            "pd": pd_,
            "lgd": lgd,
            "el": el,
            "el_pv": el_pv,
            "el_bps": el_bps,
            "es_contribution": es_contribution,
            "ec": ec,
            "capital_bps": capital_bps,
            "required_bps": required,
            "actual_bps": actual,
            "cushion_bps": cushion,
            "standalone_es": standalone,
        },
        columns=list(COLUMNS),
    )
    rows = rows.sort_values(["cushion_bps", "loan_id"], na_position="last", kind="stable")
    size = b0 * wal  # the weights of the book's spreads: B0·WAL
    priced = np.isfinite(actual)
    expected_defaulted = float(np.sum(pd_ * b0))

    def mean(values: np.ndarray, where: np.ndarray | None = None) -> float:
        where = np.ones(values.size, dtype=bool) if where is None else where
        if not where.any():
            return math.nan
        return float(np.sum(size[where] * values[where]) / np.sum(size[where]))

    book = {
        "rho": rho,
        "loan_id": PORTFOLIO,
        "segment": "",
        "principal": float(b0.sum()),
        "wal_years": float(size.sum() / b0.sum()),
        "pd": book_pd,
        "lgd": float(el.sum()) / expected_defaulted if expected_defaulted > 0 else math.nan,
        "el": float(el.sum()),
        "el_pv": float(el_pv.sum()),
        "el_bps": mean(el_bps),
        "es_contribution": float(es_contribution.sum()),
        "ec": float(ec.sum()),
        "capital_bps": mean(capital_bps),
        "required_bps": mean(required),
        "actual_bps": mean(actual, priced),
        "cushion_bps": mean(cushion, priced),
        "standalone_es": float(standalone.sum()),
    }
    return pd.concat([rows, pd.DataFrame([book], columns=list(COLUMNS))], ignore_index=True)


__all__ = [
    "BLOCK_VALUES",
    "COLUMNS",
    "PORTFOLIO",
    "BookRisk",
    "Pricing",
    "price",
]
