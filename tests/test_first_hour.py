"""A newcomer's first hour (issue 19, item 8): what a fresh clone shows in the first commands.

Each test goes through a public surface: the command line (typer's CliRunner, or a real process
where the terminal or the program's own name matters) or the Python API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunet.cli.commands import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def gpunet(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The real program, as `python -m gpunet` runs it."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gpunet", *args], capture_output=True, text=True, env=environment, timeout=300, **kwargs
    )


def test_bare_gpunet_prints_its_help_and_succeeds() -> None:
    done = gpunet()
    assert done.returncode == 0, done.stderr
    assert "Usage: gpunet" in done.stdout and "train" in done.stdout
    assert done.stderr == ""
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "error" not in result.output
