"""The Dask engine on a real local cluster (worker processes on 127.0.0.1): same parameters, faults, data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.data import datasets
from gpunet.training.train import TrainConfig, Trainer
from tests.conftest import FASHION_DIR, numpy_device

distributed = pytest.importorskip("distributed", reason="the dist extra; CI installs it with the dev extra")
import gpunet.training.distributed  # noqa: E402
from gpunet.training import checkpoint  # noqa: E402
from gpunet.training.distributed import (  # noqa: E402
    DaskSource,
    EngineError,
    ShardSpec,
    displacements,
    elastic_distort,
    shard_images,
)


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, silence_logs=40
    ) as cluster:
        yield cluster.scheduler_address


def relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.linalg.norm(x - y) / np.linalg.norm(y)) for x, y in zip(a, b))


def train_both(fashion: datasets.Dataset, config: TrainConfig, scheduler: str, say=lambda _: None, on_step=None):
    device = numpy_device()
    source = DaskSource(fashion, Path(FASHION_DIR), config.dtype, device, scheduler=scheduler, say=say)
    remote = Trainer(config, fashion, device, source=source)
    try:
        remote_result = remote.run(on_step=on_step(source) if on_step else None)
    finally:
        remote.close()
    return remote_result, Trainer(config, fashion, device).run()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_workers_reproduce_the_local_engine_to_the_bit(fashion, scheduler, dtype: str) -> None:
    """Two shards cut where the local engine's two threads cut, summed in the same order."""
    remote, local = train_both(fashion, TrainConfig(iterations=8, eval_every=4, dtype=dtype), scheduler)
    for a, b in zip(remote.params, local.params):
        assert np.array_equal(a, b)
    assert remote.history == local.history


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-10), ("float32", 1e-5)])
def test_three_workers_match_within_rounding(fashion, dtype: str, tolerance: float) -> None:
    with distributed.LocalCluster(
        n_workers=3, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, silence_logs=40
    ) as cluster:
        config = TrainConfig(iterations=8, eval_every=4, dtype=dtype)
        remote, local = train_both(fashion, config, cluster.scheduler_address)
    assert relative_difference(remote.params, local.params) < tolerance
    for r, q in zip(remote.history, local.history):
        assert r.loss == pytest.approx(q.loss, rel=tolerance * 10)


def test_a_worker_killed_mid_run_is_reported_and_the_run_stays_exact(fashion) -> None:
    """The lost shard is rebuilt from its description; every step still sums all 60,000 samples."""
    messages: list[str] = []

    def kill_one_at_step_3(source: DaskSource):
        def on_step(step: int) -> None:
            if step == 3:
                victim = sorted(source.workers)[0]
                # Dies a moment after answering, mid-run, the way a crash would take it.
                source.client.run(lambda: threading.Timer(0.05, os._exit, (1,)).start(), workers=[victim])

        return on_step

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, silence_logs=50
    ) as cluster:
        config = TrainConfig(iterations=12, eval_every=4, dtype="float64")
        remote, local = train_both(fashion, config, cluster.scheduler_address, messages.append, kill_one_at_step_3)
    assert any("was lost" in m and "rebuilt" in m for m in messages), messages
    assert relative_difference(remote.params, local.params) < 1e-10
    assert remote.final.iteration == 12


