"""Full-batch training over shards that live on Dask workers (`gpunet train --engine dask`).

Full-batch gradient descent is a map-reduce: each shard of the samples gives
its summed loss and gradients, the sums are added, and one update follows.
Here each worker keeps its shards resident (numpy on CPU workers, cupy on GPU
workers); every step sends the current parameters (51 kB in float32) to the workers,
each computes its shards' sums with the same per-chunk code the local engine
uses (`LocalEngine.gradient_sums`), the sums are added as a tree on the
workers, and the client applies the one update.

Shards are built by tasks on the workers from a small description (which
rows, of which dataset, read from files or generated there), so the client
never holds them, and a shard lost with its worker is rebuilt elsewhere by
Dask from the same description: a step's gradient is always the sum over every
sample, or an error, never a silent partial sum.

Dask (`pip install 'gpunet[dist]'`) is imported only here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from gpunet.core.flat import Layout
from gpunet.data import datasets
from gpunet.device.backend import Array, Device, resolve_device, to_numpy
from gpunet.errors import ConfigError, GpunetError, StepFailed
from gpunet.files import signals
from gpunet.files.signals import stop_requested
from gpunet.training.engine import CPU_CHUNK_ROWS, Engine, LocalEngine, choose_engine
from gpunet.training.train import StepAbandoned, TrainConfig

if TYPE_CHECKING:
    from typing_extensions import NotRequired  # typing's own from Python 3.11

# Every wait on the cluster has a deadline (seconds; module constants so tests can shorten them).
CONNECT_TIMEOUT_S = 5  # to reach the scheduler and hear its handshake, or any answer from it later
WORKERLESS_TIMEOUT_S = 30  # a cluster without a single worker for this long cannot finish the step
POLL_S = 0.25  # how often a wait for a step looks at the cluster and at Ctrl-C


class EngineError(StepFailed):
    """The Dask cluster cannot be reached, or lost what it needed to finish a step."""


# --- on the workers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSpec:
    """Rows [start, stop) of a training set, described so a worker can build them itself.

    Rows past the dataset's own size are copies of it, each copy deterministically
    distorted (see `elastic_distort`), which is how a 60,000-image dataset feeds
    a run of millions of samples.
    """

    dataset: str
    data_dir: str | None
    start: int
    stop: int
    dtype: str
    device: str = "cpu"
    seed: int = 0


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None) -> datasets.Dataset:
    return datasets.load(name, Path(data_dir) if data_dir else None, offline=True)


def shard_images(spec: ShardSpec) -> tuple[np.ndarray, np.ndarray]:
    """The shard's uint8 images and labels, read or generated where this runs."""
    base = _dataset(spec.dataset, spec.data_dir)
    n = len(base.train_images)
    rows = np.arange(spec.start, spec.stop)
    images, labels = base.train_images[rows % n], base.train_labels[rows % n]
    copies = rows >= n  # rows of the dataset itself stay as they are
    if copies.any():
        images[copies] = elastic_distort(images[copies], displacements(rows[copies], spec.seed))
    return images, labels


FIELD_BLOCK = 4096


def displacements(rows: np.ndarray, seed: int = 0, alpha: float = 2.5) -> np.ndarray:
    """Each row's coarse 4x4 displacement field, (2, rows, 16), up to `alpha` pixels.

    Drawn per fixed block of rows from its own seeded generator, so a row's
    distortion is the same whichever shard (and however many workers) it falls in.
    """
    fields = np.empty((2, len(rows), 16))
    blocks = rows // FIELD_BLOCK
    for b in np.unique(blocks):
        mine = blocks == b
        block = np.random.default_rng([seed, int(b)]).uniform(-alpha, alpha, size=(2, FIELD_BLOCK, 16))
        fields[:, mine] = block[:, rows[mine] % FIELD_BLOCK]
    return fields


