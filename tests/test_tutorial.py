"""docs/tutorial.ipynb runs from top to bottom, and prints what it shows.

The notebook is stored with its outputs, so that it reads as a document; this
test executes it afresh (nbclient, a real Jupyter kernel) and compares every
printed output with the stored one, so neither the code nor the figures it
quotes can go stale.  ``make tutorial`` (this file run as a script)
executes it in place after a change.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def printed(cell) -> list[str]:
    """The text a code cell printed on each stream, then what it returned or
    displayed (figures by their text form)."""
    streams: dict[str, str] = {}
    out = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            streams[output["name"]] = streams.get(output["name"], "") + output["text"]
        elif output["output_type"] in ("execute_result", "display_data"):
            out.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            out.append(f"{output['ename']}: {output['evalue']}")
    return [f"{name}: {text}" for name, text in sorted(streams.items())] + out


def figures(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def execute(notebook):
    """Run every cell of ``notebook`` in a fresh kernel, in docs/ (its outputs replaced)."""
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(TUTORIAL.parent)}},
    ).execute()
    return notebook


@pytest.fixture(scope="module")
def executed():
    stored = nbformat.read(TUTORIAL, as_version=4)
    return stored, execute(nbformat.read(TUTORIAL, as_version=4))


def test_tutorial_runs_and_prints_what_it_stores(executed):
    stored, fresh = executed
    code = [(s, f) for s, f in zip(stored.cells, fresh.cells) if s.cell_type == "code"]
    assert code, "the tutorial has no code"
    for i, (s, f) in enumerate(code):
        assert printed(f) == printed(s), f"code cell {i} prints something else now"
        assert figures(f) == figures(s), f"code cell {i} draws {figures(f)} figure(s)"


def test_tutorial_covers_what_it_promises(executed):
    _, fresh = executed
    source = "\n".join(c.source for c in fresh.cells if c.cell_type == "code")
    for needed in ("write_cube(", "open_cube(", ".plot(", "compare(", "per_loan=True"):
        assert needed in source
    assert sum(figures(c) for c in fresh.cells) >= 2
    text = "".join("".join(printed(c)) for c in fresh.cells)
    assert "central scenario" in text and "MN-CONVERT-B200" in text


if __name__ == "__main__":
    nbformat.write(execute(nbformat.read(TUTORIAL, as_version=4)), TUTORIAL)
