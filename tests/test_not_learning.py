"""A run that blew up is reported as not learning (exit 3), by one rule that every front end shares."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.errors import NotLearning
from gpunet.training.train import Record, TrainConfig, Trainer, learning_failure
from tests.helpers import ended

LN10 = math.log(10)


def history(*points: tuple[int, float, float]) -> list[Record]:
    return [Record(step, loss, accuracy, accuracy) for step, loss, accuracy in points]


def test_a_loss_that_ends_far_above_its_start_is_not_learning() -> None:
    why = learning_failure(history((0, LN10, 0.07), (10, 38.9, 0.1), (20, 38.9, 0.3)), 10, 50.0, took_off_at=2)
    assert why is not None
    assert "went from 2.303 to 38.9" in why and "took off at step 2" in why and "--lr 5 " in why


def test_chance_accuracy_after_a_blow_up_is_not_learning() -> None:
    # Every ReLU died: the loss is back near ln 10, the accuracy at chance.
    why = learning_failure(history((0, LN10, 0.07), (10, 9.0, 0.1), (20, 2.301, 0.1)), 10, 1.0)
    assert why is not None
    assert "chance level for 10 classes" in why and "took off at step 10" in why and "--lr 0.1 " in why


@pytest.mark.parametrize(
    "points",
    [
        [(0, LN10, 0.07), (10, 2.30, 0.09), (20, 2.29, 0.11)],  # a slow learner: a small learning rate, not a failure
        [(0, LN10, 0.07), (10, 3.0, 0.5), (20, 0.5, 0.85)],  # a bump on the way down
        [(0, LN10, 0.07)],  # nothing trained
    ],
)
def test_runs_that_learn_or_merely_learn_slowly_pass(points) -> None:
    assert learning_failure(history(*points), 10, 0.01) is None


def test_the_trainer_applies_the_rule_and_names_the_step_from_its_per_step_losses() -> None:
    config = TrainConfig(optimizer="gd", lr=50.0, iterations=40, eval_every=20)
    trainer = Trainer(config, datasets.synthetic(), resolve_device("cpu"))
    saved = []
    caught = ended(trainer.run(save=lambda t: saved.append(t.steps_done)), NotLearning)
    assert caught.value.exit_code == 3
    assert trainer.took_off_at is not None and trainer.took_off_at < 20  # from the per-step losses, not evaluations
    assert f"took off at step {trainer.took_off_at}" in str(caught.value)
    assert caught.result.final.iteration == 40
    assert saved == []  # like a diverged state, a blown-up one is not saved


def test_cli_lr_50_exits_3_names_the_step_and_suggests_a_rate() -> None:
    args = ["train", "--dataset", "synthetic", "--device", "cpu", "--optimizer", "gd", "--lr", "50"]
    result = CliRunner().invoke(app, [*args, "--iterations", "60", "--json", "r.json"])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not learning: the training loss went from 2.306 to ")
    assert "took off at step " in lines[0] and "--lr 5 " in lines[0] and "gpunet doctor" in lines[0]
    assert json.loads(Path("r.json").read_text())["status"] == "NotLearning"
    assert not Path("runs").exists()  # nothing saved: the claimed name and the runs/ it made given back


def test_a_healthy_run_is_unaffected() -> None:
    result = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "20"])
    assert result.exit_code == 0, result.output
