"""Errors that the CLI turns into exit statuses."""

from __future__ import annotations


class InputError(ValueError):
    """Invalid config or portfolio: exit status 2, nothing written.

    ``problems`` holds one line per broken rule, each naming the file, the
    row or key, the value and the rule.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class BackendUnavailable(InputError):
    """The backend asked for cannot run here (exit status 2)."""


class ModelError(RuntimeError):
    """The model failed on some cells (exit status 1).

    The message names the block's cells, the first cell with a value that
    cannot be right and, where one loan alone gives it, that loan.
    """


class ClusterError(RuntimeError):
    """The Dask cluster could not run the grid (exit status 1)."""
