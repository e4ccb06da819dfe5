"""Text that came from a user (class labels, file names) is printed as text (issue 20, class 8): never read
as rich markup, and terminal escapes made visible, on every command that shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gpunet
from gpunet.cli.commands import app
from gpunet.errors import printable

runner = CliRunner()
LABELS = ["[/b]", "[link=https://example.com/x]bank[/link]", "\x1b[31mred\x1b[0m", "two\nlines"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A model whose classes are LABELS, the data to evaluate it on, and one row to predict."""
    folder = tmp_path_factory.mktemp("labels")
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(LABELS), 200)
    x = (np.eye(len(LABELS))[y] @ rng.normal(size=(len(LABELS), 6)) + 0.1 * rng.normal(size=(200, 6))).astype(
        np.float32
    )
    model = folder / "model.npz"
    gpunet.MLPClassifier(iterations=30, device="cpu").fit(x, np.array(LABELS, dtype=object)[y]).save(model)
    texts = np.array(LABELS)[y]  # --data takes text labels as the model was fitted on them
    np.savez(folder / "d.npz", x_train=x, y_train=texts, x_test=x[:50], y_test=texts[:50])
    np.save(folder / "rows.npy", x[:4])
    return model, folder / "d.npz", folder / "rows.npy"


def shows_as_text(output: str) -> None:
    """Every label appears as written (markup not applied), escapes visible, no raw control character."""
    for label in LABELS:
        assert printable(label) in output, output
    assert "\x1b" not in output and "bank[/link]" in output


def test_markup_and_escapes_in_labels_on_evaluate(labelled) -> None:
    model, d, _ = labelled
    result = runner.invoke(app, ["evaluate", str(model), "--data", str(d), "--device", "cpu"])
    assert result.exit_code == 0, result.output  # "[/b]" used to end in a MarkupError
    shows_as_text(result.stdout)


def test_markup_and_escapes_in_labels_on_predict(labelled, tmp_path: Path) -> None:
    model, _, rows = labelled
    result = runner.invoke(app, ["predict", str(model), str(rows), "--device", "cpu", "--top", "4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"rows.npy[{i}]: ") for i, line in enumerate(lines))
    shows_as_text(result.stdout)


def test_markup_and_escapes_in_file_names(tmp_path: Path) -> None:
    ds = gpunet.load_dataset("synthetic")
    name = "[bold red]mine[link=x]\x1b[2J.npz"  # no "/" in a file name: markup that opens, never closes
    np.savez(tmp_path / name, x_train=ds[0][:300], y_train=ds[1][:300], x_test=ds[2][:100], y_test=ds[3][:100])
    args = ["--data", str(tmp_path / name), "--iterations", "2", "--eval-every", "1"]
    train = runner.invoke(app, ["train", *args, "--device", "cpu", "--no-save"])
    assert train.exit_code == 0, train.output
    assert f"data: {printable(name)} from " in train.stdout and "\x1b" not in train.stdout
    bench = runner.invoke(app, ["bench", *args, "--backends", "numpy", "--warmup", "1", "--timed-steps", "1"])
    assert bench.exit_code == 0, bench.output
    assert "[bold red]mine[link=x]\\x1b[2J.npz, 300 samples" in bench.stdout and "\x1b" not in bench.stdout
    doctor = runner.invoke(app, ["doctor", "--data", str(tmp_path / name), "--device", "cpu"])
    assert f"on {printable(name)} (300 train images)" in doctor.stdout and "\x1b" not in doctor.stdout


def test_escapes_in_a_file_name_in_an_error_are_visible(labelled, tmp_path: Path) -> None:
    model, _, _ = labelled
    missing = tmp_path / "\x1b]0;owned\x07[red]x[/red].png"
    result = runner.invoke(app, ["predict", str(model), str(missing)])
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path}/\\x1b]0;owned\\x07[red]x[/red].png: no such file\n"


def test_printable_keeps_text_and_shows_controls() -> None:
    assert printable("Ankle boot [x] é ü 漢") == "Ankle boot [x] é ü 漢"
    assert printable("a\x1bb\x9bc\x7fd\u202ee") == "a\\x1bb\\x9bc\\x7fd\\u202ee"
    assert printable("tab\there\r\n") == "tab\\there\\r\\n"
