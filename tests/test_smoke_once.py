"""cuda's smoke test runs once per device and process, however often the device is resolved.

The bench, the estimator and each Dask task resolve the device again and again; a smoke test at each
resolve would cost a matmul, a sync and a kernel load every time. A stand-in cupy counts its probes
(its arrays are numpy's, so the device it yields computes); on a GPU the real one is resolved twice.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from gpunet.device.backend import resolve_device
from gpunet.errors import DeviceError
from tests.conftest import cuda_device


def counting_cupy(fails: bool = False) -> tuple[types.ModuleType, list[tuple[int, ...]]]:
    """A cupy with one device whose smoke test (a small matmul) is recorded, and fails if asked."""
    probes: list[tuple[int, ...]] = []

    def ones(shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        probes.append(shape)
        if fails:
            raise RuntimeError("NVRTCError: libnvrtc.so.13 cannot be loaded")
        return np.ones(shape, dtype)

    cupy = types.ModuleType("cupy")
    cupy.float32 = np.float32
    cupy.ones = ones
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=lambda index: types.SimpleNamespace(use=lambda: None),
    )
    return cupy, probes


def test_the_smoke_test_runs_once_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy, probes = counting_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    first = resolve_device("cuda")
    assert first.name == "cuda:0" and len(probes) == 1
    assert resolve_device("cuda:0") is first and resolve_device("auto") is first  # the same Device, not re-tested
    assert len(probes) == 1


def test_a_failed_smoke_test_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy, probes = counting_cupy(fails=True)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    for _ in range(3):
        with pytest.raises(DeviceError, match="cuda:0 failed a smoke test: RuntimeError: NVRTCError: libnvrtc"):
            resolve_device("cuda")
    assert resolve_device("auto").name == "cpu" and len(probes) == 1


@pytest.mark.gpu
def test_on_the_gpu_a_second_resolve_returns_the_tested_device() -> None:
    device = cuda_device()
    assert resolve_device(device.name) is device and resolve_device("cuda") is device
