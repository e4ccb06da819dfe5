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
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpunet import __version__
from gpunet.data import Dataset
from gpunet.errors import GpunetError
from gpunet.files import atomic_file
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


def save(path: Path, trainer: Trainer) -> None:
    """Write `trainer`'s state to `path` atomically."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "gpunet": __version__,
        "config": asdict(trainer.config),
        "sizes": trainer.sizes,
        "dataset": trainer.dataset_name,
        "dataset_checksum": trainer.dataset_checksum,
        "step": trainer.steps_done,
        "optimizer_steps": trainer.optimizer.steps,
        "optimizer_slots": {name: len(arrays) for name, arrays in trainer.optimizer.slots.items()},
        "batch_state": trainer.source.state(),
        "history": [asdict(r) for r in trainer.history],
    }
    arrays = {f"param_{i}": p for i, p in enumerate(trainer.host_params())}
    for name, slot in trainer.optimizer.slots.items():
        arrays |= {f"slot_{name}_{i}": trainer.to_host(a) for i, a in enumerate(slot)}
    with atomic_file(path) as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint, or raise CheckpointError saying why it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {name: f[name] for name in f.files if name != "meta"}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable gpunet checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT} (gpunet {__version__})")
    config = meta["config"]
    config = TrainConfig(**{**config, "hidden": tuple(config["hidden"])})
    n_params = 2 * (len(meta["sizes"]) - 1)
    return Checkpoint(
        config=config,
        sizes=meta["sizes"],
        dataset=meta["dataset"],
        dataset_checksum=meta["dataset_checksum"],
        step=meta["step"],
        params=[arrays[f"param_{i}"] for i in range(n_params)],
        optimizer_steps=meta["optimizer_steps"],
        optimizer_slots={
            name: [arrays[f"slot_{name}_{i}"] for i in range(count)] for name, count in meta["optimizer_slots"].items()
        },
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
    trainer.params = [device.asarray(p) for p in ckpt.params]
    trainer.optimizer.steps = ckpt.optimizer_steps
    slots = ckpt.optimizer_slots
    trainer.optimizer.slots = {name: [device.asarray(a) for a in arrays] for name, arrays in slots.items()}
    trainer.source.restore(ckpt.batch_state)
    trainer.steps_done = ckpt.step
    trainer.history = list(ckpt.history)
    trainer.mark_checked()
