"""What several test files need, written once: `gpunet` run as a user runs it, and its one-line errors.

(The datasets shared by many tests are fixtures in tests/conftest.py: `small`, `rng`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gpunet.cli.commands import app
from gpunet.errors import DivergedError, GpunetError, Interrupted, NotLearning, StepFailed
from gpunet.training import checkpoint
from gpunet.training.train import Outcome, TrainResult

runner = CliRunner()

# A quick training run: the built-in synthetic dataset, 20 steps, on the CPU.
QUICK = ["train", "--dataset", "synthetic", "--iterations", "20", "--eval-every", "10", "--device", "cpu"]


def invoke(*args: object) -> Result:
    """`gpunet ARGS...` through the app the entry point runs; each argument as the shell passes it, a string."""
    return runner.invoke(app, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    """The lines a command wrote on stderr, blank ones left out."""
    return [line for line in stderr.splitlines() if line.strip()]


def one_line_error(result: Result, code: int | None = None, text: str = "", *more: str) -> str:
    """A failure as every one must look: a non-zero exit (`code`, where given), no traceback, and one line
    on stderr, `error: ...`, holding `text` (and each of `more`). Returns that line."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]
    for also in more:
        assert also in lines[0], lines[0]
    return lines[0]


def checkpoint_refusal(path: Path) -> str:
    """The message checkpoint.load refuses `path` with: one line."""
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@dataclass
class Ended:
    """A run that did not finish, read as pytest.raises' info is: `.value` is the problem, `.result` the run."""

    result: TrainResult
    value: GpunetError


_OUTCOMES = {DivergedError: Outcome.DIVERGED, NotLearning: Outcome.NOT_LEARNING}
_OUTCOMES |= {Interrupted: Outcome.INTERRUPTED, StepFailed: Outcome.FAILED}


def ended(result: TrainResult, problem: type[GpunetError]) -> Ended:
    """Trainer.run's result, which must be the outcome that `problem` describes (a `problem` returned, not raised)."""
    assert result.outcome is _OUTCOMES[problem] and isinstance(result.problem, problem), (result.outcome, problem)
    return Ended(result, result.problem)
