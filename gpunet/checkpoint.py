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
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gpunet import __version__, inputs
from gpunet.data import Dataset
from gpunet.errors import GpunetError, WriteFailed, shown
from gpunet.files import atomic_file, failure_reason
from gpunet.flat import flatten
from gpunet.train import Record, TrainConfig, Trainer, layer_sizes

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


RUNS = Path("runs")


def claim_run_path(name: str, runs: Path = RUNS) -> Path:
    """A new default model file, runs/<name>-<N>.npz with N one above the highest there.

    The file is created empty here, exclusively, so two runs started together
    never pick the same name and no earlier run is ever overwritten; the run's
    first checkpoint then replaces it (atomically).
    """
    pattern = re.compile(rf"{re.escape(name)}-(\d+)\.npz")
    try:
        runs.mkdir(parents=True, exist_ok=True)
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
    path = Path(path)
    slots = trainer.host_slots()
    meta = {
        "format": FORMAT,
        "gpunet": __version__,
        "config": asdict(trainer.config),
        "sizes": trainer.sizes,
        "dataset": trainer.dataset_name,
        "dataset_checksum": trainer.dataset_checksum,
        "step": trainer.steps_done,
        "optimizer_steps": trainer.optimizer.steps,
        "optimizer_slots": {name: len(arrays) for name, arrays in slots.items()},
        "batch_state": trainer.source.state(),
        "history": [asdict(r) for r in trainer.history],
    }
    arrays = {f"param_{i}": p for i, p in enumerate(trainer.host_params())}
    for name, slot in slots.items():
        arrays |= {f"slot_{name}_{i}": a for i, a in enumerate(slot)}
    try:
        with atomic_file(path) as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
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
            arrays = {name: f[name] for name in f.files if name != "meta"}
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
    )


def check_matches(ckpt: Checkpoint, config: TrainConfig, dataset: Dataset, path: Path) -> None:
    """Refuse a checkpoint from another architecture, dtype, optimizer or dataset."""
    sizes = layer_sizes(config, dataset)
    mismatches = []
    if sizes != ckpt.sizes:
        mismatches.append(f"layers {'-'.join(map(str, ckpt.sizes))}, not {'-'.join(map(str, sizes))}")
    for field in ("dtype", "optimizer"):
        if getattr(ckpt.config, field) != getattr(config, field):
            mismatches.append(f"{field} {getattr(ckpt.config, field)}, not {getattr(config, field)}")
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
    trainer.mark_checked()
