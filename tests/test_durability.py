"""What only shows after a crash: data on disk before the rename, and a bug's traceback kept for its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpunet.files import outputs


def test_the_temporary_file_is_flushed_and_synced_before_it_is_renamed(tmp_path: Path, monkeypatch) -> None:
    """A rename that reaches the disk before the data leaves an empty or short file after a power cut."""
    events = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
    payload = b"x" * 100_000  # more than a buffer: nothing may still sit in Python's

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_size))  # what the kernel holds when asked to sync
        real_fsync(fd)

    def recording_replace(src, dst) -> None:
        events.append(("rename", Path(dst).name))
        real_replace(src, dst)

    def recording_link(src, dst) -> None:  # how a new name is claimed without replacing anything
        events.append(("rename", Path(dst).name))
        real_link(src, dst)

    monkeypatch.setattr(outputs.os, "fsync", recording_fsync)
    monkeypatch.setattr(outputs.os, "replace", recording_replace)
    monkeypatch.setattr(outputs.os, "link", recording_link)
    target = tmp_path / "out.bin"
    with outputs.atomic_file(target) as f:
        f.write(payload)
        f.write(b"tail")  # still in the buffer until flushed
    assert events[:2] == [("fsync", len(payload) + 4), ("rename", "out.bin")]
    assert target.read_bytes() == payload + b"tail"


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), outputs.atomic_file(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_an_unexpected_error_keeps_its_traceback(tmp_path: Path) -> None:
    """Expected failures are one line; a bug is not one of them: its traceback is what a bug report needs."""
    program = (
        "import sys\n"
        "from gpunet.cli import commands\n"
        "from gpunet.training import train\n"
        "def a_bug(*args, **kwargs):\n"
        "    raise ZeroDivisionError('a bug deep in the loop')\n"
        "train.Trainer.run = a_bug\n"
        "sys.argv = ['gpunet', 'train', '--dataset', 'synthetic', '--device', 'cpu', '--iterations', '2']\n"
        "commands.main()\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "in a_bug" in done.stderr and "ZeroDivisionError: a bug deep in the loop" in done.stderr


def test_the_umask_is_read_without_being_changed() -> None:
    previous = os.umask(0o027)
    try:
        assert outputs._read_umask() == 0o027
        assert os.umask(0o027) == 0o027  # and left as it was
    finally:
        os.umask(previous)


def test_a_written_file_has_the_usual_permissions_not_the_temporary_files(tmp_path: Path, monkeypatch) -> None:
    """mkstemp makes a private file; what lands under the real name gets 0o666 less the umask, like open()."""
    for umask in (0o022, 0o077):
        monkeypatch.setattr(outputs, "UMASK", umask)
        target = tmp_path / f"out-{umask:o}.bin"
        with outputs.atomic_file(target) as f:
            f.write(b"data")
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask
