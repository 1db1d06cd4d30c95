"""gridstress: credit stress grids for loans against GPU fleets.

Public API: :func:`load_config`, :func:`run_grid`, :func:`write_cube`,
:func:`open_cube`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gridstress")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from .config import load_config  # noqa: E402
from .cube import open_cube  # noqa: E402
from .engine import run_grid, write_cube  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__", "load_config", "open_cube", "run_grid", "write_cube"]
