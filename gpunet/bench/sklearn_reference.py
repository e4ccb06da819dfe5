"""scikit-learn's MLPClassifier as a benchmark backend: what a user would pick instead of gpunet.

The same network (ReLU hidden layers, softmax output, cross-entropy), the same
full batch, no L2 penalty (alpha=0), the same optimizer and settings (Adam's
betas and epsilon are scikit-learn's defaults, as gpunet's are), in float32
where gpunet runs float32 (scikit-learn keeps float32 inputs in float32). One
`partial_fit` on the whole training set is one update. scikit-learn draws its
own initial weights (Glorot uniform), so only its accuracy, not its weights,
is compared with gpunet's. scikit-learn is imported here only, and only when
this backend is asked for.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gpunet.data.datasets import Dataset
from gpunet.errors import install_hint
from gpunet.training.train import Record, TrainConfig


def sklearn_unavailable(config: TrainConfig | None = None) -> str | None:
    """Why the scikit-learn reference cannot run (here, or with `config`), or None if it can."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return f"scikit-learn is not installed ({install_hint('--bench', 'gpunet[bench]')})"
    if config is not None and config.batch_size is not None:
        return "the scikit-learn reference trains full batch only (one partial_fit is one update)"
    return None


def _rows(images: np.ndarray, dtype: str) -> np.ndarray:
    x = images.astype(dtype)
    if images.dtype == np.uint8:  # pixels, scaled as gpunet scales them
        x /= 255.0
    return x


class SklearnTrainer:
    """The interface of gpunet.training.train.Trainer that the benchmark uses: step, evaluate, synchronize."""

    schedule = "scikit-learn partial_fit, whole batch"

    def __init__(self, config: TrainConfig, dataset: Dataset) -> None:
        from sklearn import config_context
        from sklearn.neural_network import MLPClassifier

        self.config, self.config_context = config, config_context
        self.train_x, self.train_y = _rows(dataset.train_images, config.dtype), np.asarray(dataset.train_labels)
        self.test_x, self.test_y = _rows(dataset.test_images, config.dtype), np.asarray(dataset.test_labels)
        self.classes = np.arange(dataset.num_classes)
        solver = {"gd": ("sgd", 0.0), "momentum": ("sgd", 0.9), "adam": ("adam", 0.9)}[config.optimizer]
        self.model = MLPClassifier(
            hidden_layer_sizes=config.hidden,
            activation="relu",
            solver=solver[0],
            alpha=0.0,
            batch_size=len(self.train_x),
            learning_rate="constant",
            learning_rate_init=config.lr,
            momentum=solver[1],
            nesterovs_momentum=False,
            shuffle=False,
            random_state=config.seed,
        )
        self.steps_done = 0

    def step(self) -> None:
        # assume_finite: scikit-learn would otherwise scan the whole input for NaN on every
        # call, which its own fit() does once; the update itself is unchanged.
        with self.config_context(assume_finite=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(self.train_x, self.train_y, classes=self.classes)
        self.steps_done += 1

    def evaluate(self) -> Record:
        if self.steps_done == 0:  # no weights before the first partial_fit: an untrained guess
            k = len(self.classes)
            return Record(0, float(np.log(k)), 1.0 / k, 1.0 / k)
        with self.config_context(assume_finite=True):
            proba = self.model.predict_proba(self.train_x)
            test_predicted = self.model.predict(self.test_x)
        rows = np.arange(len(self.train_y))
        loss = float(-np.mean(np.log(np.maximum(proba[rows, self.train_y], np.finfo(proba.dtype).tiny))))
        train_accuracy = float(np.mean(np.argmax(proba, axis=1) == self.train_y))
        return Record(self.steps_done, loss, train_accuracy, float(np.mean(test_predicted == self.test_y)))

    def synchronize(self) -> None:
        pass  # scikit-learn computes on the host, synchronously

    def close(self) -> None:
        """Nothing to let go: no worker threads of its own (BenchTrainer)."""

    def host_params(self) -> list[Any]:
        if self.steps_done == 0:
            return []
        return [a for pair in zip(self.model.coefs_, self.model.intercepts_) for a in pair]
