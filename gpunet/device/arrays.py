"""A Python caller's arrays: which device they live on, how they get there, and the checks they must pass.

numpy, cupy and array-api-strict arrays are used in their own namespace (the
math runs on all three unchanged), so a cupy array trains on its own GPU and
never visits the host. Any other array that speaks DLPack (PyTorch, JAX, ...)
is taken without a copy as numpy if it lives in host memory, as cupy if on a
CUDA device. Anything else (lists, data frames) goes through numpy.asarray.

Errors are ValueError or TypeError with scikit-learn's wording, since its
estimator checks (and its users) expect those.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from array_api_compat import is_array_api_strict_namespace, is_cupy_array, is_numpy_array

from gpunet.device.backend import Array, Device, array_namespace, resolve_device, to_numpy

DLPACK_CPU, DLPACK_CUDA = 1, 2


class DataConversionWarning(UserWarning):
    """Data was given in another shape than expected and was converted (scikit-learn's name)."""


def native(a: Any) -> bool:
    """Whether gpunet's math runs on `a`'s own namespace."""
    if is_numpy_array(a) or is_cupy_array(a):
        return True
    try:
        return is_array_api_strict_namespace(array_namespace(a))
    except TypeError:
        return False


def as_array(a: Any, numbers: bool = True) -> Array:
    """`a` as an array gpunet's math runs on, without a copy where the memory can be shared.

    With `numbers`, Python objects are converted to floats (labels may stay strings).
    """
    if type(a).__module__.startswith("scipy.sparse"):
        raise TypeError("Sparse data was passed, but dense data is required: use .toarray() to convert it")
    if native(a):
        return a.astype(np.float64) if numbers and is_numpy_array(a) and a.dtype == object else a
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__"):
        kind, _ = a.__dlpack_device__()
        if kind == DLPACK_CUDA:
            return resolve_device("cuda").xp.from_dlpack(a)
        if kind == DLPACK_CPU:
            return np.from_dlpack(a)
    a = np.asarray(a)
    # Numbers held as Python objects: as floats, or numpy's own TypeError naming what is not a number.
    return a.astype(np.float64) if numbers and a.dtype == object else a


def device_of(a: Array) -> Device:
    """The device an array already lives on."""
    if is_numpy_array(a):
        return resolve_device("cpu")
    if is_cupy_array(a):
        return resolve_device(f"cuda:{a.device.id}")
    xp = array_namespace(a)
    return Device(xp.__name__.split(".")[0], xp)


def choose_device(a: Array, spec: str) -> Device:
    """`spec` if given; with "auto", where `a` lives if not on the host, else the CLI's auto (cuda if usable)."""
    if spec != "auto":
        return resolve_device(spec)
    if is_numpy_array(a):
        return resolve_device("auto")
    return device_of(a)


def to_device(a: Array, device: Device) -> Array:
    """`a` on `device`: itself if it is there already, else through the host (an explicit --device asked for it)."""
    if array_namespace(a) is device.xp and (not is_cupy_array(a) or f"cuda:{a.device.id}" == device.name):
        return a
    if device.is_cuda and is_cupy_array(a):
        return device.xp.asarray(a)  # GPU to GPU, without the host
    return device.asarray(to_numpy(a))


def check_rows(x: Array, what: str = "X") -> None:
    """A 2-D array of finite real numbers with at least one sample and one feature."""
    xp = array_namespace(x)
    if x.ndim != 2:
        raise ValueError(
            f"Expected a 2D array for {what}, got {x.ndim}D with shape {tuple(x.shape)} instead. "
            "Reshape your data, e.g. x.reshape(-1, 1) for a single feature or x.reshape(1, -1) for a single sample"
        )
    if xp.isdtype(x.dtype, "complex floating"):
        raise ValueError("Complex data not supported")
    if not xp.isdtype(x.dtype, ("bool", "integral", "real floating")):
        raise ValueError(f"{what} holds {x.dtype} values; gpunet takes numbers")
    n, d = x.shape
    if n < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={tuple(x.shape)}) while a minimum of 1 is required.")
    if d < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={tuple(x.shape)}) while a minimum of 1 is required.")
    if xp.isdtype(x.dtype, "real floating") and not bool(to_numpy(xp.all(xp.isfinite(x)))):
        raise ValueError(f"Input {what} contains NaN or infinity.")


def encode_labels(y: Any, device: Device) -> tuple[np.ndarray, Array]:
    """The distinct labels (sorted, on the host) and each sample's index among them (on `device`)."""
    if y is None:
        raise ValueError("MLPClassifier requires y to be passed, but the target y is None")
    y = as_array(y, numbers=False)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. "
            "Please change the shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {tuple(y.shape)} instead.")
    if is_numpy_array(y) and y.dtype.kind in "OUS":  # strings (or objects): labels on the host
        classes, indices = np.unique(y, return_inverse=True)
        return classes, device.asarray(indices.astype(np.int64))
    y = to_device(y, device)
    xp = array_namespace(y)
    if xp.isdtype(y.dtype, "complex floating"):
        raise ValueError("Complex data not supported")
    if xp.isdtype(y.dtype, "real floating"):
        if not bool(to_numpy(xp.all(xp.isfinite(y)))):
            raise ValueError("Input y contains NaN or infinity.")
        if not bool(to_numpy(xp.all(y == xp.round(y)))):
            raise ValueError(
                "Unknown label type: continuous. MLPClassifier predicts classes: "
                "y must hold class labels (integers, strings), not measurements"
            )
    classes, indices = xp.unique_inverse(y)  # on the device: only the few classes come back
    return to_numpy(classes), xp.astype(indices, xp.int64)


def comparable_labels(y: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    """Labels to score predictions of `classes` against: one per sample, of the same kind as the classes.

    Strings never equal numbers: comparing them would score 0 without a word, so it is refused.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {tuple(y.shape)} instead.")
    if len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)}: one label per sample")
    texts, numbers = "US", "biuf"
    for a, b in ((y, classes), (classes, y)):
        if a.dtype.kind in texts and b.dtype.kind in numbers:
            raise ValueError(
                f"y holds {_kind(y)} but the model's classes_ are {_kind(classes)} ({classes[:3].tolist()}…): "
                "labels of another kind never match a prediction"
            )
    return y


def _kind(a: np.ndarray) -> str:
    return "strings" if a.dtype.kind in "US" else f"numbers ({a.dtype})"
