"""`gpunet doctor`: the checks that would have told the seed's author why his network did not learn.

Each check isolates one way a from-scratch network fails quietly (inputs, initialisation,
gradients, the accuracy read-out, the optimizer's first steps) and prints PASS or FAIL with the
number it saw. The checks call the project's own math through its modules at call time, so a
bug put into `gpunet.core.model`, `gpunet.training.initializers` or `DeviceData.from_host` shows up here.

`gradient_error(params, x, targets)` is the gradient check on its own (backpropagation against
central finite differences), for any network: the tests check gpunet's math with the same function.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpunet.core import model
from gpunet.data.datasets import Dataset
from gpunet.device.backend import Device, array_namespace, to_numpy
from gpunet.training import initializers, train
from gpunet.training.engine import LocalEngine
from gpunet.training.train import TrainConfig, layer_sizes

BATCH = 1000  # samples for the accuracy and bias-gradient checks
SUBSET = 10_000  # samples for the first steps and the dead-unit count: enough, and quick on a CPU
GRAD_SAMPLES, GRAD_WEIGHTS, EPS = 16, 100, 1e-6
FIRST_STEPS = 20
OVERFIT_SAMPLES, OVERFIT_STEPS, OVERFIT_EVERY, OVERFIT_LR = 100, 500, 25, 0.01

Outcome = tuple[bool, str, str]  # passed, value, what a failure most likely means


@dataclass
class Check:
    name: str
    passed: bool
    value: str
    detail: str  # what a failure most likely means; empty when the check passed


@dataclass
class _Setup:
    dataset: Dataset
    device: Device
    config: TrainConfig
    split: train.DeviceData  # the training split as the trainer sees it

    def initial_params(self) -> list[Any]:
        sizes = layer_sizes(self.config, self.dataset)
        return [self.device.asarray(p) for p in initializers.he_normal(sizes, self.config.seed, self.config.dtype)]


def _rows(a: Any, n: int) -> Any:
    # The array API leaves slices past the end undefined, and a trailing `...` required.
    return a[: min(n, a.shape[0]), ...]


def _scalar(a: Any) -> float:
    return float(to_numpy(a))


UNSCALED = "pixels must be divided by 255: raw 0..255 inputs make the logits huge and the softmax overflow"
# Inputs whose root mean square is above this are far outside a unit range. The mean square is the
# mean of each feature's: after standardising, its variance, 1 (0 for a constant feature), so
# standardised data never has an RMS above 1, even where a near-constant feature's rare values reach
# sqrt(n), which a rule on the maximum took for unscaled pixels. Raw 0..255 pixels have an RMS near 85.
UNIT_RMS = 10.0


def input_range(x: Any) -> tuple[float, float]:
    """The smallest and largest input value (two numbers read back from the device)."""
    xp = array_namespace(x)
    return _scalar(xp.min(x)), _scalar(xp.max(x))


def root_mean_square(x: Any) -> float:
    """sqrt(mean(x**2)) over every input value, without overflowing for values near the dtype's limit."""
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        x = xp.astype(x, xp.float64)
    largest = _scalar(xp.max(xp.abs(x)))
    if largest == 0 or not math.isfinite(largest):
        return largest
    scaled = x / largest  # in [-1, 1]: its squares cannot overflow
    return largest * math.sqrt(_scalar(xp.mean(scaled * scaled)))


def far_outside_unit_range(x: Any) -> str | None:
    """What is wrong with inputs `x` if they are far outside a unit range (their RMS is above
    UNIT_RMS), else None. Standardised data never is; unscaled 0..255 pixels are."""
    rms = root_mean_square(x)
    if rms <= UNIT_RMS:
        return None
    lo, hi = input_range(x)
    return (
        f"inputs range from {lo:g} to {hi:g} with a root mean square of {rms:.3g}, far outside a unit range, "
        f"as the seed's did ({UNSCALED})"
    )


def _inputs_scaled(s: _Setup) -> Outcome:
    lo, hi = input_range(s.split.x)
    value = f"min {lo:g}, max {hi:g}"
    if s.dataset.train_images.dtype == np.uint8:  # pixels: scaled to [0, 1] exactly, or a bug
        return lo >= 0 and hi <= 1, value, UNSCALED
    # A user's numbers are used as given: within a unit range is enough (standardised data is fine).
    problem = far_outside_unit_range(s.split.x)
    return problem is None, value, problem or ""


def _initial_loss(s: _Setup) -> Outcome:
    loss, _ = model.evaluate(s.initial_params(), s.split.x, s.split.targets, s.split.labels)
    loss, k = _scalar(loss), s.dataset.num_classes
    why = "an untrained network should guess uniformly; the initial weights (or the inputs) are too large"
    return abs(loss - math.log(k)) <= 0.1 * math.log(k), f"loss {loss:.4f}, ln {k} = {math.log(k):.4f}", why


