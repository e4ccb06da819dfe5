"""`gpunet train` keeps its model by default, never over another run, and says how to use it;
resuming a run always says how far it goes, and a run with nothing left to do is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.training import checkpoint

runner = CliRunner()
QUICK = ["train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "10", "--eval-every", "5"]


def train(*args: str):
    result = runner.invoke(app, [*QUICK, *args])
    assert result.exit_code == 0, result.output
    return result


def test_the_model_is_kept_in_runs_by_default_and_the_last_line_says_how_to_use_it() -> None:
    first = train()
    path = Path("runs/synthetic-1.npz")
    assert checkpoint.load(path).step == 10
    last = first.output.strip().splitlines()[-1]
    assert last.startswith(f"model saved to {path}")
    assert f"gpunet evaluate {path}" in last and f"gpunet predict {path} image.png" in last

    evaluated = runner.invoke(app, ["evaluate", str(path), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "model of step 10" in evaluated.output


def test_a_new_run_never_replaces_an_earlier_one() -> None:
    train()
    before = Path("runs/synthetic-1.npz").read_bytes()
    Path("runs/synthetic-7.npz").write_bytes(b"someone else's file")
    second = train("--seed", "1")
    assert "model saved to runs/synthetic-8.npz" in second.output  # one above the highest: numbers never go back
    assert Path("runs/synthetic-1.npz").read_bytes() == before
    assert Path("runs/synthetic-7.npz").read_bytes() == b"someone else's file"
    assert checkpoint.load(Path("runs/synthetic-8.npz")).config.seed == 1


def test_no_save_keeps_nothing_and_says_so() -> None:
    result = train("--no-save")
    assert not Path("runs").exists()
    assert result.output.strip().splitlines()[-1] == "model not saved (--no-save)"


@pytest.mark.parametrize("other", [["--checkpoint", "x.npz"], ["--checkpoint-every", "5"]])
def test_no_save_with_a_checkpoint_option_is_refused(other: list[str]) -> None:
    result = runner.invoke(app, [*QUICK, "--no-save", *other])
    assert result.exit_code == 2 and result.stderr.startswith("error: --no-save")
    assert not Path("runs").exists() and not Path("x.npz").exists()


def test_a_runs_folder_that_cannot_hold_the_model_is_one_line_before_training() -> None:
    Path("runs").write_text("not a folder")
    result = runner.invoke(app, QUICK)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: runs: cannot keep the model there") and "--no-save" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "step" not in result.stdout
    assert Path("runs").read_text() == "not a folder"


def test_a_run_that_stops_before_saving_gives_its_name_back() -> None:
    result = runner.invoke(app, [*QUICK, "--optimizer", "gd", "--lr", "1e30"])
    assert result.exit_code == 3
    assert not Path("runs").exists()  # its placeholder and the runs/ it made are both gone


def test_resuming_a_finished_run_is_refused_with_how_to_continue() -> None:
    train("--checkpoint", "run.npz")
    before = Path("run.npz").read_bytes()
    for extra, text in (
        ([], "run.npz has finished its 10 steps"),
        (["--iterations", "10"], "run.npz is at step 10, so --iterations 10 leaves nothing to do"),
        (["--iterations", "5"], "run.npz is at step 10, so --iterations 5 leaves nothing to do"),
    ):
        result = runner.invoke(app, ["train", "--resume", "run.npz", *extra])
        assert result.exit_code == 2, result.output
        line = result.stderr.strip()
        assert line.startswith(f"error: {text}") and len(line.splitlines()) == 1
        assert "--more N" in line and "--iterations N (the new total, above 10)" in line
    assert Path("run.npz").read_bytes() == before


def test_more_continues_by_that_many_steps() -> None:
    train("--checkpoint", "run.npz")
    result = runner.invoke(app, ["train", "--resume", "run.npz", "--more", "5", "--json", "r.json"])
    assert result.exit_code == 0, result.output
    assert "resuming from run.npz at step 10" in result.output and "15 steps" in result.output
    assert checkpoint.load(Path("run.npz")).step == 15
    assert json.loads(Path("r.json").read_text())["iterations"] == 15
    again = runner.invoke(app, ["train", "--resume", "run.npz", "--iterations", "20"])
    assert again.exit_code == 0 and checkpoint.load(Path("run.npz")).step == 20


def test_more_and_iterations_together_are_refused() -> None:
    train("--checkpoint", "run.npz")
    result = runner.invoke(app, ["train", "--resume", "run.npz", "--more", "5", "--iterations", "30"])
    assert result.exit_code == 2 and "not both" in result.stderr
    zero = runner.invoke(app, ["train", "--resume", "run.npz", "--more", "0"])
    assert zero.exit_code == 2 and "--more must be at least 1" in zero.stderr


def test_an_interrupted_run_resumes_to_the_total_it_was_started_with(tmp_path: Path) -> None:
    from gpunet.data import datasets
    from gpunet.device.backend import resolve_device
    from gpunet.training.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(iterations=10, eval_every=5), datasets.synthetic(), resolve_device("cpu"))
    for _ in range(4):  # stopped part-way, as Ctrl-C would
        trainer.step()
    trainer.check_losses()
    trainer.history.append(trainer.evaluate())
    checkpoint.save(Path("run.npz"), trainer)
    result = runner.invoke(app, ["train", "--resume", "run.npz"])
    assert result.exit_code == 0, result.output
    assert "after 10 steps" in result.output and checkpoint.load(Path("run.npz")).step == 10


@pytest.mark.parametrize(
    ("typed", "on_path", "shown"),
    [
        (".venv/bin/gpunet", None, ".venv/bin/gpunet"),  # the README's one line: not on PATH, so as typed
        ("/opt/env/bin/gpunet", "/opt/env/bin/gpunet", "gpunet"),  # an activated environment
        (".venv/bin/gpunet", "/usr/local/bin/gpunet", ".venv/bin/gpunet"),  # another gpunet is on PATH
        ("/x/gpunet/__main__.py", None, "gpunet"),  # python -m gpunet
    ],
)
def test_the_hint_names_gpunet_as_it_can_be_typed_again(
    typed: str, on_path: str | None, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys

    from gpunet.cli.commands import command_name

    monkeypatch.setattr(sys, "argv", [typed])
    monkeypatch.setattr(shutil, "which", lambda name: on_path)
    assert command_name() == shown
