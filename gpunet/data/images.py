"""Images for `gpunet predict`: PNG (or any format Pillow reads), .npy, or IDX, as rows the model takes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpunet.data.idx import read_idx
from gpunet.errors import ConfigError, DatasetError, printable
from gpunet.files import archives, inputs

if TYPE_CHECKING:  # Pillow is imported only when a picture is read
    from PIL import Image

SIDE = 28
INVERT_CHOICES = ("auto", "yes", "no")


def read_images(
    path: Path, features: int = SIDE * SIDE, pixels: bool = True, invert: str = "auto"
) -> tuple[np.ndarray, list[str]]:
    """(n, features) float32 rows and a name for each, or DatasetError saying why not.

    `features` is what the model takes (784: 28x28 pictures). With `pixels`
    (a model of a built-in dataset), float values must be pixels in [0, 1];
    otherwise (a model of your own data) they are used as given. uint8 values
    are pixels either way, scaled to [0, 1]. The reader is chosen by what the
    file holds, not by its name. A picture's name says how it was converted
    (see _from_picture; `invert` is auto, yes or no).
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
        return _from_picture(path, features, invert)
    else:
        raise DatasetError(
            f"{inputs.describe(what)}, not an image gpunet reads (PNG or another picture, .npy, IDX)", path
        )
    names = [path.name] if len(rows) == 1 else [f"{path.name}[{i}]" for i in range(len(rows))]
    return rows, names


def check_invert(invert: str) -> None:
    """`invert` must be auto (judged from the border), yes or no."""
    if invert not in INVERT_CHOICES:
        raise ConfigError(f"--invert must be auto, yes or no, got '{printable(invert)}'")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return archives.read_npy(path)  # its header checked against the file and the memory here first
    except OSError as e:
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
    if np.abs(a).max() > np.finfo(np.float32).max:  # read as float32: it would become infinite
        raise DatasetError(f"holds values up to {np.abs(a).max():.3g}, beyond float32's range (±3.4e+38)", path)
    if pixels and (not np.issubdtype(a.dtype, np.floating) or a.min() < 0 or a.max() > 1):
        raise DatasetError(
            f"expected uint8 pixels or floats in [0, 1], found {a.dtype} in [{a.min()}, {a.max()}]", path
        )
    return a.astype(np.float32)


def _square_side(features: int) -> int | None:
    side = round(features**0.5)
    return side if side * side == features else None


