"""The `gpunet` command line.

Every failure a user can cause (bad options, bad data, a missing GPU, a
diverging run, Ctrl-C) ends as one line on stderr and a non-zero exit code:
2 for bad options, 1 for data, devices, clusters and outputs that could not be
written, 3 for a run that diverged or did not learn, 128 + the signal for Ctrl-C (130), SIGTERM (143)
and SIGHUP (129). Every command claims its output files before it starts
(gpunet.files.outputs.claim_outputs) and writes them atomically.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, astuple
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from gpunet.bench.suite import BenchReport, BenchSettings, SweepRow
from gpunet.cli import help
from gpunet.cli.options import (
    BatchOpt,
    DataDirOpt,
    DataOpt,
    DatasetOpt,
    DeviceOpt,
    DtypeOpt,
    EngineOpt,
    EvalOpt,
    HiddenOpt,
    IterationsOpt,
    JsonOpt,
    LrOpt,
    OfflineOpt,
    OptimizerOpt,
    SchedulerOpt,
    SeedOpt,
    WorkersOpt,
    check_options,
    parse_hidden,
)
from gpunet.cli.report import Reporter, forgiving_output, safe_output, standard_streams, stderr_line
from gpunet.data import datasets, userdata
from gpunet.data.images import check_invert, read_images
from gpunet.device.backend import Device, describe, resolve_device
from gpunet.errors import (
    ConfigError,
    DatasetError,
    DeviceError,
    GpunetError,
    Interrupted,
    OutputRefused,
    WriteFailed,
    printable,
    program,
)
from gpunet.estimator import from_checkpoint
from gpunet.files import environment, signals
from gpunet.files import outputs as output_files
from gpunet.files.inputs import byte_size
from gpunet.files.outputs import Claim, atomic_file, claim_outputs, failure_reason, given_path, write_each
from gpunet.params import worded_for_flags
from gpunet.training import checkpoint, doctor, evaluation, sources
from gpunet.training.train import (
    Outcome,
    Record,
    TrainConfig,
    Trainer,
    TrainResult,
    check_fits,
    layer_sizes,
)
from gpunet.version import __version__

# Typer bundles its own click in recent releases and uses the public one in
# older ones; the base class of its exceptions is found either way.
_ClickException: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_NoArgsIsHelp = sys.modules[_ClickException.__module__].NoArgsIsHelpError


class _OneLineErrors(help.Group):
    """Runs a command and turns every expected failure into one line and an exit code."""

    # typer's bundled click and the public one differ in main's keywords (windows_expand_args): the rest
    # pass through **extra, whichever is installed.
    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        standard_streams()
        safe_output()
        output_files.WRITTEN.clear()  # what this command writes, for a signal's last line
        try:
            # Ctrl-C, SIGTERM and SIGHUP unwind cleanly, never mid-file; a closed terminal loses no run.
            with signals.handling(), forgiving_output():
                try:
                    environment.check_all()  # a malformed GPUNET_* setting is refused like a bad option
                    code = super().main(
                        args=args,
                        prog_name=prog_name or "gpunet",
                        complete_var=complete_var,
                        standalone_mode=False,
                        **extra,
                    )
                finally:
                    signals.closing()  # from here (the last line, the exit) a signal is only counted
        except GpunetError as e:
            more = signals.said_after_the_first() if isinstance(e, Interrupted) else ""
            stderr_line(f"error: {worded_for_flags(e)}" + (f"; {more}" if more else ""))  # flags named as flags
            code = e.exit_code
        except _NoArgsIsHelp as e:  # bare `gpunet`: the help was asked for, in effect, and is not an error
            with forgiving_output():
                if e.format_message():  # rich has printed it already; click's plain help comes as the message
                    print(e.format_message())
            code = 0
        except _ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            stderr_line(f"error: {e.format_message()}{hint}")
            code = e.exit_code
        except signals.Terminated as e:
            more = signals.said_after_the_first()
            line = f"error: interrupted by {signals.name(e.signum)}; {output_files.written_so_far()}"
            stderr_line(line + (f"; {more}" if more else ""))
            code = 128 + e.signum
        except (KeyboardInterrupt, EOFError):
            stderr_line("error: interrupted")
            code = 130
        except typer.Abort:
            stderr_line("error: aborted")
            code = 1
        code = code if isinstance(code, int) else 0
        with forgiving_output():  # what is still buffered, written now or dropped if the terminal is gone
            sys.stdout.flush()
        if standalone_mode:
            sys.exit(code)
        return code


app = help.Typer(
    cls=_OneLineErrors,
    help="Train a from-scratch MLP on MNIST-style data, on the CPU (numpy) or an NVIDIA GPU (cupy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = help.Typer(cls=help.Group, help="List datasets and where they were found; download one.")
app.add_typer(datasets_app, name="datasets")


def _print_version(value: bool) -> None:
    if value:
        print(f"gpunet {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print gpunet's version and exit."),
    ] = False,
) -> None:
    """Train a from-scratch MLP on MNIST-style data, on the CPU (numpy) or an NVIDIA GPU (cupy)."""


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` atomically as valid JSON whatever the numbers (NaN and infinities, a diverged
    loss, are written as null); raise WriteFailed (whatever was at `path` is then intact)."""
    try:
        with atomic_file(path, "w") as f:
            json.dump(finite_or_null(payload), f, indent=2, allow_nan=False)
            f.write("\n")
    except OSError as e:
        raise WriteFailed(path, failure_reason(e)) from None


