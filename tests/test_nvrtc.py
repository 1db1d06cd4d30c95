"""The CUDA source through NVRTC itself, without a GPU.

CuPy's ``RawModule`` hands NVRTC the kernels as one compilation unit
(:func:`gridstress.kernels.kernel_source`, the generated header inlined) with
:data:`gridstress.kernels.NVRTC_OPTIONS`, the build's defines
(:meth:`gridstress.kernels.Variant.compile_options`), the ``-ftz=true`` that
CuPy adds to every compile and the card's architecture.  Here the NVRTC of
the ``nvidia-cuda-nvrtc`` wheel (the ``test`` extra) compiles exactly that
for sm_90 (H100, H200) in the builds the driver makes for a set of blocks
that reaches each of its choices (every pair of their compile-time choices;
all of the builds in the ``slow`` test), so that a source NVRTC refuses
fails on any machine, not first on a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_config, random_loans

from gridstress import kernels as K
from gridstress.portfolio import portfolio_arrays

#: What CuPy's compile adds to a RawModule's options (cupy/cuda/compiler.py),
#: and the card: Hopper, as the driver finds it on an H100 or H200.
CUPY_OPTIONS = ("-ftz=true",)
ARCH = "--gpu-architecture=sm_90"
#: The kernels the driver gets from each module.
KERNELS = (K.KERNEL_NAME, K.RECOVER_NAME, K.TABLES_NAME, K.MARKET_NAME)


@dataclass(frozen=True)
class Compiled:
    """What NVRTC made of a source: whether it compiled, its log and the PTX."""

    ok: bool
    log: str
    ptx: str


class Nvrtc:
    """The NVRTC library through ctypes (nvrtc.h)."""

    def __init__(self, library: Path):
        lib = ctypes.CDLL(str(library))
        handle = ctypes.POINTER(ctypes.c_void_p)
        strings = ctypes.POINTER(ctypes.c_char_p)
        size = ctypes.POINTER(ctypes.c_size_t)
        for name, args in {
            "nvrtcVersion": [ctypes.POINTER(ctypes.c_int)] * 2,
            "nvrtcCreateProgram": [
                handle,
                ctypes.c_char_p,
                ctypes.c_char_p,
                ctypes.c_int,
                strings,
                strings,
            ],
            "nvrtcCompileProgram": [ctypes.c_void_p, ctypes.c_int, strings],
            "nvrtcGetProgramLogSize": [ctypes.c_void_p, size],
            "nvrtcGetProgramLog": [ctypes.c_void_p, ctypes.c_char_p],
            "nvrtcGetPTXSize": [ctypes.c_void_p, size],
            "nvrtcGetPTX": [ctypes.c_void_p, ctypes.c_char_p],
            "nvrtcDestroyProgram": [handle],
        }.items():
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = ctypes.c_int
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        self.lib = lib

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        return major.value, minor.value

    def _check(self, result: int) -> None:
        if result != 0:
            raise RuntimeError(f"NVRTC: {self.lib.nvrtcGetErrorString(result).decode()}")

    def compile(self, source: str, options: tuple[str, ...], name: str = "gridstress.cu"):
        """``source`` compiled with ``options``: :class:`Compiled`."""
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), name.encode(), 0, None, None
            )
        )
        try:
            argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            result = self.lib.nvrtcCompileProgram(prog, len(options), argv)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, log))
            ptx = b""
            if result == 0:
                self._check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size)))
                buffer = ctypes.create_string_buffer(size.value)
                self._check(self.lib.nvrtcGetPTX(prog, buffer))
                ptx = buffer.value
            return Compiled(result == 0, log.value.decode(errors="replace"), ptx.decode())
        finally:
            self._check(self.lib.nvrtcDestroyProgram(ctypes.byref(prog)))


@pytest.fixture(scope="module")
def nvrtc() -> Nvrtc:
    """NVRTC from the nvidia-cuda-nvrtc wheel (CUDA 13)."""
    try:
        spec = importlib.util.find_spec("nvidia.cu13")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the nvidia-cuda-nvrtc wheel (pip install -e '.[test]') is not installed")
    library = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libnvrtc.so.13"
    assert library.is_file(), f"the nvidia-cuda-nvrtc wheel has no {library}"
    compiler = Nvrtc(library)
    assert compiler.version() >= (13, 0)
    return compiler


def _options(variant: K.Variant) -> tuple[str, ...]:
    """The options NVRTC gets for a build: the driver's (kernel_function), CuPy's, the card's."""
    return K.NVRTC_OPTIONS + variant.compile_options() + CUPY_OPTIONS + (ARCH,)


