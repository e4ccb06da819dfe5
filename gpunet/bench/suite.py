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
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from gpunet import params
from gpunet.data.datasets import Dataset
from gpunet.device.backend import Device, blas_info, cupy_version, describe, resolve_device
from gpunet.errors import DeviceError
from gpunet.training.engine import LocalEngine, cpu_cores
from gpunet.training.train import Record, TrainConfig, Trainer, layer_sizes
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


# "numpy" is gpunet's engine for numpy as chosen by default (numba's CPU kernels where they serve);
# "numpy-reference" the array-API math (gpunet.core.model) in row chunks on threads, beside it.
BACKENDS = ("numpy", "numpy-reference", "cupy", "torch-cpu", "torch-cuda", "sklearn")
# Backends that start from gpunet's initial weights and batch order, so their final weights are comparable.
SAME_START = ("numpy", "numpy-reference", "cupy", "torch-cpu", "torch-cuda")


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


# --- backends ---------------------------------------------------------------------------------


def device_kind(backend: str) -> str:
    return "cuda" if backend in ("cupy", "torch-cuda") else "cpu"


def unavailable(backend: str, config: TrainConfig | None = None) -> str | None:
    """Why `backend` cannot run here (or with `config`), or None."""
    if backend not in BACKENDS:
        return f"unknown backend (choose from {', '.join(BACKENDS)})"
    if backend in ("numpy", "numpy-reference"):
        return None
    if backend == "cupy":
        try:
            resolve_device("cuda")
        except DeviceError as e:
            return str(e)
        return None
    if backend == "sklearn":
        from gpunet.bench.sklearn_reference import sklearn_unavailable

        return sklearn_unavailable(config)
    from gpunet.bench.torch_reference import torch_unavailable

    return torch_unavailable(device_kind(backend))


def make_trainer(backend: str, config: TrainConfig, dataset: Dataset) -> BenchTrainer:
    """A fresh run from the seeded initial weights: gpunet's Trainer, or the PyTorch reference."""
    if backend in ("numpy", "cupy"):
        return Trainer(config, dataset, resolve_device(device_kind(backend)))
    if backend == "numpy-reference":
        device = resolve_device("cpu")
        return Trainer(config, dataset, device, engine=LocalEngine.for_device(device))
    if backend == "sklearn":
        from gpunet.bench.sklearn_reference import SklearnTrainer

        return SklearnTrainer(config, dataset)
    from gpunet.bench.torch_reference import TorchTrainer

    return TorchTrainer(config, dataset, device_kind(backend))


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
    device: str
    matmul_flops_per_s: float
    bandwidth_bytes_per_s: float
    measured_with: str

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


class BackendResult(MeasuredRun, StepSummary):
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


def _best_time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_floor(kind: str, dtype: str = "float32") -> Floor:
    """This machine's matrix-multiply rate and memory bandwidth on `kind` ("cpu" or "cuda"), briefly.

    The best of the libraries present is taken (numpy or cupy, and torch if
    installed): the floor belongs to the machine, not to one library.
    """
    rates: list[tuple[float, float, str]] = []
    libraries: list[tuple[str, Any, Callable[[], None]]]  # name, array namespace, wait for the device
    if kind == "cpu":
        libraries = [("numpy", np, _no_sync)]
    else:
        device = resolve_device("cuda")
        libraries = [("cupy", device.xp, device.synchronize)]
    try:
        import torch

        if kind == "cpu" or torch.cuda.is_available():
            torch_device = "cuda" if kind == "cuda" else "cpu"
            sync = torch.cuda.synchronize if kind == "cuda" else _no_sync
            libraries.append(("torch", _TorchArrays(torch, torch_device), sync))
    except ImportError:
        pass
    side = 2048 if kind == "cpu" else 8192
    words = (256 if kind == "cpu" else 2048) * 2**20 // np.dtype(dtype).itemsize
    for name, xp, sync in libraries:
        a = xp.ones((side, side), dtype=getattr(xp, dtype))

        def matmul(a: Any = a) -> Any:
            return a @ a

        t_matmul = _best_time(matmul, sync, 3)
        src, dst = xp.ones((words,), dtype=getattr(xp, dtype)), xp.ones((words,), dtype=getattr(xp, dtype))

        def copy(src: Any = src, dst: Any = dst) -> None:
            dst[...] = src  # reads and writes every byte once, into memory already mapped

        t_copy = _best_time(copy, sync, 3)
        nbytes = 2 * words * np.dtype(dtype).itemsize
        rates.append((2 * side**3 / t_matmul, nbytes / t_copy, name))
        del a, src, dst
    flops = max(rates, key=lambda r: r[0])
    bandwidth = max(rates, key=lambda r: r[1])
    return Floor(kind, flops[0], bandwidth[1], f"matmul: {flops[2]}, bandwidth: {bandwidth[2]}")


