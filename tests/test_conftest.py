"""The suite's own rule (tests/conftest.py): a root test runs where it can, skips with its reason for a
contributor without root, and fails instead where $GPUNET_REQUIRE_ROOT=1 (CI), so it never hides.

Each case runs pytest in a process of its own on a one-test file that really mounts a tmpfs, with
tests/conftest.py as its plugin. "Without root" is a child process without the powers to mount: this
user where it is not root; where it is, root with every capability dropped (as a container can run it).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_ROOT, privileged

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import pytest
from tests.filesystems import tmpfs


@pytest.mark.root
def test_mounts_a_tmpfs(tmp_path):
    with tmpfs(tmp_path / "small", "64k") as small:
        (small / "x").write_text("written on a file system mounted for this test")
"""
PR_CAPBSET_DROP = 24  # linux/prctl.h


def drop_every_capability() -> None:
    """In the child, before it runs pytest: root keeps its uid but can no longer mount."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(64):  # those past the kernel's last one are refused (EINVAL): none to drop
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)


def run_probe(directory: Path, require_root: bool, powers: bool) -> subprocess.CompletedProcess:
    (directory / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_ROOT} | {"PYTHONPATH": str(REPO)}
    if require_root:
        env[REQUIRE_ROOT] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rs", "-q"]
    command += ["--rootdir", str(directory), "--basetemp", str(directory / "tmp"), str(directory / "test_probe.py")]
    dropped = {} if powers or os.geteuid() != 0 else {"preexec_fn": drop_every_capability}
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=300, **dropped)


def child_can_mount() -> bool:
    """Root's child has lost its capabilities; another user's has what this user has (sudo, say)."""
    return os.geteuid() != 0 and privileged()


def test_without_root_a_root_test_is_skipped_with_its_reason(tmp_path: Path) -> None:
    done = run_probe(tmp_path, require_root=False, powers=False)
    if child_can_mount():  # a contributor with passwordless sudo: it runs
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
        return
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "needs root or passwordless sudo" in done.stdout


def test_where_root_is_required_a_root_test_that_cannot_run_fails(tmp_path: Path) -> None:
    done = run_probe(tmp_path, require_root=True, powers=False)
    if child_can_mount():
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
        return
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert f"${REQUIRE_ROOT}=1" in done.stdout


@pytest.mark.root
@pytest.mark.parametrize("require_root", [False, True])
def test_with_root_a_root_test_runs(tmp_path: Path, require_root: bool) -> None:
    done = run_probe(tmp_path, require_root, powers=True)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_ci_requires_the_root_tests_to_run() -> None:
    """.ci/run runs the suite as root with the variable set: no root test can be skipped there."""
    assert f"export {REQUIRE_ROOT}=1" in (REPO / ".ci" / "run").read_text()
