"""Shared fixtures: the array namespaces every math test runs on, and the only two reasons a test may skip.

The rule: a test runs, or fails. Two marks are the exceptions, each skipped only where what it needs
cannot exist, with the reason given:

- `gpu`: needs a CUDA device; skipped only where none exists.
- `root`: mounts a file system (tmpfs); it runs as root (with the capability to mount) or with
  passwordless sudo, and is skipped for a contributor without either. Where $GPUNET_REQUIRE_ROOT is 1
  (CI, which runs as root: .ci/run) it fails instead of skipping, so that a CI without those powers
  cannot pass with those tests unrun. tests/test_conftest.py runs pytest both ways to hold this.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpunet.data.datasets import Dataset, synthetic
from gpunet.device.backend import Device, resolve_device
from gpunet.errors import DeviceError


def fashion_dir() -> str:
    """Fashion-MNIST for the tests: $GPUNET_DATA where set (a lent GPU machine has no Debian copy),
    directly or in its fashion-mnist/ folder, as gpunet looks there; else Debian's."""
    root = os.environ.get("GPUNET_DATA")
    if not root:
        return "/usr/share/datasets/fashion-mnist"
    folder = os.path.join(root, "fashion-mnist")
    return folder if os.path.isdir(folder) else root


FASHION_DIR = fashion_dir()


@functools.cache
def cuda_problem() -> str | None:
    """Why cuda cannot be used here (resolve_device's words), or None."""
    try:
        resolve_device("cuda")
    except DeviceError as e:
        return str(e)
    return None


def cuda_device() -> Device | None:
    return None if cuda_problem() else resolve_device("cuda")  # resolved once: the smoke test is cached


def gpu_hardware_present() -> bool:
    """An NVIDIA GPU is in this machine, whatever cupy makes of it (the driver's device files)."""
    return Path("/dev/nvidia0").exists() or any(Path("/proc/driver/nvidia/gpus").glob("*"))


def gpu_required() -> bool:
    """The run must have a working GPU: it asked for one (GPUNET_REQUIRE_GPU=1, which
    benchmarks/gpu_check.sh sets), or there is one in the machine."""
    return os.environ.get("GPUNET_REQUIRE_GPU") == "1" or gpu_hardware_present()


# The test tools only CPU tests use. A GPU machine's image may lack them (benchmarks/gpu_check.sh runs
# `pytest -m gpu tests` there): in a run of the gpu tests alone, a test module whose import fails for
# want of one of them is not collected, rather than an error that stops the run, and the run's summary
# names it. tests/test_gpu_check.py holds that the gpu tests collected with these tools missing are all
# of them, so this never leaves a gpu test out.
CPU_ONLY_TOOLS = frozenset({"array_api_strict", "hypothesis", "PIL", "sklearn"})
left_out: dict[str, str] = {}  # test module -> the CPU-only tool its import lacked


class GpuOnlyRunModule(pytest.Module):
    """A test module of a `-m gpu` run: one that needs a missing CPU-only tool to import is left out."""

    def collect(self) -> Any:
        try:
            return super().collect()
        except self.CollectError as e:
            cause = e.__cause__
            if not isinstance(cause, ModuleNotFoundError) or (cause.name or "").split(".")[0] not in CPU_ONLY_TOOLS:
                raise
            left_out[self.path.name] = str(cause.name).split(".")[0]
            return []


def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> pytest.Module | None:
    if parent.config.getoption("markexpr") != "gpu":
        return None
    return GpuOnlyRunModule.from_parent(parent, path=module_path)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, missing in sorted(left_out.items()):
        terminalreporter.write_line(f"not collected in this gpu-only run ({missing} is not installed): {name}")


REQUIRE_ROOT = "GPUNET_REQUIRE_ROOT"
CAP_SYS_ADMIN = 21  # the capability mount(2) needs (linux/capability.h)


@functools.cache
def privileged() -> bool:
    """Whether this process can mount file systems: it holds CAP_SYS_ADMIN (root does, unless a
    container or its parent took it away), or sudo lets it without a password."""
    try:
        with open("/proc/self/status") as status:
            effective = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        effective = 0
    if effective >> CAP_SYS_ADMIN & 1:
        return True
    if os.geteuid() == 0:
        return False  # root without the capability: sudo would not give it back
    try:
        return subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):  # no sudo here
        return False


