"""The partial Zarr store of a run: created, filled block by block, finished.

A run writes into ``<out>.partial``: each block into its own chunks, then
its done mark, so an interrupted run keeps every finished block and
``resume`` computes only the rest.  When every block is in, the store is
renamed to ``<out>`` (or converted to NetCDF for a ``.nc`` output).  The
synchronous path and the Dask workers write through the same functions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from .cube import consolidate, empty_zarr, open_cube, write_block, write_netcdf_from_zarr
from .errors import InputError
from .grid import Block, BlockPlan
from .inputs import RunConfig
from .prepared import PreparedRun, backend_attrs

if TYPE_CHECKING:
    from concurrent.futures import Future

    from zarr.types import AnyArray

#: The store's array of done marks, one per block.
DONE = "gridstress_progress"


def partial_path(out: Path) -> Path:
    """Where an unfinished run keeps its blocks (a Zarr store)."""
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    """The lock file of the run writing the cube at ``out``."""
    return out.with_name(out.name + ".lock")


class StoreLock:
    """The one run allowed to write a cube and its partial store.

    An exclusive ``flock`` on ``<out>.lock``, held while the run plans,
    computes and finishes, and released on any exit: by :meth:`release`, or
    by the operating system when the process dies, so the lock of a dead
    run is taken over by the next one without a word.  The file holds a
    line naming the run that holds it (process, host, start time), which a
    refused run quotes.
    """

    def __init__(self, out: Path):
        self.path = lock_path(out)
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 512).decode(errors="replace").strip() or "another run"
                os.close(fd)
                out = self.path.with_name(self.path.name.removesuffix(".lock"))
                raise InputError(
                    f"--out {out}: {holder} is writing this cube; wait for it to end, "
                    "or stop it and run again with --resume"
                ) from None
            # A run that released the lock between our open and flock removed
            # the file: ours is then a lock on nothing, so start again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode())
        return self

    def release(self) -> None:
        """Give the lock up and remove its file (at most once)."""
        import os

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _holder() -> str:
    """This run, as a refused run names it, e.g. ``gridstress run (pid 4242 on
    node-7, started 2026-12-05 09:14:03)``."""
    import datetime as dt
    import os
    import socket

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"gridstress run (pid {os.getpid()} on {socket.gethostname()}, started {started})\n"


def create_store(store: Path, run: PreparedRun, used: set[tuple[str, ...]]) -> None:
    """A new partial store for ``run``: empty variables, attrs, no block done.

    ``used`` holds the (backend, device[, engine]) of what will compute the blocks.
    """
    if store.exists():
        shutil.rmtree(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    attrs = run.attrs() | backend_attrs(used) | {"block_chunks": list(run.plan.chunks)}
    loan_ids = run.portfolio.loan_id if run.config.per_loan else ()
    empty_zarr(store, run.config, run.plan, attrs, run.portfolio.segments, loan_ids)
    done_marks(store, len(run.plan))


def store_block(
    store: Path, config: RunConfig, block: Block, results: dict[str, np.ndarray]
) -> None:
    """Write a block into its region of the store, then set its done mark.

    The mark is set only once the data is on disk, so a block cut off while
    being written is computed again by ``resume``.
    """
    write_block(store, config, block, results)
    done_marks(store)[block.index] = 1


def done_marks(store: Path, n_blocks: int | None = None):
    """The store's done marks; with ``n_blocks``, created (all 0)."""
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    if n_blocks is None:
        return group[DONE]
    return group.create_array(DONE, shape=(n_blocks,), chunks=(1,), dtype="uint8", fill_value=0)


def stored_hashes(path: Path) -> tuple[str, str] | None:
    """(config_sha256, portfolio_sha256) of a cube or partial store at ``path``;
    None when it is not one."""
    try:
        if path.is_dir():
            import zarr

            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        else:
            with open_cube(path) as ds:
                attrs = dict(ds.attrs)
    except Exception:  # not a store or a file xarray reads: not a cube
        return None
    if "config_sha256" not in attrs or "model_version" not in attrs:
        return None
    return str(attrs["config_sha256"]), str(attrs.get("portfolio_sha256"))


def _differs(hashes: tuple[str, str], run: PreparedRun) -> str:
    """What differs between a stored run and ``run`` ('' when nothing does), e.g.
    ``portfolio changed (portfolio_sha256 3e2b2c36d617 there, 5f1a... now)``."""
    now = (run.config.config_sha256, run.config.portfolio_sha256)
    changed = [
        (what, old, new)
        for what, old, new in zip(("config", "portfolio"), hashes, now)
        if old != new
    ]
    if not changed:
        return ""
    names = " and the ".join(what for what, _, _ in changed)
    detail = "; ".join(
        f"{what}_sha256 {old[:12]} there, {new[:12]} now" for what, old, new in changed
    )
    return f"{names} changed ({detail})"


