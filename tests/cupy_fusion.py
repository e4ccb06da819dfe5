"""CuPy's kernel generation, driven without a GPU: the one module that touches CuPy's internals.

`cupy.fuse` cannot be called here (any launch needs a driver), so this module
does what it would do, step by step, with CuPy's own functions:

- `trace`: the fusion tracer that `cupy.fuse` tries first (cupy/_core/fusion.pyx:
  `_FusionHistory.get_fusion`, run with `_thread_local.history` and
  `_thread_local.is_old_fusing` set, as `Fusion.__call__` does). It returns
  the kernel object and the history, whose `op_list` / `postmap_op_list` name
  each operation's loop (`_FusionOp.submodule.name`, `.dtypes`, `.args`).
  `cupy.fuse` silently retries with a second implementation when this one
  fails; here the failure is the test's.
- `source`: the CUDA source that kernel would compile for these arguments,
  following `ElementwiseKernel.__call__` (cupy/_core/_kernel.pyx) and
  `ReductionKernel.__call__` / `_AbstractReductionKernel._call`
  (cupy/_core/_reduction.pyx): broadcast, `_decide_params_type`, `_reduce_dims`
  (ported below, it is `cdef`), block specs, `_ArgInfo` rows, then
  `_get_elementwise_kernel_code` / `_ReductionKernel_get_cached_function_code`.
- `compile_ptx`: NVRTC (`cupy_backends.cuda.libs.nvrtc`) with cupy's headers
  and options (`core._cupy_header_list`, `core.assemble_cupy_compiler_options`),
  for compute_90 (the H200), which needs no driver.
- `evaluate`: the traced operations run by numpy, each in the loop dtype cupy chose.

All of it is read from CuPy v14.2.0's sources; TESTED_CUPY pins that range, and
another version fails loudly (update this module against its sources) rather
than checking something else. Arrays are stand-ins: `cupy.ndarray`s over
`cupy.cuda.memory.UnownedMemory` at made-up addresses, never dereferenced.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

TESTED_CUPY = "14.2."  # the versions whose internals this module was written against
ARCH = "90"  # the H200 the project's GPU runs are made on


def import_cupy() -> Any:
    """cupy, or a skip saying why not; a cupy of another version is an error, not a skip."""
    try:
        import cupy
    except ImportError as e:
        why = f"cupy cannot be imported ({e}); `pip install -e '.[dev]'` installs the kernel checks' cupy"
        if os.environ.get("CI"):  # CI installs it: there a missing cupy is a broken set-up, never a skip
            pytest.fail(why)
        pytest.skip(why)
    if not cupy.__version__.startswith(TESTED_CUPY):
        pytest.fail(
            f"cupy {cupy.__version__} is installed, but tests/cupy_fusion.py relies on the internals of cupy "
            f"{TESTED_CUPY}x: install that (pip install -e '.[dev]') or port the module to the new version"
        )
    return cupy


# --- stand-in device arrays ------------------------------------------------------------------------

_next_address = [1 << 40]  # made-up device addresses, far apart; nothing reads them


def stand_in(a: np.ndarray) -> Any:
    """A cupy array with `a`'s shape, strides and dtype, over memory that is never touched."""
    import cupy
    from cupy.cuda import memory

    span = 1 + sum((n - 1) * abs(s) for n, s in zip(a.shape, a.strides)) + a.itemsize
    address = _next_address[0]
    _next_address[0] += (span // 4096 + 2) * 4096
    owner = memory.UnownedMemory(address, span, None, device_id=0)
    return cupy.ndarray(a.shape, a.dtype, memory.MemoryPointer(owner, 0), strides=a.strides)


def stand_ins(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(stand_in(a) if isinstance(a, np.ndarray) else a for a in args)


# --- tracing ---------------------------------------------------------------------------------------


@dataclass
class Op:
    """One traced operation: cupy's name for it, the loop's dtypes, and its variables' indices."""

    name: str
    dtypes: tuple[np.dtype, ...]  # the loop: inputs, then outputs
    nin: int
    args: tuple[int, ...]  # variable indices, inputs then outputs

    def __str__(self) -> str:
        ins = ", ".join(str(d) for d in self.dtypes[: self.nin])
        outs = ", ".join(str(d) for d in self.dtypes[self.nin :])
        return f"{self.name}({ins}) -> {outs}"


@dataclass
class Traced:
    kernel: Any  # cupy's ElementwiseKernel or ReductionKernel
    kwargs: dict[str, Any]  # what the kernel is called with (a reduction's axis)
    history: Any  # cupy._core.fusion._FusionHistory
    args: tuple[Any, ...]  # the stand-ins and scalars it was traced with
    returned: list[int]  # variable indices of the function's return values

    @property
    def kind(self) -> str:
        return "reduction" if self.history.reduce_op is not None else "elementwise"

    @property
    def ops(self) -> list[Op]:
        h = self.history
        return [
            Op(
                o.submodule.name,
                tuple(np.dtype(d) for d in o.dtypes),
                len(o.submodule.in_params),
                tuple(v.index for v in o.args),
            )
            for o in [*h.op_list, *h.postmap_op_list]
        ]

    def scalar_only_ops(self) -> list[Op]:
        """Operations none of whose inputs comes from an array: cupy's tracer types those itself (float16)."""
        h = self.history
        from_arrays = {v.index for v, a in zip(h.param_list, self.args) if hasattr(a, "shape")}
        if h.postmap_param is not None:  # a reduction's result is typed like its array
            from_arrays.add(h.postmap_param.index)
        found = []
        for op in self.ops:
            if from_arrays.isdisjoint(op.args[: op.nin]):
                found.append(op)
            from_arrays.update(op.args[op.nin :])
        return found


def trace(fn: Any, args: tuple[Any, ...], name: str) -> Traced:
    """Trace `fn(*args)` (stand-ins and scalars) as `cupy.fuse(kernel_name=name)` would, first try."""
    from cupy._core import fusion

    returned: list[int] = []

    def recording(*vars_: Any) -> Any:
        result = fn(*vars_)
        for r in result if isinstance(result, tuple) else [result]:
            if r is not None:
                returned.append(r._var.index)
        return result

    history = fusion._FusionHistory()
    fusion._thread_local.history = history
    fusion._thread_local.is_old_fusing = True
    try:
        kernel, kwargs = history.get_fusion(recording, args, name)
    finally:
        fusion._thread_local.history = None
        fusion._thread_local.is_old_fusing = False
    return Traced(kernel, kwargs, history, args, returned)


# --- the CUDA source cupy would compile ------------------------------------------------------------

# _ArgKind in cupy/_core/_kernel.pxd
ARG_KIND_NDARRAY, ARG_KIND_INDEXER, ARG_KIND_SCALAR = 1, 2, 3


def _arg_info(a: Any, dtype: Any = None) -> Any:
    import cupy
    from cupy._core import _carray, _kernel, _scalar

    # An array, or _reduce_dims' reshaped view of one (a Reduced below, not a cupy.ndarray): before
    # this test, such a view was taken for a scalar, and relu_backward's kernel compiled to `ret`.
    if isinstance(a, cupy.ndarray) or hasattr(a, "_c_contiguous"):
        return _kernel._ArgInfo(ARG_KIND_NDARRAY, cupy.ndarray, a.dtype, a.ndim, a._c_contiguous, a._index_32_bits)
    if isinstance(a, tuple):  # an Indexer over this shape (_carray.Indexer.init)
        return _kernel._ArgInfo(ARG_KIND_INDEXER, _carray.Indexer, None, len(a), True, math.prod(a) <= 1 << 31)
    return _kernel._ArgInfo(ARG_KIND_SCALAR, _scalar.CScalar, np.dtype(dtype), 0, True, True)


def _view(a: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A reshaped view keeping `a`'s flags, as `_ndarray_base._view(..., False, True, ...)` does for ArgInfo."""

    @dataclass
    class Reduced:
        shape: tuple[int, ...]
        strides: tuple[int, ...]
        dtype: Any
        _c_contiguous: bool
        _index_32_bits: bool

        @property
        def ndim(self) -> int:
            return len(self.shape)

    return Reduced(shape, strides, a.dtype, a._c_contiguous, a._index_32_bits)


def _reduce_dims(args: list[Any], shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
    """A port of `_kernel._reduce_dims`/`_reduced_view_core` (cdef, not callable): merged axes."""
    is_array = [hasattr(a, "_c_contiguous") for a in args]
    arrays = [a for a, yes in zip(args, is_array) if yes]
    if len(shape) <= 1 or not arrays:
        return shape, args
    if len(args) == 1:  # its fast path: the array's own reduced view
        reduced = args[0].reduced_view()
        return tuple(reduced.shape), [_view(args[0], tuple(reduced.shape), tuple(reduced.strides))]
    strided = [a for a in arrays if not a._c_contiguous]
    if strided and len(shape) == 2:
        return shape, args
    if not strided:
        size = arrays[0].size
        return (size,), [_view(a, (size,), (a.dtype.itemsize,)) if yes else a for a, yes in zip(args, is_array)]
    vecshape, axes, last = list(shape), [], -1
    for ax in range(len(shape)):
        if vecshape[ax] == 1:
            continue
        if last < 0:
            last = ax
            continue
        if any(a.strides[ax] * vecshape[ax] != a.strides[last] for a in strided):
            axes.append(last)
        else:
            vecshape[ax] *= vecshape[last]
        last = ax
    if last >= 0:
        axes.append(last)
    if len(axes) == len(shape):
        return shape, args
    new_shape = tuple(vecshape[ax] for ax in axes)
    return new_shape, [
        _view(a, new_shape, tuple(a.strides[ax] for ax in axes)) if yes else a for a, yes in zip(args, is_array)
    ]


def _broadcast(args: tuple[Any, ...]) -> tuple[tuple[int, ...], list[Any]]:
    import cupy

    shape = np.broadcast_shapes(*(a.shape for a in args if isinstance(a, cupy.ndarray)))
    return shape, [cupy.broadcast_to(a, shape) if isinstance(a, cupy.ndarray) else a for a in args]


def _fresh(shape: tuple[int, ...], dtype: Any) -> Any:
    return stand_in(np.lib.stride_tricks.as_strided(np.empty(1, dtype), shape, _c_strides(shape, dtype)))


def _c_strides(shape: tuple[int, ...], dtype: Any) -> tuple[int, ...]:
    strides, step = [], np.dtype(dtype).itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def source(traced: Traced) -> str:
    """The CUDA source the traced kernel would compile when called with its arguments."""
    args = tuple(a for a in traced.args if a is not None)
    if traced.kind == "elementwise":
        return _elementwise_source(traced.kernel, args)
    return _reduction_source(traced.kernel, args, traced.kwargs)


def _elementwise_source(kernel: Any, args: tuple[Any, ...]) -> str:
    from cupy._core import _kernel

    shape, in_args = _broadcast(args)
    in_types, out_types, type_map = kernel._decide_params_type(
        tuple(a.dtype if hasattr(a, "dtype") else None for a in in_args), ()
    )
    inout = in_args + [_fresh(shape, t) for t in out_types]
    if kernel.reduce_dims:
        shape, inout = _reduce_dims(inout, shape)
    types = list(in_types) + list(out_types)
    arginfos = (*(_arg_info(a, t) for a, t in zip(inout, types)), _arg_info(tuple(shape)))
    return _kernel._get_elementwise_kernel_code(
        arginfos, type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble, **kernel.kwargs
    )


@dataclass
class ReductionLaunch:
    """What `_AbstractReductionKernel._call` launches for these arguments: its grid and what the source needs."""

    block_size: int  # threads per block
    block_stride: int  # outputs per block
    blocks: int  # the grid: `_get_block_specs`' out_block_num
    in_args: list[Any]
    out_args: list[Any]
    shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    types: list[Any]
    type_map: Any


def reduction_launch(traced: Traced) -> ReductionLaunch:
    """The grid cupy's reduction kernel gets for the traced call, from CuPy's own `_get_block_specs`."""
    if traced.kind != "reduction":
        raise ValueError("not a reduction")
    return _reduction_launch(traced.kernel, tuple(a for a in traced.args if a is not None), traced.kwargs)


def _reduction_launch(kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ReductionLaunch:
    import cupy
    from cupy._core import _cub_reduction, _kernel, _reduction

    shape, in_args = _broadcast(args)
    in_types, out_types, type_map = _kernel._decide_params_type(
        kernel.in_params, kernel.out_params, tuple(a.dtype.type if hasattr(a, "dtype") else None for a in in_args), ()
    )
    reduce_axis, out_axis = _reduction._get_axis(kwargs.get("axis"), len(shape))
    if len(in_args) == 1 and len(out_axis) <= 1 and not in_args[0]._c_contiguous:
        raise NotImplementedError("a one-input reduction's axis sorting is not ported here")
    out_shape = tuple(_reduction._get_out_shape(shape, reduce_axis, out_axis, False))
    out_args = [_fresh(out_shape, t) for t in out_types]
    index_type = ("IndexT", "int64" if math.prod(shape) / math.prod(out_shape) > 0x7FFFFFFF else "int32")
    type_map = _kernel._TypeMap((*type_map._pairs, index_type))
    if _cub_reduction._can_use_cub_block_reduction(in_args, out_args, reduce_axis, out_axis) is not None:
        raise NotImplementedError("cupy would reduce this with CUB, whose source is not generated here")
    permutation = reduce_axis + out_axis
    if permutation != tuple(range(len(shape))):
        in_args = [a.transpose(permutation) if isinstance(a, cupy.ndarray) else a for a in in_args]
        shape = tuple(shape[i] for i in permutation)
    if kernel.reduce_dims:
        shape, in_args = _reduce_dims(in_args, shape)
        out_shape, out_args = _reduce_dims(out_args, out_shape)
    contiguous = _contiguous_size(in_args, out_shape, len(shape))
    block_size, block_stride, blocks = _reduction._get_block_specs(
        math.prod(shape), math.prod(out_shape), contiguous, -1
    )
    return ReductionLaunch(
        block_size, block_stride, blocks, in_args, out_args, shape, out_shape, [*in_types, *out_types], type_map
    )


def _reduction_source(kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    from cupy._core import _reduction

    launch = _reduction_launch(kernel, args, kwargs)
    arginfos = (
        *(_arg_info(a, t) for a, t in zip(launch.in_args + launch.out_args, launch.types)),
        _arg_info(tuple(launch.shape)),
        _arg_info(tuple(launch.out_shape)),
        _arg_info(launch.block_stride, np.int32),
    )
    return _reduction._ReductionKernel_get_cached_function_code(
        kernel.nin, kernel.nout, kernel._params, arginfos, launch.type_map, kernel.name, launch.block_size,
        kernel.reduce_type, kernel.identity, kernel.map_expr, kernel.reduce_expr, kernel.post_map_expr,
        kernel.preamble, kernel.options,
    )  # fmt: skip


def kernel_parameters(code: str, name: str) -> list[str]:
    """The parameter declarations of `name`'s `__global__` signature in generated source."""
    head = code[code.index(f"void {name}(") + len(f"void {name}(") :]
    params, depth, current = [], 0, ""
    for ch in head:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            params.append(current.strip())
            current = ""
        else:
            current += ch
    return [*params, current.strip()] if current.strip() else params


def global_accesses(ptx: str) -> tuple[int, int]:
    """(loads, stores) of global memory in PTX: a kernel that touches its arrays has both."""
    lines = [line.strip() for line in ptx.splitlines()]
    return sum(line.startswith("ld.global") for line in lines), sum(line.startswith("st.global") for line in lines)


def _contiguous_size(args: list[Any], out_shape: tuple[int, ...], ndim: int) -> int:
    """A port of `_reduction._get_contiguous_size` (cdef)."""
    size = 1
    for a in args:
        if not hasattr(a, "_c_contiguous"):
            continue
        run = 1
        for j in range(len(out_shape)):
            if a.strides[ndim - j - 1] != run * a.dtype.itemsize:
                break
            run *= out_shape[len(out_shape) - j - 1]
        size = max(size, run)
    return size


# --- compiling -------------------------------------------------------------------------------------


class CompileError(AssertionError):
    """NVRTC refused the source; the message is NVRTC's log."""


def compile_ptx(code: str, arch: str = ARCH) -> str:
    """Compile as cupy does (its headers and options) for compute_`arch`; return the PTX or raise CompileError."""
    from cupy._core import core
    from cupy_backends.cuda.libs import nvrtc

    full = "".join(f"#include <{h}>\n" for h in core._cupy_header_list) + code
    options = (
        *core.assemble_cupy_compiler_options(()),
        "-ftz=true",
        f"-arch=compute_{arch}",
        "--device-as-default-execution-space",
    )
    prog = nvrtc.createProgram(full, "kern.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as e:
            raise CompileError(f"NVRTC failed ({e}):\n{nvrtc.getProgramLog(prog)}") from None
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)


# --- the traced operations, run by numpy -----------------------------------------------------------

# a reduction's reduce_expr -> numpy's ufunc (cupy's my_max_float propagates NaN, as np.maximum does)
_REDUCTIONS = {"a + b": np.add, "my_max_float(a, b)": np.maximum}


def evaluate(traced: Traced, args: tuple[Any, ...]) -> Any:
    """Run the traced operations on numpy `args` (updated in place like the kernel's), each in its loop's dtype."""
    h = traced.history
    values: dict[int, Any] = {}
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    for var, a in zip(h.param_list, args):
        values[var.index] = a if isinstance(a, np.ndarray) else np.asarray(a, dtype=var.dtype)
    for var in [*h.local_list, *h.postmap_local_list]:
        if var.const_value is not None:
            values[var.index] = np.asarray(var.const_value, dtype=var.dtype)
    params = {var.index for var in h.param_list}
    _run(h.op_list, params, values)
    if h.reduce_op is not None:
        reduce_expr = h.reduce_op.routine[1]
        if reduce_expr not in _REDUCTIONS:
            raise NotImplementedError(f"evaluate() knows no reduction '{reduce_expr}'")
        out_dtype = np.dtype(h.reduce_op.out_types[0])
        mapped = np.broadcast_to(values[h.premap_ret.index], shape).astype(out_dtype)
        reduced = _REDUCTIONS[reduce_expr].reduce(mapped, axis=traced.kwargs.get("axis"), dtype=out_dtype)
        values[h.postmap_param.index] = np.asarray(reduced, dtype=h.postmap_param.dtype)
        _run(h.postmap_op_list, params, values)
        out_shape = np.shape(reduced)
    else:
        out_shape = shape
    results = [np.broadcast_to(values[i], out_shape).copy() for i in traced.returned]
    return None if not results else results[0] if len(results) == 1 else tuple(results)


def _run(ops: list[Any], params: set[int], values: dict[int, Any]) -> None:
    for op in ops:
        nin = len(op.submodule.in_params)
        name = op.submodule.name.removeprefix("cupy_")
        ufunc = getattr(np, name, None)
        if not isinstance(ufunc, np.ufunc):
            raise NotImplementedError(f"evaluate() has no numpy ufunc for {op.submodule.name}")
        loop = [np.dtype(d) for d in op.dtypes]
        inputs = [np.asarray(values[v.index]).astype(t) for v, t in zip(op.args[:nin], loop[:nin])]
        with np.errstate(all="ignore"):
            outputs = ufunc(*inputs, dtype=loop[nin] if op.submodule.out_params else None)
        for var, result in zip(op.args[nin:], outputs if isinstance(outputs, tuple) else [outputs]):
            if var.index in params:  # an argument updated in place
                values[var.index][...] = result.astype(var.dtype)
            else:
                values[var.index] = np.asarray(result).astype(var.dtype)
