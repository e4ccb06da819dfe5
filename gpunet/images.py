"""Images for `gpunet predict`: PNG (or any format Pillow reads), .npy, or IDX, as 784-pixel rows in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpunet import inputs
from gpunet.errors import DatasetError
from gpunet.idx import read_idx

SIDE = 28


def read_images(path: Path) -> tuple[np.ndarray, list[str]]:
    """(n, 784) float32 pixels in [0, 1] and a name for each image, or DatasetError saying why not.

    The reader is chosen by what the file holds, not by its name.
    """
    path = Path(path)
    reason = inputs.problem(path)
    if reason is not None:
        raise DatasetError(reason, path)
    what = inputs.kind(path)
    if what == "npy":
        pixels = _from_array(_load_npy(path), path)
    elif what in ("idx", "gzip"):
        pixels = _from_array(read_idx(path), path)
    elif what in inputs.PICTURES or what == "unknown":  # Pillow knows more formats than gpunet sniffs
        return _from_picture(path)
    else:
        raise DatasetError(
            f"{inputs.describe(what)}, not an image gpunet reads (PNG or another picture, .npy, IDX)", path
        )
    names = [path.name] if len(pixels) == 1 else [f"{path.name}[{i}]" for i in range(len(pixels))]
    return pixels, names


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise DatasetError(f"not a readable .npy array ({e})", path) from None


def _from_array(a: np.ndarray, path: Path) -> np.ndarray:
    """Accept (28, 28), (n, 28, 28), (784,) or (n, 784); uint8 0..255 or floats in [0, 1]."""
    if a.size == 0:
        raise DatasetError("holds no images", path)
    if a.shape in ((SIDE, SIDE), (SIDE * SIDE,)):
        a = a.reshape(1, -1)
    elif a.ndim == 3 and a.shape[1:] == (SIDE, SIDE):
        a = a.reshape(len(a), -1)
    elif not (a.ndim == 2 and a.shape[1] == SIDE * SIDE):
        raise DatasetError(f"expected 28x28 images, (n, 28, 28) or (n, 784); found shape {a.shape}", path)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DatasetError(
            f"expected uint8 pixels or floats in [0, 1], found {a.dtype} in [{a.min()}, {a.max()}]", path
        )
    return a.astype(np.float32)


def _from_picture(path: Path) -> tuple[np.ndarray, list[str]]:
    """A picture: greyscale, fitted to 28x28, and light-on-dark as MNIST is (a dark-on-light one is inverted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            grey = picture.convert("L")
            if grey.size != (SIDE, SIDE):
                grey = grey.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DatasetError(f"not an image gpunet can read: PNG, .npy or IDX ({e})", path) from None
    name = path.name
    if pixels.mean() > 0.5:  # mostly light: a dark drawing on white paper
        pixels = 1.0 - pixels
        name += " (inverted)"
    return pixels.reshape(1, -1), [name]
