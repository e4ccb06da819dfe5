"""Datasets: where they are looked for, how they are verified, downloaded, and `auto`'s fallback."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from idxfiles import FILE_NAMES, gzipped, idx_bytes, make_dataset, serve, write_dataset

from gpunet.data import datasets
from gpunet.errors import DatasetError, DatasetMissing, shown

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")  # installed by `apt-get install dataset-fashion-mnist`


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user cache and no environment overrides; returns $XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("GPUNET_DATA", raising=False)
    monkeypatch.delenv("GPUNET_MIRRORS", raising=False)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return tmp_path / "xdg-cache"


def hide_system(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make /usr/share/datasets/<name> invisible to the lookup, as on a machine without the package."""
    hidden = {Path("/usr/share/datasets") / name for name in names}
    search_dirs = datasets.search_dirs
    monkeypatch.setattr(datasets, "search_dirs", lambda *a, **k: [d for d in search_dirs(*a, **k) if d not in hidden])


def assert_loaded(ds: datasets.Dataset, arrays: dict[str, np.ndarray]) -> None:
    """`ds` holds exactly `arrays` (as written by write_dataset), images flattened to 784 columns."""
    train_x, train_y, test_x, test_y = (arrays[name] for name in FILE_NAMES)
    assert ds.train_images.shape == (len(train_x), 784)
    assert ds.test_images.shape == (len(test_x), 784)
    assert ds.train_images.dtype == ds.test_images.dtype == np.uint8
    assert ds.train_labels.dtype == ds.test_labels.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images, train_x.reshape(-1, 784))
    np.testing.assert_array_equal(ds.test_images, test_x.reshape(-1, 784))
    np.testing.assert_array_equal(ds.train_labels, train_y)
    np.testing.assert_array_equal(ds.test_labels, test_y)


