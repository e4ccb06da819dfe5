"""Update rules against hand-computed steps, on every backend and float dtype."""

from __future__ import annotations

import numpy as np
import pytest

from gpunet.core.flat import Layout
from gpunet.core.optimizers import OPTIMIZERS, make_optimizer
from gpunet.device.backend import to_numpy
from tests.conftest import AGREEMENT


def run(device_dtype, name: str, steps: int, lr: float = 0.1) -> list[np.ndarray]:
    """Two "layers" packed in one flat vector, as the trainer packs them; the result keeps the dtype."""
    device, dtype = device_dtype
    layout = Layout(((3,), (1, 1)))
    params = device.asarray(np.array([1.0, -2.0, 3.0, 0.5], dtype=dtype))
    opt = make_optimizer(name, params, lr)
    for t in range(1, steps + 1):
        opt.step(params, device.asarray(np.concatenate([g.ravel() for g in grads_at(t)]).astype(dtype)))
    host = to_numpy(params)
    assert host.dtype == dtype
    return layout.views(host)


def grads_at(t: int) -> list[np.ndarray]:
    return [np.array([0.3, -0.1, 2.0]) * t, np.array([[-1.0]]) / t]


def test_gd(device_dtype) -> None:
    p = run(device_dtype, "gd", 2)
    expected = np.array([1.0, -2.0, 3.0]) - 0.1 * (grads_at(1)[0] + grads_at(2)[0])
    np.testing.assert_allclose(p[0], expected, rtol=AGREEMENT[device_dtype[1]])


def test_momentum(device_dtype) -> None:
    p = run(device_dtype, "momentum", 2)
    v1 = grads_at(1)[1]
    v2 = 0.9 * v1 + grads_at(2)[1]
    np.testing.assert_allclose(p[1], np.array([[0.5]]) - 0.1 * (v1 + v2), rtol=AGREEMENT[device_dtype[1]])


def test_adam_matches_the_reference_formula(device_dtype) -> None:
    p = run(device_dtype, "adam", 3, lr=0.01)
    w = np.array([1.0, -2.0, 3.0])
    m = np.zeros(3)
    v = np.zeros(3)
    for t in range(1, 4):
        g = grads_at(t)[0]
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(p[0], w, rtol=AGREEMENT[device_dtype[1]])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_keep_dtype_and_identity(name: str) -> None:
    params = np.ones(4, dtype=np.float32)
    views = Layout(((2,), (1, 2))).views(params)
    make_optimizer(name, params, 0.5).step(params, np.full(4, 0.25, dtype=np.float32))
    assert params.dtype == np.float32
    assert (params < 1).all()
    # Updated in place, so the layers' views see the update with no copy back.
    assert np.array_equal(np.concatenate([v.ravel() for v in views]), params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_counts_its_updates(name: str) -> None:
    """The count a checkpoint saves and a resumed run continues from (Adam's bias correction reads it)."""
    params = np.zeros(4)
    opt = make_optimizer(name, params, 0.1)
    assert opt.steps == 0
    for k in range(1, 4):
        opt.step(params, np.ones(4))
        assert opt.steps == k
