"""The training loop: data onto the device once, then steps, with metrics read at evaluations only."""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from gpunet import params
from gpunet.core import model
from gpunet.core.flat import Layout, flatten
from gpunet.core.optimizers import OPTIMIZERS, make_optimizer
from gpunet.data.datasets import Dataset
from gpunet.device.backend import Array, Device, array_namespace, to_numpy
from gpunet.errors import (
    ConfigError,
    DivergedError,
    GpunetError,
    Interrupted,
    NotLearning,
    StepFailed,
    ValuesOutOfRange,
    WriteFailed,
)
from gpunet.files.inputs import byte_size
from gpunet.files.signals import deferred, stop_requests
from gpunet.training import initializers
from gpunet.training.engine import Engine, choose_engine

DTYPES = ("float32", "float64")
LOSS_SLOTS = 1024  # steps whose losses wait on the device to be checked together


# What each training setting must be: one table, checked when a TrainConfig is made, whoever makes it
# (the CLI, the estimator, a checkpoint being read, the bench). Errors name the setting as the caller
# does: `eval_every` in Python, `--eval-every` on the command line (gpunet.params).
TRAIN_RULES = params.table(
    params.Rule("hidden", "--hidden", "sizes", low=1),
    params.Rule("optimizer", "--optimizer", "choice", choices=tuple(OPTIMIZERS)),
    params.Rule("lr", "--lr", "number", above=0),
    params.Rule("iterations", "--iterations", "int", low=0),
    params.Rule("batch_size", "--batch-size", "int", low=1, optional=True),
    params.Rule("dtype", "--dtype", "choice", choices=DTYPES),
    params.Rule("seed", "--seed", "int", low=0, high=2**63 - 1),
    params.Rule("eval_every", "--eval-every", "int", low=1),
)


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings, checked against TRAIN_RULES when made: a TrainConfig that exists can train."""

    hidden: tuple[int, ...] = (16, 16)
    optimizer: str = "adam"
    lr: float = 0.005
    iterations: int = 500
    batch_size: int | None = None  # None: the full batch, one update per pass over the data
    dtype: str = "float32"
    seed: int = 0
    eval_every: int = 10

    def __post_init__(self) -> None:
        params.check(TRAIN_RULES, vars(self))
        # Stored as plain Python values: a list of sizes (from JSON) is a tuple, numpy integers are ints.
        object.__setattr__(self, "hidden", params.sizes_tuple(self.hidden))
        for name in ("iterations", "seed", "eval_every") + (("batch_size",) if self.batch_size is not None else ()):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "lr", float(self.lr))


# The optimizer's state vectors, each the size of the parameters.
OPTIMIZER_SLOTS = {"gd": 0, "momentum": 1, "adam": 2}


def check_fits(config: TrainConfig, sizes: list[int], device: Device, samples: int = 0) -> None:
    """Refuse, before allocating anything, a network whose parameters alone would not fit the device,
    or whose one-hot targets for `samples` samples (a row of `sizes[-1]` classes each) would not."""
    parameters = sum(a * b + b for a, b in itertools.pairwise(sizes))
    vectors = 2 + OPTIMIZER_SLOTS[config.optimizer]  # parameters, gradient, optimizer state (a validated name)
    needed = parameters * vectors * np.dtype(config.dtype).itemsize
    available = device.memory_bytes()
    targets = samples * sizes[-1] * np.dtype(config.dtype).itemsize
    if needed + targets > available and targets > needed:
        raise ConfigError(
            f"{sizes[-1]:,} classes: the one-hot targets of {samples:,} samples alone need {byte_size(targets)}, "
            f"more than the {byte_size(available)} of memory on {device.name}"
        )
    if needed > available:
        raise ConfigError(
            f"--hidden {','.join(map(str, config.hidden))}: the parameters, gradient and {config.optimizer} state "
            f"of {'-'.join(map(str, sizes))} alone need {byte_size(needed)}, more than the "
            f"{byte_size(available)} of memory on {device.name}"
        )


@dataclass(frozen=True)
class Record:
    """Metrics after `iteration` updates, all computed from the output layer."""

    iteration: int
    loss: float  # mean cross-entropy over the whole training set
    train_accuracy: float
    test_accuracy: float


class Outcome(enum.Enum):
    """How a run ended. Each front end turns it into its own convention: the command line into an
    exit code and one line, the estimator into a fitted model (with a ConvergenceWarning for
    NOT_LEARNING) or an error (DIVERGED)."""

    FINISHED = "finished"  # every step done, and the run learned
    DIVERGED = "diverged"  # a loss became NaN or infinite
    NOT_LEARNING = "not learning"  # every step done with finite losses, but the loss blew up (learning_failure)
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or SIGHUP stopped it between two steps
    FAILED = "failed"  # a step could not be computed (a distributed source lost what it needed)


@dataclass
class TrainResult:
    """What a run did, however it ended: `outcome` says how, and `problem`, for every outcome but
    FINISHED, is the error that describes it (not raised: a front end raises it if its convention
    is to)."""

    config: TrainConfig
    device: str
    dataset: str
    params: list[np.ndarray]
    history: list[Record] = field(default_factory=list)
    train_seconds: float = 0.0
    outcome: Outcome = Outcome.FINISHED
    problem: GpunetError | None = None

    def raise_problem(self) -> TrainResult:
        """Raise `problem` if the run did not finish (a plain function's convention); else return self."""
        if self.problem is not None:
            raise self.problem
        return self

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


# When a finished run counts as "not learning" (exit code 3, like a NaN loss): the one rule, shared by
# every front end through Trainer.run. A loss that ends this many times above where it started blew
# up (--lr 50 ends at 38.9 from 2.3); so did one that rose that far on the way and left the network at
# chance accuracy (at most CHANCE_FACTOR / classes), which is where a network whose ReLUs all died
# settles, its loss back near ln 10. A run that merely learns slowly is not flagged.
LOSS_BLOWUP_FACTOR = 1.5
CHANCE_FACTOR = 1.2


def learning_failure(history: list[Record], classes: int, lr: float, took_off_at: int | None = None) -> str | None:
    """Why a finished run did not learn, as the command line says it (--lr), or None if it learned."""
    problem = learning_problem(history, classes, lr, took_off_at)
    return None if problem is None else problem.for_flags()


def learning_problem(
    history: list[Record], classes: int, lr: float, took_off_at: int | None = None
) -> NotLearning | None:
    """Why a finished run did not learn, with the learning rate to try, or None if it learned.

    `took_off_at` is the first step whose loss rose above LOSS_BLOWUP_FACTOR times the start, where
    the per-step losses are known; otherwise the evaluations tell.
    """
    if len(history) < 2:
        return None  # nothing was trained (a run records its start, then only steps after it)
    first, last = history[0], history[-1]
    limit = LOSS_BLOWUP_FACTOR * first.loss
    if took_off_at is None:
        took_off_at = next((r.iteration for r in history if r.loss > limit), None)
    at_chance = last.train_accuracy <= CHANCE_FACTOR / classes
    if not (last.loss > limit or (at_chance and took_off_at is not None)):
        return None
    what = f"the training loss went from {first.loss:.4g} to {last.loss:.4g}"
    if at_chance:
        what += f" and train accuracy is {last.train_accuracy:.4f}, chance level for {classes} classes"
    if took_off_at is not None:
        what += f"; the loss took off at step {took_off_at}"
    return NotLearning(what, lr / 10)


@dataclass
class DeviceData:
    """One split on the device: scaled pixels, one-hot targets and integer labels."""

    x: Array
    targets: Array
    labels: Array

    @classmethod
    def from_host(
        cls, images: Array, labels: Array, device: Device, dtype: str, num_classes: int, pixels: bool = False
    ) -> DeviceData:
        """Rows and class indices onto the device; arrays already there are not copied.

        uint8 rows are pixels: they travel as uint8 (4x fewer bytes) and are
        scaled to [0, 1] on the device, since raw 0..255 inputs are what made
        the seed's softmax overflow; with `pixels`, for an engine that scales
        them as it reads them (Engine.reads_pixels), they stay uint8. Any other
        numbers are used as given.
        """
        xp = device.xp
        if pixels and images.dtype == np.uint8:
            x = np.ascontiguousarray(device.asarray(images))  # read as they are by the engine, every step
        else:
            x = device_rows(images, device, dtype)
        y = xp.asarray(device.asarray(labels), dtype=xp.int64)  # a copy only where the dtype differs
        # (samples, classes) as everywhere, but a view of the contiguous (classes, samples) rows the
        # training step reads (model.one_hot_t): no kernel reads them with a stride.
        return cls(x, model.one_hot_t(y, num_classes, getattr(xp, dtype)).T, y)


def device_rows(images: Array, device: Device, dtype: str) -> Array:
    """Input rows on the device in `dtype`: uint8 pixels scaled to [0, 1], other numbers as given."""
    xp = device.xp
    x = device.asarray(images)
    if x.dtype == xp.uint8:
        x = xp.astype(x, getattr(xp, dtype))
        x /= 255.0
        return x
    if dtype == "float32" and x.dtype == xp.float64 and x.size:
        # Beyond float32's range a value becomes infinite, and the run would be called diverged.
        biggest = float(to_numpy(xp.max(xp.abs(x))))
        if biggest > float(np.finfo(np.float32).max):
            raise ValuesOutOfRange(
                f"the inputs hold values up to {biggest:.3g}, beyond float32's range (±3.4e+38), where they would "
                "become infinite: scale them (standardise each feature) or train in float64"
            )
    # Never written to, so the caller's own array serves when its dtype already fits.
    return xp.asarray(x, dtype=getattr(xp, dtype))


def layer_sizes(config: TrainConfig, dataset: Dataset) -> list[int]:
    return [dataset.train_images.shape[1], *config.hidden, dataset.num_classes]


def shuffle_rng(seed: int) -> np.random.Generator:
    """The batch-order stream: apart from the initialisation stream, so the batch size never
    changes the initial weights (and the PyTorch reference can draw the same order)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))  # SeedSequence(seed).spawn(1)[0]


class BatchOrder:
    """Endless (inputs, targets) batches: the whole set each time, or shuffled slices.

    Mini-batches follow a fresh permutation each epoch, drawn on the host and
    sent to the device once per epoch. Its state (the generator's state at the
    start of the epoch, and the position in it) is a few numbers, so a
    checkpoint resumes mid-epoch on exactly the batches it would have seen.
    """

    def __init__(self, data: DeviceData, batch_size: int | None, rng: np.random.Generator, device: Device) -> None:
        self.data, self.rng, self.device = data, rng, device
        n = data.x.shape[0]
        self.batch_size = None if batch_size is None or batch_size >= n else batch_size
        self.position = 0
        self.epoch_rng_state = rng.bit_generator.state
        self._order: Array | None = None

    def __iter__(self) -> BatchOrder:
        return self

    def __next__(self) -> tuple[Array, Array]:
        if self.batch_size is None:
            return self.data.x, self.data.targets
        n = self.data.x.shape[0]
        order = self._order
        if order is None:  # the first batch, or just restored: draw this epoch's order
            order = self._draw_order(n)
        if self.position >= n:  # the epoch is done: a new order
            order = self._draw_order(n)
            self.position = 0
        index = order[self.position : min(self.position + self.batch_size, n)]
        self.position += self.batch_size
        xp = self.device.xp
        # The targets are taken as the contiguous (classes, samples) rows they are kept in (see from_host).
        return xp.take(self.data.x, index, axis=0), xp.take(self.data.targets.T, index, axis=1).T

    def _draw_order(self, n: int) -> Array:
        self.epoch_rng_state = self.rng.bit_generator.state
        self._order = self.device.asarray(self.rng.permutation(n))
        return self._order

    def state(self) -> dict[str, Any]:
        return {"epoch_rng_state": self.epoch_rng_state, "position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        if not state:  # saved by a full-batch source that keeps no order (the Dask engine): start afresh
            return
        # Rewind the generator to the epoch's start: the same permutation is drawn again.
        self.rng.bit_generator.state = state["epoch_rng_state"]
        self.epoch_rng_state = state["epoch_rng_state"]
        self.position = state["position"]
        self._order = None


class GradientSource(Protocol):
    """Where a Trainer gets each step's gradient and the training-set metrics: LocalSource on its own
    device, or gpunet.training.distributed.DaskSource on a cluster's workers."""

    def gradient(self, params: list[Array]) -> tuple[Array, Array]:
        """The mean loss and the mean gradient as one flat vector, over the next batch."""
        ...

    def evaluate(self, params: list[Array]) -> tuple[Array, Array]:
        """The loss and accuracy over the whole training set (device scalars)."""
        ...

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to resume on the same batches."""
        ...

    def restore(self, state: dict[str, Any]) -> None: ...

    def describe(self) -> str:
        """The schedule in words (shown by train and bench)."""
        ...

    def close(self) -> None: ...


class LocalSource:
    """The training set on the trainer's own device: batches from BatchOrder, gradients from an Engine.

    A trainer asks its source for a step's gradient and for the training-set
    metrics; another source (gpunet.training.distributed) keeps the samples elsewhere.
    """

    def __init__(
        self, dataset: Dataset, config: TrainConfig, device: Device, engine: Engine, rng: np.random.Generator
    ) -> None:
        self.data = DeviceData.from_host(
            dataset.train_images, dataset.train_labels, device, config.dtype, dataset.num_classes, engine.reads_pixels
        )
        self.engine = engine
        self.order = BatchOrder(self.data, config.batch_size, rng, device)
        self._grads: Array | None = None  # the flat gradient, written in place by every step

    def gradient(self, params: list[Array]) -> tuple[Array, Array]:
        """Mean loss and the mean gradient as one flat vector (gpunet.core.flat), over the next batch.

        The vector is the same one every step (the optimizer uses it before the next step writes it):
        each product of the step is written straight into its part, and 1/n is applied inside the
        output layer's kernel, so gathering and averaging the gradient cost no kernel at all.
        """
        x, targets = next(self.order)
        if self._grads is None:
            self._grads = array_namespace(params[0]).empty(Layout.of(params).size, dtype=params[0].dtype)
        loss = self.engine.gradient_flat(params, x, targets, 1.0 / x.shape[0], self._grads)
        return loss, self._grads

    def evaluate(self, params: list[Array]) -> tuple[Array, Array]:
        return self.engine.evaluate(params, self.data.x, self.data.targets, self.data.labels)

    def state(self) -> dict[str, Any]:
        return self.order.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.order.restore(state)

    def describe(self) -> str:
        return self.engine.describe(self.order.batch_size or self.data.x.shape[0])

    def close(self) -> None:
        self.engine.close()


class Trainer:
    """One run's state: parameters and optimizer on its device, the training data's source, steps done.

    With the local source, `step()` queues one update and reads nothing back;
    `evaluate()` and `check_losses()` are where results travel to the host.
    (A distributed source must send the parameters to its workers every step.)
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        device: Device,
        source: GradientSource | None = None,
        engine: Engine | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        """`engine` computes the steps and evaluations here (default: engine.choose_engine's for the
        device and dtype); its one-time compile, if any, is paid now, off every clock, and said through `say`."""
        self.config, self.device = config, device
        self.dataset_name, self.dataset_checksum = dataset.name, dataset.checksum
        self.dataset_classes = dataset.classes  # the labels' texts, kept in its checkpoints
        self.sizes = layer_sizes(config, dataset)
        samples = dataset.train_images.shape[0] + (0 if dataset.test_images is None else dataset.test_images.shape[0])
        check_fits(config, self.sizes, device, samples)
        self.engine = engine or choose_engine(device, config.dtype, say=say)
        pixels = self.engine.reads_pixels and dataset.train_images.dtype == np.uint8
        self.engine.prepare(np.uint8 if pixels else config.dtype, say)
        self.shuffle_rng = shuffle_rng(config.seed)
        self.source: GradientSource = source or LocalSource(dataset, config, device, self.engine, self.shuffle_rng)
        self.test = (  # a fit on arrays (the Python API) may have no test split
            None
            if dataset.test_images is None
            else DeviceData.from_host(
                dataset.test_images,
                dataset.test_labels,
                device,
                config.dtype,
                dataset.num_classes,
                self.engine.reads_pixels,
            )
        )
        host_params = initializers.he_normal(self.sizes, config.seed, config.dtype)
        self.layout = Layout.of(host_params)
        self.set_params(host_params)
        self.optimizer = make_optimizer(config.optimizer, self.flat_params, config.lr)
        # Each step's loss is written here on the device and read at the next
        # check, so a divergence is pinned to its step without a per-step sync.
        # Bounded whatever --eval-every says: the run also checks whenever the buffer is full.
        slots = min(config.eval_every, max(config.iterations, 1), LOSS_SLOTS)
        self.step_losses = device.xp.zeros(slots, dtype=getattr(device.xp, config.dtype))
        self.steps_done = 0
        self._checked = 0
        self.step_loss_curve: list[float] = []  # each step's (batch) loss, as read at the checks
        self.history: list[Record] = []
        self.last_saved_step: int | None = None
        self.took_off_at: int | None = None  # the first step whose loss blew up (see learning_failure)
        self.save_error: WriteFailed | None = None  # why the latest save failed, None once one succeeds
        self.stop_signals: list[int] = []  # every stop signal during run() (the first one stopped it)

    def set_params(self, host_params: list[np.ndarray]) -> None:
        """Put [w1, b1, ...] on the device as one flat vector; `params` are views into it."""
        self.flat_params = self.device.asarray(flatten(host_params))
        self.params = self.layout.views(self.flat_params)

    def step(self) -> None:
        loss, grads = self.source.gradient(self.params)
        self.optimizer.step(self.flat_params, grads)
        self.step_losses[self.steps_done % self.step_losses.shape[0]] = loss
        self.steps_done += 1

    def check_losses(self) -> None:
        """Raise DivergedError naming the first step since the last check whose loss was not finite.

        Step k's loss is that of the parameters before update k, so it is named
        k - 1: the number of updates those parameters had, as a Record's
        iteration is, whatever --eval-every is.
        """
        pending = self.steps_done - self._checked
        slots = self.step_losses.shape[0]
        if pending > slots:
            raise RuntimeError("check_losses() must run at least every eval_every steps")
        losses = to_numpy(self.step_losses)
        first = self._checked
        limit = LOSS_BLOWUP_FACTOR * self.history[0].loss if self.history else math.inf
        for offset in range(pending):
            loss = float(losses[(first + offset) % slots])
            if not math.isfinite(loss):
                raise DivergedError(first + offset, loss, self.config.lr)
            if loss > limit and self.took_off_at is None:
                self.took_off_at = first + offset  # numbered as above
            self.step_loss_curve.append(loss)
        self._checked = self.steps_done

    def check_own_loss(self) -> None:
        """Raise DivergedError unless the current parameters' own loss is known to be finite.

        The step losses checked so far vouch only for the parameters before the
        last update; the last evaluation vouches for these when it was made
        after that update, and otherwise one forward pass over the training set
        does (a host read, but only where a checkpoint is written anyway).
        """
        if self.history and self.history[-1].iteration == self.steps_done:
            return  # record() has raised already if that loss was not finite
        try:
            loss, _ = self.source.evaluate(self.params)
        except (StepFailed, StepAbandoned):
            # The training set's source is gone (a cluster without workers) or a stop will not wait
            # for it: the test split, on this device, tells whether these parameters give a finite loss.
            if self.test is None:
                raise  # no other split to ask
            loss, _ = self.engine.evaluate(self.params, self.test.x, self.test.targets, self.test.labels)
        value = float(to_numpy(self.device.xp.asarray(loss)))
        if not math.isfinite(value):
            raise DivergedError(self.steps_done, value, self.config.lr)

    def evaluate(self) -> Record:
        """Loss and accuracies of the current parameters, read back to the host."""
        metrics = list(self.source.evaluate(self.params))  # loss and train accuracy
        test = self.test
        if test is not None:  # a fit on arrays (the Python API) may have no test split: its accuracy is NaN
            metrics.append(self.engine.evaluate(self.params, test.x, test.targets, test.labels)[1])
        xp = self.device.xp
        # One transfer (one wait for the device) for the numbers, not one each.
        values = [float(v) for v in to_numpy(xp.stack([xp.asarray(v) for v in metrics]))]
        return Record(self.steps_done, values[0], values[1], math.nan if test is None else values[2])

    def mark_checked(self) -> None:
        """Declare the losses so far as checked (a restored run's were checked before it was saved)."""
        self._checked = self.steps_done

    def host_params(self) -> list[np.ndarray]:
        return self.layout.views(to_numpy(self.flat_params))  # one transfer, then views

    def host_slots(self) -> dict[str, list[np.ndarray]]:
        """The optimizer's state, per layer like the parameters."""
        return {name: self.layout.views(to_numpy(slot)) for name, slot in self.optimizer.slots.items()}

    @property
    def schedule(self) -> str:
        """How the steps run, in words (the source's: threads and chunks, or workers)."""
        return self.source.describe()

    def synchronize(self) -> None:
        self.device.synchronize()

    def close(self) -> None:
        """Let go of worker threads or processes now rather than when garbage-collected."""
        self.source.close()
        self.engine.close()

    def run(
        self,
        on_record: Callable[[Record], None] | None = None,
        on_step: Callable[[int], None] | None = None,
        save: Callable[[Trainer], None] | None = None,
        save_every: int | None = None,
    ) -> TrainResult:
        """Step to `config.iterations`, evaluating every `eval_every` steps.

        `save(trainer)` is called every `save_every` steps, at the end, and on
        Ctrl-C/SIGTERM/SIGHUP, always between steps and only once the losses
        since the last check, and the loss of the parameters it saves, are known
        to be finite: a diverged state is never saved, so the last good
        checkpoint survives a divergence and resumes. Signals arriving during a
        save wait for it to finish. A save that raises WriteFailed does not stop
        the run: it is kept in `save_error` (and `last_saved_step` stays where it
        was). Returns what was done, however the run ended: its `outcome` says how, and its
        `problem` is the error describing any outcome but FINISHED (nothing is raised for those).
        """
        config = self.config

        def record() -> None:
            r = self.evaluate()
            self.history.append(r)
            if on_record:
                on_record(r)
            if not math.isfinite(r.loss):
                raise DivergedError(r.iteration, r.loss, config.lr)

        def checkpoint() -> None:
            if save is not None and self.last_saved_step != self.steps_done:
                self.check_losses()
                self.check_own_loss()
                try:
                    with deferred():  # signals wait: a save is finished, never cut in half
                        save(self)
                except WriteFailed as e:  # the previous checkpoint is intact; training goes on
                    self.save_error = e
                    return
                self.save_error = None
                self.last_saved_step = self.steps_done

        self.device.synchronize()
        start = time.perf_counter()
        outcome: Outcome = Outcome.FINISHED
        problem: GpunetError | None = None
        # One block from the first evaluation to the last save: a signal anywhere in it only asks to stop
        # (never raises), so no second signal can fall between the loop and the save it asked for.
        # Overflow in a diverging run is caught and named by its step; numpy's warnings would bury that.
        with np.errstate(over="ignore", invalid="ignore"), stop_requests() as stop:
            self.stop_signals = stop
            try:
                if not self.history:
                    record()
                while self.steps_done < config.iterations:
                    if stop:
                        raise Interrupted(self.steps_done, stop[0])
                    self.step()
                    if on_step:
                        on_step(self.steps_done)
                    if self.steps_done % config.eval_every == 0 or self.steps_done == config.iterations:
                        self.check_losses()
                        record()
                    elif self.steps_done - self._checked == self.step_losses.shape[0]:
                        self.check_losses()  # the loss buffer is full: one read every LOSS_SLOTS steps
                    if save_every and self.steps_done % save_every == 0:
                        checkpoint()
                problem = learning_problem(self.history, self.sizes[-1], config.lr, self.took_off_at)
                if problem is None:
                    checkpoint()
                else:  # like a divergence: its final state is not saved
                    outcome = Outcome.NOT_LEARNING
            except (Interrupted, StepFailed, StepAbandoned) as e:
                # A step or evaluation the source gave up for a stop: the parameters are those of the last step.
                problem = Interrupted(self.steps_done, e.signum) if isinstance(e, StepAbandoned) else e
                outcome = Outcome.FAILED if isinstance(problem, StepFailed) else Outcome.INTERRUPTED
                try:
                    checkpoint()  # between two steps: a consistent state to resume from
                except DivergedError as diverged:
                    outcome, problem = Outcome.DIVERGED, diverged
            except DivergedError as e:
                outcome, problem = Outcome.DIVERGED, e
        self.device.synchronize()
        seconds = time.perf_counter() - start
        return TrainResult(
            config,
            self.device.name,
            self.dataset_name,
            self.host_params(),
            list(self.history),
            seconds,
            outcome,
            problem,
        )


def train(
    config: TrainConfig,
    dataset: Dataset,
    device: Device,
    on_record: Callable[[Record], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train from the seeded initial weights; raise the problem of a run that did not finish
    (DivergedError if the loss stops being finite, NotLearning, Interrupted), as a plain function does."""
    return Trainer(config, dataset, device).run(on_record, on_step).raise_problem()


class StepAbandoned(Exception):
    """A source gave up waiting for a step's gradient because a stop was requested; nothing was applied."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"abandoned for signal {signum}")
