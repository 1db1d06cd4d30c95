"""Grids on real Dask clusters: a scheduler and workers on 127.0.0.1, the real CLI.

Every cube is compared with the synchronous result bit for bit.  Faults are
real: a worker process group killed with SIGKILL while tasks run, the CLI
killed with SIGKILL and resumed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import random_loans

from gridstress import load_config, open_cube, run_grid
from gridstress.distributed import WORKER_MALLOC_ENV
from gridstress.grid import plan_blocks
from gridstress.prepared import default_plan, prepare
from gridstress.store import lock_path, partial_path
from gridstress.variables import variables

BIN = Path(sys.executable).parent
DASK = shutil.which("dask", path=str(BIN)) or "dask"
GRIDSTRESS = shutil.which("gridstress", path=str(BIN)) or "gridstress"

# A fast grid: 5 x 7 x 3 cells, 12 loans.
SMALL_GRID = {
    "deflation": {"start": -0.1, "stop": 0.6, "num": 5},
    "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 7},
    "haircut": {"values": [0.0, 0.35, 0.9]},
}
# A slower grid: 16 blocks of about 0.15 s each (100 loans x 2,000 default
# paths), so that a kill lands while tasks run.
SLOW_GRID = {
    "deflation": {"start": -0.1, "stop": 0.6, "num": 16},
    "crypto_drawdown": {"start": 0.0, "stop": 0.9, "num": 2000},
    "haircut": {"values": [0.0, 0.5]},
}
SLOW_CHUNK = 4000


def write_config(path: Path, grid: dict, n_loans: int, seed: int, name: str) -> Path:
    loans = [
        {k: v.item() if isinstance(v, np.generic) else v for k, v in loan.items()}
        for loan in random_loans(np.random.default_rng(seed), n_loans)
    ]
    path.write_text(
        yaml.safe_dump({"name": name, "grid": grid, "portfolio": loans}, sort_keys=False)
    )
    return path


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, tmp: Path, n_workers: int):
        from distributed import Client

        self.tmp = tmp
        self.file = tmp / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.file),
            ],
        )
        deadline = time.monotonic() + 60
        while not self.file.exists():
            assert time.monotonic() < deadline, (tmp / "scheduler.log").read_text()
            time.sleep(0.1)
        self.workers = [self.start_worker(i) for i in range(n_workers)]
        self.client = Client(scheduler_file=str(self.file), timeout=30)
        self.client.wait_for_workers(n_workers, timeout=90)
        self.address = self.client.scheduler.address

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("w")
        env = dict(os.environ, **{k: str(v) for k, v in WORKER_MALLOC_ENV.items()})
        return subprocess.Popen(
            [DASK, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.tmp,
            env=env,
        )

    def start_worker(self, i: int) -> subprocess.Popen:
        return self._spawn(
            f"worker{i}",
            [
                "worker",
                "--scheduler-file",
                str(self.file),
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
            ],
        )

    def kill_worker(self, i: int) -> None:
        """SIGKILL the worker's whole process group (its nanny and worker process)."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(timeout=30)

    def close(self) -> None:
        self.client.close()
        procs = [*self.workers, self.scheduler]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), n_workers=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small config and its synchronous cube."""
    path = write_config(
        tmp_path_factory.mktemp("small") / "small.yaml", SMALL_GRID, 12, seed=11, name="small"
    )
    return path, run_grid(load_config(path), backend="numpy").load()


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """The slow config and its synchronous cube."""
    path = write_config(
        tmp_path_factory.mktemp("slow") / "slow.yaml", SLOW_GRID, 100, seed=5, name="slow"
    )
    return path, run_grid(load_config(path), backend="numpy", chunk_cells=SLOW_CHUNK).load()


def assert_same_cube(path: Path, reference) -> None:
    with open_cube(path) as ds:
        for name in variables():
            assert ds[name].load().identical(reference[name]), name
        assert ds.attrs["config_sha256"] == reference.attrs["config_sha256"]
        assert ds.attrs["backend"] == "numpy"


def gridstress(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [GRIDSTRESS, *map(str, args)],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def start_gridstress(*args, cwd: Path) -> subprocess.Popen:
    """The CLI in a process group of its own, as a terminal starts a job."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.Popen(
        [GRIDSTRESS, *map(str, args)],
        cwd=cwd,
        env=env,
        text=True,
        stdout=(cwd / "run.out").open("w"),
        stderr=(cwd / "run.err").open("w"),
        start_new_session=True,
    )


