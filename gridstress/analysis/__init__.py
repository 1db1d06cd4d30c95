"""Analyses of a cube: pure functions over ``xarray.Dataset``.

Submodules are imported on use (``from gridstress.analysis.frontier import
frontier``), so that importing the package loads neither xarray nor matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Headline", "headline", "scenario_point"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import headline as module

        return getattr(module, name)
    raise AttributeError(name)
