"""gpunet.MLPClassifier: scikit-learn's conventions and checks, any labels, any array namespace, one training core."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from unittest import SkipTest

import array_api_strict
import numpy as np
import pytest
from array_api_strict._array_object import Array as StrictArray
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpunet
from gpunet.data import datasets
from gpunet.training.train import TrainConfig, train
from tests.conftest import numpy_device

QUICK = {"iterations": 60, "eval_every": 20}


# The checks scikit-learn itself skips here, and why they cannot apply. Every other check runs and passes.
NOT_APPLICABLE = {
    "check_array_api_input": "needs SCIPY_ARRAY_API=1, whose mode hands the estimator PyTorch arrays to compute "
    "in and return; gpunet computes in numpy, cupy or array-api-strict (tested below) and takes PyTorch via DLPack",
    "check_classifier_data_not_an_array": "its pandas variant needs pandas, which gpunet does not depend on "
    "(the variant with a plain array-like object runs)",
}


@parametrize_with_checks([gpunet.MLPClassifier()])
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    name = getattr(check, "func", check).__name__
    try:
        check(estimator)
    except SkipTest as skipped:
        assert name in NOT_APPLICABLE, f"{name} skipped unexpectedly: {skipped}"


def test_public_api_is_what_gpunet_names() -> None:
    assert set(gpunet.__all__) == {
        "ConvergenceWarning",
        "MLPClassifier",
        "NotFittedError",
        "__version__",
        "load",
        "load_dataset",
    }
    assert gpunet.MLPClassifier.__doc__ and gpunet.load.__doc__ and gpunet.load_dataset.__doc__
    assert gpunet.ConvergenceWarning.__doc__


def test_fit_is_the_cli_trainer_on_the_same_rows(small: datasets.Dataset) -> None:
    """One training core: the estimator's weights are the Trainer's, bit for bit."""
    estimator = gpunet.MLPClassifier(device="cpu", **QUICK).fit(small.train_images, small.train_labels)
    result = train(TrainConfig(**QUICK), small, numpy_device())
    for ours, trainers in zip(estimator.coefs_ + estimator.intercepts_, result.params[0::2] + result.params[1::2]):
        np.testing.assert_array_equal(ours, trainers)
    assert [h["loss"] for h in estimator.history_] == [r.loss for r in result.history]
    assert estimator.n_iter_ == 60 and len(estimator.loss_curve_) == 60
    assert estimator.loss_curve_[0] == pytest.approx(result.history[0].loss, rel=1e-6)  # before the first update
    assert estimator.score(small.test_images, small.test_labels) == pytest.approx(result.final.test_accuracy)


def test_uint8_is_scaled_and_floats_are_used_as_given(small: datasets.Dataset) -> None:
    pixels = gpunet.MLPClassifier(device="cpu", **QUICK).fit(small.train_images, small.train_labels)
    scaled = small.train_images.astype(np.float32) / np.float32(255)
    floats = gpunet.MLPClassifier(device="cpu", **QUICK).fit(scaled, small.train_labels)
    np.testing.assert_allclose(pixels.coefs_[0], floats.coefs_[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pixels.predict(small.test_images), floats.predict(small.test_images / 255))


def test_unscaled_inputs_get_a_warning_naming_the_seeds_failure(small: datasets.Dataset) -> None:
    raw = small.train_images.astype(np.float32)  # 0..255 as floats: the seed's mistake
    with pytest.warns(UserWarning, match=r"far outside a unit range.*divided by 255"):
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(raw, small.train_labels)
    standardised = (raw - raw.mean(axis=0)) / (raw.std(axis=0) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(standardised, small.train_labels)


@pytest.mark.parametrize(
    "names",
    [
        np.array(["cat", "dog", "emu"]),
        np.array([-7, 3, 1000]),
        np.array([-1.0, 2.0, 7.0]),
        np.array([2, 4, 8], np.uint8),
    ],
    ids=["strings", "integers", "floats", "uint8"],
)
def test_labels_of_any_values_map_through_classes(names: np.ndarray, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    index = np.argmax(x[:, :3], axis=1)  # a separable rule
    y = names[index]
    estimator = gpunet.MLPClassifier(device="cpu", iterations=200).fit(x, y)
    np.testing.assert_array_equal(estimator.classes_, np.sort(np.unique(y)))
    assert estimator.score(x, y) > 0.9
    assert set(np.unique(estimator.predict(x))) <= set(estimator.classes_)
    proba = estimator.predict_proba(x)
    np.testing.assert_array_equal(estimator.classes_[np.argmax(proba, axis=1)], estimator.predict(x))
    estimator.save(tmp_path / "m.npz")
    loaded = gpunet.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.classes_, estimator.classes_)
    np.testing.assert_array_equal(loaded.predict(x), estimator.predict(x))


def test_warm_start_continues_exactly_where_fit_stopped(small: datasets.Dataset) -> None:
    x, y = small.train_images, small.train_labels
    for batch_size in (None, 128):
        whole = gpunet.MLPClassifier(device="cpu", iterations=40, batch_size=batch_size).fit(x, y)
        halves = gpunet.MLPClassifier(device="cpu", iterations=20, batch_size=batch_size, warm_start=True)
        halves.fit(x, y).fit(x, y)
        assert halves.n_iter_ == 40 and halves.loss_curve_ == whole.loss_curve_
        for a, b in zip(halves.coefs_, whole.coefs_):
            np.testing.assert_array_equal(a, b)
    cold = gpunet.MLPClassifier(device="cpu", iterations=20).fit(x, y).fit(x, y)
    assert cold.n_iter_ == 20  # without warm_start, fit starts afresh


def test_warm_start_refuses_another_network(small: datasets.Dataset) -> None:
    estimator = gpunet.MLPClassifier(device="cpu", iterations=2, warm_start=True).fit(
        small.train_images, small.train_labels
    )
    with pytest.raises(ValueError, match="hidden cannot change"):
        estimator.set_params(hidden=(8,)).fit(small.train_images, small.train_labels)
    with pytest.raises(ValueError, match="features"):
        estimator.set_params(hidden=(16, 16)).fit(small.train_images[:, :100], small.train_labels)


def test_bad_parameters_are_a_value_error_at_fit(small: datasets.Dataset) -> None:
    for bad in ({"lr": -1}, {"hidden": (0,)}, {"optimizer": "sgd"}, {"dtype": "float16"}, {"hidden": "big"}):
        estimator = gpunet.MLPClassifier(**bad)  # stored as given, refused when used
        with pytest.raises(ValueError):
            estimator.fit(small.train_images[:50], small.train_labels[:50])


def _host_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shape of every array-api-strict array that travels to numpy (DLPack or __array__)."""
    reads: list[tuple[int, ...]] = []
    from_dlpack, to_array = np.from_dlpack, StrictArray.__array__

    def recording_from_dlpack(a, *args, **kwargs):
        reads.append(tuple(a.shape))
        return from_dlpack(a, *args, **kwargs)

    def recording_array(self, *args, **kwargs):
        reads.append(tuple(self.shape))
        return to_array(self, *args, **kwargs)

    monkeypatch.setattr(np, "from_dlpack", recording_from_dlpack)
    monkeypatch.setattr(StrictArray, "__array__", recording_array)
    return reads


