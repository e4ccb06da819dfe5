"""The benchmark on a tiny configuration: structure, sanity and arithmetic, never timing thresholds.

Everything here goes through the bench's public surface: `gpunet bench`, and gpunet.bench.suite's
functions with the parameters they document for control (a `clock`, `floors` already measured,
FloorLibrary arrays, a Backend of one's own whose trainer follows a script, PeakMemory readers,
/proc paths). Nothing of the bench is replaced from outside.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.bench import suite
from gpunet.cli.commands import app
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.errors import DeviceError
from gpunet.training.train import Record, TrainConfig, Trainer
from tests.conftest import cuda_device, numpy_device
from tests.helpers import invoke, one_line_error

ROOT = Path(__file__).resolve().parents[1]

TINY = suite.BenchSettings(
    TrainConfig(iterations=30, eval_every=10), target_accuracy=0.5, warmup=1, timed_steps=3, repeats=2
)
FIXED_FLOOR = suite.Floor("cpu", matmul_flops_per_s=1e9, bandwidth_bytes_per_s=1e9, measured_with="stub")


def cpu_backends() -> list[str]:
    """numpy always; the PyTorch reference where torch is installed (CI installs it)."""
    return ["numpy"] + ([] if suite.unavailable("torch-cpu") else ["torch-cpu"])


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python without torch: `import torch` raises ImportError (the environment, not the bench, is changed)."""
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.fixture(scope="module")
def report() -> dict:
    return suite.run_bench(TINY, datasets.synthetic(n_train=1000, n_test=300), cpu_backends())


# --- stand-ins the bench's parameters accept ---------------------------------------------------


class Clock:
    """A clock for the bench's `clock` parameter: each read is logged in `events` and advances by the next tick."""

    def __init__(self, events: list[str], ticks: Iterable[float]) -> None:
        self.events, self.ticks, self.now = events, iter(ticks), 0.0

    def __call__(self) -> float:
        self.events.append("clock")
        self.now += next(self.ticks, 1.0)
        return self.now


class WorkClock:
    """A clock that stands still until work advances it: `advance(seconds)`; reads are logged in `events`."""

    def __init__(self, events: list | None = None) -> None:
        self.now, self.events = 0.0, events

    def __call__(self) -> float:
        if self.events is not None:
            self.events.append("clock")
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Scripted:
    """A BenchTrainer whose test accuracy follows a script, one value per evaluation; it logs every call.

    Each step takes `step_seconds` on `clock` (when given); its final weights are all `weight`.
    """

    def __init__(
        self,
        accuracies: Iterable[float],
        calls: list,
        clock: WorkClock | None = None,
        step_seconds: float = 0.0,
        weight: float | None = None,
        on_step: Any = None,
    ) -> None:
        self.accuracies, self.calls, self.steps_done = iter(accuracies), calls, 0
        self.clock, self.step_seconds, self.weight, self.on_step = clock, step_seconds, weight, on_step
        self.schedule = "scripted"

    def step(self) -> None:
        self.calls.append("step")
        if self.clock:
            self.clock.advance(self.step_seconds)
        if self.on_step:
            self.on_step()
        self.steps_done += 1

    def evaluate(self) -> Record:
        self.calls.append(f"evaluate at {self.steps_done}")
        return Record(self.steps_done, 1.0 / (1 + self.steps_done), 0.5, next(self.accuracies, 1.0))

    def synchronize(self) -> None:
        self.calls.append("sync")

    def host_params(self) -> list[np.ndarray]:
        return [np.full(2, float(self.steps_done) if self.weight is None else self.weight)]

    def close(self) -> None:
        self.calls.append("close")


def scripted_backend(
    name: str,
    calls: list,
    accuracies: Iterable[float] = (),
    device: str = "cpu",
    made: list | None = None,
    **scripted: Any,
) -> suite.Backend:
    """A Backend of one's own: each run it makes is a Scripted trainer (listed in `made` with its config and data)."""
    script = list(accuracies)

    def make(config: TrainConfig, dataset: datasets.Dataset) -> Scripted:
        trainer = Scripted(script, calls, **scripted)
        if made is not None:
            made.append((trainer, config, dataset))
        return trainer

    return suite.Backend(name, device, make)


# --- the floor: its arithmetic, and how it is measured -----------------------------------------


def test_step_cost_of_the_seed_network() -> None:
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 60000, 4)
    # forward 2n(784*16 + 16*16 + 16*10), the same again for weight gradients,
    # and 2n(16*16 + 16*10) for the gradients flowing back past the first layer
    assert flops == 2 * 60000 * (2 * (12544 + 256 + 160) + 256 + 160) == 3_160_320_000
    assert nbytes == 60000 * 784 * 4


def test_the_floor_is_the_slower_of_compute_and_memory() -> None:
    floor = suite.Floor("cpu", matmul_flops_per_s=1e11, bandwidth_bytes_per_s=1e10, measured_with="test")
    assert floor.ms(1e9, 1e7) == pytest.approx(10.0)  # compute-bound
    assert floor.ms(1e6, 1e9) == pytest.approx(100.0)  # memory-bound


class FakeArrays:
    """An array namespace for a FloorLibrary: it records every array asked for and hands out tiny ones
    whose work (a product, a copy) takes the next of `matmul_s` / `copy_s` seconds on `clock`."""

    def __init__(self, name: str, clock: WorkClock, matmul_s: Iterable[float], copy_s: Iterable[float]) -> None:
        self.name, self.clock = name, clock
        self.matmul_s, self.copy_s = iter(matmul_s), iter(copy_s)
        self.float32, self.float64 = f"{name} f32", f"{name} f64"
        self.allocated: list[tuple[tuple[int, ...], str]] = []
        self.work: list[str] = []
        self.vectors: list[FakeArray] = []

    def ones(self, shape: tuple[int, ...], dtype: str) -> FakeArray:
        self.allocated.append((shape, dtype))
        array = FakeArray(self, shape)
        if len(shape) == 1:
            self.vectors.append(array)
        return array

    def library(self, events: list | None = None) -> suite.FloorLibrary:
        def sync() -> None:
            if events is not None:
                events.append(f"{self.name} sync")

        return suite.FloorLibrary(self.name, self, sync)


class FakeArray:
    def __init__(self, arrays: FakeArrays, shape: tuple[int, ...]) -> None:
        self.arrays, self.shape = arrays, shape

    def __matmul__(self, other: FakeArray) -> FakeArray:
        assert other is self and len(self.shape) == 2  # the square product of the matrix with itself
        self.arrays.work.append("matmul")
        self.arrays.clock.advance(next(self.arrays.matmul_s))
        return self

    def __setitem__(self, key: object, value: FakeArray) -> None:
        # dst[...] = src: the second vector overwritten with the first, whole
        assert key is Ellipsis and self.arrays.vectors[-2:] == [value, self]
        self.arrays.work.append("copy")
        self.arrays.clock.advance(next(self.arrays.copy_s))


