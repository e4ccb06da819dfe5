"""A user's own data: `--data` (.npz or an IDX folder) on every command, and models shared with the Python API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from idxfiles import FILE_NAMES, write_dataset, write_idx

import gpunet
from gpunet.data import datasets, userdata
from gpunet.errors import DatasetError
from gpunet.training import checkpoint
from tests.conftest import FASHION_DIR
from tests.helpers import invoke, one_line_error

QUICK = ["--iterations", "30", "--eval-every", "10", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def three_class_images(n: int, rows: int = 6, cols: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of another size and another number of classes: a bright band whose place is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, rows, cols)).astype(np.uint8)
    for k in range(3):
        images[labels == k, 2 * k : 2 * k + 2, :] += 190
    return images, labels


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bands"
    train_x, train_y = three_class_images(300)
    test_x, test_y = three_class_images(100, seed=1)
    for name, array in zip(FILE_NAMES, (train_x, train_y, test_x, test_y)):
        write_idx(folder / f"{name}.gz", array)
    return folder


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    ds = datasets.synthetic(n_train=600, n_test=200)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=ds.train_images, y_train=ds.train_labels, x_test=ds.test_images, y_test=ds.test_labels)
    return path


def test_idx_folder_of_any_size_and_number_of_classes(idx_folder: Path, tmp_path: Path) -> None:
    ds = userdata.load_path(idx_folder)
    assert (ds.name, ds.num_classes, ds.train_images.shape, ds.verified) == ("bands", 3, (300, 48), False)
    model, summary = tmp_path / "m.npz", tmp_path / "s.json"
    result = invoke("train", "--data", idx_folder, *QUICK, "--checkpoint", model, "--json", summary)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"data: bands from {idx_folder}: 300 train and 100 test rows of 48 features")
    assert "3 classes" in first and ds.checksum[:16] in first
    assert "training 48-16-16-3" in result.output
    assert json.loads(summary.read_text())["dataset"] == "bands"
    saved = checkpoint.load(model)
    assert (saved.dataset, saved.dataset_checksum, saved.sizes) == ("bands", ds.checksum, [48, 16, 16, 3])
    assert json.loads(summary.read_text())["test_accuracy"] > 0.9


def test_idx_folder_with_the_dotted_names_some_copies_use(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path / "plain", n_train=20, n_test=10, gzip=False)
    dotted = tmp_path / "dotted"
    for name, array in arrays.items():
        write_idx(dotted / name.replace("-idx", ".idx"), array, gzip=False)
    assert userdata.load_path(dotted).checksum == userdata.load_path(tmp_path / "plain").checksum


def test_npz_with_four_splits_trains_and_names_itself(npz_file: Path, tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    result = invoke("train", "--data", npz_file, *QUICK, "--json", summary)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("data: mine.npz from ")
    report = json.loads(summary.read_text())
    assert report["dataset"] == "mine.npz" and report["test_accuracy"] > 0.8


def test_npz_with_x_and_y_holds_out_a_fixed_fifth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)).astype(np.float32)  # float features: used as given
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    said: list[str] = []
    ds = userdata.load_path(tmp_path / "xy.npz", said.append)
    assert (len(ds.train_images), len(ds.test_images)) == (400, 100)
    assert "100 of 500 rows held out" in said[0]
    again = userdata.load_path(tmp_path / "xy.npz")
    np.testing.assert_array_equal(ds.test_images, again.test_images)  # the same split every run
    rows = {tuple(r) for r in np.concatenate([ds.train_images, ds.test_images])}
    assert rows == {tuple(r) for r in x}  # every row once, in one split or the other
    assert ds.train_images.dtype == np.float32 and "float32 numbers, used as given" in userdata.describe(ds)


@pytest.mark.parametrize(
    ("arrays", "text"),
    [
        ({"images": np.zeros((4, 3))}, "holds x_train, y_train, x_test, y_test (or x, y); this one holds images"),
        ({"x": np.array([[1.0], [np.nan], [0.0]]), "y": np.array([0, 1, 0])}, "1 NaN or infinite values"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "classes are numbered 0..K-1"),
        ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 0, 1])}, "not class numbers"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, "x has 4 rows and y 3 labels"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4, int)}, "at least two classes"),
        ({"x": np.array(["a", "b"]).reshape(2, 1), "y": np.array([0, 1])}, "features are numbers"),
        ({"x": np.zeros(4), "y": np.array([0, 1, 0, 1])}, "is 1-D"),
    ],
    ids=["keys", "nan", "negative-label", "fractional-label", "lengths", "one-class", "strings", "1-d"],
)
def test_bad_npz_is_one_line_naming_the_file(tmp_path: Path, arrays: dict, text: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=re.escape(text)):
        userdata.load_path(path)
    one_line_error(invoke("train", "--data", path, *QUICK), 1, text)


def test_data_that_is_not_there_or_not_data(tmp_path: Path) -> None:
    one_line_error(invoke("train", "--data", tmp_path / "nope.npz", *QUICK), 1, "no such file or folder")
    (tmp_path / "notes.npz").write_text("not a zip")
    one_line_error(invoke("train", "--data", tmp_path / "notes.npz", *QUICK), 1, "not a readable .npz")
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("train", "--data", tmp_path / "empty", *QUICK), 1, "missing train-images-idx3-ubyte")


def test_data_is_an_alternative_to_dataset_and_data_dir(npz_file: Path, tmp_path: Path) -> None:
    both = invoke("train", "--data", npz_file, "--dataset", "synthetic", *QUICK)
    one_line_error(both, 2, "--data and --dataset are alternatives")
    one_line_error(invoke("train", "--data", npz_file, "--data-dir", tmp_path, *QUICK), 2, "--data-dir")
    one_line_error(invoke("train", "--data", npz_file, "--engine", "dask", *QUICK), 2, "--engine dask")


def test_resume_a_data_run_needs_the_data_again(npz_file: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    assert invoke("train", "--data", npz_file, *QUICK, "--checkpoint", model).exit_code == 0
    one_line_error(invoke("train", "--resume", model, "--iterations", "40"), 2, "give it again with --data")
    resumed = invoke("train", "--resume", model, "--data", npz_file, "--iterations", "40", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(model).step == 40


def assert_same_predictions(report: dict, predicted: np.ndarray, truth: np.ndarray) -> None:
    """`gpunet evaluate`'s confusion matrix is exactly the one of these predictions (so is its accuracy)."""
    k = len(report["confusion_matrix"])
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth.astype(int), predicted.astype(int)), 1)
    np.testing.assert_array_equal(report["confusion_matrix"], confusion)
    assert report["accuracy"] == pytest.approx(np.mean(predicted == truth), rel=1e-6)  # evaluate counts in float32