class _TorchArrays:
    """Just enough of an array namespace over torch for the floor measurement."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device
        self.float32, self.float64 = torch.float32, torch.float64

    def ones(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.ones(shape, dtype=dtype, device=self.device)


# --- memory -----------------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Linux lets a process reset its resident-set high-water mark; elsewhere the peak is process-wide."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _DeviceMemory:
    """Peak device memory for a backend: cupy's pool or torch's allocator statistics."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.device: Device | None = resolve_device("cuda") if backend == "cupy" else None

    def reset(self) -> None:
        if self.device is not None:
            self.device.reset_memory_peak()
        elif self.backend == "torch-cuda":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        if self.device is not None:
            return self.device.memory_peak_bytes()
        if self.backend == "torch-cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        return None


# --- measurements -----------------------------------------------------------------------------


def time_steps(
    trainers: dict[str, BenchTrainer],
    warmup: int,
    steps: int,
    repeats: int,
    on_turn: Callable[[int], None] | None = None,
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
                start = time.perf_counter()
                trainer.step()
                trainer.synchronize()
                times[name].append(1000.0 * (time.perf_counter() - start))
            if on_turn:
                on_turn(sum(map(len, times.values())))
    return times


INIT_SAMPLES = 256


def initialize(backend: str, config: TrainConfig, dataset: Dataset) -> float:
    """One-time costs, paid before the clock on a few samples: seconds taken.

    A backend's first steps in a process compile kernels (cupy's fused ones),
    create library handles (cuBLAS) and fill memory pools; a second run would
    find most of it cached. Counting it would time the installation rather
    than the training, so every backend gets two untimed steps and an
    evaluation first (MLPerf likewise starts its clock after initialisation).
    """
    start = time.perf_counter()
    trainer = make_trainer(backend, replace(config, iterations=2, eval_every=2), dataset.first(INIT_SAMPLES))
    try:
        trainer.step()
        trainer.step()
        trainer.evaluate()
        trainer.synchronize()
    finally:
        close(trainer)
    return time.perf_counter() - start


def train_to_target(
    backend: str,
    config: TrainConfig,
    dataset: Dataset,
    target: float,
    on_record: Callable[[Record], None] | None = None,
) -> TrainingRun:
    """Train as a user would (no per-step synchronisation), noting when the target is first reached.

    `on_record` sees each evaluation: the only progress shown, since the clock is running.
    """
    start = time.perf_counter()  # the data is in host memory now; the transfer counts
    trainer = make_trainer(backend, config, dataset)
    curve: list[tuple[float, Record]] = []
    reached: float | None = None
    reached_step: int | None = None
    try:
        while True:
            record = trainer.evaluate()  # reads back to the host: an implicit synchronisation
            elapsed = time.perf_counter() - start
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
    backend: str, settings: BenchSettings, dataset: Dataset, on_record: Callable[[Record], None] | None = None
) -> MeasuredRun:
    """The training run of one backend, with its peak host and device memory."""
    init_seconds = initialize(backend, settings.config, dataset)
    memory = _DeviceMemory(backend)
    memory.reset()
    reset_peak_rss()
    training = train_to_target(backend, settings.config, dataset, settings.target_accuracy, on_record)
    device_peak = memory.peak()
    return {
        "backend": backend,
        "device": device_kind(backend),
        "init_seconds": init_seconds,
        **training,
        "peak_host_rss_mb": peak_rss_bytes() / 2**20,
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


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "gpunet": __version__}
    if cupy_version():
        versions["cupy"] = cupy_version()
    with contextlib.suppress(Exception):  # absent or broken: the record leaves it out
        versions["torch"] = __import__("torch").__version__
    return {
        "cpu": cpu,
        "cores": cpu_cores(),
        "blas": blas_info(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "devices": [f"{name}: {detail}" for name, detail in describe()],
        "versions": versions,
        "platform": platform.platform(),
    }


def run_bench(
    settings: BenchSettings,
    dataset: Dataset,
    backends: Sequence[str],
    say: Callable[[str], None] = lambda _: None,
    progress: Progress | None = None,
) -> BenchReport:
    """Every requested backend in turn; unavailable ones are listed with the reason.

    `progress` shows each backend's training and the timing rounds as `gpunet train` shows its
    steps; it is redrawn only at evaluations and between timing turns, never while a step is timed.
    """
    config = settings.config
    runnable, skipped = [], {}
    for backend in backends:
        reason = unavailable(backend, config)
        if reason:
            skipped[backend] = reason
            say(f"{backend}: skipped ({reason})")
        else:
            runnable.append(backend)
    floors: dict[str, Floor] = {}
    for kind in dict.fromkeys(device_kind(b) for b in runnable):
        say(f"measuring this machine's {kind} matrix-multiply rate and memory bandwidth")
        floors[kind] = measure_floor(kind, config.dtype)
    trained: dict[str, MeasuredRun] = {}
    for backend in runnable:
        say(f"{backend}: training {config.iterations} steps")
        with _showing(progress, config.iterations, f"{backend} step"):
            trained[backend] = measure_training(backend, settings, dataset, progress.record if progress else None)
    say(f"timing steps: {settings.repeats} rounds of {settings.timed_steps} per backend, taking turns")
    timers = {b: make_trainer(b, config, dataset) for b in runnable}
    with _showing(progress, len(timers) * settings.repeats * settings.timed_steps, "timed step"):
        step_ms = time_steps(
            timers, settings.warmup, settings.timed_steps, settings.repeats, progress.step if progress else None
        )
    for timer in timers.values():
        close(timer)
    rows = min(config.batch_size or len(dataset.train_images), len(dataset.train_images))
    flops, nbytes = step_cost(layer_sizes(config, dataset), rows, np.dtype(config.dtype).itemsize)
    results: list[BackendResult] = [
        {**trained[b], **step_summary(step_ms[b], flops, nbytes, floors[device_kind(b)])} for b in runnable
    ]
    agreement = _agreement(results)
    for r in results:
        r.pop("final_params")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["gpunet", *sys.argv[1:]]) if sys.argv and "gpunet" in sys.argv[0] else None,
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
        "floors": {k: asdict(v) for k, v in floors.items()},
        "results": results,
        "skipped": skipped,
        "agreement": agreement,
    }


