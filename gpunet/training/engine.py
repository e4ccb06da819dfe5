"""How a full-batch gradient is computed: in row chunks, on one or more threads.

The math is a clean unit, `model.gradient_sums`: rows in, summed loss and
gradients out. Sums over disjoint chunks add up to the sum over all rows, so
this module only decides how the rows are split and who computes which part;
the update that follows is the same one full-batch update either way.

Why chunks on the CPU: the products with the 60000x784 input are too thin
(16 columns) for BLAS to spread over cores well, and 60000-row temporaries
cost page faults every step. Each thread takes its own run of chunks with
single-threaded BLAS, and the chunks' small arrays come back from the
allocator warm. The chunk size limit was measured on the 2-core CI machine
(benchmarks/README.md): chunks of up to 8192 rows beat 2048 and 4096, whose
per-chunk Python work and GIL hand-offs cost more than cache reuse gains.

On a GPU the whole batch is one chunk: fewer, larger kernels are what it wants.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from itertools import pairwise
from typing import Any, Protocol

import numpy as np

from gpunet.core import model
from gpunet.core.flat import Layout
from gpunet.device.backend import Array, Device, array_namespace, is_numpy_array, is_numpy_namespace

CPU_CHUNK_ROWS = 8192


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


class Engine(Protocol):
    """What a trainer asks of an engine: LocalEngine, or gpunet.training.cpu_engine.FusedCpuEngine."""

    reads_pixels: bool  # takes uint8 rows as pixels (scaling them itself) rather than scaled floats

    def describe(self, rows: int | None = None) -> str: ...

    def prepare(self, input_dtype: Any, say: Callable[[str], None] = ...) -> float: ...

    def gradient_flat(self, params: Sequence[Array], x: Array, targets: Array, scale: float, out: Array) -> Array: ...

    def gradient_sums(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]: ...

    def evaluation_sums(
        self, params: Sequence[Array], x: Array, targets: Array, labels: Array
    ) -> tuple[Array, Array]: ...

    def loss_and_gradients(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]: ...

    def evaluate(self, params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]: ...

    def close(self) -> None: ...


def choose_engine(
    device: Device, dtype: str, workers: int | None = None, say: Callable[[str], None] = lambda _: None
) -> Engine:
    """The engine for steps on `device` in `dtype`: on numpy, numba's CPU kernels
    (gpunet.training.cpu_engine) unless $GPUNET_CPU_ENGINE says `reference`, the dtype is not
    theirs or they cannot run here (numba_problem(): then said through `say`, or refused where
    $GPUNET_CPU_ENGINE asks for numba); everywhere else, and as every fallback, LocalEngine.

    `workers` threads (default: one per core; the Dask engine's workers take one each).
    """
    from gpunet.files import environment

    threads = cpu_cores() if workers is None else workers
    reference = LocalEngine(None, 1) if device.is_cuda else LocalEngine(CPU_CHUNK_ROWS, threads)
    if device.is_cuda or not is_numpy_namespace(device.xp) or dtype not in ("float32", "float64"):
        return reference
    wanted = environment.cpu_engine()
    if wanted == "reference":
        return reference
    if wanted == "numba":  # asked for by name: honoured or refused, never replaced
        require_numba()
    problem = numba_problem()
    if problem is not None:
        say(f"the compiled CPU kernels cannot run here: {problem}; the steps run in the array-API math")
        return reference
    from gpunet.training.cpu_engine import FusedCpuEngine

    return FusedCpuEngine(threads, dtype)


@functools.cache
def numba_problem() -> str | None:
    """Why numba's CPU kernels cannot run in this process, or None when they can. numba is a
    dependency, but an install may be broken, or refuse this numpy; and numba must have somewhere
    to cache the compiled kernels (it refuses to define them otherwise)."""
    try:
        import numba  # noqa: F401
    except Exception as e:  # ImportError, or numba refusing this numpy: either way the reference serves
        return f"numba cannot be imported ({_first_line(e)})"
    try:
        from gpunet.training import fused_cpu  # noqa: F401  (defines the kernels; compiles nothing yet)
    except RuntimeError as e:
        if "cannot cache" not in str(e):
            raise
        return (
            "numba has no writable directory to cache its kernels in (neither beside gpunet/training/fused_cpu.py "
            "nor in the user's cache directory); set NUMBA_CACHE_DIR to one"
        )
    return None


def require_numba() -> None:
    """What $GPUNET_CPU_ENGINE=numba asks: the kernels, or a ConfigError saying why they cannot run here."""
    from gpunet.errors import ConfigError

    problem = numba_problem()
    if problem is not None:
        raise ConfigError(f"$GPUNET_CPU_ENGINE is 'numba', but {problem}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SumsEngine:
    """What an engine derives from its sums (gradient_sums, evaluation_sums): the means; and the views
    of a flat gradient vector it writes into, made once per vector (each view is host-side work)."""

    _view_cache: dict[int, tuple[Array, list[Array]]]

    def gradient_sums(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
        raise NotImplementedError

    def evaluation_sums(self, params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def loss_and_gradients(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
        """Mean loss and gradients over all rows of `x`, as one full-batch gradient."""
        loss_sum, grad_sums = self.gradient_sums(params, x, targets)
        n = x.shape[0]
        return loss_sum / n, [g / n for g in grad_sums]

    def evaluate(self, params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
        """Mean loss and accuracy over all rows, read from the output layer."""
        loss_sum, correct = self.evaluation_sums(params, x, targets, labels)
        n = x.shape[0]
        return loss_sum / n, correct / n

    def _views(self, flat: Array, params: Sequence[Array]) -> list[Array]:
        """`params`' shapes as views of `flat`, kept for as long as `flat` is the vector given."""
        known = self._view_cache.get(id(flat))
        if known is None or known[0] is not flat:
            known = self._view_cache[id(flat)] = (flat, Layout.of(params).views(flat))
        return known[1]


class LocalEngine(SumsEngine):
    """Row chunks of `chunk_rows` (None: one chunk), computed by `workers` threads."""

    reads_pixels = False  # wants its rows as floats (gpunet.training.train.device_rows)

    def __init__(self, chunk_rows: int | None = None, workers: int = 1) -> None:
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.chunk_rows = chunk_rows
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._blas: Any = None
        self._buffers: dict[tuple, Array] = {}  # partial sums and vectors of ones, kept between steps
        self._view_cache: dict[int, tuple[Array, list[Array]]] = {}

    @classmethod
    def for_device(cls, device: Device) -> LocalEngine:
        if device.is_cuda:
            return cls(None, 1)
        return cls(CPU_CHUNK_ROWS, cpu_cores())

    def prepare(self, input_dtype: Any, say: Callable[[str], None] = lambda _: None) -> float:
        """Nothing to compile: the reference is array code."""
        return 0.0

    def describe(self, rows: int | None = None) -> str:
        """The schedule in words: for `rows` rows, the chunks each thread actually sums."""
        if self.chunk_rows is None:
            return "the whole batch as one chunk"
        if rows is None:
            return f"chunks of up to {self.chunk_rows:,} rows, {_plural(self.workers, 'thread')}"
        parts = self.parts(rows)
        counts = sorted({len(part) for part in parts})
        sizes = sorted({b - a for part in parts for a, b in part})
        size = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
        per_thread = "-".join(map(str, counts))  # threads' shares differ by a row: at most two counts
        chunks = f"{per_thread} chunk{'s' if counts[-1] > 1 else ''} of {size} rows"
        return f"{_plural(len(parts), 'thread')}, {chunks}" + (" per thread" if len(parts) > 1 else "")

    # --- what a trainer asks for ---------------------------------------------------------------

    def gradient_sums(self, params: Sequence[Array], x: Array, targets: Array) -> tuple[Array, list[Array]]:
        """Summed loss and gradients over all rows: the unit a distributed engine adds up across shards."""
        return self._reduce(model.gradient_sums, params, x, targets)

    def gradient_flat(self, params: Sequence[Array], x: Array, targets: Array, scale: float, out: Array) -> Array:
        """`scale` x the summed loss over all rows, returned, and `scale` x the summed gradient, written into
        `out` (one flat vector, gpunet.core.flat's layout of `params`): what a training step needs.

        Each product is written straight into its view of `out` (of the first
        thread's first chunk; other chunks and threads write into buffers the
        engine keeps and are added in, in a fixed order), and the vectors of
        ones the bias gradients need are made once per row count: on a GPU,
        where the whole batch is one chunk, a step allocates and fills nothing.
        """
        rows = (x, targets)
        parts = self.parts(x.shape[0])
        if len(parts) == 1:
            return self._flat_over(0, params, rows, parts[0], scale, out)
        caller_errstate = np.geterr()  # numpy's error state is per thread: carry the caller's over

        def work(i: int) -> Array:
            with np.errstate(**caller_errstate):
                return self._flat_over(
                    i, params, rows, parts[i], scale, out if i == 0 else self._buffer("thread", i, out)
                )

        with self._single_threaded_blas(x):
            losses = list(self._executor().map(work, range(len(parts))))
        total = losses[0]
        for i, loss in enumerate(losses[1:], start=1):  # added in a fixed order, as _add does
            total = total + loss
            out += self._buffer("thread", i, out)
        return total

    def _flat_over(
        self,
        i: int,
        params: Sequence[Array],
        rows: Sequence[Array],
        chunks: list[tuple[int, int]],
        scale: float,
        out: Array,
    ) -> Array:
        """Thread `i`'s chunks, summed into `out`, in the order _sum_over adds them."""
        total = None
        n = rows[0].shape[0]
        for k, (start, stop) in enumerate(chunks):
            whole = start == 0 and stop == n  # the GPU's one chunk: no slicing (each is a host-side cost)
            x, targets = (r if whole else r[start:stop, ...] for r in rows)
            into = out if k == 0 else self._buffer("chunk", i, out)
            loss = model.gradient_into(params, x, targets, scale, self._views(into, params), self._ones(i, x))
            if k == 0:
                total = loss
            else:
                total = total + loss
                out += into
        return total

    def _buffer(self, kind: str, i: int, like: Array) -> Array:
        """A vector like `like`, kept for thread `i`'s partial sums."""
        key = (kind, i, tuple(like.shape), str(like.dtype), type(like))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = array_namespace(like).empty_like(like)
        return buffer

    def _ones(self, i: int, x: Array) -> Array:
        """A vector of ones as long as `x` has rows, in its dtype, kept: on a GPU, each fill is a launch."""
        key = (i, x.shape[0], str(x.dtype), type(x))
        ones = self._buffers.get(key)
        if ones is None:
            ones = self._buffers[key] = array_namespace(x).ones(x.shape[0], dtype=x.dtype)
        return ones

    def evaluation_sums(self, params: Sequence[Array], x: Array, targets: Array, labels: Array) -> tuple[Array, Array]:
        """Summed loss and number of correct predictions over all rows."""
        loss_sum, (correct,) = self._reduce(model.evaluation_sums, params, x, targets, labels)
        return loss_sum, correct

    # --- the schedule ------------------------------------------------------------------------

    def parts(self, n: int) -> list[list[tuple[int, int]]]:
        """The chunks each thread sums, in order; the threads' sums are then added in this order.

        The rows are first split evenly between the threads, then each
        thread's rows evenly into chunks of at most `chunk_rows`: 60000 rows
        on 2 threads are 4 chunks of 7500 each, not 4 of 8192 against 3 and a
        remainder, which left one thread waiting for the other.
        """
        if self.chunk_rows is None:
            return [[(0, n)]]
        threads = _even_split(0, n, max(1, min(self.workers, n)))
        return [_even_split(a, b, max(1, math.ceil((b - a) / self.chunk_rows))) for a, b in threads]

    def chunks(self, n: int) -> list[tuple[int, int]]:
        return [chunk for part in self.parts(n) for chunk in part]

    def _reduce(self, unit: Any, params: Sequence[Array], *rows: Array) -> tuple[Array, list[Array]]:
        parts = self.parts(rows[0].shape[0])
        if len(parts) == 1:
            return _sum_over(unit, params, rows, parts[0])
        caller_errstate = np.geterr()  # numpy's error state is per thread: carry the caller's over

        def work(part: list[tuple[int, int]]) -> tuple[Array, list[Array]]:
            with np.errstate(**caller_errstate):
                return _sum_over(unit, params, rows, part)

        with self._single_threaded_blas(rows[0]):
            results = list(self._executor().map(work, parts))
        # Added in a fixed order, so a run is reproducible to the bit.
        return _add(results)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # Its threads go when the engine does, whether or not anyone calls close(): a pool that
            # is garbage-collected wakes its idle threads to exit (tested).
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpunet-chunk")
        return self._pool

    def _single_threaded_blas(self, a: Array) -> Any:
        """Each worker thread runs its own BLAS call; BLAS's own threads would fight them."""
        if not is_numpy_array(a):
            return nullcontext()
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        return self._blas.limit(limits={"blas": 1})  # OpenMP and others keep theirs

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _even_split(start: int, stop: int, pieces: int) -> list[tuple[int, int]]:
    """[start, stop) in `pieces` consecutive ranges whose lengths differ by at most one."""
    base, extra = divmod(stop - start, pieces)
    return list(pairwise(start + i * base + min(i, extra) for i in range(pieces + 1)))


def _sum_over(
    unit: Any, params: Sequence[Array], rows: Sequence[Array], chunks: list[tuple[int, int]]
) -> tuple[Array, list[Array]]:
    total: Array = None
    sums: list[Array] = []
    n = rows[0].shape[0]
    for k, (start, stop) in enumerate(chunks):
        whole = start == 0 and stop == n  # the GPU's one chunk: no slicing (each is a host-side cost)
        loss, grads = unit(params, *(r if whole else r[start:stop, ...] for r in rows))
        if k == 0:
            total, sums = loss, list(grads)
        else:
            total = total + loss
            for i, g in enumerate(grads):
                sums[i] += g  # in place for arrays; rebinds numpy's 0-d results, which are scalars
    return total, sums


def _add(results: list[tuple[Array, list[Array]]]) -> tuple[Array, list[Array]]:
    total, sums = results[0]
    for loss, grads in results[1:]:
        total = total + loss
        for i, g in enumerate(grads):
            sums[i] += g
    return total, sums
