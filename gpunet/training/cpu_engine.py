"""The numpy step in compiled kernels: gpunet.training.fused_cpu's, one part of the rows per thread.

The same sums as gpunet.training.engine.LocalEngine (the array-API reference, which the tests hold
this engine to), computed with the input matrix read once per step (see fused_cpu). What the
kernels cannot take (arrays that are not numpy's, rows of another dtype) goes to the reference
engine, call by call, so every caller may hand this engine what it hands LocalEngine.

numba compiles the kernels on first use and caches them (numba's cache: beside the module, or,
where that is not writable, in the user's cache directory; NUMBA_CACHE_DIR overrides both), so
the compile is paid once per machine; `prepare` pays it before any step is timed and says how
long it took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpunet.core.flat import Layout
from gpunet.device.backend import Array, is_numpy_array
from gpunet.training.engine import CPU_CHUNK_ROWS, LocalEngine, SumsEngine, _even_split, _plural

# numba's default threading layer (workqueue) aborts the process when two threads launch parallel
# kernels at once; a step is one launch, so launches from several threads simply take turns.
_launch = threading.Lock()


class FusedCpuEngine(SumsEngine):
    """Full-batch sums in numba kernels, on `workers` threads: one part of the rows each."""

    reads_pixels = True  # give it uint8 pixels as they are: it scales them as it reads them

    def __init__(self, workers: int, dtype: str) -> None:
        from gpunet.training import fused_cpu  # numba is imported only for this engine

        self.kernels = fused_cpu
        self.workers = max(1, workers)
        self.dtype = np.dtype(dtype)
        self.reference = LocalEngine(CPU_CHUNK_ROWS, self.workers)  # for what the kernels cannot take
        self._packing: Any = None
        self._buffers: dict[tuple, np.ndarray] = {}
        self._view_cache = {}

    def describe(self, rows: int | None = None) -> str:
        if rows is None:
            return f"numba CPU kernels, {_plural(self.workers, 'thread')}"
        parts = len(self.parts(rows))
        share = rows // parts
        size = f"{share:,}" if rows % parts == 0 else f"{share:,}-{share + 1:,}"
        return f"numba CPU kernels, {_plural(parts, 'thread')} of {size} rows"

    def parts(self, n: int) -> list[tuple[int, int]]:
        """The rows each thread sums: split evenly, as LocalEngine splits them between its threads
        (and the Dask engine between its workers)."""
        return _even_split(0, n, max(1, min(self.workers, n)))

    def prepare(self, input_dtype: Any, say: Callable[[str], None] = lambda _: None) -> float:
        """Compile (or load from numba's cache) the kernels for rows of `input_dtype`; the seconds a
        compile took (0 when the kernels came from the cache or were ready), said through `say`."""
        misses = self._cache_misses()
        start = time.perf_counter()
        self.kernels.compile_kernels(self.dtype.name, np.dtype(input_dtype).name)
        seconds = time.perf_counter() - start
        if self._cache_misses() == misses:
            return 0.0
        say(f"compiling the CPU kernels (first run only): {seconds:.1f} s")
        return seconds

    def _cache_misses(self) -> int:
        kernels = (self.kernels.gradient_parts, self.kernels.evaluation_parts)
        return sum(sum(k.stats.cache_misses.values()) for k in kernels)

    # --- what a trainer asks for -----------------------------------------------------------------

    def _serves(self, params: Sequence[Array], x: Array) -> bool:
        return (
            is_numpy_array(x)
            and x.ndim == 2
            and (x.dtype == np.uint8 or x.dtype == self.dtype)
            and all(is_numpy_array(p) and p.dtype == self.dtype for p in params)
        )

    def _packed(self, params: Sequence[Array]) -> Any:
        sizes = [int(params[0].shape[0])] + [int(params[i].shape[0]) for i in range(1, len(params), 2)]
        packing = self._packing
        if packing is None or packing.sizes != sizes:
            packing = self._packing = self.kernels.Packing(sizes, self.dtype)
        packing.load(list(params))
        return packing

    def _launch_arguments(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Any, np.ndarray, Any]:
        """The kernels compiled, the parameters packed, each thread's first row (and the end) and the
        targets as (classes, samples): what both launches take."""
        self.prepare(x.dtype)
        bounds = np.array([a for a, _ in self.parts(x.shape[0])] + [x.shape[0]], np.int64)
        targets_t = np.ascontiguousarray(targets.T, dtype=self.dtype)  # the trainer's are already: no copy
        return self._packed(params), bounds, targets_t

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).name)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = np.zeros(shape, dtype)
        return buffer

    def gradient_flat(self, params: Sequence[Array], x: Array, targets: Array, scale: float, out: Array) -> Array:
        """`scale` x the summed loss over all rows, returned, and `scale` x the summed gradient written
        into `out` (gpunet.core.flat's layout of `params`): LocalEngine.gradient_flat's sums."""
        if not self._serves(params, x):
            return self.reference.gradient_flat(params, x, targets, scale, out)
        packing, bounds, targets_t = self._launch_arguments(params, x, targets)
        parts = len(bounds) - 1
        grads = self._buffer("grads", (parts, packing.packed.size), self.dtype)
        losses = self._buffer("losses", (parts,), self.dtype)
        with _launch:
            self.kernels.gradient_parts(
                np.ascontiguousarray(x),
                bounds,
                targets_t,
                targets_t.shape[0],
                float(scale),
                packing.packed,
                packing.packed_t,
                packing.offsets,
                packing.dims,
                grads,
                losses,
            )
        total = grads[0] if parts == 1 else self._buffer("total", grads[0].shape, self.dtype)
        if parts > 1:
            np.copyto(total, grads[0])  # into a kept vector: no allocation per step
        loss = losses[0]
        for p in range(1, parts):  # added in a fixed order, as LocalEngine adds its threads' sums
            total += grads[p]
            loss = loss + losses[p]
        views = self._views(out, params)
        for layer in range(len(params) // 2):
            np.copyto(views[2 * layer], packing.weight_view(total, layer))
            np.copyto(views[2 * layer + 1], packing.bias_view(total, layer))
        return loss

    def gradient_sums(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
        """Summed loss and gradients over all rows (as LocalEngine.gradient_sums)."""
        if not self._serves(params, x):
            return self.reference.gradient_sums(params, x, targets)
        flat = np.empty(Layout.of(params).size, self.dtype)
        loss = self.gradient_flat(params, x, targets, 1.0, flat)
        return loss, Layout.of(params).views(flat)

    def evaluation_sums(self, params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
        """Summed loss and number of correct predictions over all rows (as LocalEngine.evaluation_sums)."""
        if not self._serves(params, x):
            return self.reference.evaluation_sums(params, x, targets, labels)
        packing, bounds, targets_t = self._launch_arguments(params, x, targets)
        sums = self._buffer("evaluation", (len(bounds) - 1, 2), np.float64)
        with _launch:
            self.kernels.evaluation_parts(
                np.ascontiguousarray(x),
                bounds,
                targets_t,
                np.ascontiguousarray(labels, dtype=np.int64),
                targets_t.shape[0],
                packing.packed,
                packing.offsets,
                packing.dims,
                sums,
            )
        parts = sums.astype(self.dtype)  # each part's sums in the dtype, then added in order
        loss, correct = parts[0, 0], parts[0, 1]
        for p in range(1, parts.shape[0]):
            loss, correct = loss + parts[p, 0], correct + parts[p, 1]
        return loss, correct

    def close(self) -> None:
        self.reference.close()
