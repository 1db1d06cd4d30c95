"""``gridstress bench``: the engines timed on one grid.

A command's help is its entry in :data:`gridstress.cli.COMMANDS`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ..terminal import check_output
from .display import err, out
from .options import whole


def bench(
    cells: int = typer.Option(
        1_000_000,
        parser=whole,
        help="Cells of the generated grid "
        "(one haircut value unless --haircuts), when no --config is "
        "given.",
    ),
    loans: int = typer.Option(100, parser=whole, help="Random loans in the portfolio."),
    backend: str = typer.Option(
        "auto",
        help="numpy: time the NumPy backend only; cupy: the xp model on CuPy and "
        "the fused kernel; auto: all three where a GPU is present.",
    ),
    config: Path | None = typer.Option(
        None,
        help="Take the grid and scenario of this run config (its portfolio is "
        "replaced by the random loans).",
    ),
    haircuts: int = typer.Option(1, parser=whole, help="Haircut values of the generated grid."),
    seed: int = typer.Option(0, parser=whole, help="Seed of the random portfolio."),
    engines: str | None = typer.Option(
        None, help="Comma-separated subset of numpy,cupy-xp,fused (overrides --backend)."
    ),
    model: str = typer.Option(
        "v1",
        help="v1: the loans and scenario with model v1's settings (a deep market); "
        "v2: the v2 defaults, market step active.",
    ),
    compile_times: bool = typer.Option(
        True, help="Also time the kernel's first start (empty cache) and warm start."
    ),
    out_path: Path | None = typer.Option(
        None, "--out", "-o", help="Write the results as JSON here (.json)."
    ),
) -> None:
    from ..backend import cupy_or_reason, resolve_backend
    from ..bench import ENGINES, MODELS, run_bench, write_results

    check_output(out_path, (".json",), "--out")
    if model not in MODELS:
        raise InputError(f"--model {model}: must be one of {', '.join(MODELS)}")
    chosen: tuple[str, ...] | None = None
    wanted = backend
    if engines is not None:
        chosen = tuple(e.strip() for e in engines.split(",") if e.strip())
        unknown = [e for e in chosen if e not in ENGINES]
        if unknown or not chosen:
            raise InputError(f"--engines {engines}: each must be one of {', '.join(ENGINES)}")
        wanted = "cupy" if any(e != "numpy" for e in chosen) else "numpy"
    small = [
        f"--{name} {value}"
        for name, value in (("cells", cells), ("loans", loans), ("haircuts", haircuts))
        if value < 1
    ]
    if small:
        raise InputError([f"{option}: must be >= 1" for option in small])
    if chosen is not None and wanted == "cupy":
        cupy, reason = cupy_or_reason()
        if cupy is None:
            raise InputError(
                f"--engines {engines}: needs CuPy and a GPU, which cannot run here: {reason}"
            )
    resolved = resolve_backend(wanted)
    if chosen is None:
        chosen = (
            ("numpy",)
            if resolved.name == "numpy"
            else (("cupy-xp", "fused") if backend == "cupy" else ENGINES)
        )
    if resolved.note:
        err.print(resolved.note)
    results = run_bench(
        loans,
        cells,
        config,
        chosen,
        seed,
        haircuts,
        log=out.print,
        compile_timing=compile_times,
        model=model,
    )
    if out_path is not None:
        out.print(f"results: {write_results(results, out_path)}")
