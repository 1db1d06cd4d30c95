"""The cube's data variables: one table read by the model, kernels, cube and engine.

Each output of model v2 (``docs/model.md``, "What each cell reports") is one
:class:`Output` row: its units and long name, the extra dim it has besides
the grid axes, whether it depends on the liquidation parameters (the
*recovery* level) or only on the default paths (the *path* level), when it
is NaN, and whether it is written only on request (per-loan outputs).  The
model returns exactly these arrays, the cube labels them from here, the
engine checks the never-NaN ones for finiteness, and the README's variable
table is checked against this one by a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import LIQUIDATION_PARAMS

#: Default triggers in the order model.md ranks them when several fire in
#: the same period (the coordinate of ``default_rate_by_trigger``).
TRIGGERS = ("payment", "covenant", "ltv", "maturity")


@dataclass(frozen=True)
class Output:
    """One data variable of the cube."""

    name: str
    units: str
    long_name: str
    level: str
    """``"path"``: the same in every cell of a default path (it does not
    depend on haircut, crypto_haircut or liquidation_cost); ``"recovery"``:
    it does."""
    nan_when: str | None = None
    """When the value is NaN (None: never; a NaN there means the arithmetic broke)."""
    extra_dim: str | None = None
    """A dim besides the grid axes: ``segment``, ``trigger`` or ``loan``."""
    per_loan: bool = False
    """Written only when the run asks for per-loan outputs."""
    liquidation_dims: bool = True
    """False when the dims leave out the liquidation axes (a default time)."""

    def dims(self, grid_dims: tuple[str, ...]) -> tuple[str, ...]:
        """The variable's dims in a cube whose scenario axes are ``grid_dims``."""
        dims = (
            grid_dims
            if self.liquidation_dims
            else tuple(d for d in grid_dims if d not in LIQUIDATION_PARAMS)
        )
        return dims + ((self.extra_dim,) if self.extra_dim else ())


OUTPUTS: dict[str, Output] = {
    o.name: o
    for o in (
        Output("loss", "USD", "credit loss summed over loans", "recovery"),
        Output("loss_pv", "USD", "credit loss discounted to t = 0 at discount_rate", "recovery"),
        Output("loss_rate", "1", "loss over total principal", "recovery"),
        Output("defaults", "1", "number of loans that defaulted", "path"),
        Output("default_rate", "1", "defaulted principal over total principal", "path"),
        Output(
            "first_default_years",
            "year",
            "time of the earliest default",
            "path",
            nan_when="no loan defaults",
        ),
        Output(
            "min_dscr",
            "1",
            "lowest DSCR of any loan up to its default or maturity",
            "path",
            nan_when="no period with debt service",
        ),
        Output(
            "recovery_rate",
            "1",
            "recovery over exposure at default of defaulted loans",
            "recovery",
            nan_when="no exposure at default",
        ),
        Output(
            "breakeven_spread_bps",
            "bp",
            "annual spread that only just pays for loss_pv",
            "recovery",
        ),
        Output(
            "loss_by_segment",
            "USD",
            "credit loss by portfolio segment",
            "recovery",
            extra_dim="segment",
        ),
        Output(
            "default_rate_by_trigger",
            "1",
            "defaulted principal over total principal, by the trigger that caused the default",
            "path",
            extra_dim="trigger",
        ),
        Output(
            "market_price_min",
            "1",
            "lowest secondary-market GPU price index over the horizon",
            "path",
        ),
        Output(
            "loan_default_years",
            "year",
            "time of each loan's default",
            "path",
            nan_when="the loan does not default",
            extra_dim="loan",
            per_loan=True,
            liquidation_dims=False,
        ),
        Output(
            "loan_loss",
            "USD",
            "credit loss of each loan",
            "recovery",
            extra_dim="loan",
            per_loan=True,
        ),
    )
}

#: Variables with one value per cell and no extra dim.
CELL_VARIABLES = tuple(name for name, o in OUTPUTS.items() if o.extra_dim is None)


def variables(per_loan: bool = False) -> tuple[str, ...]:
    """Names of the cube's data variables, per-loan ones included when asked for."""
    return tuple(name for name, o in OUTPUTS.items() if per_loan or not o.per_loan)


#: Variables that are never NaN: a NaN or infinity there means the arithmetic
#: broke down (inputs whose magnitudes overflow float64).
FINITE_VARIABLES = tuple(name for name, o in OUTPUTS.items() if o.nan_when is None)

__all__ = ["CELL_VARIABLES", "FINITE_VARIABLES", "OUTPUTS", "TRIGGERS", "Output", "variables"]
