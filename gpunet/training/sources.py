"""Where a run's training samples live, chosen once for every front end: the engine.

"local" keeps them on the trainer's own device (train.LocalSource); "dask" keeps them as shards
on Dask workers, which read the dataset's own files from its directory (distributed.DaskSource).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpunet.data.datasets import Dataset
from gpunet.device.backend import Device
from gpunet.errors import ConfigError
from gpunet.training.train import TrainConfig, Trainer

ENGINES = ("local", "dask")


def make_source(
    engine: str,
    config: TrainConfig,
    dataset: Dataset,
    device: Device,
    workers: int = 2,
    scheduler: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Any:
    """The source of `engine`: None for "local" (the Trainer makes its own LocalSource), a DaskSource
    for "dask" (a local cluster of `workers` processes, or the cluster at `scheduler`)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}': choose {' or '.join(ENGINES)}")
    if engine == "local":
        return None
    if dataset.directory is None:  # the workers read files: arrays in this process's memory are not theirs
        raise ConfigError(f"the dask engine reads the built-in datasets' files; {dataset.name} has none")
    if config.batch_size is not None:
        raise ConfigError("the dask engine trains on the full batch: batch_size must be None")
    from gpunet.training.distributed import DaskSource  # Dask is imported only for it

    return DaskSource(dataset, dataset.directory, config.dtype, device, scheduler, workers, say=say)


def make_trainer(
    engine: str,
    config: TrainConfig,
    dataset: Dataset,
    device: Device,
    workers: int = 2,
    scheduler: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Trainer:
    """A Trainer whose samples come from `engine`'s source (see make_source); no cluster is left
    running when the trainer cannot be built."""
    source = make_source(engine, config, dataset, device, workers, scheduler, say)
    try:
        return Trainer(config, dataset, device, source=source, say=say)
    except BaseException:
        if source is not None:
            source.close()
        raise
