"""Every front end thin: a run's outcome is a value each face words its own way, and evaluation,
probabilities and the engine's choice are library calls a Python user has too (issue 19 items 1, 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.errors import ConfigError, DivergedError
from gpunet.training import checkpoint, sources
from gpunet.training.train import LocalSource, Outcome, TrainConfig, Trainer
from tests.conftest import FASHION_DIR
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


# --- evaluation and probabilities: the library's, the CLI printing them ---------------------------


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A model trained by the command line on the synthetic dataset."""
    path = tmp_path / "m.npz"
    result = invoke("train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "30", "--checkpoint", path)
    assert result.exit_code == 0, result.output
    return path


def test_a_loaded_model_evaluates_as_gpunet_evaluate_does(trained: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", trained, "--device", "cpu", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    _, _, x_test, y_test = gpunet.load_dataset("synthetic")
    measured = gpunet.load(trained, device="cpu").evaluate(x_test, y_test)
    assert measured.samples == report["samples"] == len(y_test)
    assert np.float32(measured.loss) == np.float32(report["loss"])  # the JSON holds float32's shortest digits
    assert np.float32(measured.accuracy) == np.float32(report["accuracy"])
    assert measured.confusion.tolist() == report["confusion_matrix"]
    assert measured.per_class_accuracy.tolist() == list(report["per_class_accuracy"].values())
    assert measured.classes == tuple(range(10))


def test_evaluate_follows_the_estimators_own_labels() -> None:
    data = datasets.synthetic(n_train=600, n_test=200)
    names = np.array([f"class {i}" for i in range(10)])
    estimator = gpunet.MLPClassifier(device="cpu", iterations=40).fit(data.train_images, names[data.train_labels])
    measured = estimator.evaluate(data.test_images, names[data.test_labels])
    assert measured.classes == tuple(estimator.classes_.tolist())
    assert measured.accuracy == pytest.approx(estimator.score(data.test_images, names[data.test_labels]))
    assert measured.confusion.sum() == 200 and measured.confusion.shape == (10, 10)
    predicted = estimator.predict(data.test_images)
    rows, columns = (
        np.searchsorted(estimator.classes_, names[data.test_labels]),
        np.searchsorted(estimator.classes_, predicted),
    )
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (rows, columns), 1)
    np.testing.assert_array_equal(measured.confusion, expected)  # rows: the true class, columns: the predicted
    with pytest.raises(ValueError, match="labels the model was not trained on: \\['class 99'\\]"):
        estimator.evaluate(data.test_images[:2], ["class 1", "class 99"])
    with pytest.raises(gpunet.NotFittedError):
        gpunet.MLPClassifier().evaluate(data.test_images, data.test_labels)


def test_predict_prints_the_estimators_probabilities(trained: Path, tmp_path: Path) -> None:
    _, _, x_test, _ = gpunet.load_dataset("synthetic")
    np.save(tmp_path / "rows.npy", x_test[:4])
    result = invoke("predict", trained, tmp_path / "rows.npy", "--device", "cpu", "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    predictions = json.loads((tmp_path / "p.json").read_text())["predictions"]
    proba = gpunet.load(trained, device="cpu").predict_proba(x_test[:4])
    printed = np.array([list(p["probabilities"].values()) for p in predictions], dtype=np.float32)
    np.testing.assert_array_equal(printed, proba)  # the JSON holds float32's shortest digits: the same numbers
    assert [p["class"] for p in predictions] == proba.argmax(axis=1).tolist()


# --- the engine: chosen in the library ------------------------------------------------------------


def test_the_local_engine_trains_on_the_trainers_own_device() -> None:
    data, cpu = datasets.synthetic(n_train=300, n_test=100), resolve_device("cpu")
    assert sources.make_source("local", TrainConfig(), data, cpu) is None
    trainer = sources.make_trainer("local", TrainConfig(iterations=5), data, cpu)
    try:
        assert isinstance(trainer.source, LocalSource) and trainer.run().outcome is Outcome.FINISHED
    finally:
        trainer.close()


def test_the_engine_choice_refuses_what_it_cannot_run() -> None:
    data, cpu = datasets.synthetic(n_train=300, n_test=100), resolve_device("cpu")
    with pytest.raises(ConfigError, match="unknown engine 'spark': choose local or dask"):
        sources.make_source("spark", TrainConfig(), data, cpu)
    with pytest.raises(ConfigError, match="reads the built-in datasets' files; synthetic has none"):
        sources.make_source("dask", TrainConfig(), data, cpu)  # made in memory: no files for workers to read


def test_a_built_in_dataset_knows_the_directory_its_files_are_in() -> None:
    data = datasets.load("fashion-mnist", Path(FASHION_DIR), offline=True)
    assert data.directory is not None and data.directory.is_dir()
    assert all(f.parent == data.directory for f in data.files)  # what the Dask workers read, not a display string
    assert datasets.synthetic().directory is None


# --- one rule for what may continue a checkpoint: warm_start and --resume -------------------------


def test_warm_start_and_resume_follow_one_rule(trained: Path, tmp_path: Path) -> None:
    saved = checkpoint.load(trained)
    data = datasets.synthetic()
    same = TrainConfig(**{**vars(saved.config), "lr": 0.01, "iterations": 80})  # a new lr and total may change
    assert checkpoint.continuation_mismatches(saved, same, saved.sizes, dataset=data) == []
    other = TrainConfig(**{**vars(saved.config), "seed": 7, "dtype": "float64"})
    found = checkpoint.continuation_mismatches(saved, other, saved.sizes, dataset=data)
    assert [(m.setting, m.saved, m.given) for m in found] == [("seed", 0, 7), ("dtype", "float32", "float64")]
    # The command line and the estimator refuse the same change, each in its own words.
    line = one_line_error(invoke("train", "--resume", trained, "--more", "5", "--seed", "7", "--device", "cpu"), 1)
    assert "continues the run of seed 0: --seed 7 would change nothing" in line
    estimator = gpunet.load(trained, device="cpu").set_params(warm_start=True, seed=7, iterations=5)
    with pytest.raises(ValueError, match="warm_start continues the fitted network: seed cannot change"):
        estimator.fit(data.train_images, data.train_labels)
    estimator.set_params(seed=0, lr=0.01).fit(data.train_images, data.train_labels)  # lr may change in both
    assert estimator.n_iter_ == saved.step + 5
