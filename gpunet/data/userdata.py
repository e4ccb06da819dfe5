"""A user's own data (`--data PATH`, `gpunet.load_dataset(PATH)`): a .npz file or a folder of four IDX files.

- .npz with x_train, y_train, x_test, y_test; or with x, y only, of which a
  fixed fifth of the rows (drawn by a seeded shuffle, the same every run) is
  held out as the test split.
- A folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each raw or .gz; the
  dotted names some copies use, train-images.idx3-ubyte, are found too):
  uint8 images of any size, uint8 labels.

Samples are rows: images of any shape are flattened. uint8 values are pixels
(scaled to [0, 1] for training, as the built-in datasets are); other numbers
are used as given. Labels are class numbers 0..K-1, any K from 2 up, or texts
('cat', 'dog'), numbered in sorted order as the estimator's classes_ are and kept
as the model's class names (Dataset.classes, then the checkpoint's). No
published checksum covers a user's files, so they get the format checks
only; their SHA-256 identifies them in checkpoints, and the file or folder
name is the dataset's name.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.data import datasets
from gpunet.data.idx import parse_idx, read_bytes
from gpunet.errors import DatasetError
from gpunet.files import archives, inputs

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPZ_SPLITS = ("x_train", "y_train", "x_test", "y_test")
HELD_OUT = 0.2  # of an (x, y) file's rows, for the test split
SPLIT_SEED = 0
MAX_CLASSES = 65536


def load_path(path: Path, say: Callable[[str], None] = lambda _: None) -> datasets.Dataset:
    """Read and check a user's .npz file or IDX folder, or raise DatasetError saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        return _load_idx_folder(path)
    if not path.exists():
        raise DatasetError("no such file or folder", path)
    if not path.is_file():
        raise DatasetError("not a regular file or a folder", path)
    reason = inputs.problem(path)
    if reason is not None:  # unreadable: said before its first bytes are looked at
        raise DatasetError(reason, path)
    return _load_npz(path, say)


def describe(ds: datasets.Dataset) -> str:
    """One line saying what was read."""
    x = ds.train_images
    kind = "uint8 pixels, scaled to [0, 1]" if x.dtype == np.uint8 else f"{x.dtype} numbers, used as given"
    return (
        f"data: {ds.name} from {ds.source}: {len(x):,} train and {len(ds.test_images):,} test rows of "
        f"{x.shape[1]:,} features ({kind}), {ds.num_classes} classes{_named(ds.classes)}, sha256 {ds.checksum[:16]}…"
    )


def _named(classes: tuple[str, ...] | None, shown: int = 4) -> str:
    """The first class names, for describe(): ' (cat, dog, …)'; '' for numbered classes."""
    if classes is None:
        return ""
    more = ", …" if len(classes) > shown else ""
    return f" ({', '.join(repr(c) for c in classes[:shown])}{more})"


# --- IDX folders ------------------------------------------------------------------------------


def _idx_file(folder: Path, name: str) -> Path:
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, f"{name}.gz", dotted, f"{dotted}.gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise DatasetError(
        f"missing {name} (raw or .gz); a --data folder holds the four IDX files {', '.join(IDX_FILES)}", folder
    )


def _load_idx_folder(folder: Path) -> datasets.Dataset:
    paths = [_idx_file(folder, name) for name in IDX_FILES]
    arrays, shas = [], []
    for path in paths:
        _, contents = read_bytes(path)
        arrays.append(parse_idx(contents, path))
        shas.append(hashlib.sha256(contents).hexdigest())
    return _dataset(
        folder,
        *datasets.checked_splits(arrays, paths, MAX_CLASSES),
        hashlib.sha256("".join(shas).encode()).hexdigest(),  # as for the built-in datasets
        tuple(paths),
    )


# --- .npz files -------------------------------------------------------------------------------


