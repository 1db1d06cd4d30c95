"""The part of CuPy that :class:`gridstress.kernels.FusedGrid` uses, over NumPy
and the host build of the kernels: runs the GPU backend's own orchestration
(launch plan, argument blocks, launches, reordering, slab copies, the
out-of-memory split) on a machine without a GPU.

Device arrays are NumPy arrays whose ``.data.ptr`` is their address; a
``RawModule`` compiles ``kernels/host.cpp`` with the module's defines and
its functions run the launch's thread blocks one after another
(``gs_grid_host``, ``gs_recover_host``, and the market step's
``gs_tables_host`` and ``gs_market_host``).  Everything runs at once, in
order, so the streams and events only record what was asked of them.
``memory_limit`` makes any allocation larger than it raise
``OutOfMemoryError``, as a full GPU does.
"""

from __future__ import annotations

import ctypes
import itertools
import types
from pathlib import Path

import numpy as np

from gridstress import kernels as K


class _Memory:
    def __init__(self, ptr: int):
        self.ptr = ptr


class DeviceArray(np.ndarray):
    """A host array standing in for ``cupy.ndarray``."""

    @property
    def data(self):  # cupy.ndarray.data.ptr: the address of the first element
        return _Memory(self.ctypes.data)


class OutOfMemoryError(MemoryError):
    pass


