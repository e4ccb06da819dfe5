"""Where a GPU training step's time goes: fused against unfused, host time against device time.

Usage: python benchmarks/gpu_step.py --data-dir DIR [--device cuda] [--steps N] [--rounds R] [--json PATH]

For each variant (elementwise steps fused into single kernels, or run
operation by operation) the same 784-16-16-10 Adam step is timed three ways,
the variants taking turns for R rounds:
- synced: the device synchronised before and after every step (what `gpunet bench` reports);
- queued: N steps queued back to back, one synchronisation at the end (what training sees);
- host: the Python time to queue one step, with no wait for the device. When
  it is close to `queued`, the step is bound by launching kernels, not by the GPU.
Then each fusable function, called with the very arrays it had in a real step
(the step's own arrays and views, in their layouts, not copies: a copy is
C-contiguous and would time another kernel), is timed alone, fused and unfused
(host time per call, and time per call with the device's work included):
cupy.fuse's own call overhead can exceed the launches it saves for a
two-operation function, so this says which to keep. The update rules change
their arguments in place, so the trainer's parameters and optimizer state are
put back afterwards; the record lists each timed argument's shape and strides.
Last, it tries to capture one step as a CUDA graph (CuPy refuses cuBLAS calls
during capture, cupy/cupy#6290) and records what happened.
On `--device cpu` it times the numpy step the same way (a dry run of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpunet.bench.suite import machine_info, step_cost
from gpunet.data import datasets
from gpunet.device.backend import fusable, resolve_device
from gpunet.errors import GpunetError
from gpunet.training.engine import LocalEngine
from gpunet.training.train import TrainConfig, Trainer

VARIANTS = {"fused": True, "unfused": False}


def time_variant(trainer: Trainer, steps: int) -> dict[str, float]:
    synced = []
    for _ in range(steps):
        trainer.synchronize()
        start = time.perf_counter()
        trainer.step()
        trainer.synchronize()
        synced.append(time.perf_counter() - start)
    trainer.synchronize()
    start = time.perf_counter()
    host = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step()
        host.append(time.perf_counter() - t)
    trainer.synchronize()
    queued = (time.perf_counter() - start) / steps
    return {"synced": statistics.median(synced), "queued": queued, "host": statistics.median(host)}


def one_step_calls(trainer: Trainer) -> list[tuple[fusable, tuple[Any, ...]]]:
    """Every fusable call of one training step, with the step's own arguments (held, so never reused)."""
    calls, real_call = [], fusable.__call__

    def recording(self: fusable, *args: Any) -> Any:
        calls.append((self, args))
        return real_call(self, *args)

    fusable.__call__ = recording
    try:
        trainer.step()
    finally:
        fusable.__call__ = real_call
    return calls


def layout(args: tuple[Any, ...]) -> list[str]:
    """Each argument as timed: an array's shape and strides (in elements), a scalar's type."""
    return [f"{tuple(a.shape)} strides {strides(a)}" if hasattr(a, "strides") else type(a).__name__ for a in args]


def strides(a: Any) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def time_kernels(trainer: Trainer, calls_each: int = 200) -> dict[str, dict[str, Any]]:
    """Microseconds per call of each fusable function, alone, fused and unfused, on a real step's arguments."""
    saved = {"params": trainer.flat_params.copy(), **{k: v.copy() for k, v in trainer.optimizer.slots.items()}}
    try:
        return _time_kernels(trainer, calls_each)
    finally:  # the update rules ran in place on the trainer's own vectors: put them back
        trainer.flat_params[...] = saved.pop("params")
        for k, v in saved.items():
            trainer.optimizer.slots[k][...] = v
        trainer.synchronize()


