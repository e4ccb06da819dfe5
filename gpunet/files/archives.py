"""Arrays from .npy files and .npz archives, read within bounds a hostile file cannot move.

A .npy header declares a dtype and a shape; a zip member declares its size.
Both are checked before a byte of data is read: the header's size must be
what the member (or file) holds, and it must fit the memory this machine has
(gpunet.files.inputs.memory_limit). Members are read by name, one at a time,
only when asked for, so an archive's unused members are never decompressed;
and a zip member is never read past the size it declares. Object arrays
(pickles) are refused without being read.

Every refusal is a DatasetError naming the file, the member and what is wrong.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from gpunet.errors import DatasetError
from gpunet.files import inputs
from gpunet.files.inputs import byte_size

MAX_HEADER = 10_000  # bytes of a .npy header (numpy's own default limit)
CHUNK = 1 << 20


def _header(f: IO[bytes], where: str, path: Path) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """dtype, shape, Fortran order and header length of the .npy data that `f` starts with."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{where}not a readable .npy array ({e})", path) from None
    if dtype.hasobject:
        raise DatasetError(f"{where}holds pickled Python objects, which gpunet never loads", path)
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise DatasetError(f"{where}declares an impossible shape {shape}", path)
    return dtype, tuple(shape), fortran, f.tell()


def _read_data(
    f: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], fortran: bool, where: str, path: Path
) -> np.ndarray:
    count = math.prod(shape)
    a = np.empty(count, dtype)
    view = a.data.cast("B") if a.nbytes else memoryview(b"")
    done = 0
    try:
        while done < a.nbytes:
            # A file opened "rb" and a zip member are both buffered readers; the stubs call them IO[bytes].
            n = f.readinto(view[done : done + CHUNK])  # type: ignore[attr-defined]
            if not n:
                break
            done += n
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:  # a bad CRC, a broken deflate stream
        raise DatasetError(f"{where}corrupt data ({e})", path) from None
    if done < a.nbytes:
        raise DatasetError(f"{where}truncated: shape {shape} needs {a.nbytes:,} bytes of data, found {done:,}", path)
    return a.reshape(shape, order="F" if fortran else "C")


def _check_size(
    nbytes: int, declared_data: int | None, dtype: np.dtype, shape: tuple[int, ...], where: str, path: Path
) -> None:
    what = f"{where}its header declares {dtype} values of shape {shape}, {byte_size(nbytes)}"
    if declared_data is not None and nbytes != declared_data:
        held = f"{byte_size(declared_data)}" if declared_data >= 0 else "less than its header"
        raise DatasetError(f"{what}, but it holds {held}: a damaged or forged array", path)
    limit = inputs.memory_limit()
    if nbytes > limit:
        raise DatasetError(f"{what}, more than the {byte_size(limit)} of memory this machine has", path)


def read_npy(path: Path) -> np.ndarray:
    """A .npy file's array, its header checked against the file's size and the memory here first."""
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        dtype, shape, fortran, offset = _header(f, "", path)
        nbytes = math.prod(shape) * dtype.itemsize
        _check_size(nbytes, size - offset, dtype, shape, "", path)
        return _read_data(f, dtype, shape, fortran, "", path)


class Npz:
    """An .npz archive whose members are read by name, each only when asked for.

    `with Npz(path) as z: z.names, z.header("x"), z["x"]`. The running total of
    what was read is bounded by the machine's memory too.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise DatasetError(f"not a readable .npz archive ({e})", self.path) from None
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members.setdefault(name, info)
        self.read_bytes = 0

    @property
    def names(self) -> list[str]:
        return list(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __enter__(self) -> Npz:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _open(self, name: str) -> IO[bytes]:
        if name not in self._members:
            raise DatasetError(f"holds no member {name!r}", self.path)
        try:
            return self._zip.open(self._members[name])
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as e:
            raise DatasetError(f"member {name!r}: cannot be read ({e})", self.path) from None

    def header(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """A member's dtype and shape, from its header alone."""
        with self._open(name) as f:
            dtype, shape, _, _ = _header(f, f"member {name!r}: ", self.path)
        return dtype, shape

    def __getitem__(self, name: str) -> np.ndarray:
        where = f"member {name!r}: "
        with self._open(name) as f:  # refuses a name the archive does not hold
            info = self._members[name]
            dtype, shape, fortran, offset = _header(f, where, self.path)
            nbytes = math.prod(shape) * dtype.itemsize
            _check_size(nbytes, info.file_size - offset, dtype, shape, where, self.path)
            if self.read_bytes + nbytes > inputs.memory_limit():
                raise DatasetError(
                    f"{where}with the members read before it, {byte_size(self.read_bytes + nbytes)}: more than "
                    f"the {byte_size(inputs.memory_limit())} of memory this machine has",
                    self.path,
                )
            a = _read_data(f, dtype, shape, fortran, where, self.path)
        self.read_bytes += nbytes
        return a


def sha256_of(path: Path) -> str:
    """A file's SHA-256, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