def gradient_error(
    params: list[np.ndarray],
    x: np.ndarray,
    targets: np.ndarray,
    entries: Sequence[tuple[int, tuple[int, ...]]] | None = None,
    eps: float = EPS,
) -> float:
    """How far backpropagation is from the loss it differentiates: the relative error
    |a - n| / (|a| + |n|) between the gradients of `model.loss_and_gradients` (a) and central finite
    differences of the mean loss (n), over `entries`, (parameter index, element index) pairs, or every
    element of every parameter when None.

    Finite differences need float64: `params`, `x` and `targets` are float64 host arrays. Each entry is
    moved by +-eps in place and put back. A correct backward pass gives about 1e-9 here; `gpunet
    doctor` fails the network above 1e-6, and so do the tests. A bias gradient of the wrong shape (the
    seed's scalar) is compared element by element, as it would be applied.
    """
    _, grads = model.loss_and_gradients(params, x, targets)
    if entries is None:
        entries = [(i, idx) for i, p in enumerate(params) for idx in np.ndindex(p.shape)]

    def loss() -> float:
        return float(model.cross_entropy(model.forward(params, x), targets))

    analytic, numeric = [], []
    for i, idx in entries:
        saved = params[i][idx]
        params[i][idx] = saved + eps
        up = loss()
        params[i][idx] = saved - eps
        down = loss()
        params[i][idx] = saved
        numeric.append((up - down) / (2 * eps))
        analytic.append(float(np.broadcast_to(grads[i], params[i].shape)[idx]))
    a, n = np.array(analytic), np.array(numeric)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-300))


def _gradient_check(s: _Setup) -> Outcome:
    # Finite differences need float64, so this runs on the host whatever the device. The pixels
    # are scaled here, not by from_host, so that an input bug cannot pass for a gradient bug.
    ds = s.dataset
    x = ds.train_images[:GRAD_SAMPLES].astype(np.float64)
    if ds.train_images.dtype == np.uint8:  # pixels, as from_host would scale them
        x /= 255.0
    targets = model.one_hot(ds.train_labels[:GRAD_SAMPLES].astype(np.int64), ds.num_classes, np.float64)
    sizes = layer_sizes(s.config, ds)
    params = [np.asarray(p, np.float64) for p in initializers.he_normal(sizes, s.config.seed, "float64")]

    # Every bias, and a sample of the weights.
    entries = [(i, idx) for i in range(1, len(params), 2) for idx in np.ndindex(params[i].shape)]
    counts = [w.size for w in params[0::2]]
    ends = np.cumsum(counts)
    for flat in np.random.default_rng(0).choice(ends[-1], size=min(GRAD_WEIGHTS, ends[-1]), replace=False):
        layer = int(np.searchsorted(ends, flat, side="right"))
        entries.append((2 * layer, np.unravel_index(flat - (ends[layer] - counts[layer]), params[2 * layer].shape)))
    rel = gradient_error(params, x, targets, entries)
    why = "backpropagation disagrees with the loss it differentiates (a bias gradient summed over every axis?)"
    return rel < 1e-6, f"relative error {rel:.1e} over {len(entries)} entries", why


def _accuracy_from_output(s: _Setup) -> Outcome:
    params, k = s.initial_params(), s.dataset.num_classes
    x, targets, labels = (_rows(a, BATCH) for a in (s.split.x, s.split.targets, s.split.labels))
    logits = to_numpy(model.forward(params, x))
    predicted = np.argmax(logits, axis=1)
    host = float(np.mean(predicted == to_numpy(labels)))
    reported = _scalar(model.evaluate(params, x, targets, labels)[1])
    # Untrained, a wrong read-out can match the true labels' accuracy by chance; against the
    # output's own predictions, only the output layer scores exactly 1.
    own = s.device.asarray(predicted.astype(np.int64))
    own_accuracy = _scalar(model.evaluate(params, x, model.one_hot(own, k, targets.dtype), own)[1])
    ok = abs(reported - host) < 0.5 / len(predicted) and own_accuracy == 1.0 and logits.shape[1] == k
    value = f"evaluate {reported:.4f}, output argmax {host:.4f}, {logits.shape[1]} output columns"
    return ok, value, f"accuracy must be the argmax of the {k} outputs, not of a hidden layer"


