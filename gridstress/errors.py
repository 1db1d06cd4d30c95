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


def did_you_mean(name: str, names, cutoff: float = 0.6) -> str:
    """`` (did you mean X?)`` with the nearest of ``names`` to a mistyped ``name``
    (the same name in another case first), or ``""`` when none is near."""
    import difflib

    names = [str(n) for n in names]
    same = [n for n in names if n.lower() == str(name).lower()]
    near = (
        same
        or difflib.get_close_matches(str(name), names, n=1, cutoff=cutoff)
        or difflib.get_close_matches(
            str(name).lower(), [n.lower() for n in names], n=1, cutoff=cutoff
        )
    )
    if near and near[0] not in names:  # matched in lower case: the name as written
        near = [n for n in names if n.lower() == near[0]]
    return f" (did you mean {near[0]}?)" if near else ""
