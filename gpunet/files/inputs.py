"""Input files: why a path cannot be read, and what a file holds, told by its first bytes.

Every command that reads a file the user named (a checkpoint, an image to
predict) asks here first, so a directory, a missing file, an unreadable or
over-long path, a named pipe (reading one would wait forever) or a file of
another kind gets a message that says which of these it is, whatever the
file's name claims.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from pathlib import Path

# First bytes of the kinds of file a user may hand gpunet by mistake, or on purpose.
SIGNATURES = (
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "zip"),  # .npz (a checkpoint) is a zip of .npy files
    (b"PK\x05\x06", "zip"),  # an empty zip
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"RIFF", "riff"),  # WebP among others
    (b"\x1f\x8b", "gzip"),
    (b"\x80", "pickle"),  # protocol 2 and later start with PROTO
)
PICTURES = {"png", "jpeg", "gif", "bmp", "tiff", "riff"}
DESCRIPTIONS = {
    "empty": "an empty file (0 bytes)",
    "npy": "a .npy array",
    "zip": "a zip archive (.npz)",
    "gzip": "gzip data",
    "idx": "an IDX file",
    "pickle": "pickled Python data",
    "unknown": "unrecognised data",
}


def problem(path: Path) -> str | None:
    """Why `path` cannot be read as a file, in a few words; None if it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a part of the path is not a directory)"
    except OSError as e:
        return os_reason(e, path)
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device), which gpunet does not read"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def os_reason(e: OSError, path: Path) -> str:
    """What an OSError about `path` means, in a few words."""
    if e.errno == errno.ENAMETOOLONG:
        return f"the path is too long ({len(os.fsencode(path)):,} bytes)"
    if e.errno == errno.EACCES:
        return "permission denied"
    return f"cannot read it: {e.strerror or e}"


def kind(path: Path) -> str:
    """'npy', 'zip', 'png', ..., 'idx', 'empty' or 'unknown': what the first bytes of a readable file say."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return name
    if len(head) >= 4 and head[:2] == b"\x00\x00" and head[3] > 0:
        return "idx"
    return "unknown"


def describe(name: str) -> str:
    """A kind from `kind`, for a message."""
    return DESCRIPTIONS.get(name) or f"a {name.upper()} picture"  # kind() names nothing else


def memory_limit() -> int:
    """Bytes of memory this process may hold: the machine's RAM, or less where a cgroup or rlimit says so.

    What a file declares (a .npy header's shape, an IDX header's dimensions) is
    checked against this before anything is allocated or decompressed.
    """
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    return min(limits)


def byte_size(n: float) -> str:
    """1234567 -> '1.23 MB'."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        rounded = float(f"{n:.3g}")  # rounded first: 999,999 B is "1 MB", not "1e+03 kB"
        if rounded < 1000:
            return f"{rounded:g} {unit}"
        n /= 1000
    return f"{n:,.0f} PB"
