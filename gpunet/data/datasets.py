"""Datasets: where they are looked for, how they are fetched and checked, and a synthetic one.

Lookup order for `mnist` and `fashion-mnist`: $GPUNET_DATA, the user cache
(~/.cache/gpunet/<name>), then Debian's /usr/share/datasets/<name>; or --data-dir
alone when it is given (an explicit choice is used or refused, never passed over).
Each of those may hold the four files directly or in a <name>/ subfolder.
A missing dataset is downloaded into the cache unless offline or --data-dir is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpunet.data import cooloff
from gpunet.data.idx import check_split, parse_idx, read_bytes
from gpunet.errors import ConfigError, DatasetError, DatasetMissing, ForeignFile, printable, program, shown
from gpunet.files import environment, inputs

if TYPE_CHECKING:  # the downloader (urllib, http.client) is imported only when a download is due
    from gpunet.data.download import Progress

NUM_CLASSES = 10
IMAGE_PIXELS = 28 * 28  # every dataset gpunet knows; files of another size are read as they are


@dataclass(frozen=True)
class DataFile:
    name: str  # e.g. "train-images-idx3-ubyte"; stored as name + ".gz" or raw
    gz_sha256: str  # of the mirrors' .gz bytes: what a download is checked against
    raw_sha256: str | None  # of the decompressed contents: recognises any local copy


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    mirrors: tuple[str, ...]
    files: tuple[DataFile, DataFile, DataFile, DataFile]  # train images, train labels, test images, test labels


MNIST = DatasetSpec(
    "mnist",
    "MNIST",
    (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    (
        DataFile("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", None),
        DataFile("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", None),
        DataFile("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", None),
        DataFile("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", None),
    ),
)

FASHION_MNIST = DatasetSpec(
    "fashion-mnist",
    "Fashion-MNIST",
    (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    (
        DataFile(
            "train-images-idx3-ubyte",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        DataFile(
            "train-labels-idx1-ubyte",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        DataFile(
            "t10k-images-idx3-ubyte",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        DataFile(
            "t10k-labels-idx1-ubyte",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
)

SPECS = {s.name: s for s in (MNIST, FASHION_MNIST)}

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def class_names(dataset: str, num_classes: int = NUM_CLASSES) -> list[str]:
    """What each class index means, for people: a user's data has numbered classes."""
    if dataset == "fashion-mnist" and num_classes == NUM_CLASSES:
        return list(FASHION_CLASSES)
    if dataset == "mnist" and num_classes == NUM_CLASSES:
        return [f"digit {i}" for i in range(NUM_CLASSES)]
    return [f"class {i}" for i in range(num_classes)]


DATASET_NAMES = ("auto", "mnist", "fashion-mnist", "synthetic")


class UnknownDataset(ConfigError, DatasetError):
    """A --dataset name that is none of DATASET_NAMES: a bad option (exit code 2), and a DatasetError."""


def check_name(name: str) -> None:
    """Refuse a name that is not a built-in dataset, in the one wording every caller uses."""
    if name not in DATASET_NAMES:
        raise UnknownDataset(f"unknown dataset '{printable(name)}': choose one of {', '.join(DATASET_NAMES)}")


def layers_for(name: str, hidden: tuple[int, ...]) -> list[int]:
    """The layer sizes of a network on the built-in dataset `name`, known before reading it: every one
    gpunet knows is 28x28 pixels of 10 classes (a user's data is measured once read: layer_sizes)."""
    check_name(name)
    return [IMAGE_PIXELS, *hidden, NUM_CLASSES]


def _known() -> dict[str, tuple[DatasetSpec, DataFile]]:
    """Every known checksum (of SPECS as they are), so a file of one dataset found where another
    was expected is named for what it is instead of being trained on by mistake."""
    return {sha: (spec, f) for spec in SPECS.values() for f in spec.files for sha in (f.gz_sha256, f.raw_sha256) if sha}