def test_python_model_is_evaluated_by_the_cli_with_equal_results(npz_file: Path, tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = gpunet.load_dataset(npz_file)
    estimator = gpunet.MLPClassifier(iterations=40, device="cpu").fit(x_train, y_train)
    estimator.save(tmp_path / "py.npz")
    report = tmp_path / "eval.json"
    result = invoke("evaluate", tmp_path / "py.npz", "--data", npz_file, "--device", "cpu", "--json", report)
    assert result.exit_code == 0, result.output
    assert_same_predictions(json.loads(report.read_text()), estimator.predict(x_test), y_test)
    unsaid = invoke("evaluate", tmp_path / "py.npz", "--device", "cpu")
    one_line_error(unsaid, 2, "trained in Python (gpunet.MLPClassifier): say what to evaluate it on with --data")


def test_cli_model_predicts_in_python_with_equal_results(npz_file: Path, tmp_path: Path) -> None:
    model, report = tmp_path / "cli.npz", tmp_path / "eval.json"
    assert invoke("train", "--data", npz_file, *QUICK, "--checkpoint", model).exit_code == 0
    assert invoke("evaluate", model, "--data", npz_file, "--device", "cpu", "--json", report).exit_code == 0
    _, _, x_test, y_test = gpunet.load_dataset(npz_file)
    loaded = gpunet.load(model, device="cpu")
    assert loaded.n_iter_ == 30 and loaded.n_features_in_ == 784
    assert_same_predictions(json.loads(report.read_text()), loaded.predict(x_test), y_test)


def test_predict_takes_the_rows_a_model_of_your_data_takes(idx_folder: Path, tmp_path: Path) -> None:
    model = tmp_path / "bands.npz"
    assert invoke("train", "--data", idx_folder, *QUICK, "--checkpoint", model).exit_code == 0
    images, labels = three_class_images(5, seed=3)  # 6x8 images, as the model was trained on
    np.save(tmp_path / "five.npy", images)
    out = tmp_path / "p.json"
    result = invoke("predict", model, tmp_path / "five.npy", "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())["predictions"]
    assert [p["class"] for p in found] == list(gpunet.load(model).predict(images.reshape(5, -1)))
    assert [p["name"] for p in found] == [f"class {p['class']}" for p in found]
    assert [p["class"] for p in found] == list(labels)  # and the bands are easy
    np.save(tmp_path / "wrong.npy", np.zeros((2, 28, 28), np.uint8))
    one_line_error(invoke("predict", model, tmp_path / "wrong.npy"), 1, "(n, 48) for this model")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 7))
    np.savez(tmp_path / "xy.npz", x=x, y=(x[:, 0] > 0).astype(int))
    floats = tmp_path / "floats.npz"
    assert invoke("train", "--data", tmp_path / "xy.npz", *QUICK, "--checkpoint", floats).exit_code == 0
    np.save(tmp_path / "rows.npy", 3 * x[:4])  # floats outside [0, 1]: used as given for such a model
    result = invoke("predict", floats, tmp_path / "rows.npy", "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    expected = gpunet.load(floats).predict((3 * x[:4]).astype(np.float32))
    assert [p["class"] for p in json.loads(out.read_text())["predictions"]] == list(expected)


def test_python_labels_name_the_classes_in_the_cli(tmp_path: Path) -> None:
    ds = datasets.synthetic(n_train=300, n_test=50)
    names = np.array(["ant", "bee", "cat", "doe", "eel", "fox", "gnu", "hen", "ibis", "jay"])
    estimator = gpunet.MLPClassifier(iterations=30, device="cpu").fit(ds.train_images, names[ds.train_labels])
    estimator.save(tmp_path / "animals.npz")
    np.save(tmp_path / "one.npy", ds.test_images[:1].reshape(28, 28))
    result = invoke("predict", tmp_path / "animals.npz", tmp_path / "one.npy", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (
        f"one.npy: {np.argmax(estimator.predict_proba(ds.test_images[:1]))} {estimator.predict(ds.test_images[:1])[0]}"
        in result.output
    )


def test_datasets_never_calls_found_what_train_would_refuse(tmp_path: Path) -> None:
    write_dataset(tmp_path / "fashion-mnist", n_train=20, n_test=10)  # well-formed, but not Fashion-MNIST
    listing = invoke("datasets", "--data-dir", tmp_path)
    assert listing.exit_code == 1  # a listing that names a problem does not exit 0
    line = next(line for line in listing.output.splitlines() if line.startswith("fashion-mnist"))
    assert "found" not in line.replace("not found", "") and "checksum mismatch" in line
    refused = invoke("train", "--dataset", "fashion-mnist", "--data-dir", tmp_path, "--offline", *QUICK)
    one_line_error(refused, 1, "checksum mismatch")
    accepted = invoke("train", "--data", tmp_path / "fashion-mnist", "--iterations", "2", "--device", "cpu")
    assert accepted.exit_code == 0, accepted.output  # the same files as a user's own data: format checks only
    real = invoke("datasets", "--data-dir", FASHION_DIR)
    assert f"fashion-mnist  found in {FASHION_DIR} (verified)" in real.output


def test_doctor_and_bench_take_data(npz_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))  # standardised float features: no false alarm about scaling
    np.savez(tmp_path / "xy.npz", x=x, y=(x[:, 0] + x[:, 1] > 0).astype(int))
    doctor = invoke("doctor", "--data", tmp_path / "xy.npz", "--device", "cpu")
    assert "data: xy.npz" in doctor.output and "PASS  1. inputs scaled" in doctor.output, doctor.output
    assert "PASS  3. gradients match" in doctor.output
    bench = invoke(
        "bench", "--data", npz_file, "--backends", "numpy", "--iterations", "10", "--repeats", "1",
        "--timed-steps", "2", "--warmup", "1", "--json", tmp_path / "b.json",
    )  # fmt: skip
    assert bench.exit_code == 0, bench.output
    assert json.loads((tmp_path / "b.json").read_text())["config"]["dataset"] == "mine.npz"


def test_load_dataset_reads_a_path_too(idx_folder: Path) -> None:
    x_train, y_train, x_test, _ = gpunet.load_dataset(idx_folder)
    assert x_train.shape == (300, 48) and x_test.shape == (100, 48) and set(np.unique(y_train)) == {0, 1, 2}


@pytest.mark.slow
def test_pixel_permuted_fashion_mnist_learns_as_well_as_the_original(tmp_path: Path) -> None:
    """An MLP does not care where a pixel sits: Fashion-MNIST with its pixels shuffled (the same
    shuffle for every image), written as IDX files in a fresh folder, trains with default settings,
    through `train --data` and through MLPClassifier().fit, to within 0.5 points of the original."""
    fashion = datasets.load("fashion-mnist", data_dir=Path(FASHION_DIR), offline=True)
    permutation = np.random.default_rng(7).permutation(784)
    folder = tmp_path / "permuted-fashion"
    splits = (fashion.train_images, fashion.train_labels, fashion.test_images, fashion.test_labels)
    for name, array in zip(FILE_NAMES, splits):
        write_idx(folder / name, array[:, permutation].reshape(-1, 28, 28) if array.ndim == 2 else array, gzip=False)

    original = invoke(
        "train", "--dataset", "fashion-mnist", "--data-dir", FASHION_DIR, "--offline", "--json", tmp_path / "o.json"
    )
    assert original.exit_code == 0, original.output
    reference = json.loads((tmp_path / "o.json").read_text())["test_accuracy"]

    model = tmp_path / "cli.npz"
    permuted = invoke("train", "--data", folder, "--json", tmp_path / "p.json", "--checkpoint", model)
    assert permuted.exit_code == 0, permuted.output
    cli_accuracy = json.loads((tmp_path / "p.json").read_text())["test_accuracy"]
    assert abs(cli_accuracy - reference) <= 0.005, (cli_accuracy, reference)

    x_train, y_train, x_test, y_test = gpunet.load_dataset(folder)
    estimator = gpunet.MLPClassifier().fit(x_train, y_train)
    python_accuracy = estimator.score(x_test, y_test)
    assert abs(python_accuracy - reference) <= 0.005, (python_accuracy, reference)
    assert python_accuracy == pytest.approx(cli_accuracy, abs=1e-6)  # one training core: the same run

    # The CLI's model predicts in Python, and the Python model is evaluated by the CLI, alike.
    assert invoke("evaluate", model, "--data", folder, "--json", tmp_path / "e.json").exit_code == 0
    assert_same_predictions(json.loads((tmp_path / "e.json").read_text()), gpunet.load(model).predict(x_test), y_test)
    estimator.save(tmp_path / "py.npz")
    assert invoke("evaluate", tmp_path / "py.npz", "--data", folder, "--json", tmp_path / "f.json").exit_code == 0
    assert_same_predictions(json.loads((tmp_path / "f.json").read_text()), estimator.predict(x_test), y_test)
