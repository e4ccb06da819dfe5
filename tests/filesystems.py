"""Test helpers: real small, full and read-only file systems (mount needs root, or sudo as CI's user has)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = os.geteuid() == 0


def run_privileged(*command: str) -> None:
    """mount, umount, chattr: as root here; through sudo where CI runs as a user with sudo."""
    prefix = [] if ROOT else ["sudo", "-n"]
    subprocess.run([*prefix, *command], check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A real, small file system mounted at `path` (to fill up, or mounted read-only)."""
    path.mkdir(exist_ok=True)
    run_privileged("mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", "mode=1777", *options]), "tmpfs", str(path))
    try:
        yield path
    finally:
        run_privileged("umount", str(path))


def fill(directory: Path) -> None:
    """Use up every free byte of the file system holding `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