def test_the_floor_measurement_is_exact_arithmetic_on_its_timings() -> None:
    """With the work's time known, the rates are exactly work / time: a 2x error in the FLOP or byte count fails."""
    for dtype, itemsize in (("float32", 4), ("float64", 8)):
        clock = WorkClock()
        arrays = FakeArrays("fake", clock, [9.0, 0.5, 0.5, 0.5], [9.0, 0.25, 0.25, 0.25])
        floor = suite.measure_floor("cpu", dtype, libraries=[arrays.library()], clock=clock)
        words = 256 * 2**20 // itemsize  # 256 MiB read and 256 MiB written
        short = f"fake {dtype[0]}{dtype[-2:]}"
        assert arrays.allocated == [
            ((2048, 2048), short),
            ((words,), short),
            ((words,), short),
        ]  # a matrix, two vectors
        assert floor.matmul_flops_per_s == 2 * 2048**3 / 0.5  # a 2048x2048 product is 2*2048^3 operations
        assert floor.bandwidth_bytes_per_s == 2 * words * itemsize / 0.25 == 2 * 2**28 / 0.25
        # one untimed run, then FLOOR_REPEATS (3) timed ones of each
        assert suite.FLOOR_REPEATS == 3 and arrays.work == ["matmul"] * 4 + ["copy"] * 4
        assert (floor.device, floor.dtype) == ("cpu", dtype)
        assert floor.measured_with == "matmul: fake, bandwidth: fake"


def test_the_floor_synchronises_before_every_clock_read_and_keeps_the_best_run() -> None:
    """On a GPU the work is queued: a clock read not preceded by a sync measures the queueing, not the work."""
    events: list = []
    clock = WorkClock(events)
    arrays = FakeArrays("lib", clock, [10.0, 0.75, 0.5, 1.0], [10.0, 0.5, 0.25, 1.0])
    arrays.work = events  # the work is logged among the syncs and clock reads
    floor = suite.measure_floor("cuda", libraries=[arrays.library(events)], clock=clock)
    timed = ["lib sync", "clock", "{work}", "lib sync", "clock"]

    def measured(work: str) -> list[str]:
        return [work, "lib sync", *[e.format(work=work) for e in timed] * 3]  # one untimed run first

    assert events == measured("matmul") + measured("copy")
    assert floor.matmul_flops_per_s == 2 * 8192**3 / 0.5  # the best of the three: 0.5 s
    assert floor.bandwidth_bytes_per_s == 2 * 2048 * 2**20 / 0.25


