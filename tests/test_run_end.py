"""Issue 12, class 2: a failure or a signal at the end of a run loses nothing.

Each output is written on its own and each failure reported in one line; the
result line is still printed and the exit code says something failed. Signals
during a save wait for it (real processes, real signals: tests/stop_in_write.py runs gpunet so
that it stops itself, SIGSTOP, inside the write the test names, and the signals sent to the stopped
process certainly land inside that write once it goes on, SIGCONT).
Temporary files of a killed process are removed by the next write to the same file.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from filesystems import fill, tmpfs
from typer.testing import CliRunner

from gpunet.cli import commands
from gpunet.cli.commands import app
from gpunet.files import outputs
from gpunet.training import checkpoint
from gpunet.training.train import Record
from tests.helpers import QUICK, error_lines

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def leftovers(directory: Path) -> list[str]:
    """Hidden files gpunet made and did not remove: temporary files and locks."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.root  # a real small file system, mounted
def test_each_output_at_the_end_is_written_on_its_own(tmp_path: Path) -> None:
    """A full disk under three of four outputs: one line each, the fourth written, the result printed."""
    with tmpfs(tmp_path / "full", "512k") as full:
        fill(full)
        outputs = ["--checkpoint", str(full / "c.npz"), "--json", str(full / "r.json"), "--plot", str(full / "p.png")]
        result = runner.invoke(app, [*QUICK, *outputs, "--history", str(tmp_path / "h.csv")])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert "test accuracy" in result.stdout and "history written to" in result.stdout
        lines = error_lines(result.stderr)
        assert len(lines) == 3, lines
        for what, name in (("summary", "r.json"), ("curves", "p.png"), ("checkpoint", "c.npz")):
            assert any(f"cannot write the {what} " in line and name in line for line in lines), lines
        assert all("no space left on device" in line for line in lines)
        assert "no checkpoint was saved" in lines[-1]
        assert sorted(os.listdir(full)) == ["filler"]
    assert (tmp_path / "h.csv").read_text().startswith("iteration,loss")


@pytest.mark.root  # a real small file system, mounted
def test_a_full_disk_at_the_end_says_the_previous_checkpoint_survived(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "1m") as full:
        c = full / "c.npz"
        assert runner.invoke(app, [*QUICK, "--checkpoint", str(c)]).exit_code == 0
        before = c.read_bytes()
        fill(full)
        summary = tmp_path / "r.json"
        result = runner.invoke(app, ["train", "--resume", str(c), "--iterations", "30", "--json", str(summary)])
        assert result.exit_code == 1, result.output
        assert "test accuracy" in result.stdout
        (line,) = error_lines(result.stderr)
        assert line.startswith(f"error: cannot write the checkpoint {c}: no space left on device")
        assert f"the file already at {c} (step 20) is intact" in line
        assert c.read_bytes() == before and checkpoint.load(c).step == 20
        assert json.loads(summary.read_text())["iterations"] == 30
        assert sorted(os.listdir(full)) == ["c.npz", "filler"]


@pytest.mark.root  # a real small file system, mounted
def test_failing_periodic_checkpoints_warn_and_training_goes_on(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "512k") as full:
        fill(full)
        args = [*QUICK, "--checkpoint", str(full / "c.npz"), "--checkpoint-every", "5", "--json", str(tmp_path / "r")]
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "test accuracy" in result.stdout and "summary written to" in result.stdout
    lines = error_lines(result.stderr)
    assert [line.split(" not written")[0] for line in lines[:3]] == [
        f"warning: checkpoint of step {n}" for n in (5, 10, 15)
    ]
    assert lines[3].startswith("error: cannot write the checkpoint") and len(lines) == 4


def test_the_history_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.csv"
    path.write_text("the previous history\n")
    history = [Record(0, 2.3, 0.1, 0.1), Record(10, 1.0, 0.5, 0.5)]

    class Broken:
        def __init__(self, f: object) -> None:
            self.f = f

        def writerow(self, row: object) -> None:
            self.f.write("iteration,loss\n")

        def writerows(self, rows: object) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(commands.csv, "writer", Broken)
    with pytest.raises(commands.WriteFailed, match="no space left on device"):
        commands.write_history_csv(path, history)
    assert path.read_text() == "the previous history\n" and os.listdir(tmp_path) == ["h.csv"]


STOP_IN_WRITE = str(Path(__file__).with_name("stop_in_write.py"))


def start_gpunet(tmp_path: Path, args: list[str], stop_in_write_to: str | None = None) -> subprocess.Popen:
    """`gpunet ARGS` in a process of its own; with `stop_in_write_to`, it stops itself in its first
    atomic write to a file of that name (see wait_until_stopped)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    gpunet = [sys.executable, STOP_IN_WRITE, stop_in_write_to] if stop_in_write_to else [sys.executable, "-m", "gpunet"]
    return subprocess.Popen([*gpunet, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def start_training(tmp_path: Path, *extra: str, stop_in_write_to: str | None = None) -> subprocess.Popen:
    args = ["train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "1000000", "--eval-every", "5"]
    proc = start_gpunet(tmp_path, [*args, *extra], stop_in_write_to)
    for line in proc.stdout:
        if line.startswith("step") and not line.split()[1].startswith("0/"):
            return proc  # the loop is running
    raise AssertionError(f"training never started: {proc.communicate()}")


def wait_until_stopped(proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until `proc` has stopped itself inside the write (it then waits for SIGCONT)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            assert os.WIFSTOPPED(status), f"gpunet ended (status {status}) before that write: {proc.communicate()}"
            return
        time.sleep(0.02)
    raise AssertionError(f"gpunet did not reach the write in {timeout_s} s")


def wait_for_temporary(directory: Path, target: str, timeout_s: float = 120) -> Path:
    """The temporary file of a write to `target` in progress."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in directory.iterdir() if p.name.startswith(f".{target}.") and p.name.endswith(".tmp")]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no temporary file for {target} appeared in {timeout_s} s")


