"""How many kernels a GPU training step launches, counted on the CPU.

CI has no GPU, so the launch budget of a step is checked by counting, on
numpy, the array operations that would each be one kernel on cupy: every
ufunc call (arithmetic, matmul, reductions) and every array function that
is not a view, with each fusable function counted once (one fused kernel)
and a concatenation counted as cupy runs it (one copy kernel per array).
Four launches are not seen here: the two fills of the vectors of ones for the
bias gradients, the loss's division by n (numpy's 0-d results are scalars),
and writing the loss into its slot.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from gpunet.data import datasets
from gpunet.device.backend import fusable, resolve_device
from gpunet.training.engine import LocalEngine
from gpunet.training.train import TrainConfig, Trainer

VIEWS = {"reshape", "transpose", "permute_dims", "asarray", "shape", "ndim", "result_type", "can_cast"}


def plain(x):
    if isinstance(x, Counted):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(plain(i) for i in x)
    return x


class Counted(np.ndarray):
    """An ndarray that notes each operation done on it, and hands out Counted results."""

    ops: ClassVar[list[str]] = []
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
        return result.view(Counted) if isinstance(result, np.ndarray) else result


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


def launches_per_step(monkeypatch: pytest.MonkeyPatch, fused: bool) -> list[str]:
    dataset = datasets.synthetic(n_train=512, n_test=64)
    trainer = Trainer(TrainConfig(), dataset, resolve_device("cpu"))
    trainer.source.engine = LocalEngine(None, 1)  # the GPU's schedule: the whole batch, one chunk
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
    trainer.step()  # the first step: the fused functions are built
    Counted.ops = []
    trainer.step()
    trainer.close()
    ops, Counted.ops = Counted.ops, []
    return ops


def test_a_gpu_step_is_about_thirty_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    unfused = launches_per_step(monkeypatch, fused=False)
    fused = launches_per_step(monkeypatch, fused=True)
    assert len(fused) <= 28, fused  # + the 4 unseen: the README's "about 32"
    assert sum(op == "matmul" for op in fused) == 10, fused  # 8 products, 2 bias-gradient ones@delta
    assert [op for op in fused if op.startswith("fused")].count("fused adam_update") == 1
    assert len(unfused) - len(fused) >= 25, unfused  # what fusion saves
    # The flat gradient: one copy per array (2 per layer), divided once.
    assert fused.count("concatenate (copy)") == 6 and fused.count("divide") == 1, fused