def _time_kernels(trainer: Trainer, calls_each: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for kernel, args in one_step_calls(trainer):
        name = kernel.__name__
        if name in results:  # the same function again (a second layer): once is enough
            continue
        results[name] = {"arguments": layout(args)}
        for variant, enabled in VARIANTS.items():
            fusable.enabled = enabled
            for _ in range(3):
                kernel(*args)
            trainer.synchronize()
            start = time.perf_counter()
            for _ in range(calls_each):
                kernel(*args)
            queued = time.perf_counter() - start
            trainer.synchronize()
            total = time.perf_counter() - start
            results[name][f"{variant}_host_us"] = 1e6 * queued / calls_each
            results[name][f"{variant}_us"] = 1e6 * total / calls_each
    fusable.enabled = True
    return results


def try_graph_capture(trainer: Trainer) -> dict[str, Any]:
    """Capture one step on a non-blocking stream and replay it; report success or CuPy's refusal."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    try:
        with stream:
            stream.begin_capture()
            try:
                trainer.step()
            finally:
                graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
        # A replay repeats the captured step exactly, including Adam's step size of that step:
        # fine for timing the launch cost, not for training.
        start = time.perf_counter()
        for _ in range(100):
            graph.launch(stream)
        stream.synchronize()
        return {"captured": True, "replay_ms": 1000 * (time.perf_counter() - start) / 100}
    except Exception as e:  # what CuPy or the driver says is the result here
        return {"captured": False, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    dataset = datasets.load("fashion-mnist", data_dir=args.data_dir, offline=True)
    # The array-API step, what a GPU runs (on the CPU the numba kernels would stand in for it by default).
    trainer = Trainer(TrainConfig(), dataset, device, engine=LocalEngine.for_device(device))
    warm_up: dict[str, list[float]] = {}
    for name, enabled in VARIANTS.items():  # warm-up: compiles the fused kernels, fills the memory pool
        fusable.enabled = enabled
        warm_up[name] = []
        for _ in range(10):
            trainer.synchronize()
            start = time.perf_counter()
            trainer.step()
            trainer.synchronize()
            warm_up[name].append(1000 * (time.perf_counter() - start))
    times: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, enabled in VARIANTS.items():
            fusable.enabled = enabled
            times[name].append(time_variant(trainer, args.steps))
    fusable.enabled = True
    flops, nbytes = step_cost(trainer.sizes, dataset.train_images.shape[0], 4)
    results = {
        name: {kind: 1000 * statistics.median(r[kind] for r in rounds) for kind in ("synced", "queued", "host")}
        for name, rounds in times.items()
    }
    record: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device.name,
        "machine": machine_info(),
        "command": f"python benchmarks/gpu_step.py --device {args.device} --steps {args.steps} --rounds {args.rounds}",
        "step_gflop": flops / 1e9,
        "input_mb": nbytes / 1e6,
        "ms_per_step": results,
        # The first fused step compiles every fused kernel (or loads it from $CUPY_CACHE_DIR, which
        # gpu_check.sh points at an empty folder so that this is a real compile) and starts cuBLAS.
        "first_step_ms": {name: times_ms[0] for name, times_ms in warm_up.items()},
        "later_warm_up_step_ms": {name: statistics.median(times_ms[1:]) for name, times_ms in warm_up.items()},
        "kernel_cache": os.environ.get("CUPY_CACHE_DIR", "~/.cupy/kernel_cache (cupy's default)"),
    }
    record["kernels"] = time_kernels(trainer)
    record["fusion_fallbacks"] = dict(fusable.fallbacks)  # functions cupy could not fuse, and why
    if device.is_cuda:
        record["graph_capture"] = try_graph_capture(trainer)
    for name, times_ms in warm_up.items():
        later = statistics.median(times_ms[1:])
        what = " (compiles the fused kernels)" if name == "fused" and device.is_cuda else ""
        print(f"{name:8s} first step {times_ms[0]:9.1f} ms{what}, later warm-up steps {later:8.3f} ms")
    for name, r in results.items():
        print(f"{name:8s} synced {r['synced']:8.3f} ms   queued {r['queued']:8.3f} ms   host {r['host']:8.3f} ms")
    print("per call on a real step's arguments, us (host time to queue it / with the device's work):")
    for name, r in record["kernels"].items():
        print(
            f"  {name:22s} fused {r['fused_host_us']:7.1f} / {r['fused_us']:7.1f}   "
            f"unfused {r['unfused_host_us']:7.1f} / {r['unfused_us']:7.1f}"
        )
    for name, why in fusable.fallbacks.items():
        print(f"  {name} ran unfused: {why}")
    if "graph_capture" in record:
        print(f"graph capture of one step: {record['graph_capture']}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    trainer.close()


if __name__ == "__main__":
    try:
        main()
    except GpunetError as e:  # no GPU, no cupy, no dataset: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