@dataclass
class Dataset:
    """Samples as (n, features) rows and labels as (n,) class indices 0..num_classes-1.

    Rows are uint8 pixels (scaled to [0, 1] on the device, as the built-in
    datasets are) or numbers used as given. The arrays are numpy on the host,
    except for a Dataset built by the Python API around a user's device arrays.
    The test split may be absent (None): a fit on arrays has no held-out set.
    """

    name: str
    source: str  # where it came from, for the user and for the record
    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any
    checksum: str  # SHA-256 over the decompressed contents of all four files
    verified: bool = True  # False when no published checksum could vouch for a file
    num_classes: int = NUM_CLASSES
    files: tuple[Path, ...] = ()  # the files it was read from (no output may replace them)
    # The directory a built-in dataset was read from, for readers in other processes (Dask workers);
    # None for data that is not a built-in dataset's files. (`source` is for people, not for reading.)
    directory: Path | None = None
    # What class i stands for when the labels were texts (a user's --data: 'cat', 'dog'); the labels
    # are then indices into it, sorted as the estimator's classes_ are. None: class i is the number i.
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Built from arrays anywhere (a user's, a subset, a sweep's): never one label per sample too few.
        for split, x, y in (
            ("training", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if x is not None and y is not None and x.shape[0] != y.shape[0]:
                raise DatasetError(f"the {split} set has {x.shape[0]:,} samples but {y.shape[0]:,} labels")

    def first(self, n: int) -> Dataset:
        """The first `n` samples of each split (views, no copy)."""
        splits = ("train_images", "train_labels", "test_images", "test_labels")
        return dataclasses.replace(
            self, **{f: getattr(self, f)[:n, ...] for f in splits if getattr(self, f) is not None}
        )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpunet"


def search_dirs(name: str, data_dir: Path | None = None) -> list[Path]:
    """Where a dataset is looked for, in order: only in --data-dir when it is given."""
    if data_dir is not None:
        return [Path(data_dir) / name, Path(data_dir)]
    env_dir = environment.data_dir()
    roots = [env_dir] if env_dir is not None else []
    dirs = [d for root in roots for d in (root / name, root)]
    return [*dirs, cache_dir() / name, Path("/usr/share/datasets") / name]


def mirrors(spec: DatasetSpec) -> tuple[str, ...]:
    """$GPUNET_MIRRORS (comma-separated base URLs) replaces the built-in list."""
    return environment.mirrors() or spec.mirrors


def _file_in(directory: Path, f: DataFile) -> Path | None:
    for candidate in (directory / f"{f.name}.gz", directory / f.name):
        try:
            if candidate.is_file():
                return candidate
        except OSError as e:  # an unsearchable directory, a path too long: said, not a traceback
            raise DatasetError(f"cannot look in this directory: {inputs.os_reason(e, candidate)}", directory) from None
    return None


def _check_named_dir(path: Path, named_by: str) -> None:
    """A directory the user named (--data-dir, $GPUNET_DATA) is used or refused, never passed over."""
    reason = inputs.problem(path)
    if reason == "a directory, not a file":
        return
    if reason is None:
        reason = "a file, not a directory"
    elif reason == "no such file":
        reason = "no such directory"
    raise DatasetError(f"{named_by} {shown(path)}: {reason}")


def locate(spec: DatasetSpec, data_dir: Path | None = None) -> tuple[Path | None, list[Path]]:
    """The first directory holding all four files, and the searched ones.

    A directory holding only some of them is an error (files went missing),
    except the cache, where a later download completes the set. With
    `data_dir`, only that directory (and its <name>/ folder) is searched.
    """
    if data_dir is not None:
        _check_named_dir(Path(data_dir), "--data-dir")
    elif (env_dir := environment.data_dir()) is not None:
        _check_named_dir(env_dir, "$GPUNET_DATA")
    searched = search_dirs(spec.name, data_dir)
    for d in searched:
        present = [f for f in spec.files if _file_in(d, f)]
        if len(present) == len(spec.files):
            return d, searched
        if present and d != cache_dir() / spec.name:
            missing = ", ".join(f.name for f in spec.files if f not in present)
            raise DatasetError(f"incomplete {spec.title}: missing {missing}", d)
    return None, searched


def _verified_contents(path: Path, f: DataFile, spec: DatasetSpec) -> tuple[bytes, str, bool]:
    """Decompressed contents, their SHA-256, and whether a known checksum vouched for them."""
    stored, contents = read_bytes(path)
    raw_sha, stored_sha = hashlib.sha256(contents).hexdigest(), hashlib.sha256(stored).hexdigest()
    if stored_sha == f.gz_sha256 or raw_sha == f.raw_sha256:
        return contents, raw_sha, True
    known = _known()
    other = known.get(raw_sha) or known.get(stored_sha)
    if other is not None:
        other_spec, other_file = other
        raise ForeignFile(f"this is {other_spec.title}'s {other_file.name}, not {spec.title}'s {f.name}", path)
    if f.raw_sha256 is not None:
        raise DatasetError(
            f"checksum mismatch: contents have sha256 {raw_sha[:16]}…, the official file {f.raw_sha256[:16]}…; "
            "the file is corrupt or not the official release (delete it to download it again)",
            path,
        )
    return contents, raw_sha, False


def checked_splits(
    arrays: list[np.ndarray], paths: list[Path], max_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four IDX arrays (train images, labels, test images, labels) checked as one dataset, images as rows."""
    train_x, train_y, test_x, test_y = arrays
    check_split(train_x, train_y, max_classes, paths[0], paths[1])
    check_split(test_x, test_y, max_classes, paths[2], paths[3])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"test images are {test_x.shape[1:]}, train images {train_x.shape[1:]}", paths[2])
    return _as_rows(train_x), train_y, _as_rows(test_x), test_y


def _as_rows(images: np.ndarray) -> np.ndarray:
    """(n, height, width) images, as check_split ensures, as (n, height * width) rows."""
    n, height, width = images.shape
    return images.reshape(n, height * width)


def load_dir(spec: DatasetSpec, directory: Path) -> Dataset:
    """Read, verify and validate the four files in `directory`."""
    arrays, shas, paths = [], [], []
    verified = True
    for f in spec.files:
        path = _file_in(directory, f)
        if path is None:
            raise DatasetError(f"missing {f.name}(.gz)", directory)
        contents, sha, ok = _verified_contents(path, f, spec)
        arrays.append(parse_idx(contents, path))
        shas.append(sha)
        paths.append(path)
        verified &= ok
    train_x, train_y, test_x, test_y = checked_splits(arrays, paths, NUM_CLASSES)
    return Dataset(
        name=spec.name,
        source=str(directory),
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        checksum=hashlib.sha256("".join(shas).encode()).hexdigest(),
        verified=verified,
        files=tuple(paths),
        directory=Path(directory),
    )


def fetch(
    spec: DatasetSpec,
    progress: Callable[[str], Progress | None] | None = None,
    target: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Download whatever of `spec` `target` (by default the cache) lacks; returns that directory."""
    target = target or cache_dir() / spec.name
    bases = mirrors(spec)
    for f in spec.files:
        if _file_in(target, f) is None:
            urls = [base + f.name + ".gz" for base in bases]
            from gpunet.data.download import download

            try:
                download(urls, target / f"{f.name}.gz", f.gz_sha256, progress(f.name) if progress else None, say=say)
            except DatasetError:  # every mirror failed: `auto` need not wait for them again for a while
                cooloff.remember(cache_dir(), spec.name, bases)
                raise
    cooloff.forget(cache_dir(), spec.name)
    return target


def _not_found(spec: DatasetSpec, searched: list[Path], why: str) -> DatasetMissing:
    debian = f" or `apt-get install dataset-{spec.name}`" if spec is FASHION_MNIST else ""
    where = ", ".join(shown(d) for d in searched)
    return DatasetMissing(
        f"{spec.title} not found ({why}); looked in {where}. "
        f"Run `{program()} datasets download {spec.name}` where there is network{debian}, "
        "or pass --data-dir DIR holding its four IDX files"
    )


def load(
    name: str,
    data_dir: Path | None = None,
    offline: bool = False,
    progress: Callable[[str], Progress | None] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Dataset:
    """Find (or download) and load a dataset by name; `auto` prefers MNIST."""
    if name == "synthetic":
        return synthetic()
    if name == "auto":
        return _load_auto(data_dir, offline, progress, say)
    check_name(name)
    spec = SPECS[name]
    found, searched = locate(spec, data_dir)
    if found is None:
        if data_dir is not None:  # the directory the user chose, or nothing: no download elsewhere
            where = " and ".join(shown(d) for d in searched)
            raise DatasetMissing(
                f"{spec.title} is not in --data-dir (looked in {where} for its four IDX files, "
                "train-images-idx3-ubyte and the others, gzip or raw)"
            )
        if offline:
            raise _not_found(spec, searched, "--offline forbids downloading")
        try:
            found = fetch(spec, progress, say=say)
        except DatasetError as e:
            raise _not_found(spec, searched, str(e)) from e
    return load_dir(spec, found)


def _load_auto(
    data_dir: Path | None,
    offline: bool,
    progress: Callable[[str], Progress | None] | None,
    say: Callable[[str], None],
) -> Dataset:
    if not offline and data_dir is None and (fashion := _fallback_while_mirrors_cool_off(say)) is not None:
        return fashion
    try:
        return load("mnist", data_dir, offline, progress, say)
    except (DatasetMissing, ForeignFile) as e:  # a corrupt MNIST is reported, not replaced
        mnist_error = e
    found, searched = locate(FASHION_MNIST, data_dir)  # the fallback is only looked for, never downloaded
    if found is None:
        where = ", ".join(shown(d) for d in searched)
        raise DatasetMissing(
            f"no dataset available: {mnist_error}; nor is Fashion-MNIST, the fallback, installed (looked in {where})"
        )
    fashion = load_dir(FASHION_MNIST, found)
    why = "offline" if offline else "(could not be downloaded)"
    say(f"MNIST unavailable {why}: training on Fashion-MNIST from {fashion.source}")
    return fashion


def _fallback_while_mirrors_cool_off(say: Callable[[str], None]) -> Dataset | None:
    """The installed Fashion-MNIST, said in one line, when MNIST is not here and its mirrors all failed
    lately (gpunet.data.cooloff); None when MNIST is to be looked for (and downloaded) as usual."""
    if locate(MNIST)[0] is not None:
        return None
    failed = cooloff.failed_recently(cache_dir(), MNIST.name, mirrors(MNIST))
    if failed is None:
        return None
    found, _ = locate(FASHION_MNIST)
    if found is None:  # no fallback: the mirrors are the only hope, so they are tried
        return None
    fashion = load_dir(FASHION_MNIST, found)
    say(
        f"MNIST mirrors unreachable {cooloff.ago(failed)}; training on Fashion-MNIST from {fashion.source}; "
        f"retry now with `{program()} datasets download mnist` (or GPUNET_MIRROR_COOLOFF=0)"
    )
    return fashion


def synthetic(n_train: int = 3000, n_test: int = 1000, seed: int = 1234) -> Dataset:
    """Ten noisy 28x28 stroke patterns: learnable in seconds, for quick runs and tests."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((NUM_CLASSES, 784)) < 0.2

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
        flips = rng.random((n, 784)) < 0.3  # noisy enough to take a few dozen steps
        on = prototypes[labels] ^ flips
        intensity = rng.integers(128, 256, (n, 784))
        return (on * intensity).astype(np.uint8), labels

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    checksum = hashlib.sha256(train_x.tobytes() + train_y.tobytes() + test_x.tobytes() + test_y.tobytes()).hexdigest()
    return Dataset("synthetic", f"generated (seed {seed})", train_x, train_y, test_x, test_y, checksum)
