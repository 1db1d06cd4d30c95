"""Analyses of a cube: pure functions over ``xarray.Dataset``."""

from .headline import Headline, headline, scenario_point

__all__ = ["Headline", "headline", "scenario_point"]