def link_real_fashion(directory: Path, *except_names: str) -> Path:
    """`directory` with symlinks to the real Fashion-MNIST files, except those named."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILE_NAMES:
        if name not in except_names:
            (directory / f"{name}.gz").symlink_to(REAL_FASHION / f"{name}.gz")
    return directory


def real_contents(name: str) -> bytes:
    return gzip.decompress((REAL_FASHION / f"{name}.gz").read_bytes())


# --- verification -------------------------------------------------------------------------------


def test_fake_directory_is_refused_as_fashion_mnist(tmp_path: Path) -> None:
    write_dataset(tmp_path / "fake")
    with pytest.raises(DatasetError) as info:
        datasets.load("fashion-mnist", data_dir=tmp_path / "fake", offline=True)
    assert not isinstance(info.value, DatasetMissing)  # a bad file is reported, never treated as absent
    assert "checksum mismatch" in str(info.value)
    assert info.value.path == tmp_path / "fake" / "train-images-idx3-ubyte.gz"


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_structurally_valid_fake_mnist_loads_unverified(tmp_path: Path, gz: bool) -> None:
    assert all(f.raw_sha256 is None for f in datasets.MNIST.files)  # nothing can vouch for a local MNIST copy
    arrays = write_dataset(tmp_path / "fake", n_train=30, n_test=12, gzip=gz)
    ds = datasets.load("mnist", data_dir=tmp_path / "fake", offline=True)
    assert ds.name == "mnist"
    assert ds.verified is False
    assert ds.source == str(tmp_path / "fake")
    assert ds.files == tuple(tmp_path / "fake" / (f"{name}.gz" if gz else name) for name in FILE_NAMES)
    assert_loaded(ds, arrays)


def test_checksum_identifies_the_contents(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", seed=1)
    write_dataset(tmp_path / "b", seed=1, gzip=False)  # same contents, stored raw
    write_dataset(tmp_path / "c", seed=2)
    a, b, c = (datasets.load("mnist", data_dir=tmp_path / d, offline=True).checksum for d in "abc")
    assert a == b
    assert a != c
    # Recorded in checkpoints, so it must not change: SHA-256 over the four files' SHA-256 digests, in order.
    arrays = make_dataset(seed=1)
    digests = "".join(hashlib.sha256(idx_bytes(arrays[name])).hexdigest() for name in FILE_NAMES)
    assert a == hashlib.sha256(digests.encode()).hexdigest()


def test_load_dir_names_a_file_gone_since_the_lookup(tmp_path: Path) -> None:
    (tmp_path / "emptied").mkdir()
    with pytest.raises(DatasetError) as info:
        datasets.load_dir(datasets.MNIST, tmp_path / "emptied")
    assert info.value.path == tmp_path / "emptied"
    assert str(info.value) == f"{tmp_path}/emptied: missing train-images-idx3-ubyte(.gz)"


def test_a_file_that_is_not_idx_is_named_in_the_error(tmp_path: Path) -> None:
    write_dataset(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzipped(b"\x00\x00\x08\x03"))
    with pytest.raises(DatasetError) as info:
        datasets.load("mnist", data_dir=tmp_path / "mnist", offline=True)
    assert str(info.value) == f"{bad}: truncated header: 3 dimensions need 16 bytes, file has 4"


def test_bad_labels_in_a_fake_mnist_are_refused(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path / "fake", n_train=12)
    labels = arrays["train-labels-idx1-ubyte"].copy()
    labels[5] = 10
    (tmp_path / "fake" / "train-labels-idx1-ubyte.gz").write_bytes(gzipped(idx_bytes(labels)))
    with pytest.raises(DatasetError, match="label 10 at index 5"):
        datasets.load("mnist", data_dir=tmp_path / "fake", offline=True)


def test_test_images_of_another_size_are_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path / "fake")
    images = np.zeros((10, 14, 14), dtype=np.uint8)
    (tmp_path / "fake" / "t10k-images-idx3-ubyte.gz").write_bytes(gzipped(idx_bytes(images)))
    with pytest.raises(DatasetError) as info:
        datasets.load("mnist", data_dir=tmp_path / "fake", offline=True)
    path = tmp_path / "fake" / "t10k-images-idx3-ubyte.gz"
    assert str(info.value) == f"{path}: test images are (14, 14), train images (28, 28)"


def test_unknown_dataset_name_lists_the_choices() -> None:
    with pytest.raises(DatasetError) as info:
        datasets.load("cifar", offline=True)
    assert str(info.value) == "unknown dataset 'cifar': choose one of auto, mnist, fashion-mnist, synthetic"


# --- lookup order -------------------------------------------------------------------------------


def place(root: Path, layout: str, seed: int, n_train: int) -> tuple[Path, dict[str, np.ndarray]]:
    """A fake MNIST in `root/mnist/` ("nested") or directly in `root` ("flat"); its folder and arrays."""
    folder = root / "mnist" if layout == "nested" else root
    return folder, write_dataset(folder, n_train=n_train, seed=seed)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_data_dir_wins_over_gpunet_data_which_wins_over_cache(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    hide_system(monkeypatch, "mnist")
    cache, cache_arrays = place(isolated / "gpunet", "nested", seed=1, n_train=11)
    assert datasets.load("mnist", offline=True).source == str(cache)

    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "env"))
    env, env_arrays = place(tmp_path / "env", layout, seed=2, n_train=12)
    from_env = datasets.load("mnist", offline=True)
    assert from_env.source == str(env)
    assert_loaded(from_env, env_arrays)

    given, given_arrays = place(tmp_path / "given", layout, seed=3, n_train=13)
    from_dir = datasets.load("mnist", data_dir=tmp_path / "given", offline=True)
    assert from_dir.source == str(given)
    assert_loaded(from_dir, given_arrays)

    monkeypatch.delenv("GPUNET_DATA")
    assert_loaded(datasets.load("mnist", offline=True), cache_arrays)


def test_cache_dir_is_under_home_without_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "gpunet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "gpunet"


def test_mirrors_are_the_built_in_ones_unless_gpunet_mirrors_replaces_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert datasets.mirrors(datasets.FASHION_MNIST) == (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )
    monkeypatch.setenv("GPUNET_MIRRORS", " http://a/, ,http://b/ ")
    assert datasets.mirrors(datasets.FASHION_MNIST) == ("http://a/", "http://b/")


def test_search_dirs_order(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "env"))
    assert datasets.search_dirs("mnist") == [
        tmp_path / "env" / "mnist",
        tmp_path / "env",
        isolated / "gpunet" / "mnist",
        Path("/usr/share/datasets/mnist"),
    ]
    # An explicit --data-dir is the only place looked in: used or refused, never passed over.
    assert datasets.search_dirs("mnist", tmp_path / "given") == [tmp_path / "given" / "mnist", tmp_path / "given"]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "auto"])
def test_a_data_dir_without_the_dataset_is_refused_not_replaced(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, dataset: str
) -> None:
    """Another copy (the cache, /usr/share/datasets, a download) never stands in for --data-dir."""
    place(isolated / "gpunet", "nested", seed=1, n_train=11)  # an MNIST in the cache ...
    monkeypatch.setenv("GPUNET_MIRRORS", "http://127.0.0.1:9/")  # ... and mirrors that would fail anyway
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_bytes(b"x")
    cases = {
        tmp_path / "no" / "such" / "dir": f"--data-dir {tmp_path}/no/such/dir: no such directory",
        tmp_path / "a-file": f"--data-dir {tmp_path}/a-file: a file, not a directory",
        tmp_path / "empty": "is not in --data-dir (looked in",
        tmp_path / ("d" * 5000): "characters): the path is too long (5,",
    }
    for data_dir, message in cases.items():
        with pytest.raises(DatasetError, match=re.escape(message)):
            datasets.load(dataset, data_dir=data_dir)


def test_a_data_dir_without_the_dataset_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetMissing) as info:
        datasets.load("mnist", data_dir=tmp_path / "empty")
    assert str(info.value) == (
        f"MNIST is not in --data-dir (looked in {tmp_path}/empty/mnist and {tmp_path}/empty for its four IDX files, "
        "train-images-idx3-ubyte and the others, gzip or raw)"
    )


def test_a_gpunet_data_that_is_not_a_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match=re.escape(f"$GPUNET_DATA {tmp_path}/missing: no such directory")):
        datasets.load("fashion-mnist", offline=True)


def test_a_cache_path_too_long_to_search_is_one_line(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_system(monkeypatch, "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "/".join(["c" * 200] * 30)))  # 6,000 characters
    with pytest.raises(DatasetError) as info:
        datasets.load("mnist", offline=True)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "gpunet" / "mnist"
    assert info.value.path == cache
    too_long = f"the path is too long ({len(str(cache / 'train-images-idx3-ubyte.gz')):,} bytes)"
    assert str(info.value) == f"{shown(cache)}: cannot look in this directory: {too_long}"
    assert len(str(info.value)) < 400  # the path's two ends, not all of it


def test_nested_layout_wins_over_flat_in_the_same_root(tmp_path: Path) -> None:
    nested = write_dataset(tmp_path / "root" / "mnist", seed=1)
    write_dataset(tmp_path / "root", seed=2)
    assert_loaded(datasets.load("mnist", data_dir=tmp_path / "root", offline=True), nested)


@pytest.mark.parametrize("where", ["data_dir", "GPUNET_DATA"])
def test_incomplete_directory_names_the_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    write_dataset(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "partial" / "t10k-images-idx3-ubyte.gz").unlink()
    if where == "GPUNET_DATA":
        monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "partial"))
    data_dir = tmp_path / "partial" if where == "data_dir" else None
    with pytest.raises(DatasetError) as info:
        datasets.load("mnist", data_dir=data_dir, offline=True)
    assert not isinstance(info.value, DatasetMissing)
    assert info.value.path == tmp_path / "partial"
    assert str(info.value) == (
        f"{tmp_path}/partial: incomplete MNIST: missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    )


def test_offline_with_nothing_found_says_where_it_looked_and_how_to_get_data(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_system(monkeypatch, "mnist")
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    with pytest.raises(DatasetMissing) as info:
        datasets.load("mnist", offline=True)
    assert str(info.value) == (
        f"MNIST not found (--offline forbids downloading); looked in {tmp_path}/env/mnist, {tmp_path}/env, "
        f"{isolated}/gpunet/mnist. Run `gpunet datasets download mnist` where there is network, "
        "or pass --data-dir DIR holding its four IDX files"
    )


def test_fashion_mnist_not_found_offline_also_suggests_the_debian_package(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_system(monkeypatch, "fashion-mnist")
    with pytest.raises(DatasetMissing) as info:
        datasets.load("fashion-mnist", offline=True)
    assert str(info.value) == (
        f"Fashion-MNIST not found (--offline forbids downloading); looked in {isolated}/gpunet/fashion-mnist. "
        "Run `gpunet datasets download fashion-mnist` where there is network "
        "or `apt-get install dataset-fashion-mnist`, or pass --data-dir DIR holding its four IDX files"
    )


def test_partial_cache_offline_is_missing_not_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist")
    write_dataset(isolated / "gpunet" / "mnist")
    (isolated / "gpunet" / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetMissing):
        datasets.load("mnist", offline=True)


# --- downloading into the cache -----------------------------------------------------------------


Mirrored = tuple[dict[str, bytes], dict[str, np.ndarray]]  # gz bytes by URL path, arrays by file name


@pytest.fixture
def mirrored_mnist(monkeypatch: pytest.MonkeyPatch) -> Mirrored:
    """A fake MNIST whose .gz bytes are what datasets.MNIST's checksums now expect; (gz bytes by path, arrays)."""
    hide_system(monkeypatch, "mnist")
    arrays = make_dataset(n_train=25, n_test=10, seed=7)
    stored = {name: gzipped(idx_bytes(array)) for name, array in arrays.items()}
    files = tuple(
        dataclasses.replace(f, gz_sha256=hashlib.sha256(stored[f.name]).hexdigest()) for f in datasets.MNIST.files
    )
    spec = dataclasses.replace(datasets.MNIST, files=files)
    monkeypatch.setattr(datasets, "MNIST", spec)
    monkeypatch.setitem(datasets.SPECS, "mnist", spec)
    return {f"/mnist/{name}.gz": body for name, body in stored.items()}, arrays


