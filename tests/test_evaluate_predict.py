"""`gpunet evaluate` and `gpunet predict` on a saved model, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from idxfiles import write_idx
from PIL import Image
from typer.testing import CliRunner

from gpunet import checkpoint, data, model
from gpunet.cli import app
from gpunet.train import TrainConfig, Trainer
from tests.conftest import numpy_device

runner = CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trainer]:
    path = tmp_path_factory.mktemp("model") / "model.npz"
    trainer = Trainer(TrainConfig(iterations=30, eval_every=10), data.synthetic(), numpy_device())
    trainer.run(save=lambda t: checkpoint.save(path, t))
    return path, trainer


def test_evaluate_reports_accuracy_per_class_and_confusion(saved, tmp_path: Path) -> None:
    path, trainer = saved
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(path), "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    test = data.synthetic()
    predicted = model.predict(trainer.host_params(), test.test_images / np.float32(255))
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == len(test.test_labels) == report["samples"]
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(test.test_labels, minlength=10))
    np.testing.assert_array_equal(confusion.sum(axis=0), np.bincount(predicted, minlength=10))
    assert report["accuracy"] == pytest.approx(np.mean(predicted == test.test_labels))
    assert report["accuracy"] == pytest.approx(trainer.history[-1].test_accuracy)
    assert report["per_class_accuracy"]["class 3"] == pytest.approx(confusion[3, 3] / confusion[3].sum())
    assert "confusion matrix" in result.output and f"accuracy {report['accuracy']:.4f}" in result.output


def test_evaluate_the_train_split(saved) -> None:
    path, trainer = saved
    result = runner.invoke(app, ["evaluate", str(path), "--device", "cpu", "--split", "train"])
    assert result.exit_code == 0
    assert f"accuracy {trainer.history[-1].train_accuracy:.4f}" in result.output


def predictions(path: Path, *files: Path) -> list[dict]:
    out = files[0].parent / "predictions.json"
    result = runner.invoke(app, ["predict", str(path), *map(str, files), "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["predictions"]


def test_predict_npy_png_and_idx_agree_with_the_model(saved, tmp_path: Path) -> None:
    path, trainer = saved
    images = data.synthetic().test_images[:4]
    expected = model.predict(trainer.host_params(), images / np.float32(255))
    np.save(tmp_path / "four.npy", images.reshape(4, 28, 28))
    write_idx(tmp_path / "four-idx3-ubyte.gz", images.reshape(4, 28, 28))
    # A dark drawing on white paper, twice the size: inverted and fitted to 28x28.
    Image.fromarray(255 - images[0].reshape(28, 28)).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "a.png")
    found = predictions(path, tmp_path / "four.npy", tmp_path / "four-idx3-ubyte.gz", tmp_path / "a.png")
    assert [p["class"] for p in found[:4]] == list(expected)
    assert [p["class"] for p in found[4:8]] == list(expected)
    assert found[8]["image"] == "a.png (inverted)" and found[8]["class"] == expected[0]
    for p in found:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["name"] == f"class {p['class']}"


@pytest.mark.parametrize(
    ("content", "name", "text"),
    [
        (np.zeros((5, 5), np.uint8), "small.npy", "expected 28x28 images"),
        (np.full((28, 28), 3.0), "bright.npy", "floats in [0, 1]"),
        (b"hello, not an image", "note.txt", "not an image gpunet can read"),
    ],
    ids=["wrong-shape", "out-of-range", "not-an-image"],
)
def test_predict_bad_input_is_one_line(saved, tmp_path: Path, content, name: str, text: str) -> None:
    path, _ = saved
    target = tmp_path / name
    if isinstance(content, bytes):
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
