"""Every front end thin: a run's outcome is a value each face words its own way, and evaluation,
probabilities and the engine's choice are library calls a Python user has too (issue 19 items 1, 5)."""

from __future__ import annotations

import warnings

import pytest

import gpunet
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.errors import DivergedError
from gpunet.training.train import Outcome, TrainConfig, Trainer
from tests.helpers import invoke, one_line_error

BLOWS_UP = {"optimizer": "gd", "lr": 50.0, "iterations": 40, "eval_every": 20}  # finite, but not learning


# --- outcomes -------------------------------------------------------------------------------------


def test_a_run_returns_its_outcome_as_a_value() -> None:
    data = datasets.synthetic()
    done = Trainer(TrainConfig(iterations=20), data, resolve_device("cpu")).run()
    assert done.outcome is Outcome.FINISHED and done.problem is None and done.final.iteration == 20
    blown = Trainer(TrainConfig(**BLOWS_UP), data, resolve_device("cpu")).run()  # returned, not raised
    assert blown.outcome is Outcome.NOT_LEARNING and blown.final.iteration == 40
    assert str(blown.problem).startswith("not learning: the training loss went from ")


def test_a_fit_that_does_not_learn_keeps_its_model_and_warns_in_pythons_names() -> None:
    data = datasets.synthetic()
    estimator = gpunet.MLPClassifier(device="cpu", **BLOWS_UP)
    with pytest.warns(gpunet.ConvergenceWarning) as caught:
        assert estimator.fit(data.train_images, data.train_labels) is estimator
    assert issubclass(gpunet.ConvergenceWarning, UserWarning)
    message = str(caught[0].message)
    assert message.startswith("not learning: the training loss went from ")
    assert "such as lr=5 (gpunet.training.doctor.run_checks checks the network itself)" in message
    assert "--lr" not in message and "gpunet doctor" not in message  # flags are the command line's words
    assert estimator.n_iter_ == 40 and estimator.predict(data.test_images[:5]).shape == (5,)


def test_a_fit_that_diverges_raises_and_leaves_the_estimator_unfitted() -> None:
    data = datasets.synthetic()
    estimator = gpunet.MLPClassifier(device="cpu", optimizer="gd", lr=1e30, iterations=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning: a NaN loss is an error, not a poor model
        with pytest.raises(DivergedError, match="training diverged"):
            estimator.fit(data.train_images, data.train_labels)
    with pytest.raises(gpunet.NotFittedError):
        estimator.predict(data.test_images[:5])


def test_the_command_line_words_the_same_outcome_with_its_flags() -> None:
    args = ["--optimizer", "gd", "--lr", "50", "--iterations", "40", "--eval-every", "20", "--no-save"]
    line = one_line_error(invoke("train", "--dataset", "synthetic", "--device", "cpu", *args), 3, "not learning")
    assert "such as --lr 5 (gpunet doctor checks the network itself)" in line and "lr=5" not in line