def shortest(value: float) -> float:
    """A float that is exactly a float32 (a float32 run's loss or accuracy) as the float32's shortest
    digits: 0.8606, not 0.8605999946594238; read back and cast to float32 it is the same number.
    Other floats are kept as they are (a float64 result is practically never exactly a float32)."""
    with np.errstate(over="ignore"):
        single = np.float32(value)
    return float(str(single)) if float(single) == value else value


def claim(ctx: typer.Context, outputs: dict[str, Path | None], **kwargs: Any) -> Claim:
    """Check and lock the command's outputs now; they are released when the command ends."""
    return ctx.with_resource(claim_outputs(outputs, **kwargs))


def finite_or_null(value: Any) -> Any:
    """`value` as JSON should hold it: NaN and infinities as None, float32 results by their own digits."""
    if isinstance(value, float):
        return shortest(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


DEFAULT = TrainConfig()
BENCH_DEFAULT = BenchSettings()  # the Python API's defaults are the CLI's


def load_dataset(
    name: str, data_dir: Path | None, offline: bool, out: Reporter, user_data: Path | None = None
) -> datasets.Dataset:
    """A built-in dataset by name, or the user's --data (format-checked, no published checksum)."""
    if user_data is not None:
        ds = userdata.load_path(user_data, out.say)
        out.say(userdata.describe(ds))
        return ds
    datasets.check_name(name)
    with out.downloads():
        ds = datasets.load(name, data_dir, offline, out.download_progress, out.say)
    out.say(
        f"dataset: {ds.name} from {ds.source} ({len(ds.train_images):,} train, {len(ds.test_images):,} test images)"
    )
    if not ds.verified:
        out.say("note: no published checksum covers these files; they passed the format checks only")
    return ds


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether an option was set on the command line (or the environment), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether an option was typed on the command line (not set by the environment or left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@app.command("train")
def train_command(
    ctx: typer.Context,
    dataset: DatasetOpt = "auto",
    user_data: DataOpt = None,
    data_dir: DataDirOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    hidden: HiddenOpt = "16,16",
    optimizer: OptimizerOpt = DEFAULT.optimizer,
    lr: LrOpt = DEFAULT.lr,
    iterations: IterationsOpt = DEFAULT.iterations,
    batch_size: BatchOpt = None,
    dtype: DtypeOpt = DEFAULT.dtype,
    seed: SeedOpt = DEFAULT.seed,
    eval_every: EvalOpt = DEFAULT.eval_every,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result.")] = False,
    json_path: JsonOpt = None,
    checkpoint_path: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            parser=given_path,
            help="Save the run (the model, to evaluate, predict or resume) here: at the end, every "
            "--checkpoint-every steps, on Ctrl-C. Default: runs/<dataset>-<N>.npz, N one above the highest there; "
            "with --resume, the checkpoint resumed.",
        ),
    ] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Keep no model file.")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            parser=given_path,  # written back too
            help="Continue the run saved in this checkpoint, to the total of steps it was started with; "
            "a finished run needs --more N or --iterations N (the new total).",
        ),
    ] = None,
    more: Annotated[
        int | None, typer.Option("--more", help="With --resume: train this many steps more than the checkpoint has.")
    ] = None,
    history_path: Annotated[
        Path | None, typer.Option("--history", parser=given_path, help="Write the metrics per evaluation as CSV.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(parser=given_path, help="Draw loss and accuracy against step (PNG; needs matplotlib)."),
    ] = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
) -> None:
    """Train the network and report loss and accuracy, read from the output layer."""
    if no_save and (checkpoint_path or checkpoint_every):
        raise ConfigError(
            "--no-save keeps no model file: it cannot be combined with --checkpoint or --checkpoint-every"
        )
    # The checkpoint is written back to --resume unless --checkpoint says otherwise (or --no-save).
    ckpt_option = "--checkpoint" if checkpoint_path or not resume else "--resume"
    checkpoint_path = None if no_save else checkpoint_path or resume
    try:
        outputs = claim(
            ctx,
            {ckpt_option: checkpoint_path, "--json": json_path, "--history": history_path, "--plot": plot},
            inputs={"--resume": resume, "--data-dir": data_dir, "--data": user_data},
            updates={ckpt_option: "--resume"},
        )
    except OutputRefused as e:
        if ckpt_option == "--resume" and str(e).startswith("--resume"):
            e.hint = "give --checkpoint PATH to save the continued run elsewhere"
        raise
    options: dict[str, Any] = {"hidden": hidden, "optimizer": optimizer, "lr": lr, "iterations": iterations}
    options |= {"batch_size": batch_size, "dtype": dtype, "seed": seed, "eval_every": eval_every, "dataset": dataset}
    check_options(checkpoint_every=checkpoint_every, more=more)
    if more is not None and _given(ctx, "iterations"):
        raise ConfigError("give --more (steps to add) or --iterations (the new total), not both")
    saved = checkpoint.load(resume) if resume else None
    if saved is not None and resume:  # the checkpoint's settings, except those given on the command line
        previous = asdict(saved.config) | {"hidden": ",".join(map(str, saved.config.hidden)), "dataset": saved.dataset}
        options = {name: value if _given(ctx, name) else previous[name] for name, value in options.items()}
        options["iterations"] = resumed_total(saved, resume, options["iterations"], _given(ctx, "iterations"), more)
    elif more is not None:
        options["iterations"] = more  # a new run: "more" than nothing
    dataset = options.pop("dataset")
    config = TrainConfig(**(options | {"hidden": parse_hidden(options["hidden"])}))
    # Every option was checked when the config was made, before any data is read or process started.
    check_data_options(ctx, user_data, data_dir)
    if user_data is None and dataset not in datasets.DATASET_NAMES and saved is not None:
        raise ConfigError(f"{resume} was trained on your data '{dataset}': give it again with --data PATH")
    if user_data is not None and engine == "dask":
        raise ConfigError("--engine dask reads the built-in datasets only; train --data with --engine local")
    if plot:
        from gpunet.bench import plots

        plots.require(plot)
    if user_data is None:
        datasets.check_name(dataset)
    check_engine_options(ctx, engine, workers, scheduler)
    if engine == "dask" and config.batch_size is not None:
        raise ConfigError("--engine dask trains on the full batch: omit --batch-size")
    if engine == "dask" and dataset == "synthetic":
        raise ConfigError("--engine dask reads its shards from files on the workers: use mnist or fashion-mnist")
    dev = resolve_device(device)
    if user_data is None:  # the built-in datasets' sizes are known before reading them; --data's are checked after
        check_fits(config, datasets.layers_for(dataset, config.hidden), dev)
    out = Reporter(quiet)
    ds = load_dataset(dataset, data_dir, offline, out, user_data)
    outputs.check_inputs({"dataset file": ds.files})
    if dev.note:
        out.say(dev.note)
    if saved is not None and resume:  # refused before anything is built on the device or a cluster
        checkpoint.check_matches(saved, config, ds, resume)
    # another model is never replaced
    if checkpoint_path and ckpt_option == "--checkpoint" and outputs.existed.get(ckpt_option):
        checkpoint.check_replaceable(checkpoint_path, layer_sizes(config, ds), ds)
    trainer = sources.make_trainer(engine, config, ds, dev, workers, scheduler, out.say)
    if saved is not None:
        checkpoint.restore(trainer, saved)
        out.say(f"resuming from {resume} at step {saved.step}")
    # From here there is a state to save: until the command's last line, a signal only asks to stop.
    stop = signals.stop_requests_from_now()
    claimed = None  # the default model file, created empty to hold its name until it is written
    if checkpoint_path is None and not no_save:
        try:  # locked, then made: a run killed at any moment leaves nothing the next one cannot clean
            ckpt_option = "the model file"
            claimed = checkpoint_path = checkpoint.claim_run_path(ds.name, claim=outputs, option=ckpt_option)
        except BaseException:
            trainer.close()
            raise
    batch = "full batch" if config.batch_size is None else f"batches of {config.batch_size}"
    out.say(
        f"training {'-'.join(map(str, trainer.sizes))} with {config.optimizer} lr {config.lr:g}, {batch} "
        f"of {len(ds.train_images):,}, {config.dtype}, {config.iterations} steps on {dev.name} "
        f"({trainer.source.describe()})"
    )

    def still_there() -> str:
        """What the checkpoint path holds after a failed save."""
        if trainer.last_saved_step is not None:
            return f"{checkpoint_path} still holds the checkpoint of step {trainer.last_saved_step}"
        if outputs.existed.get(ckpt_option):
            step = f" (step {saved.step})" if saved is not None and ckpt_option == "--resume" else ""
            return f"the file already at {checkpoint_path}{step} is intact"
        return "no checkpoint was saved"

    def save(t: Trainer) -> None:
        assert checkpoint_path is not None  # the run is given save() only with a path
        try:
            checkpoint.save(checkpoint_path, t)
        except WriteFailed as e:
            if t.steps_done < config.iterations:  # a periodic save: say so now, training goes on
                stderr_line(f"warning: checkpoint of step {t.steps_done} not written ({e.reason}); {still_there()}")
            raise

    def keep_outputs(result: TrainResult, status: str) -> list[str]:
        """Whatever happened, the history and the summary are written, each on its own; returns the failed."""
        jobs: list[tuple[str, Path, Callable[[], None]]] = []
        if result.history:
            summary = {**result.summary(), "status": status, "dataset_source": ds.source, "version": __version__}
            title = f"{ds.name}, {'-'.join(map(str, trainer.sizes))}"
            jobs = asked_for(
                ("summary", json_path, lambda path: write_json(path, summary)),
                ("history", history_path, lambda path: write_history_csv(path, result.history)),
                ("curves", plot, lambda path: plot_history(result.history, path, title)),
            )
        # A signal now only waits (stop_requests_from_now): each file is finished first.
        return write_each(jobs, stderr_line)

    try:
        with out.training(config.iterations):
            result = trainer.run(out.record, out.step, save if checkpoint_path else None, checkpoint_every)
        if result.problem is not None:  # the outcome's line and exit code are its error's
            failed = keep_outputs(result, type(result.problem).__name__)
            named = ((json_path, "summary"), (history_path, "history"), (plot, "curves"))
            kept = [str(path) for path, what in named if path and result.history and what not in failed]
            hint = outcome_hint(
                result, trainer, checkpoint_path, no_save, still_there, bool(outputs.existed.get(ckpt_option))
            )
            if kept:  # the other outputs written, for the last line to say
                hint = "; ".join(filter(None, [hint, "also written: " + ", ".join(kept)]))
            result.problem.hint = hint
            raise result.problem
    finally:
        trainer.close()
        if claimed is not None and trainer.last_saved_step is None:
            claimed.unlink(missing_ok=True)  # nothing was saved: give the name back
    failed = keep_outputs(result, "completed")
    final = result.final
    out.result(
        f"test accuracy {final.test_accuracy:.4f} (train accuracy {final.train_accuracy:.4f}, "
        f"training loss {final.loss:.4f}) "
        f"after {final.iteration} steps, {result.train_seconds:.1f} s on {result.device}"
    )
    if checkpoint_path and trainer.save_error is not None:
        stderr_line(
            f"error: cannot write the checkpoint {checkpoint_path}: {trainer.save_error.reason}; {still_there()}"
        )
        failed.append("checkpoint")
    for path, what in ((json_path, "summary"), (history_path, "history"), (plot, "curves")):
        if path and what not in failed:
            out.say(f"{what} written to {path}")
    if no_save:
        out.say("model not saved (--no-save)")
    elif "checkpoint" not in failed:
        me = command_name()
        out.say(
            f"model saved to {checkpoint_path}; use it with: {me} evaluate {checkpoint_path}, "
            f"{me} predict {checkpoint_path} image.png, {me} train --resume {checkpoint_path} --more 100"
        )
    if stop:
        error = Interrupted(trainer.steps_done, stop[0])
        error.hint = "the run had completed; its outputs are written"
        raise error
    if failed:
        raise typer.Exit(1)