def _agreement(results: list[BackendResult]) -> dict[str, Agreement]:
    """How far each backend's final weights and accuracy are from the first backend's.

    Only backends that start from gpunet's initial weights are compared (not scikit-learn's).
    """
    results = [r for r in results if r["backend"] in SAME_START]
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
    backends: Sequence[str],
    samples: Sequence[int] = (7500, 15000, 30000, 60000),
    widths: Sequence[int] = (16, 32, 64, 128, 256),
    say: Callable[[str], None] = lambda _: None,
    floors: dict[str, Floor] | None = None,
) -> SweepReport:
    """ms per step as the work grows: more samples (hidden 16,16), then wider layers (all samples).

    Fewer timed steps than the main table (a wide step is slow on a CPU); medians still.
    """
    settings = replace(settings, warmup=min(settings.warmup, 2), timed_steps=min(settings.timed_steps, 5))
    runnable = [b for b in backends if not unavailable(b)]
    floors = dict(floors or {})
    for kind in {device_kind(b) for b in runnable} - set(floors):
        floors[kind] = measure_floor(kind, settings.config.dtype)
    n_max = len(dataset.train_images)
    cases = [("samples", n, settings.config.hidden) for n in samples if n <= n_max]
    cases += [("width", n_max, (w, w)) for w in widths]
    rows: list[SweepRow] = []
    for axis, n, hidden in cases:
        subset = replace(dataset, train_images=dataset.train_images[:n], train_labels=dataset.train_labels[:n])
        config = replace(settings.config, hidden=hidden, batch_size=None)
        flops, nbytes = step_cost(layer_sizes(config, subset), n, np.dtype(config.dtype).itemsize)
        say(f"sweep: {n} samples, hidden {','.join(map(str, hidden))}")
        timers = {b: make_trainer(b, config, subset) for b in runnable}
        step_ms = time_steps(timers, settings.warmup, settings.timed_steps, settings.repeats)
        for timer in timers.values():
            close(timer)
        for backend in runnable:
            summary = step_summary(step_ms[backend], flops, nbytes, floors[device_kind(backend)])
            rows.append({"axis": axis, "backend": backend, "samples": n, "hidden": list(hidden), **summary})
    return {"machine": machine_info(), "floors": {k: asdict(v) for k, v in floors.items()}, "sweep": rows}
