"""Blocks of the grid as Dask tasks: the client, the task, the worker's cache.

Dask distributed does the scheduling; this module only says what a task is.

- **One block, one task.**  :func:`block_task` evaluates one block of cells on
  its worker's backend.  Only a :class:`RunSpec` (the validated config and
  the backend name, a few kB) and the block's coordinates travel to the
  worker; the worker builds its :class:`~gridstress.prepared.PreparedRun`
  (portfolio arrays on its own device, CuPy on a GPU worker) once per run
  and keeps it for every later block (:func:`worker_run`).
- **Output.**  When the spec names a store, the worker writes its block into
  its own chunks of the run's Zarr store and sets the block's done mark once
  the data is on disk (:func:`gridstress.store.store_block`), then returns
  a receipt of a few numbers (:class:`BlockDone`).  The client receives
  receipts only, so its memory does not grow with the grid, and write
  bandwidth grows with the workers.  Workers must therefore see the output
  directory: the same machine (``local``, ``local-cuda``) or a filesystem
  shared by the nodes of a batch cluster.  Without a store (the in-memory
  :func:`gridstress.run_grid`) the receipt carries the block's arrays.
- **Faults.**  A worker that dies has its tasks run again on the others by
  the scheduler, up to ``distributed.scheduler.allowed-failures`` deaths per
  task (3 by default).  A task that fails on bad data raises
  :class:`~gridstress.errors.ModelError` naming the block, the cell and the
  loan; it is not retried, since the same inputs fail the same way.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BACKENDS, resolve_backend
from .errors import BackendUnavailable, ClusterError, InputError
from .grid import Block
from .headline import block_headline
from .heap import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES
from .inputs import RunConfig
from .params import SCENARIO_PARAMS
from .prepared import describe_cells, evaluate_checked, prepare
from .store import store_block

#: Schedulers named by a word; anything with ``://`` is a scheduler address.
SCHEDULERS = ("auto", "synchronous", "local", "local-cuda")
#: ``auto`` starts a local cluster only on a machine of at least this many cores:
#: in this process a block is written on a second core while the next one
#: computes, so N workers are only about N/2 times as fast, and on 2 cores a
#: local cluster never beat this process up to 18 million seed cells
#: (benchmarks/results/scheduler_auto.json).
AUTO_LOCAL_MIN_CORES = 4
#: ... and only for a grid whose blocks would take at least this long in this
#: process [s]: starting and stopping a local cluster cost 1.3-2 s in the same
#: benchmark, which 4 workers (about twice this process's speed) repay from
#: about 4 s of work.
AUTO_LOCAL_SECONDS = 4.0
#: Loan-periods of default paths one CPU core evaluates per second (NumPy
#: backend; 1.2e7-1.8e7 in benchmarks/results/scheduler_auto.json): estimates
#: a grid's time.
CORE_PATH_LOAN_PERIODS_PER_S = 1.7e7
#: How long to wait for the first worker of an existing cluster [s].
WORKER_WAIT_S = 120.0
#: How long to wait for a connection to an existing scheduler [s].
CONNECT_TIMEOUT_S = 20.0
#: Prepared runs a worker keeps (one per config, portfolio and backend).
_CACHED_RUNS = 4
#: glibc malloc settings for the worker processes of a local cluster (those
#: of gridstress.heap, as environment variables).  Dask sets
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at
#: 128 kB, so each of the model's temporary arrays would be a fresh mmap and a
#: block would take 2-3 times as long as in this process.
WORKER_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES,
    "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD_BYTES,
}


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to evaluate blocks of a run: picklable, small."""

    config: RunConfig
    backend: str
    """``auto``, ``numpy`` or ``cupy``, resolved on each worker."""
    store: str | None = None
    """Absolute path of the Zarr store the worker writes into; None: return arrays."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.config.config_sha256, self.config.portfolio_sha256, self.backend)


@dataclass(frozen=True)
class BlockDone:
    """A task's receipt: which block, how long it took, where it ran."""

    index: int
    cells: int
    compute_s: float
    """Seconds in the model (``evaluate_block`` and the finiteness check)."""
    write_s: float
    """Seconds writing the block and its done mark into the store."""
    backend: str
    device: str
    engine: str
    worker: str
    headline: Any = None
    """The block's :class:`~gridstress.headline.BlockHeadline`."""
    results: dict[str, np.ndarray] | None = None