def asked_for(
    *jobs: tuple[str, Path | None, Callable[[Path], None]],
) -> list[tuple[str, Path, Callable[[], None]]]:
    """The outputs asked for (a path given) as write_each's jobs, each writer bound to its path."""
    return [(what, path, functools.partial(write, path)) for what, path, write in jobs if path]


def outcome_hint(
    result: TrainResult,
    trainer: Trainer,
    path: Path | None,
    no_save: bool,
    still_there: Callable[[], str],
    existed: bool = False,
) -> str:
    """What the line of a run that did not finish adds: where to resume a stopped run from, or the
    last good checkpoint of one that diverged or did not learn, or that nothing was saved (`existed`:
    a file was already at `path`, and is intact)."""
    if result.outcome in (Outcome.INTERRUPTED, Outcome.FAILED):
        if path and trainer.last_saved_step == trainer.steps_done:
            return f"checkpoint written to {path}; resume with: {program()} train --resume {path}"
        if path and trainer.save_error is not None:
            return f"the checkpoint could not be written ({trainer.save_error.reason}); {still_there()}"
        return "nothing saved" + (" (--no-save)" if no_save else "")
    if path and trainer.last_saved_step is not None:
        return f"the last good checkpoint (step {trainer.last_saved_step}) is {path}"
    if path and result.problem is not None:  # a bad state is never saved, and none was good before it
        return checkpoint.nothing_saved(result.problem, path if existed else None)
    return ""


