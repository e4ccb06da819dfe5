"""The chunked schedule computes the same full-batch gradient, on every backend, reproducibly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpunet.core import model
from gpunet.device.backend import Device, to_numpy
from gpunet.training.engine import CPU_CHUNK_ROWS, LocalEngine, cpu_cores
from gpunet.training.initializers import he_normal

SCHEDULES = [(None, 1), (7, 1), (7, 3), (16, 2), (1000, 4)]


def problem(rng: np.random.Generator, n: int = 61):
    x = rng.random((n, 12))
    labels = rng.integers(0, 5, n)
    return x, np.eye(5)[labels], labels, he_normal([12, 9, 6, 5], seed=2, dtype="float64")


@pytest.mark.parametrize(("rows", "workers"), SCHEDULES, ids=str)
def test_chunked_gradient_equals_the_full_batch_gradient(device, rng, rows, workers) -> None:
    x, targets, labels, host_params = problem(rng)
    params = [device.asarray(p) for p in host_params]
    engine = LocalEngine(rows, workers)
    loss, grads = engine.loss_and_gradients(params, device.asarray(x), device.asarray(targets))
    ref_loss, ref_grads = model.loss_and_gradients(host_params, x, targets)
    assert float(to_numpy(loss)) == pytest.approx(float(ref_loss), rel=1e-12)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(to_numpy(g), ref, rtol=1e-10, atol=1e-14)
    eval_loss, accuracy = engine.evaluate(params, device.asarray(x), device.asarray(targets), device.asarray(labels))
    assert float(to_numpy(eval_loss)) == pytest.approx(float(ref_loss), rel=1e-12)
    assert float(to_numpy(accuracy)) == pytest.approx(np.mean(model.predict(host_params, x) == labels))
    engine.close()


def test_the_schedule_covers_every_row_once() -> None:
    for rows in (1, 7, 60, 61, 100, None):
        spans = LocalEngine(rows, 3).chunks(61)
        covered = np.concatenate([np.arange(a, b) for a, b in spans])
        np.testing.assert_array_equal(covered, np.arange(61))


@pytest.mark.parametrize(("n", "rows", "threads"), [(60000, 8192, 2), (61, 7, 3), (5, 8192, 4), (10000, 1000, 3)])
def test_threads_get_equal_shares_in_chunks_of_at_most_chunk_rows(n: int, rows: int, threads: int) -> None:
    parts = LocalEngine(rows, threads).parts(n)
    assert len(parts) == min(threads, n)
    shares = [part[-1][1] - part[0][0] for part in parts]
    assert max(shares) - min(shares) <= 1  # no thread waits for a longer one
    sizes = [b - a for part in parts for a, b in part]
    assert max(sizes) <= rows and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("finishing", [[2, 1, 0], [0, 2, 1]], ids=["reversed", "last-before-middle"])
def test_threads_add_their_sums_in_a_fixed_order_whichever_finishes_first(rng, monkeypatch, finishing) -> None:
    """Threads are held back so that they finish in a chosen order: the sum must not follow it."""
    import time

    import gpunet.training.engine as engine_module

    x, targets, _, params = problem(rng, n=500)
    x32, t32, p32 = x.astype(np.float32), targets.astype(np.float32), [p.astype(np.float32) for p in params]
    engine = LocalEngine(16, 3)
    parts = engine.parts(500)
    assert len(parts) == 3
    sums = [engine_module._sum_over(model.gradient_sums, p32, (x32, t32), part) for part in parts]

    def added(order: list[int]):  # _add works in place: on copies
        return engine_module._add([(sums[i][0], [g.copy() for g in sums[i][1]]) for i in order])

    in_order, as_finished = added([0, 1, 2]), added(finishing)
    # The premise: in float32 the order of the additions shows in the bits (a + b == b + a, so each
    # order here pairs different parts first).
    assert in_order[0] != as_finished[0] or any(not np.array_equal(a, b) for a, b in zip(in_order[1], as_finished[1]))

    real = engine_module._sum_over
    delay = {parts[part][0]: 0.2 * place for place, part in enumerate(finishing)}

    def finishing_in_a_chosen_order(unit, params, rows, chunks):
        time.sleep(delay[chunks[0]])
        return real(unit, params, rows, chunks)

    monkeypatch.setattr(engine_module, "_sum_over", finishing_in_a_chosen_order)
    loss, grads = engine.gradient_sums(p32, x32, t32)
    assert loss == in_order[0]
    for a, b in zip(grads, in_order[1]):
        np.testing.assert_array_equal(a, b)
    engine.close()


def test_threads_give_bit_identical_results_run_after_run(rng) -> None:
    x, targets, _, params = problem(rng, n=500)
    x32, t32, p32 = x.astype(np.float32), targets.astype(np.float32), [p.astype(np.float32) for p in params]
    engine = LocalEngine(16, 3)
    first = engine.loss_and_gradients(p32, x32, t32)
    for _ in range(3):
        again = engine.loss_and_gradients(p32, x32, t32)
        assert again[0] == first[0]
        for a, b in zip(again[1], first[1]):
            np.testing.assert_array_equal(a, b)


def test_the_cpu_gets_chunks_and_threads(rng) -> None:
    from tests.conftest import numpy_device

    engine = LocalEngine.for_device(numpy_device())
    assert (engine.chunk_rows, engine.workers) == (CPU_CHUNK_ROWS, cpu_cores())
    assert engine.describe() == f"chunks of up to {CPU_CHUNK_ROWS:,} rows, {cpu_cores()} thread" + (
        "s" if cpu_cores() > 1 else ""
    )
    with pytest.raises(ValueError, match=r"^chunk_rows must be positive$"):
        LocalEngine(0)
    assert LocalEngine(1, 0).workers == 1  # at least one thread
    assert (LocalEngine().chunk_rows, LocalEngine().workers, LocalEngine(8).workers) == (None, 1, 1)  # the defaults


def test_a_gpu_gets_the_whole_batch_on_one_thread() -> None:
    gpu = Device("cuda:0", None)  # for_device reads only the name: nothing touches a GPU
    engine = LocalEngine.for_device(gpu)
    assert (engine.chunk_rows, engine.workers) == (None, 1)
    assert engine.parts(60000) == [[(0, 60000)]]


def test_cpu_cores_are_the_cores_this_process_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpu_cores() == 1  # pinned to one core of seven: one
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS and Windows have no affinity call
    assert cpu_cores() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undetermined"
    assert cpu_cores() == 1


def test_each_worker_thread_runs_single_threaded_blas(rng) -> None:
    """Two threads each calling a multi-threaded BLAS would fight over the cores."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []

    def unit(params, x, targets):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return x.sum(), [x.sum(axis=0)]

    x = rng.normal(size=(64, 3))
    with threadpool_limits(limits=2, user_api="blas"):  # BLAS's own threads, whatever OMP_NUM_THREADS says
        assert max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == 2
        LocalEngine(16, 2)._reduce(unit, [], x, x)
    assert seen and set(seen) == {1}


