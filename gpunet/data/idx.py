"""The IDX file format of MNIST and Fashion-MNIST, read strictly.

Layout: two zero bytes, a type code, the number of dimensions, then each
dimension as a big-endian uint32, then the values, big-endian. Files may be
gzip-compressed. Anything that does not add up raises DatasetError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from gpunet.errors import DatasetError
from gpunet.files import inputs
from gpunet.files.inputs import byte_size

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
SLACK = 1 << 16  # bytes decompressed past what the header declares, to count a few extra exactly


def read_bytes(path: Path) -> tuple[bytes, bytes]:
    """The file's bytes as stored and as decompressed (the same object if not gzip).

    Bounded before anything is read: the stored size, and for gzip the size its
    IDX header declares, must fit this machine's memory, and decompression stops
    one byte past what the header declares, so an archive that holds more (a
    gzip bomb) is refused without being inflated.
    """
    limit = inputs.memory_limit()
    try:
        size = os.stat(path).st_size
        if size > limit:
            raise DatasetError(f"{byte_size(size)}, more than the {byte_size(limit)} of memory this machine has", path)
        stored = Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read: {e.strerror or e}", path) from e
    if not stored.startswith(GZIP_MAGIC):
        return stored, stored
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(stored)) as f:
            head = f.read(4)
            if len(head) == 4 and head[:2] == b"\x00\x00" and head[3] > 0:
                head += f.read(4 * head[3])
            expected = _declared_size(head)
            if expected is None:  # not an IDX header: parse_idx says what is wrong with it
                return stored, head
            if expected > limit:
                raise DatasetError(
                    f"its IDX header declares {byte_size(expected)} of data, more than the {byte_size(limit)} "
                    "of memory this machine has",
                    path,
                )
            contents = head + f.read(expected - len(head) + SLACK)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"corrupt or truncated gzip data ({e})", path) from e
    if len(contents) >= expected + SLACK:  # a few bytes too many are counted by parse_idx; this many, not
        raise DatasetError(
            f"decompresses to more than the {expected:,} bytes its IDX header declares (stopped reading there)", path
        )
    return stored, contents


def _declared_size(head: bytes) -> int | None:
    """Header plus data bytes an IDX header declares, or None if `head` is not a whole, valid header."""
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_TYPES or head[3] == 0 or len(head) < 4 + 4 * head[3]:
        return None
    shape = np.frombuffer(head, dtype=">u4", count=head[3], offset=4)
    return 4 + 4 * head[3] + math.prod(int(d) for d in shape) * np.dtype(IDX_TYPES[head[2]]).itemsize


def parse_idx(data: bytes, path: object = "<bytes>") -> np.ndarray:
    """Validate an IDX header against the data length and return the array (native byte order)."""
    if len(data) < 4:
        raise DatasetError(f"too short for an IDX header ({len(data)} bytes)", path)
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"not an IDX file: bad magic number 0x{data[:4].hex()}", path)
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        raise DatasetError(f"unknown IDX value type 0x{type_code:02x}", path)
    if ndim == 0:
        raise DatasetError("IDX header declares zero dimensions", path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}", path)
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if 0 in shape:  # no values at all (say, images of 0x0 pixels): nothing any later step can use
        raise DatasetError(f"IDX header declares an empty shape {shape}: a dimension of size 0", path)
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) < expected:
        raise DatasetError(f"truncated: shape {shape} needs {expected} bytes, file has {len(data)}", path)
    if len(data) > expected:
        raise DatasetError(f"{len(data) - expected} unexpected bytes after the data of shape {shape}", path)
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip or raw."""
    _, data = read_bytes(path)
    return parse_idx(data, path)


def check_split(
    images: np.ndarray, labels: np.ndarray, num_classes: int, images_path: object, labels_path: object
) -> None:
    """Images and labels that belong together: uint8 images, one label each, labels < num_classes."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"expected uint8 images of shape (n, rows, cols), found {images.dtype} {images.shape}", images_path
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"expected uint8 labels of shape (n,), found {labels.dtype} {labels.shape}", labels_path)
    if len(labels) == 0:
        raise DatasetError("holds no samples", labels_path)
    if len(images) != len(labels):
        raise DatasetError(f"{len(labels)} labels for {len(images)} images in {images_path}", labels_path)
    if len(labels) and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DatasetError(f"label {labels[bad]} at index {bad} is outside 0..{num_classes - 1}", labels_path)
