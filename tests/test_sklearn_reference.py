"""`gpunet bench`'s scikit-learn backend: the same network, batch and optimizer settings, in the same table."""

from __future__ import annotations

import numpy as np

from gpunet.bench import suite
from gpunet.bench.sklearn_reference import SklearnTrainer
from gpunet.data import datasets
from gpunet.training.train import TrainConfig


def test_same_architecture_batch_and_optimizer_settings(small: datasets.Dataset) -> None:
    config = TrainConfig(hidden=(16, 8), lr=0.003)
    trainer = SklearnTrainer(config, small)
    trainer.step()
    params = trainer.model.get_params()
    assert params["hidden_layer_sizes"] == (16, 8) and params["activation"] == "relu"
    n = len(small.train_labels)  # the whole training set: one batch
    assert params["alpha"] == 0 and params["batch_size"] == n and params["shuffle"] is False
    assert (params["solver"], params["learning_rate_init"], params["learning_rate"]) == ("adam", 0.003, "constant")
    assert (params["beta_1"], params["beta_2"], params["epsilon"]) == (0.9, 0.999, 1e-8)  # gpunet's Adam's
    assert [p.shape for p in trainer.host_params()] == [(784, 16), (16,), (16, 8), (8,), (8, 10), (10,)]
    assert all(p.dtype == np.float32 for p in trainer.host_params())  # scikit-learn keeps float32
    assert (trainer.model.n_iter_, trainer.model.t_) == (1, n)  # one pass of one batch: one Adam update


def test_bench_puts_scikit_learn_in_the_same_table(small: datasets.Dataset) -> None:
    settings = suite.BenchSettings(TrainConfig(iterations=40, eval_every=10), 0.5, warmup=1, timed_steps=2, repeats=1)
    report = suite.run_bench(settings, small, ["numpy", "sklearn"])
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"numpy", "sklearn"}
    for row in rows.values():
        assert row["ms_per_step_median"] > 0 and row["test_accuracy"] > 0.6
    assert rows["sklearn"]["schedule"] == "scikit-learn partial_fit, whole batch"
    assert "sklearn" not in report["agreement"]  # its own initial weights: accuracy is compared, not weights


def test_mini_batches_are_refused_with_the_reason(small: datasets.Dataset) -> None:
    reason = suite.unavailable("sklearn", TrainConfig(batch_size=100))
    assert reason and "full batch only" in reason
    report = suite.run_bench(
        suite.BenchSettings(TrainConfig(iterations=2, batch_size=100), 0.5, 0, 1, 1), small, ["numpy", "sklearn"]
    )
    assert "full batch only" in report["skipped"]["sklearn"]
