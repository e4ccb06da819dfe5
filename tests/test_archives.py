"""Hostile archives and arrays (issue 20, classes 5 and 6): sizes are checked against what the header
declares and what the machine has before anything is read, unused members are never read, and a .npy
where a .npz belongs is named for what it is. Each on every surface that reads such a file."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from idxfiles import FILE_NAMES, gzipped, idx_bytes, write_idx
from typer.testing import CliRunner

import gpunet
from gpunet.cli.commands import app
from gpunet.data import datasets as data
from gpunet.data import userdata
from gpunet.data.idx import read_idx
from gpunet.device.backend import resolve_device
from gpunet.errors import DatasetError
from gpunet.training import checkpoint
from gpunet.training.train import TrainConfig, Trainer
from tests.helpers import invoke, one_line_error

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine
QUICK = ["--iterations", "2", "--eval-every", "1", "--device", "cpu"]
HUGE = (10**12,)  # float64: 8 TB, more than any machine this runs on


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """The header of a .npy file claiming `shape` of `dtype`: what a forged file starts with."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def npy_bytes(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


def splits(n: int = 60) -> dict[str, bytes]:
    ds = data.synthetic(n_train=n, n_test=n // 2)
    arrays = {
        "x_train": ds.train_images,
        "y_train": ds.train_labels,
        "x_test": ds.test_images,
        "y_test": ds.test_labels,
    }
    return {f"{k}.npy": npy_bytes(v) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.npz"
    Trainer(TrainConfig(iterations=2, eval_every=1), data.synthetic(), resolve_device("cpu")).run(
        save=lambda t: checkpoint.save(path, t)
    )
    return path


# --- .npy headers that claim more than the file holds or the machine has ----------------------------


def test_a_huge_npy_header_in_data_is_one_line_on_every_command(tmp_path: Path) -> None:
    members = splits() | {"x_train.npy": npy_header(HUGE) + bytes(64)}
    bad = write_zip(tmp_path / "huge.npz", members)
    text = "member 'x_train': its header declares float64 values of shape (1000000000000,), 8 TB"
    for args in (["train", "--data", bad, *QUICK], ["doctor", "--data", bad, "--device", "cpu"]):
        one_line_error(invoke(*args), 1, str(bad), text)
    with pytest.raises(DatasetError, match=r"8 TB, but it holds 64 B"):
        gpunet.load_dataset(bad)


def test_a_header_claiming_more_than_the_machine_has_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A member that really holds what its header says, but more than this machine's memory: refused on
    # the header alone. (The machine is made small here: 1 kB.)
    from gpunet.files import inputs

    write_zip(tmp_path / "big.npz", splits())
    monkeypatch.setattr(inputs, "memory_limit", lambda: 1000)
    with pytest.raises(DatasetError, match=r"member 'x_train': .*, more than the 1 kB of memory this machine has"):
        userdata.load_path(tmp_path / "big.npz")


def test_a_huge_npy_to_predict_is_one_line(model: Path, tmp_path: Path) -> None:
    (tmp_path / "huge.npy").write_bytes(npy_header(HUGE, "|u1") + bytes(784))
    result = runner.invoke(app, ["predict", str(model), str(tmp_path / "huge.npy"), "--device", "cpu"])
    one_line_error(result, 1, "its header declares uint8 values of shape (1000000000000,), 1 TB, but it holds 784 B")
    (tmp_path / "short.npy").write_bytes(npy_bytes(np.zeros((2, 784), np.uint8))[:-10])
    one_line_error(runner.invoke(app, ["predict", str(model), str(tmp_path / "short.npy")]), 1, "but it holds")


def forged_checkpoint(model: Path, tmp_path: Path, member: str, content: bytes) -> Path:
    with zipfile.ZipFile(model) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    members[member] = content
    return write_zip(tmp_path / "forged.npz", members)


@pytest.mark.parametrize("member", ["meta.npy", "param_0.npy", "slot_m_0.npy"])
def test_a_huge_member_of_a_checkpoint_is_one_line_for_every_reader(model: Path, tmp_path: Path, member: str) -> None:
    dtype = "<U1" if member == "meta.npy" else "<f4"
    forged = forged_checkpoint(model, tmp_path, member, npy_header(HUGE if member == "meta.npy" else (784, 16), dtype))
    (tmp_path / "one.npy").write_bytes(npy_bytes(np.zeros(784, np.uint8)))
    name = member.removesuffix(".npy")
    for args in (
        ["evaluate", forged, "--device", "cpu"],
        ["predict", forged, tmp_path / "one.npy", "--device", "cpu"],
        ["train", "--resume", forged, "--more", "1", "--device", "cpu"],
    ):
        one_line_error(invoke(*args), 1, f"{forged}: ", f"member '{name}'", "but it holds")
    with pytest.raises(checkpoint.CheckpointError, match=f"member '{name}'"):
        gpunet.load(forged)


# --- unused members are never read ------------------------------------------------------------------


def broken_member() -> bytes:
    """A member that fails if anything reads it: a huge claim, then bytes that are not its data."""
    return npy_header(HUGE) + b"\xff" * 100


def test_unused_members_of_data_are_never_read(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "extra.npz", splits() | {"notes.npy": broken_member(), "x.npy": broken_member()})
    x_train, _, _, _ = gpunet.load_dataset(path)
    assert x_train.shape == (60, 784)
    result = runner.invoke(app, ["train", "--data", str(path), *QUICK, "--no-save"])
    assert result.exit_code == 0, result.output


def test_unused_members_of_a_checkpoint_are_never_read(model: Path, tmp_path: Path) -> None:
    forged = forged_checkpoint(model, tmp_path, "extra.npy", broken_member())
    assert gpunet.load(forged).n_iter_ == 2
    (tmp_path / "one.npy").write_bytes(npy_bytes(np.zeros(784, np.uint8)))
    assert runner.invoke(app, ["predict", str(forged), str(tmp_path / "one.npy"), "--device", "cpu"]).exit_code == 0


def test_a_zip_member_is_never_read_past_the_size_it_declares(tmp_path: Path) -> None:
    # A deflate stream that holds more than the member's declared size (a zip bomb's trick): reading
    # stops at the declared size, and the CRC no longer matches.
    members = splits()
    path = write_zip(tmp_path / "liar.npz", members)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x_train.npy")
    # Shrink the declared size of x_train in its local header and the central directory.
    declared = info.file_size.to_bytes(4, "little")
    smaller = (info.file_size - 1000).to_bytes(4, "little")
    assert raw.count(declared) >= 2
    raw = raw.replace(declared, smaller)
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="member 'x_train'"):
        userdata.load_path(path)


# --- gzip IDX files ---------------------------------------------------------------------------------


def test_a_gzip_idx_declaring_more_than_the_machine_has_is_refused_without_inflating(tmp_path: Path) -> None:
    header = idx_bytes(np.zeros((1, 1, 1), np.uint8))[:4] + (2**32 - 1).to_bytes(4, "big") * 3
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzipped(header + bytes(1000)))
    with pytest.raises(DatasetError, match=r"its IDX header declares 79.2 EB|its IDX header declares .* more than"):
        read_idx(path)


