"""Device resolution and its errors. A stand-in cupy plays the broken GPU setups CI cannot have."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from gpunet.device import backend
from gpunet.device.backend import array_namespace, fusable, resolve_device, to_numpy
from gpunet.errors import DeviceError
from tests.conftest import cuda_device, strict_device


class CUDARuntimeError(RuntimeError):
    pass


def fake_cupy(count: int | None = 1, error: str = "") -> types.ModuleType:
    """A module shaped like cupy whose runtime reports `count` devices or raises `error`."""

    def get_device_count() -> int:
        if error:
            raise CUDARuntimeError(error)
        return count

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


@pytest.fixture
def no_gpu_here() -> None:
    if cuda_device() is not None:
        pytest.skip("this machine has a usable GPU")


def test_cpu() -> None:
    dev = resolve_device("cpu")
    assert dev.name == "cpu" and not dev.is_cuda and dev.note is None
    a = dev.asarray(np.arange(3.0))
    np.testing.assert_array_equal(to_numpy(a), [0.0, 1.0, 2.0])


@pytest.mark.parametrize(("spec", "text"), [("tpu", "unknown device 'tpu'"), ("cuda:x", "must be a number")])
def test_bad_device_strings(spec: str, text: str) -> None:
    with pytest.raises(DeviceError, match=text):
        resolve_device(spec)


def test_cuda_without_cupy_says_how_to_install(no_gpu_here, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(
        DeviceError, match=r"cupy, which is not installed; install it with: \S*setup\.sh --cuda \(for a CUDA 12"
    ):
        resolve_device("cuda")


def test_auto_falls_back_to_cpu_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    dev = resolve_device("auto")
    assert dev.name == "cpu"
    assert dev.note.startswith("device: cpu, since") and "not installed" in dev.note


@pytest.mark.parametrize(
    "error",
    [
        "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version",
        "cudaErrorNoDevice: no CUDA-capable device is detected",
    ],
)
def test_cuda_runtime_errors_are_named(monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=error))
    with pytest.raises(DeviceError) as caught:
        resolve_device("cuda")
    assert error.split(":")[0] in str(caught.value)
    assert "\n" not in str(caught.value)


def test_zero_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=0))
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_device_index_that_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=2))
    with pytest.raises(DeviceError, match=r"no device cuda:3: this machine has 2 \(cuda:0..cuda:1\)"):
        resolve_device("cuda:3")


def test_a_broken_cupy_import_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding(types.ModuleType):
        def __getattr__(self, name: str):
            raise OSError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "cupy", Exploding("cupy"))
    with pytest.raises(DeviceError, match="libcudart"):
        resolve_device("cuda")


def test_describe_has_a_cpu_row_with_blas_and_a_cuda_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error="cudaErrorNoDevice: no CUDA-capable device"))
    rows = dict(backend.describe())
    assert rows["cpu"].startswith(f"numpy {np.__version__}") and "BLAS" in rows["cpu"]
    assert rows["cuda"].startswith("unavailable") and "cudaErrorNoDevice" in rows["cuda"]


def test_to_numpy_reads_any_namespace() -> None:
    dev = strict_device()
    a = dev.asarray(np.array([[1.0, 2.0]]))
    out = to_numpy(a)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


@pytest.mark.gpu
def test_cuda_device_round_trip() -> None:
    dev = cuda_device()
    assert dev.is_cuda
    a = dev.asarray(np.arange(5, dtype=np.float32))
    assert type(a).__module__.startswith("cupy")
    dev.synchronize()
    np.testing.assert_array_equal(to_numpy(a * 2), np.arange(5) * 2)


@pytest.mark.parametrize("make_device", [resolve_device, lambda _: strict_device()], ids=["numpy", "strict"])
def test_fusable_functions_run_as_written_off_the_gpu(make_device) -> None:
    # Off cupy, a fusable function is the plain function, given its arrays' namespace (scalars ignored).
    device = make_device("cpu")
    seen = []

    @fusable
    def scaled_add(a, b, scale, xp):
        seen.append(xp)
        a += scale * b

    a = device.asarray(np.ones(3))
    scaled_add(a, device.asarray(np.arange(3.0)), 0.5)
    assert seen == [array_namespace(a)] and scaled_add.__name__ == "scaled_add"
    np.testing.assert_array_equal(to_numpy(a), [1.0, 1.5, 2.0])


def test_the_fused_path_traces_each_function_once_with_the_raw_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI has no GPU, so a stand-in cupy checks the wiring of the fused path: each fusable function is
    # compiled once under its own kernel name and traced with the raw module (numpy here, cupy on a
    # GPU), not the array-API layer, so it may only use what both raw modules have.
    from gpunet.core import model, optimizers
    from gpunet.training.initializers import he_normal

    compiled: list[str] = []

    def fuse(kernel_name: str):
        def compile_(fn):
            compiled.append(kernel_name)
            return fn

        return compile_

    stand_in = types.ModuleType("cupy")
    stand_in.fuse = fuse
    stand_in.__getattr__ = lambda name: getattr(np, name)  # everything else: numpy's own functions
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    kernels = [f for module in (model, optimizers) for f in vars(module).values() if isinstance(f, fusable)]
    assert len(kernels) == 8  # 5 in the model, 3 update rules
    for kernel in kernels:
        monkeypatch.setattr(kernel, "_fused", None)  # built afresh here, and reset afterwards
        monkeypatch.setattr(kernel, "_proven", False)

    rng = np.random.default_rng(0)
    params = he_normal([20, 8, 8, 4], seed=0)
    x = rng.random((50, 20), dtype=np.float32)
    targets = model.one_hot(rng.integers(0, 4, 50), 4, np.float32)
    plain = model.gradient_sums(params, x, targets)
    monkeypatch.setattr(backend, "is_cupy_namespace", lambda xp: True)
    for _ in range(2):
        fused = model.gradient_sums(params, x, targets)
        assert fused[0] == plain[0] and all(np.array_equal(a, b) for a, b in zip(fused[1], plain[1]))
    for name in optimizers.OPTIMIZERS:
        optimizers.make_optimizer(name, np.ones(5, np.float32), 0.1).step(
            np.ones(5, np.float32), np.ones(5, np.float32)
        )
    assert sorted(compiled) == sorted(f"gpunet_{k.__name__}" for k in kernels)  # each once, by name


def test_a_function_cupy_cannot_fuse_runs_unfused_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def fuse(kernel_name: str):
        def compile_(fn):
            def refuse(*args):
                calls.append(kernel_name)
                raise NotImplementedError("no such ufunc in fusion\nmore detail")

            return refuse

        return compile_

    calls: list[str] = []
    stand_in = types.ModuleType("cupy")
    stand_in.fuse = fuse
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    monkeypatch.setattr(backend, "is_cupy_namespace", lambda xp: True)
    monkeypatch.setattr(fusable, "fallbacks", {})

    @fusable
    def halve(a, xp):
        return a / 2

    with pytest.warns(UserWarning, match=r"could not fuse halve, which runs unfused \(NotImplementedError: no such"):
        np.testing.assert_array_equal(halve(np.arange(4.0)), [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(halve(np.arange(2.0)), [0.0, 0.5])  # no second attempt, no second warning
    assert calls == ["gpunet_halve"]
    assert fusable.fallbacks == {"halve": "NotImplementedError: no such ufunc in fusion"}


def test_unfused_on_cupy_the_function_still_gets_the_raw_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # array-api-compat's cupy sign() assigns through a boolean mask, which reads the mask's count back
    # to the host: a device sync per ReLU backward. So the unfused path (GPUNET_FUSE=0, or a function
    # cupy could not fuse) runs with the raw cupy module too, like the fused tracer.
    def fuse(kernel_name: str):
        def compile_(fn):
            def refuse(*args):
                raise NotImplementedError("cannot fuse")

            return refuse

        return compile_

    stand_in = types.ModuleType("cupy")
    stand_in.fuse = fuse
    monkeypatch.setitem(sys.modules, "cupy", stand_in)
    monkeypatch.setattr(backend, "is_cupy_namespace", lambda xp: True)
    monkeypatch.setattr(fusable, "fallbacks", {})
    seen = []

    @fusable
    def double(a, xp):
        seen.append(xp)
        return a * 2

    monkeypatch.setattr(fusable, "enabled", False)
    double(np.ones(2))
    monkeypatch.setattr(fusable, "enabled", True)
    with pytest.warns(UserWarning, match="could not fuse double"):
        double(np.ones(2))  # refused: from now on unfused
    np.testing.assert_array_equal(double(np.ones(2)), [2.0, 2.0])
    assert seen == [stand_in] * 3
