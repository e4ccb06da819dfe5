"""Command-line options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpunet import params
from gpunet.errors import ConfigError
from gpunet.files.outputs import given_path

DATASET_HELP = (
    "auto (MNIST if present or downloadable, else an installed Fashion-MNIST), mnist, fashion-mnist or synthetic."
)
DATA_DIR_HELP = (
    "Directory holding the four IDX files: the only place looked in (not $GPUNET_DATA, the cache or a download)."
)


DATA_HELP = (
    "Your own data instead of --dataset: a .npz (x_train, y_train, x_test, y_test; or x, y, of which a fixed "
    "fifth is held out) or a folder of the four IDX files, of any image size and number of classes."
)
DatasetOpt = Annotated[str, typer.Option("--dataset", help=DATASET_HELP)]
DataOpt = Annotated[Path | None, typer.Option("--data", help=DATA_HELP)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help=DATA_DIR_HELP)]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download; use only local files.")]
HiddenOpt = Annotated[str, typer.Option("--hidden", help="Hidden layer sizes, comma-separated.")]
OPTIMIZER_HELP = (
    "gd: p -= lr*g. momentum (heavy ball): v = 0.9*v + g; p -= lr*v. adam (Kingma & Ba, bias-corrected): "
    "m = 0.9*m + 0.1*g; v = 0.999*v + 0.001*g*g; p -= lr * (m/(1-0.9^t)) / (sqrt(v/(1-0.999^t)) + 1e-8), "
    "eps added after the bias correction, as in PyTorch."
)
OptimizerOpt = Annotated[str, typer.Option("--optimizer", help=OPTIMIZER_HELP)]
LrOpt = Annotated[
    float, typer.Option("--lr", help="Learning rate: one default for all three optimizers (gd learns best near 0.1).")
]
IterationsOpt = Annotated[int, typer.Option("--iterations", help="Number of updates.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Samples per update; default: all (full batch).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the initial weights and the batch order.")]
EvalOpt = Annotated[int, typer.Option("--eval-every", help="Compute loss and accuracies every N steps.")]
# Outputs keep the text typed (given_path): 'keepme/' names a directory, which pathlib would make 'keepme'.
JsonOpt = Annotated[
    Path | None, typer.Option("--json", parser=given_path, help="Write the machine-readable result here.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (cuda when usable, else cpu).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this process) or dask (shards on Dask workers).")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="With --engine dask: worker processes of a local cluster.")]
SchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="With --engine dask: address of a running scheduler (tcp://host:port)."),
]


def parse_hidden(text: str) -> tuple[int, ...]:
    """'16,16' -> (16, 16); '' -> () (no hidden layer: softmax regression). Ranges are TRAIN_RULES' to check."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--hidden takes comma-separated layer sizes such as 16,16, got '{text}'") from None


# The settings only the command line has (the library's are TRAIN_RULES and BENCH_RULES), in the same
# table form: refused in one line naming the flag (`--top must be at least 1, got 0`), never coerced.
COMMAND_RULES = params.table(
    params.Rule("checkpoint_every", "--checkpoint-every", "int", low=1, optional=True),
    params.Rule("more", "--more", "int", low=1, optional=True),
    params.Rule("top", "--top", "int", low=1),
    params.Rule("split", "--split", "choice", choices=("test", "train")),
)


def check_options(**values: object) -> None:
    """Refuse the first of these command-line settings that breaks its COMMAND_RULES rule."""
    params.check(COMMAND_RULES, values)