_runs: dict[tuple[str, str, str], Any] = {}
_builds: dict[tuple[str, str, str], int] = {}
_runs_lock = threading.Lock()


def worker_run(spec: RunSpec):
    """This process's prepared run for ``spec``: built on first use, then reused."""
    with _runs_lock:
        run = _runs.get(spec.key)
        if run is None:
            run = prepare(spec.config, spec.backend)
            while len(_runs) >= _CACHED_RUNS:
                _runs.pop(next(iter(_runs)))
            _runs[spec.key] = run
            _builds[spec.key] = _builds.get(spec.key, 0) + 1
        return run


def worker_builds() -> dict[str, int]:
    """How many times this process built each run (config hash: count)."""
    with _runs_lock:
        return {key[0][:12] + "/" + key[2]: n for key, n in _builds.items()}


def _where() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} on {socket.gethostname()}"
    except ValueError:  # not in a worker
        return f"process {os.getpid()} on {socket.gethostname()}"


def block_task(spec: RunSpec, block: Block) -> BlockDone:
    """Evaluate one block on this worker; write it into the store if there is one."""
    store = None if spec.store is None else Path(spec.store)
    if store is not None and not store.is_dir():
        raise ClusterError(
            f"worker {_where()} cannot see the store {store}: workers write their blocks "
            "into it, so the output directory must be on a filesystem they share with "
            "the client"
        )
    run = worker_run(spec)
    started = time.perf_counter()
    results: dict[str, np.ndarray] | None  # None once written into the store
    results = evaluate_checked(run, block)
    computed = time.perf_counter()
    part = block_headline(spec.config, block, results)
    if store is not None:
        store_block(store, spec.config, block, results)
        results = None
    return BlockDone(
        block.index,
        block.size,
        computed - started,
        time.perf_counter() - computed,
        run.backend.name,
        run.backend.device,
        run.engine,
        _where(),
        part,
        results,
    )


def _hold(spec: RunSpec) -> RunSpec:
    """A task whose result is the spec: sent to the scheduler once, fetched by workers."""
    return spec


def auto_scheduler(run, n_blocks: int) -> str:
    """What ``--scheduler auto`` means for a prepared run with ``n_blocks`` to compute:
    ``local`` when the blocks would take at least :data:`AUTO_LOCAL_SECONDS` on
    one core and there are :data:`AUTO_LOCAL_MIN_CORES` cores and blocks to
    share them, else ``synchronous``
    (this process; always on a GPU, which one process drives best)."""
    if run.backend.name != "numpy" or n_blocks < 2 or _cpu_count() < AUTO_LOCAL_MIN_CORES:
        return "synchronous"
    on_path = [SCENARIO_PARAMS[a.name].path for a in run.config.axes]
    path_cells = math.prod(n for n, p in zip(run.config.shape, on_path) if p)
    seconds = path_cells * int(run.portfolio.n.sum()) / CORE_PATH_LOAN_PERIODS_PER_S
    return "local" if seconds >= AUTO_LOCAL_SECONDS else "synchronous"


