"""A newcomer's first hour, the rest (issue 19, item 8): the points tests/test_first_hour.py left open.

Each test goes through a public surface: the command line (typer's CliRunner) or the Python API.
Nothing leaves the machine: downloads go to a server on 127.0.0.1 (tests/idxfiles.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

import gpunet
from gpunet.data import datasets

pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: an empty cache, no network


def pixel_rows(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float rows like the README's: MNIST-style pixels 0..255, and some features almost always 0."""
    ds = datasets.synthetic(n_train=n, n_test=10, seed=seed)
    x = ds.train_images.astype(np.float64)
    x[:, :50] = 0
    x[0, :50] = 255  # near-constant features: after standardising, this one value is about sqrt(n)
    return x, ds.train_labels


# --- b. the "far outside a unit range" warning --------------------------------------------------


def test_the_readmes_standardised_inputs_get_no_unit_range_warning() -> None:
    x, y = pixel_rows()
    standardised = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)  # the README's line
    assert np.abs(standardised).max() > 20  # what a rule on the maximum took for unscaled pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(standardised, y)


def test_unscaled_float_pixels_still_get_the_warning() -> None:
    x, y = pixel_rows()
    with pytest.warns(UserWarning, match=r"root mean square of .*far outside a unit range.*divided by 255"):
        gpunet.MLPClassifier(device="cpu", iterations=2).fit(x, y)


def test_doctor_passes_standardised_data_and_fails_unscaled_floats(tmp_path: Path) -> None:
    x, y = pixel_rows()
    standardised = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    np.savez(tmp_path / "std.npz", x=standardised.astype(np.float32), y=y)
    np.savez(tmp_path / "raw.npz", x=x.astype(np.float32), y=y)
    good = invoke("doctor", "--data", tmp_path / "std.npz", "--device", "cpu")
    first = next(line for line in good.stdout.splitlines() if " 1. " in line)
    assert first.startswith("PASS"), good.stdout
    bad = invoke("doctor", "--data", tmp_path / "raw.npz", "--device", "cpu")
    first = next(line for line in bad.stdout.splitlines() if " 1. " in line)
    assert first.startswith("FAIL") and "far outside a unit range" in first, bad.stdout
    assert bad.exit_code == 1
