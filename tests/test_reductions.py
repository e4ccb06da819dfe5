"""Every reduction of a full-batch GPU step keeps an H200 busy: checked on the CPU with CuPy's own rules.

CuPy runs a reduction kernel on ceil(outputs / block_stride) blocks
(`_get_block_specs` in cupy/_core/_reduction.pyx): a reduction to one number
runs on one block of 512 threads, however large its input. That is what the
loss did before issue 21 (600,000 numbers into one, one block: as long as the
rest of the step), and a bias gradient summed with `sum(axis=0)` over
(60000, 16) would do it too. So a real full-batch step (60,000 rows, the
GPU's schedule) is recorded on numpy, and
- each fused reduction is traced by cupy's fusion tracer and its grid taken
  from `_get_block_specs`, as `ReductionKernel` would launch it: at least
  132 blocks, the H200's multiprocessors;
- each plain reduction (an array-API `sum`, `max`, ... outside the fused
  kernels) must be one cupy sends to CUB's device-wide reduce instead of a
  reduction kernel (`_ndarray_sum` -> `cub.cub_reduction` -> `device_reduce`
  in cupy/cuda/cub.pyx): the whole of one C-contiguous array, of a dtype CUB
  sums, with CUB among cupy's routine accelerators (its default).
CUB's own grid for that sum (its even-share tiling, about 147 blocks of 256
threads for 600,000 float32) and cuBLAS's choices for the products are not
CuPy's to state: docs/gpu.md gives them as predictions for the first GPU run.
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy as np
import pytest

from gpunet.core import model
from gpunet.data import datasets
from gpunet.device.backend import explicit_scalars, fusable, resolve_device
from gpunet.training.engine import LocalEngine
from gpunet.training.train import DTYPES, TrainConfig, Trainer
from tests import cupy_fusion

H200_SMS = 132
FULL_BATCH = 60000
REDUCTIONS = ("sum", "max", "min", "mean", "prod", "argmax", "argmin", "std", "var", "cumulative_sum")


@functools.cache
def one_step(dtype: str) -> tuple[list[tuple[str, tuple[Any, ...]]], list[tuple[str, np.ndarray, Any]]]:
    """(fusable calls, plain reductions) of the second full-batch Adam step, recorded on numpy."""
    fused: list[tuple[str, tuple[Any, ...]]] = []
    plain: list[tuple[str, np.ndarray, Any]] = []
    real_call = fusable.__call__
    originals = {name: getattr(compat_numpy, name) for name in REDUCTIONS if hasattr(compat_numpy, name)}
    inside = [False]

    def recording(self: fusable, *args: Any) -> Any:
        fused.append((self.__name__, explicit_scalars(args, compat_numpy)))
        inside[0] = True  # what the function does inside is one kernel, traced below
        try:
            return real_call(self, *args)
        finally:
            inside[0] = False

    def watching(name: str) -> Any:
        def reduction(x: Any, *args: Any, **kwargs: Any) -> Any:
            if not inside[0]:
                plain.append((name, x, kwargs.get("axis", args[0] if args else None)))
            return originals[name](x, *args, **kwargs)

        return reduction

    dataset = datasets.synthetic(n_train=FULL_BATCH, n_test=10)
    # The reference engine (the array-API math), on the GPU's schedule: the whole batch, one chunk.
    trainer = Trainer(TrainConfig(dtype=dtype), dataset, resolve_device("cpu"), engine=LocalEngine(None, 1))
    try:
        trainer.step()
        fusable.__call__ = recording
        for name in originals:
            setattr(compat_numpy, name, watching(name))
        try:
            trainer.step()
        finally:
            fusable.__call__ = real_call
            for name, original in originals.items():
                setattr(compat_numpy, name, original)
    finally:
        trainer.close()
    return fused, plain


def fused_reduction_blocks(name: str, args: tuple[Any, ...]) -> int | None:
    """The grid cupy would launch for this fused call, or None when it is elementwise."""
    cupy = cupy_fusion.import_cupy()
    fn = getattr(model, name, None) or fusable_named(name)
    traced = cupy_fusion.trace(lambda *a: fn.fn(*a, xp=cupy), cupy_fusion.stand_ins(args), f"gpunet_{name}")
    return cupy_fusion.reduction_launch(traced).blocks if traced.kind == "reduction" else None


def fusable_named(name: str) -> fusable:
    from gpunet.core import optimizers

    return getattr(optimizers, name)


def goes_to_cub_device_reduce(x: np.ndarray, axis: Any) -> str | None:
    """Why cupy would not send this plain reduction to CUB's device-wide reduce (None: it would)."""
    from cupy._core import _accelerator
    from cupy.cuda import cub

    if _accelerator.ACCELERATOR_CUB not in _accelerator.get_routine_accelerators():
        return "CUB is not among cupy's routine accelerators (CUPY_ACCELERATORS)"
    if axis is not None:
        return f"it reduces along axis {axis}, which cupy runs as a reduction kernel or a segmented reduce"
    if not x.flags.c_contiguous:
        return "its input is not contiguous"
    if x.dtype.type not in cub.CUB_sum_support_dtype_without_half:
        return f"CUB does not sum {x.dtype}"
    if x.size > 0x7FFFFFFF:
        return "it is too large for CUB's int sizes"
    return None


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_fused_reduction_of_a_full_batch_step_launches_a_block_per_multiprocessor(dtype: str) -> None:
    fused, _ = one_step(dtype)
    grids = {name: fused_reduction_blocks(name, args) for name, args in fused}
    reductions = {name: blocks for name, blocks in grids.items() if blocks is not None}
    assert sorted(reductions) == ["log_sum_exp", "logits_max"]  # a new one is checked here too
    for name, blocks in reductions.items():
        assert blocks >= H200_SMS, f"{name} would run on {blocks} blocks"
    assert reductions == {"log_sum_exp": FULL_BATCH // 32, "logits_max": FULL_BATCH // 32}  # 32 samples a block


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_plain_reduction_of_a_full_batch_step_is_a_whole_array_cub_reduce(dtype: str) -> None:
    cupy_fusion.import_cupy()
    _, plain = one_step(dtype)
    assert [(name, x.shape) for name, x, _ in plain] == [("sum", (10, FULL_BATCH))]  # the loss shares
    for name, x, axis in plain:
        why = goes_to_cub_device_reduce(x, axis)
        assert why is None, f"{name}{x.shape}: cupy would launch a reduction kernel, since {why}"


def test_the_checks_see_the_one_block_reductions_issue_21_found(rng: np.random.Generator) -> None:
    # What the step did before: the loss reduced to one number inside a fused kernel, and what a
    # bias gradient summed over the samples would be. Both run on one block; the checks above say so.
    cupy_fusion.import_cupy()

    @fusable
    def cross_entropy_sum(z, z_max, sum_e, targets, xp):
        return -xp.sum(targets * ((z - z_max) - xp.log(sum_e)))

    z = rng.random((10, FULL_BATCH), dtype=np.float32)
    args = (z, z[:1], z[:1] + 1, z)
    cupy = cupy_fusion.import_cupy()
    traced = cupy_fusion.trace(lambda *a: cross_entropy_sum.fn(*a, xp=cupy), cupy_fusion.stand_ins(args), "old")
    assert cupy_fusion.reduction_launch(traced).blocks == 1
    delta = rng.random((FULL_BATCH, 16), dtype=np.float32)
    assert "axis 0" in goes_to_cub_device_reduce(delta, 0)
    assert "not contiguous" in goes_to_cub_device_reduce(z.T, None)