@dataclass(frozen=True)
class Scheduler:
    """Where the blocks of a run are computed: parsed once from the options.

    ``kind`` is one of :data:`SCHEDULERS` (``auto`` is resolved by the run's
    planner, :func:`auto_scheduler`), ``address`` (a running scheduler at
    ``address``), ``file`` (a running scheduler named by its scheduler
    ``file``) or ``client`` (a ``distributed.Client`` the caller holds).
    """

    kind: str = "synchronous"
    address: str | None = None
    file: Path | None = None
    workers: int | None = None
    """Workers of a cluster this process starts (``local``, ``local-cuda``)."""
    client: Any = field(default=None, compare=False)

    @classmethod
    def parse(
        cls,
        scheduler: Any = None,
        scheduler_file: str | Path | None = None,
        workers: int | None = None,
        default: str = "synchronous",
    ) -> Scheduler:
        """The scheduler the options ask for; :class:`~gridstress.errors.InputError`
        for options that cannot work, before anything runs.

        ``scheduler`` is a word of :data:`SCHEDULERS`, an address
        (``tcp://host:8786``), a ``distributed.Client`` or None: then
        ``scheduler_file`` if given, else a local cluster if ``workers`` is
        given, else ``default``.
        """
        if scheduler_file is not None and scheduler is not None:
            raise InputError(
                f"--scheduler {scheduler} and --scheduler-file {scheduler_file}: "
                "give one of them, not both"
            )
        if workers is not None and workers < 1:
            raise InputError(f"--workers={workers} must be >= 1")
        if scheduler is not None and not isinstance(scheduler, str):
            found = cls("client", client=scheduler)
        elif scheduler_file is not None:
            if not Path(scheduler_file).is_file():
                raise InputError(f"--scheduler-file {scheduler_file}: no such file")
            found = cls("file", file=Path(scheduler_file))
        elif scheduler is None:
            found = cls("local" if workers is not None else default)
        elif scheduler in SCHEDULERS:
            found = cls(scheduler)
        elif "://" in scheduler:
            found = cls("address", address=scheduler)
        else:
            raise InputError(
                f"--scheduler {scheduler}: must be one of {', '.join(SCHEDULERS)} "
                "or a scheduler address such as tcp://host:8786"
            )
        if workers is not None:
            if found.kind not in ("local", "local-cuda"):
                raise InputError(
                    f"--workers={workers}: only for --scheduler local or "
                    "local-cuda (an existing cluster has its own workers)"
                )
            found = replace(found, workers=workers)
        return found

    @property
    def remote(self) -> bool:
        """Whether the workers may be on other machines (not started by this process)."""
        return self.kind in ("address", "file", "client")

    @property
    def option(self) -> str:
        """The option that named this scheduler, for messages."""
        if self.kind == "file":
            return f"--scheduler-file {self.file}"
        return f"--scheduler {self.address if self.kind == 'address' else self.kind}"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def connect(scheduler: Scheduler, n_blocks: int | None = None) -> Iterator[Any | None]:
    """A ``distributed.Client`` for ``scheduler``, or None for this process.

    ``synchronous`` (and an unresolved ``auto``) gives None (blocks run in
    this process), and so do ``local`` for at most one block to compute (a
    cluster cannot run one task faster) and any scheduler for no block at
    all.  ``local`` starts a LocalCluster of worker processes on 127.0.0.1,
    one single-threaded worker per CPU core (``scheduler.workers``
    overrides); ``local-cuda`` a dask-cuda LocalCUDACluster, one worker per
    GPU; an address or a scheduler file connects to a running scheduler and
    waits for its first worker.  A caller's ``distributed.Client`` is used
    as it is.  Clusters this function starts are closed on exit.
    """
    kind = scheduler.kind
    if kind == "client":
        yield scheduler.client
        return
    if (
        n_blocks == 0
        or kind in ("synchronous", "auto")
        or (kind == "local" and (n_blocks or 0) <= 1)
    ):
        yield None
        return
    from distributed import Client

    if kind in ("local", "local-cuda"):
        with (
            _local_cluster(kind, scheduler.workers, n_blocks) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        if scheduler.file is not None:
            client = Client(scheduler_file=str(scheduler.file), timeout=CONNECT_TIMEOUT_S)
        else:
            client = Client(scheduler.address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"{scheduler.option}: cannot connect to the scheduler ({exc})") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ClusterError(
                f"{scheduler.option}: no worker joined the scheduler within {WORKER_WAIT_S:.0f} s"
            ) from None
        yield client


@contextmanager
def _local_cluster(kind: str, workers: int | None, n_blocks: int | None):
    import dask

    # Task errors reach the client, which reports them; the workers need not.
    quiet = {"host": "127.0.0.1", "dashboard_address": None, "silence_logs": logging.CRITICAL}
    malloc = {
        f"distributed.nanny.pre-spawn-environ.{name}": value
        for name, value in WORKER_MALLOC_ENV.items()
    }
    if kind == "local":
        from distributed import LocalCluster

        n = workers or _cpu_count()
        if n_blocks:
            n = min(n, n_blocks)

        def start() -> Any:
            return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, **quiet)
    else:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise InputError(
                f"--scheduler local-cuda needs dask-cuda, which is not importable ({exc}): "
                "install the gpu extra, pip install 'gridstress[gpu]'"
            ) from None
        extra = {"n_workers": workers} if workers else {}

        def start() -> Any:
            return LocalCUDACluster(**quiet, **extra)

    with dask.config.set(malloc), _deaf_to_ctrl_c(start) as cluster:
        yield cluster


