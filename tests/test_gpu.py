"""numpy and cupy run the same math: same start, same numbers, same accuracy. Needs a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from gpunet.core import model
from gpunet.core.optimizers import OPTIMIZERS, make_optimizer
from gpunet.data import datasets
from gpunet.device.backend import fusable, to_numpy
from gpunet.training.initializers import he_normal
from gpunet.training.train import TrainConfig, train
from tests.conftest import cuda_device, numpy_device

pytestmark = pytest.mark.gpu


def test_numpy_and_cupy_agree_after_20_full_batch_steps(fashion: datasets.Dataset) -> None:
    config = TrainConfig(iterations=20, eval_every=20)
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    assert gpu.device.startswith("cuda")
    for c, g in zip(cpu.params, gpu.params):
        assert np.linalg.norm(g - c) / np.linalg.norm(c) < 1e-4
    assert gpu.history[0].loss == pytest.approx(cpu.history[0].loss, rel=1e-5)


def test_cuda_training_reaches_the_cpu_accuracy(fashion: datasets.Dataset) -> None:
    config = TrainConfig(iterations=200, eval_every=50)
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    assert gpu.final.test_accuracy >= 0.80
    assert abs(gpu.final.test_accuracy - cpu.final.test_accuracy) <= 0.005


def test_minibatches_on_cuda_match_numpy(fashion: datasets.Dataset) -> None:
    config = TrainConfig(iterations=30, eval_every=30, batch_size=4096, dtype="float64")
    cpu = train(config, fashion, numpy_device())
    gpu = train(config, fashion, cuda_device())
    for c, g in zip(cpu.params, gpu.params):
        np.testing.assert_allclose(g, c, rtol=1e-7, atol=1e-10)


# --- fused kernels ------------------------------------------------------------------------------


@pytest.fixture
def unfused():
    """Run the cupy math operation by operation, as numpy runs it."""
    fusable.enabled = False
    yield
    fusable.enabled = True


def gradient_problem(n: int = 3000) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.random((n, 784), dtype=np.float32)
    targets = model.one_hot(rng.integers(0, 10, n), 10, np.float32)
    return he_normal([784, 16, 16, 10], seed=1), x, targets


def cupy_gradient_sums(params, x, targets):
    dev = cuda_device()
    loss, grads = model.gradient_sums([dev.asarray(p) for p in params], dev.asarray(x), dev.asarray(targets))
    # A Python scalar in a fused kernel must not promote float32 work to float64.
    assert loss.dtype == x.dtype and all(g.dtype == x.dtype for g in grads)
    return float(to_numpy(loss)), [to_numpy(g) for g in grads]


def test_fused_gradient_matches_numpy_and_the_unfused_cupy_step(request: pytest.FixtureRequest) -> None:
    params, x, targets = gradient_problem()
    ref_loss, ref_grads = model.gradient_sums(params, x, targets)
    fused_loss, fused_grads = cupy_gradient_sums(params, x, targets)
    # The elementwise steps really ran as fused kernels, not as the Python fallback.
    assert not fusable.fallbacks  # each function's reason would be here
    assert not fusable.second_tracer  # cupy.fuse's second implementation: another kernel than the CPU checked
    for kernel in (
        model.bias_relu,
        model.relu_backward,
        model.logits_max,
        model.log_sum_exp,
        model.softmax_cross_entropy,
    ):
        assert kernel._fused and kernel._proven, kernel.__name__
    request.getfixturevalue("unfused")
    plain_loss, plain_grads = cupy_gradient_sums(params, x, targets)
    for loss in (fused_loss, plain_loss):
        assert loss == pytest.approx(float(ref_loss), rel=1e-5)
    for fused, plain, ref in zip(fused_grads, plain_grads, ref_grads):
        scale = np.abs(ref).max()
        np.testing.assert_allclose(fused, ref, atol=1e-5 * scale, rtol=1e-4)
        np.testing.assert_allclose(plain, ref, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_rules_match_numpy(name: str) -> None:
    rng = np.random.default_rng(4)
    host = rng.standard_normal(12730).astype(np.float32)
    grads = [rng.standard_normal(12730).astype(np.float32) for _ in range(3)]
    dev = cuda_device()
    on_gpu, on_cpu = dev.asarray(host.copy()), host.copy()
    gpu_opt, cpu_opt = make_optimizer(name, on_gpu, 0.01), make_optimizer(name, on_cpu, 0.01)
    for g in grads:
        gpu_opt.step(on_gpu, dev.asarray(g))
        cpu_opt.step(on_cpu, g)
    assert on_gpu.dtype == on_cpu.dtype == np.float32
    assert all(slot.dtype == np.float32 for slot in gpu_opt.slots.values())
    np.testing.assert_allclose(to_numpy(on_gpu), on_cpu, rtol=1e-5, atol=1e-6)
    for slot, value in cpu_opt.slots.items():
        np.testing.assert_allclose(to_numpy(gpu_opt.slots[slot]), value, rtol=1e-5, atol=1e-7)
