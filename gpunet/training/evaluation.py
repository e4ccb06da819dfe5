"""A trained model measured on labelled rows, and the probabilities it gives: the library's, for every face.

`gpunet evaluate` and `MLPClassifier.evaluate` compute the same numbers here, and `gpunet predict`
reads its probabilities from the estimator (MLPClassifier.predict_proba), which reads them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpunet.core import model
from gpunet.device.backend import Device, array_namespace, to_numpy
from gpunet.training.engine import LocalEngine
from gpunet.training.train import DeviceData

Array = Any


@dataclass(frozen=True)
class Evaluation:
    """A model's loss, accuracy and confusion matrix on labelled rows.

    `confusion[i, j]` counts the samples of class i the model calls j (rows: the true class,
    columns: the predicted one), in the order of `classes`, which names each output unit.
    """

    samples: int
    loss: float  # mean cross-entropy
    accuracy: float
    confusion: np.ndarray  # (classes, classes), int64
    classes: tuple[Any, ...]

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """The share of each class's samples the model gets right (0 for a class with no sample)."""
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)


def evaluate(
    params: Sequence[Array], rows: Array, labels: Array, device: Device, dtype: str, classes: Sequence[Any]
) -> Evaluation:
    """Measure the network `params` (on `device`) on `rows` whose labels are class indices 0..k-1.

    `classes` names the output units, one each. uint8 rows are pixels, scaled to [0, 1] as in
    training; the loss and accuracy are the trainer's own (LocalEngine.evaluate).
    """
    data = DeviceData.from_host(rows, labels, device, dtype, len(classes))  # one-hot over the model's outputs
    engine = LocalEngine.for_device(device)
    try:
        loss, accuracy = engine.evaluate(params, data.x, data.targets, data.labels)
    finally:
        engine.close()
    confusion = to_numpy(model.confusion_matrix(params, data.x, data.targets)).astype(np.int64)
    return Evaluation(
        samples=int(data.x.shape[0]),
        loss=float(to_numpy(loss)),
        accuracy=float(to_numpy(accuracy)),
        confusion=confusion,
        classes=tuple(classes),
    )


def log_probabilities(params: Sequence[Array], x: Array) -> Array:
    """Each row's log-probability of each class, (samples, classes), computed stably where x is."""
    return model.log_softmax(model.logits_t(params, x), axis=0).T


def probabilities(params: Sequence[Array], x: Array) -> Array:
    """Each row's probability of each class, (samples, classes), where x is."""
    return array_namespace(x).exp(log_probabilities(params, x))
