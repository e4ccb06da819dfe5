"""How many kernels a GPU training step launches, counted on the CPU, and that it reads nothing back.

CI has no GPU, so the launch budget of a step is checked by counting, on
numpy, the array operations that would each be one kernel on cupy: every
ufunc call (arithmetic, matmul, reductions), every array function that is
not a view, every array written into another (a copy kernel), with each
fusable function counted once (one fused kernel) and a concatenation
counted as cupy runs it (one copy kernel per array). Nothing a cupy step
launches is left out: the vectors of ones and the flat gradient are made
once (the first step), not per step.

The same arrays note every read of a value back to the host (`float()`,
`bool()`, `.item()`, ...): on cupy each would wait for the device, and a
step must queue its work without waiting, fused or not.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import numpy as np
import pytest

from gpunet.data import datasets
from gpunet.device.backend import fusable, resolve_device
from gpunet.training.engine import LocalEngine
from gpunet.training.train import TrainConfig, Trainer

VIEWS = {"reshape", "transpose", "permute_dims", "asarray", "shape", "ndim", "result_type", "can_cast", "isdtype"}


def plain(x):
    if isinstance(x, Counted):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(plain(i) for i in x)
    return x


class Counted(np.ndarray):
    """An ndarray that notes each operation done on it, and hands out Counted results."""

    ops: ClassVar[list[str]] = []
    host_reads: ClassVar[list[str]] = []
    paused = False

    @classmethod
    def note(cls, name: str) -> None:
        if not cls.paused:
            cls.ops.append(name)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        Counted.note(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = plain(out)
        result = getattr(ufunc, method)(*plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result.view(Counted) if isinstance(result, np.ndarray) else result

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ == "concatenate":
            for launch in concatenate_launches(args[0]):
                Counted.note(launch)
        elif func.__name__ not in VIEWS:
            Counted.note(func.__name__)
        result = func(*plain(args), **{k: plain(v) for k, v in kwargs.items()})
        if isinstance(result, np.generic):  # numpy's 0-d results are scalars; cupy's are arrays, watched too
            result = np.asarray(result)
        return result.view(Counted) if isinstance(result, np.ndarray) else result

    def __setitem__(self, key, value):
        Counted.note("copy")  # cupy: an elementwise copy kernel into the view
        Counted.paused, was = True, Counted.paused
        try:
            super().__setitem__(key, plain(value))
        finally:
            Counted.paused = was

    def _read(self, how: str):
        if not Counted.paused:
            Counted.host_reads.append(how)

    def __float__(self):
        self._read("float()")
        return float(self.view(np.ndarray))

    def __int__(self):
        self._read("int()")
        return int(self.view(np.ndarray))

    def __bool__(self):
        self._read("bool()")
        return bool(self.view(np.ndarray))

    def __index__(self):
        self._read("index")
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        self._read(".item()")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        self._read(".tolist()")
        return self.view(np.ndarray).tolist()


def concatenate_launches(arrays) -> list[str]:
    """cupy.concatenate's launches (`_concatenate` in cupy/_core/_routines_manipulation.pyx, 14.2).

    Up to 8 arrays, one copy kernel into the output per array; above that, one
    kernel after uploading its table of pointers (and, unless all arrays have
    one contiguous shape, of offsets and strides).
    """
    if len(arrays) <= 8:
        return ["concatenate (copy)"] * len(arrays)
    same = all(a.flags.c_contiguous and a.shape == arrays[0].shape for a in arrays)
    return ["concatenate", *["host-to-device copy"] * (1 if same else 3)]


def launches_per_step(monkeypatch: pytest.MonkeyPatch, fused: bool, batch_size: int | None = None) -> list[str]:
    dataset = datasets.synthetic(n_train=512, n_test=64)
    # The reference engine (the array-API math a GPU runs), on the GPU's schedule: the whole batch, one chunk.
    trainer = Trainer(TrainConfig(batch_size=batch_size), dataset, resolve_device("cpu"), engine=LocalEngine(None, 1))
    trainer.source.order.batch_size = batch_size
    trainer.flat_params = trainer.flat_params.view(Counted)
    trainer.params = trainer.layout.views(trainer.flat_params)
    trainer.optimizer.slots = {k: v.view(Counted) for k, v in trainer.optimizer.slots.items()}
    trainer.step_losses = trainer.step_losses.view(Counted)
    split = trainer.source.data
    split.x, split.targets = split.x.view(Counted), split.targets.view(Counted)
    if fused:
        real_fn_call = fusable.__call__

        def one_kernel(self, *args):
            Counted.note(f"fused {self.__name__}")
            Counted.paused = True
            try:
                return real_fn_call(self, *args)
            finally:
                Counted.paused = False

        monkeypatch.setattr(fusable, "__call__", one_kernel)
    trainer.step()  # the first step: the fused functions are built, the kept buffers made
    Counted.ops, Counted.host_reads = [], []
    trainer.step()
    trainer.close()
    assert not Counted.host_reads, f"a step read values back to the host: {Counted.host_reads}"
    ops, Counted.ops = Counted.ops, []
    return ops


# One full-batch Adam step of 784-16-16-10 on a GPU, 21 launches (22 kernels), each needed:
# - 11 cuBLAS products: 3 forward (X W1, h1 W2, W3^T h2^T), the 3 weight gradients and the 3 bias
#   gradients (ones @ delta, written straight into their parts of the flat gradient), and the 2
#   errors sent back through W3 and W2 (the first layer's input needs none);
# - 8 fused kernels: 2 bias + ReLU, the logits' maximum and log-sum-exp per sample (each a reduction
#   with one output per sample; the output bias is added inside them), softmax minus targets with
#   the loss shares (scaled by 1/n, so nothing is divided afterwards), 2 ReLU backward, 1 Adam update;
# - the loss: one sum of the shares (cupy hands a whole contiguous array to CUB's device reduce: 2
#   kernels from one call) and its copy into the step's slot of the loss buffer.
# Before issue 21 it was about 32: the flat gradient gathered by 6 copies and divided by n, the
# loss reduced on one block, fills of the vectors of ones, the output bias added on its own.
FULL_BATCH_STEP = Counter(
    {
        "matmul": 11,
        "fused bias_relu": 2,
        "fused logits_max": 1,
        "fused log_sum_exp": 1,
        "fused softmax_cross_entropy": 1,
        "fused relu_backward": 2,
        "fused adam_update": 1,
        "sum": 1,
        "copy": 1,
    }
)


def test_a_gpu_step_is_twenty_one_launches_and_reads_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fused = launches_per_step(monkeypatch, fused=True)
    assert Counter(fused) == FULL_BATCH_STEP, fused
    assert len(fused) == 21
    assert not any("concatenate" in op or op in ("divide", "ones", "zeros", "full") for op in fused)


def test_unfused_the_step_reads_nothing_back_either(monkeypatch: pytest.MonkeyPatch) -> None:
    unfused = launches_per_step(monkeypatch, fused=False)
    fused = launches_per_step(monkeypatch, fused=True)
    assert len(unfused) - len(fused) >= 15, unfused  # what fusion saves
    assert unfused.count("matmul") == 11 and "copy" in unfused


def test_a_mini_batch_step_adds_only_the_gather_of_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # The batch's rows and targets are taken on the device: two gathers more, and still no host read.
    mini = Counter(launches_per_step(monkeypatch, fused=True, batch_size=100))
    assert mini - FULL_BATCH_STEP == Counter({"take": 2}) and FULL_BATCH_STEP - mini == Counter()