def test_the_gpu_floor_uses_large_arrays_and_the_best_library() -> None:
    events: list = []
    clock = WorkClock()
    cupy = FakeArrays("cupy", clock, [1.0] * 4, [1.0] * 4)
    torch = FakeArrays("torch", clock, [0.5] * 4, [2.0] * 4)
    for arrays in (cupy, torch):
        arrays.work = events
    floor = suite.measure_floor("cuda", libraries=[cupy.library(events), torch.library(events)], clock=clock)
    words = 2048 * 2**20 // 4  # 2 GiB read and 2 GiB written: far past any GPU cache
    assert cupy.allocated == [((8192, 8192), "cupy f32"), ((words,), "cupy f32"), ((words,), "cupy f32")]
    assert torch.allocated == [((8192, 8192), "torch f32"), ((words,), "torch f32"), ((words,), "torch f32")]
    # each library's work is waited for with its own synchronisation
    first_half, second_half = events[: len(events) // 2], events[len(events) // 2 :]
    assert first_half.count("matmul") == first_half.count("copy") == 4
    assert {e for e in first_half if "sync" in e} == {"cupy sync"}
    assert {e for e in second_half if "sync" in e} == {"torch sync"}
    assert floor == suite.Floor("cuda", 2 * 8192**3 / 0.5, 2 * words * 4 / 1.0, "matmul: torch, bandwidth: cupy")


def test_the_floor_takes_each_rate_from_the_library_best_at_it_the_first_on_a_tie() -> None:
    clock = WorkClock()
    numpy_like = FakeArrays("numpy", clock, [1.0] * 4, [1.0] * 4)
    torch_like = FakeArrays("torch", clock, [1.0] * 4, [0.5] * 4)  # the same matmul rate; it copies twice as fast
    libraries = [numpy_like.library(), torch_like.library()]
    assert (
        suite.measure_floor("cpu", libraries=libraries, clock=clock).measured_with == "matmul: numpy, bandwidth: torch"
    )
    clock = WorkClock()
    numpy_like = FakeArrays("numpy", clock, [1.0] * 4, [1.0] * 4)
    torch_like = FakeArrays("torch", clock, [0.5] * 4, [0.5] * 4)  # faster at both
    floor = suite.measure_floor("cpu", "float64", [numpy_like.library(), torch_like.library()], clock)
    assert floor.measured_with == "matmul: torch, bandwidth: torch"
    assert floor.matmul_flops_per_s == 2 * 2048**3 / 0.5 and floor.bandwidth_bytes_per_s == 2 * 2**28 / 0.5


def test_the_cpu_floor_is_measured_with_numpy_and_torch_where_installed() -> None:
    libraries = suite.floor_libraries("cpu")
    torch_here = suite.unavailable("torch-cpu") is None
    assert [lib.name for lib in libraries] == ["numpy"] + (["torch"] if torch_here else [])
    assert libraries[0].xp is np and libraries[0].synchronize() is None  # nothing to wait for on the CPU
    if torch_here:
        import torch

        ones = libraries[1].xp.ones((2, 3), dtype=libraries[1].xp.float64)
        assert ones.device.type == "cpu" and ones.dtype == torch.float64 and ones.shape == (2, 3)
        assert libraries[1].synchronize() is None  # no CUDA synchronisation: this would raise without a GPU


def test_a_floor_without_torch_is_numpys_alone(without_torch: None) -> None:
    assert [lib.name for lib in suite.floor_libraries("cpu")] == ["numpy"]


def test_the_real_floor_measurement_runs() -> None:
    """On the real machine the numbers exist and are positive; their arithmetic is checked above."""
    floor = suite.measure_floor("cpu")
    assert floor.matmul_flops_per_s > 0 and floor.bandwidth_bytes_per_s > 0
    assert math.isfinite(floor.matmul_flops_per_s) and math.isfinite(floor.bandwidth_bytes_per_s)
    names = {lib.name for lib in suite.floor_libraries("cpu")}
    matmul, bandwidth = re.fullmatch(r"matmul: (\w+), bandwidth: (\w+)", floor.measured_with).groups()
    assert {matmul, bandwidth} <= names and floor.dtype == "float32"


# --- timing steps ------------------------------------------------------------------------------


def test_step_timings_synchronise_around_every_timed_step() -> None:
    events: list[str] = []

    class Recording:
        def __init__(self, name: str) -> None:
            self.name = name

        def step(self) -> None:
            events.append(f"step {self.name}")

        def synchronize(self) -> None:
            events.append(f"sync {self.name}")

    clock = Clock(events, [100.0, 0.002, 100.0, 0.004, 100.0, 0.003, 100.0, 0.001])
    trainers: dict[str, Any] = {"a": Recording("a"), "b": Recording("b")}
    times = suite.time_steps(trainers, warmup=2, steps=2, repeats=1, clock=clock)

    def turn(name: str) -> list[str]:
        timed = [f"sync {name}", "clock", f"step {name}", f"sync {name}", "clock"]
        return [f"step {name}", *timed * 2]  # an untimed step, then the timed ones

    assert events == ["step a", "step a", "step b", "step b", *turn("a"), *turn("b")]
    assert times["a"] == pytest.approx([2.0, 4.0]) and times["b"] == pytest.approx([3.0, 1.0])


def test_time_steps_reports_progress_between_turns() -> None:
    turns: list[int] = []
    calls: list[str] = []
    trainers: dict[str, Any] = {"a": Scripted([], calls), "b": Scripted([], calls)}
    times = suite.time_steps(trainers, warmup=0, steps=3, repeats=2, on_turn=turns.append)
    assert turns == [3, 6, 9, 12]  # timed steps so far, after each backend's turn
    assert [len(t) for t in times.values()] == [6, 6] and all(ms >= 0 for t in times.values() for ms in t)
    assert calls.count("step") == 2 * 2 * (1 + 3)  # each turn: one untimed step, then the timed ones


def test_step_summary_arithmetic() -> None:
    floor = suite.Floor("cpu", matmul_flops_per_s=1e9, bandwidth_bytes_per_s=1e12, measured_with="test")
    summary = suite.step_summary([4.0, 1.0, 3.0, 2.0, 10.0], flops=2e6, nbytes=1e6, floor=floor)
    assert summary["ms_per_step_median"] == 3.0
    assert (summary["ms_per_step_p25"], summary["ms_per_step_p75"]) == (2.0, 4.0)
    assert summary["ms_per_step_iqr"] == 2.0 and summary["timed_steps"] == 5
    assert summary["floor_ms"] == pytest.approx(2.0)  # 2e6 operations at 1e9 per second
    assert summary["x_floor"] == pytest.approx(1.5)
    assert (summary["flops_per_step"], summary["bytes_per_step"]) == (2e6, 1e6)


# --- the two products with X (issue 21: where a GPU step's time goes) -----------------------------


class ScriptedProducts:
    """XProducts whose forward and gradient products take the next of their scripted seconds on `clock`."""

    def __init__(self, clock: WorkClock, events: list, forward_s: Iterable[float], gradient_s: Iterable[float]) -> None:
        self.clock, self.events = clock, events
        self.forward_s, self.gradient_s = iter(forward_s), iter(gradient_s)

    def forward(self) -> None:
        self.events.append("X @ W1")
        self.clock.advance(next(self.forward_s))

    def gradient(self) -> None:
        self.events.append("X.T @ d1")
        self.clock.advance(next(self.gradient_s))

    def synchronize(self) -> None:
        self.events.append("sync")


def test_each_product_with_x_is_timed_alone_after_warm_up_synchronised_and_its_median_kept() -> None:
    events: list = []
    clock = WorkClock(events)
    products = ScriptedProducts(clock, events, [9.0, 0.5, 0.25, 0.75], [9.0, 1.0, 2.0, 0.5])
    times = suite.time_x_products(products, warmup=1, timed=3, clock=clock)
    assert times == {"x_forward_ms_median": 500.0, "x_gradient_ms_median": 1000.0}  # medians, not the warm-up
    timed = ["sync", "clock", "{p}", "sync", "clock"]
    forward = ["X @ W1", *[e.format(p="X @ W1") for e in timed] * 3]
    assert events[: len(forward)] == forward
    assert events[len(forward) :] == ["X.T @ d1", *[e.format(p="X.T @ d1") for e in timed] * 3]
    events.clear()
    products = ScriptedProducts(clock, events, [1.0] * 5, [1.0, 9.0, 1.0, 2.0, 0.5])
    suite.time_x_products(products, warmup=2, timed=3, clock=clock)
    assert events.count("X @ W1") == events.count("X.T @ d1") == 5  # two untimed, three timed


def test_the_products_timed_are_the_steps_own_on_its_own_arrays(small: datasets.Dataset) -> None:
    """X as training holds it (uint8 pixels scaled to [0, 1], the run's dtype, a batch's rows), the seeded W1,
    and a gradient written where the step writes it: the work timed is the step's work."""
    config = TrainConfig(batch_size=100, dtype="float64", hidden=(12, 7))
    products = suite.ArrayXProducts(config, small, numpy_device())
    x = small.train_images[:100].astype(np.float64) / 255.0
    np.testing.assert_array_equal(products.x, x)
    from gpunet.training.initializers import he_normal

    np.testing.assert_array_equal(products.w1, he_normal([784, 12, 7, 10], config.seed, "float64")[0])
    assert products.delta.shape == (100, 12) and products.grad.shape == (784, 12) and products.grad.dtype == np.float64
    products.gradient()
    np.testing.assert_allclose(products.grad, x.T @ products.delta, rtol=1e-12)
    products.forward()
    products.synchronize()
    full = suite.ArrayXProducts(TrainConfig(), small, numpy_device())  # a full batch: every row, float32
    assert full.x.shape == (len(small.train_images), 784) and full.x.dtype == np.float32


def test_the_torch_products_are_the_same_products() -> None:
    pytest.importorskip("torch", reason="the PyTorch reference is optional; CI installs torch")
    from gpunet.bench.torch_reference import TorchXProducts

    config, ds = TrainConfig(batch_size=50, dtype="float64"), datasets.synthetic(n_train=200, n_test=10)
    ours = suite.ArrayXProducts(config, ds, numpy_device())
    theirs = TorchXProducts(*suite.x_operands(config, ds), "cpu")
    np.testing.assert_array_equal(theirs.x.numpy(), ours.x)
    np.testing.assert_array_equal(theirs.w1.numpy(), ours.w1)
    np.testing.assert_array_equal(theirs.delta.numpy(), ours.delta)
    theirs.forward()
    theirs.gradient()
    theirs.synchronize()


def test_the_report_gives_each_backend_that_can_its_two_x_products(report: dict) -> None:
    for r in report["results"]:
        assert r["x_forward_ms_median"] > 0 and r["x_gradient_ms_median"] > 0
    assert suite.BACKENDS["sklearn"].x_products is None  # scikit-learn's products are its own business
    assert all(suite.BACKENDS[b].x_products is not None for b in ("numpy", "cupy", "torch-cpu", "torch-cuda"))


def test_run_bench_times_the_x_products_of_the_backends_that_have_them() -> None:
    calls: list = []
    clock = WorkClock()
    events: list = []
    timed = suite.Backend(
        "with products",
        "cpu",
        scripted_backend("with products", calls).make,
        x_products=lambda config, dataset: ScriptedProducts(clock, events, [0.25] * 20, [0.5] * 20),
    )
    said: list[str] = []
    out = suite.run_bench(
        TINY,
        datasets.synthetic(n_train=50, n_test=10),
        [timed, scripted_backend("without", calls)],
        said.append,
        floors={"cpu": FIXED_FLOOR},
        clock=clock,
    )
    assert said[-1] == "timing the products with X (X @ W1, X.T @ d1): 6 of each per backend"
    first, second = out["results"]
    assert (first["x_forward_ms_median"], first["x_gradient_ms_median"]) == (250.0, 500.0)
    assert (second["x_forward_ms_median"], second["x_gradient_ms_median"]) == (None, None)
    assert events.count("X @ W1") == TINY.warmup + TINY.repeats * TINY.timed_steps


# --- training runs: time to target, initialisation, memory ------------------------------------


def test_time_to_target_stops_at_the_first_evaluation_that_reaches_it() -> None:
    calls: list[str] = []
    made: list = []
    backend = scripted_backend("scripted", calls, [0.2, 0.6, 0.7, 0.6, 0.8, 0.9], made=made)
    records: list[Record] = []
    config = TrainConfig(iterations=9, eval_every=2)
    clock = Clock([], [100.0] + [1.0] * 20)
    out = suite.train_to_target(backend, config, datasets.synthetic(10, 10), 0.7, records.append, clock)
    # Evaluations at 0, 2, 4, 6, 8 and the last at 9: the final stretch is one step, not two.
    assert calls == [
        "evaluate at 0", "step", "step", "evaluate at 2", "step", "step", "evaluate at 4", "step", "step",
        "evaluate at 6", "step", "step", "evaluate at 8", "step", "evaluate at 9", "close",
    ]  # fmt: skip
    assert [c.iterations for _, c, _ in made] == [9] and [r.iteration for r in records] == [0, 2, 4, 6, 8, 9]
    assert (out["time_to_target_s"], out["target_step"]) == (3.0, 4)  # 0.7 reached (>=) at the third reading
    assert out["wall_seconds"] == 6.0 and [p["seconds"] for p in out["curve"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert out["test_accuracy"] == 0.9 and out["train_accuracy"] == 0.5 and out["final_loss"] == 1 / 10
    assert out["curve"][2] == {"seconds": 3.0, "iteration": 4, "loss": 0.2, "train_accuracy": 0.5, "test_accuracy": 0.7}
    np.testing.assert_array_equal(out["final_params"][0], [9.0, 9.0])
    assert out["schedule"] == "scripted"


def test_a_target_never_reached_is_none() -> None:
    backend = scripted_backend("scripted", [], [0.1, 0.2])
    out = suite.train_to_target(backend, TrainConfig(iterations=1, eval_every=5), datasets.synthetic(10, 10), 0.5)
    assert out["time_to_target_s"] is None and out["target_step"] is None and len(out["curve"]) == 2


def test_initialization_is_two_steps_and_an_evaluation_on_a_few_samples_then_closed() -> None:
    calls: list[str] = []
    made: list = []
    backend = scripted_backend("scripted", calls, [0.0], made=made)
    seconds = suite.initialize(
        backend, TrainConfig(iterations=500, eval_every=50), datasets.synthetic(300, 10), Clock([], [10.0, 2.5])
    )
    assert seconds == 2.5
    assert calls == ["step", "step", "evaluate at 2", "sync", "close"]
    [(_, config, dataset)] = made
    assert (config.iterations, config.eval_every, len(dataset.train_images)) == (2, 2, suite.INIT_SAMPLES)
    assert suite.initialize("numpy", TrainConfig(), datasets.synthetic()) > 0  # and a real backend's is paid


class LoggedMemory:
    """A PeakMemory that logs its calls and reports `peak_bytes`."""

    def __init__(self, calls: list, what: str, peak_bytes: int) -> None:
        self.calls, self.what, self.peak_bytes = calls, what, peak_bytes

    def reset(self) -> None:
        self.calls.append(f"reset {self.what} peak")

    def peak(self) -> int:
        self.calls.append(f"read {self.what} peak")
        return self.peak_bytes


def test_a_training_measurement_resets_the_peaks_after_initialisation() -> None:
    """The one-time costs are paid first and kept out of the peaks, as they are kept off the clock."""
    calls: list = []
    clock = WorkClock()

    def device_memory() -> LoggedMemory:
        calls.append("device memory")
        return LoggedMemory(calls, "device", 3 * 2**19)

    backend = dataclasses.replace(
        scripted_backend("stand-in", calls, [0.9] * 5, device="cuda", clock=clock, step_seconds=0.75),
        memory=device_memory,
    )
    settings = dataclasses.replace(TINY, config=TrainConfig(iterations=2, eval_every=2))
    out = suite.measure_training(
        backend, settings, datasets.synthetic(10, 10), host_memory=LoggedMemory(calls, "host", 2**21), clock=clock
    )
    assert calls == [
        "step", "step", "evaluate at 2", "sync", "close",  # initialisation
        "device memory", "reset device peak", "reset host peak",
        "evaluate at 0", "step", "step", "evaluate at 2", "close",  # the run, to the target
        "read device peak", "read host peak",
    ]  # fmt: skip
    assert {k: out[k] for k in ("backend", "device", "init_seconds", "peak_host_rss_mb", "peak_device_mb")} == {
        "backend": "stand-in",
        "device": "cuda",
        "init_seconds": 1.5,  # two steps of 0.75 s
        "peak_host_rss_mb": 2.0,
        "peak_device_mb": 1.5,
    }
    assert out["test_accuracy"] == 0.9 and out["wall_seconds"] == 1.5


class FakeCuda:
    """torch.cuda as far as TorchCudaMemory uses it, logging calls: no GPU needed."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self) -> None:
        self.calls.append("reset_peak_memory_stats")

    def max_memory_allocated(self) -> float:
        return 3.0 * 2**20


class FakeGpu:
    """A cuda Device as far as CupyMemory uses it."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def reset_memory_peak(self) -> None:
        self.calls.append("cupy reset")

    def memory_peak_bytes(self) -> int:
        return 5 * 2**20


def test_peak_device_memory_comes_from_each_gpu_library() -> None:
    calls: list = []
    cupy_memory = suite.CupyMemory(FakeGpu(calls))
    torch_memory = suite.TorchCudaMemory(FakeCuda(calls))
    cpu_memory = suite.BACKENDS["numpy"].memory()
    for memory in (cupy_memory, torch_memory, cpu_memory):
        memory.reset()
    assert calls == ["cupy reset", "empty_cache", "reset_peak_memory_stats"]
    assert (cupy_memory.peak(), torch_memory.peak(), cpu_memory.peak()) == (5 * 2**20, 3 * 2**20, None)
    assert suite.BACKENDS["torch-cpu"].memory().peak() is None and suite.BACKENDS["sklearn"].memory().peak() is None
    assert suite.BACKENDS["torch-cuda"].memory is suite.TorchCudaMemory  # torch's allocator, on the GPU only
    if cuda_device() is None:  # cupy's pool is the GPU's: without one there is none to read
        with pytest.raises(DeviceError):
            suite.BACKENDS["cupy"].memory()


def test_peak_memory_is_the_high_water_mark_linux_reports(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100000 kB\n")
    assert suite.peak_rss_bytes(status) == 123456 * 1024  # the resident high-water mark, not the virtual peak
    clear_refs = tmp_path / "clear_refs"
    suite.reset_peak_rss(clear_refs)
    assert clear_refs.read_text() == "5"  # "5" resets the high-water mark (proc(5))
    # Without /proc: getrusage's peak, which Linux gives in kB and macOS in bytes; nothing to reset.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = suite.peak_rss_bytes(tmp_path / "no-proc" / "status")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert suite.maxrss_bytes(before) <= peak <= suite.maxrss_bytes(after)
    assert (suite.maxrss_bytes(777, "linux"), suite.maxrss_bytes(777, "darwin")) == (777 * 1024, 777)
    assert suite.maxrss_bytes(777) == 777 * (1 if sys.platform == "darwin" else 1024)
    suite.reset_peak_rss(tmp_path / "no-proc" / "clear_refs")  # and no error
    assert not (tmp_path / "no-proc").exists()


def test_the_real_peak_is_this_process_high_water_mark() -> None:
    def hwm() -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)[1]) * 1024

    before = hwm()
    assert before <= suite.HostMemory().peak() <= hwm()
    assert before <= suite.peak_rss_bytes() <= hwm()


# --- the report -------------------------------------------------------------------------------


def test_report_structure(report: dict) -> None:
    assert {"date", "machine", "config", "floors", "results", "skipped", "agreement"} <= set(report)
    assert report["machine"]["cores"] >= 1 and "blas" in report["machine"]
    assert report["config"]["iterations"] == 30 and report["config"]["dataset"] == "synthetic"
    assert [r["backend"] for r in report["results"]] == cpu_backends()
    for r in report["results"]:
        for key in ("backend", "device", "ms_per_step_median", "ms_per_step_iqr", "time_to_target_s"):
            assert key in r
        for key in ("train_accuracy", "test_accuracy", "floor_ms", "x_floor"):
            assert key in r
        assert r["timed_steps"] == TINY.timed_steps * TINY.repeats
        assert r["ms_per_step_p25"] <= r["ms_per_step_median"] <= r["ms_per_step_p75"]
        assert r["x_floor"] == pytest.approx(r["ms_per_step_median"] / r["floor_ms"])
        # 1000 samples through 784-16-16-10 in float32: the full batch, every row counted once
        assert r["flops_per_step"] == 2 * 1000 * (2 * (12544 + 256 + 160) + 256 + 160)
        assert r["bytes_per_step"] == 1000 * 784 * 4
        floor = suite.Floor(**report["floors"][r["device"]])
        assert r["floor_ms"] == pytest.approx(floor.ms(r["flops_per_step"], r["bytes_per_step"]))
        assert r["time_to_target_s"] is not None and r["time_to_target_s"] <= r["wall_seconds"]
        assert r["curve"][0]["iteration"] == 0 and r["curve"][-1]["iteration"] == 30
        assert r["peak_host_rss_mb"] > 0
        assert r["init_seconds"] > 0  # paid, and recorded, before the time-to-target clock
    json.dumps(report)  # machine-readable as it stands


def test_every_backend_learns_the_same_from_the_same_start(report: dict) -> None:
    accuracies = [r["test_accuracy"] for r in report["results"]]
    assert min(accuracies) > 0.8
    assert max(accuracies) - min(accuracies) <= 0.01
    for detail in report["agreement"].values():
        assert detail["max_relative_weight_difference"] < 1e-2


def test_agreement_is_measured_against_the_first_result() -> None:
    def result(backend: str, accuracy: float, params: list[np.ndarray]) -> dict:
        return {"backend": backend, "test_accuracy": accuracy, "final_params": params}

    reference = [np.array([3.0, 4.0]), np.array([1.0])]  # norms 5 and 1
    results = [result("numpy", 0.80, reference), result("torch-cpu", 0.75, [np.array([3.0, 4.5]), np.array([1.2])])]
    agreement = suite.weight_agreement(results)
    assert list(agreement) == ["torch-cpu"]
    assert agreement["torch-cpu"]["versus"] == "numpy"
    assert agreement["torch-cpu"]["max_relative_weight_difference"] == pytest.approx(0.2)  # max(0.5 / 5, 0.2 / 1)
    assert agreement["torch-cpu"]["test_accuracy_difference"] == pytest.approx(-0.05)
    zero = [result("numpy", 0.1, [np.zeros(1)]), result("cupy", 0.1, [np.array([1e-40])])]
    assert suite.weight_agreement(zero)["cupy"]["max_relative_weight_difference"] == pytest.approx(1e-10)
    assert suite.weight_agreement(results[:1]) == {} and suite.weight_agreement([]) == {}


def test_agreement_leaves_out_a_backend_with_its_own_start() -> None:
    """scikit-learn draws its own initial weights: it is compared with nobody, and nobody with it."""
    own_start = dataclasses.replace(scripted_backend("own start", [], weight=0.0), same_start=False)
    first, second = (scripted_backend(name, [], weight=w) for name, w in (("first", 1.0), ("second", 1.5)))
    out = suite.run_bench(
        TINY, datasets.synthetic(n_train=50, n_test=10), [own_start, first, second], floors={"cpu": FIXED_FLOOR}
    )
    assert list(out["agreement"]) == ["second"] and out["agreement"]["second"]["versus"] == "first"
    assert out["agreement"]["second"]["max_relative_weight_difference"] == pytest.approx(0.5)
    assert suite.BACKENDS["sklearn"].same_start is False
    assert all(suite.BACKENDS[b].same_start for b in ("numpy", "cupy", "torch-cpu", "torch-cuda"))


@pytest.mark.skipif(cuda_device() is not None, reason="this machine has a GPU")
def test_unavailable_backends_are_listed_with_the_reason() -> None:
    result = suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), ["numpy", "cupy"])
    # The reason is the one found (no cupy, or cupy without a usable CUDA), not a blank
    assert result["skipped"]["cupy"] == suite.unavailable("cupy") and result["skipped"]["cupy"]
    assert [r["backend"] for r in result["results"]] == ["numpy"]