def plot_history(history: list[Record], path: Path, title: str) -> None:
    from gpunet.bench import plots

    plots.plot_history(history, path, title=title)


def command_name() -> str:
    """How to type gpunet again (see gpunet.errors.program)."""
    return program()


def resumed_total(saved: checkpoint.Checkpoint, path: Path, iterations: int, given: bool, more: int | None) -> int:
    """The step a resumed run trains to; a run with nothing left to do is refused, saying how to continue."""
    how = f"continue with --more N (N more steps) or --iterations N (the new total, above {saved.step})"
    if more is not None:
        return saved.step + more
    if given and iterations <= saved.step:
        raise ConfigError(f"{path} is at step {saved.step}, so --iterations {iterations} leaves nothing to do; {how}")
    if not given and saved.step >= iterations:
        raise ConfigError(f"{path} has finished its {saved.step} steps; {how}")
    return iterations


def check_engine_options(ctx: typer.Context, engine: str, workers: int, scheduler: str | None) -> None:
    """--engine, --workers and --scheduler: each one given is used, or the command is refused at once."""
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown engine '{engine}': choose local or dask")
    if engine == "local":
        for name in ("workers", "scheduler"):
            if _given(ctx, name):
                raise ConfigError(f"--{name} is for --engine dask; the local engine uses this process's device")
        return
    if scheduler:
        if _given(ctx, "workers"):
            raise ConfigError("--workers sizes a local cluster; with --scheduler the cluster's own workers are used")
        return
    from gpunet.training.distributed import check_workers  # Dask itself is not imported for this

    check_workers(workers)


def check_data_options(ctx: typer.Context, user_data: Path | None, data_dir: Path | None) -> None:
    """--data names the data itself: --dataset and --data-dir, which look data up, cannot go with it."""
    if user_data is None:
        return
    if _given(ctx, "dataset"):
        raise ConfigError("--data and --dataset are alternatives: give one")
    if data_dir is not None:
        raise ConfigError("--data names the data itself; --data-dir is where built-in datasets are looked for")


