"""A newcomer's first hour, the rest (issue 19, item 8): the points tests/test_first_hour.py left open.

Each test goes through a public surface: the command line (typer's CliRunner) or the Python API.
Nothing leaves the machine: downloads go to a server on 127.0.0.1 (tests/idxfiles.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_DIR
from helpers import invoke, one_line_error
from idxfiles import gzipped, idx_bytes, make_dataset, serve

import gpunet
from gpunet.data import datasets

pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: an empty cache, no network


def pixel_rows(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float rows like the README's: MNIST-style pixels 0..255, and some features almost always 0."""
    ds = datasets.synthetic(n_train=n, n_test=10, seed=seed)
    x = ds.train_images.astype(np.float64)
    x[:, :50] = 0
    x[0, :50] = 255  # near-constant features: after standardising, this one value is about sqrt(n)
    return x, ds.train_labels


# --- b. the "far outside a unit range" warning --------------------------------------------------


def test_the_readmes_standardised_inputs_get_no_unit_range_warning() -> None:
    x, y = pixel_rows()
    standardised = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)  # the README's line
    assert np.abs(standardised).max() > 20  # what a rule on the maximum took for unscaled pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(standardised, y)


def test_unscaled_float_pixels_still_get_the_warning() -> None:
    x, y = pixel_rows()
    with pytest.warns(UserWarning, match=r"root mean square of .*far outside a unit range.*divided by 255"):
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(x, y)


def test_doctor_passes_standardised_data_and_fails_unscaled_floats(tmp_path: Path) -> None:
    x, y = pixel_rows()
    standardised = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    np.savez(tmp_path / "std.npz", x=standardised.astype(np.float32), y=y)
    np.savez(tmp_path / "raw.npz", x=x.astype(np.float32), y=y)
    good = invoke("doctor", "--data", tmp_path / "std.npz", "--device", "cpu")
    first = next(line for line in good.stdout.splitlines() if " 1. " in line)
    assert first.startswith("PASS"), good.stdout
    bad = invoke("doctor", "--data", tmp_path / "raw.npz", "--device", "cpu")
    first = next(line for line in bad.stdout.splitlines() if " 1. " in line)
    assert first.startswith("FAIL") and "far outside a unit range" in first, bad.stdout
    assert bad.exit_code == 1


# --- a. unreachable mirrors: a cool-off ----------------------------------------------------------

IDX_NAMES = [f.name for f in datasets.MNIST.files]


