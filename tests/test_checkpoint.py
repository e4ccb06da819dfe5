"""Checkpoints: bit-exact resume, atomic writes, refusal of foreign checkpoints, Ctrl-C and divergence."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.core import model
from gpunet.data import datasets
from gpunet.errors import DivergedError, WriteFailed
from gpunet.training import checkpoint
from gpunet.training.train import TrainConfig, Trainer
from tests.conftest import numpy_device
from tests.helpers import checkpoint_refusal, ended

runner = CliRunner()


def meta_of(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["meta"]))


@pytest.fixture(scope="module")
def small() -> datasets.Dataset:
    """900 samples here, not conftest's 600: the resumed runs' batches of 300 end an epoch at a step."""
    return datasets.synthetic(n_train=900, n_test=200)


def run_through(config: TrainConfig, dataset: datasets.Dataset, stop_at: int | None, path: Path) -> Trainer:
    """Train to config.iterations; or save at `stop_at` and finish in a fresh trainer restored from the file."""
    if stop_at is None:
        straight = Trainer(config, dataset, numpy_device())
        straight.run()
        return straight
    Trainer(replace(config, iterations=stop_at), dataset, numpy_device()).run(save=lambda t: checkpoint.save(path, t))
    resumed = Trainer(config, dataset, numpy_device())
    checkpoint.restore(resumed, checkpoint.load(path))
    resumed.run()
    return resumed


@pytest.mark.parametrize(
    ("optimizer", "batch_size", "stop_at"),
    [("adam", None, 13), ("momentum", 200, 7), ("gd", 300, 6), ("adam", 128, 15)],
    ids=["adam-full", "momentum-mid-epoch", "gd-epoch-boundary", "adam-ragged-epoch"],
)
def test_resume_is_bit_identical(tmp_path: Path, small: datasets.Dataset, optimizer: str, batch_size, stop_at) -> None:
    config = TrainConfig(optimizer=optimizer, lr=0.01, iterations=25, batch_size=batch_size, eval_every=5)
    straight = run_through(config, small, None, tmp_path / "unused.npz")
    resumed = run_through(config, small, stop_at, tmp_path / "run.npz")
    for a, b in zip(straight.host_params(), resumed.host_params()):
        assert np.array_equal(a, b)
    for name, slot in straight.optimizer.slots.items():
        assert np.array_equal(slot, resumed.optimizer.slots[name])
    # The stopped run also evaluated where it stopped; the rest of the history is the same.
    assert straight.history == [r for r in resumed.history if r.iteration % 5 == 0]


def test_the_file_holds_no_pickle_and_the_whole_state(tmp_path: Path, small: datasets.Dataset) -> None:
    trainer = Trainer(TrainConfig(iterations=4, eval_every=2, batch_size=100), small, numpy_device())
    trainer.run(save=lambda t: checkpoint.save(tmp_path / "c.npz", t))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:
        assert all(f[name].dtype != object for name in f.files)
        meta = json.loads(str(f["meta"]))
    assert meta["step"] == 4 and meta["dataset"] == "synthetic" and meta["dataset_checksum"] == small.checksum
    assert meta["config"]["batch_size"] == 100 and set(meta["optimizer_slots"]) == {"m", "v"}
    assert meta["batch_state"]["position"] == 400
    saved = checkpoint.load(tmp_path / "c.npz")
    assert saved.step == 4 and len(saved.params) == 6 and [r.iteration for r in saved.history] == [0, 2, 4]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path, small: datasets.Dataset, monkeypatch) -> None:
    path = tmp_path / "c.npz"
    trainer = Trainer(TrainConfig(iterations=2, eval_every=2), small, numpy_device())
    trainer.run(save=lambda t: checkpoint.save(path, t))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(WriteFailed, match=r"cannot write .*c\.npz: disk full"):
        checkpoint.save(path, trainer)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": 1}], dtype=object))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    single = tmp_path / "image.npy"
    np.save(single, np.zeros((28, 28)))
    no_config = tmp_path / "no-config.npz"
    np.savez(no_config, meta=np.array('{"format": 1, "sizes": [4, 2]}'))
    empty = tmp_path / "empty.npz"
    empty.touch()
    picture = tmp_path / "picture.npz"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    for path, reason in (
        (pickled, "not a readable"),
        (garbage, "unrecognised data, not a gpunet checkpoint"),
        (single, "a .npy array, not a gpunet checkpoint"),
        (empty, r"empty.npz: an empty file \(0 bytes\), not a gpunet checkpoint"),
        (picture, "a PNG picture, not a gpunet checkpoint"),
        (tmp_path, "a directory, not a file"),
        (no_config, "damaged or foreign"),
        (tmp_path / "none.npz", "no such checkpoint"),
        (tmp_path / ("x" * 5000), "the path is too long"),
    ):
        with pytest.raises(checkpoint.CheckpointError, match=reason):
            checkpoint.load(path)


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path: Path, small: datasets.Dataset) -> None:
    trainer = Trainer(TrainConfig(iterations=2, eval_every=1), small, numpy_device())
    trainer.flat_params[3] = np.nan  # a weight of the first layer
    checkpoint.save(tmp_path / "c.npz", trainer)
    with pytest.raises(checkpoint.CheckpointError, match="layer 1 weights hold NaN or infinite values"):
        checkpoint.load(tmp_path / "c.npz")


def test_a_checkpoint_whose_arrays_do_not_fit_is_refused(tmp_path: Path, small: datasets.Dataset) -> None:
    path = checkpoint_with_a_cut_array(tmp_path, small, "param_0", 100)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"param_0: shape \(100, 16\), but the layers need \(784, 16\)"
    ):
        checkpoint.load(path)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"hidden": (8,)}, "layers 784-16-16-10, not 784-8-10"),
        ({"dtype": "float64"}, "dtype float32, not float64"),
        ({"optimizer": "gd"}, "optimizer adam, not gd"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(
    tmp_path: Path, small: datasets.Dataset, change: dict, text: str
) -> None:
    config = TrainConfig(iterations=2, eval_every=2)
    Trainer(config, small, numpy_device()).run(save=lambda t: checkpoint.save(tmp_path / "c.npz", t))
    saved = checkpoint.load(tmp_path / "c.npz")
    with pytest.raises(checkpoint.CheckpointError, match=text):
        checkpoint.check_matches(saved, replace(config, **change), small, tmp_path / "c.npz")


def test_a_checkpoint_of_other_data_is_refused(tmp_path: Path, small: datasets.Dataset) -> None:
    config = TrainConfig(iterations=2, eval_every=2)
    Trainer(config, small, numpy_device()).run(save=lambda t: checkpoint.save(tmp_path / "c.npz", t))
    other = datasets.synthetic(n_train=900, n_test=200, seed=99)
    with pytest.raises(checkpoint.CheckpointError, match="dataset synthetic"):
        checkpoint.check_matches(checkpoint.load(tmp_path / "c.npz"), config, other, tmp_path / "c.npz")


def training_loss(params: list[np.ndarray], dataset: datasets.Dataset) -> float:
    """The parameters' own mean cross-entropy on the training set, computed apart from the trainer."""
    x = (dataset.train_images / 255.0).astype(params[0].dtype)
    targets = model.one_hot(dataset.train_labels.astype(np.int64), 10, x.dtype)
    with np.errstate(all="ignore"):
        return float(model.cross_entropy(model.forward(params, x), targets))