def test_run_bench_says_what_it_does_and_records_the_settings() -> None:
    said: list[str] = []
    settings = suite.BenchSettings(
        TrainConfig(iterations=4, eval_every=2, batch_size=100, dtype="float64"),
        0.3,
        warmup=0,
        timed_steps=2,
        repeats=2,
    )
    ds = datasets.synthetic(n_train=300, n_test=50)
    report = suite.run_bench(settings, ds, ["numpy", "tpu"], said.append)
    assert said == [
        "tpu: skipped (unknown backend (choose from numpy, numpy-reference, cupy, torch-cpu, torch-cuda, sklearn))",
        "measuring this machine's cpu matrix-multiply rate and memory bandwidth",
        "numpy: training 4 steps",
        "timing steps: 2 rounds of 2 per backend, taking turns",
        "timing the products with X (X @ W1, X.T @ d1): 4 of each per backend",
    ]
    assert list(report["floors"]) == ["cpu"] and report["floors"]["cpu"]["dtype"] == "float64"  # the run's dtype
    assert report["command"] is None  # called from Python (pytest): no gpunet command line to record
    assert report["skipped"] == {"tpu": suite.unavailable("tpu")}
    expected = {**dataclasses.asdict(settings.config), "dataset": "synthetic", "dataset_source": ds.source}
    expected |= {"samples": 300, "target_accuracy": 0.3, "warmup": 0, "timed_steps": 2, "repeats": 2}
    assert report["config"] == expected
    (result,) = report["results"]
    assert "final_params" not in result and result["backend"] == "numpy" and result["device"] == "cpu"
    assert result["peak_device_mb"] is None  # no device memory on the CPU
    # A step of --batch-size 100 in float64 is 100 rows' work, whatever the training set's size.
    assert (result["flops_per_step"], result["bytes_per_step"]) == suite.step_cost([784, 16, 16, 10], 100, 8)
    assert report["date"].endswith("+00:00")  # in UTC, whatever the machine's time zone