def test_a_gzip_idx_holding_more_than_it_declares_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzipped(idx_bytes(np.zeros(10, np.uint8)) + bytes(10_000_000)))  # 10 MB past its end
    with pytest.raises(DatasetError, match="decompresses to more than the 18 bytes its IDX header declares"):
        read_idx(path)


def test_a_gzip_bomb_in_an_idx_folder_is_one_line_on_train_and_evaluate(model: Path, tmp_path: Path) -> None:
    ds = data.synthetic(n_train=50, n_test=20)
    folder = tmp_path / "bomb"
    for name, a in zip(FILE_NAMES, (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)):
        write_idx(folder / f"{name}.gz", a.reshape(len(a), 28, 28) if a.ndim == 2 else a)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzipped(idx_bytes(ds.train_labels) + bytes(5_000_000)))
    for args in (["train", "--data", folder, *QUICK], ["evaluate", model, "--data", folder, "--device", "cpu"]):
        one_line_error(invoke(*args), 1, str(labels), "decompresses to more than")


# --- a .npy where a .npz belongs (class 6) ----------------------------------------------------------


@pytest.mark.parametrize("name", ["mine.npy", "renamed.npz"])
def test_a_npy_as_data_is_one_line_on_every_command(model: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(npy_bytes(np.zeros((10, 784), np.uint8)))
    text = "a single .npy array, which holds no labels: --data takes a .npz file"
    for args in (
        ["train", "--data", path, *QUICK],
        ["evaluate", model, "--data", path, "--device", "cpu"],
        ["bench", "--data", path, "--backends", "numpy", "--iterations", "2"],
        ["doctor", "--data", path, "--device", "cpu"],
    ):
        one_line_error(invoke(*args), 1, f"{path}: {text}")
    with pytest.raises(DatasetError, match=text):
        gpunet.load_dataset(path)


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG picture, not a readable .npz file"),
        (gzipped(b"hello"), "gzip data, not a readable .npz file"),
        (b"", "an empty file (0 bytes), not a readable .npz file"),
    ],
    ids=["picture", "gzip", "empty"],
)
def test_other_files_as_data_are_named_for_what_they_hold(tmp_path: Path, content: bytes, text: str) -> None:
    path = tmp_path / "mine.npz"
    path.write_bytes(content)
    one_line_error(runner.invoke(app, ["train", "--data", str(path), *QUICK]), 1, text)
