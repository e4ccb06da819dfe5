"""A newcomer's first hour (issue 19, item 8): what a fresh clone shows in the first commands.

Each test goes through a public surface: the command line (typer's CliRunner, or a real process
where the terminal or the program's own name matters) or the Python API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def every_command() -> list[list[str]]:
    """The argument lists that reach each command's help: gpunet, each command, each subcommand."""
    import typer.main

    def walk(command, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("command", every_command(), ids=lambda c: " ".join(c) or "gpunet")
def test_help_names_values_as_a_command_line_does(command: list[str]) -> None:
    import re

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    # Typer's own notation: Python types in angle brackets, required arguments in braces.
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\]|[A-Za-z]+\[[^\]]*\])>", result.output), result.output
    assert not re.search(r"\{\w+\}", result.output), result.output
    assert re.search(r"--help\s+Show this message", result.output)  # a flag shows no value
    if command and command[0] == "predict":
        assert re.search(r"Usage: \S+ predict \[OPTIONS\] CHECKPOINT_FILE FILES\.\.\.\s", result.output)
        assert re.search(r"--top\s+INTEGER", result.output)


def test_a_missing_argument_is_named_as_the_help_names_it() -> None:
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: Missing argument 'CHECKPOINT_FILE'.")


def write_npz(path: Path, labels: np.ndarray | None = None, rows: int = 200) -> Path:
    """A small --data file: float features that a network can learn, and `labels` (0..2 by default)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8)).astype(np.float32)
    classes = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
    y = classes if labels is None else labels[classes]
    np.savez(path, x=x, y=y)
    return path


def test_a_data_file_names_its_runs_by_its_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "tab.npz")
    for n in (1, 2):
        result = runner.invoke(app, ["train", "--data", "tab.npz", "--iterations", "2", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert f"model saved to runs/tab-{n}.npz;" in result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tab-1.npz", "tab-2.npz"]


@pytest.mark.parametrize(
    ("backends", "text"),
    [
        (",,,", "names no backend"),
        ("", "names no backend"),
        (" , ", "names no backend"),
        ("numpy,,sklearn", "has an empty entry"),
        ("numpy,", "has an empty entry"),
        ("numpy,numpy", "names numpy more than once"),
        ("numpy, sklearn,numpy ", "names numpy more than once"),
    ],
)
def test_bench_refuses_a_backend_list_that_is_empty_or_repeats(backends: str, text: str) -> None:
    result = runner.invoke(app, ["bench", "--dataset", "synthetic", "--backends", backends])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --backends '{backends}' ") and text in lines[0], lines
    assert result.stdout == ""  # refused before any data is read or any table drawn


def test_json_holds_float32_results_by_their_shortest_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "synthetic", "--iterations", "20", "--device", "cpu", "--json", "r.json"]
    assert runner.invoke(app, [*args, "--checkpoint", "run.npz"]).exit_code == 0
    text = (tmp_path / "r.json").read_text()
    summary = json.loads(text)
    accuracy = summary["test_accuracy"]
    assert f'"test_accuracy": {np.float32(accuracy)!s},' in text  # as numpy prints the float32: 0.8606
    assert len(repr(accuracy)) <= 8 and np.float32(accuracy) == np.float32(summary["history"][-1]["test_accuracy"])
    assert all(len(repr(r["loss"])) <= 12 for r in summary["history"])  # float32: at most 9 digits
    assert summary["lr"] == 0.005 and summary["train_seconds"] > 0  # float64 values are kept as they are

    evaluated = runner.invoke(app, ["evaluate", "run.npz", "--device", "cpu", "--json", "e.json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert f"accuracy {report['accuracy']:.4f}" in evaluated.output and len(repr(report["accuracy"])) <= 8


def driver_version() -> int | None:
    """The NVIDIA driver's CUDA version as CUDA numbers it (0: no driver), or None without cupy."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy.cuda.runtime.driverGetVersion()


def test_no_nvidia_driver_is_named_so() -> None:
    """On a machine with cupy and no NVIDIA driver (CI's, with cupy-cuda13x from ./setup.sh --dev), the
    reason is the missing driver, not an "insufficient" one; elsewhere each command says what it sees."""
    devices = runner.invoke(app, ["devices"])
    cuda = runner.invoke(app, ["train", "--device", "cuda", "--dataset", "synthetic", "--no-save"])
    version = driver_version()
    if version == 0:
        expected = "CUDA is not usable: no NVIDIA driver is installed (cupy "
        assert f"cuda     unavailable: {expected}" in devices.output and "insufficient" not in devices.output
        assert cuda.exit_code == 1 and cuda.stderr.startswith(f"error: {expected}"), cuda.output
    elif version is None:
        assert "cupy, which is not installed" in devices.output and cuda.exit_code == 1
    else:  # a driver: the machine's devices are listed, or the reason names the driver's version or the device
        assert devices.exit_code == 0 and "no NVIDIA driver" not in devices.output + cuda.output