def test_download_into_the_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored) -> None:
    routes, arrays = mirrored_mnist
    progressed: list[str] = []
    with serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", f" {server.base}mnist/ ")
        ds = datasets.load("mnist", offline=False, progress=lambda name: progressed.append(name))
    cache = isolated / "gpunet" / "mnist"
    assert sorted(server.requests) == sorted(routes)
    assert progressed == list(FILE_NAMES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{name}.gz" for name in FILE_NAMES)
    assert ds.source == str(cache)
    assert ds.verified is True  # the downloaded .gz bytes matched the spec's checksums
    assert_loaded(ds, arrays)
    # Now cached: loads offline, with the server gone.
    assert_loaded(datasets.load("mnist", offline=True), arrays)


def test_download_completes_a_partial_cache(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored
) -> None:
    routes, arrays = mirrored_mnist
    cache = isolated / "gpunet" / "mnist"
    cache.mkdir(parents=True)
    for name in FILE_NAMES[:2]:
        (cache / f"{name}.gz").write_bytes(routes[f"/mnist/{name}.gz"])
    with serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", server.base + "mnist/")
        ds = datasets.load("mnist")
    assert sorted(server.requests) == sorted(f"/mnist/{name}.gz" for name in FILE_NAMES[2:])
    assert_loaded(ds, arrays)


def test_download_falls_back_to_the_next_mirror_and_says_so(
    monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored
) -> None:
    routes, arrays = mirrored_mnist
    said: list[str] = []
    with serve({}) as empty, serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{empty.base}mnist/,{server.base}mnist/")
        ds = datasets.load("mnist", say=said.append)
    assert len(empty.requests) == 4
    assert said == [f"mirror {empty.netloc}: HTTP 404 Not Found; trying {server.netloc}"] * 4
    assert_loaded(ds, arrays)


def test_fetch_uses_the_datasets_own_mirrors_without_gpunet_mirrors(tmp_path: Path, mirrored_mnist: Mirrored) -> None:
    routes, _ = mirrored_mnist
    with serve(routes) as server:
        spec = dataclasses.replace(datasets.MNIST, mirrors=(f"{server.base}mnist/",))
        assert datasets.fetch(spec, target=tmp_path / "here") == tmp_path / "here"
    assert sorted(server.requests) == sorted(routes)
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == sorted(f"{name}.gz" for name in FILE_NAMES)


def test_one_file_no_checksum_vouches_for_makes_the_dataset_unverified(
    tmp_path: Path, mirrored_mnist: Mirrored
) -> None:
    routes, arrays = mirrored_mnist
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in FILE_NAMES:
        (folder / f"{name}.gz").write_bytes(routes[f"/mnist/{name}.gz"])  # the published bytes: verified
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(arrays[FILE_NAMES[0]]), 1))
    ds = datasets.load("mnist", data_dir=folder, offline=True)
    assert ds.verified is False  # the recompressed first file has no published checksum: MNIST's raw ones are unknown
    assert_loaded(ds, arrays)