def write_history_csv(path: Path, history: list[Record]) -> None:
    """The metrics of every evaluation as CSV, written atomically (raises WriteFailed)."""
    try:
        with atomic_file(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["iteration", "loss", "train_accuracy", "test_accuracy"])
            writer.writerows(astuple(r) for r in history)
    except OSError as e:
        raise WriteFailed(path, failure_reason(e)) from None


@app.command("bench")
def bench_command(
    ctx: typer.Context,
    backends: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated, from numpy, numpy-reference, cupy, torch-cpu, torch-cuda, sklearn; "
            "default: all that run here."
        ),
    ] = None,
    dataset: DatasetOpt = "fashion-mnist",
    user_data: DataOpt = None,
    data_dir: DataDirOpt = None,
    offline: OfflineOpt = False,
    hidden: HiddenOpt = "16,16",
    optimizer: OptimizerOpt = DEFAULT.optimizer,
    lr: LrOpt = DEFAULT.lr,
    iterations: IterationsOpt = DEFAULT.iterations,
    batch_size: BatchOpt = None,
    dtype: DtypeOpt = DEFAULT.dtype,
    seed: SeedOpt = DEFAULT.seed,
    eval_every: EvalOpt = DEFAULT.eval_every,
    target_accuracy: Annotated[
        float, typer.Option(help="Test accuracy that stops the time-to-target clock.")
    ] = BENCH_DEFAULT.target_accuracy,
    repeats: Annotated[int, typer.Option(help="Rounds of timed steps, pooled.")] = BENCH_DEFAULT.repeats,
    timed_steps: Annotated[
        int, typer.Option(help="Timed steps per round, after the warm-up.")
    ] = BENCH_DEFAULT.timed_steps,
    warmup: Annotated[int, typer.Option(help="Untimed steps before timing.")] = BENCH_DEFAULT.warmup,
    sweep: Annotated[
        bool, typer.Option(help="Also time steps as samples (7500-60000) and width (16-256) grow.")
    ] = False,
    json_path: JsonOpt = None,
    plot: Annotated[
        Path | None,
        typer.Option(parser=given_path, help="Save figures here (PNG); the sweep's get a -sweep suffix."),
    ] = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    dask_samples: Annotated[
        str, typer.Option(help="With --engine dask: training-set sizes to time (copies past 60,000 are distorted).")
    ] = "60000,1000000",
) -> None:
    """Train the same configuration on every backend; compare ms/step, time to target and accuracy."""
    from gpunet.bench import suite

    config = TrainConfig(parse_hidden(hidden), optimizer, lr, iterations, batch_size, dtype, seed, eval_every)
    settings = suite.BenchSettings(config, target_accuracy, warmup, timed_steps, repeats)
    check_data_options(ctx, user_data, data_dir)
    if user_data is None:  # a built-in dataset's sizes are known now; --data's once it is read
        check_fits(config, datasets.layers_for(dataset, config.hidden), resolve_device("cpu"))  # host memory
    if plot:
        from gpunet.bench import plots

        plots.require(plot)
    check_engine_options(ctx, engine, workers, scheduler)
    for name, wanted in (("backends", "local"), ("sweep", "local"), ("dask_samples", "dask")):
        if engine != wanted and _given(ctx, name):
            raise ConfigError(f"--{name.replace('_', '-')} is for --engine {wanted}")
    if engine == "dask" and user_data is not None:
        raise ConfigError("--engine dask reads the built-in datasets only; bench --data with --engine local")
    sweep_plot = plot.with_name(f"{plot.stem}-sweep{plot.suffix}") if plot and sweep else None
    outputs = claim(
        ctx,
        {"--json": json_path, "--plot": plot, "--plot (its -sweep figure)": sweep_plot},
        inputs={"--data-dir": data_dir, "--data": user_data},
    )
    if engine == "dask":
        return bench_dask_command(
            settings, dataset, data_dir, offline, workers, scheduler, dask_samples, json_path, outputs
        )
    chosen = named_backends(backends) if backends is not None else list(suite.BACKENDS)
    if backends is not None:  # asked for by name: a backend that cannot run is an error, not a footnote
        for b in chosen:
            reason = suite.unavailable(b, config)
            if reason:
                raise (ConfigError if b not in suite.BACKENDS else DeviceError)(f"backend {b}: {reason}")
    out = Reporter()
    ds = load_dataset(dataset, data_dir, offline, out, user_data)
    outputs.check_inputs({"dataset file": ds.files})
    check_fits(config, layer_sizes(config, ds), resolve_device("cpu"))  # host memory, for the data as it is
    report = suite.run_bench(settings, ds, chosen, out.say, progress=out)
    out.console.print(bench_table(report))
    for name, detail in report["agreement"].items():
        out.say(
            f"{name} vs {detail['versus']}: final weights differ by {detail['max_relative_weight_difference']:.1e} "
            f"(relative), test accuracy by {100 * detail['test_accuracy_difference']:+.2f} points"
        )
    if sweep:
        floors = {kind: suite.Floor(**f) for kind, f in report["floors"].items()}  # one floor per run
        report["sweep"] = suite.sweep(settings, ds, chosen, say=out.say, floors=floors)["sweep"]
        out.console.print(sweep_table(report["sweep"]))
    from gpunet.bench import plots

    jobs = asked_for(
        ("results", json_path, lambda path: write_json(path, report)),
        ("figure", plot, lambda path: plots.plot_bench(report, path)),
        ("sweep figure", sweep_plot, lambda path: plots.plot_sweep(report, path)),
    )
    failed = write_each(jobs, stderr_line)
    for what, path, _ in jobs:
        if path and what not in failed:
            out.say(f"{what} written to {path}")
    if failed:
        raise typer.Exit(1)