def _from_picture(path: Path, features: int = SIDE * SIDE, invert: str = "auto") -> tuple[np.ndarray, list[str]]:
    """A picture as one row of [0, 1] pixels, light on dark as MNIST is, and what was done to it.

    Its values are scaled by the range its mode declares (8-bit 0..255, 16-bit
    0..65535, 32-bit integers 0..2**31-1, floats as [0, 1] or [0, 255]);
    transparent parts are laid on the background that contrasts with what is
    drawn; then, with `invert` "auto", it is inverted when its border (the
    outermost pixels, where a drawing's paper shows) is mostly light.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    side = _square_side(features)
    if side is None:
        raise DatasetError(f"a picture, but this model takes {features} features, not a square image", path)
    check_invert(invert)
    try:
        with warnings.catch_warnings():
            # Pillow only warns about pictures between its limit and twice it: past the limit is refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                width, height = picture.size
                needed = width * height * 4 * max(1, len(picture.getbands()))
                if needed > inputs.memory_limit():
                    raise DatasetError(f"a {width}x{height} picture: too large to decode here", path)
                frames = getattr(picture, "n_frames", 1)
                picture = ImageOps.exif_transpose(picture)
                grey, done = _grey(picture, path)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"a picture larger than Pillow's decompression-bomb limit ({e})", path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DatasetError(f"not an image gpunet can read: PNG, .npy or IDX ({e})", path) from None
    except Exception as e:  # a plugin's bug on a crafted file: still one line, never a traceback
        raise DatasetError(f"not an image gpunet can read ({type(e).__name__}: {e})", path) from None
    if frames > 1:
        done.append(f"first of {frames} frames")
    ring = _border(grey)
    light = float(np.median(ring)) > 0.5
    if invert == "yes" or (invert == "auto" and light):
        grey = 1.0 - grey
        done.append("inverted" + (": light border" if invert == "auto" else ": --invert yes"))
    elif invert == "no" and light:
        done.append("not inverted (--invert no) although its border is light")
    if grey.shape != (side, side):
        done.append(f"{width}x{height} resized to {side}x{side}")
        resized = Image.fromarray(grey.astype(np.float32)).resize((side, side), Image.Resampling.LANCZOS)
        grey = np.clip(np.asarray(resized), 0.0, 1.0)  # LANCZOS overshoots a little at sharp edges
    return grey.astype(np.float32).reshape(1, -1), [f"{path.name} ({', '.join(done)})"]


def _border(grey: np.ndarray) -> np.ndarray:
    """The outermost pixels: as many rows and columns as one pixel of a 28x28 copy spans."""
    h, w = grey.shape
    k = max(1, min(h, w) // SIDE)
    return np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])


def _grey(picture: Image.Image, path: Path) -> tuple[np.ndarray, list[str]]:
    """[0, 1] greyscale values of a picture by its real range, alpha laid on the contrasting background."""
    mode = picture.mode
    alpha = None
    if (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in picture.info)
        or (mode in ("RGB", "L") and "transparency" in picture.info)
    ):
        rgba = picture.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        values = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32) / 255.0
        what = f"{mode} 8-bit"
    elif mode == "1":
        values, what = np.asarray(picture, dtype=np.float32), "1-bit"
    elif mode in ("L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        values = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
        what = f"{mode} 8-bit" if mode != "L" else "8-bit greyscale"
    elif mode.startswith("I;16"):
        values, what = np.asarray(picture, dtype=np.float64) / 65535.0, "16-bit greyscale, 0..65535"
    elif mode == "I":
        raw: np.ndarray = np.asarray(picture, dtype=np.int64)
        bits = _bits(picture)
        top = 2**bits - 1 if bits < 32 else 2**31 - 1
        if raw.min(initial=0) < 0:
            raise DatasetError(f"a {bits}-bit integer picture with negative values (down to {raw.min()})", path)
        values, what = raw / top, f"{bits}-bit integer greyscale, 0..{top:,}"
    elif mode == "F":
        raw = np.asarray(picture, dtype=np.float64)
        if not np.isfinite(raw).all():
            raise DatasetError("a floating-point picture holding NaN or infinite values", path)
        lo, hi = float(raw.min()), float(raw.max())
        if lo >= 0 and hi <= 1:
            values, what = raw, "float greyscale, [0, 1]"
        elif lo >= 0 and hi <= 255:
            values, what = raw / 255.0, "float greyscale, [0, 255]"
        else:
            raise DatasetError(
                f"a floating-point picture with values in [{lo:g}, {hi:g}]: "
                "gpunet reads float pictures in [0, 1] or [0, 255]",
                path,
            )
    else:
        values = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
        what = f"{mode}, converted by Pillow to 8-bit greyscale"
    done = [what]
    if alpha is not None and alpha.min() < 1:
        # What is drawn (the opaque part) goes on the background it stands out from: dark strokes on
        # white paper (then inverted like any drawing), light ones on black.
        drawn = float((values * alpha).sum() / max(alpha.sum(), 1e-9))
        background = 1.0 if drawn < 0.5 else 0.0
        values = values * alpha + background * (1 - alpha)
        done.append(f"transparency laid on {'white' if background else 'black'}")
    return np.asarray(values, dtype=np.float64), done


def _bits(picture: Image.Image) -> int:
    """The bit depth of a 32-bit integer ("I") picture's samples: a TIFF's tag says, a PNG's is 16."""
    if picture.format == "PNG":  # Pillow before 10 opened 16-bit PNGs as "I"
        return 16
    tags = getattr(picture, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0]
    return int(bits) if bits in (8, 16, 32) else 32