NO_CUPY = (
    "import sys; sys.modules['cupy'] = None\n"  # as on a machine without cupy
    "from gpunet.device.backend import resolve_device\n"
    "try:\n    resolve_device('cuda')\nexcept Exception as e:\n    print(e)\n"
)


def test_install_hints_name_setup_sh_in_a_checkout_and_pip_elsewhere(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    here = subprocess.run([sys.executable, "-c", NO_CUPY], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "install it with: ./setup.sh --cuda (for a CUDA 12 driver; --cuda13 for CUDA 13)" in here.stdout
    elsewhere = subprocess.run([sys.executable, "-c", NO_CUPY], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert f"install it with: {ROOT / 'setup.sh'} --cuda (for a CUDA 12" in elsewhere.stdout
    # The package alone, as a wheel installs it (no setup.sh beside it): pip's form.
    import shutil

    shutil.copytree(ROOT / "gpunet", tmp_path / "site" / "gpunet", ignore=shutil.ignore_patterns("__pycache__"))
    env["PYTHONPATH"] = str(tmp_path / "site")
    wheel = subprocess.run([sys.executable, "-c", NO_CUPY], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "install it with: pip install 'gpunet[cuda]' (for a CUDA 12" in wheel.stdout, wheel.stdout + wheel.stderr


def test_hints_name_gpunet_as_it_was_typed(tmp_path: Path) -> None:
    """Run as bin/gpunet (not on PATH), the saved-model line and the Ctrl-C line say bin/gpunet."""
    import signal

    script = tmp_path / "bin" / "gpunet"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nfrom gpunet.cli.commands import main\nmain()\n")
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bin/gpunet", "train", "--dataset", "synthetic", "--iterations", "2", "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bin/gpunet train --resume runs/synthetic-1.npz --more 100" in done.stdout.splitlines()[-1]

    args = ["train", "--dataset", "synthetic", "--iterations", "1000000", "--device", "cpu", "--checkpoint", "c.npz"]
    run = subprocess.Popen(
        ["bin/gpunet", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in run.stdout:
            if line.startswith("step"):  # training has started
                break
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130
    assert stderr.strip().endswith("checkpoint written to c.npz; resume with: bin/gpunet train --resume c.npz"), stderr


def on_a_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """What `gpunet ARGS` draws on a real terminal (a pty) `columns` wide, colour and cursor codes removed."""
    import fcntl
    import re
    import struct
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpunet", *args], cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program has closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0, screen.decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]", "", screen.decode(errors="replace"))


def test_the_progress_line_fits_80_columns_with_its_step_count_and_eta(tmp_path: Path) -> None:
    import re

    args = ["train", "--dataset", "synthetic", "--iterations", "1000", "--eval-every", "50", "--device", "cpu"]
    drawn = on_a_terminal([*args, "--no-save"], 80, tmp_path)
    frames = [line.rstrip() for line in re.split(r"[\r\n]", drawn) if re.match(r"\s*step\s+\d+/1000", line)]
    assert frames, drawn
    assert max(len(line) for line in frames) <= 80, frames
    # The step count, the metrics and the time remaining, whole (no ellipsis) in the last frame.
    last = (
        r"step\s+\d+/1000 \S+ (training )?loss [\d.]+  train( acc)? [\d.]+  test( acc)? [\d.]+ +(\d+:\d\d:\d\d|-:--:--)"
    )
    assert re.fullmatch(last, frames[-1]), frames[-1]
    wide = on_a_terminal([*args, "--no-save"], 160, tmp_path)
    assert re.search(
        r"training loss [\d.]+  train accuracy [\d.]+  test accuracy [\d.]+ +\d+:\d\d:\d\d +\d+:\d\d:\d\d", wide
    )


def test_plain_progress_lines_fit_80_columns(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--dataset", "synthetic", "--iterations", "20", "--device", "cpu", "--no-save"]
    )
    steps = [line for line in result.output.splitlines() if line.startswith("step")]
    assert len(steps) == 3 and max(map(len, steps)) <= 80, steps
    assert steps[-1].startswith("step 20/20  training loss ") and "train acc " in steps[-1] and "test acc " in steps[-1]