def test_the_command_recorded_is_gpunets_own_command_line() -> None:
    assert suite.invoked_command(["/venv/bin/gpunet", "bench", "--repeats", "2"]) == "gpunet bench --repeats 2"
    assert suite.invoked_command(["/src/gpunet/__main__.py", "bench"]) == "gpunet bench"  # python -m gpunet
    assert suite.invoked_command(["/home/me/gpunet/.venv/bin/pytest", "-x"]) is None  # in a checkout named gpunet
    assert suite.invoked_command(["pytest"]) is None and suite.invoked_command([]) is None


def test_each_backend_is_measured_against_its_own_devices_floor() -> None:
    calls: list = []
    made: list = []
    clock = WorkClock()
    on_cpu, on_cuda = (
        scripted_backend(name, calls, device=kind, made=made, clock=clock, step_seconds=0.25, weight=w)
        for name, kind, w in (("stand-in cpu", "cpu", 1.0), ("stand-in cuda", "cuda", 1.5))
    )
    floors = {"cpu": FIXED_FLOOR, "cuda": suite.Floor("cuda", 1e12, 1e11, "stub")}
    said: list[str] = []
    ds = datasets.synthetic(n_train=200, n_test=50)
    report = suite.run_bench(TINY, ds, [on_cpu, on_cuda], said.append, floors=floors, clock=clock)
    assert not [line for line in said if line.startswith("measuring")]  # the floors given are used
    assert report["floors"] == {kind: dataclasses.asdict(f) for kind, f in floors.items()}
    assert {(len(d.train_images), len(d.train_labels)) for _, _, d in made} == {(200, 200)}
    assert calls.count("close") == len(made) == 3 * 2  # initialisation, training, timing: each let go
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 200, 4)
    for result, kind in zip(report["results"], ["cpu", "cuda"]):
        assert result["device"] == kind and result["ms_per_step_median"] == 250.0
        assert result["floor_ms"] == floors[kind].ms(flops, nbytes) and result["x_floor"] == 250.0 / result["floor_ms"]
    assert report["agreement"]["stand-in cuda"]["max_relative_weight_difference"] == pytest.approx(0.5)


