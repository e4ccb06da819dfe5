"""Settings a user gave explicitly are honoured or refused, never silently ignored (issue 20, class 10):
a seed beside --resume or warm_start, labels of another kind or length in score(), more classes than
memory allows, and inputs float32 cannot hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gpunet
from gpunet.cli.commands import app
from gpunet.device import backend
from gpunet.errors import ConfigError, ValuesOutOfRange
from gpunet.training import checkpoint
from tests.helpers import one_line_error

runner = CliRunner()
QUICK = ["--device", "cpu", "--eval-every", "1"]


def blobs(n: int = 120, classes=("a", "b", "c"), features: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n)
    x = np.eye(len(classes), features)[y] * 3 + rng.normal(size=(n, features))
    return x, np.asarray(classes)[y]


# --- a seed beside --resume or warm_start -----------------------------------------------------------


def test_resume_with_another_seed_is_refused_and_the_checkpoint_kept(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    first = runner.invoke(
        app, ["train", "--dataset", "synthetic", "--iterations", "3", "--checkpoint", str(path), *QUICK]
    )
    assert first.exit_code == 0, first.output
    before = path.read_bytes()
    result = runner.invoke(app, ["train", "--resume", str(path), "--more", "2", "--seed", "7", *QUICK])
    one_line_error(result, 1, f"{path} continues the run of seed 0: --seed 7 would change nothing")
    assert path.read_bytes() == before  # and no seed 7 recorded in it
    same = runner.invoke(app, ["train", "--resume", str(path), "--more", "2", "--seed", "0", *QUICK])
    assert same.exit_code == 0, same.output  # the seed it has: nothing ignored
    assert checkpoint.load(path).step == 5 and checkpoint.load(path).config.seed == 0


def test_warm_start_with_another_seed_is_refused() -> None:
    x, y = blobs()
    model = gpunet.MLPClassifier(iterations=3, device="cpu", warm_start=True).fit(x, y)
    with pytest.raises(ValueError, match="warm_start continues the fitted network: seed cannot change"):
        model.set_params(seed=7).fit(x, y)
    assert model.n_iter_ == 3


# --- score() and labels of another kind or length ------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> tuple[gpunet.MLPClassifier, np.ndarray, np.ndarray]:
    x, y = blobs()
    return gpunet.MLPClassifier(iterations=20, device="cpu").fit(x, y), x, y


def test_score_with_numbers_against_string_classes_raises(fitted) -> None:
    model, x, y = fitted
    assert model.score(x, y) > 0.5
    with pytest.raises(ValueError, match=r"y holds numbers \(int64\) but the model's classes_ are strings"):
        model.score(x, np.unique(y, return_inverse=True)[1])  # the example: it returned 0.0


def test_score_with_strings_against_number_classes_raises() -> None:
    x, y = blobs(classes=(3, 5, 9))
    model = gpunet.MLPClassifier(iterations=5, device="cpu").fit(x, y)
    with pytest.raises(ValueError, match=r"y holds strings but the model's classes_ are numbers \(int64\)"):
        model.score(x, y.astype(str))


@pytest.mark.parametrize(
    ("cut", "text"),
    [(slice(0, 10), "X has 120 samples but y has 10: one label per sample"), (None, "y should be a 1d array")],
    ids=["short", "2-d"],
)
def test_score_with_y_of_the_wrong_shape_raises_clearly(fitted, cut, text: str) -> None:
    model, x, y = fitted
    bad = y[cut] if cut is not None else np.stack([y, y], axis=1)
    with pytest.raises(ValueError, match=text):  # numpy's "cannot reshape" before
        model.score(x, bad)
    with pytest.raises(ValueError, match="sample_weight has shape"):
        model.score(x, y, sample_weight=np.ones(3))


def test_fit_with_y_of_the_wrong_length_raises_clearly() -> None:
    x, y = blobs()
    with pytest.raises(ValueError, match="X has 120 samples but y has 60: one label per sample"):
        gpunet.MLPClassifier(iterations=1, device="cpu").fit(x, y[:60])


# --- more classes than memory holds --------------------------------------------------------------


def test_a_hundred_thousand_classes_are_refused_before_allocating() -> None:
    n = 100_000
    with pytest.raises(ValueError, match=r"100,000 classes: the one-hot targets of 100,000 samples alone need 40 GB"):
        gpunet.MLPClassifier(iterations=1, device="cpu").fit(np.zeros((n, 2)), np.arange(n))


def test_many_classes_of_your_data_on_a_small_machine_are_one_line(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(2000) % 1000
    np.savez(tmp_path / "many.npz", x=rng.normal(size=(2000, 3)), y=y)
    monkeypatch.setattr(backend.Device, "memory_bytes", lambda self: 4_000_000)  # a 4 MB machine
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "many.npz"), "--iterations", "1", *QUICK])
    one_line_error(result, 2, "1,000 classes: the one-hot targets of 2,000 samples alone need 8 MB, more than the 4 MB")


def test_labels_beyond_the_class_limit_of_your_data_say_so(tmp_path: Path) -> None:
    np.savez(tmp_path / "huge.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 2, 99_999]))
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "huge.npz"), *QUICK])
    one_line_error(result, 1, "y holds labels up to 99,999: gpunet trains at most 65,536 classes")


# --- inputs float32 cannot hold --------------------------------------------------------------------


def test_float64_inputs_beyond_float32_are_named_not_called_diverged() -> None:
    x, y = blobs()
    x[3, 1] = 1e300
    too_big = r"values up to 1e\+300, beyond float32's range"
    with pytest.raises(ValuesOutOfRange, match=too_big) as caught, pytest.warns(UserWarning, match="unit range"):
        gpunet.MLPClassifier(iterations=3, device="cpu").fit(x, y)  # the warning: as for any unscaled input
    assert isinstance(caught.value, ValueError) and "diverged" not in str(caught.value)
    model = gpunet.MLPClassifier(iterations=3, device="cpu").fit(*blobs())
    with pytest.raises(ValueError, match="beyond float32's range"):
        model.predict(x)


def test_float64_data_beyond_float32_on_the_cli(tmp_path: Path) -> None:
    x, _ = blobs()
    y = np.arange(120) % 3
    x[0, 0] = -1e300
    np.savez(tmp_path / "big.npz", x=x, y=y)
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "big.npz"), "--iterations", "3", *QUICK])
    one_line_error(result, 1, "the inputs hold values up to 1e+300, beyond float32's range")
    model = tmp_path / "m.npz"
    np.savez(tmp_path / "ok.npz", x=x[1:], y=y[1:])
    trained = runner.invoke(
        app, ["train", "--data", str(tmp_path / "ok.npz"), "--iterations", "2", "--checkpoint", str(model), *QUICK]
    )
    assert trained.exit_code == 0, trained.output
    np.save(tmp_path / "rows.npy", x[:2])
    one_line_error(runner.invoke(app, ["predict", str(model), str(tmp_path / "rows.npy")]), 1, "beyond float32's range")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(ValuesOutOfRange, ValueError)