#: Blocks that reach each of the driver's choices, as (grid, fixed scenario):
#: one pass with 1 and 8 recovery cells per thread, two stages (records,
#: then the recovery kernel), the market step, more segments than registers
#: hold.
BLOCKS = {
    "deep market, one haircut": (
        {"deflation": [0.1, 0.3], "crypto_drawdown": [0.0, 0.5], "haircut": [0.3]},
        {"market_depth_gpus": float("inf")},
    ),
    "deep market, eight haircuts": (
        {"deflation": [0.1], "crypto_drawdown": [0.0], "haircut": [i / 10 for i in range(8)]},
        {"market_depth_gpus": float("inf")},
    ),
    "deep market, two stages": (
        {"deflation": [0.1], "crypto_drawdown": [0.0], "haircut": [i / 40 for i in range(31)]},
        {"market_depth_gpus": float("inf")},
    ),
    "market step": (
        {"deflation": [0.1, 0.3], "crypto_drawdown": [0.0, 0.5], "haircut": [0.0, 0.3, 0.6]},
        {"market_depth_gpus": 2e4},
    ),
}
#: Model v3's scenario shapes: (paths given, fixed scenario).
SHAPES = {
    "v2": ((), {}),
    "rent path": (("rent_path",), {}),
    "crypto path": (("crypto_path",), {}),
    "shock and market appraisal, both paths": (
        ("rent_path", "crypto_path"),
        {"generation_shock": 0.3, "appraisal_deflation": 0.2},
    ),
}


def driver_builds() -> list[K.Variant]:
    """Every build :func:`gridstress.kernels.kernel_plan` chooses for the blocks
    of :data:`BLOCKS` in each of :data:`SHAPES`, with and without per-loan
    results, few and many segments, and a register cap."""
    import numpy as np

    builds: list[K.Variant] = []
    for segments in (3, 11):
        loans = random_loans(np.random.default_rng(5), 12)
        for i, loan in enumerate(loans):
            loan["segment"] = f"s{i % segments}"
        cfg = make_config(loans)
        pf = portfolio_arrays(cfg.loans, cfg.periods_per_year)
        for grid, scenario in BLOCKS.values():
            axes = {name: np.asarray(values) for name, values in grid.items()}
            for paths, shape in SHAPES.values():
                layout = K.block_layout(axes, {**cfg.scenario, **scenario, **shape})
                for per_loan in (False, True):
                    for cap in (0, 128):
                        settings = K.KernelSettings(path_max_registers=cap)
                        plan = K.kernel_plan(pf, layout, settings, per_loan, paths)
                        for launch in plan.launches(pf, layout, {}):
                            if launch.variant not in builds:
                                builds.append(launch.variant)
    return builds


def _choices(build: K.Variant) -> tuple[tuple[str, str], ...]:
    """A build's compile-time choices: each define's value, and the register cap."""
    defines = tuple(tuple(d.removeprefix("-D").split("=")) for d in build.defines())
    return defines + (("maxrregcount", str(build.max_registers)),)


def pairwise_builds(builds: list[K.Variant]) -> list[K.Variant]:
    """Few of ``builds`` that hold every pair of choices any of them makes
    (greedily: the build with the most pairs not yet held, until none is left)."""

    def pairs(build: K.Variant) -> set:
        return set(itertools.combinations(_choices(build), 2))

    left = set().union(*map(pairs, builds))
    chosen = []
    while left:
        best = max(builds, key=lambda b: len(pairs(b) & left))
        chosen.append(best)
        left -= pairs(best)
    return chosen


def _compile_all(nvrtc: Nvrtc, builds: list[K.Variant]) -> None:
    source = K.kernel_source()
    assert '#include "' not in source  # one compilation unit, as RawModule gets it
    failed = []
    for build in builds:
        out = nvrtc.compile(source, _options(build))
        if not out.ok:
            failed.append(f"{' '.join(_options(build))}:\n{out.log}")
            continue
        assert ".target sm_90" in out.ptx
        for kernel in KERNELS:
            assert f".entry {kernel}(" in out.ptx, (kernel, build)
    assert not failed, "NVRTC refused the kernel source:\n" + "\n".join(failed)


def test_the_builds_reach_every_compile_time_parameter_of_the_source():
    # Every GS_* the source lets a build set (#ifndef GS_X / #define GS_X) is
    # among a build's defines, with each of its values the driver uses.
    settable = set(re.findall(r"^#ifndef (GS_\w+)\n#define \1 ", K.kernel_source(), re.MULTILINE))
    builds = driver_builds()
    values: dict[str, set[str]] = {}
    for build in builds:
        for define in build.defines():
            name, value = define.removeprefix("-D").split("=")
            values.setdefault(name, set()).add(value)
    assert set(values) == settable
    assert values["GS_RENT_SHAPE"] == values["GS_CRYPTO_PATH"] == {"0", "1"}
    assert values["GS_RECORDS"] == values["GS_PER_LOAN"] == {"0", "1"}
    assert {"0", "3"} <= values["GS_NSEG_REG"] and {"1", "2", "8"} <= values["GS_QT"]
    assert any(b.max_registers for b in builds)


def test_nvrtc_compiles_the_driver_builds_for_hopper(nvrtc):
    # Every pair of the driver's compile-time choices, in a dozen or so builds.
    builds = driver_builds()
    chosen = pairwise_builds(builds)
    assert len(chosen) < len(builds) / 4
    _compile_all(nvrtc, chosen)


@pytest.mark.slow
def test_nvrtc_compiles_every_build_the_driver_uses_for_hopper(nvrtc):
    _compile_all(nvrtc, driver_builds())


def test_a_source_nvrtc_refuses_fails_with_its_log(nvrtc):
    # The check above can fail: a syntax error in the header is refused, and
    # the log names it.
    source = K.kernel_source().replace("struct GsArgs {", "struct GsArgs {{", 1)
    out = nvrtc.compile(source, _options(K.Variant()))
    assert not out.ok and not out.ptx
    assert "error" in out.log and "gridstress.cu" in out.log