def pytest_configure(config: pytest.Config) -> None:
    # A suite started under nohup ignores SIGHUP, one started in the background of a script (`cmd &`)
    # ignores SIGINT, and that ignoring passes on to every process the tests start; gpunet keeps an
    # ignored signal ignored, as it should. The tests of what the stop signals do need their defaults,
    # so they get them whatever started pytest (Python's own Ctrl-C handler for SIGINT).
    for signum, default in (
        (signal.SIGHUP, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, default)
    config.addinivalue_line(
        "markers",
        f"root: needs root or passwordless sudo (it mounts a tmpfs); skipped without, fails where ${REQUIRE_ROOT}=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # GPU tests are skipped only where no GPU exists and none was asked for. Where one is there or
    # required, cuda that does not work (a failed smoke test: no NVRTC, no CUDA headers, ...) fails
    # every gpu test with the reason: "21 skipped" and exit code 0 would pass a broken set-up.
    gpu_items = [item for item in items if "gpu" in item.keywords]
    problem = cuda_problem() if gpu_items else None
    if problem is None:
        return
    if gpu_required():
        asked = os.environ.get("GPUNET_REQUIRE_GPU") == "1"
        why = f"a GPU is {'required (GPUNET_REQUIRE_GPU=1)' if asked else 'in this machine'}, but cuda fails: {problem}"
        for item in gpu_items:
            item.add_marker(pytest.mark.gpu_unusable(why))
        return
    skip = pytest.mark.skip(reason=f"no CUDA device on this machine ({problem})")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    unusable = item.get_closest_marker("gpu_unusable")
    if unusable is not None:
        pytest.fail(unusable.args[0], pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Root tests run where root's powers are at hand; elsewhere they skip, except where they must run.
    if "root" not in item.keywords or privileged():
        return
    if os.environ.get(REQUIRE_ROOT) == "1":
        pytest.fail(f"${REQUIRE_ROOT}=1, but this run can neither mount nor use sudo: the root tests cannot run")
    pytest.skip("needs root or passwordless sudo (it mounts a tmpfs); CI runs it as root")


def strict_device() -> Device:
    import array_api_strict  # only the tests need it

    return Device("array-api-strict", array_api_strict)


def numpy_device() -> Device:
    return resolve_device("cpu")


@pytest.fixture(params=["numpy", "array-api-strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> Device:
    """Each backend the array math must run on unchanged."""
    if request.param == "numpy":
        return numpy_device()
    if request.param == "array-api-strict":
        return strict_device()
    return cuda_device()


# The float dtypes the math must keep, and how closely each agrees with a float64 reference computed in numpy:
# a float32 result carries ~1e-7 relative rounding per operation, summed over a few dozen terms here.
DTYPES = ("float32", "float64")
AGREEMENT = {"float32": 1e-4, "float64": 1e-10}
NAMESPACES = ("numpy", "array-api-strict", "cupy")


@pytest.fixture(
    params=[
        pytest.param((ns, dtype), id=f"{ns}-{dtype}", marks=[pytest.mark.gpu] if ns == "cupy" else [])
        for ns in NAMESPACES
        for dtype in DTYPES
    ]
)
def device_dtype(request: pytest.FixtureRequest) -> tuple[Device, str]:
    """Each backend × each float dtype: the math must run on every combination and keep the dtype
    (in the manner of scikit-learn's namespace × device × dtype combinations)."""
    namespace, dtype = request.param
    device = {"numpy": numpy_device, "array-api-strict": strict_device, "cupy": cuda_device}[namespace]()
    return device, dtype


@pytest.fixture(autouse=True)
def in_a_scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own empty directory: `gpunet train` keeps its model in ./runs by default."""
    monkeypatch.chdir(tmp_path)


def _gpunet_children() -> set[int]:
    """This process's children (from /proc) whose command line runs gpunet or a script of the tests."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == os.getpid() and ("gpunet" in command or "/tests/" in command):
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(autouse=True)
def no_gpunet_left_running() -> Any:
    """A test that fails while a long `gpunet train` it started runs (a signal that never came, a
    timeout) would leave the run going for hours, loading the machine under every later test: what a
    test started and left running is killed when it ends. Set up before the other fixtures of a test
    and torn down after them, so a fixture's own processes are stopped by that fixture first."""
    before = _gpunet_children()
    yield
    for pid in _gpunet_children() - before:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture(autouse=True)
def no_mutmut_statistics_in_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """For mutation/run.py: mutmut's first pass records which tests reach which function, and a child
    process started in the scratch directory cannot find mutmut's settings to record anything; it runs
    the code unmutated instead (this process still records its own calls)."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        monkeypatch.delenv("MUTANT_UNDER_TEST")


@pytest.fixture(scope="session")
def small() -> Dataset:
    """A small synthetic dataset: learnable in a few dozen steps, quick to train on."""
    return synthetic(n_train=600, n_test=200)


@pytest.fixture(scope="session")
def fashion() -> Dataset:
    """The real Fashion-MNIST (FASHION_DIR), read once: the learning tests' data."""
    from gpunet.data.datasets import load

    return load("fashion-mnist", data_dir=FASHION_DIR, offline=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture
def isolated_data(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty cache, no $GPUNET_DATA, and mirrors that refuse at once: nothing leaves the machine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNET_DATA", raising=False)
    monkeypatch.setenv("GPUNET_MIRRORS", "http://127.0.0.1:9/")