def _bias_gradients_per_neuron(s: _Setup) -> Outcome:
    params = s.initial_params()
    _, grads = model.loss_and_gradients(params, _rows(s.split.x, BATCH), _rows(s.split.targets, BATCH))
    why = "each bias needs its own gradient: sum over the samples only (axis 0), not over every axis"
    for layer, (b, g) in enumerate(zip(params[1::2], grads[1::2]), 1):
        if tuple(np.shape(g)) != tuple(b.shape):
            return False, f"layer {layer}: gradient shape {tuple(np.shape(g))}, bias {tuple(b.shape)}", why
        live = to_numpy(g)[to_numpy(g) != 0]  # exactly 0: a dead unit, which says nothing
        if live.size >= 2 and np.all(live == live[0]):
            return False, f"layer {layer}: all {live.size} live neurons get {live[0]:.3g}", why
    return True, f"{len(params) // 2} layers, one gradient per neuron", ""


def _reference(device: Device) -> LocalEngine:
    """The doctor's steps run the network's one definition (gpunet.core.model), which it checks; the
    numba engine's kernels are held to it by the tests (tests/test_fused_cpu.py)."""
    return LocalEngine.for_device(device)


def _first_steps(s: _Setup) -> Outcome:
    config = dataclasses.replace(s.config, iterations=FIRST_STEPS, eval_every=FIRST_STEPS, batch_size=None)
    trainer = train.Trainer(config, s.dataset.first(SUBSET), s.device, engine=_reference(s.device))
    try:
        for _ in range(FIRST_STEPS):
            trainer.step()
        losses = to_numpy(trainer.step_losses)  # one slot per step, since eval_every == FIRST_STEPS
    finally:
        trainer.close()
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        why = "overflow: scale the inputs and subtract the row maximum in the softmax"
        return False, f"loss {losses[bad[0]]} at step {bad[0] + 1}", why
    value = f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {FIRST_STEPS} steps"
    return bool(losses[-1] < losses[0]), value, f"{config.optimizer} at lr {config.lr:g} did not lower the loss"


def _overfits_subset(s: _Setup) -> Outcome:
    config = dataclasses.replace(
        s.config, optimizer="adam", lr=OVERFIT_LR, iterations=OVERFIT_STEPS, eval_every=OVERFIT_EVERY, batch_size=None
    )
    trainer = train.Trainer(config, s.dataset.first(OVERFIT_SAMPLES), s.device, engine=_reference(s.device))
    best = 0.0
    try:
        for step in range(1, OVERFIT_STEPS + 1):
            trainer.step()
            if step % OVERFIT_EVERY == 0:
                record = trainer.evaluate()
                if record.train_accuracy == 1.0:
                    return True, f"train accuracy 1 at step {step}", ""
                if not math.isfinite(record.loss):
                    break
                best = max(best, record.train_accuracy)
    finally:
        trainer.close()
    why = "a network that cannot memorise 100 samples has a broken gradient, update or accuracy"
    return False, f"best train accuracy {best:.3f} by step {trainer.steps_done}", why


def _dead_relus(s: _Setup) -> Outcome:
    hidden = model.hidden_activations(s.initial_params(), _rows(s.split.x, SUBSET))[1:]
    if not hidden:
        return True, "no hidden layers", ""
    xp = s.device.xp
    dead = [_scalar(xp.mean(xp.astype(xp.all(h == 0, axis=0), h.dtype))) for h in hidden]
    value = "dead fraction " + ", ".join(f"{d:.2f}" for d in dead)
    return all(d < 0.5 for d in dead), value, "units that never fire never learn: check the biases and weight scale"


CHECKS: list[tuple[str, Callable[[_Setup], Outcome]]] = [
    ("inputs scaled to [0, 1]", _inputs_scaled),
    ("loss at initialisation ≈ ln(classes)", _initial_loss),
    ("gradients match finite differences (float64)", _gradient_check),
    ("accuracy read from the output layer", _accuracy_from_output),
    ("bias gradients are per neuron", _bias_gradients_per_neuron),
    ("no NaN or overflow in the first steps", _first_steps),
    (f"a {OVERFIT_SAMPLES}-sample subset overfits", _overfits_subset),
    ("few dead ReLUs at initialisation", _dead_relus),
]


def run_checks(dataset: Dataset, device: Device, config: TrainConfig) -> list[Check]:
    """Run every check in order; a check that raises is a failure that names the exception."""
    split = train.DeviceData.from_host(
        dataset.train_images, dataset.train_labels, device, config.dtype, dataset.num_classes
    )
    setup = _Setup(dataset, device, config, split)
    results = []
    # Overflow is what some checks look for; numpy's warnings about it would only bury the report.
    with np.errstate(all="ignore"):
        for name, check in CHECKS:
            try:
                passed, value, detail = check(setup)
            except Exception as e:  # a model that crashes has failed the check, and the rest still run
                passed, value, detail = False, "error", f"{type(e).__name__}: {e}"
            results.append(Check(name, bool(passed), value, "" if passed else detail))
    return results
