"""Every cupy kernel gpunet fuses, checked without a GPU, with the cupy the GPU machine runs.

For each `fusable` function in the package (found by walking it, so a new one
cannot be left out), in float32 and float64, with the very arguments a real
training step gives it (the full 60000-row batch and a 1000-row mini-batch,
the transposed views included), recorded on numpy and re-created as cupy
arrays over memory that is never touched:
- cupy's fusion tracer turns it into one kernel, elementwise or a reduction
  as its result says (a result smaller than its inputs is a reduction);
- every operation's loop is in the run's float dtype: no float16 (what cupy
  picks for arithmetic between two scalars), no float64 in a float32 run;
- no operation has only scalar inputs (the rule in gpunet.device.backend.fusable);
- NVRTC compiles the generated CUDA source for compute_90;
- the traced operations, run by numpy in the dtypes cupy chose, give what
  the unfused function gives on numpy;
- a numpy float64 scalar (strong in numpy 2, weak in cupy's kernels) leaves
  float32 work in float32 on both: the same bits on numpy, no double in the
  kernel's parameters nor any f64 instruction in its PTX on cupy.
Last, a function the first tracer refuses never reaches cupy.fuse's second
implementation (whose kernels nothing here checks): it runs unfused, and says so.
The CuPy internals this needs live in tests/cupy_fusion.py.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import warnings
from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy as np
import pytest

import gpunet
from gpunet.core.optimizers import OPTIMIZERS, make_optimizer
from gpunet.data import datasets
from gpunet.device.backend import array_namespace, explicit_scalars, fusable, resolve_device
from gpunet.training.engine import LocalEngine
from gpunet.training.train import DTYPES, TrainConfig, Trainer
from tests import cupy_fusion
from tests.conftest import FASHION_DIR

MINI_BATCH = 1000


def package_fusables() -> dict[str, fusable]:
    """Every fusable function defined anywhere in gpunet, by name."""
    found: dict[str, fusable] = {}
    for module in pkgutil.walk_packages(gpunet.__path__, "gpunet."):
        if module.name == "gpunet.__main__":  # running it is the CLI
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, fusable):
                found[value.__name__] = value
    return found


FUSABLES = package_fusables()


def kept(a: Any) -> Any:
    """A copy with the same memory layout (a transposed view stays transposed)."""
    if not isinstance(a, np.ndarray):
        return a
    copy = np.array(a, order="K", copy=True)
    assert copy.strides == a.strides, f"recording changed an argument's layout: {a.strides} -> {copy.strides}"
    return copy


@functools.cache
def step_calls(dtype: str) -> dict[str, dict[tuple, tuple[Any, ...]]]:
    """name -> {argument layout: arguments} of every fusable call in real steps on numpy.

    The trainer runs the GPU's schedule (the whole batch as one chunk), each
    update rule's second step (Adam's state no longer zero), then mini-batches.
    """
    calls: dict[str, dict[tuple, tuple[Any, ...]]] = {}
    real_call = fusable.__call__

    def recording(self: fusable, *args: Any) -> Any:
        args = explicit_scalars(args, compat_numpy)  # as fusable.__call__ passes them on
        layout = tuple((a.shape, a.strides) if isinstance(a, np.ndarray) else type(a) for a in args)
        calls.setdefault(self.__name__, {}).setdefault(layout, tuple(kept(a) for a in args))
        return real_call(self, *args)

    fashion = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True)
    # The reference engine (the array-API math whose fusable calls are recorded), on the GPU's schedule.
    config = TrainConfig(dtype=dtype, eval_every=1000)
    trainer = Trainer(config, fashion, resolve_device("cpu"), engine=LocalEngine(None, 1))
    try:
        for batch_size in (None, MINI_BATCH):
            trainer.source.order.batch_size = batch_size
            for name in OPTIMIZERS:
                trainer.optimizer = make_optimizer(name, trainer.flat_params, 0.001)
                trainer.step()
                fusable.__call__ = recording
                try:
                    trainer.step()
                finally:
                    fusable.__call__ = real_call
    finally:
        trainer.close()
    return calls


def cases(dtype: str, name: str) -> list[tuple[Any, ...]]:
    recorded = step_calls(dtype).get(name)
    assert recorded, f"{name} is not called by a training step; record the calls that use it in step_calls()"
    return list(recorded.values())


@functools.cache
def traced(dtype: str, name: str, index: int) -> cupy_fusion.Traced:
    cupy = cupy_fusion.import_cupy()
    fn = FUSABLES[name].fn
    args = cases(dtype, name)[index]
    return cupy_fusion.trace(lambda *a: fn(*a, xp=cupy), cupy_fusion.stand_ins(args), f"gpunet_{name}")


def each_case(dtype: str, name: str) -> list[tuple[tuple[Any, ...], cupy_fusion.Traced]]:
    return [(args, traced(dtype, name, i)) for i, args in enumerate(cases(dtype, name))]


def shapes(args: tuple[Any, ...]) -> str:
    return ", ".join(str(a.shape) if isinstance(a, np.ndarray) else type(a).__name__ for a in args)


all_kernels = pytest.mark.parametrize(
    ("dtype", "name"), [(d, n) for d in DTYPES for n in sorted(FUSABLES)], ids=lambda v: v
)


def test_the_package_has_the_fusable_functions_we_expect() -> None:
    # Found by walking the package; each one below is then checked in each dtype.
    assert len(FUSABLES) >= 8, sorted(FUSABLES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_fusable_function_runs_in_a_training_step_at_both_batch_sizes(dtype: str) -> None:
    calls = step_calls(dtype)
    assert sorted(calls) == sorted(FUSABLES)
    sizes = {n for per_layout in calls.values() for args in per_layout.values() for a in args for n in np.shape(a)}
    assert {60000, MINI_BATCH} <= sizes  # the full batch and a mini-batch


@all_kernels
def test_becomes_one_kernel_of_the_intended_kind(dtype: str, name: str) -> None:
    for args, t in each_case(dtype, name):
        unfused = FUSABLES[name].fn(*(kept(a) for a in args), xp=compat_numpy)
        broadcast = np.broadcast_shapes(*(a.shape for a in args if isinstance(a, np.ndarray)))
        first = unfused[0] if isinstance(unfused, tuple) else unfused  # a kernel's results share one shape
        intended = "reduction" if first is not None and np.shape(first) != broadcast else "elementwise"
        assert t.kind == intended, f"{name}({shapes(args)}): traced as {t.kind}, meant as {intended}"
        assert type(t.kernel).__name__ == {"elementwise": "ElementwiseKernel", "reduction": "ReductionKernel"}[t.kind]


@all_kernels
def test_every_operation_runs_in_the_input_dtype(dtype: str, name: str) -> None:
    for args, t in each_case(dtype, name):
        wrong = [str(op) for op in t.ops if any(d != np.dtype(dtype) for d in op.dtypes)]
        assert not wrong, f"{name}({shapes(args)}) in {dtype}: {wrong}"


@all_kernels
def test_no_arithmetic_between_scalars(dtype: str, name: str) -> None:
    # The rule of gpunet.device.backend.fusable: such operations are typed by cupy's tracer, as float16.
    for _args, t in each_case(dtype, name):
        found = [str(op) for op in t.scalar_only_ops()]
        assert not found, f"{name}: compute these on the host and pass them in: {found}"


@all_kernels
def test_generated_source_compiles_for_compute_90(dtype: str, name: str) -> None:
    for _args, t in each_case(dtype, name):
        code = cupy_fusion.source(t)
        assert f"gpunet_{name}" in code
        ptx = cupy_fusion.compile_ptx(code)  # raises with NVRTC's log
        assert f".entry gpunet_{name}" in ptx and ".target sm_90" in ptx


@all_kernels
def test_every_kernel_takes_its_arrays_as_arrays_and_reads_and_writes_them(dtype: str, name: str) -> None:
    # A kernel whose arrays were declared as scalars compiles to a body of `ret` and checks nothing:
    # relu_backward's did, until tests/cupy_fusion.py took _reduce_dims' views for the arrays they are.
    for args, t in each_case(dtype, name):
        code = cupy_fusion.source(t)
        params = cupy_fusion.kernel_parameters(code, f"gpunet_{name}")
        arrays = sum(isinstance(a, np.ndarray) for a in args) + len(t.returned)
        scalars = sum(a is not None and not isinstance(a, np.ndarray) for a in args)
        as_arrays = [p for p in params if "CArray<" in p]
        as_scalars = [p for p in params if "CArray<" not in p and "CIndexer<" not in p and "_block_stride" not in p]
        assert (len(as_arrays), len(as_scalars)) == (arrays, scalars), f"{name}({shapes(args)}): {params}"
        loads, stores = cupy_fusion.global_accesses(cupy_fusion.compile_ptx(code))
        assert loads >= 1 and stores >= 1, f"{name}({shapes(args)}) reads {loads} and writes {stores} times"


@all_kernels
def test_traced_operations_compute_what_the_unfused_function_does(dtype: str, name: str) -> None:
    # The same operations in the same dtypes: equal to a few units in the last place (they agree
    # exactly with numpy 2.4); Adam's coefficients in float16 were off by 1e-5.
    tolerance = {"float32": 5e-7, "float64": 1e-14}[dtype]
    for args, t in each_case(dtype, name):
        fused_args, plain_args = [kept(a) for a in args], [kept(a) for a in args]
        fused = cupy_fusion.evaluate(t, tuple(fused_args))
        plain = FUSABLES[name].fn(*plain_args, xp=compat_numpy)
        results = zip(fused, plain) if isinstance(plain, tuple) else [(fused, plain)]  # each result
        pairs = [*results, *zip(fused_args, plain_args)]  # and the arguments updated in place
        for got, want in pairs:
            if want is None or not hasattr(want, "dtype"):
                continue
            assert np.asarray(got).dtype == np.asarray(want).dtype
            scale = max(float(np.max(np.abs(want))), np.finfo(want.dtype).tiny)
            error = float(np.max(np.abs(np.asarray(got) - want))) / scale
            assert error <= tolerance, f"{name}({shapes(args)}) in {dtype}: off by {error:.2e} of its largest value"


@pytest.mark.parametrize("name", sorted(FUSABLES))
def test_a_float64_scalar_leaves_float32_work_in_float32_on_both_backends(name: str) -> None:
    # numpy 2 takes a numpy float64 scalar as strong (float32 work would run in float64), cupy's
    # kernels as weak (cast to float32): every scalar is given the arrays' dtype before the call.
    cupy = cupy_fusion.import_cupy()
    fn = FUSABLES[name].fn
    for args in cases("float32", name):
        doubles = tuple(np.float64(a) if isinstance(a, (float, np.floating)) else a for a in args)
        given, plain = [kept(a) for a in doubles], [kept(a) for a in args]
        got = FUSABLES[name](*given)  # numpy, through the fusable as the step calls it
        want = fn(*plain, xp=compat_numpy)  # float32 scalars throughout
        results = zip(got, want) if isinstance(want, tuple) else [(got, want)]
        for g, w in [*results, *zip(given, plain)]:  # the results and the arguments updated in place
            if isinstance(w, np.ndarray):
                assert g.dtype == np.float32 and np.array_equal(g, w), f"{name}({shapes(args)}) with float64 scalars"
        stand_ins = cupy_fusion.stand_ins(doubles)
        xp = array_namespace(next(a for a in stand_ins if hasattr(a, "shape")))
        passed = explicit_scalars(stand_ins, xp)  # cupy, as fusable.__call__ passes them on
        code = cupy_fusion.source(cupy_fusion.trace(lambda *a: fn(*a, xp=cupy), passed, f"gpunet_{name}"))
        params = cupy_fusion.kernel_parameters(code, f"gpunet_{name}")
        assert not [p for p in params if "double" in p], f"{name}({shapes(args)}): {params}"
        ptx = cupy_fusion.compile_ptx(code)
        assert ".f64" not in ptx, f"{name}({shapes(args)}) computes in double: {ptx.count('.f64')} f64 operations"


class RanUnfused(Exception):
    """The body was called with real cupy arrays: the unfused path (stopped before it launches anything)."""


def test_a_function_the_first_tracer_refuses_runs_unfused_never_with_the_second() -> None:
    # cupy.fuse, when its first tracer fails (here: an array after the reduction, "Shape mismatch"),
    # switches the function to new_fusion for good, silently; gpunet refuses that before new_fusion
    # traces, so no kernel the checks above never saw can run. Stand-ins: nothing is launched.
    cupy = cupy_fusion.import_cupy()
    bodies: list[bool] = []  # for each call of the body: whether it got real cupy arrays (unfused)

    @fusable
    def sum_then_add(a: Any, b: Any, xp: Any) -> Any:
        bodies.append(isinstance(a, cupy.ndarray))
        if isinstance(a, cupy.ndarray):
            raise RanUnfused  # the stand-ins' memory must not be touched
        return xp.sum(a, axis=0) + b

    a, b = cupy_fusion.stand_ins((np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)))
    try:
        with pytest.warns(UserWarning) as warned, pytest.raises(RanUnfused):
            sum_then_add(a, b)
        assert bodies == [False, True]  # traced once, by the first tracer; then the plain function
        assert [str(w.message) for w in warned] == [
            "gpunet: cupy could not fuse sum_then_add, which runs unfused (SecondTracerRefused: cupy's first "
            "fusion tracer failed for (float32 2-D, float32 2-D), and cupy.fuse's second implementation "
            "(new_fusion) makes kernels the CPU checks never saw)"
        ]
        assert "float32 2-D" in fusable.second_tracer["sum_then_add"]
        with warnings.catch_warnings(), pytest.raises(RanUnfused):  # unfused straight away, no second warning
            warnings.simplefilter("error")
            sum_then_add(a, b)
        assert bodies == [False, True, True]
    finally:  # the record is the process's: tests/test_gpu.py asserts no real function is in it
        fusable.second_tracer.pop("sum_then_add", None)
        fusable.fallbacks.pop("sum_then_add", None)
