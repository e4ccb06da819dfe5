"""The `gpunet` command line.

Every failure a user can cause (bad options, bad data, a missing GPU, a
diverging run, Ctrl-C) ends as one line on stderr and a non-zero exit code:
2 for bad options, 1 for data and devices, 3 for divergence, 130 for Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gpunet import __version__, data
from gpunet.backend import describe, resolve_device
from gpunet.errors import ConfigError, DatasetError, GpunetError
from gpunet.report import Reporter, stderr_line
from gpunet.train import TrainConfig, TrainResult, layer_sizes, train

# Typer bundles its own click in recent releases and uses the public one in
# older ones; the base class of its exceptions is found either way.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """Runs a command and turns every expected failure into one line and an exit code."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args, prog_name=prog_name or "gpunet", complete_var=complete_var, standalone_mode=False, **extra
            )
        except GpunetError as e:
            stderr_line(f"error: {e}")
            code = e.exit_code
        except _ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            stderr_line(f"error: {e.format_message()}{hint}")
            code = e.exit_code
        except (KeyboardInterrupt, EOFError):
            stderr_line("error: interrupted")
            code = 130
        except typer.Abort:
            stderr_line("error: aborted")
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    help="Train a from-scratch MLP on MNIST-style data, on the CPU (numpy) or an NVIDIA GPU (cupy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="List datasets and where they were found; download one.")
app.add_typer(datasets_app, name="datasets")

DATASET_HELP = (
    "auto (MNIST if present or downloadable, else an installed Fashion-MNIST), mnist, fashion-mnist or synthetic."
)
DATA_DIR_HELP = (
    "Directory holding the four IDX files (looked at first, before $GPUNET_DATA, the cache and /usr/share/datasets)."
)


def parse_hidden(text: str) -> tuple[int, ...]:
    """'16,16' -> (16, 16); '' -> () (no hidden layer: softmax regression)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--hidden takes comma-separated layer sizes such as 16,16, got '{text}'") from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"hidden layer sizes must be positive, got '{text}'")
    return sizes


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash never leaves half a JSON file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@app.command("train")
def train_command(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    offline: Annotated[bool, typer.Option(help="Never download; use only local files.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, or auto (cuda when usable, else cpu).")] = "auto",
    hidden: Annotated[str, typer.Option(help="Hidden layer sizes, comma-separated.")] = "16,16",
    optimizer: Annotated[str, typer.Option(help="gd, momentum or adam.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01,
    iterations: Annotated[int, typer.Option(help="Number of updates.")] = 500,
    batch_size: Annotated[int | None, typer.Option(help="Samples per update; default: all (full batch).")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    seed: Annotated[int, typer.Option(help="Seed for the initial weights and the batch order.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Compute loss and accuracies every N steps.")] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write a JSON summary, with history, here.")] = None,
) -> None:
    """Train the network and report loss and accuracy, read from the output layer."""
    config = TrainConfig(parse_hidden(hidden), optimizer, lr, iterations, batch_size, dtype, seed, eval_every)
    config.validate()  # before any data is read: bad options fail at once
    if dataset not in data.DATASET_NAMES:
        raise ConfigError(f"unknown dataset '{dataset}': choose one of {', '.join(data.DATASET_NAMES)}")
    dev = resolve_device(device)
    out = Reporter(quiet)
    with out.downloads():
        ds = data.load(dataset, data_dir, offline, out.download_progress, out.say)
    out.say(
        f"dataset: {ds.name} from {ds.source} ({len(ds.train_images):,} train, {len(ds.test_images):,} test images)"
    )
    if not ds.verified:
        out.say("note: no published checksum covers these files; they passed the format checks only")
    if dev.note:
        out.say(dev.note)
    batch = "full batch" if batch_size is None else f"batches of {batch_size}"
    out.say(
        f"training {'-'.join(map(str, layer_sizes(config, ds)))} with {optimizer} lr {lr:g}, {batch} "
        f"of {len(ds.train_images):,}, {dtype}, {iterations} steps on {dev.name}"
    )
    try:
        with out.training(iterations):
            result = train(config, ds, dev, on_record=out.record, on_step=out.step)
    except GpunetError as e:
        if json_path and isinstance(e.result, TrainResult) and e.result.history:
            write_json(json_path, {**e.result.summary(), "status": type(e).__name__})
        raise
    final = result.final
    out.result(
        f"test accuracy {final.test_accuracy:.4f} (train {final.train_accuracy:.4f}, loss {final.loss:.4f}) "
        f"after {final.iteration} steps, {result.train_seconds:.1f} s on {result.device}"
    )
    if json_path:
        write_json(
            json_path, {**result.summary(), "status": "completed", "dataset_source": ds.source, "version": __version__}
        )
        out.say(f"summary written to {json_path}")


@app.command("devices")
def devices_command() -> None:
    """What can run here: numpy and its BLAS, cupy and each GPU, or why cuda cannot."""
    for name, detail in describe():
        print(f"{name:<8} {detail}")


@datasets_app.callback(invoke_without_command=True)
def datasets_command(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
) -> None:
    """List the datasets and where each was found."""
    if ctx.invoked_subcommand is not None:
        return
    for spec in data.SPECS.values():
        try:
            found, searched = data.locate(spec, data_dir)
            where = f"found in {found}" if found else "not found; looked in " + ", ".join(map(str, searched))
        except DatasetError as e:
            where = f"problem: {e}"
        print(f"{spec.name:<14} {where}")
    print(f"{'synthetic':<14} generated on demand (10 classes, 28x28, 3,000 train / 1,000 test)")


@datasets_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="mnist or fashion-mnist.")],
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
) -> None:
    """Fetch a dataset into the cache (if it is not found locally) and verify it."""
    if name not in data.SPECS:
        raise ConfigError(f"cannot download '{name}': choose one of {', '.join(data.SPECS)}")
    spec = data.SPECS[name]
    out = Reporter()
    found, _ = data.locate(spec, data_dir)
    if found is None:
        with out.downloads():
            found = data.fetch(spec, out.download_progress)
    ds = data.load_dir(spec, found)
    state = (
        "verified against published checksums" if ds.verified else "format-checked (no published checksum covers it)"
    )
    print(f"{spec.title} in {found}: {len(ds.train_images):,} train and {len(ds.test_images):,} test images, {state}")


def main() -> None:
    app()