@contextmanager
def _deaf_to_ctrl_c(start: Callable[[], Any]):
    """A local cluster, from ``start()``, whose worker processes ignore SIGINT
    from birth; closed on leaving.

    A Ctrl-C on a terminal goes to the whole process group. The workers are
    spawned through a shell that ignores SIGINT before it runs Python (an
    ignored signal stays ignored through exec), so only this process reacts to
    a Ctrl-C, closing the cluster, instead of each worker printing a traceback.
    A Ctrl-C pressed while the workers start is held by a handler that records
    it and raised once the cluster is up, inside the ``with`` that closes it.
    """
    import multiprocessing.spawn
    import shlex
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gridstress-"))
    launcher = folder / "python"
    launcher.write_text(f"#!/bin/sh\ntrap '' INT\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    launcher.chmod(0o700)
    multiprocessing.spawn.set_executable(str(launcher))
    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: held.append(1)) if main else None
        try:
            cluster = start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        with cluster:
            if held:
                raise KeyboardInterrupt
            yield cluster
    finally:
        multiprocessing.spawn.set_executable(sys.executable)
        shutil.rmtree(folder, ignore_errors=True)


def _worker_backend(name: str) -> tuple[str, str]:
    backend = resolve_backend(name)
    return backend.name, backend.device


def worker_backends(client: Any, backend: str) -> dict[str, tuple[str, str]]:
    """The backend and device that ``backend`` resolves to on each worker.

    Raises :class:`~gridstress.errors.BackendUnavailable` (exit status 2)
    when a worker cannot run it, before anything is written.
    """
    if backend not in BACKENDS:
        resolve_backend(backend)  # raises the usual message
    try:
        return client.run(_worker_backend, backend)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"on a worker of the cluster: {exc}") from None


def describe_client(client: Any, backends: dict[str, tuple[str, str]]) -> str:
    """One line on where the blocks run, e.g. ``2 Dask workers at tcp://...``."""
    kinds = sorted({f"{name} on {device}" for name, device in backends.values()})
    address = client.scheduler.address
    return f"{len(backends)} Dask worker(s), scheduler {address}: {'; '.join(kinds)}"


def run_blocks(
    client: Any,
    spec: RunSpec,
    blocks: Sequence[Block],
    received: Callable[[Block, BlockDone], None],
) -> None:
    """Run every block as a task; call ``received(block, receipt)`` as each finishes.

    Blocks are submitted in plan order (Dask runs earlier submissions first)
    and received in the order they finish.  The first task that fails fails
    the run: its error is raised here (a :class:`~gridstress.errors.ModelError`
    names the block, cell and loan) and the tasks still pending are
    cancelled.  A block whose workers died more often than the scheduler
    allows raises :class:`~gridstress.errors.ClusterError`.
    """
    from distributed import KilledWorker, as_completed

    if not blocks:
        return
    token = uuid.uuid4().hex[:10]
    spec_future = client.submit(_hold, spec, key=f"gridstress-spec-{token}")
    block_of = {}
    futures = []
    for block in blocks:
        future = client.submit(
            block_task, spec_future, block, key=f"gridstress-block-{block.index}-{token}"
        )
        block_of[future.key] = block
        futures.append(future)
    try:
        for future in as_completed(futures):
            block = block_of[future.key]
            try:
                receipt = future.result()
            except KilledWorker as exc:
                raise ClusterError(
                    f"block {block.index} ({describe_cells(spec.config, block.slices)}): "
                    f"every worker that ran it died ({exc}); see the workers' logs, e.g. "
                    "for memory limits"
                ) from None
            future.release()
            received(block, receipt)
    finally:
        client.cancel([*futures, spec_future])


__all__ = [
    "SCHEDULERS",
    "BlockDone",
    "RunSpec",
    "Scheduler",
    "auto_scheduler",
    "block_task",
    "connect",
    "describe_client",
    "run_blocks",
    "worker_backends",
    "worker_builds",
    "worker_run",
]
