"""The network math: exact gradients, stable loss, and one test for each bug of the seed network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpunet.core import model
from gpunet.data.datasets import synthetic
from gpunet.device.backend import to_numpy
from gpunet.training.doctor import gradient_error
from gpunet.training.initializers import OUTPUT_SCALE, he_normal
from gpunet.training.train import DeviceData
from tests.conftest import AGREEMENT

ARCHITECTURES = [(), (5,), (7, 6), (4, 3, 5)]


def random_problem(rng: np.random.Generator, n: int = 13, inputs: int = 9, classes: int = 4):
    x = rng.random((n, inputs))
    labels = rng.integers(0, classes, n)
    targets = np.eye(classes)[labels]
    return x, labels, targets


def mean_loss(params: list[np.ndarray], x: np.ndarray, targets: np.ndarray) -> float:
    return float(model.cross_entropy(model.forward(params, x), targets))


@pytest.mark.parametrize("hidden", ARCHITECTURES, ids=str)
def test_gradients_match_central_differences(hidden: tuple[int, ...], rng: np.random.Generator) -> None:
    """The check `gpunet doctor` runs (gradient_error), here on every element of every parameter; that it
    fails on a wrong backward pass: tests/test_doctor.py, with the seed's bias gradients."""
    x, _, targets = random_problem(rng)
    params = he_normal([x.shape[1], *hidden, targets.shape[1]], seed=3, dtype="float64")
    # Non-zero biases, so a bias gradient summed over the wrong axes would show.
    params = [p + 0.1 * rng.standard_normal(p.shape) for p in params]
    loss, grads = model.loss_and_gradients(params, x, targets)
    assert float(loss) == pytest.approx(mean_loss(params, x, targets), rel=1e-12)
    for i, (p, g) in enumerate(zip(params, grads)):
        assert g.shape == p.shape
        rel = gradient_error(params, x, targets, [(i, idx) for idx in np.ndindex(p.shape)])
        assert rel < 1e-6, f"relative error {rel:.2e} for a parameter of shape {p.shape}"


def test_gradient_sums_add_up_over_chunks(rng: np.random.Generator) -> None:
    x, _, targets = random_problem(rng, n=20)
    params = he_normal([9, 6, 4], seed=0, dtype="float64")
    whole_loss, whole = model.gradient_sums(params, x, targets)
    a_loss, a = model.gradient_sums(params, x[:7], targets[:7])
    b_loss, b = model.gradient_sums(params, x[7:], targets[7:])
    assert float(a_loss + b_loss) == pytest.approx(float(whole_loss), rel=1e-12)
    for g, ga, gb in zip(whole, a, b):
        np.testing.assert_allclose(ga + gb, g, rtol=1e-12, atol=1e-14)


# --- the seed network's bugs, one test each -------------------------------------------------


def test_softmax_is_stable_for_huge_logits() -> None:
    """Seed bug: exp of unscaled logits overflowed and the output turned to NaN."""
    logits = np.array([[1000.0, 0.0, -1000.0], [3e4, 3e4, 0.0]], dtype=np.float32)
    logp = model.log_softmax(logits)
    assert np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(logp[1, :2], math.log(0.5), rtol=1e-6)
    loss = model.cross_entropy(logits, np.eye(3, dtype=np.float32)[[2, 0]])
    assert np.isfinite(loss) and float(loss) == pytest.approx((2000.0 + math.log(2)) / 2, rel=1e-5)


def test_raw_pixels_are_scaled_to_unit_range_on_the_device(device) -> None:
    """Seed bug: raw 0..255 inputs."""
    images = np.array([[0, 128, 255], [255, 1, 0]], dtype=np.uint8)
    split = DeviceData.from_host(images, np.array([0, 1], dtype=np.uint8), device, "float32", 3)
    x = to_numpy(split.x)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(to_numpy(split.targets), [[1, 0, 0], [0, 1, 0]])


def test_accuracy_is_read_from_the_output_layer(rng: np.random.Generator) -> None:
    """Seed bug: accuracy was the argmax of the 16-unit hidden layer, not of the 10 outputs."""
    x, _, _ = random_problem(rng, n=200, inputs=6, classes=4)
    params = he_normal([6, 8, 4], seed=1, dtype="float64")
    params[1] += 0.5  # keep hidden units active so their argmax means something
    labels = model.predict(params, x)  # labels the output layer gets exactly right
    hidden_guess = np.argmax(np.maximum(x @ params[0] + params[1], 0), axis=1)
    assert np.mean(hidden_guess == labels) < 0.9  # the seed's reading would be wrong here
    _, accuracy = model.evaluate(params, x, np.eye(4)[labels], labels)
    assert float(accuracy) == 1.0


def test_bias_gradients_are_per_neuron(rng: np.random.Generator) -> None:
    """Seed bug: np.sum(dz) summed every axis, giving one scalar shared by a layer's biases."""
    x, _, targets = random_problem(rng, n=50)
    params = he_normal([9, 5, 4], seed=0, dtype="float64")
    _, grads = model.loss_and_gradients(params, x, targets)
    for bias_grad, bias in zip(grads[1::2], params[1::2]):
        assert bias_grad.shape == bias.shape
        assert np.unique(np.round(bias_grad, 12)).size == bias.size
    logits = model.forward(params, x)
    np.testing.assert_allclose(grads[3], (np.exp(model.log_softmax(logits)) - targets).mean(axis=0), rtol=1e-12)