def test_a_floor_is_measured_once_per_device_kind_not_given() -> None:
    said: list[str] = []
    cuda_stand_in = dataclasses.replace(scripted_backend("stand-in cuda", [], device="cuda"), same_start=False)
    cuda_floor = suite.Floor("cuda", 1e12, 1e11, "stub")
    settings = dataclasses.replace(TINY, config=TrainConfig(iterations=2, eval_every=1, dtype="float64"))
    report = suite.run_bench(
        settings, datasets.synthetic(50, 10), ["numpy", cuda_stand_in], said.append, floors={"cuda": cuda_floor}
    )
    assert [line for line in said if line.startswith("measuring")] == [
        "measuring this machine's cpu matrix-multiply rate and memory bandwidth"
    ]
    assert report["floors"]["cuda"] == dataclasses.asdict(cuda_floor)
    assert report["floors"]["cpu"]["dtype"] == "float64" and report["floors"]["cpu"]["measured_with"] != "stub"


def test_a_backend_that_cannot_honour_the_settings_is_skipped_with_the_reason() -> None:
    pytest.importorskip("sklearn", reason="scikit-learn is in the dev extra")
    settings = suite.BenchSettings(TrainConfig(iterations=2, batch_size=10), 0.5, warmup=0, timed_steps=1, repeats=1)
    report = suite.run_bench(settings, datasets.synthetic(n_train=50, n_test=10), ["sklearn"])
    reason = "the scikit-learn reference trains full batch only (one partial_fit is one update)"
    assert report["skipped"] == {"sklearn": reason} and report["results"] == []


def test_a_backend_of_ones_own_that_cannot_run_is_skipped_with_its_reason() -> None:
    refusing = dataclasses.replace(scripted_backend("mine", []), unavailable=lambda config: "not today")
    said: list[str] = []
    out = suite.run_bench(TINY, datasets.synthetic(50, 10), [refusing], said.append)
    assert out["skipped"] == {"mine": "not today"} and out["results"] == [] and said[0] == "mine: skipped (not today)"


# --- the sweep --------------------------------------------------------------------------------


def test_sweep_rows() -> None:
    sweep = suite.sweep(TINY, datasets.synthetic(n_train=400, n_test=50), ["numpy"], samples=(100, 400), widths=(8, 16))
    rows = sweep["sweep"]
    assert [(r["axis"], r["samples"], r["hidden"]) for r in rows] == [
        ("samples", 100, [16, 16]),
        ("samples", 400, [16, 16]),
        ("width", 400, [8, 8]),
        ("width", 400, [16, 16]),
    ]
    assert rows[1]["flops_per_step"] == pytest.approx(4 * rows[0]["flops_per_step"])


def test_the_sweep_times_fewer_steps_and_reuses_a_floor_it_is_given() -> None:
    made: list = []
    backend = scripted_backend("scripted", [], made=made)
    said: list[str] = []
    settings = suite.BenchSettings(TrainConfig(hidden=(12, 12), batch_size=50), warmup=9, timed_steps=30, repeats=4)
    ds = datasets.synthetic(n_train=300, n_test=50)
    out = suite.sweep(settings, ds, [backend, "tpu"], (100, 300, 600), (8,), said.append, {"cpu": FIXED_FLOOR})
    assert said == [
        "sweep: 100 samples, hidden 12,12",
        "sweep: 300 samples, hidden 12,12",
        "sweep: 300 samples, hidden 8,8",
    ]
    # the full batch of each case; 2 warm-up steps (not 9), then 4 rounds of one untimed and 5 timed (not 30)
    assert [(len(d.train_images), c.hidden, c.batch_size) for _, c, d in made] == [
        (100, (12, 12), None),
        (300, (12, 12), None),
        (300, (8, 8), None),
    ]
    assert [t.steps_done for t, _, _ in made] == [2 + 4 * (1 + 5)] * 3
    assert {row["timed_steps"] for row in out["sweep"]} == {4 * 5}
    assert out["floors"] == {"cpu": dataclasses.asdict(FIXED_FLOOR)} and out["machine"] == suite.machine_info()
    row = out["sweep"][0]
    assert (row["backend"], row["axis"], row["samples"], row["hidden"]) == ("scripted", "samples", 100, [12, 12])
    assert row["flops_per_step"] == suite.step_cost([784, 12, 12, 10], 100, 4)[0]
    made.clear()
    settings = suite.BenchSettings(TrainConfig(), warmup=1, timed_steps=3, repeats=1)
    suite.sweep(settings, ds, [backend], (100,), (), floors={"cpu": FIXED_FLOOR})
    assert [t.steps_done for t, _, _ in made] == [1 + 1 * (1 + 3)]  # fewer asked for: fewer taken


