"""gpunet.MLPClassifier: the trainer as a scikit-learn style estimator over a user's own arrays.

It follows scikit-learn's conventions (constructor arguments stored as given,
fit returns self, fitted attributes end in `_`) without importing it, and
trains through the same Trainer as the command line: the arrays become a
Dataset with no test split, and the fitted state is a checkpoint, which is
what `save` writes and what `warm_start` continues from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.core import model
from gpunet.data.datasets import Dataset
from gpunet.device.arrays import (
    as_array,
    check_rows,
    choose_device,
    comparable_labels,
    device_of,
    encode_labels,
    native,
    to_device,
)
from gpunet.device.backend import Array, Device, array_namespace, is_numpy_array, to_numpy
from gpunet.errors import ConvergenceWarning
from gpunet.files import outputs, signals
from gpunet.training import checkpoint, doctor, evaluation
from gpunet.training.engine import choose_engine
from gpunet.training.train import Outcome, TrainConfig, Trainer, device_rows

DEFAULT = TrainConfig()
_CONFIG_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before `fit` (scikit-learn's name and bases)."""


@functools.cache
def _not_fitted_class(sklearn_class: type | None) -> type:
    """NotFittedError, and scikit-learn's too once the caller has imported it, so its tools recognise it."""
    if sklearn_class is None:
        return NotFittedError
    return type("NotFittedError", (NotFittedError, sklearn_class), {"__module__": __name__})


