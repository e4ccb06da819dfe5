"""The numba CPU engine against the array-API reference as the hidden layers widen.

Usage: python benchmarks/cpu_engine_widths.py [--rounds N] [--json PATH]

One full-batch gradient (Fashion-MNIST's 60,000 rows, float32) per call, each engine on its own
input (the numba engine reads the uint8 pixels, the reference the scaled floats, as the trainer gives
them), medians of N calls after two untimed ones, the two engines taking turns per width. Why:
issue 23 makes the numba engine the default for any hidden sizes; its kernels are made for 16-wide
layers, so this shows whether it is still the faster engine where layers are wider.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.bench.suite import machine_info
from gpunet.core import model
from gpunet.core.flat import Layout
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.training.engine import LocalEngine, choose_engine
from gpunet.training.initializers import he_normal

WIDTHS = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (16,), (100,)]


def median_ms(engine: Any, params: list[np.ndarray], rows: np.ndarray, targets: np.ndarray, rounds: int) -> float:
    """The median ms of one full-batch gradient on `engine`, after two untimed ones."""
    out = np.empty(Layout.of(params).size, params[0].dtype)
    for _ in range(2):
        engine.gradient_flat(params, rows, targets, 1 / len(rows), out)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        engine.gradient_flat(params, rows, targets, 1 / len(rows), out)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dataset = datasets.load("fashion-mnist", offline=True)
    pixels = np.ascontiguousarray(dataset.train_images.reshape(dataset.train_images.shape[0], -1))
    x = pixels.astype(np.float32)
    x /= np.float32(255)  # as the trainer scales them
    targets = model.one_hot_t(dataset.train_labels, dataset.num_classes, np.dtype(np.float32)).T
    cpu = resolve_device("cpu")
    rows = []
    for hidden in WIDTHS:
        sizes = [pixels.shape[1], *hidden, dataset.num_classes]
        params = he_normal(sizes, 0, "float32")
        fast, reference = choose_engine(cpu, "float32"), LocalEngine.for_device(cpu)
        fast.prepare(np.uint8)
        numba_ms = median_ms(fast, params, pixels, targets, args.rounds)
        reference_ms = median_ms(reference, params, x, targets, args.rounds)
        fast.close()
        reference.close()
        rows.append({"hidden": list(hidden), "numba_ms": numba_ms, "reference_ms": reference_ms})
        print(
            f"hidden {','.join(map(str, hidden)):>8}: numba {numba_ms:7.1f} ms  reference {reference_ms:7.1f} ms  "
            f"ratio {numba_ms / reference_ms:.2f}  ({fast.describe(len(x))})",
            flush=True,
        )
    if args.json:
        record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info()}
        args.json.write_text(json.dumps({**record, "rounds": args.rounds, "widths": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
