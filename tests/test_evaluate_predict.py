"""`gpunet evaluate` and `gpunet predict` on a saved model, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from idxfiles import write_idx
from PIL import Image
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.core import model
from gpunet.data import datasets
from gpunet.training import checkpoint
from gpunet.training.train import TrainConfig, Trainer
from tests.conftest import numpy_device

runner = CliRunner()


def trained(path: Path, config: TrainConfig) -> tuple[Path, Trainer]:
    """A model trained on the synthetic set and saved at `path`."""
    trainer = Trainer(config, datasets.synthetic(), numpy_device())
    trainer.run(save=lambda t: checkpoint.save(path, t))
    return path, trainer


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trainer]:
    return trained(tmp_path_factory.mktemp("model") / "model.npz", TrainConfig(iterations=30, eval_every=10))


@pytest.fixture(scope="module")
def imperfect(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trainer]:
    """A model stopped early: it errs often and unevenly, so its confusion matrix is far from diagonal."""
    return trained(tmp_path_factory.mktemp("model") / "imperfect.npz", TrainConfig(iterations=8, eval_every=4))


def test_evaluate_reports_accuracy_per_class_and_confusion(imperfect, tmp_path: Path) -> None:
    path, trainer = imperfect
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(path), "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    test = datasets.synthetic()
    labels = test.test_labels.astype(np.int64)
    x = test.test_images / np.float32(255)
    predicted = model.predict(trainer.host_params(), x)
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (labels, predicted), 1)  # rows: true class, columns: predicted
    confusion = np.array(report["confusion_matrix"])
    assert not np.array_equal(expected, expected.T)  # the model errs unevenly: a transposed matrix would show
    np.testing.assert_array_equal(confusion, expected)
    recall = np.diag(expected) / expected.sum(axis=1)
    precision = np.diag(expected) / np.maximum(expected.sum(axis=0), 1)
    assert np.abs(recall - precision).max() > 0.05  # so precision shown as per-class accuracy would show
    assert list(report["per_class_accuracy"].values()) == pytest.approx(recall.tolist())
    assert list(report["per_class_accuracy"]) == datasets.class_names("synthetic")
    assert 0.2 < report["accuracy"] < 0.9
    assert report["accuracy"] == pytest.approx(np.mean(predicted == labels))
    assert report["accuracy"] == pytest.approx(trainer.history[-1].test_accuracy)
    targets = model.one_hot(labels, 10, np.float32)
    assert report["loss"] == pytest.approx(float(model.cross_entropy(model.forward(trainer.host_params(), x), targets)))
    assert report["samples"] == len(labels) and report["step"] == 8 and report["split"] == "test"
    assert "confusion matrix" in result.output and f"accuracy {report['accuracy']:.4f}" in result.output
    # The printed table holds the same rows: true class i, its counts by predicted class, its accuracy.
    names = datasets.class_names("synthetic")
    for i in range(10):
        row = f"{i} {names[i]}"
        line = next(line for line in result.output.splitlines() if row in line)
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells == [row, *map(str, expected[i]), f"{recall[i]:.3f}"]
    # The loss here is the test split's; train's is the training set's: each says which.
    assert f"test loss {report['loss']:.4f}" in result.output


def test_evaluate_the_train_split(saved) -> None:
    path, trainer = saved
    result = runner.invoke(app, ["evaluate", str(path), "--device", "cpu", "--split", "train"])
    assert result.exit_code == 0
    assert f"accuracy {trainer.history[-1].train_accuracy:.4f}" in result.output
    assert f"train loss {trainer.history[-1].loss:.4f}" in result.output


def predictions(path: Path, *files: Path) -> list[dict]:
    out = files[0].parent / "predictions.json"
    result = runner.invoke(app, ["predict", str(path), *map(str, files), "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["predictions"]


def test_predict_npy_png_and_idx_agree_with_the_model(saved, tmp_path: Path) -> None:
    path, trainer = saved
    images = datasets.synthetic().test_images[:4]
    expected = model.predict(trainer.host_params(), images / np.float32(255))
    np.save(tmp_path / "four.npy", images.reshape(4, 28, 28))
    write_idx(tmp_path / "four-idx3-ubyte.gz", images.reshape(4, 28, 28))
    # A dark drawing on white paper, twice the size: inverted and fitted to 28x28.
    Image.fromarray(255 - images[0].reshape(28, 28)).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "a.png")
    found = predictions(path, tmp_path / "four.npy", tmp_path / "four-idx3-ubyte.gz", tmp_path / "a.png")
    assert [p["class"] for p in found[:4]] == list(expected)
    assert [p["class"] for p in found[4:8]] == list(expected)
    assert found[8]["image"] == "a.png (8-bit greyscale, inverted: light border, 56x56 resized to 28x28)"
    assert found[8]["class"] == expected[0]
    for p in found:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["name"] == f"class {p['class']}"


@pytest.mark.parametrize(
    ("content", "name", "text"),
    [
        (np.zeros((5, 5), np.uint8), "small.npy", "expected 28x28 images"),
        (np.full((28, 28), 3.0), "bright.npy", "floats in [0, 1]"),
        (b"hello, not an image", "note.txt", "not an image gpunet can read"),
        (b"", "empty.png", "empty.png: an empty file (0 bytes), not an image"),
        (b"PK\x03\x04" + bytes(30), "model.png", "a zip archive (.npz), not an image"),
        (b"\x80\x04\x95" + bytes(30), "data.npy", "pickled Python data, not an image"),
        (None, "folder.png", "folder.png: a directory, not a file"),
    ],
    ids=["wrong-shape", "out-of-range", "not-an-image", "empty", "zip", "pickle", "directory"],
)
def test_predict_bad_input_is_one_line(saved, tmp_path: Path, content, name: str, text: str) -> None:
    path, _ = saved
    target = tmp_path / name
    if content is None:
        target.mkdir()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        np.save(target, content)
    result = runner.invoke(app, ["predict", str(path), str(target), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and text in result.stderr and len(result.stderr.splitlines()) == 1


def test_predict_missing_file_and_missing_checkpoint(saved, tmp_path: Path) -> None:
    path, _ = saved
    missing = runner.invoke(app, ["predict", str(path), str(tmp_path / "nope.png"), "--device", "cpu"])
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    no_model = runner.invoke(app, ["evaluate", str(tmp_path / "nope.npz")])
    assert no_model.exit_code == 1 and "no such checkpoint" in no_model.stderr


def test_a_picture_is_read_as_a_picture_whatever_its_name(saved, tmp_path: Path) -> None:
    path, trainer = saved
    image = datasets.synthetic().test_images[0]
    Image.fromarray(image.reshape(28, 28)).save(tmp_path / "named-like-an-array.npy", format="PNG")
    (found,) = predictions(path, tmp_path / "named-like-an-array.npy")
    assert found["class"] == model.predict(trainer.host_params(), image[None] / np.float32(255))[0]


def test_a_checkpoint_with_nan_weights_is_refused_by_evaluate_and_predict(saved, tmp_path: Path) -> None:
    broken = tmp_path / "nan.npz"
    with np.load(saved[0]) as f:
        arrays = dict(f)
    arrays["param_2"] = np.full_like(arrays["param_2"], np.nan)  # the second layer's weights
    np.savez(broken, **arrays)
    np.save(tmp_path / "one.npy", datasets.synthetic().test_images[:1])
    for args in (["evaluate", str(broken)], ["predict", str(broken), str(tmp_path / "one.npy")]):
        result = runner.invoke(app, [*args, "--device", "cpu", "--json", str(tmp_path / "out.json")])
        assert result.exit_code == 1, result.output
        reason = "its layer 2 weights hold NaN or infinite values; this checkpoint cannot be used"
        assert result.stderr == f"error: {broken}: {reason}\n"
        assert "nan" not in result.stdout.lower()
    assert not (tmp_path / "out.json").exists()
