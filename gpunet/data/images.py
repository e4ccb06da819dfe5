"""Images for `gpunet predict`: PNG (or any format Pillow reads), .npy, or IDX, as rows the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpunet.data.idx import read_idx
from gpunet.errors import DatasetError
from gpunet.files import inputs

SIDE = 28


def read_images(path: Path, features: int = SIDE * SIDE, pixels: bool = True) -> tuple[np.ndarray, list[str]]:
    """(n, features) float32 rows and a name for each, or DatasetError saying why not.

    `features` is what the model takes (784: 28x28 pictures). With `pixels`
    (a model of a built-in dataset), float values must be pixels in [0, 1];
    otherwise (a model of your own data) they are used as given. uint8 values
    are pixels either way, scaled to [0, 1]. The reader is chosen by what the
    file holds, not by its name.
    """
    path = Path(path)
    reason = inputs.problem(path)
    if reason is not None:
        raise DatasetError(reason, path)
    what = inputs.kind(path)
    if what == "npy":
        rows = _from_array(_load_npy(path), path, features, pixels)
    elif what in ("idx", "gzip"):
        rows = _from_array(read_idx(path), path, features, pixels)
    elif what in inputs.PICTURES or what == "unknown":  # Pillow knows more formats than gpunet sniffs
        return _from_picture(path, features)
    else:
        raise DatasetError(
            f"{inputs.describe(what)}, not an image gpunet reads (PNG or another picture, .npy, IDX)", path
        )
    names = [path.name] if len(rows) == 1 else [f"{path.name}[{i}]" for i in range(len(rows))]
    return rows, names


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise DatasetError(f"not a readable .npy array ({e})", path) from None


def _from_array(a: np.ndarray, path: Path, features: int, pixels: bool) -> np.ndarray:
    """One sample or a stack of them: (features,), (n, features), or images whose pixels number `features`."""
    if a.size == 0:
        raise DatasetError("holds no images", path)
    side = _square_side(features)
    if a.ndim >= 1 and a.size == features and (a.ndim == 1 or a.shape[-1] != features or len(a) == 1):
        a = a.reshape(1, -1)  # one sample: (784,), (28, 28) or (1, 784)
    elif a.ndim >= 2 and int(np.prod(a.shape[1:])) == features:
        a = a.reshape(len(a), -1)
    else:
        images = f"{side}x{side} images, (n, {side}, {side}) or " if side else ""
        raise DatasetError(f"expected {images}(n, {features}) for this model; found shape {a.shape}", path)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DatasetError(f"expected numbers, found {a.dtype}", path)
    if not np.isfinite(a).all():
        raise DatasetError("holds NaN or infinite values", path)
    if pixels and (not np.issubdtype(a.dtype, np.floating) or a.min() < 0 or a.max() > 1):
        raise DatasetError(
            f"expected uint8 pixels or floats in [0, 1], found {a.dtype} in [{a.min()}, {a.max()}]", path
        )
    return a.astype(np.float32)


def _square_side(features: int) -> int | None:
    side = round(features**0.5)
    return side if side * side == features else None


def _from_picture(path: Path, features: int = SIDE * SIDE) -> tuple[np.ndarray, list[str]]:
    """A picture: greyscale, fitted to the model's square (28x28), and light-on-dark as MNIST is
    (a dark-on-light one is inverted)."""
    from PIL import Image, UnidentifiedImageError

    side = _square_side(features)
    if side is None:
        raise DatasetError(f"a picture, but this model takes {features} features, not a square image", path)
    try:
        with Image.open(path) as picture:
            grey = picture.convert("L")
            if grey.size != (side, side):
                grey = grey.resize((side, side), Image.Resampling.LANCZOS)
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DatasetError(f"not an image gpunet can read: PNG, .npy or IDX ({e})", path) from None
    name = path.name
    if pixels.mean() > 0.5:  # mostly light: a dark drawing on white paper
        pixels = 1.0 - pixels
        name += " (inverted)"
    return pixels.reshape(1, -1), [name]
