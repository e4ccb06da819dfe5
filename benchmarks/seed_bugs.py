"""Reproduce why the seed network "did not learn", on Fashion-MNIST, and record it.

The seed (shared/seed/ in the project's workspace) trains 784-16-16-10 with
full-batch gradient descent, samples as columns. This is an independent
re-implementation of its behaviour, with each bug behind a switch, so the
effect of each can be measured:

  raw pixels          inputs left at 0..255 instead of [0, 1]
  unstable softmax    exp(z) / sum(exp(z)) without subtracting the maximum
  scalar bias grad    np.sum(dz) over every axis: one number for a whole layer
  uniform init        rand - 0.5 for every weight and bias
  hidden accuracy     accuracy printed from the 16-unit hidden layer

Usage: python benchmarks/seed_bugs.py [--data-dir DIR] [--iterations N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from itertools import pairwise

import numpy as np

from gpunet.data import datasets


def run(x: np.ndarray, y: np.ndarray, iterations: int, alpha: float, *, scale: bool, report_every: int) -> list[dict]:
    """The seed's training loop, bugs included except the input scaling, which `scale` switches."""
    rng = np.random.default_rng(0)
    x = x.T.astype(np.float64) / (255.0 if scale else 1.0)  # (784, m): samples are columns
    m = x.shape[1]
    sizes = [784, 16, 16, 10]
    w = [rng.random((o, i)) - 0.5 for i, o in pairwise(sizes)]
    b = [rng.random((o, 1)) - 0.5 for o in sizes[1:]]
    one_hot = np.eye(10)[y].T
    rows = []
    with np.errstate(all="ignore"):
        for it in range(iterations + 1):
            z1 = w[0] @ x + b[0]
            a1 = np.maximum(z1, 0)
            z2 = w[1] @ a1 + b[1]
            a2 = np.maximum(z2, 0)
            z3 = w[2] @ a2 + b[2]
            a3 = np.exp(z3) / np.sum(np.exp(z3), axis=0)  # unstabilised softmax
            if it % report_every == 0:
                rows.append(
                    {
                        "iteration": it,
                        "printed_accuracy_hidden_layer": float(np.mean(np.argmax(a2, axis=0) == y)),
                        "true_accuracy_output_layer": float(np.mean(np.argmax(a3, axis=0) == y)),
                        "nan_fraction_of_output": float(np.mean(np.isnan(a3))),
                    }
                )
            if it == iterations:
                break
            dz3 = a3 - one_hot
            dz2 = (w[2].T @ dz3) * (z2 > 0)
            dz1 = (w[1].T @ dz2) * (z1 > 0)
            for layer, (dz, a_in) in enumerate([(dz1, x), (dz2, a1), (dz3, a2)]):
                w[layer] -= alpha * (dz @ a_in.T) / m
                b[layer] -= alpha * np.sum(dz) / m  # one scalar for every bias of the layer
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    ds = datasets.load("fashion-mnist", data_dir=args.data_dir, offline=True)
    x, y = ds.train_images, ds.train_labels.astype(np.int64)
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "dataset": f"fashion-mnist from {ds.source}",
        "iterations": args.iterations,
        "alpha": args.alpha,
    }
    for name, scale in (("raw_pixels", False), ("scaled_pixels", True)):
        start = time.perf_counter()
        rows = run(x, y, args.iterations, args.alpha, scale=scale, report_every=25)
        results[name] = rows
        print(f"{name} ({time.perf_counter() - start:.0f} s)")
        for r in rows:
            print(
                f"  iter {r['iteration']:>4}  printed (hidden layer) {r['printed_accuracy_hidden_layer']:.3f}  "
                f"true (output) {r['true_accuracy_output_layer']:.3f}  NaN in output {r['nan_fraction_of_output']:.0%}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
