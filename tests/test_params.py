"""Parameters: one table of constraints, errors in the caller's own names, nothing coerced."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import gpunet
from gpunet.cli.commands import app
from gpunet.training.train import TrainConfig

X = np.random.default_rng(0).random((40, 6), dtype=np.float32)
Y = np.arange(40) % 3


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"hidden": "64"}, "hidden must be a sequence of layer sizes"),  # once trained layers (6, 4)
        ({"hidden": (16.7,)}, "hidden must hold positive integers"),
        ({"hidden": True}, "hidden must be a sequence of layer sizes"),
        ({"hidden": (16, 0)}, "hidden must hold positive integers"),
        ({"iterations": 10.9}, "iterations must be an integer, got 10.9"),
        ({"iterations": True}, "iterations must be an integer, got True (a bool)"),
        ({"iterations": -1}, "iterations must be at least 0, got -1"),
        ({"eval_every": 0}, "eval_every must be at least 1, got 0"),
        ({"lr": "0.1"}, "lr must be a number, got '0.1' (a str)"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"lr": 0.0}, "lr must be above 0, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"optimizer": "sgd"}, "optimizer must be one of gd, momentum, adam, got 'sgd'"),
        ({"dtype": "float16"}, "dtype must be one of float32, float64, got 'float16'"),
        ({"seed": -1}, "seed must be at least 0, got -1"),
    ],
    ids=str,
)
def test_the_estimator_refuses_a_bad_parameter_in_python_names(given: dict, named: str) -> None:
    with pytest.raises(ValueError) as refused:
        gpunet.MLPClassifier(**({"iterations": 2} | given), device="cpu").fit(X, Y)
    assert str(refused.value).startswith(named)
    assert "--" not in str(refused.value)  # no command-line flag in a Python error


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--eval-every", "0"], "--eval-every must be at least 1, got 0"),
        (["--lr", "0"], "--lr must be above 0, got 0"),
        (["--hidden", "16,0"], "--hidden must hold positive integers"),
        (["--seed", "-3"], "--seed must be at least 0, got -3"),
    ],
)
def test_the_command_line_names_the_flag(args: list[str], named: str) -> None:
    for command in ("train", "doctor"):
        if command == "doctor" and args[0] not in ("--hidden", "--seed"):
            continue
        result = CliRunner().invoke(app, [command, "--dataset", "synthetic", "--device", "cpu", *args])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [f"error: {named}"] or result.output.strip().startswith(
            f"error: {named}"
        )


def test_values_of_the_right_kind_are_kept_as_given() -> None:
    config = TrainConfig(hidden=[32, np.int64(8)], iterations=np.int32(3), lr=1, seed=np.uint8(7))
    assert config.hidden == (32, 8) and type(config.iterations) is int and config.lr == 1.0 and config.seed == 7
    assert TrainConfig(hidden=64).hidden == (64,)  # one hidden layer, as scikit-learn reads an int
    assert TrainConfig(hidden=()).hidden == ()  # softmax regression


@pytest.mark.parametrize("edge", [{"hidden": (1,)}, {"lr": 1e-300}, {"iterations": 0}, {"batch_size": 1}])
def test_the_edges_themselves_are_allowed(edge: dict) -> None:
    TrainConfig(**edge)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--target-accuracy", "0"], "--target-accuracy must be above 0"),
        (["--target-accuracy", "1.01"], "--target-accuracy must be at most 1"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--timed-steps", "0"], "--timed-steps must be at least 1"),
        (["--warmup", "-1"], "--warmup must be at least 0"),
    ],
)
def test_bench_settings_name_their_flag(args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--dataset", "synthetic", "--backends", "numpy", *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(f"error: {named}")