def test_an_unreachable_scheduler_fails_within_seconds(fashion) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    start = time.monotonic()
    with pytest.raises(EngineError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        DaskSource(fashion, None, "float32", numpy_device(), scheduler=f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - start < 15


def test_elastic_distortion_is_deterministic_and_keeps_the_images_recognisable(fashion) -> None:
    images = fashion.train_images[:50].reshape(50, 28, 28)
    a = elastic_distort(images, displacements(np.arange(50), seed=3))
    b = elastic_distort(images, displacements(np.arange(50), seed=3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert not np.array_equal(a, images)
    # Moved, not destroyed: each warped image stays nearer its own original than to a typical other one.
    flat_a, flat_i = a.reshape(50, -1).astype(float), images.reshape(50, -1).astype(float)
    distances = ((flat_a[:, None, :] - flat_i[None, :, :]) ** 2).sum(axis=2)
    assert (np.diag(distances) < np.median(distances, axis=1)).mean() >= 0.95


def test_rows_past_the_dataset_are_distorted_copies() -> None:
    spec = ShardSpec("fashion-mnist", FASHION_DIR, 59_990, 60_010, "float32")
    images, labels = shard_images(spec)
    again, _ = shard_images(spec)
    base = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(images[:10], base.train_images[59_990:])  # the dataset itself
    np.testing.assert_array_equal(labels[10:], base.train_labels[:10])  # copies keep their labels
    assert not np.array_equal(images[10:], base.train_images[:10])  # ... but not their pixels
    # A row's distortion does not depend on where its shard starts (so not on the worker count).
    other, _ = shard_images(ShardSpec("fashion-mnist", FASHION_DIR, 60_005, 60_010, "float32"))
    np.testing.assert_array_equal(other, images[15:])


def test_cli_dask_engine_matches_the_local_engine() -> None:
    runner = CliRunner()
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", FASHION_DIR, "--offline", "--device", "cpu"]
    args += ["--iterations", "6", "--eval-every", "3", "--quiet"]
    remote = runner.invoke(app, [*args, "--engine", "dask", "--workers", "2"])
    local = runner.invoke(app, args)
    assert remote.exit_code == 0, remote.output
    assert remote.output.split(" after ")[0] == local.output.split(" after ")[0]  # same accuracies and loss


def test_cli_dask_refuses_mini_batches() -> None:
    result = CliRunner().invoke(app, ["train", "--engine", "dask", "--batch-size", "100", "--dataset", "synthetic"])
    assert result.exit_code == 2 and "full batch" in result.stderr and len(result.stderr.splitlines()) == 1


def test_checkpoints_move_between_the_dask_and_the_local_engine(tmp_path: Path, scheduler) -> None:
    """Written by --engine dask, resumed by the local engine, and back: the same run, to the bit."""
    runner = CliRunner()
    args = ["train", "--dataset", "fashion-mnist", "--data-dir", FASHION_DIR, "--offline", "--device", "cpu"]
    args += ["--eval-every", "2", "--quiet", "--dtype", "float64"]
    dask = ["--engine", "dask", "--scheduler", scheduler]
    steps = [
        [*args, *dask, "--iterations", "2", "--checkpoint", str(tmp_path / "a.npz")],
        [*args, "--iterations", "4", "--resume", str(tmp_path / "a.npz")],
        [*args, *dask, "--iterations", "6", "--resume", str(tmp_path / "a.npz")],
    ]
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    straight = runner.invoke(app, [*args, "--iterations", "6", "--checkpoint", str(tmp_path / "b.npz")])
    assert straight.exit_code == 0, straight.output
    moved, local = checkpoint.load(tmp_path / "a.npz"), checkpoint.load(tmp_path / "b.npz")
    assert moved.step == local.step == 6
    for a, b in zip(moved.params, local.params):
        assert np.array_equal(a, b)
    assert moved.history == local.history


def test_a_scheduler_that_accepts_but_never_answers_fails_within_the_deadline(fashion, monkeypatch) -> None:
    """A real socket on 127.0.0.1 that accepts connections and never says a word."""
    monkeypatch.setattr(gpunet.training.distributed, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the TCP handshake; nothing ever reads or writes
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(EngineError, match=f"cannot reach the Dask scheduler at {address} within 1 s .it accepted"):
            DaskSource(fashion, None, "float32", numpy_device(), scheduler=address)
        assert time.monotonic() - start < 10  # the deadline and one second of grace, on a busy machine


REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def doomed_cluster():
    """A scheduler in this process and two worker processes without nannies: killed, they stay dead."""
    with (
        distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None, silence_logs=50) as cluster,
        distributed.Client(cluster) as client,
    ):
        env = {**os.environ, "PYTHONPATH": f"{REPOSITORY}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        command = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address]
        command += ["--no-nanny", "--nthreads", "1", "--no-dashboard"]
        workers = [subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            client.wait_for_workers(2, timeout=120)
            yield cluster.scheduler_address, workers
        finally:
            for w in workers:
                w.kill()
                w.wait()


def kill_when_saved(path: Path, workers: list[subprocess.Popen]) -> threading.Thread:
    """SIGKILL every worker once the run has saved a checkpoint (so it is mid-run)."""

    def kill() -> None:
        deadline = time.monotonic() + 300
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for w in workers:
            w.kill()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


DASK_RUN = ["train", "--dataset", "fashion-mnist", "--data-dir", FASHION_DIR, "--offline", "--device", "cpu"]
DASK_RUN += ["--engine", "dask", "--iterations", "100000", "--eval-every", "50", "--checkpoint-every", "2", "--quiet"]


def test_every_worker_killed_ends_the_run_with_the_checkpoint_and_one_line(
    doomed_cluster, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(gpunet.training.distributed, "WORKERLESS_TIMEOUT_S", 1)
    address, workers = doomed_cluster
    saved = tmp_path / "run.npz"
    killer = kill_when_saved(saved, workers)
    result = CliRunner().invoke(app, [*DASK_RUN, "--scheduler", address, "--checkpoint", str(saved)])
    killer.join()
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: every Dask worker is gone (") and "none joined within 1 s" in line
    assert f"checkpoint written to {saved}; resume with: gpunet train --resume {saved}" in line
    step = checkpoint.load(saved).step
    assert step >= 2 and f"after step {step}" not in line  # the step that could not finish was not applied


def test_ctrl_c_while_the_cluster_has_no_workers_stops_at_once_with_the_checkpoint(
    doomed_cluster, tmp_path: Path
) -> None:
    """A real SIGINT to a real `gpunet train` whose every worker was killed: the first Ctrl-C is heard."""
    address, workers = doomed_cluster
    saved = tmp_path / "run.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpunet", *DASK_RUN, "--scheduler", address, "--checkpoint", str(saved)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    try:
        kill_when_saved(saved, workers).join()
        for w in workers:
            w.wait()
        time.sleep(1)  # the run is now waiting on a cluster without workers (30 s before it gives up)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    (line,) = stderr.splitlines()
    step = checkpoint.load(saved).step
    assert line == (
        f"error: interrupted by Ctrl-C after step {step}; checkpoint written to {saved}; "
        f"resume with: gpunet train --resume {saved}"
    )
