"""How close the numpy step is to what OpenBLAS allows: the step against its two big products alone.

Usage: python benchmarks/cpu_bound.py [--rounds N] [--per-turn K] [--json PATH]

Times, taking turns for N rounds so the machine's drift falls on all alike
(K runs per turn, the first of each turn untimed: PyTorch's OpenMP threads
keep spinning for a while after its last call and would slow whatever ran next):
- the numpy training step (gpunet's engine and Adam, Fashion-MNIST, 784-16-16-10);
- only the two products with the 60000x784 input (X·W1 and dZ1ᵀ·X) on the same
  chunks and threads, with nothing else: no numpy step can be faster than this;
- the PyTorch CPU reference step, and the same two products in PyTorch (MKL);
and the machine's floor as `gpunet bench` measures it. Why: issue 3 asks for the
numpy step at <= 0.5x PyTorch and <= 3x the floor; this shows where the step's
time goes and whether the products alone fit under those lines.
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

from gpunet.bench.suite import machine_info, measure_floor, step_cost
from gpunet.bench.torch_reference import TorchTrainer
from gpunet.data import datasets
from gpunet.device.backend import resolve_device
from gpunet.training.engine import LocalEngine
from gpunet.training.train import TrainConfig, Trainer


def products_only(trainer: Trainer) -> Any:
    """The engine's schedule, each chunk doing only its two products with the input."""
    engine, x = trainer.engine, trainer.source.data.x
    w1 = trainer.params[0]
    delta = np.ones((x.shape[0], w1.shape[1]), dtype=x.dtype)

    def unit(params: Any, xc: Any, dc: Any) -> tuple[Any, list[Any]]:
        xc @ w1
        return np.zeros((), x.dtype), [dc.T @ xc]

    return lambda: engine._reduce(unit, trainer.params, x, delta)


def torch_products(torch_trainer: TorchTrainer) -> Any:
    torch = torch_trainer.torch
    x, w1 = torch_trainer.train_x, torch_trainer.params[0].detach()
    delta = torch.ones((x.shape[0], w1.shape[1]), dtype=x.dtype)

    def run() -> None:
        x @ w1
        delta.T @ x

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-turn", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dataset = datasets.load("fashion-mnist", offline=True)
    config = TrainConfig()
    cpu = resolve_device("cpu")
    # The reference engine: its row chunks are what this script times.
    trainer = Trainer(config, dataset, cpu, engine=LocalEngine.for_device(cpu))
    torch_trainer = TorchTrainer(config, dataset, "cpu")
    cases = {
        "numpy step": trainer.step,
        "numpy products only": products_only(trainer),
        "torch-cpu step": torch_trainer.step,
        "torch products only": torch_products(torch_trainer),
    }
    for run in cases.values():  # warm-up
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            run()
            for _ in range(args.per_turn - 1):
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
    floor = measure_floor("cpu")
    flops, nbytes = step_cost(trainer.sizes, dataset.train_images.shape[0], 4)
    floor_ms = floor.ms(flops, nbytes)
    medians = {name: statistics.median(t) for name, t in times.items()}
    torch_ms = medians["torch-cpu step"]
    print(
        f"floor {floor_ms:.1f} ms ({floor.measured_with}); targets: <= {0.5 * torch_ms:.1f} ms (0.5x torch), "
        f"<= {3 * floor_ms:.1f} ms (3x floor)"
    )
    for name, ms in medians.items():
        q = statistics.quantiles(times[name], n=4)
        print(
            f"{name:22s} median {ms:7.1f} ms (IQR {q[2] - q[0]:5.1f})  x torch step {ms / torch_ms:5.2f}  "
            f"x floor {ms / floor_ms:5.2f}"
        )
    if args.json:
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f"python benchmarks/cpu_bound.py --rounds {args.rounds} --per-turn {args.per_turn}",
            "machine": machine_info(),
            "engine": trainer.engine.describe(),
            "floor_ms": floor_ms,
            "floor": floor.__dict__,
            "ms": times,
            "median_ms": medians,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    trainer.close()


if __name__ == "__main__":
    main()