def check_resumable(store: Path, run: PreparedRun) -> BlockPlan:
    """The block plan of an interrupted run of the same config and portfolio."""
    import zarr

    hashes = stored_hashes(store)
    if hashes is None:
        raise InputError(
            f"{store}: cannot resume, the partial cube is unreadable; --overwrite starts again"
        )
    changed = _differs(hashes, run)
    if changed:
        raise InputError(
            f"{store}: cannot resume: the {changed} since the interrupted run; "
            "run without --resume and with --overwrite to start again"
        )
    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    # written by create_store as a list of ints
    chunks = cast("list[int]", attrs["block_chunks"])
    return BlockPlan(run.plan.shape, tuple(int(c) for c in chunks))


def check_output_path(out: Path, run: PreparedRun | None = None, overwrite: bool = False) -> None:
    """Refuse to replace anything at ``out`` but a cube of the same run.

    A cube of another config or portfolio is replaced only with
    ``overwrite``; anything that is not a cube never is.
    """
    if not out.exists():
        return
    hashes = stored_hashes(out)
    if hashes is None:
        raise InputError(
            f"--out {out}: exists and is not a gridstress cube; remove it or choose another path"
        )
    changed = _differs(hashes, run) if run is not None else ""
    if changed and not overwrite:
        raise InputError(
            f"--out {out}: holds a cube of another run (the {changed}); "
            "--overwrite replaces it, or choose another path"
        )


def check_partial(store: Path, run: PreparedRun, overwrite: bool) -> None:
    """Refuse to discard the finished blocks of an unfinished run at ``store``
    (a new run without ``--resume``) unless ``overwrite``; one of the same run
    that finished no block holds nothing to lose and is started again."""
    if overwrite or not store.exists():
        return
    hashes = stored_hashes(store)
    if hashes is not None and not _differs(hashes, run):
        kept = blocks_done(store.with_name(store.name.removesuffix(".partial")))
        if not kept:
            return
        raise InputError(
            f"{store}: holds {kept or 0} finished block(s) of an interrupted run "
            "of this config: --resume finishes it, --overwrite starts again"
        )
    raise InputError(
        f"{store}: holds an unfinished run of another config or portfolio; --overwrite discards it"
    )


def finish_store(store: Path, out: Path, used: set[tuple[str, ...]]) -> Path:
    """Record what computed the blocks, drop the marks, and put the cube at ``out``.

    ``out`` ending in ``.nc`` gets a NetCDF-4 file, anything else the Zarr
    store itself (renamed, so the cube appears whole or not at all).
    """
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update(backend_attrs(used, dict(group.attrs)))
    del group[DONE]
    del group.attrs["block_chunks"]
    consolidate(store)
    if out.suffix.lower() == ".nc":
        tmp = out.with_name(out.name + ".partial.nc")
        try:
            write_netcdf_from_zarr(store, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out)
        shutil.rmtree(store)
    else:
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        store.rename(out)
    return out


def blocks_done(out: str | Path) -> int | None:
    """Blocks already on disk for an interrupted run at ``out`` (None if none)."""
    store = partial_path(Path(out))
    if not store.exists():
        return None
    try:
        return int(np.asarray(done_marks(store)[:]).sum())
    except Exception:
        return None


def read_block(store: Path, block: Block, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The stored values of variables ``names`` (of the grid's dims only) in a block."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    # variables of the cube: arrays, never groups
    return {name: np.asarray(cast("AnyArray", group[name])[block.slices]) for name in names}


class BlockWriter:
    """Writes blocks into the store on a thread of its own, one at a time, so
    that a block is written while the next one computes.

    ``write(block, results)`` waits for the previous write, then starts this
    one; ``finish()`` waits for the last.  ``written(block)`` is called in
    the caller's thread once a block and its done mark are on disk.  At most
    one write is in flight, so results the engine hands over without a copy
    (the GPU's transfer buffers, valid until the call after next) are written
    before they are reused.
    """

    def __init__(self, store: Path, config: RunConfig, written=None):
        from concurrent.futures import ThreadPoolExecutor

        self.store, self.config, self.written = store, config, written
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridstress-writer")
        self._pending: tuple[Block, Future[None]] | None = None

    def write(self, block: Block, results: dict[str, np.ndarray]) -> None:
        self.wait()
        self._pending = (
            block,
            self._pool.submit(store_block, self.store, self.config, block, results),
        )

    def wait(self) -> None:
        """Wait for the write in flight (its error, if any, is raised here)."""
        if self._pending is not None:
            block, future = self._pending
            self._pending = None
            future.result()
            if self.written is not None:
                self.written(block)

    def finish(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.finish()
            return
        # Interrupted or failed: let the write in flight end (its block is then
        # complete and marked), but raise what stopped the run.
        try:
            self.wait()
        except Exception:
            pass
        finally:
            self._pool.shutdown(wait=True)


__all__ = [
    "DONE",
    "BlockWriter",
    "StoreLock",
    "blocks_done",
    "check_output_path",
    "check_partial",
    "check_resumable",
    "create_store",
    "done_marks",
    "finish_store",
    "lock_path",
    "partial_path",
    "read_block",
    "store_block",
    "stored_hashes",
]