def _load_npz(path: Path, say: Callable[[str], None]) -> datasets.Dataset:
    what = inputs.kind(path)
    if what == "npy":  # a .npy, whatever its name says: rows without labels
        raise DatasetError(
            "a single .npy array, which holds no labels: --data takes a .npz file of x_train, y_train, x_test, "
            "y_test (or x and y), e.g. np.savez('mine.npz', x=X, y=y), or a folder of IDX files",
            path,
        )
    if what != "zip":
        raise DatasetError(
            f"{inputs.describe(what)}, not a readable .npz file (--data takes a .npz file or a folder of IDX files)",
            path,
        )
    with archives.Npz(path) as f:  # only the arrays used are read, each checked before it is
        if all(k in f for k in NPZ_SPLITS):
            keys: tuple[str, ...] = NPZ_SPLITS
        elif "x" in f and "y" in f:
            keys = ("x", "y")
        else:
            found = ", ".join(sorted(f.names)) or "nothing"
            expected = "x_train, y_train, x_test, y_test (or x, y)"
            raise DatasetError(f"a --data .npz holds {expected}; this one holds {found}", path)
        arrays = {k: f[k] for k in keys}
    checksum = archives.sha256_of(path)
    if keys == NPZ_SPLITS:
        splits = [arrays[k] for k in NPZ_SPLITS]
    else:
        x, y = _rows(arrays["x"], "x", path), _texts_or_labels(arrays["y"], "y", path)
        if len(x) != len(y) or len(x) < 2:
            raise DatasetError(f"x has {len(x)} rows and y {len(y)} labels: one label per row, 2 rows or more", path)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
        held = max(1, round(HELD_OUT * len(x)))
        test, train = np.sort(order[:held]), np.sort(order[held:])
        say(f"{path.name} holds x and y: {held:,} of {len(x):,} rows held out as the test split (seeded, fixed)")
        splits = [x[train], y[train], x[test], y[test]]
    train_x, test_x = _rows(splits[0], "x_train", path), _rows(splits[2], "x_test", path)
    train_y, test_y = _texts_or_labels(splits[1], "y_train", path), _texts_or_labels(splits[3], "y_test", path)
    classes = None
    if (train_y.dtype.kind == "U") != (test_y.dtype.kind == "U"):
        raise DatasetError("y_train and y_test must both be class numbers or both texts", path)
    if train_y.dtype.kind == "U":  # texts: numbered in sorted order over both splits, kept as the names
        names, codes = np.unique(np.concatenate([train_y, test_y]), return_inverse=True)
        classes = tuple(str(c) for c in names)
        train_y, test_y = codes[: len(train_y)].astype(np.int64), codes[len(train_y) :].astype(np.int64)
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if len(x) != len(y):
            raise DatasetError(f"the {what} split has {len(x)} rows and {len(y)} labels: one label per row", path)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"x_test rows have {test_x.shape[1]} features, x_train rows {train_x.shape[1]}", path)
    if train_x.dtype != test_x.dtype:
        raise DatasetError(f"x_train is {train_x.dtype} and x_test {test_x.dtype}: both must be alike", path)
    return _dataset(path, train_x, train_y, test_x, test_y, checksum, (path,), classes)