def test_an_mnist_download_where_fashion_mnist_expects_its_own_file_is_named(
    tmp_path: Path, mirrored_mnist: Mirrored
) -> None:
    """MNIST's files are known by their .gz bytes alone (no raw checksums are published for them)."""
    routes, _ = mirrored_mnist
    folder = link_real_fashion(tmp_path / "fashion", "t10k-labels-idx1-ubyte")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(routes["/mnist/t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(DatasetError) as info:
        datasets.load("fashion-mnist", data_dir=folder, offline=True)
    assert str(info.value) == (
        f"{folder}/t10k-labels-idx1-ubyte.gz: this is MNIST's t10k-labels-idx1-ubyte, "
        "not Fashion-MNIST's t10k-labels-idx1-ubyte"
    )


def test_failed_download_is_missing_with_every_reason(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored
) -> None:
    routes, _ = mirrored_mnist
    corrupt = {path: body[:-1] + b"!" for path, body in routes.items()}
    with serve({}) as empty, serve(corrupt) as wrong:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{empty.base}mnist/,{wrong.base}mnist/")
        with pytest.raises(DatasetMissing) as info:
            datasets.load("mnist")
    message = str(info.value)
    assert f"{empty.netloc}: HTTP 404" in message
    assert f"{wrong.netloc}: checksum mismatch" in message
    assert "gpunet datasets download mnist" in message
    assert not list((isolated / "gpunet" / "mnist").iterdir())  # nothing half-downloaded


def test_offline_never_downloads(monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored) -> None:
    routes, _ = mirrored_mnist
    with serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", server.base + "mnist/")
        with pytest.raises(DatasetMissing):
            datasets.load("mnist", offline=True)
    assert server.requests == []


# --- auto ---------------------------------------------------------------------------------------

FALLBACK = "MNIST unavailable offline: training on Fashion-MNIST from"


def test_auto_falls_back_to_installed_fashion_mnist_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist")
    messages: list[str] = []
    ds = datasets.load("auto", offline=True, say=messages.append)
    assert ds.name == "fashion-mnist"
    assert ds.source == str(REAL_FASHION)
    assert ds.verified is True
    assert messages[0].startswith(FALLBACK)
    assert messages[0].endswith(str(REAL_FASHION))


def test_auto_falls_back_to_fashion_mnist_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist", "fashion-mnist")
    link_real_fashion(tmp_path / "datasets" / "fashion-mnist")
    messages: list[str] = []
    ds = datasets.load("auto", data_dir=tmp_path / "datasets", offline=True, say=messages.append)
    assert ds.name == "fashion-mnist"
    assert ds.source == str(tmp_path / "datasets" / "fashion-mnist")
    assert messages == [f"{FALLBACK} {tmp_path / 'datasets' / 'fashion-mnist'}"]


def test_auto_with_data_dir_holding_fashion_mnist_files_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist")
    messages: list[str] = []
    ds = datasets.load("auto", data_dir=REAL_FASHION, offline=True, say=messages.append)
    assert ds.name == "fashion-mnist"
    assert messages[0].startswith(FALLBACK)


def test_auto_prefers_mnist(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path / "datasets" / "mnist")
    messages: list[str] = []
    ds = datasets.load("auto", data_dir=tmp_path / "datasets", offline=True, say=messages.append)
    assert ds.name == "mnist"
    assert messages == []
    assert_loaded(ds, arrays)


def test_auto_reports_a_corrupt_mnist_instead_of_replacing_it(tmp_path: Path) -> None:
    write_dataset(tmp_path / "datasets" / "mnist")
    (tmp_path / "datasets" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzipped(b"\x00\x00\x08\x03"))
    with pytest.raises(DatasetError, match="truncated header") as info:
        datasets.load("auto", data_dir=tmp_path / "datasets", offline=True)
    assert not isinstance(info.value, DatasetMissing)


def test_auto_with_no_dataset_at_all_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist", "fashion-mnist")
    messages: list[str] = []
    with pytest.raises(DatasetMissing) as info:
        datasets.load("auto", offline=True, say=messages.append)
    cache = datasets.cache_dir()
    assert str(info.value) == (
        f"no dataset available: MNIST not found (--offline forbids downloading); looked in {cache}/mnist. "
        "Run `gpunet datasets download mnist` where there is network, or pass --data-dir DIR holding its four "
        f"IDX files; nor is Fashion-MNIST, the fallback, installed (looked in {cache}/fashion-mnist)"
    )
    assert messages == []


def test_auto_downloads_mnist_with_progress_and_mirror_messages(
    monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored
) -> None:
    routes, arrays = mirrored_mnist
    said: list[str] = []
    progressed: list[str] = []
    with serve({}) as empty, serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{empty.base}mnist/,{server.base}mnist/")
        ds = datasets.load("auto", progress=lambda name: progressed.append(name), say=said.append)
    assert ds.name == "mnist"
    assert_loaded(ds, arrays)
    assert progressed == list(FILE_NAMES)
    assert said == [f"mirror {empty.netloc}: HTTP 404 Not Found; trying {server.netloc}"] * 4


def test_auto_falls_back_to_installed_fashion_mnist_when_mnist_cannot_be_downloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_system(monkeypatch, "mnist")
    messages: list[str] = []
    with serve({}) as empty:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{empty.base}mnist/")
        ds = datasets.load("auto", say=messages.append)
    assert ds.name == "fashion-mnist"
    assert messages == [f"MNIST unavailable (could not be downloaded): training on Fashion-MNIST from {REAL_FASHION}"]
    assert empty.requests == ["/mnist/train-images-idx3-ubyte.gz"]


def test_auto_never_downloads_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback is an installed Fashion-MNIST: downloading was for MNIST, the dataset asked for."""
    hide_system(monkeypatch, "mnist", "fashion-mnist")
    with serve({}) as empty:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{empty.base}files/")
        with pytest.raises(DatasetMissing) as info:
            datasets.load("auto")
    assert empty.requests == ["/files/train-images-idx3-ubyte.gz"]  # MNIST's first file, and nothing after
    cache = datasets.cache_dir()
    assert str(info.value) == (
        f"no dataset available: MNIST not found (could not download train-images-idx3-ubyte.gz: {empty.netloc}: "
        f"HTTP 404 Not Found); looked in {cache}/mnist. Run `gpunet datasets download mnist` where there is "
        "network, or pass --data-dir DIR holding its four IDX files; nor is Fashion-MNIST, the fallback, installed "
        f"(looked in {cache}/fashion-mnist)"
    )


# --- the real Fashion-MNIST ---------------------------------------------------------------------


def test_real_fashion_mnist_loads_verified() -> None:
    ds = datasets.load("fashion-mnist", offline=True)
    assert ds.source == str(REAL_FASHION)
    assert ds.verified is True
    assert ds.train_images.shape == (60000, 784)
    assert ds.test_images.shape == (10000, 784)
    assert ds.train_images.dtype == ds.test_images.dtype == np.uint8
    assert ds.train_labels.shape == (60000,)
    assert ds.test_labels.shape == (10000,)
    assert np.bincount(ds.train_labels, minlength=10).tolist() == [6000] * 10  # all ten classes, balanced
    assert np.bincount(ds.test_labels, minlength=10).tolist() == [1000] * 10
    assert ds.train_images.max() == 255


def test_real_file_recompressed_or_raw_is_still_recognised(tmp_path: Path) -> None:
    folder = link_real_fashion(tmp_path / "copy", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
    (folder / "train-labels-idx1-ubyte").write_bytes(real_contents("train-labels-idx1-ubyte"))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(real_contents("t10k-labels-idx1-ubyte"), 1))
    ds = datasets.load("fashion-mnist", data_dir=folder, offline=True)
    assert ds.verified is True
    assert ds.checksum == datasets.load("fashion-mnist", offline=True).checksum


def test_real_file_with_one_byte_changed_is_a_checksum_mismatch(tmp_path: Path) -> None:
    folder = link_real_fashion(tmp_path / "copy", "t10k-labels-idx1-ubyte")
    contents = bytearray(real_contents("t10k-labels-idx1-ubyte"))
    contents[-1] = (contents[-1] + 1) % 10  # still a valid label: only the checksum can tell
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzipped(bytes(contents)))
    with pytest.raises(DatasetError) as info:
        datasets.load("fashion-mnist", data_dir=folder, offline=True)
    assert str(info.value) == (
        f"{folder}/t10k-labels-idx1-ubyte.gz: checksum mismatch: contents have sha256 "
        f"{hashlib.sha256(contents).hexdigest()[:16]}…, the official file 0402a96d92fd2663…; "
        "the file is corrupt or not the official release (delete it to download it again)"
    )


def test_fashion_mnist_file_where_mnist_expects_its_own_is_named(tmp_path: Path) -> None:
    write_dataset(tmp_path / "mnist")
    shutil.copy(REAL_FASHION / "train-labels-idx1-ubyte.gz", tmp_path / "mnist" / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError) as info:
        datasets.load("mnist", data_dir=tmp_path / "mnist", offline=True)
    assert info.value.path == tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    assert "this is Fashion-MNIST's train-labels-idx1-ubyte, not MNIST's train-labels-idx1-ubyte" in str(info.value)


def test_fashion_mnist_file_under_another_fashion_name_is_named(tmp_path: Path) -> None:
    folder = link_real_fashion(tmp_path / "copy", "t10k-labels-idx1-ubyte")
    shutil.copy(REAL_FASHION / "train-labels-idx1-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="this is Fashion-MNIST's train-labels-idx1-ubyte, not Fashion-MNIST's t10k"):
        datasets.load("fashion-mnist", data_dir=folder, offline=True)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_well_formed() -> None:
    a, b = datasets.synthetic(), datasets.synthetic()
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.checksum == b.checksum
    assert a.train_images.shape == (3000, 784)
    assert a.test_images.shape == (1000, 784)
    assert a.train_images.dtype == a.test_images.dtype == np.uint8
    assert a.train_labels.shape == (3000,)
    assert a.test_labels.shape == (1000,)
    assert a.train_labels.max() < 10
    assert a.test_labels.max() < 10
    assert set(np.unique(a.train_labels)) == set(range(10))


def test_synthetic_is_the_same_dataset_in_every_version() -> None:
    """Checkpoints record its checksum: a later gpunet must generate the very same samples."""
    ds = datasets.synthetic()
    assert ds.checksum == "ff4c9449da412aa14506cb1a9d52952681a673b734f9e4572e2581b9f58199ce"
    assert ds.source == "generated (seed 1234)"
    assert datasets.synthetic(n_train=5, n_test=5, seed=7).source == "generated (seed 7)"


def test_synthetic_pixels_are_off_or_bright() -> None:
    pixels = np.concatenate([datasets.synthetic().train_images.ravel(), datasets.synthetic().test_images.ravel()])
    lit = pixels[pixels > 0]
    assert (lit.min(), lit.max()) == (128, 255)  # strokes of intensity 128..255 on black
    assert 0.2 < len(lit) / len(pixels) < 0.5  # a stroke pattern with some noise, not a blank or a solid image


def test_synthetic_sizes_and_seeds() -> None:
    small = datasets.synthetic(n_train=50, n_test=20, seed=5)
    assert small.train_images.shape == (50, 784)
    assert small.test_labels.shape == (20,)
    assert small.checksum != datasets.synthetic(n_train=50, n_test=20, seed=6).checksum
    np.testing.assert_array_equal(small.train_images, datasets.synthetic(n_train=50, n_test=20, seed=5).train_images)


def test_load_synthetic_is_synthetic() -> None:
    ds = datasets.load("synthetic", offline=True)
    assert ds.name == "synthetic"
    assert ds.checksum == datasets.synthetic().checksum


def test_cli_download_then_auto_prefers_the_downloaded_mnist(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, mirrored_mnist: Mirrored
) -> None:
    from typer.testing import CliRunner

    from gpunet.cli.commands import app

    routes, _ = mirrored_mnist
    with serve(routes) as server:
        monkeypatch.setenv("GPUNET_MIRRORS", f"{server.base}mnist/")
        result = CliRunner().invoke(app, ["datasets", "download", "mnist"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("downloading")] == [
        f"downloading {name}" for name in FILE_NAMES
    ]
    assert "verified against published checksums" in result.output
    trained = CliRunner().invoke(app, ["train", "--offline", "--iterations", "2", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert (
        trained.output.splitlines()[0]
        == f"dataset: mnist from {isolated / 'gpunet' / 'mnist'} (25 train, 10 test images)"
    )


def test_the_split_checks_name_the_file_at_fault() -> None:
    """Both the built-in and a user's IDX folder go through datasets.checked_splits: its errors name files."""
    paths = [Path(f"/d/{name}") for name in ("train-images", "train-labels", "test-images", "test-labels")]
    images, labels = np.zeros((5, 2, 3), np.uint8), np.zeros(5, np.uint8)

    def error(arrays: list[np.ndarray]) -> str:
        with pytest.raises(DatasetError) as e:
            datasets.checked_splits(arrays, paths, 10)
        return str(e.value)

    assert error([images, labels[:4], images, labels]) == "/d/train-labels: 4 labels for 5 images in /d/train-images"
    assert error([images, labels, images, labels[:4]]) == "/d/test-labels: 4 labels for 5 images in /d/test-images"
    shapes_differ = error([images[:, :1], labels, images, labels])
    assert shapes_differ == "/d/test-images: test images are (2, 3), train images (1, 3)"
    rows = datasets.checked_splits([images, labels, images[:3], labels[:3]], paths, 10)
    assert [a.shape for a in rows] == [(5, 6), (5,), (3, 6), (3,)]


def test_class_names_say_what_each_index_means() -> None:
    assert datasets.class_names("fashion-mnist") == list(datasets.FASHION_CLASSES)
    assert datasets.class_names("fashion-mnist")[9] == "Ankle boot" and len(datasets.FASHION_CLASSES) == 10
    assert datasets.class_names("mnist") == [f"digit {i}" for i in range(10)]
    # A dataset of another class count, or a user's own, has numbered classes.
    assert datasets.class_names("fashion-mnist", 3) == ["class 0", "class 1", "class 2"]
    assert datasets.class_names("mnist", 12)[-1] == "class 11"
    assert datasets.class_names("synthetic") == [f"class {i}" for i in range(10)]
    assert datasets.class_names("my-data", 1) == ["class 0"]


def test_first_n_samples_are_views_of_every_split() -> None:
    ds = datasets.synthetic(n_train=30, n_test=20)
    head = ds.first(7)
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        part, whole = getattr(head, split), getattr(ds, split)
        np.testing.assert_array_equal(part, whole[:7])
        assert part.base is whole or part.base is whole.base  # a view: no copy of the images
    assert (head.name, head.source, head.checksum, head.num_classes) == (ds.name, ds.source, ds.checksum, 10)
    no_test = dataclasses.replace(ds, test_images=None, test_labels=None).first(5)  # a fit on arrays has none
    assert no_test.test_images is None and no_test.test_labels is None and len(no_test.train_labels) == 5


def test_a_dataset_has_one_label_per_sample() -> None:
    ds = datasets.synthetic(n_train=3000, n_test=100)
    with pytest.raises(DatasetError) as e:
        dataclasses.replace(ds, train_images=ds.train_images[:1000])  # a subset cut in the images only
    assert str(e.value) == "the training set has 1,000 samples but 3,000 labels"
    with pytest.raises(DatasetError) as e:
        dataclasses.replace(ds, test_labels=ds.test_labels[:99])
    assert str(e.value) == "the test set has 100 samples but 99 labels"
    dataclasses.replace(ds, test_images=None, test_labels=None)  # no test split at all is fine


def test_auto_names_every_place_it_looked_for_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system(monkeypatch, "mnist", "fashion-mnist")
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "mine"))
    with pytest.raises(DatasetMissing) as info:
        datasets.load("auto", offline=True)
    cache, mine = datasets.cache_dir(), tmp_path / "mine"
    assert str(info.value).endswith(
        f"; nor is Fashion-MNIST, the fallback, installed (looked in {mine}/fashion-mnist, {mine}, "
        f"{cache}/fashion-mnist)"
    )