def test_arrays_of_another_namespace_train_where_they_are(small: datasets.Dataset, monkeypatch) -> None:
    """The CPU's stand-in for a cupy array on a GPU: array-api-strict arrays train in their own
    namespace, and only a handful of numbers (metrics, the weights at the end) reach numpy."""
    x = array_api_strict.asarray(small.train_images)
    y = array_api_strict.asarray(small.train_labels)
    reads = _host_reads(monkeypatch)
    estimator = gpunet.MLPClassifier(**QUICK).fit(x, y)  # device="auto": where the arrays are
    predicted = estimator.predict(x)
    proba = estimator.predict_proba(x)
    assert estimator.device_ == "array_api_strict"
    assert isinstance(predicted, StrictArray) and isinstance(proba, StrictArray)
    # Nothing with a row per sample (X, y, predictions); the weights and optimizer state at the end, yes.
    assert reads and not [shape for shape in reads if len(small.train_labels) in shape], reads
    reference = gpunet.MLPClassifier(device="cpu", **QUICK).fit(small.train_images, small.train_labels)
    # float32 sums in another order (array-api-strict has no matmul_into): agreement to 1e-4, not bits
    np.testing.assert_allclose(estimator.coefs_[0], reference.coefs_[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.from_dlpack(predicted), reference.predict(small.train_images))


class _Foreign:
    """An array of a library gpunet does not know, seen only through DLPack (as a PyTorch tensor is).

    The README's test line installs no PyTorch, so the DLPack path is tested with this stand-in;
    where torch is installed (CI installs it for the bench tests), with real tensors too.
    """

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_arrays_enter_without_a_copy(small: datasets.Dataset) -> None:
    """An array of another library comes in through DLPack, sharing its memory."""
    from gpunet.device.arrays import as_array

    pixels = small.train_images.astype(np.float32) / 255
    wrappers = [_Foreign]
    try:
        import torch

        wrappers.append(torch.from_numpy)
    except ImportError:
        pass
    for wrap in wrappers:
        x = wrap(pixels)
        taken = as_array(x)
        assert isinstance(taken, np.ndarray) and np.shares_memory(taken, pixels)
        estimator = gpunet.MLPClassifier(device="cpu", **QUICK).fit(x, wrap(small.train_labels))
        assert estimator.score(small.test_images, small.test_labels) > 0.8


def test_works_without_scikit_learn(tmp_path: Path) -> None:
    """scikit-learn is a test dependency only: with it unimportable, the estimator does everything."""
    script = f"""
import sys
sys.modules["sklearn"] = None  # import sklearn now raises ImportError
import numpy as np, gpunet
from gpunet.data import datasets
ds = datasets.synthetic(n_train=300, n_test=100)
try:
    gpunet.MLPClassifier().predict(ds.test_images)
except gpunet.NotFittedError as e:
    print("unfitted:", type(e).__name__)
m = gpunet.MLPClassifier(iterations=40, device="cpu").fit(ds.train_images, ds.train_labels)
m.save({str(tmp_path / "m.npz")!r})
again = gpunet.load({str(tmp_path / "m.npz")!r})
print("score", m.score(ds.test_images, ds.test_labels), again.score(ds.test_images, ds.test_labels))
print(m.get_params()["hidden"], m.set_params(lr=0.01).lr, repr(m))
print("sklearn loaded:", any(k.startswith("sklearn.") for k in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unfitted: NotFittedError"
    _, first, second = lines[1].split()
    assert first == second and float(first) > 0.8
    assert lines[2] == "(16, 16) 0.01 MLPClassifier(lr=0.01, iterations=40, device='cpu')"
    assert lines[3] == "sklearn loaded: False"


def test_unfitted_and_mismatched_inputs_are_clear(small: datasets.Dataset) -> None:
    with pytest.raises(gpunet.NotFittedError, match="not fitted yet"):
        gpunet.MLPClassifier().predict(small.test_images)
    with pytest.raises(gpunet.NotFittedError):
        gpunet.MLPClassifier().save("never-written.npz")
    assert not Path("never-written.npz").exists()
    estimator = gpunet.MLPClassifier(device="cpu", iterations=2).fit(small.train_images, small.train_labels)
    with pytest.raises(ValueError, match="X has 10 features, but MLPClassifier is expecting 784"):
        estimator.predict(small.test_images[:, :10])
    with pytest.raises(ValueError, match="one label per sample"):
        gpunet.MLPClassifier().fit(small.train_images, small.train_labels[:10])
    with pytest.raises(ValueError, match="at least 2 classes"):
        gpunet.MLPClassifier().fit(small.train_images[:5], np.zeros(5))


def test_load_dataset_returns_the_built_in_arrays() -> None:
    x_train, y_train, x_test, y_test = gpunet.load_dataset("synthetic")
    reference = datasets.synthetic()
    np.testing.assert_array_equal(x_train, reference.train_images)
    np.testing.assert_array_equal(y_test, reference.test_labels)
    assert x_train.dtype == np.uint8 and x_train.shape == (3000, 784) and x_test.shape == (1000, 784)
    assert len(y_train) == 3000
