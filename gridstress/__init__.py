"""gridstress: credit stress grids for loans against GPU fleets.

Public API: :func:`load_config`, :func:`run_grid`, :func:`write_cube`,
:func:`open_cube`, :class:`InputError`.  They are imported on first use, so
that ``import gridstress`` (and the model path below it) loads no file
reader, array library or cluster client it does not need.
"""

from importlib import import_module
from typing import Any

#: Where each name of the public API lives.
_API = {
    "load_config": "config",
    "open_cube": "cube",
    "run_grid": "engine",
    "write_cube": "engine",
    "InputError": "errors",
}

__all__ = ["InputError", "__version__", "load_config", "open_cube", "run_grid", "write_cube"]


def _version() -> str:
    """The installed distribution's version (importlib.metadata is read on first use)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gridstress")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'gridstress' has no attribute {name!r}")
