"""What a file the user named is, told by its first bytes, and why it cannot be read, in a few words."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gpunet.files import inputs


def test_why_a_path_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes").write_text("a file")
    os.mkfifo(tmp_path / "pipe")
    readable = tmp_path / "model.npz"
    readable.write_bytes(b"PK\x03\x04")
    assert inputs.problem(tmp_path / "missing") == "no such file"
    assert inputs.problem(tmp_path / "notes" / "x.npz") == "no such file (a part of the path is not a directory)"
    assert inputs.problem(tmp_path) == "a directory, not a file"
    assert (
        inputs.problem(tmp_path / "pipe") == "not a regular file (a pipe, socket or device), which gpunet does not read"
    )
    assert (
        inputs.problem(Path("/dev/null")) == "not a regular file (a pipe, socket or device), which gpunet does not read"
    )
    assert inputs.problem(readable) is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # not readable by us (root reads everything)
    assert inputs.problem(readable) == "permission denied"


def test_an_os_error_in_a_few_words(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 5000)
    assert inputs.problem(long) == f"the path is too long ({len(os.fsencode(long)):,} bytes)"
    assert inputs.os_reason(PermissionError(errno.EACCES, "Permission denied"), tmp_path) == "permission denied"
    assert inputs.os_reason(OSError(errno.EIO, "Input/output error"), tmp_path) == "cannot read it: Input/output error"
    assert inputs.os_reason(OSError("a disk with no words"), tmp_path) == "cannot read it: a disk with no words"


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"", "empty"),
        (b"\x93NUMPY\x01\x00", "npy"),
        (b"PK\x03\x04rest", "zip"),
        (b"PK\x05\x06", "zip"),
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"GIF89a", "gif"),
        (b"BM6", "bmp"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBP", "riff"),
        (b"\x1f\x8b\x08", "gzip"),
        (b"\x80\x04\x95", "pickle"),
        (b"\x00\x00\x08\x01", "idx"),  # a labels file's header alone: 1 dimension, 4 bytes
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "idx"),
        (b"\x00\x00\x08\x00", "unknown"),  # zero dimensions: not IDX
        (b"\x00\x08\x08\x01", "unknown"),
        (b"\x00\x00\x08", "unknown"),  # too short for a header
        (b"hello", "unknown"),
    ],
)
def test_a_file_is_known_by_its_first_bytes(tmp_path: Path, head: bytes, name: str) -> None:
    path = tmp_path / "file.png"  # whatever the name claims
    path.write_bytes(head)
    assert inputs.kind(path) == name


def test_only_the_first_bytes_are_read() -> None:
    assert inputs.kind(Path("/dev/zero")) == "unknown"  # a file with no end: read as far as a signature needs


def test_each_kind_is_described_for_a_message() -> None:
    assert [inputs.describe(k) for k in ("empty", "npy", "zip", "gzip", "idx", "pickle", "unknown")] == [
        "an empty file (0 bytes)",
        "a .npy array",
        "a zip archive (.npz)",
        "gzip data",
        "an IDX file",
        "pickled Python data",
        "unrecognised data",
    ]
    assert [inputs.describe(k) for k in ("png", "jpeg", "riff")] == [
        "a PNG picture",
        "a JPEG picture",
        "a RIFF picture",
    ]
