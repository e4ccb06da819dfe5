"""Time one full-batch gradient on the CPU for several chunk schedules, taking turns.

Usage: python benchmarks/chunk_rows.py [--rounds N] [--json PATH]
Why: gpunet.training.engine.CPU_CHUNK_ROWS is chosen from this measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

import numpy as np

from gpunet.bench.suite import machine_info
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.training.engine import LocalEngine, cpu_cores
from gpunet.training.initializers import he_normal
from gpunet.training.train import DeviceData

SCHEDULES = [(None, 1), (2048, 2), (4096, 2), (8192, 2), (15000, 2), (30000, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    ds = datasets.load("fashion-mnist", offline=True)
    split = DeviceData.from_host(ds.train_images, ds.train_labels, resolve_device("cpu"), "float32", 10)
    params = he_normal([784, 16, 16, 10], seed=0)
    workers = cpu_cores()
    engines = {f"{rows or 'all'} rows x {min(w, workers)}": LocalEngine(rows, min(w, workers)) for rows, w in SCHEDULES}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():  # warm-up
        engine.loss_and_gradients(params, split.x, split.targets)
    for _ in range(args.rounds):  # take turns, so the machine's drift falls on all alike
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.loss_and_gradients(params, split.x, split.targets)
            times[name].append(1000 * (time.perf_counter() - start))
    for name, t in times.items():
        print(f"{name:>18}: median {np.median(t):6.1f} ms  (IQR {np.subtract(*np.percentile(t, [75, 25])):.1f})")
    if args.json:
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "what": "one full-batch gradient (forward + backward), 60000x784 float32, 784-16-16-10",
            "ms": {name: {"median": float(np.median(t)), "all": t} for name, t in times.items()},
        }
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