def overflow_at_update(trainer: Trainer, update: int) -> None:
    """After `update`, class 0's logit stands 1e38 above the others on every sample.

    Each wrong sample's loss is then a finite 1e38 and their float32 sum is
    +inf, with no NaN anywhere: real divergence here goes straight to NaN,
    and the loss checks must catch an infinite loss as surely.
    """
    real_step = trainer.optimizer.step

    def step(flat, grads):
        real_step(flat, grads)
        if trainer.optimizer.steps == update:
            trainer.params[-1][...] = [1e38] + [0.0] * 9

    trainer.optimizer.step = step


@pytest.fixture(scope="module")
def diverging() -> datasets.Dataset:
    return datasets.synthetic(n_train=3000, n_test=200)  # plain gd at lr 1e5: the parameters after step 3 give NaN


@pytest.mark.parametrize("eval_every", [10, 2, 1])
@pytest.mark.parametrize(("how", "lr", "bad"), [("nan", 1e5, 3), ("inf", 0.05, 4)])
def test_divergence_keeps_the_last_good_checkpoint_and_it_resumes(
    tmp_path: Path, diverging: datasets.Dataset, how: str, lr: float, bad: int, eval_every: int
) -> None:
    """The kept checkpoint holds the last parameters whose own loss is finite, and training goes on from it."""
    path = tmp_path / "c.npz"
    config = TrainConfig(optimizer="gd", lr=lr, iterations=30, eval_every=eval_every)
    trainer = Trainer(config, diverging, numpy_device())
    if how == "inf":
        overflow_at_update(trainer, bad)
    caught = ended(trainer.run(save=lambda t: checkpoint.save(path, t), save_every=1), DivergedError)
    assert caught.value.step == bad  # the parameters after `bad` updates are the first bad ones
    assert (math.isnan if how == "nan" else math.isinf)(caught.value.loss)
    assert (math.isnan if how == "nan" else math.isinf)(training_loss(trainer.host_params(), diverging))

    saved = checkpoint.load(path)
    assert saved.step == trainer.last_saved_step == bad - 1
    assert math.isfinite(training_loss(saved.params, diverging))

    # Resumed as it was, the run replays the same steps, finite ones first, to the same divergence...
    again = Trainer(config, diverging, numpy_device())
    checkpoint.restore(again, saved)
    if how == "inf":
        overflow_at_update(again, bad)
    replayed = ended(again.run(), DivergedError)
    # Without saves, a 1e38 bias is named at the first evaluation at or after `bad`: the step's own loss is
    # a mean of per-sample shares (8.9e37, finite), while the evaluation's float32 sum overflows to inf.
    named = bad if how == "nan" else -(-bad // eval_every) * eval_every
    assert replayed.value.step == named and again.steps_done > saved.step
    if how == "inf":  # ...and without the blow-up it learns on to the end (lr 1e5 leaves nothing to learn from)
        resumed = Trainer(config, diverging, numpy_device())
        checkpoint.restore(resumed, saved)
        result = resumed.run()
        assert result.final.iteration == 30 and all(math.isfinite(r.loss) for r in result.history)
        assert result.final.loss < training_loss(saved.params, diverging)


def test_a_run_diverging_at_its_first_step_saves_nothing(tmp_path: Path, small: datasets.Dataset) -> None:
    """The initial parameters are never saved by a run, so a run bad from step 1 leaves no checkpoint."""
    trainer = Trainer(TrainConfig(optimizer="gd", lr=1e30, iterations=50, eval_every=10), small, numpy_device())
    caught = ended(trainer.run(save=lambda t: checkpoint.save(tmp_path / "c.npz", t), save_every=1), DivergedError)
    assert caught.value.step == 1 and trainer.last_saved_step is None
    assert not (tmp_path / "c.npz").exists()


# --- through the command line ---------------------------------------------------------------------

QUICK = ["train", "--dataset", "synthetic", "--device", "cpu", "--eval-every", "5"]


def test_cli_resume_continues_and_refuses_a_changed_architecture(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    first = runner.invoke(app, [*QUICK, "--iterations", "10", "--checkpoint", str(path)])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, ["train", "--resume", str(path), "--iterations", "20", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming from {path} at step 10" in resumed.output and "after 20 steps" in resumed.output
    assert checkpoint.load(path).step == 20
    refused = runner.invoke(app, ["train", "--resume", str(path), "--more", "5", "--hidden", "32"])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: ") and "refusing to mix them" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


def test_cli_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["train", "--resume", str(path)])
    assert result.exit_code == 1 and "bad.npz: unrecognised data, not a gpunet checkpoint" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_cli_divergence_names_the_last_good_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    args = [*QUICK, "--optimizer", "gd", "--lr", "1e5", "--iterations", "50", "--checkpoint", str(path)]
    result = runner.invoke(app, [*args, "--checkpoint-every", "1"])
    assert result.exit_code == 3
    assert "became nan at step 3" in result.stderr
    assert f"the last good checkpoint (step 2) is {path}" in result.stderr
    assert checkpoint.load(path).step == 2


def test_ctrl_c_writes_a_checkpoint_that_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """A real process, a real SIGINT: interrupted and resumed ends bit-identical to uninterrupted.

    The interrupted run prints a line per step, so it is still running when the signal comes however
    fast its steps are: it waits on the full pipe (64 KB, some 900 lines) long before step 2000."""
    args = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "700", "--iterations", "2000"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    gpunet = [sys.executable, "-m", "gpunet", "train", *args]
    straight = subprocess.run([*gpunet, "--checkpoint", str(tmp_path / "a.npz"), "-q"], env=env, capture_output=True)
    assert straight.returncode == 0, straight.stderr

    proc = subprocess.Popen(
        [*gpunet, "--eval-every", "1", "--checkpoint", str(tmp_path / "b.npz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in proc.stdout:
        if line.startswith("step") and int(line.split()[1].split("/")[0]) >= 20:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint written to" in stderr and "gpunet train --resume" in stderr
    stopped_at = checkpoint.load(tmp_path / "b.npz").step
    assert 20 <= stopped_at < 2000

    resumed = subprocess.run(
        [sys.executable, "-m", "gpunet", "train", "--resume", str(tmp_path / "b.npz"), "--device", "cpu", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = checkpoint.load(tmp_path / "a.npz"), checkpoint.load(tmp_path / "b.npz")
    assert b.step == a.step == 2000
    for pa, pb in zip(a.params, b.params):
        assert np.array_equal(pa, pb)


def test_a_step_that_cannot_be_computed_applies_nothing_and_saves_the_state_before_it(tmp_path: Path, small) -> None:
    """What the Dask engine does when its cluster cannot finish a step."""
    from gpunet.errors import StepFailed
    from gpunet.training.train import LocalSource

    class FailsAtStep7(LocalSource):
        calls = 0

        def gradient(self, params):
            FailsAtStep7.calls += 1
            if FailsAtStep7.calls == 7:
                raise StepFailed("the cluster lost every worker")
            return super().gradient(params)

    config = TrainConfig(iterations=20, eval_every=5)
    trainer = Trainer(config, small, numpy_device())
    trainer.source = FailsAtStep7(small, config, numpy_device(), trainer.engine, trainer.shuffle_rng)
    caught = ended(trainer.run(save=lambda t: checkpoint.save(tmp_path / "c.npz", t)), StepFailed)
    assert caught.result.history[-1].iteration == 5
    saved = checkpoint.load(tmp_path / "c.npz")
    assert saved.step == 6  # six updates applied; the seventh never was
    straight = Trainer(replace(config, iterations=6), small, numpy_device())
    straight.run()
    for a, b in zip(saved.params, straight.host_params()):
        assert np.array_equal(a, b)


def test_cli_a_failed_step_says_where_the_checkpoint_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpunet.errors import StepFailed
    from gpunet.training.train import LocalSource

    calls = []
    real = LocalSource.gradient

    def fails_at_step_4(self, params):
        calls.append(1)
        if len(calls) == 4:
            raise StepFailed("every Dask worker is gone")
        return real(self, params)

    monkeypatch.setattr(LocalSource, "gradient", fails_at_step_4)
    path = tmp_path / "run.npz"
    result = runner.invoke(app, [*QUICK, "--iterations", "10", "--checkpoint", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: every Dask worker is gone; checkpoint written to")
    assert len(result.stderr.splitlines()) == 1
    assert checkpoint.load(path).step == 3


def test_cli_checkpoints_and_records_at_cadences_that_do_not_divide_the_run(tmp_path: Path, monkeypatch) -> None:
    path, summary = tmp_path / "run.npz", tmp_path / "run.json"
    steps = []
    real_save = checkpoint.save

    def recording_save(target, trainer):
        steps.append(trainer.steps_done)
        real_save(target, trainer)

    monkeypatch.setattr(checkpoint, "save", recording_save)
    args = ["train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "7", "--eval-every", "3"]
    result = runner.invoke(app, [*args, "--checkpoint-every", "2", "--checkpoint", str(path), "--json", str(summary)])
    assert result.exit_code == 0, result.output
    assert steps == [2, 4, 6, 7]
    report = json.loads(summary.read_text())
    assert [r["iteration"] for r in report["history"]] == [0, 3, 6, 7]
    assert report["iterations"] == 7 and report["final_loss"] == report["history"][-1]["loss"]
    assert checkpoint.load(path).step == 7 and "after 7 steps" in result.output


# --- exact contents and words (mutation testing found them loose) ---------------------------------


def test_the_file_names_its_format_and_the_version_that_wrote_it(tmp_path: Path, small: datasets.Dataset) -> None:
    import gpunet

    Trainer(TrainConfig(iterations=1, eval_every=1), small, numpy_device()).run(
        save=lambda t: checkpoint.save(tmp_path / "c.npz", t)
    )
    meta = meta_of(tmp_path / "c.npz")
    assert meta["format"] == checkpoint.FORMAT == 1 and meta["gpunet"] == gpunet.__version__


def test_optimizer_state_that_does_not_fit_is_refused(tmp_path: Path, small: datasets.Dataset) -> None:
    path = checkpoint_with_a_cut_array(tmp_path, small, "slot_m_0", 10)
    assert checkpoint_refusal(path) == (
        f"{path}: a damaged or foreign checkpoint (slot_m_0: shape (10, 16), but the layers need (784, 16))"
    )


def test_every_mismatch_is_named_in_one_line(tmp_path: Path, small: datasets.Dataset) -> None:
    path = tmp_path / "c.npz"
    config = TrainConfig(iterations=1, eval_every=1)
    Trainer(config, small, numpy_device()).run(save=lambda t: checkpoint.save(path, t))
    other = datasets.synthetic(n_train=900, n_test=200, seed=99)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.check_matches(checkpoint.load(path), replace(config, dtype="float64", optimizer="gd"), other, path)
    assert str(caught.value) == (
        f"{path} was written for dtype float32, not float64; optimizer adam, not gd; "
        f"dataset synthetic (sha256 {small.checksum[:12]}…), not synthetic (sha256 {other.checksum[:12]}…): "
        "refusing to mix them"
    )


def test_default_model_files_are_numbered_on_from_the_highest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = checkpoint.claim_run_path("mnist", runs)
    assert first == runs / "mnist-1.npz" and first.read_bytes() == b""  # claimed, empty until the first save
    assert checkpoint.claim_run_path("mnist", runs) == runs / "mnist-2.npz"
    (runs / "mnist-9.npz").write_bytes(b"an older run")
    for stray in ("fashion-mnist-30.npz", "mnist-x.npz", "mnist-40.npz.tmp", "mnist-50"):
        (runs / stray).write_bytes(b"")
    assert checkpoint.claim_run_path("mnist", runs) == runs / "mnist-10.npz"
    assert checkpoint.claim_run_path("fashion-mnist", runs) == runs / "fashion-mnist-31.npz"
    assert (runs / "mnist-9.npz").read_bytes() == b"an older run"


def test_a_taken_name_is_skipped_not_replaced(tmp_path: Path, monkeypatch) -> None:
    """Another run claimed the next number between the listing and the creation: take the one after."""
    runs = tmp_path / "runs"
    runs.mkdir()
    real_iterdir = Path.iterdir
    (runs / "mnist-1.npz").write_bytes(b"theirs")
    monkeypatch.setattr(Path, "iterdir", lambda self: iter([]) if self == runs else real_iterdir(self))
    assert checkpoint.claim_run_path("mnist", runs) == runs / "mnist-2.npz"
    assert (runs / "mnist-1.npz").read_bytes() == b"theirs"


def test_a_runs_folder_that_cannot_be_used_says_what_to_do(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.write_text("a file where the folder should be")
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.claim_run_path("mnist", runs)
    assert str(caught.value) == (
        f"{runs}: cannot keep the model there (File exists); use --checkpoint PATH or --no-save"
    )


class _Trap:
    """Unpickling it creates a file: a stand-in for code a malicious checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_opening_a_checkpoint_never_unpickles(tmp_path: Path) -> None:
    trap = tmp_path / "code-ran"
    path = tmp_path / "malicious.npz"
    np.savez(path, meta=np.array([_Trap(trap)], dtype=object))
    with pytest.raises(checkpoint.CheckpointError, match="not a readable"):
        checkpoint.load(path)
    assert not trap.exists()


def test_load_refusals_in_exact_words(tmp_path: Path, small: datasets.Dataset) -> None:
    import gpunet

    assert checkpoint_refusal(tmp_path / "none.npz") == f"{tmp_path / 'none.npz'}: no such checkpoint"
    no_meta = tmp_path / "no-meta.npz"
    np.savez(no_meta, param_0=np.zeros(3))
    assert checkpoint_refusal(no_meta).startswith(f"{no_meta}: not a readable gpunet checkpoint (")
    for meta, found in (('{"format": 2}', 2), ("[1]", None), ('{"version": 1}', None)):
        other = tmp_path / "other.npz"
        np.savez(other, meta=np.array(meta))
        assert checkpoint_refusal(other) == f"{other}: checkpoint format {found} is not 1 (gpunet {gpunet.__version__})"
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, meta=np.array('{"format": 1}'))
    assert checkpoint_refusal(damaged) == f"{damaged}: a damaged or foreign checkpoint (config: missing)"
    path = tmp_path / "c.npz"
    Trainer(TrainConfig(iterations=1, eval_every=1), small, numpy_device()).run(save=lambda t: checkpoint.save(path, t))
    with np.load(path) as f:
        arrays = {name: f[name] for name in f.files}
    arrays["param_3"] = np.full_like(arrays["param_3"], np.nan)  # the second layer's biases
    np.savez(path, **arrays)
    assert (
        checkpoint_refusal(path)
        == f"{path}: its layer 2 biases hold NaN or infinite values; this checkpoint cannot be used"
    )


def checkpoint_with_a_cut_array(tmp_path: Path, small: datasets.Dataset, name: str, keep: int) -> Path:
    """A real one-step checkpoint whose array `name` is cut to its first `keep` elements."""
    path = tmp_path / "c.npz"
    Trainer(TrainConfig(iterations=1, eval_every=1), small, numpy_device()).run(save=lambda t: checkpoint.save(path, t))
    with np.load(path) as f:
        arrays = {key: f[key] for key in f.files}
    arrays[name] = arrays[name][:keep]
    np.savez(path, **arrays)
    return path


# --- what a checkpoint keeps for the Python API: class labels and the loss curve --------------


def with_meta(path: Path, change) -> None:
    """Rewrite the checkpoint at `path` with its metadata changed by `change(meta)` (arrays kept)."""
    meta = meta_of(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files if name != "meta"}
    change(meta)
    with open(path, "wb") as out:
        np.savez(out, meta=np.array(json.dumps(meta)), **arrays)


def trained(small: datasets.Dataset) -> Trainer:
    trainer = Trainer(TrainConfig(hidden=(12, 11), iterations=6, eval_every=3), small, numpy_device())
    trainer.run()
    assert len(trainer.step_loss_curve) == 6  # the premise: a curve to keep
    return trainer


def test_class_labels_and_the_loss_curve_come_back_as_saved(tmp_path: Path, small: datasets.Dataset) -> None:
    trainer, path = trained(small), tmp_path / "c.npz"
    labels = ["t-shirt", "trouser", 2, 3.5, "dress", "coat", "sandal", "shirt", "sneaker", "bag"]
    checkpoint.write(path, checkpoint.capture(trainer, classes=labels))
    meta = meta_of(path)
    assert meta["classes"] == labels and meta["loss_curve"] == trainer.step_loss_curve  # under these names
    ckpt = checkpoint.load(path)
    assert ckpt.classes == labels and ckpt.loss_curve == trainer.step_loss_curve
    checkpoint.save(path, trainer)  # no labels: the key is left out, as in checkpoints older than it
    assert "classes" not in meta_of(path) and checkpoint.load(path).classes is None


def test_a_checkpoint_from_before_the_loss_curve_loads_with_none(tmp_path: Path, small: datasets.Dataset) -> None:
    path = tmp_path / "c.npz"
    checkpoint.save(path, trained(small))
    with_meta(path, lambda meta: meta.pop("loss_curve"))
    assert checkpoint.load(path).loss_curve == []


@pytest.mark.parametrize("classes", ["abcdefghij", ["a", "b"], [str(i) for i in range(12)]], ids=["text", "2", "12"])
def test_class_labels_that_do_not_fit_the_outputs_are_refused(tmp_path: Path, small: datasets.Dataset, classes) -> None:
    path = tmp_path / "c.npz"
    checkpoint.save(path, trained(small))
    with_meta(path, lambda meta: meta.update(classes=classes))
    reason = (
        "the text 'abcdefghij', not a list"
        if isinstance(classes, str)
        else f"10 output units but {len(classes)} class labels"
    )
    assert checkpoint_refusal(path) == f"{path}: a damaged or foreign checkpoint (classes: {reason})"


def test_class_labels_json_cannot_hold_are_refused_before_writing(tmp_path: Path, small: datasets.Dataset) -> None:
    path = tmp_path / "c.npz"
    ckpt = checkpoint.capture(trained(small), classes=[object()] * 10)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.write(path, ckpt)
    assert str(e.value) == (
        f"{path}: cannot record these class labels in a checkpoint (Object of type object is not JSON serializable)"
    )
    assert not path.exists()
