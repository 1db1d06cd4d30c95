"""Choosing the array backend once, at the edge.

``resolve_backend("auto" | "numpy" | "cupy")`` returns a :class:`Backend`
holding the array module, a device description and, for ``auto`` on a
machine without a usable GPU, the reason it fell back to NumPy.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .errors import BackendUnavailable

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    device: str
    note: str | None = None

    def to_host(self, array) -> np.ndarray:
        if self.xp is np:
            return np.asarray(array)
        return self.xp.asnumpy(array)


def _cpu_name() -> str:
    """The CPU model, e.g. ``CPU (AMD EPYC 9B14, 2 cores)``."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({model}, {os.cpu_count()} cores)"


def cupy_or_reason() -> tuple[ModuleType | None, str]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"no CUDA device is usable ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "no CUDA device is present"
    return cupy, ""


def cupy_device_name(cupy) -> str:
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def resolve_backend(name: str = "auto") -> Backend:
    """The backend to run on; raises BackendUnavailable for ``cupy`` without a GPU."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"--backend {name}: must be one of {', '.join(BACKENDS)}")
    if name == "numpy":
        return Backend("numpy", np, _cpu_name())
    cupy, reason = cupy_or_reason()
    if cupy is None:
        if name == "cupy":
            raise BackendUnavailable(f"--backend cupy cannot run here: {reason}")
        return Backend("numpy", np, _cpu_name(), note=f"using NumPy on the CPU: {reason}")
    return Backend("cupy", cupy, cupy_device_name(cupy))