@pytest.mark.parametrize(("dtype", "itemsize"), [("float32", 4), ("float64", 8)])
def test_the_sweep_measures_each_devices_floor_in_the_runs_dtype_and_closes_its_trainers(
    dtype: str, itemsize: int
) -> None:
    calls: list = []
    made: list = []
    on_cpu = scripted_backend("stand-in cpu", calls, made=made)
    on_cuda = scripted_backend("stand-in cuda", calls, device="cuda", made=made)
    cuda_floor = suite.Floor("cuda", 1e12, 1e11, "stub", dtype)
    settings = suite.BenchSettings(TrainConfig(dtype=dtype), warmup=1, timed_steps=2, repeats=1)
    out = suite.sweep(
        settings, datasets.synthetic(n_train=300, n_test=50), [on_cpu, on_cuda], (100,), (), floors={"cuda": cuda_floor}
    )
    assert out["floors"]["cpu"]["dtype"] == dtype and out["floors"]["cuda"] == dataclasses.asdict(cuda_floor)
    assert [(len(d.train_images), len(d.train_labels)) for _, _, d in made] == [(100, 100)] * 2  # cut alike
    assert calls.count("close") == len(made)  # each trainer's threads let go
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 100, itemsize)
    for row, kind in zip(out["sweep"], ["cpu", "cuda"]):
        assert (row["flops_per_step"], row["bytes_per_step"]) == (flops, nbytes)
        assert row["floor_ms"] == suite.Floor(**out["floors"][kind]).ms(flops, nbytes)


# --- backends ---------------------------------------------------------------------------------


def test_each_backend_runs_where_its_name_says() -> None:
    from gpunet.bench.sklearn_reference import sklearn_unavailable
    from gpunet.bench.torch_reference import torch_unavailable

    assert list(suite.BACKENDS) == ["numpy", "numpy-reference", "cupy", "torch-cpu", "torch-cuda", "sklearn"]
    assert [suite.device_kind(b) for b in suite.BACKENDS] == ["cpu", "cpu", "cuda", "cpu", "cuda", "cpu"]
    assert suite.unavailable("tpu") == (
        "unknown backend (choose from numpy, numpy-reference, cupy, torch-cpu, torch-cuda, sklearn)"
    )
    assert suite.unavailable("numpy") is None and suite.unavailable("numpy-reference") is None
    assert (suite.unavailable("torch-cpu"), suite.unavailable("torch-cuda")) == (
        torch_unavailable("cpu"),
        torch_unavailable("cuda"),
    )
    batched = TrainConfig(batch_size=10)
    assert suite.unavailable("sklearn", batched) == sklearn_unavailable(batched) is not None  # a batch it cannot honour
    assert suite.unavailable("sklearn") == sklearn_unavailable(None)
    mine = scripted_backend("mine", [], device="cuda")
    assert suite.device_kind(mine) == "cuda" and suite.unavailable(mine) is None


def test_cupy_runs_where_a_cuda_device_resolves() -> None:
    try:
        resolve_device("cuda")
    except DeviceError as e:
        assert suite.unavailable("cupy") == str(e)  # the device's own reason
    else:
        assert suite.unavailable("cupy") is None


def test_make_trainer_gives_each_backend_its_own_trainer() -> None:
    from gpunet.bench.sklearn_reference import SklearnTrainer

    ds = datasets.synthetic(n_train=50, n_test=10)
    numpy_trainer = suite.make_trainer("numpy", TINY.config, ds)
    assert isinstance(numpy_trainer, Trainer) and numpy_trainer.device.is_cuda is False
    assert numpy_trainer.config == TINY.config and numpy_trainer.dataset_name == "synthetic"
    suite.close(numpy_trainer)
    assert isinstance(suite.make_trainer("sklearn", TINY.config, ds), SklearnTrainer)  # in the dev extra
    made: list = []
    mine = scripted_backend("mine", [], made=made)
    assert suite.make_trainer(mine, TINY.config, ds) is made[0][0]


def test_the_torch_reference_runs_on_the_cpu_and_matches_gpunet_step_for_step() -> None:
    pytest.importorskip("torch", reason="the PyTorch reference is optional; CI installs torch")
    from gpunet.bench.torch_reference import TorchTrainer

    config = TrainConfig(iterations=5, eval_every=5, dtype="float64", optimizer="momentum", lr=0.05, batch_size=128)
    ds = datasets.synthetic(n_train=500, n_test=100)
    ours, theirs = suite.make_trainer("numpy", config, ds), suite.make_trainer("torch-cpu", config, ds)
    assert isinstance(theirs, TorchTrainer) and theirs.device.type == "cpu"
    for _ in range(5):
        ours.step()
        theirs.step()
    for a, b in zip(ours.host_params(), theirs.host_params()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert astuple(ours.evaluate()) == pytest.approx(astuple(theirs.evaluate()), rel=1e-9)


@pytest.mark.gpu
def test_on_a_gpu_the_cuda_backends_run_there_with_their_memory_and_x_products() -> None:
    from gpunet.bench.torch_reference import TorchTrainer

    trainer = suite.make_trainer("cupy", TINY.config, datasets.synthetic(n_train=50, n_test=10))
    assert isinstance(trainer, Trainer) and trainer.device.is_cuda
    cuda = ["cupy"] + ([] if suite.unavailable("torch-cuda") else ["torch-cuda"])
    if "torch-cuda" in cuda:
        torch_trainer = suite.make_trainer("torch-cuda", TINY.config, datasets.synthetic(n_train=50, n_test=10))
        assert isinstance(torch_trainer, TorchTrainer) and torch_trainer.device.type == "cuda"
    report = suite.run_bench(TINY, datasets.synthetic(n_train=1000, n_test=300), ["numpy", *cuda])
    assert [r["backend"] for r in report["results"]] == ["numpy", *cuda]
    for r in report["results"][1:]:
        assert r["device"] == "cuda" and r["peak_device_mb"] > 0
        assert r["x_forward_ms_median"] > 0 and r["x_gradient_ms_median"] > 0
        assert report["agreement"][r["backend"]]["max_relative_weight_difference"] < 1e-3
    assert report["floors"]["cuda"]["measured_with"].startswith("matmul: ")


# --- the machine record -----------------------------------------------------------------------


def test_the_cpu_is_named_by_its_model_name_or_else_by_platform(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R): 2 cores @ 2.20GHz\n")
    assert suite.cpu_name(cpuinfo, "x86_64") == "Intel(R) Xeon(R): 2 cores @ 2.20GHz"  # colons in the name kept
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 48.00\n")  # an ARM board's
    assert suite.cpu_name(cpuinfo, "aarch64") == "aarch64"
    assert suite.cpu_name(tmp_path / "absent", "arm") == "arm"  # no /proc at all
    assert suite.cpu_name(tmp_path / "absent") == (platform.processor() or platform.machine())
    assert suite.machine_info()["cpu"] == suite.cpu_name()


def test_the_machine_record_says_what_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpunet.device.backend import blas_info, cupy_version, describe
    from gpunet.training.engine import cpu_cores

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    info = suite.machine_info()
    with open("/proc/cpuinfo") as f:
        model_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    assert info["cpu"] == model_name and info["cores"] == cpu_cores()
    assert info["blas"] == blas_info() and info["openblas_coretype"] == "Prescott"
    assert info["devices"] == [f"{name}: {detail}" for name, detail in describe()]
    import gpunet

    assert info["platform"] == platform.platform()
    assert {k: info["versions"][k] for k in ("python", "numpy", "gpunet")} == {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpunet": gpunet.__version__,
    }
    assert info["versions"].get("cupy") == (cupy_version() or None)  # named where cupy is installed, else left out
    for library in ("numba", "torch"):  # named where importable (numba compiles the CPU kernels), else left out
        try:
            module = __import__(library)
        except ImportError:
            assert library not in info["versions"]
        else:
            assert info["versions"][library] == module.__version__
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert suite.machine_info()["openblas_coretype"] is None


def test_the_record_leaves_out_a_torch_that_is_absent(without_torch: None) -> None:
    assert "torch" not in suite.machine_info()["versions"]


# --- the command line -------------------------------------------------------------------------


def test_cli_bench_writes_json_and_plots_with_the_x_products(tmp_path: Path) -> None:
    out, figure = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "--dataset", "synthetic", "--backends", "numpy", "--iterations", "20", "--timed-steps", "2"]
    args += ["--repeats", "1", "--target-accuracy", "0.5", "--sweep", "--json", str(out), "--plot", str(figure)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ms/step" in result.output and "x floor" in result.output
    saved = json.loads(out.read_text())
    (row,) = saved["results"]
    assert row["backend"] == "numpy" and saved["sweep"]
    header = next(line for line in result.output.splitlines() if "X@W1 ms" in line)
    assert "X.T@d1 ms" in header  # the two products with X, each its own column
    numbers = next(line for line in result.output.splitlines() if re.match(r"[│┃] numpy ", line))  # its table row
    assert f"{row['x_forward_ms_median']:.3f}" in numbers and f"{row['x_gradient_ms_median']:.3f}" in numbers
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "bench-sweep.png").exists()


