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
import re
import zipfile
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.core.flat import flatten
from gpunet.data.datasets import Dataset
from gpunet.errors import GpunetError, WriteFailed, shown
from gpunet.files import inputs
from gpunet.files.outputs import atomic_file, failure_reason
from gpunet.training.train import Record, TrainConfig, Trainer, layer_sizes
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
    """`trainer`'s state, on the host."""
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


def claim_run_path(name: str, runs: Path = RUNS) -> Path:
    """A new default model file, runs/<name>-<N>.npz with N one above the highest there.

    A dataset named after its .npz file (`--data tab.npz`) gives runs/tab-<N>.npz, not tab.npz-<N>.npz.

    The file is created empty here, exclusively, so two runs started together
    never pick the same name and no earlier run is ever overwritten; the run's
    first checkpoint then replaces it (atomically).
    """
    name = name.removesuffix(".npz")
    pattern = re.compile(rf"{re.escape(name)}-(\d+)\.npz")
    try:
        runs.mkdir(exist_ok=True)  # ./runs: its parent is the working directory
        taken = [int(m.group(1)) for p in runs.iterdir() if (m := pattern.fullmatch(p.name))]
        n = max(taken, default=0) + 1
        while True:
            path = runs / f"{name}-{n}.npz"
            try:
                path.open("x").close()
                return path
            except FileExistsError:
                n += 1
    except OSError as e:
        raise CheckpointError(
            f"{runs}: cannot keep the model there ({e.strerror or e}); use --checkpoint PATH or --no-save"
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
    arrays = {f"param_{i}": p for i, p in enumerate(ckpt.params)}
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
    """Read a checkpoint, or raise CheckpointError saying why it cannot be used."""
    reason = inputs.problem(path)
    if reason is not None:
        raise CheckpointError(f"{shown(path)}: {'no such checkpoint' if reason == 'no such file' else reason}")
    what = inputs.kind(path)
    if what != "zip":  # named by what it holds, not by its name
        raise CheckpointError(f"{shown(path)}: {inputs.describe(what)}, not a gpunet checkpoint (.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = dict(f)  # by name (the meta array among them, unused)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{shown(path)}: not a readable gpunet checkpoint ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{shown(path)}: checkpoint format {found} is not {FORMAT} (gpunet {__version__})")
    try:
        ckpt = _decode(meta, arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{shown(path)}: a damaged or foreign checkpoint ({type(e).__name__}: {e})") from None
    # gpunet never saves a diverged state, so non-finite weights mean a damaged file:
    # a model that answers NaN for every image is refused, not used.
    for i, p in enumerate(ckpt.params):
        if not np.isfinite(p).all():
            what = f"layer {i // 2 + 1} {'weights' if i % 2 == 0 else 'biases'}"
            raise CheckpointError(
                f"{shown(path)}: its {what} hold NaN or infinite values; this checkpoint cannot be used"
            )
    return ckpt


def _decode(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Checkpoint:
    config = TrainConfig(**{**meta["config"], "hidden": tuple(meta["config"]["hidden"])})
    sizes = [int(n) for n in meta["sizes"]]
    params = [arrays[f"param_{i}"] for i in range(2 * (len(sizes) - 1))]
    expected = [shape for a, b in pairwise(sizes) for shape in ((a, b), (b,))]
    if [p.shape for p in params] != expected:
        raise ValueError(f"parameter shapes {[p.shape for p in params]} do not fit layers {sizes}")
    slots = {
        name: [arrays[f"slot_{name}_{i}"] for i in range(count)] for name, count in meta["optimizer_slots"].items()
    }
    if any([a.shape for a in arrays_] != expected for arrays_ in slots.values()):
        raise ValueError("optimizer state does not fit the parameters")
    return Checkpoint(
        config=config,
        sizes=sizes,
        dataset=meta["dataset"],
        dataset_checksum=meta["dataset_checksum"],
        step=int(meta["step"]),
        params=params,
        optimizer_steps=int(meta["optimizer_steps"]),
        optimizer_slots=slots,
        batch_state=meta["batch_state"],
        history=[Record(**r) for r in meta["history"]],
        classes=_classes(meta.get("classes"), sizes[-1]),
        loss_curve=[float(v) for v in meta.get("loss_curve", [])],
    )


def _classes(classes: Any, outputs: int) -> list[Any] | None:
    if classes is None:
        return None
    if not isinstance(classes, list) or len(classes) != outputs:
        raise ValueError(f"{outputs} output units but class labels {classes!r}")
    return classes


def check_matches(ckpt: Checkpoint, config: TrainConfig, dataset: Dataset, path: Path) -> None:
    """Refuse a checkpoint from another architecture, dtype, optimizer or dataset."""
    sizes = layer_sizes(config, dataset)
    mismatches = []
    if sizes != ckpt.sizes:
        mismatches.append(f"layers {'-'.join(map(str, ckpt.sizes))}, not {'-'.join(map(str, sizes))}")
    for name in ("dtype", "optimizer"):
        if getattr(ckpt.config, name) != getattr(config, name):
            mismatches.append(f"{name} {getattr(ckpt.config, name)}, not {getattr(config, name)}")
    if (ckpt.dataset, ckpt.dataset_checksum) != (dataset.name, dataset.checksum):
        mismatches.append(
            f"dataset {ckpt.dataset} (sha256 {ckpt.dataset_checksum[:12]}…), "
            f"not {dataset.name} (sha256 {dataset.checksum[:12]}…)"
        )
    if mismatches:
        raise CheckpointError(f"{path} was written for {'; '.join(mismatches)}: refusing to mix them")


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
