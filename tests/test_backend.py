"""Backend choice (CPU side) and parity of the xp model on CuPy (gpu marker)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HAVE_GPU

from gridstress.backend import resolve_backend
from gridstress.errors import BackendUnavailable


def test_numpy_backend():
    b = resolve_backend("numpy")
    assert b.name == "numpy" and b.xp is np and b.note is None and b.device.startswith("CPU")


def test_unknown_backend_is_refused():
    with pytest.raises(BackendUnavailable, match="must be one of auto, numpy, cupy"):
        resolve_backend("tpu")


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU")
def test_auto_falls_back_to_numpy_with_a_reason():
    b = resolve_backend("auto")
    assert b.name == "numpy"
    assert b.note and b.note.startswith("using NumPy on the CPU: ")
    with pytest.raises(BackendUnavailable, match="--backend cupy cannot run here"):
        resolve_backend("cupy")