class MLPClassifier:
    """A multilayer perceptron classifier: ReLU hidden layers, softmax output, cross-entropy loss.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes; () is softmax regression.
    optimizer : "adam", "momentum" or "gd"
    lr : float
        Learning rate.
    iterations : int
        Updates per call to `fit` (each one a full pass over the data when `batch_size` is None).
    batch_size : int or None
        Samples per update; None: all of them (full-batch training, the CLI's default).
    device : "auto", "cpu", "cuda" or "cuda:N"
        "auto" trains where the data already is (a cupy array on its GPU), and a
        numpy array on a usable GPU, else on the CPU.
    dtype : "float32" or "float64"
    seed : int
        Seeds the initial weights and the batch order: the same seed, the same model.
    eval_every : int
        Steps between the loss and accuracy records in `history_`.
    warm_start : bool
        If True, `fit` continues from the fitted weights and optimizer state
        for `iterations` more updates, instead of starting afresh.

    Inputs: rows of numbers (numpy, cupy, array-api-strict, or anything else
    with DLPack or numpy's `__array__`). uint8 rows are pixels and are scaled
    to [0, 1] as the command line does; other numbers are used as given, with
    a warning when they lie far outside a unit range. Labels may be any
    values; `classes_` holds them, sorted.

    Fitted attributes: `classes_`, `n_features_in_`, `n_iter_` (updates done
    in all), `loss_curve_` (each update's batch loss), `history_` (loss and
    training accuracy every `eval_every` updates), `device_`, and
    `coefs_` / `intercepts_` (the weights, on the host).
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = DEFAULT.hidden,
        optimizer: str = DEFAULT.optimizer,
        lr: float = DEFAULT.lr,
        iterations: int = DEFAULT.iterations,
        batch_size: int | None = DEFAULT.batch_size,
        device: str = "auto",
        dtype: str = DEFAULT.dtype,
        seed: int = DEFAULT.seed,
        eval_every: int = DEFAULT.eval_every,
        warm_start: bool = False,
    ) -> None:
        self.hidden = hidden
        self.optimizer = optimizer
        self.lr = lr
        self.iterations = iterations
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.eval_every = eval_every
        self.warm_start = warm_start

    # --- scikit-learn's estimator protocol -------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> MLPClassifier:
        """Change constructor arguments; returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for MLPClassifier: choose from {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if not _same(v, _DEFAULTS[k])}
        return f"MLPClassifier({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_state")

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags  # only scikit-learn asks

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(),
        )

    _estimator_type = "classifier"  # what scikit-learn before 1.6 looked for

    # --- fitting ---------------------------------------------------------------------------

    def config(self) -> TrainConfig:
        """The training configuration the parameters describe, as given: a ValueError names any that cannot
        train (gpunet.params' TRAIN_RULES), and none is converted (hidden='64' or iterations=10.9 are refused)."""
        return TrainConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS})

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on rows `X` with labels `y`; returns self.

        With `warm_start`, training continues from the fitted state for
        `iterations` more updates; otherwise it starts from the seeded weights.

        A run whose loss blew up but stayed finite ("not learning") keeps its
        model, as scikit-learn does, and warns with gpunet.ConvergenceWarning;
        one whose loss became NaN or infinite raises gpunet.errors.DivergedError
        (the estimator is then left as it was). Ctrl-C keeps the weights of the
        last step done, with a warning.
        """
        config = self.config()
        x = as_array(X)
        device = choose_device(x, str(self.device))
        x = to_device(x, device)
        check_rows(x)
        classes, labels = encode_labels(y, device)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"X has {x.shape[0]} samples but y has {labels.shape[0]}: one label per sample")
        if len(classes) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes; y holds only one class: {classes}")
        _warn_if_unscaled(x, device, config.dtype)
        previous = self._state if self.warm_start and self.__sklearn_is_fitted__() else None
        if previous is not None:
            config = self._continued(previous, config, x, classes)
        dataset = Dataset(
            name="arrays",
            source=f"{type(X).__module__}.{type(X).__name__} on {device.name}",
            train_images=x,
            train_labels=labels,
            test_images=None,
            test_labels=None,
            checksum=_checksum(x, labels),
            verified=False,
            num_classes=len(classes),
        )
        # The whole fit, not only the training loop, is one stop-request block: a signal while the
        # model is captured or the engine's threads are joined must not cut that short and lose the
        # fitted model; it only counts, and the first one is handed to the caller's handler below.
        with signals.stop_requests() as stop_signals:
            # Where the compiled CPU kernels cannot run, the fit still trains (in the reference) and warns why.
            engine = choose_engine(
                device, config.dtype, say=lambda why: warnings.warn(why, RuntimeWarning, stacklevel=4)
            )
            trainer = Trainer(config, dataset, device, engine=engine)
            try:
                if previous is not None:
                    checkpoint.restore(trainer, previous)
                stopped = None
                result = trainer.run()
                if result.outcome is Outcome.INTERRUPTED:  # Ctrl-C: keep what was learned (as scikit-learn does)
                    trainer.check_losses()
                    stopped = f"training {result.problem}; the model holds the weights of that step"
                elif result.outcome is Outcome.NOT_LEARNING:  # a poor model is still a model: kept, with a warning
                    warnings.warn(f"{result.problem}; the model holds its last step's weights", ConvergenceWarning, 2)
                elif result.problem is not None:  # diverged: NaN weights are no model to keep
                    raise result.problem
                state = checkpoint.capture(trainer, _jsonable(classes))
            finally:
                trainer.close()
            self._set_state(state, device.name, classes)
        if stop_signals:
            # The model is fitted and kept; the signal then acts as the caller's handler says: a
            # KeyboardInterrupt by default, so a script or a loop of fits stops as Python users expect.
            late = f"training had completed ({trainer.steps_done} steps) when {signals.name(stop_signals[0])} came"
            signals.hand_over(
                stop_signals[0],
                f"{stopped or late}; fitted: predict, score and save work, "
                "and fit with warm_start=True trains it further",
            )
        elif stopped:  # a stop that was no signal of ours (a Dask step given up): said, not raised
            warnings.warn(stopped, stacklevel=2)
        return self

    def _continued(
        self, previous: checkpoint.Checkpoint, config: TrainConfig, x: Array, classes: np.ndarray
    ) -> TrainConfig:
        """The configuration that continues `previous` for `config.iterations` more updates, or a ValueError
        naming what would change (checkpoint.continuation_mismatches: the rule `gpunet train --resume` follows)."""
        sizes = [x.shape[1], *config.hidden, len(classes)]
        found = {m.setting: m for m in checkpoint.continuation_mismatches(previous, config, sizes, classes=classes)}
        if "features" in found:
            raise ValueError(f"warm_start: X has {x.shape[1]} features, the fitted model {self.n_features_in_}")
        if "classes" in found or "outputs" in found:
            raise ValueError(f"warm_start: y holds classes {classes}, the fitted model {self.classes_}")
        changed = [name for name in ("hidden", "optimizer", "dtype", "seed") if name in found]
        if changed:  # (the seed drew the weights being continued)
            raise ValueError(f"warm_start continues the fitted network: {', '.join(changed)} cannot change")
        return replace(config, iterations=previous.step + config.iterations)

    def _set_state(self, state: checkpoint.Checkpoint, device: str, classes: np.ndarray | None = None) -> None:
        self._state = state
        if classes is None:  # from a file: the labels it recorded, or the output units' numbers
            classes = np.asarray(state.classes) if state.classes is not None else np.arange(state.sizes[-1])
        self.classes_ = classes
        self.n_features_in_ = state.sizes[0]
        self.n_iter_ = state.step
        self.loss_curve_ = list(state.loss_curve)
        self.history_ = [
            {"iteration": r.iteration, "loss": r.loss, "train_accuracy": r.train_accuracy} for r in state.history
        ]
        self.device_ = device

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Each layer's weights, (inputs, outputs), on the host."""
        return list(self._fitted().params[0::2])

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Each layer's biases, on the host."""
        return list(self._fitted().params[1::2])

    # --- predicting ------------------------------------------------------------------------

    def _fitted(self) -> checkpoint.Checkpoint:
        if not self.__sklearn_is_fitted__():
            sklearn = sys.modules.get("sklearn.exceptions")
            raise _not_fitted_class(getattr(sklearn, "NotFittedError", None))(
                "This MLPClassifier instance is not fitted yet. Call 'fit' with appropriate arguments first."
            )
        return self._state

    def _rows(self, X: Any) -> tuple[list[Array], Array, Device, bool]:
        """The parameters and X's rows on the device the model runs on, and whether X came from the host."""
        state = self._fitted()
        x = as_array(X)
        from_host = is_numpy_array(x)
        device = choose_device(x, str(self.device)) if native(x) else device_of(x)
        x = to_device(x, device)
        check_rows(x)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but MLPClassifier is expecting {self.n_features_in_} features as input"
            )
        params = [device.asarray(p) for p in state.params]
        return params, device_rows(x, device, state.config.dtype), device, from_host

    def predict_proba(self, X: Any) -> Array:
        """Each row's probability of each class in `classes_`, (samples, classes), where X lives."""
        params, x, _, from_host = self._rows(X)
        proba = evaluation.probabilities(params, x)
        return to_numpy(proba) if from_host else proba

    def predict_log_proba(self, X: Any) -> Array:
        """The log of predict_proba, computed stably."""
        params, x, _, from_host = self._rows(X)
        log_proba = evaluation.log_probabilities(params, x)
        return to_numpy(log_proba) if from_host else log_proba

    def predict(self, X: Any) -> Array:
        """Each row's most probable label (from `classes_`), where X lives if the labels are numbers."""
        params, x, device, from_host = self._rows(X)
        logits_t = model.logits_t(params, x)
        xp = array_namespace(logits_t)
        index = xp.argmax(logits_t, axis=0)
        if from_host or self.classes_.dtype.kind not in "biuf":  # strings exist only on the host
            return self.classes_[to_numpy(index)]
        return xp.take(device.asarray(self.classes_), index)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy of predict(X) against y (weighted by sample_weight if given)."""
        predicted = to_numpy(as_array(self.predict(X)))
        truth = comparable_labels(to_numpy(as_array(y, numbers=False)), self.classes_, len(predicted))
        weights = None if sample_weight is None else to_numpy(as_array(sample_weight))
        if weights is not None and weights.shape != predicted.shape:
            raise ValueError(f"sample_weight has shape {weights.shape}, X {len(predicted)} samples: one weight each")
        return float(np.average(predicted == truth, weights=weights))

    def evaluate(self, X: Any, y: Any) -> evaluation.Evaluation:
        """Loss, accuracy and confusion matrix on rows `X` with labels `y` (what `gpunet evaluate` reports).

        The labels must be among `classes_`; the confusion matrix's rows and columns follow `classes_`
        (rows: the true class, columns: the predicted one). Computed on the device X is on, or the
        estimator's `device` for host arrays.
        """
        params, x, device, _ = self._rows(X)
        classes = self.classes_
        truth = comparable_labels(to_numpy(as_array(y, numbers=False)), classes, x.shape[0])
        index = np.searchsorted(classes, truth)  # classes_ is sorted, as np.unique leaves it
        known = (index < len(classes)) & (classes[np.minimum(index, len(classes) - 1)] == truth)
        if not known.all():
            unknown = np.unique(truth[~known])
            raise ValueError(f"y holds labels the model was not trained on: {unknown[:5].tolist()}")
        return evaluation.evaluate(params, x, index, device, self._state.config.dtype, classes.tolist())

    # --- files -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the fitted model as a gpunet checkpoint (atomically): `gpunet evaluate` and `predict` read it.

        The path is claimed as the CLI claims its outputs (gpunet.files.outputs): refused with
        OutputRefused (a ValueError) when it names a directory ('models/'), something that is not a
        regular file or an unusable name, and with OutputInUse while a `gpunet train` writes it;
        WriteFailed, the file there intact, when the write itself fails.
        """
        state = self._fitted()
        with outputs.claim_outputs({"the path": path}) as claim:
            checkpoint.write(claim.path("the path"), state)


