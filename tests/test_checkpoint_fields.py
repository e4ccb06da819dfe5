"""Checkpoint contents are checked when a checkpoint is opened (issue 20, class 7): every field's type,
shape and range, each refusal one line naming the file and the field, on every command that opens one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gpunet
from gpunet.data import datasets as data
from gpunet.device.backend import resolve_device
from gpunet.training import checkpoint
from gpunet.training.train import TrainConfig, Trainer
from tests.helpers import checkpoint_refusal, invoke

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of a mini-batch Adam run stopped half-way: every field gpunet writes is in it."""
    path = tmp_path_factory.mktemp("model") / "model.npz"
    trainer = Trainer(TrainConfig(iterations=4, eval_every=2, batch_size=500), data.synthetic(), resolve_device("cpu"))
    trainer.run(save=lambda t: checkpoint.save(path, t))
    return path


def rewritten(model: Path, tmp_path: Path, meta=None, text: str | None = None, **arrays: np.ndarray) -> Path:
    """`model` with its metadata changed by `meta(meta)` (or replaced by `text`) and arrays replaced."""
    with np.load(model, allow_pickle=False) as f:
        contents = {name: f[name] for name in f.files}
    record = json.loads(str(contents.pop("meta")))
    if meta is not None:
        meta(record)
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array(text if text is not None else json.dumps(record)), **(contents | arrays))
    return path


def damaged(path: Path, field: str, reason: str) -> str:
    return f"{path}: a damaged or foreign checkpoint ({field}: {reason})"


def setter(*keys, value):
    """A change to the metadata: meta[k1][k2]... = value."""

    def change(meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


CASES = [
    # (the examples first) field path, new value, the field named, the reason given
    (("config", "lr"), "abc", "config.lr", "the text 'abc', not a number"),
    (("history", 0, "loss"), "lots", "history[0].loss", "the text 'lots', not a number"),
    (("step",), 10**30, "step", "1e+30 is outside 0..4"),
    (("batch_state",), "garbage", "batch_state", "the text 'garbage', not an object"),
    (("batch_state", "epoch_rng_state"), {"bit_generator": "PCG64", "state": "x"}, "batch_state.epoch_rng_state",
     "not a generator state numpy accepts"),
    (("config", "dtype"), "float16", "config.dtype", "'float16', not one of float32, float64"),
    # more of the same class
    (("batch_state", "position"), -3, "batch_state.position", "-3 is outside 0..9,223,372,036,854,775,807"),
    (("config", "hidden"), ["16", 16], "config.hidden[0]", "the text '16', not a whole number"),
    (("config", "optimizer"), "sgd", "config.optimizer", "'sgd', not one of gd, momentum, adam"),
    (("config", "lr"), -1.0, "config.lr", "-1, not a positive number"),
    (("config", "seed"), True, "config.seed", "the boolean true, not a whole number"),
    (("config", "bogus"), 1, "config.bogus", "not a field gpunet writes"),
    (("optimizer_steps",), 99, "optimizer_steps", "99 is outside 0..4"),
    (("optimizer_slots",), {"m": 6}, "optimizer_slots.v", "missing"),
    (("history", 1, "iteration"), 0, "history[1].iteration", "0 is outside 1..4"),
    (("history", 0, "train_accuracy"), 3.5, "history[0].train_accuracy", "3.5, not an accuracy in [0, 1]"),
    (("loss_curve",), [0.1] * 9, "loss_curve", "9 losses for 4 steps"),
    (("classes",), [[1, 2]] * 10, "classes[0]", "a list of 2, not a label (a text or a number)"),
    (("dataset",), 7, "dataset", "the number 7, not a text"),
    (("dataset_checksum",), "../../etc", "dataset_checksum", "the text '../../etc', not a SHA-256 in hex"),
    (("sizes",), [784, 16, 16, 10, 3], "sizes", "[784, 16, 16, 10, 3] are not the layers of hidden [16, 16]"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "value", "field", "reason"), CASES, ids=[c[2] + "=" + repr(c[1])[:20] for c in CASES])
def test_every_field_is_checked_and_named(model: Path, tmp_path: Path, keys, value, field: str, reason: str) -> None:
    path = rewritten(model, tmp_path, setter(*keys, value=value))
    assert checkpoint_refusal(path) == damaged(path, field, reason)


def test_a_deep_json_is_one_line(model: Path, tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = rewritten(model, tmp_path, text=deep)
    assert checkpoint_refusal(path) == damaged(path, "meta", "nested too deeply")
    inside = rewritten(model, tmp_path, text=json.dumps({"format": 1})[:-1] + ', "history": ' + deep + "}")
    assert checkpoint_refusal(inside) == damaged(inside, "meta", "nested too deeply")


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.full((784, 16), "w"), "<U1 values, but the checkpoint's dtype is float32"),  # the string params
        (np.zeros((784, 16), np.complex64), "complex64 values, but the checkpoint's dtype is float32"),
        (np.zeros((784, 16), np.float16), "float16 values, but the checkpoint's dtype is float32"),
        (np.zeros((784, 16), np.float64), "float64 values, but the checkpoint's dtype is float32"),
        (np.zeros((16, 784), np.float32), "shape (16, 784), but the layers need (784, 16)"),
    ],
    ids=["strings", "complex", "float16", "float64", "transposed"],
)
def test_parameters_of_another_type_or_shape_are_refused(model: Path, tmp_path: Path, array, reason: str) -> None:
    path = rewritten(model, tmp_path, param_0=array)
    assert checkpoint_refusal(path) == damaged(path, "param_0", reason)
    slot = rewritten(model, tmp_path, slot_v_0=array)
    assert checkpoint_refusal(slot) == damaged(slot, "slot_v_0", reason)