def elastic_distort(images: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Warp each 28x28 image by its smooth displacement field, given on a coarse 4x4 grid.

    The field is interpolated bilinearly to 28x28 (one small matrix product),
    so millions of images cost seconds, not minutes.
    """
    m = len(images)
    side = 28
    grid = np.linspace(0, 3, side)  # 28 positions over the 4 coarse points
    lo = np.minimum(grid.astype(int), 2)
    frac = grid - lo
    along = np.zeros((side, 4))
    along[np.arange(side), lo] = 1 - frac
    along[np.arange(side), lo + 1] += frac
    upsample = np.kron(along, along)  # (784, 16): bilinear weights of the coarse points
    dy, dx = (coarse[i] @ upsample.T for i in range(2))  # (m, 784) displacements
    yy, xx = np.divmod(np.arange(side * side), side)
    y = np.clip(yy + dy, 0, side - 1)
    x = np.clip(xx + dx, 0, side - 1)
    y0, x0 = np.minimum(y.astype(int), side - 2), np.minimum(x.astype(int), side - 2)
    wy, wx = y - y0, x - x0
    flat = images.reshape(m, -1).astype(np.float32)
    rows = np.arange(m)[:, None]

    def at(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        return flat[rows, yi * side + xi]

    warped = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)) + wy * (
        (1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)
    )
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8).reshape(images.shape)


@dataclass
class Shard:
    x: Array
    targets: Array
    labels: Array
    device: str


def build_shard(spec: ShardSpec) -> Shard:
    from gpunet.training.train import DeviceData  # the trainer's own scaling and one-hot, on the worker's device

    images, labels = shard_images(spec)
    device = _device(spec.device)
    rows = DeviceData.from_host(images, labels, device, spec.dtype, datasets.NUM_CLASSES)
    return Shard(rows.x, rows.targets, rows.labels, spec.device)


@functools.lru_cache(maxsize=2)
def _device(name: str) -> Device:
    # Resolved once per worker process: on a GPU, resolving runs a smoke test.
    return resolve_device(name)


@functools.lru_cache(maxsize=4)
def _engine(device: Device, dtype: str) -> Engine:
    # One thread per worker: the worker processes are the parallelism. The local engine's choice, so
    # that shards cut where its threads cut add up to its very bits; kept, with its buffers, per worker.
    return choose_engine(device, dtype, workers=1)


# Sums travel to the host (they go over the network to the client) in the arrays' own dtype,
# so a float32 run adds float32 numbers in the same order as the local engine does.


def shard_gradient_sums(
    params: list[np.ndarray], shard: Shard, scale: float = 1.0
) -> tuple[Any, list[np.ndarray], list[float]]:
    """`scale` x the shard's summed loss and gradient (one flat vector, in a list), and the seconds it took.

    The same computation as the local engine's step (LocalEngine.gradient_flat, 1/n applied in the
    output layer's kernel), so that shards cut where its threads cut add up to its very bits.
    """
    start = time.perf_counter()
    device = _device(shard.device)
    on_device = [device.asarray(p) for p in params]
    flat = device.xp.empty(Layout.of(params).size, dtype=on_device[0].dtype)
    loss = _engine(device, str(on_device[0].dtype)).gradient_flat(on_device, shard.x, shard.targets, scale, flat)
    return to_numpy(loss), [to_numpy(flat)], [time.perf_counter() - start]


def shard_evaluation_sums(params: list[np.ndarray], shard: Shard) -> tuple[Any, list[Any], list[float]]:
    device = _device(shard.device)
    on_device = [device.asarray(p) for p in params]
    loss, correct = _engine(device, str(on_device[0].dtype)).evaluation_sums(
        on_device, shard.x, shard.targets, shard.labels
    )
    return to_numpy(loss), [to_numpy(correct)], []


def add_sums(a: tuple, b: tuple) -> tuple:
    """Two shards' sums added: the reduction tree's one operation."""
    return a[0] + b[0], [x + y for x, y in zip(a[1], b[1])], a[2] + b[2]


# --- on the client ------------------------------------------------------------------------------


# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands freed memory
# straight back to the OS and every chunk's temporaries page-fault in afresh: steps ran 3-4x
# slower here (benchmarks/README.md). Workers of a cluster gpunet starts keep their heap; start
# the workers of your own cluster with these two variables set the same way.
WORKER_ENVIRONMENT = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 2**30,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 2**30,
}


WORKERS_PER_CORE = 2


def check_workers(workers: int) -> None:
    """A local cluster's size, refused before anything starts when it is below 1 or far beyond the cores."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    cores = len(os.sched_getaffinity(0))
    limit = WORKERS_PER_CORE * cores
    if workers > limit:
        raise ConfigError(
            f"--workers {workers} on {cores} cores: a local cluster of more than {limit} worker processes "
            f"({WORKERS_PER_CORE} per core) only costs memory and start-up time; use --workers {limit} or fewer, "
            "or --scheduler to train on a cluster elsewhere"
        )


def connect(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """A client of the scheduler at `scheduler`, or of a new local cluster of `workers` processes on 127.0.0.1."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise EngineError("--engine dask needs Dask: pip install 'gpunet[dist]'") from None
    if scheduler:
        try:
            _handshake(scheduler)
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except (OSError, TimeoutError, ValueError) as e:  # ValueError: a malformed address
            why = str(e) or "it accepted the connection but did not answer as a Dask scheduler"
            raise EngineError(
                f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S} s ({why})"
            ) from None
    check_workers(workers)
    import dask

    with dask.config.set(WORKER_ENVIRONMENT), signals.kept_from_children():  # a Ctrl-C is the run's, not theirs
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    return Client(cluster), cluster


def _handshake(address: str) -> None:
    """Connect to the scheduler and hear its handshake within CONNECT_TIMEOUT_S, or raise.

    Dask's own connect waits for the handshake without a deadline, so an address that
    accepts connections and never answers would hold `Client()` forever. This asks
    first, on its own event loop in a thread that ends with the deadline.
    """
    from distributed.comm import connect as dask_connect

    async def handshake() -> None:
        comm = await dask_connect(address, timeout=CONNECT_TIMEOUT_S)
        comm.abort()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(handshake(), CONNECT_TIMEOUT_S))
            outcome.append(None)
        except BaseException as e:  # handed to the caller's thread
            outcome.append(e)

    thread = threading.Thread(target=run, name="gpunet-dask-handshake", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 1)
    if not outcome:
        raise TimeoutError()
    if outcome[0] is not None:
        raise outcome[0]


def shard_bounds(n: int, workers: int, device: Device) -> list[tuple[int, int]]:
    """One shard per worker. On CPUs, the same row ranges a local engine with as many threads
    sums, so that with two workers a run is bit-identical to the local engine's on two cores."""
    if device.is_cuda:
        bounds = np.linspace(0, n, workers + 1).astype(int)
        return [(int(a), int(b)) for a, b in pairwise(bounds)]
    return [(part[0][0], part[-1][1]) for part in LocalEngine(CPU_CHUNK_ROWS, workers).parts(n)]


class DaskSource:
    """The training set as shards on Dask workers; full-batch gradients summed across them."""

    def __init__(
        self,
        dataset: datasets.Dataset,
        data_dir: Path | None,
        dtype: str,
        device: Device,
        scheduler: str | None = None,
        workers: int = 2,
        samples: int | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        if dataset.name == "synthetic":
            raise EngineError("--engine dask reads its shards from files on the workers: use mnist or fashion-mnist")
        self.device, self.say = device, say
        self.client, self.cluster = connect(scheduler, workers)
        self.samples = samples or len(dataset.train_images)
        self.failed: str | None = None  # why the cluster can no longer finish a step, once it cannot
        self.stopped: int | None = None  # the signal for which a wait on the cluster was given up
        addresses = sorted(self._workers())
        if not addresses:
            self.close()
            raise EngineError(f"the Dask scheduler {scheduler} has no workers")
        where = "cuda" if device.is_cuda else "cpu"
        directory = str(data_dir) if data_dir else None
        bounds = shard_bounds(self.samples, len(addresses), device)
        specs = [ShardSpec(dataset.name, directory, a, b, dtype, where) for a, b in bounds]
        try:
            # Placed one per worker, but free to move: a lost shard is rebuilt on another worker.
            self.shards = [
                self.client.submit(build_shard, spec, workers=[addr], allow_other_workers=True, pure=False)
                for spec, addr in zip(specs, addresses)
            ]
            self.workers = set(addresses)
            self.last_compute_s = 0.0
            self._gather(self.shards)  # a worker that cannot read the data fails now, not at step 1
        except BaseException:
            self.close()  # no cluster left running behind an error
            raise
        say(f"dask: {len(specs)} shards of ~{self.samples // len(specs):,} samples on {len(addresses)} workers")

    def _workers(self) -> set[str]:
        """The scheduler's workers now, asked with a deadline."""
        try:
            return set(self.client.sync(self.client.scheduler.ncores, callback_timeout=CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError) as e:
            raise EngineError(
                f"the Dask scheduler did not answer within {CONNECT_TIMEOUT_S} s ({type(e).__name__})"
            ) from None

    def _gather(self, futures: list[Any]) -> Any:
        """The futures' results; or EngineError once the cluster has had no worker for
        WORKERLESS_TIMEOUT_S; or StepAbandoned as soon as Ctrl-C or SIGTERM asks to stop."""
        from distributed import wait

        if self.failed:
            raise EngineError(self.failed)
        if self.stopped is not None:  # a stop already gave up on this cluster: no more waiting on it
            raise StepAbandoned(self.stopped)
        workerless_since = None
        try:
            while True:
                try:
                    wait(futures, timeout=POLL_S)
                    break
                except TimeoutError:
                    pass
                self.stopped = stop_requested()
                if self.stopped is not None:
                    raise StepAbandoned(self.stopped)
                if self._workers():
                    workerless_since = None
                elif workerless_since is None:
                    workerless_since = time.monotonic()
                elif time.monotonic() - workerless_since > WORKERLESS_TIMEOUT_S:
                    lost = ", ".join(sorted(self.workers)) or "all of them"
                    self.failed = (
                        f"every Dask worker is gone ({lost}) and none joined within {WORKERLESS_TIMEOUT_S} s; "
                        "the step was not applied"
                    )
                    raise EngineError(self.failed)
            return [f.result() for f in futures]
        except (GpunetError, StepAbandoned):
            raise
        except Exception as e:  # KilledWorker, a cancelled future, a dataset error on a worker, ...
            raise EngineError(f"the Dask cluster could not finish: {type(e).__name__}: {e}") from None

    def _reduce(self, task: Callable[..., tuple], params: list[Array], *args: Any) -> tuple:
        host = [to_numpy(p) for p in params]  # 51 kB for 784-16-16-10 in float32, sent with each task
        parts = [self.client.submit(task, host, shard, *args, pure=False) for shard in self.shards]
        while len(parts) > 1:  # a tree: pairs added on the workers, log2(shards) rounds
            pairs = [self.client.submit(add_sums, a, b, pure=False) for a, b in zip(parts[0::2], parts[1::2])]
            parts = pairs + parts[len(pairs) * 2 :]
        (total,) = self._gather(parts)
        self._notice_lost_workers()
        return total

    def _notice_lost_workers(self) -> None:
        now = self._workers()
        for gone in sorted(self.workers - now):
            self.say(f"dask: worker {gone} was lost; its shards are rebuilt on the others from the same rows")
        self.workers = now
        if not now:
            raise EngineError("every Dask worker is gone")

    def gradient(self, params: list[Array]) -> tuple[Array, Array]:
        """Mean loss and mean gradient (one flat vector, as gpunet.training.train.LocalSource gives it)."""
        loss, (grads,), seconds = self._reduce(shard_gradient_sums, params, 1.0 / self.samples)
        self.last_compute_s = max(seconds)
        return self.device.asarray(np.asarray(loss)), self.device.asarray(grads)

    def evaluate(self, params: list[Array]) -> tuple[Array, Array]:
        loss_sum, (correct,), _ = self._reduce(shard_evaluation_sums, params)
        n = self.samples
        return self.device.asarray(np.asarray(loss_sum) / n), self.device.asarray(np.asarray(correct) / n)

    def state(self) -> dict[str, Any]:
        return {}  # full batch: nothing to remember between steps

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return f"dask, {len(self.shards)} shards on {len(self.workers)} workers"

    def close(self) -> None:
        # Bounded too: a cluster that lost its workers (or its scheduler) must not hold the exit.
        self.client.close(timeout=CONNECT_TIMEOUT_S)
        if self.cluster is not None:
            self.cluster.close(timeout=CONNECT_TIMEOUT_S)


class DaskBenchRow(TypedDict):
    """One row of bench_dask (and of `gpunet bench --engine dask --json`): the Dask engine's step on
    `samples` samples, or the local engine's beside it (which has no workers and no shards)."""

    engine: str  # "dask" or "local"
    workers: NotRequired[int]
    samples: int
    ms_per_step_median: float
    ms_compute_slowest_shard_median: NotRequired[float]
    ms_communication_and_scheduling_median: NotRequired[float]
    overhead_fraction: NotRequired[float]
    samples_per_s: float


def bench_dask(
    config: TrainConfig,
    dataset: datasets.Dataset,
    data_dir: Path | None,
    workers: int,
    scheduler: str | None,
    samples: tuple[int, ...] = (60_000, 1_000_000),
    warmup: int = 2,
    timed_steps: int = 10,
    say: Callable[[str], None] = lambda _: None,
) -> list[DaskBenchRow]:
    """Per-step time of the Dask engine, the part of it that is not shard computation, and samples/s.

    The local engine's step on the same samples is timed beside it where they fit in memory here.
    """
    from gpunet.training.train import Trainer

    device = resolve_device("cpu")
    rows: list[DaskBenchRow] = []
    for n in samples:
        say(f"dask bench: building {n:,} samples on the workers")
        source = DaskSource(dataset, data_dir, config.dtype, device, scheduler, workers, samples=n, say=say)
        trainer = Trainer(config, dataset, device, source=source)
        try:
            for _ in range(warmup):
                trainer.step()
            steps, compute = [], []
            for _ in range(timed_steps):
                start = time.perf_counter()
                trainer.step()
                trainer.synchronize()
                steps.append(time.perf_counter() - start)
                compute.append(source.last_compute_s)
        finally:
            trainer.close()
        step = float(np.median(steps))
        overhead = float(np.median(np.subtract(steps, compute)))
        rows.append(
            {
                "engine": "dask",
                "workers": len(source.workers),
                "samples": n,
                "ms_per_step_median": 1000 * step,
                "ms_compute_slowest_shard_median": 1000 * float(np.median(compute)),
                "ms_communication_and_scheduling_median": 1000 * overhead,
                "overhead_fraction": overhead / step,
                "samples_per_s": n / step,
            }
        )
        if n <= len(dataset.train_images):
            local = Trainer(config, dataset, device)
            try:
                for _ in range(warmup):
                    local.step()
                times = []
                for _ in range(timed_steps):
                    start = time.perf_counter()
                    local.step()
                    times.append(time.perf_counter() - start)
            finally:
                local.close()
            median = float(np.median(times))
            rows.append(
                {"engine": "local", "samples": n, "ms_per_step_median": 1000 * median, "samples_per_s": n / median}
            )
    return rows
