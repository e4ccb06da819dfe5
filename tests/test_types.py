"""The package type-checks: mypy, configured by [tool.mypy] in pyproject.toml, finds no error.

CI runs mypy too (.ci/run); this test holds the same in the README's test line, so that a change
which breaks a typed seam (a Trainer's gradient source, a bench trainer) fails where tests run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_error_in_the_package() -> None:
    # mypy comes with the dev extra (./setup.sh --dev). Its cache (.mypy_cache) is the one CI's own
    # mypy run has just filled, so here it checks again in seconds.
    done = subprocess.run(
        [sys.executable, "-m", "mypy"],  # the files and settings: [tool.mypy]
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout


def test_a_gradient_source_or_bench_trainer_that_lacks_a_method_is_a_type_error(tmp_path: Path) -> None:
    """The seams are checked: mypy names the Protocol an object fails, before anything runs."""
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            """
            from gpunet.bench.suite import close
            from gpunet.data.datasets import synthetic
            from gpunet.device.backend import resolve_device
            from gpunet.training.train import TrainConfig, Trainer


            class NoClose:
                def gradient(self, params: list) -> tuple:
                    return (0.0, params)

                def evaluate(self, params: list) -> tuple:
                    return (0.0, 1.0)

                def state(self) -> dict:
                    return {}

                def restore(self, state: dict) -> None:
                    pass

                def describe(self) -> str:
                    return "no close()"


            Trainer(TrainConfig(), synthetic(10, 10), resolve_device("cpu"), source=NoClose())
            close(NoClose())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(caller)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, done.stdout
    assert '"NoClose"' in errors[0] and '"GradientSource | None"' in errors[0]
    assert '"NoClose"' in errors[1] and '"BenchTrainer"' in errors[1]
