"""The same network in idiomatic PyTorch (autograd, built-in loss and optimizers), for the benchmark.

It starts from gpunet's initial weights, sees batches in gpunet's order and
uses the same update rules, so its accuracy should match and only its speed
may differ. torch is imported here only, and only when this backend is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from gpunet.data.datasets import Dataset
from gpunet.training.initializers import he_normal
from gpunet.training.train import Record, TrainConfig, layer_sizes, shuffle_rng

TORCH_CPU_HINT = (
    "for PyTorch's CPU build run ./setup.sh --bench, "
    "or: pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


def torch_unavailable(device: str) -> str | None:
    """Why torch cannot run on `device` ("cpu" or "cuda"), or None if it can."""
    try:
        import torch
    except ImportError:
        # Not `pip install 'gpunet[bench]'`: from PyPI that is the CUDA build, gigabytes of it.
        return f"torch is not installed; {TORCH_CPU_HINT}"
    if device == "cuda" and not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


class TorchTrainer:
    """The interface of gpunet.training.train.Trainer that the benchmark uses: step, evaluate, synchronize."""

    schedule = "PyTorch eager, whole batch"

    def __init__(self, config: TrainConfig, dataset: Dataset, device: str) -> None:
        import torch

        self.torch, self.config, self.device = torch, config, torch.device(device)
        dtype = getattr(torch, config.dtype)

        def split(images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
            # The loader's arrays are read-only views of the files; torch wants to own writable memory.
            x = torch.from_numpy(np.array(images)).to(self.device).to(dtype)
            if images.dtype == np.uint8:  # pixels, scaled as gpunet scales them; other numbers as given
                x /= 255.0
            return x, torch.from_numpy(labels.astype(np.int64)).to(self.device)

        self.train_x, self.train_y = split(dataset.train_images, dataset.train_labels)
        self.test_x, self.test_y = split(dataset.test_images, dataset.test_labels)
        init = he_normal(layer_sizes(config, dataset), config.seed, config.dtype)
        self.params = [torch.tensor(p, device=self.device, requires_grad=True) for p in init]
        self.optimizer = {
            "gd": lambda: torch.optim.SGD(self.params, lr=config.lr),
            "momentum": lambda: torch.optim.SGD(self.params, lr=config.lr, momentum=0.9),
            "adam": lambda: torch.optim.Adam(self.params, lr=config.lr),
        }[config.optimizer]()
        self.shuffle_rng = shuffle_rng(config.seed)
        self._batches = self._batch_stream()
        self.steps_done = 0

    def _batch_stream(self) -> Iterator[tuple[Any, Any]]:
        n, size = len(self.train_y), self.config.batch_size
        if size is None or size >= n:
            while True:
                yield self.train_x, self.train_y
        while True:
            order = self.torch.from_numpy(self.shuffle_rng.permutation(n)).to(self.device)
            for start in range(0, n, size):
                index = order[start : start + size]
                yield self.train_x[index], self.train_y[index]

    def _logits(self, x: Any) -> Any:
        pairs = list(zip(self.params[0::2], self.params[1::2]))
        for i, (w, b) in enumerate(pairs):
            x = x @ w + b
            if i < len(pairs) - 1:
                x = self.torch.relu(x)
        return x

    def step(self) -> None:
        x, y = next(self._batches)
        loss = self.torch.nn.functional.cross_entropy(self._logits(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1

    def evaluate(self) -> Record:
        torch = self.torch
        with torch.no_grad():
            logits = self._logits(self.train_x)
            loss = torch.nn.functional.cross_entropy(logits, self.train_y)
            train_acc = (logits.argmax(dim=1) == self.train_y).to(logits.dtype).mean()
            test_acc = (self._logits(self.test_x).argmax(dim=1) == self.test_y).to(logits.dtype).mean()
        return Record(self.steps_done, float(loss), float(train_acc), float(test_acc))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def close(self) -> None:
        """Nothing to let go: no worker threads of its own (BenchTrainer)."""

    def host_params(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy() for p in self.params]


class TorchXProducts:
    """The step's two products with X in PyTorch, timed alone by the bench (gpunet.bench.suite.XProducts):
    forward X @ W1, and X.T @ δ1, the product autograd computes for W1's gradient."""

    def __init__(self, images: np.ndarray, w1: np.ndarray, delta: np.ndarray, device: str) -> None:
        import torch

        self.torch, self.device = torch, torch.device(device)
        dtype = getattr(torch, str(w1.dtype))
        self.x = torch.from_numpy(np.array(images)).to(self.device).to(dtype)
        if images.dtype == np.uint8:  # pixels, scaled as TorchTrainer scales them
            self.x /= 255.0
        self.w1 = torch.from_numpy(w1).to(self.device)
        self.delta = torch.from_numpy(delta).to(self.device)

    def forward(self) -> None:
        self.x @ self.w1

    def gradient(self) -> None:
        self.x.T @ self.delta

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
