"""Device choice, resolved once at the edge: the only module that imports cupy.

Everything else takes arrays and asks `array_namespace(x)` for the functions
that work on them, so the same math runs on numpy, cupy or array-api-strict.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import array_api_compat
import numpy as np
from array_api_compat import is_cupy_array, is_cupy_namespace, is_numpy_array, is_numpy_namespace

from gpunet.errors import DeviceError, install_hint
from gpunet.files import environment

__all__ = [
    "Device", "SecondTracerRefused", "array_namespace", "blas_info", "describe", "explicit_scalars", "fusable",
    "matmul_into", "resolve_device", "second_tracer_tracing", "signature", "to_numpy",
]  # fmt: skip


# An array on some device: numpy, cupy or array-api-strict (or whatever array_namespace accepts).
# They share no base class and cupy ships no type stubs, so to the type checker it is Any; the
# alias names the role, once, for every module that takes or returns arrays.
Array: TypeAlias = Any

_namespaces: dict[type, Any] = {}


def array_namespace(a: Any) -> Any:
    """The array API namespace of `a` (array_api_compat's), remembered per array type.

    The math asks this on every call; array_api_compat takes 2-5 us to answer,
    which is a tenth of a GPU step's launch budget spent on the same question.
    """
    xp = _namespaces.get(type(a))
    if xp is None:
        xp = _namespaces[type(a)] = array_api_compat.array_namespace(a)
    return xp


@dataclass(frozen=True)
class Device:
    """Where arrays live: `name` is "cpu" or "cuda:N"; `xp` creates arrays there."""

    name: str
    xp: Any
    note: str | None = None  # why `auto` chose this device, shown to the user

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    def asarray(self, host: np.ndarray) -> Any:
        """Host -> device (a copy on the GPU, a no-op view on the CPU)."""
        return self.xp.asarray(host)

    def synchronize(self) -> None:
        """Wait for queued device work, so a clock read afterwards is honest."""
        if self.is_cuda:
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def reset_memory_peak(self) -> None:
        """Return cached GPU blocks, so `memory_peak_bytes` counts what comes next."""
        if self.is_cuda:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()

    def memory_bytes(self) -> int:
        """All the memory of the device: the GPU's, or the machine's RAM."""
        if self.is_cuda:
            import cupy

            return int(cupy.cuda.runtime.memGetInfo()[1])
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def memory_peak_bytes(self) -> int | None:
        """GPU memory held by cupy's pool (it keeps freed blocks, so this is its high-water mark)."""
        if not self.is_cuda:
            return None
        import cupy

        return int(cupy.get_default_memory_pool().total_bytes())


def to_numpy(a: Any) -> np.ndarray:
    """Device -> host. Used only at the edges: metrics, checkpoints, results."""
    if is_numpy_array(a):
        return a
    if is_cupy_array(a):
        return a.get()
    return np.from_dlpack(a)


class fusable:  # lower case: it is used as a decorator
    """A function of arrays that runs as one fused kernel on cupy, and as written elsewhere.

    The decorated function takes its arrays and scalars positionally and the
    namespace as `xp=`; it may use operators, elementwise functions, in-place
    updates of its arguments and a final reduction, which is what `cupy.fuse`
    can compile into a single kernel. A GPU step is bound by launches, not by
    arithmetic: the dozen operations of an Adam update are one launch instead
    of twelve. On numpy and array-api-strict the function runs operation by
    operation, so its CPU results are exactly those of the unfused code, and
    `tests/test_gpu.py` checks the fused kernels against it. On cupy, `xp` is
    the raw cupy module, fused or not: the body may only use what both raw
    cupy and the array API have.

    The rule for its body: no arithmetic between two scalars (Python numbers
    or scalar arguments), such as `(1 - beta) * g`. cupy's fusion tracer types
    such an operation itself and picks float16, silently, in float32 and
    float64 runs alike; compute the coefficient on the host and pass it in.
    An operation between an array and a scalar is fine: the scalar is cast to
    the array's dtype. `tests/test_kernels.py` traces every fusable function
    with cupy's tracer, without a GPU, and enforces this.

    Scalar arguments are given the arrays' float dtype before the call
    (`explicit_scalars`): a numpy float64 scalar is weak in cupy's kernels
    (cast to float32 at each operation) but strong in numpy 2 (it would make
    float32 work float64), so left alone the two backends would compute in
    different precisions.

    If cupy's first fusion tracer fails (for a dtype or ndim it was not
    checked with, say), `cupy.fuse` switches the function to its second
    implementation (cupy/_core/new_fusion) for good, without a word: another
    kernel than the one tests/test_kernels.py checked. That switch is refused
    here: the function runs unfused from then on, recorded in `second_tracer`
    and `fallbacks` and warned about once, naming it.
    """

    # $GPUNET_FUSE=0 turns fusion off (benchmarks compare fused and unfused steps); None: not read yet.
    enabled: ClassVar[bool | None] = None
    fallbacks: ClassVar[dict[str, str]] = {}  # function name -> why cupy could not fuse it
    second_tracer: ClassVar[dict[str, str]] = {}  # function name -> what cupy.fuse runs it with instead

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._fused: Any = None  # None: not built yet; False: cupy could not fuse it
        self._proven = False  # the fused kernel has run once

    def __call__(self, *args: Any) -> Any:
        xp = array_namespace(next(a for a in args if hasattr(a, "shape")))
        args = explicit_scalars(args, xp)
        if not is_cupy_namespace(xp):
            return self.fn(*args, xp=xp)
        import cupy

        if fusable.enabled is None:
            fusable.enabled = environment.fuse()
        if fusable.enabled and self._kernel() is not False:
            try:  # a first call traces and compiles; nothing has run on the device if that fails
                result = self._fused(*args)
            except SecondTracerRefused as e:  # new arguments (another dtype or ndim) the first tracer refused
                self._refuse_second_tracer(e, args)
            except Exception as e:
                if self._proven:  # the kernel has run before: this is the device's error, not fusion's
                    raise
                self._give_up(e)
            else:
                self._proven = True
                if getattr(self._fused, "new_fusion", None) is not None:  # a cupy the guard cannot see
                    self._refuse_second_tracer(SecondTracerRefused("it ran with new_fusion once"), args)
                return result
        # Unfused, still with the raw module, as the tracer has it: array-api-compat's
        # cupy sign() assigns through a boolean mask, which reads the mask's count back
        # to the host, a device sync in every ReLU backward.
        return self.fn(*args, xp=cupy)

    def _kernel(self) -> Any:
        if self._fused is None:
            import cupy

            fn = self.fn

            def with_cupy(*args: Any) -> Any:
                if second_tracer_tracing():  # checked before it traces, so its kernel never runs
                    raise SecondTracerRefused(f"cupy.fuse turned to new_fusion for {fn.__name__}")
                return fn(*args, xp=cupy)  # the raw module: cupy.fuse traces its ufuncs, not the compat layer's

            self._fused = cupy.fuse(kernel_name=f"gpunet_{fn.__name__}")(with_cupy)
        return self._fused

    def _refuse_second_tracer(self, error: SecondTracerRefused, args: tuple[Any, ...]) -> None:
        """Unfused from now on (cupy.fuse would send every later call to new_fusion too); said once."""
        why = (
            f"cupy's first fusion tracer failed for ({signature(args)}), and cupy.fuse's second "
            "implementation (new_fusion) makes kernels the CPU checks never saw"
        )
        fusable.second_tracer[self.__name__] = why
        self._give_up(SecondTracerRefused(why), stacklevel=4)

    def _give_up(self, error: Exception, stacklevel: int = 3) -> None:
        """Run unfused from now on: slower, same results; say so once rather than stop a run."""
        self._fused = False
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        fusable.fallbacks[self.__name__] = reason
        message = f"gpunet: cupy could not fuse {self.__name__}, which runs unfused ({reason})"
        warnings.warn(message, stacklevel=stacklevel)


class SecondTracerRefused(RuntimeError):
    """cupy.fuse's second implementation was about to trace a fusable function: gpunet runs it unfused instead."""


def second_tracer_tracing() -> bool:
    """Whether cupy.fuse's second implementation (new_fusion) is tracing a function on this thread now.

    cupy 14 sets this flag around new_fusion's trace (cupy/_core/new_fusion.pyx,
    `_get_fused_kernel`); a cupy without it falls back to the check after the call.
    """
    try:
        from cupy._core import _fusion_thread_local
    except ImportError:
        return False
    return bool(getattr(_fusion_thread_local, "is_new_fusing", lambda: False)())


def signature(args: tuple[Any, ...]) -> str:
    """The arguments as cupy.fuse keys its kernels: each array's dtype and ndim, each scalar's type."""
    return ", ".join(f"{a.dtype} {a.ndim}-D" if hasattr(a, "shape") else type(a).__name__ for a in args)


def explicit_scalars(args: tuple[Any, ...], xp: Any) -> tuple[Any, ...]:
    """The arguments, each number among them made a scalar of the arrays' float dtype.

    numpy and cupy get numpy scalars of that dtype (a float32 run computes in
    float32 on both, whatever type the number came as); other namespaces,
    whose arrays take only Python numbers, get a Python float.
    """
    dtypes = [a.dtype for a in args if hasattr(a, "shape") and xp.isdtype(a.dtype, "real floating")]
    if not dtypes:
        return args
    make = np.dtype(dtypes[0]).type if is_numpy_namespace(xp) or is_cupy_namespace(xp) else float
    return tuple(
        make(a) if isinstance(a, (int, float, np.number)) and not isinstance(a, (bool, np.bool_)) else a for a in args
    )


def matmul_into(a: Any, b: Any, out: Any) -> Any:
    """`a @ b` written into `out` (a view of a bigger buffer, say): one product, no copy, on numpy and cupy.

    numpy's and cupy's matmul take `out=` and hand it to BLAS or cuBLAS as the
    product's destination (cupy does when `out` is C-contiguous, of the
    product's dtype and apart from `a` and `b`, as the gradient's views are);
    the array API has no `out=`, so elsewhere the product is assigned.
    """
    xp = array_namespace(out)
    if is_numpy_namespace(xp):
        return np.matmul(a, b, out=out)
    if is_cupy_namespace(xp):
        import cupy

        return cupy.matmul(a, b, out=out)
    out[...] = a @ b
    return out


def cpu() -> Device:
    return Device("cpu", array_namespace(np.empty(0)))


def resolve_device(spec: str) -> Device:
    """Turn `cpu`, `cuda`, `cuda:N` or `auto` into a usable Device, or raise DeviceError."""
    spec = spec.strip().lower()
    if spec == "cpu":
        return cpu()
    if spec == "auto":
        try:
            return _cuda(0)
        except DeviceError as e:
            return Device("cpu", cpu().xp, note=f"device: cpu, since {e}")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise DeviceError(f"bad device '{spec}': the index after 'cuda:' must be a number")
        return _cuda(int(index))
    raise DeviceError(f"unknown device '{spec}': use cpu, cuda, cuda:N or auto")


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        if e.name == "cupy":
            hint = f"{install_hint('--cuda', 'gpunet[cuda]')} (for a CUDA 12 driver; --cuda13 for CUDA 13)"
            raise DeviceError(f"cuda needs cupy, which is not installed; install it with: {hint}") from e
        raise DeviceError(f"cupy is installed but failed to import: {_first_line(e)}") from e
    except Exception as e:  # a broken install fails in many ways (missing libraries, ABI)
        raise DeviceError(f"cupy is installed but failed to import: {_first_line(e)}") from e
    return cupy


def _device_count(cupy: Any) -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError names the cause: no device, driver too old, ...
        raise DeviceError(f"CUDA is not usable: {_driver_problem(cupy) or _first_line(e)}") from e


def _driver_problem(cupy: Any) -> str | None:
    """What is wrong with the NVIDIA driver, in words, or None if that is not what failed.

    Without any driver the CUDA runtime says "CUDA driver version is insufficient", as it does for an
    old one; cudaDriverGetVersion tells them apart (it answers 0 where no driver is installed).
    """
    try:
        runtime, built = cupy.cuda.runtime, f"cupy {cupy.__version__}"
        driver, needed = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except Exception:  # a cupy too broken to say: its own error is the reason
        return None
    if driver == 0:
        return f"no NVIDIA driver is installed ({built} is built for CUDA {_cuda_version(needed)})"
    if driver < needed:
        return (
            f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, older than the CUDA "
            f"{_cuda_version(needed)} {built} was built for: update the driver, or install the "
            "cupy for that CUDA version"
        )
    return None


# The smoke test's outcome per (cupy module, device index): a device is tested once per process,
# not at every resolve (the bench, the estimator and each Dask task resolve it again and again).
_smoke_tested: dict[tuple[Any, int], Device | DeviceError] = {}


def _cuda(index: int) -> Device:
    cupy = _import_cupy()
    count = _device_count(cupy)
    if count == 0:
        raise DeviceError("CUDA is not usable: no CUDA device found")
    if index >= count:
        raise DeviceError(f"there is no device cuda:{index}: this machine has {count} (cuda:0..cuda:{count - 1})")
    known = _smoke_tested.get((cupy, index))
    if known is None:
        known = _smoke_tested[(cupy, index)] = _smoke_test(cupy, index)
    if isinstance(known, DeviceError):
        raise known
    cupy.cuda.Device(index).use()
    return known


def _smoke_test(cupy: Any, index: int) -> Device | DeviceError:
    try:
        cupy.cuda.Device(index).use()
        # A tiny matmul loads cuBLAS and compiles a kernel, so a broken toolkit
        # fails here with its own message instead of in the middle of training.
        probe = cupy.ones((2, 2), dtype=cupy.float32)
        float((probe @ probe).sum())
    except Exception as e:
        failed = DeviceError(f"cuda:{index} failed a smoke test: {_first_line(e)}")
        failed.__cause__ = e
        return failed
    return Device(f"cuda:{index}", array_namespace(probe))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def blas_info() -> str:
    """The BLAS numpy runs with, and its kernel: it decides the CPU's speed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        return "unknown"
    b = blas[0]
    return f"{b.get('internal_api')} {b.get('version')}, kernel {b.get('architecture')}, {b.get('num_threads')} threads"


def describe() -> list[tuple[str, str]]:
    """What can run here, as (name, detail) rows; a row says why cuda cannot."""
    rows = [("cpu", f"numpy {np.__version__}, BLAS: {blas_info()}")]
    try:
        cupy = _import_cupy()
        count = _device_count(cupy)
    except DeviceError as e:
        return [*rows, ("cuda", f"unavailable: {e}")]
    runtime = cupy.cuda.runtime
    rows.append(
        (
            "cuda",
            f"cupy {cupy.__version__}, CUDA runtime {_cuda_version(runtime.runtimeGetVersion())}, "
            f"driver {_cuda_version(runtime.driverGetVersion())}, {count} device(s)",
        )
    )
    for i in range(count):
        p = runtime.getDeviceProperties(i)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        rows.append(
            (
                f"cuda:{i}",
                f"{name}, {p['totalGlobalMem'] / 2**30:.1f} GiB, compute capability {p['major']}.{p['minor']}",
            )
        )
    return rows


def cupy_version() -> str | None:
    """cupy's version if it imports, for the records benchmarks keep."""
    try:
        return _import_cupy().__version__
    except DeviceError:
        return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"