def test_the_schedule_is_described_as_it_runs() -> None:
    assert LocalEngine(8192, 2).describe(60000) == "2 threads, 4 chunks of 7,500 rows per thread"
    assert LocalEngine(8192, 3).describe(60000) == "3 threads, 3 chunks of 6,666-6,667 rows per thread"
    assert LocalEngine(8192, 1).describe(3000) == "1 thread, 1 chunk of 3,000 rows"
    assert LocalEngine(8192, 1).describe(10000) == "1 thread, 2 chunks of 5,000 rows"
    # 23 and 22 rows: 3 chunks of 8, 8 and 7 rows, and 2 of 11.
    assert LocalEngine(11, 2).describe(45) == "2 threads, 2-3 chunks of 7-11 rows per thread"
    assert LocalEngine(None, 1).describe(60000) == "the whole batch as one chunk"


def test_one_chunk_is_the_callers_arrays_unsliced(rng) -> None:
    """On a GPU each slice is a host-side cost per step: the whole batch goes in as it is."""
    x = rng.normal(size=(10, 3))
    received: list = []

    def unit(params, *rows):
        received.append(rows)
        return rows[0].sum(), [rows[0].sum(axis=0)]

    LocalEngine(None, 1)._reduce(unit, [], x, x[:, :2])
    assert received[0][0] is x and received[0][1].base is x
    LocalEngine(4, 1)._reduce(unit, [], x, x)
    assert [r[0].shape[0] for r in received[1:]] == [4, 3, 3] and all(r[0].base is x for r in received[1:])


def test_the_pool_has_one_named_thread_per_worker_and_goes_with_the_engine(rng) -> None:
    import gc
    import threading
    import time

    def ours() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("gpunet-chunk_")}

    def unit(params, x):
        return x.sum(), [x.sum(axis=0)]

    before = ours()
    engine = LocalEngine(4, 3)
    x = rng.normal(size=(40, 3))
    for _ in range(3):
        engine._reduce(unit, [], x)  # as a trainer does, step after step
    assert engine._executor()._max_workers == 3
    threads = ours() - before
    assert 1 <= len(threads) <= 3
    engine.close()
    engine._reduce(unit, [], x)  # a closed engine starts a new pool when asked again
    threads = ours() - before
    del engine
    gc.collect()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in threads), "an engine nobody closed left its threads running"
