"""Options, arguments and inputs that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import InputError, did_you_mean

#: Suffixes of the figures the commands write.
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def whole(value: Any) -> int:
    """A whole number, written as one likes it: ``1000000``, ``1e6``, ``1_000_000``."""
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number") from None
    if not number.is_integer():
        raise typer.BadParameter(f"{value!r} is not a whole number")
    return int(number)


def csv_option(what: str = "the table"):
    return typer.Option(None, "--csv", help=f"Also write {what} as CSV here (.csv).")


def at_option(help: str):
    """``--at NAME=VALUE``, repeatable; :func:`parse_point` reads it."""
    return typer.Option([], "--at", help=help)


MARGINALS_OPTION = typer.Option(
    None,
    "--marginals",
    help="YAML file mapping axes to scipy.stats distributions, e.g. "
    "'deflation: {dist: norm, loc: 0.3, scale: 0.15}' (default: docs/analysis.md).",
)
CUBE_ARGUMENT = typer.Argument(
    ..., metavar="CUBE", help="Cube written by gridstress run (.zarr or .nc)."
)


def parse_point(items: list[str]) -> dict[str, float]:
    """The scenario values given as ``--at NAME=VALUE``, each checked against its rule."""
    from ..params import SCENARIO_PARAMS

    point = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SCENARIO_PARAMS:
            hint = did_you_mean(name, SCENARIO_PARAMS) if sep else ""
            raise InputError(
                f"--at {item}: must be NAME=VALUE with NAME one of "
                + ", ".join(SCENARIO_PARAMS)
                + hint
            )
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"--at {item}: {value!r} must be a number") from None
        if broken := SCENARIO_PARAMS[name].rule.check(number):
            raise InputError(f"--at {item}: {name}={value} {broken}")
        point[name] = number
    return point


def read_marginals(path: Path | None) -> dict | None:
    """The distributions of ``--marginals``, or None for the defaults."""
    from ..config import load_marginals

    if path is not None and not path.exists():
        raise InputError(f"--marginals {path}: no such file")
    return load_marginals(path) if path is not None else None


def open_cube(path: Path):
    """The cube at ``path``, or an InputError that says what the path is instead."""
    from ..cube import open_cube as open_store

    try:
        return open_store(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None


def say_paths(ds) -> None:
    """One line on the scenario paths a cube was run on, when it was run on any."""
    from ..analysis.summary import cube_config
    from .display import describe_paths, out

    cfg = cube_config(ds)
    if cfg is not None and cfg.paths:
        out.print(
            f"{ds.attrs.get('name', 'cube')} was run on the paths " + describe_paths(cfg.paths)
        )


def run_config(path: Path):
    """A run config from a YAML file, or the config a cube embeds."""
    from ..config import load_config

    if (path.is_dir() and (path / "zarr.json").is_file()) or path.suffix.lower() == ".nc":
        from ..analysis.summary import cube_config

        with open_cube(path) as ds:
            cfg = cube_config(ds)
        if cfg is None:
            raise InputError(
                f"{path}: the cube embeds no run config of this model version; "
                "give the YAML run config instead"
            )
        return cfg
    return load_config(path)
