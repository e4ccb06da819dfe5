"""Checkpoints: everything a run needs to continue exactly where it stopped, in one .npz.

Arrays (parameters, optimizer state) are stored as arrays; everything else
(configuration, step, the batch order's generator state, the dataset's
checksum, the history) as one JSON string. Nothing is pickled, and files are
read with allow_pickle=False, so opening a checkpoint never runs code.
Writes are atomic: a temporary file beside the target, flushed to disk, then
renamed, so a crash never leaves half a checkpoint under the real name.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.core.flat import flatten
from gpunet.core.optimizers import OPTIMIZERS
from gpunet.data.datasets import Dataset
from gpunet.errors import (
    DatasetError,
    DivergedError,
    GpunetError,
    OutputInUse,
    OutputRefused,
    WriteFailed,
    printable,
    shown,
)
from gpunet.files import archives, inputs
from gpunet.files.outputs import Claim, atomic_file, failure_reason, remove_stale_placeholder
from gpunet.training.train import DTYPES, Record, TrainConfig, Trainer, layer_sizes
from gpunet.version import __version__

FORMAT = 1


class CheckpointError(GpunetError):
    """A checkpoint that is missing, unreadable, or does not belong to this run."""


@dataclass
class Checkpoint:
    config: TrainConfig
    sizes: list[int]
    dataset: str
    dataset_checksum: str
    step: int
    params: list[np.ndarray]
    optimizer_steps: int
    optimizer_slots: dict[str, list[np.ndarray]]
    batch_state: dict[str, Any]
    history: list[Record]
    # The labels the output units stand for, when they are not 0..k-1 (the Python API's
    # classes_: strings, or numbers of any value); None: unit i is class i.
    classes: list[Any] | None = None
    loss_curve: list[float] = field(default_factory=list)  # each step's batch loss (the estimator's loss_curve_)


def capture(trainer: Trainer, classes: list[Any] | None = None) -> Checkpoint:
    """`trainer`'s state, on the host; `classes`: the labels its output units stand for, by default
    those of the data it trains on (a --data file's texts) or none (unit i is class i)."""
    if classes is None and trainer.dataset_classes is not None:
        classes = list(trainer.dataset_classes)
    return Checkpoint(
        config=trainer.config,
        sizes=list(trainer.sizes),
        dataset=trainer.dataset_name,
        dataset_checksum=trainer.dataset_checksum,
        step=trainer.steps_done,
        params=trainer.host_params(),
        optimizer_steps=trainer.optimizer.steps,
        optimizer_slots=trainer.host_slots(),
        batch_state=trainer.source.state(),
        history=list(trainer.history),
        classes=classes,
        loss_curve=list(trainer.step_loss_curve),
    )


RUNS = Path("runs")


def claim_run_path(name: str, runs: Path = RUNS, claim: Claim | None = None, option: str = "the model file") -> Path:
    """A new default model file, runs/<name>-<N>.npz with N one above the highest there.

    A dataset named after its .npz file (`--data tab.npz`) gives runs/tab-<N>.npz, not tab.npz-<N>.npz.

    The file is created empty here, exclusively, so two runs started together
    never pick the same name and no earlier run is ever overwritten; the run's
    first checkpoint then replaces it (atomically). Given the command's `claim`,
    the name is locked (as `option`) before the file is made, and the empty files
    of runs killed before their first save (known by their stale locks) are removed
    first; the claim removes its own again if nothing was saved.
    """
    name = name.removesuffix(".npz")
    pattern = re.compile(rf"{re.escape(name)}-(\d+)\.npz", re.DOTALL)
    try:
        # ./runs: its parent is the working directory. Made through the claim, which removes it
        # again if the run saved nothing there.
        if claim is None:
            runs.mkdir(exist_ok=True)
        else:
            claim.directory(runs)
        taken = {int(m.group(1)): p for p in runs.iterdir() if (m := pattern.fullmatch(p.name))}
        if claim is not None:
            taken = {n: p for n, p in taken.items() if not remove_stale_placeholder(p)}
        n = max(taken, default=0) + 1
        while True:
            path = runs / f"{name}-{n}.npz"
            try:
                if claim is None:
                    path.open("x").close()
                else:
                    claim.add_placeholder(option, path)
                return path
            except (FileExistsError, OutputInUse):  # another run's, made or claimed since the listing
                n += 1
    except OSError as e:
        reason = e.strerror or e
        if not runs.is_absolute():
            try:
                os.getcwd()
            except OSError:
                reason = "the working directory was removed"
        raise CheckpointError(
            f"{runs}: cannot keep the model there ({reason}); use --checkpoint PATH or --no-save"
        ) from None


def save(path: Path, trainer: Trainer) -> None:
    """Write `trainer`'s state to `path` atomically; raise WriteFailed (the file there is then intact)."""
    write(path, capture(trainer))


def write(path: Path, ckpt: Checkpoint) -> None:
    """Write a checkpoint to `path` atomically; raise WriteFailed (the file there is then intact)."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "gpunet": __version__,
        "config": asdict(ckpt.config),
        "sizes": ckpt.sizes,
        "dataset": ckpt.dataset,
        "dataset_checksum": ckpt.dataset_checksum,
        "step": ckpt.step,
        "optimizer_steps": ckpt.optimizer_steps,
        "optimizer_slots": {name: len(arrays) for name, arrays in ckpt.optimizer_slots.items()},
        "batch_state": ckpt.batch_state,
        "history": [asdict(r) for r in ckpt.history],
        "loss_curve": ckpt.loss_curve,
    }
    if ckpt.classes is not None:  # optional, so checkpoints without it stay format 1
        meta["classes"] = ckpt.classes
    arrays: dict[str, Any] = {f"param_{i}": p for i, p in enumerate(ckpt.params)}
    for name, slot in ckpt.optimizer_slots.items():
        arrays |= {f"slot_{name}_{i}": a for i, a in enumerate(slot)}
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot record these class labels in a checkpoint ({e})") from None
    try:
        with atomic_file(path) as f:
            np.savez(f, meta=np.array(text), **arrays)
    except OSError as e:
        raise WriteFailed(path, failure_reason(e)) from None


def load(path: Path) -> Checkpoint:
    """Read a checkpoint, or raise CheckpointError saying why it cannot be used.

    Every field is checked for its type, shape and range as the file is opened,
    before anything is built from it; a refusal names the file and the field.
    Arrays are read by name (never the archive's other members), each header
    checked against its member's size and the machine's memory first.
    """
    reason = inputs.problem(path)
    if reason is not None:
        raise CheckpointError(f"{shown(path)}: {'no such checkpoint' if reason == 'no such file' else reason}")
    what = inputs.kind(path)
    if what != "zip":  # named by what it holds, not by its name
        raise CheckpointError(f"{shown(path)}: {inputs.describe(what)}, not a gpunet checkpoint (.npz)")
    try:
        with archives.Npz(path) as archive:
            meta = _meta(archive, path)
            try:
                ckpt = _decode(meta, archive)
            except _Bad as e:
                raise CheckpointError(f"{shown(path)}: a damaged or foreign checkpoint ({e})") from None
    except DatasetError as e:  # from the archive: what is wrong with the file, already naming it
        raise CheckpointError(str(e)) from None
    # gpunet never saves a diverged state, so non-finite weights mean a damaged file:
    # a model that answers NaN for every image is refused, not used.
    for i, p in enumerate(ckpt.params):
        if not np.isfinite(p).all():
            what = f"layer {i // 2 + 1} {'weights' if i % 2 == 0 else 'biases'}"
            raise CheckpointError(
                f"{shown(path)}: its {what} hold NaN or infinite values; this checkpoint cannot be used"
            )
    for name, arrays in ckpt.optimizer_slots.items():
        if not all(np.isfinite(a).all() for a in arrays):
            raise CheckpointError(
                f"{shown(path)}: a damaged or foreign checkpoint (slot_{name}: NaN or infinite values)"
            )
    return ckpt


def _meta(archive: archives.Npz, path: Path) -> dict[str, Any]:
    """The checkpoint's JSON record, of a format this gpunet reads."""
    try:
        text = archive["meta"]
        if text.dtype.kind != "U" or text.shape != ():
            raise ValueError(f"meta holds {text.dtype} of shape {text.shape}, not one text")
        meta = json.loads(str(text))
    except DatasetError as e:
        raise CheckpointError(f"{shown(path)}: not a readable gpunet checkpoint ({e.reason})") from None
    except RecursionError:
        raise CheckpointError(f"{shown(path)}: a damaged or foreign checkpoint (meta: nested too deeply)") from None
    except ValueError as e:
        raise CheckpointError(f"{shown(path)}: not a readable gpunet checkpoint ({e})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT or isinstance(found, bool):
        raise CheckpointError(f"{shown(path)}: checkpoint format {found} is not {FORMAT} (gpunet {__version__})")
    return meta


MAX_COUNT = 2**63 - 1  # steps, positions: what an int64 counter holds; no run gets near it
FIELDS = (  # as `write` writes them: the first one missing is named
    "format", "gpunet", "config", "sizes", "dataset", "dataset_checksum", "step",
    "optimizer_steps", "optimizer_slots", "batch_state", "history", "loss_curve", "classes",
)  # fmt: skip
OPTIONAL = {"gpunet", "loss_curve", "classes"}


class _Bad(Exception):
    """One field of a checkpoint that is not what gpunet writes there."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def _what(value: Any) -> str:
    """A JSON value, for a message: its kind and, briefly, itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (list, dict)):
        return f"{'a list' if isinstance(value, list) else 'an object'} of {len(value)}"
    text = repr(value) if isinstance(value, str) else f"{value:.6g}"
    return f"{'the text' if isinstance(value, str) else 'the number'} {text[:40]}{'…' if len(text) > 40 else ''}"


def _int(value: Any, field: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(field, f"{_what(value)}, not a whole number")
    if not lo <= value <= hi:
        shown_value = f"{value:.3g}" if abs(value) > 10**15 else str(value)
        raise _Bad(field, f"{shown_value} is outside {lo}..{hi:,}")
    return value


def _float(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(field, f"{_what(value)}, not a number")
    return float(value)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _Bad(field, f"{_what(value)}, not a text")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(field, f"{_what(value)}, not a list")
    return value


def _object(value: Any, field: str, keys: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON object with exactly these keys (`optional` ones may be absent)."""
    if not isinstance(value, dict):
        raise _Bad(field, f"{_what(value)}, not an object")
    prefix = f"{field}." if field else ""
    for key in keys:
        if key not in value and key not in optional:
            raise _Bad(f"{prefix}{key}", "missing")
    for key in value:
        if key not in keys:
            raise _Bad(f"{prefix}{key}"[:80], "not a field gpunet writes")
    return value


def _config(value: Any) -> TrainConfig:
    c = _object(value, "config", [f.name for f in fields(TrainConfig)])
    hidden = tuple(_int(h, f"config.hidden[{i}]", 1) for i, h in enumerate(_list(c["hidden"], "config.hidden")))
    optimizer = _text(c["optimizer"], "config.optimizer")
    if optimizer not in OPTIMIZERS:
        raise _Bad("config.optimizer", f"{optimizer!r}, not one of {', '.join(OPTIMIZERS)}")
    lr = _float(c["lr"], "config.lr")
    if not (math.isfinite(lr) and lr > 0):
        raise _Bad("config.lr", f"{lr:g}, not a positive number")
    dtype = _text(c["dtype"], "config.dtype")
    if dtype not in DTYPES:
        raise _Bad("config.dtype", f"{dtype!r}, not one of {', '.join(DTYPES)}")
    return TrainConfig(
        hidden=hidden,
        optimizer=optimizer,
        lr=lr,
        iterations=_int(c["iterations"], "config.iterations"),
        batch_size=None if c["batch_size"] is None else _int(c["batch_size"], "config.batch_size", 1),
        dtype=dtype,
        seed=_int(c["seed"], "config.seed", hi=2**128),
        eval_every=_int(c["eval_every"], "config.eval_every", 1),
    )


def _batch_state(value: Any) -> dict[str, Any]:
    if value == {}:  # a full-batch source that keeps no order (the Dask engine)
        return value
    state = _object(value, "batch_state", ("epoch_rng_state", "position"))
    _int(state["position"], "batch_state.position")
    rng = state["epoch_rng_state"]
    if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
        raise _Bad("batch_state.epoch_rng_state", f"{_what(rng)}, not the state of a PCG64 generator")
    try:  # the judge of a generator's state is numpy: a fresh generator must take it
        np.random.PCG64().state = rng  # type: ignore[assignment]  # any dict: what numpy accepts is the test
    except Exception:  # TypeError, ValueError, KeyError or OverflowError, as numpy sees fit
        raise _Bad("batch_state.epoch_rng_state", "not a generator state numpy accepts") from None
    return state


def _history(value: Any, step: int) -> list[Record]:
    records, previous = [], -1
    for i, r in enumerate(_list(value, "history")):
        field = f"history[{i}]"
        _object(r, field, [f.name for f in fields(Record)])
        iteration = _int(r["iteration"], f"{field}.iteration", previous + 1, step)
        loss = _float(r["loss"], f"{field}.loss")
        if loss < 0:
            raise _Bad(f"{field}.loss", f"{loss:g}: a cross-entropy is never negative")
        accuracies = []
        for name in ("train_accuracy", "test_accuracy"):
            a = _float(r[name], f"{field}.{name}")
            if not (0 <= a <= 1 or math.isnan(a)):  # NaN: a fit on arrays has no test split
                raise _Bad(f"{field}.{name}", f"{a:g}, not an accuracy in [0, 1]")
            accuracies.append(a)
        records.append(Record(iteration, loss, *accuracies))
        previous = iteration
    return records


def _array(archive: archives.Npz, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A parameter or optimizer array: its header checked before its data is read, then its values."""
    if name not in archive:
        raise _Bad(name, "missing")
    found_dtype, found_shape = archive.header(name)
    if found_dtype != np.dtype(dtype):
        raise _Bad(name, f"{found_dtype} values, but the checkpoint's dtype is {dtype}")
    if found_shape != shape:
        raise _Bad(name, f"shape {found_shape}, but the layers need {shape}")
    return archive[name]


def _decode(meta: dict[str, Any], archive: archives.Npz) -> Checkpoint:
    _object(meta, "", FIELDS, OPTIONAL)
    config = _config(meta["config"])
    sizes = [_int(n, f"sizes[{i}]", 1) for i, n in enumerate(_list(meta["sizes"], "sizes"))]
    if len(sizes) < 2 or tuple(sizes[1:-1]) != config.hidden:
        raise _Bad("sizes", f"{sizes[:10]} are not the layers of hidden {list(config.hidden)}")
    step = _int(meta["step"], "step", hi=max(config.iterations, 0))
    expected = [shape for a, b in pairwise(sizes) for shape in ((a, b), (b,))]
    params = [_array(archive, f"param_{i}", shape, config.dtype) for i, shape in enumerate(expected)]
    slot_names = set(OPTIMIZERS[config.optimizer](np.zeros(1), 1.0).slots)
    counts = _object(meta["optimizer_slots"], "optimizer_slots", sorted(slot_names))
    slots = {}
    for name in sorted(slot_names):
        _int(counts[name], f"optimizer_slots.{name}", len(expected), len(expected))
        slots[name] = [_array(archive, f"slot_{name}_{i}", shape, config.dtype) for i, shape in enumerate(expected)]
    classes = meta.get("classes")
    if classes is not None:
        classes = _list(classes, "classes")
        if len(classes) != sizes[-1]:
            raise _Bad("classes", f"{sizes[-1]} output units but {len(classes)} class labels")
        for i, c in enumerate(classes):
            if isinstance(c, (list, dict)) or c is None:
                raise _Bad(f"classes[{i}]", f"{_what(c)}, not a label (a text or a number)")
    loss_curve = [_float(v, f"loss_curve[{i}]") for i, v in enumerate(_list(meta.get("loss_curve", []), "loss_curve"))]
    if len(loss_curve) > step:
        raise _Bad("loss_curve", f"{len(loss_curve)} losses for {step} steps")
    dataset = _text(meta["dataset"], "dataset")
    checksum = _text(meta["dataset_checksum"], "dataset_checksum")
    if checksum and not re.fullmatch(r"[0-9a-f]{64}", checksum):
        raise _Bad("dataset_checksum", f"{_what(checksum)}, not a SHA-256 in hex")
    if "gpunet" in meta:
        _text(meta["gpunet"], "gpunet")
    return Checkpoint(
        config=config,
        sizes=sizes,
        dataset=dataset,
        dataset_checksum=checksum,
        step=step,
        params=params,
        optimizer_steps=_int(meta["optimizer_steps"], "optimizer_steps", hi=step),
        optimizer_slots=slots,
        batch_state=_batch_state(meta["batch_state"]),
        history=_history(meta["history"], step),
        classes=classes,
        loss_curve=loss_curve,
    )


@dataclass(frozen=True)
class Mismatch:
    """One thing a run would change in the checkpoint it continues: `setting` is "seed", "features",
    "hidden", "outputs", "classes", "dtype", "optimizer" or "dataset"; `saved` and `given` its values."""

    setting: str
    saved: Any
    given: Any


LAYERS = ("features", "hidden", "outputs")  # the network's shape, sizes[0], sizes[1:-1] and sizes[-1]


def continuation_mismatches(
    ckpt: Checkpoint,
    config: TrainConfig,
    sizes: list[int],
    dataset: Dataset | None = None,
    classes: Any = None,
) -> list[Mismatch]:
    """What stops a run of `config`, on a network of `sizes`, from continuing `ckpt`: the one rule for
    `gpunet train --resume` and MLPClassifier(warm_start=True), each wording the answer its own way.

    The seed (it drew the weights and the batch order being continued), the layers, the dtype and the
    optimizer must be the checkpoint's. With `dataset` (a resumed run), the data must be the very
    data it was trained on (name and checksum); with `classes` (a warm start, which may bring new
    rows), the labels must be the classes the output units stand for. Other settings (lr, iterations,
    batch_size, eval_every) may change. Returns [] when the run continues the checkpoint.
    """
    found = []
    if ckpt.config.seed != config.seed:
        found.append(Mismatch("seed", ckpt.config.seed, config.seed))
    shapes = {"features": lambda s: s[0], "hidden": lambda s: tuple(s[1:-1]), "outputs": lambda s: s[-1]}
    for setting, part in shapes.items():
        if part(ckpt.sizes) != part(sizes):
            found.append(Mismatch(setting, part(ckpt.sizes), part(sizes)))
    if classes is not None:
        saved = np.asarray(ckpt.classes) if ckpt.classes is not None else np.arange(ckpt.sizes[-1])
        if not np.array_equal(saved, np.asarray(classes)):
            found.append(Mismatch("classes", saved, classes))
    for setting in ("dtype", "optimizer"):
        if getattr(ckpt.config, setting) != getattr(config, setting):
            found.append(Mismatch(setting, getattr(ckpt.config, setting), getattr(config, setting)))
    if dataset is not None and (ckpt.dataset, ckpt.dataset_checksum) != (dataset.name, dataset.checksum):
        found.append(Mismatch("dataset", (ckpt.dataset, ckpt.dataset_checksum), (dataset.name, dataset.checksum)))
    return found


def check_matches(ckpt: Checkpoint, config: TrainConfig, dataset: Dataset, path: Path) -> None:
    """Refuse, in the command line's words, a checkpoint that `config` on `dataset` does not continue
    (continuation_mismatches): another seed, architecture, dtype, optimizer or dataset."""
    sizes = layer_sizes(config, dataset)
    found = continuation_mismatches(ckpt, config, sizes, dataset=dataset)
    if any(m.setting == "seed" for m in found):  # the weights and batch order are the checkpoint's already
        raise CheckpointError(
            f"{path} continues the run of seed {ckpt.config.seed}: --seed {config.seed} would change nothing "
            "(the weights and batch order are the checkpoint's), so it is refused; resume without --seed, "
            "or start a new run with it"
        )
    mismatches = []
    if any(m.setting in LAYERS for m in found):
        mismatches.append(f"layers {'-'.join(map(str, ckpt.sizes))}, not {'-'.join(map(str, sizes))}")
    for m in found:
        if m.setting in ("dtype", "optimizer"):
            mismatches.append(f"{m.setting} {m.saved}, not {m.given}")
        elif m.setting == "dataset":
            mismatches.append(
                f"dataset {ckpt.dataset} (sha256 {ckpt.dataset_checksum[:12]}…), "
                f"not {dataset.name} (sha256 {dataset.checksum[:12]}…)"
            )
    if mismatches:
        raise CheckpointError(f"{path} was written for {'; '.join(mismatches)}: refusing to mix them")


def model_differences(ckpt: Checkpoint, sizes: list[int], dataset: Dataset) -> list[str]:
    """How the model in `ckpt` differs from one of layers `sizes` trained on `dataset`: its layers (the
    data's features and classes among them), the data it was trained on, the labels of its classes.
    Empty: the same model (its settings, such as the learning rate, may differ).

    The continuation rule's model part (continuation_mismatches: layers and classes, with the
    checkpoint's own settings, so seed, dtype and optimizer never differ), and the data by name
    only: a new run on a new copy of the same dataset makes the same model."""
    labels = list(dataset.classes) if dataset.classes is not None else list(range(sizes[-1]))
    found = continuation_mismatches(ckpt, ckpt.config, sizes, classes=labels)
    differences = []
    if any(m.setting in LAYERS for m in found):
        differences.append(f"layers {'-'.join(map(str, ckpt.sizes))}, not {'-'.join(map(str, sizes))}")
    if ckpt.dataset != dataset.name:
        differences.append(f"dataset {printable(ckpt.dataset)}, not {printable(dataset.name)}")
    if not any(m.setting in LAYERS for m in found) and any(m.setting == "classes" for m in found):
        differences.append(f"classes {_named(ckpt.classes)}, not {_named(labels if dataset.classes else None)}")
    return differences


def _named(classes: list[Any] | None) -> str:
    """Class labels, for a message: the first few, or 'numbered' for units that are class 0..k-1."""
    if classes is None:
        return "numbered"
    return printable(", ".join(map(repr, classes[:4])) + (", …" if len(classes) > 4 else ""))


def check_replaceable(path: Path, sizes: list[int], dataset: Dataset, option: str = "--checkpoint") -> None:
    """A new run's checkpoint path that already holds another model (model_differences) or a file that is
    not a checkpoint is refused in one line, before training: it is never replaced silently. An empty
    file (a claimed name) and a checkpoint of the same model are replaced as usual."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    how = f"give another {option} path, or delete the file first"
    try:
        old = load(path)
    except CheckpointError as e:
        raise OutputRefused(
            f"{option} {shown(path)} is not a checkpoint gpunet can read ({e}): refusing to replace it; {how}"
        ) from None
    differences = model_differences(old, sizes, dataset)
    if differences:
        raise OutputRefused(
            f"{option} {shown(path)} holds another model ({'; '.join(differences)}): refusing to replace it; "
            f"continue that one with --resume {shown(path)}, {how}"
        )


def nothing_saved(problem: Exception, kept: Path | None = None) -> str:
    """Why a run that diverged (or did not learn) before its first checkpoint left none: a state past the
    problem is never saved, and no earlier one was kept. `kept`: a file that was there before, untouched."""
    how = "diverged" if isinstance(problem, DivergedError) else "stopped learning"
    said = f"nothing was saved: the run {how} before its first checkpoint, so no good state existed to keep"
    return f"{said}; the file already at {kept} is intact" if kept is not None else said


def restore(trainer: Trainer, ckpt: Checkpoint) -> None:
    """Put a checkpoint's state into a trainer built with the checkpoint's configuration."""
    device = trainer.device
    trainer.set_params(ckpt.params)
    trainer.optimizer.steps = ckpt.optimizer_steps
    slots = ckpt.optimizer_slots
    trainer.optimizer.slots = {name: device.asarray(flatten(arrays)) for name, arrays in slots.items()}
    trainer.source.restore(ckpt.batch_state)
    trainer.steps_done = ckpt.step
    trainer.history = list(ckpt.history)
    trainer.step_loss_curve = list(ckpt.loss_curve)
    trainer.mark_checked()
