"""The gpu marker's rule (tests/conftest.py), run for real: pytest in a subprocess on a tiny test file.

A gpu test is skipped only where no GPU exists and none was asked for. Where the machine has one,
or the run asks for one (GPUNET_REQUIRE_GPU=1, as benchmarks/gpu_check.sh does), cuda that does not
work fails every gpu test with its reason: a broken CUDA set-up must never pass as "21 skipped".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    pass

def test_on_the_cpu():
    pass
"""

# The project's hooks, with the device made broken (or working) and the hardware made present (or
# not) whatever this machine has, so each case runs alike on a CPU machine and on a GPU one.
CONFTEST = """
import numpy as np
import gpunet.device.backend as backend
from gpunet.errors import DeviceError
import tests.conftest as rules

def cuda(index):
    if {broken}:
        raise DeviceError("cuda:0 failed a smoke test: NVRTCError: libnvrtc.so.13 cannot be loaded")
    return backend.Device("cuda:0", backend.array_namespace(np.empty(0)))

backend._cuda = cuda
rules.gpu_hardware_present = lambda: {hardware}
from tests.conftest import pytest_collection_modifyitems, pytest_runtest_call
"""


def run(tmp_path: Path, *, broken: bool, hardware: bool, required: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.format(broken=broken, hardware=hardware))
    (tmp_path / "test_tiny.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu\n    gpu_unusable\n")
    env = {k: v for k, v in os.environ.items() if k != "GPUNET_REQUIRE_GPU"}
    env["PYTHONPATH"] = str(ROOT)
    if required:
        env["GPUNET_REQUIRE_GPU"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", "test_tiny.py"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("hardware", "required"), [(False, True), (True, False), (True, True)])
def test_a_broken_cuda_fails_the_gpu_tests_where_a_gpu_is_there_or_asked_for(
    tmp_path: Path, hardware: bool, required: bool
) -> None:
    done = run(tmp_path, broken=True, hardware=hardware, required=required)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("1 failed, 1 passed in")
    assert "cuda fails: cuda:0 failed a smoke test: NVRTCError" in done.stdout
    assert ("required (GPUNET_REQUIRE_GPU=1)" if required else "in this machine") in done.stdout


def test_without_a_gpu_and_not_asked_for_the_gpu_tests_are_skipped_with_the_reason(tmp_path: Path) -> None:
    done = run(tmp_path, broken=True, hardware=False, required=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("1 passed, 1 skipped in")
    assert "no CUDA device on this machine (cuda:0 failed a smoke test" in done.stdout


@pytest.mark.parametrize("required", [False, True])
def test_a_working_cuda_runs_the_gpu_tests(tmp_path: Path, required: bool) -> None:
    done = run(tmp_path, broken=False, hardware=True, required=required)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 passed in")