def blocks_marked(store: Path) -> int:
    """Blocks whose done mark is set in a partial store (-1: not readable now)."""
    import zarr

    try:
        marks = zarr.open_group(str(store), mode="r")["gridstress_progress"][:]
    except Exception:  # not created yet, renamed, or a mark being written
        return -1
    return int(np.asarray(marks).sum())


def wait_for_marks(store: Path, at_least: int, proc: subprocess.Popen, cwd: Path) -> int:
    deadline = time.monotonic() + 120
    while (n := blocks_marked(store)) < at_least:
        assert proc.poll() is None, (
            f"the run ended before {at_least} blocks were done:\n" + (cwd / "run.err").read_text()
        )
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    return n


# --------------------------------------------------------------------------


@pytest.mark.parametrize("how, chunk_cells", [("file", None), ("address", 4)])
def test_cluster_cube_equals_synchronous(cluster, small, tmp_path, how, chunk_cells):
    config, reference = small
    where = (
        ["--scheduler-file", cluster.file] if how == "file" else ["--scheduler", cluster.address]
    )
    chunk = [] if chunk_cells is None else ["--chunk-cells", chunk_cells]
    res = gridstress("run", config, "--out", "cube.zarr", *where, *chunk, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"2 Dask worker(s), scheduler {cluster.address}: numpy on CPU" in res.stderr
    assert_same_cube(tmp_path / "cube.zarr", reference)


def test_each_worker_prepares_a_run_once(cluster, small, tmp_path):
    """Both workers ran blocks, and each built the portfolio once for all runs."""
    from gridstress.distributed import worker_builds

    config, reference = small
    for chunk_cells in (3, 9):
        res = gridstress(
            "run",
            config,
            "--out",
            f"c{chunk_cells}.zarr",
            "--chunk-cells",
            chunk_cells,
            "--scheduler-file",
            cluster.file,
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        assert_same_cube(tmp_path / f"c{chunk_cells}.zarr", reference)
    key = reference.attrs["config_sha256"][:12] + "/auto"
    builds = cluster.client.run(worker_builds)
    assert len(builds) == 2
    assert all(found.get(key) == 1 for found in builds.values()), builds


def test_local_cluster_cube_equals_synchronous(small, tmp_path):
    config, reference = small
    workers, chunk_cells = 1, 10
    res = gridstress(
        "run",
        config,
        "--out",
        "cube.nc",
        "--workers",
        workers,
        "--chunk-cells",
        chunk_cells,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert f"{workers} Dask worker(s), scheduler tcp://127.0.0.1:" in res.stderr
    assert_same_cube(tmp_path / "cube.nc", reference)


def test_python_api_on_a_cluster(cluster, small):
    config, reference = small
    cube = run_grid(load_config(config), backend="numpy", chunk_cells=6, scheduler=cluster.address)
    for name in variables():
        assert cube[name].identical(reference[name]), name
    cube = run_grid(load_config(config), backend="numpy", chunk_cells=6, scheduler=cluster.client)
    for name in variables():
        assert cube[name].identical(reference[name]), name


def test_worker_killed_mid_run(slow, tmp_path):
    config, reference = slow
    n_blocks = len(prepare(config, "numpy", SLOW_CHUNK).plan)
    c = Cluster(tmp_path, n_workers=2)
    try:
        proc = start_gridstress(
            "run",
            config,
            "--out",
            "cube.zarr",
            "--chunk-cells",
            SLOW_CHUNK,
            "--scheduler-file",
            c.file,
            cwd=tmp_path,
        )
        store = partial_path(tmp_path / "cube.zarr")
        done_at_kill = wait_for_marks(store, 3, proc, tmp_path)
        c.kill_worker(0)
        assert done_at_kill < n_blocks and proc.poll() is None
        assert proc.wait(timeout=240) == 0, (tmp_path / "run.err").read_text()
        assert len(c.client.nthreads()) == 1  # the killed worker stayed dead
    finally:
        if proc.poll() is None:
            proc.kill()
        c.close()
    assert_same_cube(tmp_path / "cube.zarr", reference)


def test_client_killed_then_resume(cluster, slow, tmp_path):
    config, reference = slow
    run = prepare(config, "numpy", SLOW_CHUNK)
    n_blocks = len(run.plan)
    args = (
        "run",
        config,
        "--out",
        "cube.zarr",
        "--chunk-cells",
        SLOW_CHUNK,
        "--scheduler-file",
        cluster.file,
    )
    proc = start_gridstress(*args, cwd=tmp_path)
    store = partial_path(tmp_path / "cube.zarr")
    wait_for_marks(store, 3, proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Tasks already running when the client died still finish and write
    # their blocks; wait until the store no longer changes.
    done, still = blocks_marked(store), 0.0
    while still < 2.0:
        time.sleep(0.25)
        now = blocks_marked(store)
        still = still + 0.25 if now == done else 0.0
        done = now
    assert 3 <= done < n_blocks
    marks = np.asarray(__import__("zarr").open_group(str(store))["gridstress_progress"][:])
    kept = [i for i in range(n_blocks) if marks[i]]
    chunk_files = [Path("loss", "c", *map(str, np.unravel_index(i, run.plan.counts))) for i in kept]
    written = {f: (store / f).stat().st_mtime_ns for f in chunk_files}

    res = gridstress(*args, "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        f"resuming: {done} of {n_blocks} blocks already done, computing {n_blocks - done}"
    ) in res.stderr
    assert_same_cube(tmp_path / "cube.zarr", reference)
    # The kept blocks were not written again.
    out = tmp_path / "cube.zarr"
    assert {f: (out / f).stat().st_mtime_ns for f in chunk_files} == written


@pytest.mark.parametrize("scheduler", [("--workers", "2"), ("--scheduler", "synchronous")])
def test_ctrl_c_keeps_the_blocks_and_a_resume_ends_the_run(slow, tmp_path, scheduler):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) on a local
    cluster or in this process: exit 130 within 2 s, one line, no traceback, the
    finished blocks kept; a synchronous resume ends the run."""
    config, reference = slow
    args = ("run", config, "--out", "cube.zarr", "--chunk-cells", SLOW_CHUNK)
    proc = start_gridstress(*args, *scheduler, cwd=tmp_path)
    store = partial_path(tmp_path / "cube.zarr")
    wait_for_marks(store, 3, proc, tmp_path)
    pressed = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - pressed < 2.0
    err = (tmp_path / "run.err").read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == [
        line for line in err.splitlines()[-1:]
    ]
    assert "blocks are saved; run the same command with --resume to finish" in err
    kept = blocks_marked(store)
    assert 3 <= kept < 16
    res = gridstress(*args, "--scheduler", "synchronous", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {kept} of 16 blocks already done, computing {16 - kept}" in res.stderr
    assert_same_cube(tmp_path / "cube.zarr", reference)


def test_ctrl_c_while_the_workers_start_is_held_until_the_cluster_is_up(slow, tmp_path):
    """A Ctrl-C pressed while the local cluster starts (its workers not yet
    running) is not lost: the run stops with 130, one line, no worker's
    traceback, nothing saved; a new run of the same command then starts
    afresh without --resume or --overwrite."""
    config, reference = slow
    args = ("run", config, "--out", "cube.zarr", "--chunk-cells", SLOW_CHUNK)
    proc = start_gridstress(*args, "--workers", "2", cwd=tmp_path)
    log = tmp_path / "run.err"
    deadline = time.monotonic() + 60
    while "block(s)" not in log.read_text():  # the plan is out; the cluster starts next
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    pressed = time.monotonic()
    assert proc.wait(timeout=60) == 130, log.read_text()
    assert time.monotonic() - pressed < 2.0
    err = log.read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "Dask worker(s)" not in err  # it stopped before the first block
    assert err.splitlines()[-1] == "interrupted: no block of 16 was finished; nothing is saved"
    res = gridstress(*args, "--scheduler", "synchronous", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert_same_cube(tmp_path / "cube.zarr", reference)


def test_sigterm_stops_a_run_as_ctrl_c_does_and_a_resume_counts_only_new_cells(slow, tmp_path):
    """SIGTERM (a batch scheduler's cancel, sent to this process only) keeps the
    finished blocks and exits 143 with one line; the resume reports the cells it
    computed and those it kept apart."""
    config, reference = slow
    args = ("run", config, "--out", "cube.zarr", "--chunk-cells", SLOW_CHUNK)
    proc = start_gridstress(*args, "--scheduler", "synchronous", cwd=tmp_path)
    store = partial_path(tmp_path / "cube.zarr")
    wait_for_marks(store, 3, proc, tmp_path)
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    err = (tmp_path / "run.err").read_text()
    assert "Traceback" not in err, err
    kept = blocks_marked(store)
    assert err.splitlines()[-1] == (
        f"interrupted: {kept} of 16 blocks are saved; run the same command with --resume to finish"
    )
    marks = np.asarray(__import__("zarr").open_group(str(store))["gridstress_progress"][:])
    plan = prepare(config, "numpy", chunk_cells=SLOW_CHUNK).plan
    kept_cells = sum(block.size for block in plan if marks[block.index])
    res = gridstress(*args, "--scheduler", "synchronous", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # 16 x 2000 x 2 = 64,000 cells, of which the kept blocks' were not computed again
    assert res.stdout.splitlines()[1].startswith(f"{64_000 - kept_cells:,} cells in ")
    assert res.stdout.splitlines()[1].endswith(
        f" s ({kept_cells:,} more kept from the interrupted run)"
    )
    assert_same_cube(tmp_path / "cube.zarr", reference)


def test_a_second_run_on_the_same_store_is_refused_while_the_first_writes(slow, tmp_path):
    """Two runs on one --out: while the first writes, a second (as it is, with
    --resume or with --overwrite) is refused with one line naming the first,
    exit 2, touching nothing; the first ends with every block, and its lock
    is gone."""
    config, reference = slow
    # Blocks of 250 cells (256 of them): the first run writes for several
    # seconds, while the second starts three times.
    args = ("run", config, "--out", "cube.zarr", "--chunk-cells", 250)
    proc = start_gridstress(*args, "--scheduler", "synchronous", cwd=tmp_path)
    store = partial_path(tmp_path / "cube.zarr")
    wait_for_marks(store, 1, proc, tmp_path)
    holder = re.escape(f"gridstress run (pid {proc.pid} on {socket.gethostname()}, started ")
    for extra in ((), ("--resume",), ("--overwrite",)):
        res = gridstress(*args, "--scheduler", "synchronous", *extra, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert re.fullmatch(
            rf"error: --out cube\.zarr: {holder}[0-9-]+ [0-9:]+\) is writing this cube; "
            r"wait for it to end, or stop it and run again with --resume\n",
            res.stderr,
        ), res.stderr
        assert res.stdout == ""
    assert proc.poll() is None, "the first run ended before the second was refused"
    assert proc.wait(timeout=300) == 0, (tmp_path / "run.err").read_text()
    assert_same_cube(tmp_path / "cube.zarr", reference)
    assert not lock_path(tmp_path / "cube.zarr").exists()


def test_the_lock_of_a_killed_run_is_taken_over_by_its_resume(slow, tmp_path):
    """A run killed outright (SIGKILL: no handler runs) leaves its lock file; the
    operating system released the lock itself, so a --resume takes it over
    and ends the run with the blocks the killed one finished."""
    config, reference = slow
    args = ("run", config, "--out", "cube.zarr", "--chunk-cells", SLOW_CHUNK)
    proc = start_gridstress(*args, "--scheduler", "synchronous", cwd=tmp_path)
    store = partial_path(tmp_path / "cube.zarr")
    wait_for_marks(store, 2, proc, tmp_path)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert lock_path(tmp_path / "cube.zarr").exists()
    kept = blocks_marked(store)
    res = gridstress(*args, "--scheduler", "synchronous", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {kept} of 16 blocks already done, computing {16 - kept}" in res.stderr
    assert_same_cube(tmp_path / "cube.zarr", reference)
    assert not lock_path(tmp_path / "cube.zarr").exists()


BAD_PORTFOLIO = [
    {"loan_id": "OK", "principal": 1.0e6, "rate": 0.1, "term_years": 2, "n_gpus": 100},
    # Valid inputs whose loss, times 1e4 bp, overflows float64 where the loan defaults.
    {
        "loan_id": "BAD",
        "principal": 1.0e305,
        "rate": 0.1,
        "term_years": 3,
        "n_gpus": 1.0e4,
        "rent": 1.0e298,
    },
]


@pytest.mark.parametrize("scheduler", ["synchronous", "cluster"])
def test_bad_data_names_the_loan_and_cell(cluster, tmp_path, scheduler):
    grid = {
        "deflation": {"values": [-0.5, 0.0, 0.3, 0.6, 0.9]},
        "crypto_drawdown": {"values": [0.0, 0.5]},
        "haircut": {"values": [0.0, 0.5]},
    }
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"name": "bad", "grid": grid, "portfolio": BAD_PORTFOLIO}, sort_keys=False)
    )
    where = (
        ["--scheduler", "synchronous"]
        if scheduler == "synchronous"
        else ["--scheduler", cluster.address]
    )
    res = gridstress(
        "run", "bad.yaml", "--out", "cube.zarr", "--chunk-cells", 4, *where, cwd=tmp_path
    )
    assert res.returncode == 1, res.stderr
    assert (
        "error: block 4 (deflation=0.9, crypto_drawdown 0..0.5, haircut 0..0.5): "
        "breakeven_spread_bps=inf at cell deflation=0.9, crypto_drawdown=0, haircut=0 "
        "(index (4, 0, 0)) is not finite; loan_id=BAD gives a non-finite result there "
        "on its own"
    ) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cube.zarr").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--scheduler", "bogus"],
            "--scheduler bogus: must be one of auto, synchronous, "
            "local, local-cuda or a scheduler address such as tcp://host:8786",
        ),
        (["--scheduler-file", "nope.json"], "--scheduler-file nope.json: no such file"),
        (
            ["--scheduler", "synchronous", "--scheduler-file", "f.json"],
            "give one of them, not both",
        ),
        (["--workers", "0"], "--workers=0 must be >= 1"),
        (
            ["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"],
            "--workers=2: only for --scheduler local or local-cuda",
        ),
        (
            ["--scheduler", "tcp://127.0.0.1:9", "--backend", "gpu"],
            "--backend gpu: must be one of auto, numpy, cupy",
        ),
    ],
)
def test_bad_scheduler_options(small, tmp_path, args, message):
    config, _ = small
    res = gridstress("run", config, "--out", "cube.zarr", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not list(tmp_path.glob("cube.zarr*"))


def test_local_cuda_without_dask_cuda(small, tmp_path):
    try:
        import dask_cuda  # noqa: F401

        pytest.skip("dask-cuda is installed here")
    except ImportError:
        pass
    config, _ = small
    res = gridstress(
        "run",
        config,
        "--out",
        "cube.zarr",
        "--scheduler",
        "local-cuda",
        "--backend",
        "numpy",
        "--chunk-cells",
        5,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert "--scheduler local-cuda needs dask-cuda" in res.stderr
    assert "pip install 'gridstress[gpu]'" in res.stderr
    assert not list(tmp_path.glob("cube.zarr*"))


def test_default_plan_keeps_to_max_blocks(small):
    config, _ = small
    run = prepare(config, "numpy")
    free = default_plan(run.config, run.portfolio, loan_cells=12)
    assert len(free) > 5
    capped = default_plan(run.config, run.portfolio, loan_cells=12, max_blocks=5)
    assert len(capped) <= 5
    # the smallest blocks that do it: one cell less per block gives too many
    assert len(plan_blocks(capped.shape, max(1, np.prod(capped.chunks) - 1))) > 5
    assert sum(b.size for b in capped) == run.config.n_cells


def test_a_worker_that_cannot_see_the_store_says_so(small, tmp_path):
    from gridstress.distributed import RunSpec, block_task
    from gridstress.errors import ClusterError

    config, _ = small
    run = prepare(config, "numpy", 10)
    missing = tmp_path / "elsewhere" / "cube.zarr.partial"
    with pytest.raises(
        ClusterError,
        match="cannot see the store .*elsewhere/cube.zarr.partial"
        ": workers write their blocks into it",
    ):
        block_task(RunSpec(run.config, "numpy", str(missing)), run.plan.block(0))


def test_per_loan_outputs_with_the_market_step_on_a_cluster(cluster, small, tmp_path):
    """Workers, chunks that cut the haircut axis (several blocks share each default
    path; one of them writes loan_default_years) and the synchronous run agree."""
    config, _ = small
    cfg = load_config(config)
    assert cfg.scenario["market_depth_gpus"] < float("inf")  # the market step is active
    reference = run_grid(cfg, backend="numpy", per_loan=True)
    assert float(reference["market_price_min"].min()) < 1.0
    for chunk in (2, 5):  # haircut has 3 values: blocks of 2 or 5 cells cut it
        res = gridstress(
            "run",
            config,
            "--out",
            f"loans{chunk}.zarr",
            "--per-loan",
            "--chunk-cells",
            chunk,
            "--scheduler",
            cluster.address,
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        with open_cube(tmp_path / f"loans{chunk}.zarr") as ds:
            for name in variables(per_loan=True):
                assert ds[name].load().identical(reference[name]), (chunk, name)
    cube = run_grid(cfg, backend="numpy", chunk_cells=2, per_loan=True, scheduler=cluster.client)
    for name in variables(per_loan=True):
        assert cube[name].identical(reference[name]), name
