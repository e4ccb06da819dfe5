"""Flat parameter vectors: packing, and views that share the vector's memory, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from gpunet.core.flat import Layout, flatten
from gpunet.device.backend import to_numpy
from gpunet.training.initializers import he_normal


def test_views_undo_flatten(device_dtype) -> None:
    device, dtype = device_dtype
    host = he_normal([5, 4, 3], seed=1, dtype=dtype)
    layout = Layout.of(host)
    assert layout.shapes == ((5, 4), (4,), (4, 3), (3,)) and layout.size == 20 + 4 + 12 + 3
    flat = flatten([device.asarray(p) for p in host])
    assert flat.shape == (layout.size,) and to_numpy(flat).dtype == dtype
    for view, original in zip(layout.views(flat), host):
        assert view.shape == original.shape and to_numpy(view).dtype == dtype
        np.testing.assert_array_equal(to_numpy(view), original)


def test_an_in_place_update_of_the_vector_reaches_every_view(device_dtype) -> None:
    # What the trainer relies on: the optimizer updates the vector, the network reads the views.
    device, dtype = device_dtype
    layout = Layout(((2, 3), (3,)))
    flat = device.asarray(np.arange(9.0, dtype=dtype))
    views = layout.views(flat)
    flat -= 0.5 * flat
    np.testing.assert_array_equal(to_numpy(views[0]), np.arange(6.0).reshape(2, 3) / 2)
    np.testing.assert_array_equal(to_numpy(views[1]), np.arange(6.0, 9.0) / 2)


def test_a_vector_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="9 elements"):
        Layout(((2, 3), (3,))).views(np.zeros(8))


def test_a_single_array_flattens_too(device_dtype) -> None:
    """A softmax regression's optimizer slot, say: one array in, its elements out, in order."""
    device, dtype = device_dtype
    flat = flatten([device.asarray(np.arange(6.0, dtype=dtype).reshape(2, 3))])
    assert flat.shape == (6,)
    np.testing.assert_array_equal(to_numpy(flat), np.arange(6.0))