def named_backends(text: str) -> list[str]:
    """--backends as a list, in order; refused when it names none, has an empty entry or a repeat."""
    from gpunet.bench import suite

    names = [b.strip() for b in text.split(",")]
    if not any(names):
        raise ConfigError(
            f"--backends '{text}' names no backend: give some of {', '.join(suite.BACKENDS)}, "
            "or omit it for every one that runs here"
        )
    if "" in names:
        raise ConfigError(f"--backends '{text}' has an empty entry: separate the names by single commas")
    repeated = sorted({b for b in names if names.count(b) > 1})
    if repeated:
        raise ConfigError(f"--backends '{text}' names {', '.join(repeated)} more than once")
    return names


def bench_dask_command(
    settings: BenchSettings,
    dataset: str,
    data_dir: Path | None,
    offline: bool,
    workers: int,
    scheduler: str | None,
    dask_samples: str,
    json_path: Path | None,
    outputs: Claim,
) -> None:
    from gpunet.bench import suite
    from gpunet.training.distributed import bench_dask

    try:
        sizes = tuple(int(n) for n in dask_samples.split(","))
    except ValueError:
        raise ConfigError(f"--dask-samples takes comma-separated sizes, got '{dask_samples}'") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--dask-samples sizes must be at least 1, got '{dask_samples}'")
    if scheduler is None:  # a local cluster holds every shard in this machine's memory
        host = resolve_device("cpu")
        needed = max(sizes) * datasets.IMAGE_PIXELS * (1 + np.dtype(settings.config.dtype).itemsize)
        if needed > host.memory_bytes():
            raise ConfigError(
                f"--dask-samples {max(sizes):,}: the shards would need {byte_size(needed)} on a local cluster, "
                f"more than the {byte_size(host.memory_bytes())} of memory here"
            )
    out = Reporter()
    ds = load_dataset(dataset, data_dir, offline, out)
    outputs.check_inputs({"dataset file": ds.files})
    rows = bench_dask(settings.config, ds, ds.directory, workers, scheduler, sizes, timed_steps=10, say=out.say)
    table = Table(title=f"dask engine, {settings.config.dtype}, full batch")
    for column in ("engine", "workers", "samples", "ms/step", "slowest shard ms", "communication ms", "samples/s"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r in rows:
        table.add_row(
            r["engine"],
            str(r.get("workers", "")),
            f"{r['samples']:,}",
            f"{r['ms_per_step_median']:.1f}",
            f"{r['ms_compute_slowest_shard_median']:.1f}" if "workers" in r else "",
            f"{r['ms_communication_and_scheduling_median']:.1f}" if "workers" in r else "",
            f"{r['samples_per_s']:,.0f}",
        )
    out.console.print(table)
    if json_path:
        report = {"machine": suite.machine_info(), "config": {**asdict(settings.config), "dataset": ds.name}}
        write_json(json_path, {**report, "dask": rows})
        out.say(f"results written to {json_path}")


def bench_table(report: BenchReport) -> Table:
    config = report["config"]
    table = Table(  # the dataset's name may be a file's: text, never markup
        title=Text(
            printable(
                f"{config['dataset']}, {config['samples']:,} samples, {config['dtype']}, {config['iterations']} steps"
            )
        )
    )
    for column in (
        "backend",
        "ms/step (IQR)",
        "floor ms",
        "x floor",
        "X@W1 ms",
        "X.T@d1 ms",
        f"to {config['target_accuracy']:g}",
        "train",
        "test",
        "host MB",
        "device MB",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in report["results"]:
        to_target = (
            "not reached"
            if r["time_to_target_s"] is None
            else f"{r['time_to_target_s']:.2f} s (step {r['target_step']})"
        )
        device_mb = "" if r["peak_device_mb"] is None else f"{r['peak_device_mb']:.0f}"
        table.add_row(
            r["backend"],
            f"{r['ms_per_step_median']:.3f} ({r['ms_per_step_iqr']:.3f})",
            f"{r['floor_ms']:.3f}",
            f"{r['x_floor']:.1f}",
            *("" if ms is None else f"{ms:.3f}" for ms in (r["x_forward_ms_median"], r["x_gradient_ms_median"])),
            to_target,
            f"{r['train_accuracy']:.4f}",
            f"{r['test_accuracy']:.4f}",
            f"{r['peak_host_rss_mb']:.0f}",
            device_mb,
        )
    return table


def sweep_table(rows: list[SweepRow]) -> Table:
    table = Table(title="cost as the work grows")
    for column in ("backend", "samples", "hidden", "GFLOP/step", "ms/step", "floor ms", "x floor"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in rows:
        table.add_row(
            r["backend"],
            f"{r['samples']:,}",
            ",".join(map(str, r["hidden"])),
            f"{r['flops_per_step'] / 1e9:.2f}",
            f"{r['ms_per_step_median']:.3f}",
            f"{r['floor_ms']:.3f}",
            f"{r['x_floor']:.1f}",
        )
    return table


CheckpointArg = Annotated[
    Path, typer.Argument(help="A checkpoint written by gpunet train --checkpoint or MLPClassifier.save.")
]


def model_class_names(saved: checkpoint.Checkpoint) -> list[str]:
    """What each output unit stands for: the labels a Python fit recorded, else the dataset's names."""
    if saved.classes is not None:
        return [str(c) for c in saved.classes]
    return datasets.class_names(saved.dataset, saved.sizes[-1])


def check_model_fits_data(saved: checkpoint.Checkpoint, ds: datasets.Dataset, path: Path) -> None:
    """The data's rows and labels must fit the model's input and output layers."""
    features = ds.train_images.shape[1]
    if features != saved.sizes[0]:
        raise ConfigError(f"{path} takes {saved.sizes[0]} features per sample; {ds.name} has {features}")
    if ds.num_classes > saved.sizes[-1]:
        raise ConfigError(f"{path} tells {saved.sizes[-1]} classes apart; {ds.name} has {ds.num_classes}")


def load_model(path: Path, device: str) -> tuple[checkpoint.Checkpoint, Device, list[Any]]:
    """A checkpoint's parameters, on the device they will run on."""
    saved = checkpoint.load(path)
    dev = resolve_device(device)
    return saved, dev, [dev.asarray(p) for p in saved.params]


@app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    checkpoint_file: CheckpointArg,
    split: Annotated[str, typer.Option(help="test or train.")] = "test",
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Evaluate on this built-in dataset; default: the model's own.")
    ] = None,
    user_data: DataOpt = None,
    data_dir: DataDirOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    json_path: JsonOpt = None,
) -> None:
    """Loss, accuracy, per-class accuracy and the confusion matrix of a saved model."""
    check_options(split=split)
    check_data_options(ctx, user_data, data_dir)
    inputs = {"the checkpoint": checkpoint_file, "--data-dir": data_dir, "--data": user_data}
    outputs = claim(ctx, {"--json": json_path}, inputs=inputs)
    saved, dev, params = load_model(checkpoint_file, device)
    name = dataset or saved.dataset
    if user_data is None and name not in datasets.DATASET_NAMES:
        where = "in Python (gpunet.MLPClassifier)" if saved.dataset == "arrays" else f"on your data '{name}'"
        raise ConfigError(f"{checkpoint_file} was trained {where}: say what to evaluate it on with --data PATH")
    out = Reporter()
    ds = load_dataset(name, data_dir, offline, out, user_data)
    outputs.check_inputs({"dataset file": ds.files})
    chosen = user_data is not None or dataset is not None
    if ds.checksum != saved.dataset_checksum:
        if not chosen:
            raise checkpoint.CheckpointError(f"{checkpoint_file} was trained on other {ds.name} files than {ds.source}")
        out.say(f"note: the model was trained on other data ({saved.dataset}) than {ds.name}")
    ds = userdata.relabelled(ds, saved.classes, checkpoint_file)  # labels numbered as the model's units
    check_model_fits_data(saved, ds, checkpoint_file)
    images, labels = (ds.test_images, ds.test_labels) if split == "test" else (ds.train_images, ds.train_labels)
    names = model_class_names(saved)
    measured = evaluation.evaluate(params, images, labels, dev, saved.config.dtype, names)
    confusion, per_class = measured.confusion, measured.per_class_accuracy
    report = {
        "checkpoint": str(checkpoint_file),
        "step": saved.step,
        "dataset": ds.name,
        "split": split,
        "samples": measured.samples,
        "loss": measured.loss,
        "accuracy": measured.accuracy,
        "per_class_accuracy": dict(zip(names, per_class.tolist())),
        "confusion_matrix": confusion.tolist(),
    }
    out.say(
        f"{ds.name} {split} split, {len(labels):,} images, model of step {saved.step} on {dev.name}: "
        f"accuracy {report['accuracy']:.4f}, {split} loss {report['loss']:.4f}"
    )
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("true class")
    for i in range(len(names)):
        table.add_column(str(i), justify="right")
    table.add_column("accuracy", justify="right")
    for i, name in enumerate(names):  # a label is text, never markup
        table.add_row(Text(printable(f"{i} {name}")), *map(str, confusion[i]), f"{per_class[i]:.3f}")
    out.console.print(table)
    if json_path:
        write_json(json_path, report)
        out.say(f"results written to {json_path}")


@app.command("predict")
def predict_command(
    ctx: typer.Context,
    checkpoint_file: CheckpointArg,
    files: Annotated[list[Path], typer.Argument(help="PNG (or other pictures), .npy arrays or IDX image files.")],
    device: DeviceOpt = "auto",
    top: Annotated[int, typer.Option(help="How many of the most probable classes to show.")] = 3,
    json_path: JsonOpt = None,
    invert: Annotated[
        str,
        typer.Option(
            help="Make pictures light on dark, as MNIST is: auto inverts those whose border is mostly light "
            "(drawings on paper); yes or no for every picture."
        ),
    ] = "auto",
) -> None:
    """The class and probabilities a saved model gives each image."""
    check_options(top=top)
    check_invert(invert)
    claim(ctx, {"--json": json_path}, inputs={"the checkpoint": checkpoint_file, "image file": files})
    saved, dev, _ = load_model(checkpoint_file, device)
    fitted = from_checkpoint(saved, dev.name)  # the estimator's predict_proba is the one computation
    names = model_class_names(saved)
    predictions = []
    for path in files:
        # A model of a built-in dataset takes pictures; one of your own data, your kind of rows.
        pixels, labels = read_images(path, saved.sizes[0], saved.dataset in datasets.DATASET_NAMES, invert)
        probabilities = fitted.predict_proba(pixels)
        for label, p in zip(labels, probabilities):
            best = np.argsort(p)[::-1][:top]
            predictions.append({"image": label, "class": int(best[0]), "name": names[best[0]]})
            predictions[-1]["probabilities"] = dict(zip(names, map(float, p)))
            ranked = ", ".join(f"{names[i]} {p[i]:.3f}" for i in best)
            print(printable(f"{label}: {best[0]} {names[best[0]]}  ({ranked})"))  # names and labels: anyone's text
    if json_path:
        write_json(json_path, {"checkpoint": str(checkpoint_file), "predictions": predictions})


@app.command("doctor")
def doctor_command(
    ctx: typer.Context,
    dataset: DatasetOpt = "auto",
    user_data: DataOpt = None,
    data_dir: DataDirOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    hidden: HiddenOpt = "16,16",
    dtype: DtypeOpt = "float32",
    seed: SeedOpt = 0,
) -> None:
    """Check the inputs, initial loss, gradients, accuracy read-out and first steps; exit 1 if any fails."""
    config = TrainConfig(hidden=parse_hidden(hidden), dtype=dtype, seed=seed)
    if user_data is not None and (data_dir is not None or _from_command_line(ctx, "dataset")):
        raise ConfigError("--data names the data itself: give it without --dataset or --data-dir")
    dev = resolve_device(device)
    if user_data is None:  # a built-in dataset's sizes are known now; --data's once it is read
        check_fits(config, datasets.layers_for(dataset, config.hidden), dev)
    if user_data is not None:
        ds = userdata.load_path(user_data, say=lambda line: print(printable(line)))
        print(printable(userdata.describe(ds)))  # the file's name: anyone's text
    else:
        ds = datasets.load(dataset, data_dir, offline, say=print)
    check_fits(config, layer_sizes(config, ds), dev)
    if dev.note:
        print(dev.note)
    network = "-".join(map(str, layer_sizes(config, ds)))
    print(printable(f"checking {network} on {ds.name} ({len(ds.train_images):,} train images), {dtype} on {dev.name}"))
    checks = doctor.run_checks(ds, dev, config)
    for number, c in enumerate(checks, 1):
        line = f"{'PASS' if c.passed else 'FAIL'}  {number}. {c.name}  ({c.value})"
        print(line if c.passed or not c.detail else f"{line} — {c.detail}")
    failed = sum(not c.passed for c in checks)
    summary = f"{len(checks) - failed} passed" + (f", {failed} FAILED" if failed else "")
    print(f"{len(checks)} checks: {summary}")
    if failed:
        raise typer.Exit(1)


@app.command("devices")
def devices_command() -> None:
    """What can run here: numpy and its BLAS, cupy and each GPU, or why cuda cannot."""
    for name, detail in describe():
        print(f"{name:<8} {detail}")


@datasets_app.callback(invoke_without_command=True)
def datasets_command(ctx: typer.Context, data_dir: DataDirOpt = None) -> None:
    """List the datasets and where each was found (read and checked: what train would accept)."""
    if ctx.invoked_subcommand is not None:
        return
    problems = 0
    for spec in datasets.SPECS.values():
        try:
            found, searched = datasets.locate(spec, data_dir)
            if found is None:
                where = "not found; looked in " + ", ".join(map(str, searched))
            else:  # files present are not enough: train would refuse a corrupt or foreign one
                checked = "verified" if datasets.load_dir(spec, found).verified else "format-checked only"
                where = f"found in {found} ({checked})"
        except DatasetError as e:
            where = f"problem: {e}"
            problems += 1
        print(f"{spec.name:<14} {where}")
    print(f"{'synthetic':<14} generated on demand (10 classes, 28x28, 3,000 train / 1,000 test)")
    if problems:  # the listing is complete, but a script must be able to tell that something is wrong
        raise DatasetError(f"{problems} of {len(datasets.SPECS)} datasets have a problem (listed above)")


@datasets_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="mnist or fashion-mnist.")], data_dir: DataDirOpt = None
) -> None:
    """Fetch a dataset into the cache (if it is not found locally) and verify it."""
    if name not in datasets.SPECS:
        raise ConfigError(f"cannot download '{name}': choose one of {', '.join(datasets.SPECS)}")
    spec = datasets.SPECS[name]
    out = Reporter()
    found, _ = datasets.locate(spec, data_dir)
    if found is None:  # into --data-dir where given, else the cache
        with out.downloads():
            found = datasets.fetch(spec, out.download_progress, data_dir / spec.name if data_dir else None, out.say)
    ds = datasets.load_dir(spec, found)
    state = (
        "verified against published checksums" if ds.verified else "format-checked (no published checksum covers it)"
    )
    print(f"{spec.title} in {found}: {len(ds.train_images):,} train and {len(ds.test_images):,} test images, {state}")


def main() -> None:
    signals.for_the_process()  # until the exit: a late signal never changes the exit code the last line explains
    try:
        app()
    finally:
        signals.ignored_for_the_exit()
