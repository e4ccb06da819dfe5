"""Issue 20, class 9 (settings): a malformed GPUNET_* variable is one line and exit code 2, never a traceback.

Every GPUNET_* variable is read in gpunet/files/environment.py; the command line
reads them all before any work, the Python API where each is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpunet
from gpunet.device import backend
from gpunet.errors import ConfigError
from gpunet.files import environment

QUICK = ["train", "--dataset", "synthetic", "--iterations", "2", "--device", "cpu", "--no-save"]


def gpunet_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache"), "PYTHONPATH": str(Path(gpunet.__file__).parents[1])}
    full.pop("GPUNET_MIRRORS", None)
    return subprocess.run(
        [sys.executable, "-m", "gpunet", *args],
        env={**full, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


MALFORMED = [
    ("GPUNET_MIRRORS", "http://[::1", "'http://[::1' is not a URL (Invalid IPv6 URL)"),  # the example
    ("GPUNET_MIRRORS", "ftp://example.org/mnist/", "is not an http:// or https:// URL"),
    ("GPUNET_MIRRORS", "http://example.org:port/", "is not a URL (Port could not be cast"),
    ("GPUNET_MIRRORS", " , ,", "give comma-separated http:// or https:// base URLs"),
    ("GPUNET_MIRRORS", "https:///no-host/", "is not an http:// or https:// URL"),
    ("GPUNET_FUSE", "yes", "give 1 (fuse the elementwise steps on cupy, the default) or 0"),
    ("GPUNET_CPU_ENGINE", "Numba", "give numba (the compiled CPU kernels, the default where they can run)"),
]


@pytest.mark.parametrize(("name", "value", "text"), MALFORMED)
def test_a_malformed_setting_is_one_line_before_any_work(tmp_path: Path, name: str, value: str, text: str) -> None:
    done = gpunet_cli([*QUICK, "--json", "r.json"], {name: value}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "step" not in done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: ${name} is {value!r}: ") and text in line, line
    assert sorted(os.listdir(tmp_path)) == [], "nothing was written, not even a lock"


@pytest.mark.parametrize(("name", "value", "text"), MALFORMED)
def test_the_python_api_raises_a_value_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, text: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=rf"^\${name} is ") as caught:
        environment.check_all()
    assert isinstance(caught.value, ValueError) and text in str(caught.value)


def test_a_malformed_mirror_list_fails_the_download_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the list is used: gpunet.load_dataset raises before any connection is tried."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("GPUNET_DATA", raising=False)
    monkeypatch.setenv("GPUNET_MIRRORS", "http://[::1")
    with pytest.raises(ConfigError, match=r"^\$GPUNET_MIRRORS is 'http://\[::1': "):
        gpunet.load_dataset("mnist")
    assert list(tmp_path.rglob("*")) == []  # no download was started


def test_well_formed_settings_are_read_as_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in environment.NAMES:
        monkeypatch.delenv(name, raising=False)
    assert (environment.data_dir(), environment.mirrors(), environment.fuse()) == (
        None,
        None,
        True,
    )
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path))
    monkeypatch.setenv("GPUNET_MIRRORS", " http://a/, ,https://[::1]:8080/b/ ")
    monkeypatch.setenv("GPUNET_FUSE", "0")
    assert environment.data_dir() == tmp_path
    assert environment.mirrors() == ("http://a/", "https://[::1]:8080/b/")
    assert environment.fuse() is False
    monkeypatch.setenv("GPUNET_FUSE", "")  # empty: unset, the default
    assert environment.fuse() is True


def test_fusion_reads_its_setting_when_first_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read lazily: a malformed GPUNET_FUSE cannot make `import gpunet` fail with a traceback."""
    monkeypatch.setenv("GPUNET_FUSE", "maybe")
    done = subprocess.run([sys.executable, "-c", "import gpunet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert backend.fusable.enabled in (None, True, False)  # None until a cupy step reads it