@pytest.fixture
def fashion_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$GPUNET_DATA holding Fashion-MNIST (links to the installed files) and no MNIST; requests to
    127.0.0.1 never go through a proxy."""
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in IDX_NAMES:
        (folder / f"{name}.gz").symlink_to(Path(FASHION_DIR) / f"{name}.gz")
    monkeypatch.setenv("GPUNET_DATA", str(folder.parent))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return folder


def load_auto() -> tuple[str, list[str]]:
    said: list[str] = []
    return datasets.load("auto", say=said.append).name, said


def test_mirrors_that_all_failed_are_not_retried_run_after_run(
    fashion_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve({}) as mirror:  # answers 404 to everything: MNIST cannot be had
        monkeypatch.setenv("GPUNET_MIRRORS", f"{mirror.base}mnist/")
        assert load_auto()[0] == "fashion-mnist"
        assert mirror.requests == ["/mnist/train-images-idx3-ubyte.gz"]
        name, said = load_auto()  # the next run: no request, one line saying why and how to retry
        assert name == "fashion-mnist" and mirror.requests == ["/mnist/train-images-idx3-ubyte.gz"]
        assert said == [
            f"MNIST mirrors unreachable under a minute ago; training on Fashion-MNIST from {fashion_only}; "
            "retry now with `gpunet datasets download mnist` (or GPUNET_MIRROR_COOLOFF=0)"
        ]
        clock = time.time
        now = clock()
        monkeypatch.setattr(time, "time", lambda: now + 12 * 60 + 5)
        assert load_auto()[1][0].startswith("MNIST mirrors unreachable 12 min ago; training on Fashion-MNIST")
        assert len(mirror.requests) == 1
        monkeypatch.setattr(time, "time", lambda: now + 3601)  # an hour later, the mirrors are tried again
        load_auto()
        assert len(mirror.requests) == 2
        monkeypatch.setattr(time, "time", clock)


def test_the_cool_off_can_be_set_or_skipped_and_other_mirrors_are_tried_at_once(
    fashion_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve({}) as mirror, serve({}) as other:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{mirror.base}mnist/")
        load_auto()
        monkeypatch.setenv("GPUNET_MIRROR_COOLOFF", "0")  # retry every time
        load_auto()
        assert len(mirror.requests) == 2
        monkeypatch.setenv("GPUNET_MIRROR_COOLOFF", "7200")
        load_auto()
        assert len(mirror.requests) == 2
        monkeypatch.setenv("GPUNET_MIRRORS", f"{other.base}mnist/")  # other mirrors: no failure known of them
        load_auto()
        assert len(other.requests) == 1
    monkeypatch.setenv("GPUNET_MIRROR_COOLOFF", "soon")
    one_line_error(invoke("datasets"), 2, "$GPUNET_MIRROR_COOLOFF is 'soon': give a number of seconds, 0 or more")


def test_an_explicit_download_retries_at_once_and_a_success_ends_the_cool_off(
    fashion_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = make_dataset(n_train=25, n_test=10, seed=7)
    stored = {name: gzipped(idx_bytes(array)) for name, array in arrays.items()}
    files = tuple(
        dataclasses.replace(f, gz_sha256=hashlib.sha256(stored[f.name]).hexdigest()) for f in datasets.MNIST.files
    )
    spec = dataclasses.replace(datasets.MNIST, files=files)  # a small MNIST the mirror below can serve
    monkeypatch.setattr(datasets, "MNIST", spec)
    monkeypatch.setitem(datasets.SPECS, "mnist", spec)
    routes: dict[str, bytes] = {}  # served as they are when asked for: empty now, MNIST's files later
    with serve(routes) as mirror:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{mirror.base}mnist/")
        assert load_auto()[0] == "fashion-mnist"
        failed = invoke("datasets", "download", "mnist")  # asked for by name: tried despite the cool-off
        assert failed.exit_code == 1 and len(mirror.requests) == 2
        routes.update({f"/mnist/{name}.gz": body for name, body in stored.items()})  # the mirror is back
        assert invoke("datasets", "download", "mnist").exit_code == 0
        for f in (datasets.cache_dir() / "mnist").iterdir():  # gone again: `auto` downloads it, no cool-off
            f.unlink()
        mirror.requests.clear()
        name, said = load_auto()
    assert name == "mnist" and said == [] and len(mirror.requests) == 4


# --- e. a run that diverges before its first checkpoint -------------------------------------------

QUICK = ["--dataset", "synthetic", "--iterations", "20", "--eval-every", "10", "--device", "cpu"]
DIVERGING = [*QUICK, "--optimizer", "gd", "--lr", "1e30"]  # NaN at step 1


def test_a_run_diverging_at_step_1_says_that_nothing_was_saved_and_why(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    line = one_line_error(invoke("train", *DIVERGING, "--checkpoint", path), 3, "diverged")
    assert line.endswith(
        "nothing was saved: the run diverged before its first checkpoint, so no good state existed to keep"
    )
    assert not path.exists()
    default = one_line_error(invoke("train", *DIVERGING), 3, "nothing was saved")  # runs/<name>-1.npz given back
    assert "no good state existed" in default and not list(Path("runs").glob("*.npz"))


def test_a_file_already_at_the_checkpoint_path_is_said_to_be_intact(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    assert invoke("train", *QUICK, "--optimizer", "gd", "--checkpoint", path).exit_code == 0
    before = path.read_bytes()
    line = one_line_error(invoke("train", *DIVERGING, "--checkpoint", path), 3)
    assert line.endswith(f"no good state existed to keep; the file already at {path} is intact")
    assert path.read_bytes() == before


# --- c. string labels in --data, as in Python ------------------------------------------------------

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


def texts_npz(path: Path, n: int = 600, keep: slice = slice(None)) -> Path:
    """Synthetic rows labelled with texts; `keep`: which of the classes (sorted) the file holds."""
    ds = datasets.synthetic(n_train=n, n_test=200)
    x, y = ds.train_images, NAMES[ds.train_labels]
    wanted = np.isin(y, sorted(NAMES)[keep])
    np.savez(path, x=x[wanted], y=y[wanted])
    return path


def test_train_evaluate_and_predict_take_text_labels_and_show_them(tmp_path: Path) -> None:
    data, model = texts_npz(tmp_path / "words.npz"), tmp_path / "m.npz"
    trained = invoke("train", "--data", data, "--iterations", "40", "--device", "cpu", "--checkpoint", model)
    assert trained.exit_code == 0, trained.output
    assert "10 classes ('eight', 'five', 'four', 'nine', …)" in trained.stdout
    assert gpunet.load(model).classes_.tolist() == sorted(NAMES)  # as MLPClassifier's classes_
    evaluated = invoke("evaluate", model, "--data", data, "--json", tmp_path / "e.json")
    assert evaluated.exit_code == 0, evaluated.output

    report = json.loads((tmp_path / "e.json").read_text())
    assert sorted(report["per_class_accuracy"]) == sorted(NAMES) and report["accuracy"] > 0.9
    np.save(tmp_path / "rows.npy", datasets.synthetic(n_train=10, n_test=2).train_images[:3])
    predicted = invoke("predict", model, tmp_path / "rows.npy")
    assert predicted.exit_code == 0, predicted.output
    assert all(any(name in line for name in NAMES) for line in predicted.stdout.splitlines())


def test_evaluating_on_some_of_the_classes_numbers_them_as_the_model_does(tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    invoke("train", "--data", texts_npz(tmp_path / "all.npz"), "--iterations", "40", "--device", "cpu",
           "--checkpoint", model)  # fmt: skip
    part = texts_npz(tmp_path / "part.npz", keep=slice(5, None))  # 'seven', 'six', 'three', 'two', 'zero'
    json_path = tmp_path / "part.json"
    assert invoke("evaluate", model, "--data", part, "--json", json_path).exit_code == 0

    report = json.loads(json_path.read_text())
    assert report["accuracy"] > 0.9  # numbered by the data's own order (0 = 'seven'), it would be near 0
    np.savez(tmp_path / "other.npz", x=np.zeros((10, 784), np.uint8), y=np.array(["cat", "dog"] * 5))
    one_line_error(invoke("evaluate", model, "--data", tmp_path / "other.npz"), 1, "labels")
    assert "'cat', 'dog'" in invoke("evaluate", model, "--data", tmp_path / "other.npz").stderr


def test_bench_and_doctor_take_text_labels(tmp_path: Path) -> None:
    data = texts_npz(tmp_path / "words.npz")
    doctor = invoke("doctor", "--data", data, "--device", "cpu")
    assert "error" not in doctor.stderr and "checks:" in doctor.stdout, doctor.output
    bench = invoke("bench", "--data", data, "--backends", "numpy", "--iterations", "4", "--repeats", "1",
                   "--timed-steps", "2", "--warmup", "1")  # fmt: skip
    assert bench.exit_code == 0, bench.output


# --- d. --checkpoint never replaces another model silently -----------------------------------------


def test_a_checkpoint_of_another_model_is_refused_naming_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    assert invoke("train", *QUICK, "--hidden", "32", "--checkpoint", path).exit_code == 0
    before = path.read_bytes()
    line = one_line_error(invoke("train", *QUICK, "--checkpoint", path), 2)
    assert line == (
        f"error: --checkpoint {path} holds another model (layers 784-32-10, not 784-16-16-10): refusing to "
        f"replace it; continue that one with --resume {path}, give another --checkpoint path, or delete the "
        "file first"
    )
    data = texts_npz(tmp_path / "words.npz")  # the same layers on other data, with other classes
    line = one_line_error(invoke("train", "--data", data, "--hidden", "32", "--iterations", "5", "--device", "cpu",
                                 "--checkpoint", path), 2)  # fmt: skip
    assert "holds another model (dataset synthetic, not words.npz; classes numbered, not 'eight', 'five'" in line
    (tmp_path / "notes.npz").write_bytes(b"my own notes")
    line = one_line_error(invoke("train", *QUICK, "--checkpoint", tmp_path / "notes.npz"), 2)
    assert "is not a checkpoint gpunet can read" in line and "refusing to replace it" in line
    assert path.read_bytes() == before and (tmp_path / "notes.npz").read_bytes() == b"my own notes"


def test_a_checkpoint_of_the_same_model_is_replaced_as_before(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    assert invoke("train", *QUICK, "--checkpoint", path).exit_code == 0
    again = invoke("train", *QUICK, "--lr", "0.01", "--seed", "3", "--checkpoint", path)  # other settings
    assert again.exit_code == 0, again.output
    assert gpunet.load(path).lr == 0.01
    resumed = invoke("train", "--resume", path, "--more", "5", "--checkpoint", tmp_path / "other.npz")
    assert resumed.exit_code == 0, resumed.output


# --- item 2's rest: the command line's own settings in a table, one "unknown dataset", sizes from the data ---


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["train", *QUICK, "--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
        (["train", *QUICK, "--more", "0"], "--more must be at least 1, got 0"),
        (["evaluate", "model.npz", "--split", "validation"], "--split must be one of test, train, got 'validation'"),
        (["predict", "model.npz", "x.npy", "--top", "0"], "--top must be at least 1, got 0"),
    ],
    ids=lambda a: a[0] if isinstance(a, list) else "",
)
def test_the_command_lines_own_settings_are_refused_by_their_table_in_flag_names(args: list, named: str) -> None:
    from gpunet.cli.options import COMMAND_RULES

    assert one_line_error(invoke(*args), 2) == f"error: {named}"  # before any file is looked at
    assert named.split()[0] in {rule.flag for rule in COMMAND_RULES.values()}


def test_unknown_dataset_is_worded_the_same_everywhere() -> None:
    line = "unknown dataset 'cifar': choose one of auto, mnist, fashion-mnist, synthetic"
    for command in (["train", "--device", "cpu"], ["doctor", "--device", "cpu"], ["bench"]):
        assert one_line_error(invoke(*command, "--dataset", "cifar"), 2) == f"error: {line}"
    with pytest.raises(ValueError, match="^" + line.replace("(", r"\(")):
        gpunet.load_dataset("cifar")


def test_memory_is_checked_for_the_datas_own_layers_not_mnists(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "wide.npz", x=rng.random((12, 5000), dtype=np.float32), y=np.arange(12) % 3)
    for command in (["doctor", "--device", "cpu"], ["bench", "--backends", "numpy"]):
        line = one_line_error(invoke(*command, "--data", tmp_path / "wide.npz", "--hidden", "10000000"), 2)
        assert "of 5000-10000000-3 alone need" in line, line  # 784-10000000-10 before