def test_he_normal_init_scale_and_reproducibility() -> None:
    """Seed bug: uniform(-0.5, 0.5) weights, too large for 784 inputs."""
    params = he_normal([784, 16, 16, 10], seed=0, dtype="float64")
    assert [p.shape for p in params] == [(784, 16), (16,), (16, 16), (16,), (16, 10), (10,)]
    assert params[0].std() == pytest.approx(math.sqrt(2 / 784), rel=0.05)
    assert params[4].std() == pytest.approx(OUTPUT_SCALE * math.sqrt(2 / 16), rel=0.25)
    assert all((b == 0).all() for b in params[1::2])
    again = he_normal([784, 16, 16, 10], seed=0, dtype="float32")
    for p64, p32 in zip(params, again):
        assert p32.dtype == np.float32
        np.testing.assert_array_equal(p32, p64.astype(np.float32))
    other = he_normal([784, 16, 16, 10], seed=1)
    assert not np.array_equal(other[0], again[0])


def test_loss_at_initialisation_is_ln_classes() -> None:
    """A correctly initialised classifier starts out guessing: loss = ln(10)."""
    ds = synthetic()
    x = ds.train_images / 255.0
    params = he_normal([784, 16, 16, 10], seed=0, dtype="float64")
    loss, _ = model.evaluate(params, x, np.eye(10)[ds.train_labels], ds.train_labels.astype(np.int64))
    assert float(loss) == pytest.approx(math.log(10), abs=0.05)


def test_relu_keeps_most_units_alive_at_initialisation() -> None:
    ds = synthetic()
    params = he_normal([784, 16, 16, 10], seed=0, dtype="float64")
    for hidden in model.hidden_activations(params, ds.train_images / 255.0)[1:]:
        dead = np.mean((hidden > 0).sum(axis=0) == 0)
        assert dead < 0.25


# --- portability ----------------------------------------------------------------------------


def test_math_runs_unchanged_on_every_backend_and_dtype(device_dtype, rng: np.random.Generator) -> None:
    """Loss, gradients, predictions and accuracy in every namespace × dtype, against float64 numpy; every
    result keeps the dtype (a float64 bias gradient would upcast the whole flat vector)."""
    device, dtype = device_dtype
    x, labels, targets = random_problem(rng, n=30)
    host_params = he_normal([9, 7, 6, 4], seed=5, dtype="float64")
    params = [device.asarray(p.astype(dtype)) for p in host_params]
    x_dev, targets_dev = device.asarray(x.astype(dtype)), device.asarray(targets.astype(dtype))
    loss, grads = model.loss_and_gradients(params, x_dev, targets_dev)
    ref_loss, ref_grads = model.loss_and_gradients(host_params, x, targets)
    tol = AGREEMENT[dtype]
    assert to_numpy(loss).dtype == dtype and float(to_numpy(loss)) == pytest.approx(float(ref_loss), rel=tol)
    for g, ref in zip(grads, ref_grads):
        assert to_numpy(g).dtype == dtype
        np.testing.assert_allclose(to_numpy(g), ref, rtol=tol, atol=tol * np.abs(ref).max())
    sums_loss, sums = model.gradient_sums(params, x_dev, targets_dev)
    assert to_numpy(sums_loss).dtype == dtype and [to_numpy(g).dtype for g in sums] == [np.dtype(dtype)] * 6
    assert to_numpy(model.column_sums(x_dev)).dtype == dtype
    pred = to_numpy(model.predict(params, x_dev))
    np.testing.assert_array_equal(pred, model.predict(host_params, x))
    _, acc = model.evaluate(params, x_dev, targets_dev, device.asarray(labels))
    assert float(to_numpy(acc)) == pytest.approx(float(np.mean(pred == labels)))


def test_softmax_is_stable_for_huge_logits_everywhere(device_dtype) -> None:
    """The seed's overflow, in every namespace × dtype: float32's exp overflows near 88, float64's near 709."""
    device, dtype = device_dtype
    logits = device.asarray(np.array([[1000.0, 0.0, -1000.0], [3e4, 3e4, 0.0]], dtype=dtype))
    logp = to_numpy(model.log_softmax(logits))
    assert logp.dtype == dtype and np.isfinite(logp).all()
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(logp[1, :2], math.log(0.5), rtol=1e-6)


def test_each_sample_is_shifted_by_its_own_maximum() -> None:
    """One sample's logits near 1000 must not underflow another's softmax: the shift is per sample, not global."""
    w = np.zeros((2, 3))
    w[0] = [1000.0, 0.0, 0.0]  # the first input drives class 0's logit to 1000
    params = [w, np.array([0.0, 1.0, 2.0])]
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    targets = np.eye(3)[[0, 2]]
    loss, grads = model.gradient_sums(params, x, targets)
    one_by_one = [model.gradient_sums(params, x[i : i + 1], targets[i : i + 1]) for i in range(2)]
    assert np.isfinite(loss) and loss == pytest.approx(sum(part[0] for part in one_by_one))
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, one_by_one[0][1][k] + one_by_one[1][1][k])
