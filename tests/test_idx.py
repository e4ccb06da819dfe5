"""The strict IDX reader: good files decode exactly, every kind of bad file is refused by name and reason."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from idxfiles import gzipped, idx_bytes, write_idx

from gpunet.data import idx
from gpunet.data.idx import IDX_TYPES, check_split, parse_idx, read_idx
from gpunet.errors import DatasetError


def header(type_code: int, *dims: int) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def refused(path: Path) -> DatasetError:
    """The DatasetError that reading `path` raises; it must name the file."""
    with pytest.raises(DatasetError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    return info.value


# --- good files -------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "raw"])
def test_uint8_images_round_trip_exactly(tmp_path: Path, gzip: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    result = read_idx(write_idx(tmp_path / "images-idx3-ubyte", images, gzip=gzip))
    assert result.dtype == np.uint8
    assert result.shape == (7, 28, 28)
    np.testing.assert_array_equal(result, images)


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "raw"])
def test_uint8_labels_round_trip_exactly(tmp_path: Path, gzip: bool) -> None:
    labels = np.array([3, 0, 9, 9, 1, 255], dtype=np.uint8)
    result = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels, gzip=gzip))
    assert result.dtype == np.uint8
    assert result.shape == (6,)
    np.testing.assert_array_equal(result, labels)


def test_gzip_and_raw_files_are_told_apart_by_content_not_name(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    raw_named_gz = tmp_path / "labels.gz"
    raw_named_gz.write_bytes(idx_bytes(labels))
    gz_named_raw = tmp_path / "labels"
    gz_named_raw.write_bytes(gzipped(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(raw_named_gz), labels)
    np.testing.assert_array_equal(read_idx(gz_named_raw), labels)


@pytest.mark.parametrize(
    ("type_code", "fmt", "values"),
    [
        (0x0C, ">i", [-2147483648, -1, 0, 1, 2147483647, 16909060]),
        (0x0D, ">f", [-1.5, 0.0, 0.15625, 3.0e38, -(2.0**-20), 1234.5]),
        (0x0B, ">h", [-32768, -2, 0, 258, 32767, 7]),
        (0x09, ">b", [-128, -1, 0, 1, 127, 5]),
        (0x0E, ">d", [-1.0e300, 0.1, 0.0, 2.5, -7.75, 1.0e-300]),
    ],
    ids=["int32", "float32", "int16", "int8", "float64"],
)
def test_big_endian_values_decode_to_native(tmp_path: Path, type_code: int, fmt: str, values: list) -> None:
    # Written by hand with struct, independently of the helpers: two rows of three values.
    path = tmp_path / "values-idx2"
    path.write_bytes(header(type_code, 2, 3) + b"".join(struct.pack(fmt, v) for v in values))
    result = read_idx(path)
    assert result.shape == (2, 3)
    assert result.dtype.isnative
    assert result.dtype == np.dtype(IDX_TYPES[type_code]).newbyteorder("=")
    np.testing.assert_array_equal(result.ravel(), np.array(values, dtype=result.dtype))


def test_parse_idx_accepts_bytes_directly() -> None:
    result = parse_idx(header(0x08, 2, 2) + bytes([1, 2, 3, 4]))
    np.testing.assert_array_equal(result, [[1, 2], [3, 4]])


# --- bad files --------------------------------------------------------------------------------

GOOD_LABELS = header(0x08, 4) + bytes([0, 1, 2, 3])

BAD_FILES = {
    # name: (file contents, a distinctive word of the reason)
    "bad-magic": (b"\x01\x02\x08\x01" + GOOD_LABELS[4:], "magic"),
    "bad-magic-second-byte": (b"\x00\x01\x08\x01" + GOOD_LABELS[4:], "magic"),
    "unknown-type": (header(0x07, 4) + bytes(4), "unknown IDX value type 0x07"),
    "zero-dimensions": (b"\x00\x00\x08\x00" + bytes(4), "zero dimensions"),
    "truncated-header": (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
    "truncated-data": (header(0x08, 2, 2) + bytes(3), "truncated"),
    "truncated-int32-data": (header(0x0C, 3) + bytes(11), "truncated"),
    "trailing-bytes": (GOOD_LABELS + b"\x00\x00", "2 unexpected bytes"),
    "empty": (b"", "too short"),
    "images-of-0x0-pixels": (header(0x08, 5, 0, 0), "empty shape (5, 0, 0)"),
    "no-images-of-0x28": (header(0x08, 0, 0, 28), "a dimension of size 0"),
    "no-labels": (header(0x08, 0), "empty shape (0,)"),
    "three-bytes": (b"\x00\x00\x08", "too short"),
    "corrupt-gzip": (b"\x1f\x8b" + b"this is not deflate data at all" * 3, "gzip"),
    "truncated-gzip": (gzipped(GOOD_LABELS)[:-12], "gzip"),
    "longer-than-declared-gzip": (gzipped(GOOD_LABELS + bytes(1 << 20)), "decompresses to more than the 12 bytes"),
    "gzip-with-bad-crc": (gzipped(GOOD_LABELS)[:-8] + b"\x00" * 8, "gzip"),
    "gzipped-trailing-bytes": (gzipped(GOOD_LABELS + b"\x07"), "1 unexpected bytes"),
    "gzipped-truncated-data": (gzipped(GOOD_LABELS[:-1]), "truncated"),
}


@pytest.mark.parametrize(("contents", "reason"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_raises_dataset_error_naming_path_and_reason(tmp_path: Path, contents: bytes, reason: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(contents)
    error = refused(path)
    assert reason in error.reason


def test_missing_file_raises_dataset_error(tmp_path: Path) -> None:
    error = refused(tmp_path / "no-such-file.gz")
    assert "cannot read" in error.reason
    assert "No such file" in error.reason


def test_directory_instead_of_file_raises_dataset_error(tmp_path: Path) -> None:
    assert "cannot read" in refused(tmp_path).reason


def test_corrupt_gzip_is_not_parsed_as_raw_idx(tmp_path: Path) -> None:
    # Valid IDX bytes behind a gzip magic number must not be "rescued" by reading them raw.
    path = tmp_path / "labels"
    path.write_bytes(b"\x1f\x8b" + GOOD_LABELS)
    assert "gzip" in refused(path).reason


# --- check_split ------------------------------------------------------------------------------


def images(n: int) -> np.ndarray:
    return np.zeros((n, 28, 28), dtype=np.uint8)


def split_error(imgs: np.ndarray, labels: np.ndarray) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        check_split(imgs, labels, 10, "images.idx", "labels.idx")
    return info.value


def test_check_split_accepts_matching_images_and_labels() -> None:
    assert check_split(images(10), np.arange(10, dtype=np.uint8), 10, "images.idx", "labels.idx") is None


def test_check_split_refuses_an_empty_split() -> None:
    """Nothing to train on is a data error, not a crash deep in the engine."""
    assert "holds no samples" in str(split_error(images(0), np.zeros(0, dtype=np.uint8)))


def test_check_split_label_out_of_range_names_its_index() -> None:
    error = split_error(images(6), np.array([0, 9, 3, 10, 2, 11], dtype=np.uint8))
    assert error.path == "labels.idx"
    assert "label 10 at index 3" in str(error)
    assert "0..9" in str(error)


def test_check_split_count_mismatch() -> None:
    error = split_error(images(4), np.zeros(3, dtype=np.uint8))
    assert error.path == "labels.idx"
    assert "3 labels for 4 images" in str(error)


@pytest.mark.parametrize(
    "bad_images",
    [np.zeros((4, 784), dtype=np.uint8), np.zeros((4, 28, 28), dtype=np.float32), np.zeros(4, dtype=np.uint8)],
    ids=["2-D", "float32", "1-D"],
)
def test_check_split_wrong_image_ndim_or_dtype(bad_images: np.ndarray) -> None:
    error = split_error(bad_images, np.zeros(4, dtype=np.uint8))
    assert error.path == "images.idx"
    assert "expected uint8 images" in str(error)


@pytest.mark.parametrize(
    "bad_labels",
    [np.zeros(4, dtype=np.int32), np.zeros((4, 1), dtype=np.uint8), np.zeros((4, 28, 28), dtype=np.uint8)],
    ids=["int32", "2-D", "images-as-labels"],
)
def test_check_split_wrong_label_ndim_or_dtype(bad_labels: np.ndarray) -> None:
    error = split_error(images(4), bad_labels)
    assert error.path == "labels.idx"
    assert "expected uint8 labels" in str(error)


# --- never anything but DatasetError ------------------------------------------------------------


def parses_or_refuses(data: bytes) -> None:
    """parse_idx either returns the array the header describes or raises DatasetError."""
    try:
        result = parse_idx(data, "fuzz.idx")
    except DatasetError as e:
        assert str(e).startswith("fuzz.idx: ")
        return
    assert isinstance(result, np.ndarray)
    assert result.ndim == data[3]
    assert 4 + 4 * result.ndim + result.nbytes == len(data)


def test_zero_sized_shape_with_huge_dimensions_is_dataset_error() -> None:
    data = header(0x08, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    try:
        result = parse_idx(data, "huge.idx")
    except DatasetError as e:
        assert "huge.idx" in str(e)
    else:
        assert result.size == 0


FUZZ = settings(max_examples=200, deadline=None)


@FUZZ
@given(st.binary(max_size=64))
def test_parse_idx_on_arbitrary_bytes_raises_only_dataset_error(data: bytes) -> None:
    parses_or_refuses(data)


@st.composite
def idx_with_payload(draw: st.DrawFn) -> bytes:
    """A header (valid or nearly so) followed by a payload of exactly the right length, or a bit off."""
    type_code = draw(st.sampled_from([*IDX_TYPES, 0x00, 0x0A, 0xFF]))
    dims = draw(st.lists(st.one_of(st.integers(0, 5), st.sampled_from([0xFFFFFFFF, 2**31])), min_size=0, max_size=4))
    itemsize = np.dtype(IDX_TYPES.get(type_code, ">u1")).itemsize
    needed = math.prod(dims) * itemsize
    length = draw(st.integers(0, 80)) if needed > 1000 else max(0, needed + draw(st.integers(-9, 9)))
    payload = draw(st.binary(min_size=length, max_size=length))
    data = header(type_code, *dims) + payload
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))  # sometimes truncated anywhere, header included
    return data if cut is None else data[:cut]


@FUZZ
@given(idx_with_payload())
def test_parse_idx_on_header_and_arbitrary_payload_raises_only_dataset_error(data: bytes) -> None:
    parses_or_refuses(data)


def damaged(stored: bytes, draw: st.DataObject) -> bytes:
    """`stored` as it is, cut short, or with one byte flipped (never the gzip magic number)."""
    how = draw.draw(st.sampled_from(["intact", "cut", "flip"]))
    if how == "intact" or len(stored) <= 2:
        return stored
    position = draw.draw(st.integers(2, len(stored) - 1))
    if how == "cut":
        return stored[:position]
    return stored[:position] + bytes([stored[position] ^ 0xFF]) + stored[position + 1 :]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_read_idx_on_damaged_gzip_raises_only_dataset_error(tmp_path: Path, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        stored = b"\x1f\x8b" + data.draw(st.binary(max_size=64))
    else:
        contents = data.draw(idx_with_payload())
        stored = damaged(gzipped(contents), data)
    path = tmp_path / "fuzz.gz"
    path.write_bytes(stored)
    try:
        result = read_idx(path)
    except DatasetError as e:
        assert str(path) in str(e)
        return
    assert isinstance(result, np.ndarray)


def test_an_empty_split_names_its_labels_file() -> None:
    with pytest.raises(DatasetError) as caught:
        idx.check_split(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), 10, "images.gz", "labels.gz")
    assert str(caught.value) == "labels.gz: holds no samples" and caught.value.path == "labels.gz"


def test_an_unreadable_file_says_why_in_words(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        idx.read_bytes(tmp_path)  # a directory: the system's reason, not a Python repr
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x08", "<bytes>: too short for an IDX header (3 bytes)"),
        (b"\x00\x00\x08\x00", "<bytes>: IDX header declares zero dimensions"),  # 4 bytes: a whole header
        (b"\x00\x01\x08\x01\x00\x00\x00\x01\x07", "<bytes>: not an IDX file: bad magic number 0x00010801"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "<bytes>: not an IDX file: bad magic number 0x01000801"),
    ],
)
def test_header_refusals_in_exact_words(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_idx(data)
    assert str(caught.value) == message


def test_uint8_values_are_not_copied() -> None:
    """The 47 MB of training images are used where they were read, not copied once more."""
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    values = parse_idx(data)
    assert np.shares_memory(values, np.frombuffer(data, dtype=np.uint8))


def test_a_label_equal_to_the_number_of_classes_is_refused() -> None:
    with pytest.raises(DatasetError) as caught:
        check_split(np.zeros((3, 2, 2), np.uint8), np.array([0, 9, 10], np.uint8), 10, "i", "labels.gz")
    assert str(caught.value) == "labels.gz: label 10 at index 2 is outside 0..9"