@pytest.mark.parametrize(
    ("first", "then", "code", "name"),
    [
        (signal.SIGTERM, signal.SIGTERM, 143, "SIGTERM"),
        (signal.SIGINT, signal.SIGINT, 130, "Ctrl-C"),
        (signal.SIGHUP, signal.SIGTERM, 129, "SIGHUP"),
    ],
)
def test_a_second_signal_during_the_final_save_waits_for_it(
    tmp_path: Path, first: int, then: int, code: int, name: str
) -> None:
    c, summary = tmp_path / "c.npz", tmp_path / "r.json"
    proc = start_training(tmp_path, "--checkpoint", str(c), "--json", str(summary), stop_in_write_to="c.npz")
    proc.send_signal(first)  # stop: the loop ends, the final checkpoint is written
    wait_until_stopped(proc)  # in the middle of writing it
    wait_for_temporary(tmp_path, "c.npz")
    proc.send_signal(then)  # while it is being written
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)  # the save goes on, the signals arrive
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: interrupted by {name}") and f"checkpoint written to {c}" in line
    step = int(line.split("after step ")[1].split(";")[0])
    assert checkpoint.load(c).step == step > 0
    assert json.loads(summary.read_text())["status"] == "Interrupted"
    assert leftovers(tmp_path) == []


def test_sighup_is_treated_like_sigterm(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    proc = start_training(tmp_path, "--checkpoint", str(c))
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 129
    (line,) = error_lines(stderr)
    assert line.startswith("error: interrupted by SIGHUP") and "resume with: gpunet train --resume" in line
    assert checkpoint.load(c).step > 0 and leftovers(tmp_path) == []


def test_sigterm_outside_training_finishes_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    assert runner.invoke(app, [*QUICK, "--checkpoint", str(c)]).exit_code == 0
    out = tmp_path / "eval.json"
    proc = start_gpunet(tmp_path, ["evaluate", str(c), "--device", "cpu", "--json", str(out)], "eval.json")
    wait_until_stopped(proc)
    wait_for_temporary(tmp_path, "eval.json")
    proc.send_signal(signal.SIGTERM)  # while the file is being written (a second one would be the same signal, pending)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert error_lines(stderr) == [f"error: interrupted by SIGTERM; written before it stopped: {out}"]
    assert json.loads(out.read_text())["step"] == 20  # finished, complete, valid
    assert leftovers(tmp_path) == []


def test_kill_9_during_a_save_leaves_a_temporary_file_that_the_next_run_removes(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    proc = start_training(tmp_path, "--checkpoint", str(c), "--checkpoint-every", "5", stop_in_write_to="c.npz")
    wait_until_stopped(proc)  # in the first periodic save
    left = wait_for_temporary(tmp_path, "c.npz")
    proc.kill()
    proc.communicate()
    assert left.exists()
    result = runner.invoke(app, [*QUICK, "--checkpoint", str(c)])
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == [] and checkpoint.load(c).step == 20


def test_which_temporary_files_are_stale(tmp_path: Path) -> None:
    """Removed: gpunet's, for this target, of a process gone from this host or older than a day."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, me, host = int(dead.stdout), os.getpid(), outputs._HOST
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    names = {
        f".c.npz.{dead_pid}-{host}.abc123.tmp": False,  # its process has exited
        f".c.npz.{me}-{host}.def456.tmp": True,  # a write in progress
        f".c.npz.{me}-{host}.old999.tmp": False,  # alive, but two days old
        f".c.npz.{dead_pid}-{other_host}.xyz.tmp": True,  # another machine's (a shared disk)
        f".d.npz.{dead_pid}-{host}.abc123.tmp": True,  # another target's
        ".c.npz.notes": True,  # not gpunet's
    }
    for name in names:
        (tmp_path / name).write_text("x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / f".c.npz.{me}-{host}.old999.tmp", (two_days_ago, two_days_ago))
    outputs.remove_stale_temporaries(tmp_path / "c.npz")
    assert {name: (tmp_path / name).exists() for name in names} == names


def test_a_closed_terminal_saves_the_run_and_exits_129(tmp_path: Path) -> None:
    """A real terminal (a pty the run controls) closed under it: SIGHUP, then every write to it fails."""
    c, log = tmp_path / "c.npz", tmp_path / "stderr"
    master, slave = os.openpty()
    args = ["--dataset", "synthetic", "--device", "cpu", "--iterations", "100000000", "--eval-every", "5"]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpunet", "train", *args, "--checkpoint", str(c)],
            stdin=slave,
            stdout=slave,
            stderr=err,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TERM": "xterm"},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes its terminal
        )
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 120
    while b"loss " not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    assert b"loss " in seen, seen  # the progress bar shows an evaluation (its metrics fit 80 columns): the loop runs
    os.close(master)  # the terminal is gone
    assert proc.wait(timeout=120) == 129
    lines = error_lines(log.read_text())
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGHUP"), lines
    assert f"checkpoint written to {c}" in lines[0], lines
    assert checkpoint.load(c).step >= 0 and leftovers(tmp_path) == []
