"""numpy and cupy run the same math: same start, same numbers, same accuracy. Needs a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from gpunet import data
from gpunet.train import TrainConfig, train
from tests.conftest import FASHION_DIR, cuda_device, numpy_device

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def fashion() -> data.Dataset:
    return data.load("fashion-mnist", data_dir=FASHION_DIR, offline=True)


def test_numpy_and_cupy_agree_after_20_full_batch_steps(fashion: data.Dataset) -> None:
    config = TrainConfig(iterations=20, eval_every=20)
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    assert gpu.device.startswith("cuda")
    for c, g in zip(cpu.params, gpu.params):
        assert np.linalg.norm(g - c) / np.linalg.norm(c) < 1e-4
    assert gpu.history[0].loss == pytest.approx(cpu.history[0].loss, rel=1e-5)


def test_cuda_training_reaches_the_cpu_accuracy(fashion: data.Dataset) -> None:
    config = TrainConfig(iterations=200, eval_every=50)
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    assert gpu.final.test_accuracy >= 0.80
    assert abs(gpu.final.test_accuracy - cpu.final.test_accuracy) <= 0.005


def test_minibatches_on_cuda_match_numpy(fashion: data.Dataset) -> None:
    config = TrainConfig(iterations=30, eval_every=30, batch_size=4096, dtype="float64")
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    for c, g in zip(cpu.params, gpu.params):
        np.testing.assert_allclose(g, c, rtol=1e-7, atol=1e-10)
