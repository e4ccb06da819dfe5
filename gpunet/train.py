"""The training loop: data onto the device once, then steps, with metrics read at evaluations only."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gpunet import model
from gpunet.backend import Device, to_numpy
from gpunet.data import Dataset
from gpunet.errors import ConfigError, DivergedError, GpunetError, Interrupted
from gpunet.initializers import he_normal
from gpunet.optimizers import OPTIMIZERS, make_optimizer

Array = Any
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (16, 16)
    optimizer: str = "adam"
    lr: float = 0.01
    iterations: int = 500
    batch_size: int | None = None  # None: the full batch, one update per pass over the data
    dtype: str = "float32"
    seed: int = 0
    eval_every: int = 10

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot train."""
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be positive, got {','.join(map(str, self.hidden))}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}': choose one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"the learning rate must be a positive number, got {self.lr}")
        if self.iterations < 0:
            raise ConfigError(f"iterations must be 0 or more, got {self.iterations}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"the batch size must be at least 1, got {self.batch_size}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype '{self.dtype}': choose float32 or float64")
        if self.eval_every < 1:
            raise ConfigError(f"--eval-every must be at least 1, got {self.eval_every}")
        if self.seed < 0:
            raise ConfigError(f"the seed must be 0 or more, got {self.seed}")


@dataclass(frozen=True)
class Record:
    """Metrics after `iteration` updates, all computed from the output layer."""

    iteration: int
    loss: float  # mean cross-entropy over the whole training set
    train_accuracy: float
    test_accuracy: float


@dataclass
class TrainResult:
    config: TrainConfig
    device: str
    dataset: str
    params: list[np.ndarray]
    history: list[Record] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def final(self) -> Record:
        return self.history[-1]

    def summary(self) -> dict[str, Any]:
        """The machine-readable result (what --json writes)."""
        return {
            "test_accuracy": self.final.test_accuracy,
            "train_accuracy": self.final.train_accuracy,
            "final_loss": self.final.loss,
            "iterations": self.final.iteration,
            "train_seconds": self.train_seconds,
            "device": self.device,
            "dataset": self.dataset,
            "hidden": list(self.config.hidden),
            "optimizer": self.config.optimizer,
            "lr": self.config.lr,
            "dtype": self.config.dtype,
            "seed": self.config.seed,
            "batch_size": self.config.batch_size,
            "eval_every": self.config.eval_every,
            "history": [asdict(r) for r in self.history],
        }


@dataclass
class DeviceData:
    """One split on the device: scaled pixels, one-hot targets and integer labels."""

    x: Array
    targets: Array
    labels: Array

    @classmethod
    def from_host(
        cls, images: np.ndarray, labels: np.ndarray, device: Device, dtype: str, num_classes: int
    ) -> DeviceData:
        xp = device.xp
        # Pixels travel as uint8 (4x fewer bytes) and are scaled to [0, 1] on the
        # device: raw 0..255 inputs are what made the seed's softmax overflow.
        x = xp.astype(device.asarray(images), getattr(xp, dtype))
        x /= 255.0
        y = device.asarray(labels.astype(np.int64))
        return cls(x, model.one_hot(y, num_classes, x.dtype), y)


def layer_sizes(config: TrainConfig, dataset: Dataset) -> list[int]:
    return [dataset.train_images.shape[1], *config.hidden, dataset.num_classes]


def batches(
    data: DeviceData, batch_size: int | None, rng: np.random.Generator, device: Device
) -> Iterator[tuple[Array, Array]]:
    """Endless (inputs, targets) batches: the whole set each time, or shuffled slices."""
    n = data.x.shape[0]
    if batch_size is None or batch_size >= n:
        while True:
            yield data.x, data.targets
    xp = device.xp
    while True:
        # One transfer of the epoch's order, then slices on the device.
        order = device.asarray(rng.permutation(n))
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            yield xp.take(data.x, index, axis=0), xp.take(data.targets, index, axis=0)


def evaluate(params: list[Array], train: DeviceData, test: DeviceData, iteration: int) -> Record:
    """Read the metrics back to the host: the only place a step's results are synchronised."""
    loss, train_acc = model.evaluate(params, train.x, train.targets, train.labels)
    _, test_acc = model.evaluate(params, test.x, test.targets, test.labels)
    return Record(iteration, float(to_numpy(loss)), float(to_numpy(train_acc)), float(to_numpy(test_acc)))


def train(
    config: TrainConfig,
    dataset: Dataset,
    device: Device,
    on_record: Callable[[Record], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train from the seeded initial weights; raise DivergedError if the loss stops being finite."""
    config.validate()
    xp = device.xp
    train_data = DeviceData.from_host(
        dataset.train_images, dataset.train_labels, device, config.dtype, dataset.num_classes
    )
    test_data = DeviceData.from_host(
        dataset.test_images, dataset.test_labels, device, config.dtype, dataset.num_classes
    )
    params = [device.asarray(p) for p in he_normal(layer_sizes(config, dataset), config.seed, config.dtype)]
    optimizer = make_optimizer(config.optimizer, params, config.lr)
    # The shuffling stream is separate from the initialisation stream, so the
    # batch size never changes the initial weights.
    shuffle_rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
    stream = batches(train_data, config.batch_size, shuffle_rng, device)
    # Each step's loss is written here on the device and read at the next
    # evaluation, so a divergence is pinned to its step without a per-step sync.
    step_losses = xp.zeros(config.eval_every, dtype=train_data.x.dtype)

    result = TrainResult(config, device.name, dataset.name, [])

    def record(iteration: int) -> None:
        r = evaluate(params, train_data, test_data, iteration)
        result.history.append(r)
        if on_record:
            on_record(r)
        if not math.isfinite(r.loss):
            raise DivergedError(iteration, r.loss, config.lr)

    device.synchronize()
    start = time.perf_counter()
    step = 0
    try:
        # Overflow in a diverging run is caught below and named by its step;
        # numpy's warnings about it would only bury that message.
        with np.errstate(over="ignore", invalid="ignore"), stop_requests() as stop:
            record(0)
            for step in range(1, config.iterations + 1):
                if stop:
                    raise Interrupted(step - 1, stop[0])
                x, targets = next(stream)
                loss, grads = model.loss_and_gradients(params, x, targets)
                optimizer.step(params, grads)
                slot = (step - 1) % config.eval_every
                step_losses[slot] = loss
                if on_step:
                    on_step(step)
                if step % config.eval_every == 0 or step == config.iterations:
                    _check_finite(to_numpy(step_losses)[: slot + 1], step - slot, config.lr)
                    record(step)
    except (Interrupted, DivergedError) as e:
        error: GpunetError | None = e
    else:
        error = None
    device.synchronize()
    result.train_seconds = time.perf_counter() - start
    result.params = [to_numpy(p) for p in params]
    if error is not None:
        error.result = result
        raise error
    return result


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM only ask to stop, so a step is never cut in half.

    The loop checks the yielded list between steps. A second signal while a
    stop is pending interrupts at once, for a run that is stuck.
    """
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signal handlers can only be set from the main thread
        return

    def ask_to_stop(signum: int, frame: object) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _check_finite(losses: np.ndarray, first_step: int, lr: float) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise DivergedError(first_step + int(bad[0]), float(losses[bad[0]]), lr)