def test_a_missing_array_or_field_is_named(model: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(model) as z:
        members = {i.filename: z.read(i) for i in z.infolist() if i.filename != "param_3.npy"}
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    assert checkpoint_refusal(path) == damaged(path, "param_3", "missing")
    path = rewritten(model, tmp_path, lambda meta: meta.pop("history"))
    assert checkpoint_refusal(path) == damaged(path, "history", "missing")


def test_a_format_of_true_is_not_format_1(model: Path, tmp_path: Path) -> None:
    path = rewritten(model, tmp_path, setter("format", value=True))
    assert checkpoint_refusal(path) == f"{path}: checkpoint format True is not 1 (gpunet {gpunet.__version__})"


def test_every_command_that_opens_a_checkpoint_gives_the_same_line(model: Path, tmp_path: Path) -> None:
    path = rewritten(model, tmp_path, setter("config", "lr", value="abc"))
    expected = "error: " + damaged(path, "config.lr", "the text 'abc', not a number") + "\n"
    np.save(tmp_path / "one.npy", np.zeros(784, np.uint8))
    for args in (
        ["evaluate", path, "--device", "cpu"],
        ["predict", path, tmp_path / "one.npy", "--device", "cpu"],
        ["train", "--resume", path, "--device", "cpu"],
    ):
        result = invoke(*args)
        assert result.exit_code == 1 and result.stderr == expected, result.output
    with pytest.raises(checkpoint.CheckpointError, match=r"config\.lr: the text 'abc'"):
        gpunet.load(path)


def test_a_real_checkpoint_passes_every_check(model: Path) -> None:
    # The checks are not so strict that gpunet's own files fail them: full batch, mini-batch, every optimizer.
    ckpt = checkpoint.load(model)
    assert ckpt.step == 4 and ckpt.batch_state["position"] >= 0
    for optimizer in ("gd", "momentum"):
        path = model.parent / f"{optimizer}.npz"
        Trainer(TrainConfig(iterations=1, optimizer=optimizer), data.synthetic(), resolve_device("cpu")).run(
            save=lambda t, path=path: checkpoint.save(path, t)
        )
        assert checkpoint.load(path).config.optimizer == optimizer
