"""`gpunet bench`: one training configuration on every backend, timed honestly, against the machine's floor.

Method (see benchmarks/README.md):
- ms per step: after warm-up steps, each timed step is bracketed by device
  synchronisations, so queued GPU work is never mistaken for finished work;
  the median and inter-quartile range over all timed steps are reported.
- time to target: the clock starts with the data in host memory and stops at
  the first evaluation whose test accuracy reaches the target; the transfer to
  the device and every evaluation on the way are included (as MLPerf counts).
- floor: the step's floating-point operations over this machine's measured
  matrix-multiply rate, or the bytes it must read over the measured memory
  bandwidth, whichever is larger; x_floor is the step time over that floor.
- the two products with X: the forward X @ W1 and the gradient X.T @ δ1, each
  timed alone on the backend's own arrays, medians after warm-up, the device
  synchronised around every run: how much of a step is the reads of X.

A backend is one Backend entry (BACKENDS holds the built-in ones); every
function here that takes a backend's name also takes a Backend of one's own,
and every clock read goes through a `clock` parameter (time.perf_counter).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from gpunet import params
from gpunet.data.datasets import Dataset
from gpunet.device.backend import Device, blas_info, cupy_version, describe, matmul_into, resolve_device
from gpunet.errors import DeviceError
from gpunet.training.engine import LocalEngine, cpu_cores
from gpunet.training.initializers import he_normal
from gpunet.training.train import Record, TrainConfig, Trainer, device_rows, layer_sizes
from gpunet.version import __version__

if TYPE_CHECKING:
    from typing_extensions import NotRequired  # typing's own from Python 3.11


class Progress(Protocol):
    """What the bench shows its progress on (the CLI's Reporter is one): a bar per phase, evaluations, steps."""

    def training(
        self, total_steps: int, label: str = ..., redraw_on_update: bool = ...
    ) -> contextlib.AbstractContextManager[Any]: ...

    def record(self, r: Record) -> None: ...

    def step(self, step: int) -> None: ...


class BenchTrainer(Protocol):
    """What the bench drives on every backend: gpunet's Trainer and the PyTorch and scikit-learn references."""

    steps_done: int

    @property
    def schedule(self) -> str:
        """How a step runs, in words (the report's "schedule")."""
        ...

    def step(self) -> None: ...

    def evaluate(self) -> Record: ...

    def synchronize(self) -> None:
        """Wait for queued device work, so a clock read afterwards is honest."""
        ...

    def host_params(self) -> list[np.ndarray]: ...

    def close(self) -> None:
        """Let go of worker threads now (a no-op where there are none)."""
        ...


BENCH_RULES = params.table(
    params.Rule("target_accuracy", "--target-accuracy", "number", above=0, high=1),
    params.Rule("warmup", "--warmup", "int", low=0),
    params.Rule("timed_steps", "--timed-steps", "int", low=1),
    params.Rule("repeats", "--repeats", "int", low=1),
)


@dataclass(frozen=True)
class BenchSettings:
    """How the bench measures, checked against BENCH_RULES when made (the config is checked by its own)."""

    config: TrainConfig = field(default_factory=TrainConfig)
    target_accuracy: float = 0.85
    warmup: int = 5
    timed_steps: int = 30
    repeats: int = 3

    def __post_init__(self) -> None:
        params.check(BENCH_RULES, vars(self))


Clock = Callable[[], float]
"""What the bench reads time from, in seconds (time.perf_counter; a test may give its own)."""


class PeakMemory(Protocol):
    """A high-water mark the bench reads around a training run: host memory, or a GPU library's pool."""

    def reset(self) -> None: ...

    def peak(self) -> int | None:
        """Bytes at the highest since the last reset(), or None where there is nothing to measure."""
        ...


class XProducts(Protocol):
    """The step's two products with the input matrix X, on a backend's own arrays, to be timed one by one."""

    def forward(self) -> None:
        """X @ W1: the first layer's forward product."""
        ...

    def gradient(self) -> None:
        """X.T @ δ1: the first layer's weight gradient."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (see BenchTrainer.synchronize)."""
        ...


class NoDeviceMemory:
    """A backend that keeps nothing in device memory: no peak to report."""

    def reset(self) -> None:
        pass

    def peak(self) -> int | None:
        return None


def _never_unavailable(config: TrainConfig | None) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One thing `gpunet bench` can time, as one entry: BACKENDS holds the built-in ones.

    `run_bench`, `sweep` and the functions below take a Backend wherever they
    take a backend's name, so a trainer of your own (any BenchTrainer) is
    benchmarked as the built-in ones are. `make` builds a fresh run from the
    seeded initial weights; `unavailable` says why the backend cannot run here
    (or with a config), or None; `device` ("cpu" or "cuda") is whose floor it
    is measured against; `same_start` says it starts from gpunet's initial
    weights and batch order, so its final weights are compared with the first
    such backend's; `memory` makes what reads its peak device memory;
    `x_products`, where given, builds the step's two products with X on the
    backend's own arrays, timed apart from the step.
    """

    name: str
    device: str
    make: Callable[[TrainConfig, Dataset], BenchTrainer]
    unavailable: Callable[[TrainConfig | None], str | None] = _never_unavailable
    same_start: bool = True
    memory: Callable[[], PeakMemory] = NoDeviceMemory
    x_products: Callable[[TrainConfig, Dataset], XProducts] | None = None


# --- the built-in backends --------------------------------------------------------------------


class CupyMemory:
    """Peak device memory from cupy's memory pool, on `device` (a cuda Device)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def reset(self) -> None:
        self.device.reset_memory_peak()

    def peak(self) -> int | None:
        return self.device.memory_peak_bytes()


class TorchCudaMemory:
    """Peak device memory from PyTorch's allocator statistics (`cuda`: torch.cuda, unless given)."""

    def __init__(self, cuda: Any = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.cuda = cuda

    def reset(self) -> None:
        self.cuda.empty_cache()
        self.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        return int(self.cuda.max_memory_allocated())


def x_operands(config: TrainConfig, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (one step's rows, scaled as training scales them), W1 and a δ1 of the step's shape, on the host.

    The rows are the first of a batch's size (every row for a full batch):
    a product's time depends on the shapes, not on which rows they are.
    """
    rows = min(config.batch_size or len(dataset.train_images), len(dataset.train_images))
    sizes = layer_sizes(config, dataset)
    w1 = he_normal(sizes, config.seed, config.dtype)[0]
    delta = np.random.default_rng(config.seed).standard_normal((rows, sizes[1])).astype(config.dtype)
    return np.asarray(dataset.train_images[:rows]), w1, delta


class ArrayXProducts:
    """The two products as gpunet's step runs them on `device`: X as the trainer holds it, the gradient
    written by matmul_into (as the step writes it into its part of the flat gradient)."""

    def __init__(self, config: TrainConfig, dataset: Dataset, device: Device) -> None:
        images, w1, delta = x_operands(config, dataset)
        self.device, xp = device, device.xp
        self.x = device_rows(images, device, config.dtype)
        self.w1, self.delta = device.asarray(w1), device.asarray(delta)
        self.grad = xp.empty(tuple(w1.shape), dtype=self.x.dtype)

    def forward(self) -> None:
        self.x @ self.w1

    def gradient(self) -> None:
        matmul_into(self.x.T, self.delta, self.grad)

    def synchronize(self) -> None:
        self.device.synchronize()


def gpunet_backend(name: str, device: str, reference: bool = False) -> Backend:
    """gpunet's own Trainer on `device` ("cpu": numpy, "cuda": cupy); with `reference`, on the
    array-API math (gpunet.core.model) in row chunks on threads instead of the engine chosen by default
    (numba's CPU kernels on numpy, where they serve)."""

    def make(config: TrainConfig, dataset: Dataset) -> BenchTrainer:
        dev = resolve_device(device)
        return (
            Trainer(config, dataset, dev, engine=LocalEngine.for_device(dev))
            if reference
            else Trainer(config, dataset, dev)
        )

    def cuda_unavailable(config: TrainConfig | None) -> str | None:
        try:
            resolve_device("cuda")
        except DeviceError as e:
            return str(e)
        return None

    return Backend(
        name,
        device,
        make=make,
        unavailable=cuda_unavailable if device == "cuda" else _never_unavailable,
        memory=(lambda: CupyMemory(resolve_device("cuda"))) if device == "cuda" else NoDeviceMemory,
        x_products=lambda config, dataset: ArrayXProducts(config, dataset, resolve_device(device)),
    )


def torch_backend(name: str, device: str) -> Backend:
    """The PyTorch reference (gpunet.bench.torch_reference) on `device` ("cpu" or "cuda")."""

    def make(config: TrainConfig, dataset: Dataset) -> BenchTrainer:
        from gpunet.bench.torch_reference import TorchTrainer

        return TorchTrainer(config, dataset, device)

    def unavailable(config: TrainConfig | None) -> str | None:
        from gpunet.bench.torch_reference import torch_unavailable

        return torch_unavailable(device)

    def x_products(config: TrainConfig, dataset: Dataset) -> XProducts:
        from gpunet.bench.torch_reference import TorchXProducts

        return TorchXProducts(*x_operands(config, dataset), device)

    return Backend(
        name,
        device,
        make,
        unavailable,
        memory=TorchCudaMemory if device == "cuda" else NoDeviceMemory,
        x_products=x_products,
    )


def _sklearn_trainer(config: TrainConfig, dataset: Dataset) -> BenchTrainer:
    from gpunet.bench.sklearn_reference import SklearnTrainer

    return SklearnTrainer(config, dataset)


def _sklearn_unavailable(config: TrainConfig | None) -> str | None:
    from gpunet.bench.sklearn_reference import sklearn_unavailable

    return sklearn_unavailable(config)


# The built-in backends, in the report's order; a new one is one more entry.
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        gpunet_backend("numpy", "cpu"),
        gpunet_backend("numpy-reference", "cpu", reference=True),
        gpunet_backend("cupy", "cuda"),
        torch_backend("torch-cpu", "cpu"),
        torch_backend("torch-cuda", "cuda"),
        # scikit-learn draws its own initial weights, and has no products of its own to time
        Backend("sklearn", "cpu", _sklearn_trainer, _sklearn_unavailable, same_start=False),
    )
}


def backend_of(backend: str | Backend) -> Backend:
    """The Backend itself, or the built-in one of that name (KeyError for a name BACKENDS lacks)."""
    return backend if isinstance(backend, Backend) else BACKENDS[backend]


def backend_name(backend: str | Backend) -> str:
    """The name a backend is reported under."""
    return backend.name if isinstance(backend, Backend) else backend


def device_kind(backend: str | Backend) -> str:
    """Where `backend` runs: "cpu" or "cuda"."""
    return backend_of(backend).device


def unavailable(backend: str | Backend, config: TrainConfig | None = None) -> str | None:
    """Why `backend` cannot run here (or with `config`), or None."""
    if isinstance(backend, str) and backend not in BACKENDS:
        return f"unknown backend (choose from {', '.join(BACKENDS)})"
    return backend_of(backend).unavailable(config)


def make_trainer(backend: str | Backend, config: TrainConfig, dataset: Dataset) -> BenchTrainer:
    """A fresh run from the seeded initial weights: gpunet's Trainer, or a reference's."""
    return backend_of(backend).make(config, dataset)


# --- the machine's floor ----------------------------------------------------------------------


def step_cost(sizes: Sequence[int], samples: int, itemsize: int) -> tuple[float, float]:
    """(floating-point operations, bytes that must be read) of one full-batch training step.

    Forward and weight gradients are each 2*n*in*out per layer; the gradient
    flowing back into a layer's inputs is needed for every layer but the
    first. The input matrix must be read at least once; the rest (weights,
    16-wide activations) is small beside it.
    """
    products = [a * b for a, b in pairwise(sizes)]
    flops = 2.0 * samples * (2 * sum(products) + sum(products[1:]))
    return flops, float(samples * sizes[0] * itemsize)


@dataclass(frozen=True)
class Floor:
    """A device's measured rates (see measure_floor), and the dtype they were measured in."""

    device: str
    matmul_flops_per_s: float
    bandwidth_bytes_per_s: float
    measured_with: str
    dtype: str = "float32"

    def ms(self, flops: float, nbytes: float) -> float:
        return 1000.0 * max(flops / self.matmul_flops_per_s, nbytes / self.bandwidth_bytes_per_s)


# --- the report's shapes ----------------------------------------------------------------------
# What `gpunet bench --json` writes is these dicts, as built (the key order is theirs); typed here so
# that every reader (the CLI's tables, the figures, the agreement) is checked against one shape.


class TrainingRun(TypedDict):
    """train_to_target: a run as a user would train it, timed to the target."""

    time_to_target_s: float | None
    target_step: int | None
    wall_seconds: float
    train_accuracy: float
    test_accuracy: float
    final_loss: float
    curve: list[dict[str, float]]  # each evaluation: "seconds" since the start, then the Record's fields
    final_params: NotRequired[list[np.ndarray]]  # compared across backends, then left out of the report
    schedule: str


class MeasuredRun(TrainingRun):
    """measure_training: the run with its backend, set-up time and peak memory."""

    backend: str
    device: str
    init_seconds: float
    peak_host_rss_mb: float
    peak_device_mb: float | None


class StepSummary(TypedDict):
    """step_summary: the timed steps against the floor."""

    ms_per_step_median: float
    ms_per_step_iqr: float
    ms_per_step_p25: float
    ms_per_step_p75: float
    timed_steps: int
    flops_per_step: float
    bytes_per_step: float
    floor_ms: float
    x_floor: float


class XProductTimes(TypedDict):
    """time_x_products: the median ms of each product with X (None for a backend that cannot time them)."""

    x_forward_ms_median: float | None  # X @ W1
    x_gradient_ms_median: float | None  # X.T @ δ1


class BackendResult(MeasuredRun, StepSummary, XProductTimes):
    """One backend's row of the report ("results")."""


class Agreement(TypedDict):
    """How far one backend's final weights and accuracy are from the first backend's."""

    versus: str
    max_relative_weight_difference: float
    test_accuracy_difference: float


class SweepRow(StepSummary):
    axis: str
    backend: str
    samples: int
    hidden: list[int]


class BenchReport(TypedDict):
    """run_bench's report; the CLI adds "sweep" when asked to."""

    date: str
    command: str | None
    machine: dict[str, Any]
    config: dict[str, Any]
    floors: dict[str, dict[str, Any]]  # each Floor's fields
    results: list[BackendResult]
    skipped: dict[str, str]
    agreement: dict[str, Agreement]
    sweep: NotRequired[list[SweepRow]]


class SweepReport(TypedDict):
    machine: dict[str, Any]
    floors: dict[str, dict[str, Any]]
    sweep: list[SweepRow]


def _no_sync() -> None:
    """On the CPU a call's work is done when it returns: nothing to wait for."""


def _best_time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, clock: Clock) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        best = min(best, clock() - start)
    return best


@dataclass(frozen=True)
class FloorLibrary:
    """An array library the floor is measured with: its name, an array namespace with `ones(shape, dtype)`
    and the dtypes as attributes, and how to wait for its device."""

    name: str
    xp: Any
    synchronize: Callable[[], None]


def floor_libraries(kind: str) -> list[FloorLibrary]:
    """The libraries present that compute on `kind` ("cpu": numpy, "cuda": cupy; and torch where installed)."""
    libraries: list[FloorLibrary]
    if kind == "cpu":
        libraries = [FloorLibrary("numpy", np, _no_sync)]
    else:
        device = resolve_device("cuda")
        libraries = [FloorLibrary("cupy", device.xp, device.synchronize)]
    try:
        import torch

        if kind == "cpu" or torch.cuda.is_available():
            sync = torch.cuda.synchronize if kind == "cuda" else _no_sync
            libraries.append(FloorLibrary("torch", _TorchArrays(torch, kind), sync))
    except ImportError:
        pass
    return libraries


FLOOR_REPEATS = 3  # timed runs of each measurement; the best is kept


def measure_floor(
    kind: str, dtype: str = "float32", libraries: Sequence[FloorLibrary] | None = None, clock: Clock = time.perf_counter
) -> Floor:
    """This machine's matrix-multiply rate and memory bandwidth on `kind` ("cpu" or "cuda"), briefly.

    The best of the libraries present is taken (floor_libraries(kind), unless
    `libraries` are given): the floor belongs to the machine, not to one
    library. Each rate is the best of FLOOR_REPEATS runs after an untimed
    one, the device synchronised before every clock read; on a tie the first
    library's is kept.
    """
    rates: list[tuple[float, float, str]] = []
    side = 2048 if kind == "cpu" else 8192
    words = (256 if kind == "cpu" else 2048) * 2**20 // np.dtype(dtype).itemsize
    for library in floor_libraries(kind) if libraries is None else libraries:
        xp, sync = library.xp, library.synchronize
        a = xp.ones((side, side), dtype=getattr(xp, dtype))

        def matmul(a: Any = a) -> Any:
            return a @ a

        t_matmul = _best_time(matmul, sync, FLOOR_REPEATS, clock)
        src, dst = xp.ones((words,), dtype=getattr(xp, dtype)), xp.ones((words,), dtype=getattr(xp, dtype))

        def copy(src: Any = src, dst: Any = dst) -> None:
            dst[...] = src  # reads and writes every byte once, into memory already mapped

        t_copy = _best_time(copy, sync, FLOOR_REPEATS, clock)
        nbytes = 2 * words * np.dtype(dtype).itemsize
        rates.append((2 * side**3 / t_matmul, nbytes / t_copy, library.name))
        del a, src, dst
    flops = max(rates, key=lambda r: r[0])
    bandwidth = max(rates, key=lambda r: r[1])
    return Floor(kind, flops[0], bandwidth[1], f"matmul: {flops[2]}, bandwidth: {bandwidth[2]}", dtype)


class _TorchArrays:
    """Just enough of an array namespace over torch for the floor measurement."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device
        self.float32, self.float64 = torch.float32, torch.float64

    def ones(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.ones(shape, dtype=dtype, device=self.device)


# --- memory -----------------------------------------------------------------------------------

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss(clear_refs: Path = PROC_CLEAR_REFS) -> None:
    """Linux lets a process reset its resident-set high-water mark (writing "5" to `clear_refs`, proc(5));
    elsewhere the peak is process-wide and nothing is reset."""
    try:
        with open(clear_refs, "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes(status: Path = PROC_STATUS) -> int:
    """The resident high-water mark (`status`'s VmHWM on Linux), else getrusage's process-wide peak."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def maxrss_bytes(ru_maxrss: int, platform: str = sys.platform) -> int:
    """getrusage's ru_maxrss in bytes: Linux gives kB, macOS bytes."""
    return ru_maxrss if platform == "darwin" else ru_maxrss * 1024


class HostMemory:
    """This process's peak resident memory (reset_peak_rss, peak_rss_bytes)."""

    def reset(self) -> None:
        reset_peak_rss()

    def peak(self) -> int | None:
        return peak_rss_bytes()


# --- measurements -----------------------------------------------------------------------------


def time_steps(
    trainers: dict[str, BenchTrainer],
    warmup: int,
    steps: int,
    repeats: int,
    on_turn: Callable[[int], None] | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, list[float]]:
    """Milliseconds of each timed step per backend, the device synchronised before every clock read.

    Backends take turns, `steps` at a time, for `repeats` rounds: on a shared
    machine whose speed drifts, the drift then falls on every backend alike
    instead of on whichever happened to run last. Each turn starts with one
    untimed step: PyTorch's OpenMP threads spin for a while after its last
    call, and would otherwise slow the first step of whoever comes next.
    `on_turn(steps timed so far)` is called between turns, off the clock.
    """
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step()
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, trainer in trainers.items():
            trainer.step()
            for _ in range(steps):
                trainer.synchronize()
                start = clock()
                trainer.step()
                trainer.synchronize()
                times[name].append(1000.0 * (clock() - start))
            if on_turn:
                on_turn(sum(map(len, times.values())))
    return times


def time_x_products(products: XProducts, warmup: int, timed: int, clock: Clock = time.perf_counter) -> XProductTimes:
    """The median of `timed` runs of each product after `warmup` untimed ones, synchronised around each run."""
    medians = []
    for product in (products.forward, products.gradient):
        for _ in range(warmup):
            product()
        ms = []
        for _ in range(timed):
            products.synchronize()
            start = clock()
            product()
            products.synchronize()
            ms.append(1000.0 * (clock() - start))
        medians.append(float(np.median(ms)))
    return {"x_forward_ms_median": medians[0], "x_gradient_ms_median": medians[1]}


INIT_SAMPLES = 256


def initialize(
    backend: str | Backend, config: TrainConfig, dataset: Dataset, clock: Clock = time.perf_counter
) -> float:
    """One-time costs, paid before the clock on a few samples: seconds taken.

    A backend's first steps in a process compile kernels (cupy's fused ones),
    create library handles (cuBLAS) and fill memory pools; a second run would
    find most of it cached. Counting it would time the installation rather
    than the training, so every backend gets two untimed steps and an
    evaluation first (MLPerf likewise starts its clock after initialisation).
    """
    start = clock()
    trainer = make_trainer(backend, replace(config, iterations=2, eval_every=2), dataset.first(INIT_SAMPLES))
    try:
        trainer.step()
        trainer.step()
        trainer.evaluate()
        trainer.synchronize()
    finally:
        close(trainer)
    return clock() - start


def train_to_target(
    backend: str | Backend,
    config: TrainConfig,
    dataset: Dataset,
    target: float,
    on_record: Callable[[Record], None] | None = None,
    clock: Clock = time.perf_counter,
) -> TrainingRun:
    """Train as a user would (no per-step synchronisation), noting when the target is first reached.

    `on_record` sees each evaluation: the only progress shown, since the clock is running.
    """
    start = clock()  # the data is in host memory now; the transfer counts
    trainer = make_trainer(backend, config, dataset)
    curve: list[tuple[float, Record]] = []
    reached: float | None = None
    reached_step: int | None = None
    try:
        while True:
            record = trainer.evaluate()  # reads back to the host: an implicit synchronisation
            elapsed = clock() - start
            curve.append((elapsed, record))
            if reached is None and record.test_accuracy >= target:
                reached, reached_step = elapsed, record.iteration
            if on_record:
                on_record(record)
            if trainer.steps_done >= config.iterations:
                break
            for _ in range(min(config.eval_every, config.iterations - trainer.steps_done)):
                trainer.step()
        final_params = trainer.host_params()
    finally:
        close(trainer)
    final = curve[-1][1]
    return {
        "time_to_target_s": reached,
        "target_step": reached_step,
        "wall_seconds": curve[-1][0],
        "train_accuracy": final.train_accuracy,
        "test_accuracy": final.test_accuracy,
        "final_loss": final.loss,
        "curve": [{"seconds": s, **asdict(r)} for s, r in curve],
        "final_params": final_params,
        "schedule": trainer.schedule,
    }


def close(trainer: BenchTrainer) -> None:
    """Let a trainer's worker threads go now (the PyTorch reference has none)."""
    trainer.close()


def measure_training(
    backend: str | Backend,
    settings: BenchSettings,
    dataset: Dataset,
    on_record: Callable[[Record], None] | None = None,
    host_memory: PeakMemory | None = None,
    clock: Clock = time.perf_counter,
) -> MeasuredRun:
    """The training run of one backend, with its peak host and device memory.

    The one-time costs are paid first (initialize), then both peaks are reset,
    so they are kept out of the peaks as they are kept off the clock.
    `host_memory` reads the host's peak (HostMemory unless given).
    """
    entry = backend_of(backend)
    host = HostMemory() if host_memory is None else host_memory
    init_seconds = initialize(entry, settings.config, dataset, clock)
    memory = entry.memory()
    memory.reset()
    host.reset()
    training = train_to_target(entry, settings.config, dataset, settings.target_accuracy, on_record, clock)
    device_peak = memory.peak()
    host_peak = host.peak()
    return {
        "backend": entry.name,
        "device": entry.device,
        "init_seconds": init_seconds,
        **training,
        "peak_host_rss_mb": 0.0 if host_peak is None else host_peak / 2**20,
        "peak_device_mb": None if device_peak is None else device_peak / 2**20,
    }


def step_summary(step_ms: list[float], flops: float, nbytes: float, floor: Floor) -> StepSummary:
    p25, median, p75 = (float(v) for v in np.percentile(step_ms, [25, 50, 75]))
    floor_ms = floor.ms(flops, nbytes)
    return {
        "ms_per_step_median": median,
        "ms_per_step_iqr": p75 - p25,
        "ms_per_step_p25": p25,
        "ms_per_step_p75": p75,
        "timed_steps": len(step_ms),
        "flops_per_step": flops,
        "bytes_per_step": nbytes,
        "floor_ms": floor_ms,
        "x_floor": median / floor_ms,
    }


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo"), fallback: str | None = None) -> str:
    """The CPU's model name from `cpuinfo` (Linux), else `fallback` (platform.processor() or .machine())."""
    if fallback is None:
        fallback = platform.processor() or platform.machine()
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), fallback)
    except OSError:
        return fallback


def machine_info() -> dict[str, Any]:
    versions = {"python": platform.python_version(), "numpy": np.__version__, "gpunet": __version__}
    if cupy_version():
        versions["cupy"] = cupy_version()
    for library in ("numba", "torch"):  # numba compiles the CPU kernels; torch is a reference
        with contextlib.suppress(Exception):  # absent or broken: the record leaves it out
            versions[library] = __import__(library).__version__
    return {
        "cpu": cpu_name(),
        "cores": cpu_cores(),
        "blas": blas_info(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "devices": [f"{name}: {detail}" for name, detail in describe()],
        "versions": versions,
        "platform": platform.platform(),
    }


def invoked_command(argv: Sequence[str] | None = None) -> str | None:
    """The gpunet command line this process runs (`argv`: sys.argv), or None when it is not gpunet's:
    the entry point (.../gpunet) or `python -m gpunet` (.../gpunet/__main__.py)."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return None
    program = Path(argv[0])
    if program.name != "gpunet" and program.parent.name != "gpunet":
        return None
    return " ".join(["gpunet", *argv[1:]])


def run_bench(
    settings: BenchSettings,
    dataset: Dataset,
    backends: Sequence[str | Backend],
    say: Callable[[str], None] = lambda _: None,
    progress: Progress | None = None,
    floors: dict[str, Floor] | None = None,
    clock: Clock = time.perf_counter,
) -> BenchReport:
    """Every requested backend in turn (a name from BACKENDS, or a Backend of your own); unavailable
    ones are listed with the reason.

    `progress` shows each backend's training and the timing rounds as `gpunet train` shows its
    steps; it is redrawn only at evaluations and between timing turns, never while a step is timed.
    `floors` are floors already measured, by device kind: those kinds are not measured again.
    """
    config = settings.config
    runnable: list[Backend] = []
    skipped = {}
    for backend in backends:
        reason = unavailable(backend, config)
        if reason:
            skipped[backend_name(backend)] = reason
            say(f"{backend_name(backend)}: skipped ({reason})")
        else:
            runnable.append(backend_of(backend))
    floors = dict(floors or {})
    for kind in dict.fromkeys(b.device for b in runnable):
        if kind not in floors:
            say(f"measuring this machine's {kind} matrix-multiply rate and memory bandwidth")
            floors[kind] = measure_floor(kind, config.dtype, clock=clock)
    trained: dict[str, MeasuredRun] = {}
    for b in runnable:
        say(f"{b.name}: training {config.iterations} steps")
        with _showing(progress, config.iterations, f"{b.name} step"):
            record = progress.record if progress else None
            trained[b.name] = measure_training(b, settings, dataset, record, clock=clock)
    say(f"timing steps: {settings.repeats} rounds of {settings.timed_steps} per backend, taking turns")
    timers = {b.name: make_trainer(b, config, dataset) for b in runnable}
    with _showing(progress, len(timers) * settings.repeats * settings.timed_steps, "timed step"):
        step_ms = time_steps(
            timers, settings.warmup, settings.timed_steps, settings.repeats, progress.step if progress else None, clock
        )
    for timer in timers.values():
        close(timer)
    products = _time_x_products(runnable, settings, dataset, say, clock)
    rows = min(config.batch_size or len(dataset.train_images), len(dataset.train_images))
    flops, nbytes = step_cost(layer_sizes(config, dataset), rows, np.dtype(config.dtype).itemsize)
    results: list[BackendResult] = [
        {**trained[b.name], **step_summary(step_ms[b.name], flops, nbytes, floors[b.device]), **products[b.name]}
        for b in runnable
    ]
    agreement = weight_agreement([r for r, b in zip(results, runnable) if b.same_start])
    for r in results:
        r.pop("final_params")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": invoked_command(),
        "machine": machine_info(),
        "config": {
            **asdict(settings.config),
            "dataset": dataset.name,
            "dataset_source": dataset.source,
            "samples": int(dataset.train_images.shape[0]),
            "target_accuracy": settings.target_accuracy,
            "warmup": settings.warmup,
            "timed_steps": settings.timed_steps,
            "repeats": settings.repeats,
        },
        "floors": {k: asdict(v) for k, v in floors.items() if k in {b.device for b in runnable}},
        "results": results,
        "skipped": skipped,
        "agreement": agreement,
    }


def _time_x_products(
    runnable: Sequence[Backend], settings: BenchSettings, dataset: Dataset, say: Callable[[str], None], clock: Clock
) -> dict[str, XProductTimes]:
    """Each backend's two products with X, timed alone (None for those that cannot build them)."""
    timed = settings.repeats * settings.timed_steps
    times: dict[str, XProductTimes] = {}
    for b in runnable:
        times[b.name] = {"x_forward_ms_median": None, "x_gradient_ms_median": None}
    able = [b for b in runnable if b.x_products is not None]
    if able:
        say(f"timing the products with X (X @ W1, X.T @ d1): {timed} of each per backend")
    for b in able:
        assert b.x_products is not None
        products = b.x_products(settings.config, dataset)
        times[b.name] = time_x_products(products, settings.warmup, timed, clock)
        del products  # another copy of X: let it go before the next backend's
    return times


class _Compared(TypedDict):
    backend: str
    test_accuracy: float
    final_params: list[np.ndarray]


def weight_agreement(results: Sequence[_Compared] | Sequence[BackendResult]) -> dict[str, Agreement]:
    """How far each result's final weights and test accuracy are from the first result's.

    Each weight difference is relative, ||a - b|| / ||b|| per parameter array (a
    zero reference counts as 1e-30), and the largest is reported. run_bench
    passes the backends that start from gpunet's initial weights only.
    """
    if not results:
        return {}
    reference = results[0]
    out: dict[str, Agreement] = {}
    for r in results[1:]:
        diffs = [
            float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
            for a, b in zip(r["final_params"], reference["final_params"])
        ]
        out[r["backend"]] = {
            "versus": reference["backend"],
            "max_relative_weight_difference": max(diffs),
            "test_accuracy_difference": r["test_accuracy"] - reference["test_accuracy"],
        }
    return out


def _showing(progress: Progress | None, total: int, label: str) -> contextlib.AbstractContextManager[Any]:
    return progress.training(total, label, redraw_on_update=True) if progress else contextlib.nullcontext()


def sweep(
    settings: BenchSettings,
    dataset: Dataset,
    backends: Sequence[str | Backend],
    samples: Sequence[int] = (7500, 15000, 30000, 60000),
    widths: Sequence[int] = (16, 32, 64, 128, 256),
    say: Callable[[str], None] = lambda _: None,
    floors: dict[str, Floor] | None = None,
    clock: Clock = time.perf_counter,
) -> SweepReport:
    """ms per step as the work grows: more samples (hidden 16,16), then wider layers (all samples).

    Fewer timed steps than the main table (a wide step is slow on a CPU); medians still.
    Backends that cannot run here are left out; `floors` as in run_bench.
    """
    settings = replace(settings, warmup=min(settings.warmup, 2), timed_steps=min(settings.timed_steps, 5))
    runnable = [backend_of(b) for b in backends if not unavailable(b)]
    floors = dict(floors or {})
    for kind in dict.fromkeys(b.device for b in runnable if b.device not in floors):
        floors[kind] = measure_floor(kind, settings.config.dtype, clock=clock)
    n_max = len(dataset.train_images)
    cases = [("samples", n, settings.config.hidden) for n in samples if n <= n_max]
    cases += [("width", n_max, (w, w)) for w in widths]
    rows: list[SweepRow] = []
    for axis, n, hidden in cases:
        subset = replace(dataset, train_images=dataset.train_images[:n], train_labels=dataset.train_labels[:n])
        config = replace(settings.config, hidden=hidden, batch_size=None)
        flops, nbytes = step_cost(layer_sizes(config, subset), n, np.dtype(config.dtype).itemsize)
        say(f"sweep: {n} samples, hidden {','.join(map(str, hidden))}")
        timers = {b.name: make_trainer(b, config, subset) for b in runnable}
        step_ms = time_steps(timers, settings.warmup, settings.timed_steps, settings.repeats, clock=clock)
        for timer in timers.values():
            close(timer)
        for b in runnable:
            summary = step_summary(step_ms[b.name], flops, nbytes, floors[b.device])
            rows.append({"axis": axis, "backend": b.name, "samples": n, "hidden": list(hidden), **summary})
    return {"machine": machine_info(), "floors": {k: asdict(v) for k, v in floors.items()}, "sweep": rows}
