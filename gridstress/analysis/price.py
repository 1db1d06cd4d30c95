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
one block whatever the grid and the book: a pass over the book's ``loss``
finds its VaR (:class:`.risk.TailQuantiles`, an exact weighted quantile kept in
histograms of the values' bits), a pass over the per-loan variables makes
the allocations and the first histogram of each loan's standalone VaR, and
one more pass, where a loan's VaR is not an atom, collects the cells around
it. See ``docs/analysis.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

COLUMNS = (
    "rho",
    "loan_id",
    "segment",
    "principal",
    "wal_years",
    "pd",
    "lgd",
    "el",
    "el_pv",
    "el_bps",
    "es_contribution",
    "ec",
    "capital_bps",
    "required_bps",
    "actual_bps",
    "cushion_bps",
    "standalone_es",
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
        self.n_loans = ds.sizes["loan"]
        self.weights = weights

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

    def read(self, name: str, rows: slice) -> np.ndarray:
        var = self.ds[name].isel({self.dim: rows})
        order = self.path_order if name == "loan_default_years" else self.order
        extra = ["loan"] if "loan" in var.dims else []
        return np.asarray(var.transpose(*order, *extra).values, dtype=np.float64)


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
        wx_path = (x * w[..., None]).sum(axis=reader.liquidation)
        self.pd[r] += w_path.reshape(-1) @ np.isfinite(tau).reshape(-1, n_loans)
        self.el[r] += wx_path.reshape(-1, n_loans).sum(axis=0)
        self.el_pv[r] += (wx_path * discount).reshape(-1, n_loans).sum(axis=0)
        any_default = np.isfinite(tau).any(axis=-1).reshape(-1)
        self.book_pd[r] += float(w_path.reshape(-1)[any_default].sum())
        w, loss, x = w.reshape(-1), loss.reshape(-1), x.reshape(-1, n_loans)
        self.book_el[r] += float(w @ loss)
        above = np.where(loss > var, w, 0.0)
        at = np.where(loss == var, w, 0.0)
        self.above[r] += above @ x
        self.at[r] += at @ x
        self.book_above[r] += float(above @ loss)
        self.book_at[r] += float(at.sum())
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

    # Pass 1: the book's VaR at each rho, from the cube's loss.
    book = [TailQuantiles(1, alpha, COLLECT_VALUES // n_rho) for _ in rhos]
    _narrow(book, reader, "loss", 1)
    var = [_tail(q, 0).var for q in book]

    # Pass 2: the allocations, and the first histogram of each loan's own VaR.
    sums = _Sums(n_rho, n_loans)
    own = [TailQuantiles(n_loans, alpha, COLLECT_VALUES // n_rho) for _ in rhos]
    y = _discount_rate(ds)
    for b, rows, parts in reader.blocks(n_loans):
        loss = reader.read("loss", rows)
        x = reader.read("loan_loss", rows)
        tau = reader.read("loan_default_years", rows)
        discount = _discount(reader, rows, tau, y)
        weights_block = reader.weight_blocks(rows)
        for part in parts:
            keys = order_keys(x[part].reshape(-1, n_loans))
            for r, w in enumerate(weights_block):
                sums.add(r, reader, w[part], loss[part], x[part], tau[part], discount[part], var[r])
                own[r].add(keys, x[part].reshape(-1, n_loans), w[part].reshape(-1), b)
    for q in own:
        q.end_pass()
    # Further passes: the cells around each loan's own VaR.
    _narrow(own, reader, "loan_loss", n_loans)

    tables, books = [], []
    total = float(loans.principal.sum())
    for r, rho in enumerate(rhos):
        excess = sums.cdf[r] - alpha
        mean_at = sums.at[r] / sums.book_at[r] if sums.book_at[r] > 0 else 0.0
        es_contribution = (sums.above[r] + excess * mean_at) / (1 - alpha)
        es = (sums.book_above[r] + excess * var[r]) / (1 - alpha)
        standalone = np.array([_tail(own[r], i).es for i in range(n_loans)])
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


def _narrow(quantiles: list[TailQuantiles], reader: _Reader, name: str, columns: int) -> None:
    """Read ``name`` in passes until every quantile is found: the first histogram
    part by part, later passes (a few columns, each on its own) a block at once,
    skipping the blocks that hold no cell of an open bracket."""
    while not all(q.done for q in quantiles):
        for b, rows, parts in reader.blocks(columns):
            if not any(q.needs(b) for q in quantiles):
                continue
            x = reader.read(name, rows)
            weights_block = reader.weight_blocks(rows)
            first = any(q.first for q in quantiles)
            for part in parts if first else [slice(None)]:
                x2 = x[part].reshape(-1, columns)
                keys = order_keys(x2) if first else None
                for q, w in zip(quantiles, weights_block):
                    if q.needs(b):
                        q.add(keys, x2, w[part].reshape(-1), b)
        for q in quantiles:
            if not q.done:
                q.end_pass()


def _tail(q: TailQuantiles, j: int) -> Tail:
    tail = q.tails[j]
    assert tail is not None
    return tail


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