class HostCupy:
    """A module-like object with the CuPy names FusedGrid calls."""

    _instances = itertools.count()

    def __init__(self, build_folder: Path, cxx: str = "g++", memory_limit: int | None = None):
        # kernels.kernel_function keys its compiled modules by the module's
        # name: each stand-in gets its own modules (they log its launches).
        self.__name__ = f"hostcupy-{next(self._instances)}"
        self.folder = Path(build_folder)
        self.cxx = cxx
        self.memory_limit = memory_limit
        self.launches: list[tuple[str, int, int, int]] = []  # name, a_begin, a_end, blocks
        self.builds: set[tuple[str, K.Variant]] = set()  # (kernel, build) of every launch
        self.allocations = 0
        self.sizes: dict[int, int] = {}  # bytes of each device array, by address
        host = self

        class Stream:
            ptr = 0

            def __init__(self, non_blocking: bool = False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def record(self):
                return Event()

            def wait_event(self, event):
                pass

            def synchronize(self):
                pass

        class Event:
            def record(self):
                pass

        class Device:
            id = 0

        class Pool:
            def free_all_blocks(self):
                pass

        def memcpy_async(dst, src, nbytes, kind, stream):
            ctypes.memmove(dst, src, nbytes)

        def elapsed_ms(start, stop):
            return 0.25

        self.cuda = types.SimpleNamespace(
            Stream=Stream,
            Event=Event,
            Device=Device,
            get_elapsed_time=elapsed_ms,
            memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
            runtime=types.SimpleNamespace(
                deviceSynchronize=lambda: None, memcpyAsync=memcpy_async, memcpyDeviceToHost=2
            ),
        )
        self._pool = Pool()

        class RawModule:
            def __init__(self, code: str, options: tuple[str, ...]):
                assert code == K.kernel_source() and "--fmad=false" in options
                d = dict(o[2:].split("=") for o in options if o.startswith("-D"))
                self.variant = K.Variant(
                    int(d["GS_QT"]),
                    int(d["GS_NSEG_REG"]),
                    bool(int(d["GS_RECORDS"])),
                    bool(int(d["GS_PER_LOAN"])),
                    rent_shape=bool(int(d["GS_RENT_SHAPE"])),
                    crypto_path=bool(int(d["GS_CRYPTO_PATH"])),
                )
                self.lib = ctypes.CDLL(
                    str(K.build_host_library(host.cxx, host.folder, self.variant))
                )
                for name in (
                    "gs_shared_bytes",
                    "gs_recover_shared_bytes",
                    "gs_recover_blocks_host",
                    "gs_market_table_doubles_host",
                    "gs_tables_shared_bytes",
                ):
                    getattr(self.lib, name).restype = ctypes.c_long

            def get_function(self, name: str):
                return lambda grid, block, args, shared_mem=0: host._run(
                    self, name, grid, block, args, shared_mem
                )

        self.RawModule = RawModule

    # -- arrays --
    def _device(self, array: np.ndarray) -> DeviceArray:
        if self.memory_limit is not None and array.nbytes > self.memory_limit:
            raise OutOfMemoryError(f"{array.nbytes} bytes requested")
        self.allocations += 1
        out = np.array(array, copy=True).view(DeviceArray)
        self.sizes[out.ctypes.data] = out.nbytes
        return out

    def asarray(self, array) -> DeviceArray:
        return self._device(np.ascontiguousarray(array))

    def empty(self, shape, dtype=np.float64) -> DeviceArray:
        # Poisoned, so that what no kernel writes shows.
        return self._device(np.full(shape, np.nan, dtype=dtype))

    def zeros(self, shape, dtype=np.float64) -> DeviceArray:
        return self._device(np.zeros(shape, dtype=dtype))

    def full(self, shape, value, dtype=np.float64) -> DeviceArray:
        return self._device(np.full(shape, value, dtype=dtype))

    def asnumpy(self, array) -> np.ndarray:
        return np.array(array).view(np.ndarray)

    moveaxis = staticmethod(np.moveaxis)
    ascontiguousarray = staticmethod(np.ascontiguousarray)

    def get_default_memory_pool(self):
        return self._pool

    # -- launches --
    def _run(self, module, name: str, grid, block, args, shared_mem: int) -> None:
        (arg,) = args
        ptr = ctypes.c_void_p(arg.data.ptr)
        g = np.frombuffer(np.asarray(arg).tobytes(), dtype=K.ARGS_DTYPE)[0]
        # Expected-rent factors only where a build has the code that reads them.
        assert int(g["JA"]) in (0, int(g["J"])) and (int(g["JA"]) == 0 or module.variant.rent_shape)
        if name == K.KERNEL_NAME:
            need = module.lib.gs_shared_bytes(ptr)
            assert shared_mem >= need, (shared_mem, need)
            assert shared_mem <= K.SHARED_BYTES
            rc = module.lib.gs_grid_host(ptr, ctypes.c_long(grid[0]), ctypes.c_int(block[0]))
        elif name in (K.TABLES_NAME, K.MARKET_NAME):
            assert int(g["rec_begin"]) == int(g["a_begin"]) < int(g["a_end"]) == int(g["rec_end"])
            # The tables and loan states this launch uses fit their buffers.
            tables = 8 * module.lib.gs_market_table_doubles_host(ptr)
            assert tables <= self.sizes[int(g["tables"])], (tables, self.sizes[int(g["tables"])])
            states = 8 * K.STATE_FIELDS * int(g["n_loans"]) * (int(g["a_end"]) - int(g["a_begin"]))
            assert states * int(g["B"]) <= self.sizes[int(g["records"])]
            cells = (int(g["a_end"]) - int(g["a_begin"])) * (
                1 if name == K.TABLES_NAME else int(g["B"])
            )
            per_block = 1 if name == K.TABLES_NAME else block[0]
            assert (grid[0] - 1) * per_block < cells <= grid[0] * per_block  # every cell, once
            if name == K.TABLES_NAME:
                # The rent index, and the expected-rent factors of a market appraisal.
                need = module.lib.gs_tables_shared_bytes(ptr)
                assert shared_mem == need == 8 * (int(g["J"]) + int(g["JA"])) <= K.SHARED_BYTES
            run = getattr(module.lib, f"{name}_host")
            rc = run(ptr, ctypes.c_long(grid[0]), ctypes.c_int(block[0]))
        else:
            assert name == K.RECOVER_NAME
            assert grid[0] == module.lib.gs_recover_blocks_host(ptr)
            assert block[0] >= int(g["rb"]) * int(g["rq"]) and block[0] % 32 == 0
            need = module.lib.gs_recover_shared_bytes(ptr)
            assert need <= shared_mem <= K.SHARED_BYTES, (shared_mem, need)
            assert int(g["rec_begin"]) <= int(g["a_begin"]) < int(g["a_end"]) <= int(g["rec_end"])
            rc = module.lib.gs_recover_host(ptr, ctypes.c_long(grid[0]), ctypes.c_int(block[0]))
        assert rc == 0
        self.builds.add((name, module.variant))
        self.launches.append((name, int(g["a_begin"]), int(g["a_end"]), int(grid[0])))


def pinned(cp, shape):
    """Stands in for ``driver._pinned`` (page-locked host memory)."""
    return np.empty(shape)