def test_cli_bench_by_default_measures_as_documented_and_records_its_command(tmp_path: Path) -> None:
    """README and benchmarks/README.md: time to 0.85, 5 warm-up steps, then 3 rounds of 30 timed steps;
    the training options' defaults are TrainConfig's. Run as a user runs it, in its own process."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "gpunet", "bench", "--dataset", "synthetic", "--backends", "numpy"]
    done = subprocess.run(
        [*command, "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads(out.read_text())
    settings = suite.BenchSettings()
    assert settings == suite.BenchSettings(TrainConfig(), 0.85, 5, 30, 3)
    expected = {"target_accuracy": 0.85, "warmup": 5, "timed_steps": 30, "repeats": 3}
    assert {k: saved["config"][k] for k in expected} == expected
    trained = {k: saved["config"][k] for k in dataclasses.asdict(TrainConfig())}
    assert trained == json.loads(json.dumps(dataclasses.asdict(settings.config)))
    assert saved["results"][0]["timed_steps"] == 3 * 30
    assert saved["command"] == f"gpunet bench --dataset synthetic --backends numpy --json {out}"


@pytest.mark.parametrize(
    ("backends", "code", "text"),
    [("tpu", 2, "unknown backend"), ("numpy,nonesuch", 2, "nonesuch")],
)
def test_cli_bench_refuses_unknown_backends(backends: str, code: int, text: str) -> None:
    one_line_error(invoke("bench", "--dataset", "synthetic", "--backends", backends), code, text)


@pytest.mark.skipif(cuda_device() is not None, reason="this machine has a GPU")
def test_cli_bench_names_a_backend_that_cannot_run() -> None:
    line = one_line_error(invoke("bench", "--dataset", "synthetic", "--backends", "numpy,cupy"), 1)
    assert line.startswith("error: backend cupy: ")


def test_without_torch_the_hint_names_the_cpu_build(without_torch: None) -> None:
    line = one_line_error(invoke("bench", "--dataset", "synthetic", "--backends", "numpy,torch-cpu"), 1)
    assert line.startswith("error: backend torch-cpu: torch is not installed")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in line
    assert "./setup.sh --bench" in line and "gpunet[bench]" not in line


def test_bench_shows_progress_as_train_does_plain_lines_off_a_terminal() -> None:
    args = ["bench", "--dataset", "synthetic", "--backends", "numpy", "--iterations", "20", "--timed-steps", "2"]
    result = invoke(*args, "--repeats", "1", "--target-accuracy", "0.5")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("numpy step")]
    assert [line.split()[2] for line in steps] == ["0/20", "10/20", "20/20"]
    assert "training loss" in steps[-1] and "test acc " in steps[-1]


def test_bench_shows_a_progress_bar_on_a_terminal() -> None:
    from rich.console import Console

    from gpunet.cli.report import Reporter

    screen = io.StringIO()
    out = Reporter(console=Console(file=screen, force_terminal=True, width=200))
    assert out.live
    suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), ["numpy"], out.say, progress=out)
    shown = screen.getvalue()
    assert "numpy step" in shown and "30/30" in shown  # the training bar, with its metrics
    assert "training loss" in shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the terminal's colour and cursor codes
    assert re.search(r"(^|\s)timed step\s+6/6", plain, re.MULTILINE)  # 2 rounds of 3 timed steps
    assert "numpy step 30/30  training loss" not in shown  # a bar, not the plain lines


def test_no_refresh_thread_competes_with_the_clock() -> None:
    """On a terminal the bars are redrawn between timed steps by the bench itself, never by rich's own thread."""
    from rich.console import Console
    from rich.live import _RefreshThread

    from gpunet.cli.report import Reporter

    def refreshing() -> bool:
        return any(isinstance(t, _RefreshThread) for t in threading.enumerate())

    out = Reporter(console=Console(file=io.StringIO(), force_terminal=True, width=200))
    with out.training(10, "step"):
        assert refreshing()  # the premise: an ordinary progress bar has one
    seen: list[bool] = []
    made: list = []
    backend = scripted_backend("watched", [], [0.9] * 10, made=made, on_step=lambda: seen.append(refreshing()))
    suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), [backend], out.say, progress=out)
    # the steps of both clocks: the training run (time to target) and the timed steps (ms per step)
    assert [t.steps_done for t, _, _ in made] == [2, 30, TINY.warmup + TINY.repeats * (1 + TINY.timed_steps)]
    assert len(seen) == sum(t.steps_done for t, _, _ in made) and not any(seen)