def _rows(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Samples as rows: (n, ...) flattened to (n, features), real numbers, all finite."""
    if x.ndim < 1 or len(x) == 0:
        raise DatasetError(f"{key} holds no samples (shape {x.shape})", path)
    if x.ndim == 1:
        raise DatasetError(f"{key} is 1-D {x.shape}: rows of features are (n, features), e.g. x.reshape(-1, 1)", path)
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{key} holds {x.dtype} values; features are numbers", path)
    x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise DatasetError(f"{key} rows have no features (shape {x.shape})", path)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DatasetError(f"{key} holds {bad:,} NaN or infinite values", path)
    return x


def _texts_or_labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Texts (as str, one per sample), or class numbers as _labels checks them."""
    if y.dtype.kind not in "US":
        return _labels(y, key, path)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{key} has shape {y.shape}: labels are one class per sample", path)
    return np.char.decode(y, "utf-8", errors="replace") if y.dtype.kind == "S" else y


def _labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Class numbers 0..K-1, as a 1-D integer array."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{key} has shape {y.shape}: labels are one class number per sample", path)
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not (y == np.round(y)).all()):
        raise DatasetError(f"{key} holds values that are not class numbers (floats with fractions, NaN)", path)
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"{key} holds {y.dtype} values; labels are class numbers 0, 1, 2, … or texts", path)
    if len(y) and y.max() >= MAX_CLASSES:
        raise DatasetError(
            f"{key} holds labels up to {int(y.max()):,}: gpunet trains at most {MAX_CLASSES:,} classes", path
        )
    if len(y) and y.min() < 0:
        raise DatasetError(f"{key} holds labels {y.min():g}..{y.max():g}; classes are numbered 0..K-1", path)
    return y.astype(np.int64)


def _dataset(
    path: Path,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    checksum: str,
    files: tuple[Path, ...],
    classes: tuple[str, ...] | None = None,
) -> datasets.Dataset:
    num_classes = len(classes) if classes is not None else int(max(train_y.max(), test_y.max())) + 1
    if num_classes < 2:
        only = repr(classes[0]) if classes else "0"
        raise DatasetError(f"every label is {only}: a classifier needs at least two classes", path)
    return datasets.Dataset(
        name=path.resolve().name,
        source=str(path),
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        checksum=checksum,
        verified=False,
        num_classes=num_classes,
        files=files,  # inputs: no output may replace them
        classes=classes,
    )


def load_dataset(
    name: str | Path, data_dir: str | Path | None = None, offline: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test of a built-in dataset or of a user's .npz file or IDX folder.

    `name` is mnist, fashion-mnist or synthetic (looked up, and downloaded
    unless `offline`, as the command line does), or a path. Images come as
    (n, pixels) uint8 rows, labels as integer arrays.
    """
    # 'cifar': a dataset name, not a missing file
    if isinstance(name, str) and not any(c in name for c in "/.\\") and not Path(name).exists():
        datasets.check_name(name)
    if isinstance(name, Path) or str(name) not in datasets.DATASET_NAMES:
        ds = load_path(Path(name))
    else:
        ds = datasets.load(str(name), Path(data_dir) if data_dir else None, offline)
    return ds.train_images, ds.train_labels, ds.test_images, ds.test_labels


def relabelled(ds: datasets.Dataset, model_classes: list[Any] | None, model: Path) -> datasets.Dataset:
    """`ds` with its labels numbered as `model`'s output units are (`model_classes`, its checkpoint's
    labels): data labelled with texts is numbered in its own sorted order, which is the model's only
    when both hold the same classes. A label the model does not know, or texts against a model of
    numbered classes (and numbers against one of texts), is refused in one line."""
    if ds.classes is None and (model_classes is None or all(not isinstance(c, str) for c in model_classes)):
        return ds  # numbers against numbers: class i is unit i, as it always was
    if ds.classes is None or model_classes is None or not all(isinstance(c, str) for c in model_classes):
        data = "texts" if ds.classes is not None else "class numbers"
        theirs = "texts" if model_classes and all(isinstance(c, str) for c in model_classes) else "class numbers"
        raise DatasetError(f"{ds.name} is labelled with {data}, but {model} was trained on {theirs}")
    units = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in ds.classes if c not in units]
    if unknown:
        listed = ", ".join(repr(c) for c in unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise DatasetError(f"{ds.name} holds labels {model} was not trained on: {listed}")
    mapping = np.array([units[c] for c in ds.classes], dtype=np.int64)
    return dataclasses.replace(
        ds,
        train_labels=mapping[ds.train_labels],
        test_labels=mapping[ds.test_labels],
        num_classes=len(model_classes),
        classes=tuple(model_classes),
    )