def load(path: str | Path, device: str = "auto") -> MLPClassifier:
    """A fitted MLPClassifier from a checkpoint written by `save` or by `gpunet train --checkpoint`."""
    return from_checkpoint(checkpoint.load(Path(path)), device)


def from_checkpoint(state: checkpoint.Checkpoint, device: str = "auto") -> MLPClassifier:
    """A fitted MLPClassifier holding a checkpoint already read (gpunet.training.checkpoint.load)."""
    config = state.config
    estimator = MLPClassifier(
        hidden=config.hidden,
        optimizer=config.optimizer,
        lr=config.lr,
        iterations=config.iterations,
        batch_size=config.batch_size,
        device=device,
        dtype=config.dtype,
        seed=config.seed,
        eval_every=config.eval_every,
    )
    estimator._set_state(state, "cpu")
    return estimator


_DEFAULTS = {name: p.default for name, p in inspect.signature(MLPClassifier.__init__).parameters.items()}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other things without a plain ==
        return a is b


def _warn_if_unscaled(x: Array, device: Device, dtype: str) -> None:
    """The seed's failure, named before training: numbers far outside a unit range (doctor's first check)."""
    if x.dtype == device.xp.uint8:  # pixels are scaled on the device
        return
    problem = doctor.far_outside_unit_range(x)
    if problem:
        warnings.warn(f"{problem}; scale X (e.g. standardise each feature) before fit", UserWarning, stacklevel=3)


def _checksum(x: Array, labels: Array) -> str:
    """SHA-256 of the training arrays when they are on the host (cheap there); device arrays are not read back."""
    if not (is_numpy_array(x) and is_numpy_array(labels)):
        return ""
    digest = hashlib.sha256()
    for a in (x, labels):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()


def _jsonable(classes: np.ndarray) -> list[Any] | None:
    """The labels as a checkpoint records them; None when they are just 0..k-1."""
    if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(len(classes))):
        return None
    return classes.tolist()
