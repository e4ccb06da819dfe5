"""The numba CPU engine against the array-API reference: the same sums, the same training, and the
reference wherever the kernels cannot serve (numba missing, $GPUNET_CPU_ENGINE, other arrays).

Where numba cannot be imported every engine here is the reference, and the comparisons still hold
(trivially), with floats where the engine does not read pixels; the tests that name the engine
expect the reference there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
from conftest import FASHION_DIR

from gpunet.core import model
from gpunet.core.flat import Layout
from gpunet.data import datasets
from gpunet.device.backend import Device, resolve_device
from gpunet.training.engine import CPU_CHUNK_ROWS, LocalEngine, choose_engine, numba_problem
from gpunet.training.initializers import he_normal
from gpunet.training.train import TrainConfig, Trainer

CPU = resolve_device("cpu")
NUMBA = numba_problem() is None
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # the largest difference, relative to the largest entry


def fused(dtype: str, workers: int = 2):
    """The engine numpy steps get by default, with `workers` threads."""
    return choose_engine(CPU, dtype, workers)


def problem(rng: np.random.Generator, sizes: list[int], rows: int, dtype: str):
    """Pixels, the same pixels scaled as the trainer scales them, one-hot targets, labels, parameters."""
    pixels = rng.integers(0, 256, (rows, sizes[0])).astype(np.uint8)
    x = pixels.astype(dtype)
    x /= 255.0
    labels = rng.integers(0, sizes[-1], rows)
    targets = model.one_hot_t(labels, sizes[-1], np.dtype(dtype)).T  # as the trainer holds them
    params = he_normal(sizes, int(rng.integers(1000)), dtype)
    for b in params[1::2]:
        b += rng.normal(0, 0.1, b.shape).astype(dtype)  # biases not all 0: their gradients must differ too
    return pixels, x, targets, labels, params


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


SHAPES = [
    [784, 16, 16, 10],  # the default network
    [784, 32, 10],  # one hidden layer, two tiles wide
    [784, 20, 33, 17, 10],  # widths that are not multiples of 16: padded inside
    [50, 7, 3],  # few inputs (not a multiple of 4), three classes
    [5, 16, 16, 1],  # one class: its loss is 0 and so is every gradient
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 129, 1001])  # around the 64-row blocks and the two parts
def test_gradient_sums_match_the_reference(dtype: str, sizes: list[int], rows: int) -> None:
    pixels, x, targets, _, params = problem(np.random.default_rng(rows), sizes, rows, dtype)
    reference = LocalEngine(CPU_CHUNK_ROWS, 2)
    want_loss, want = reference.gradient_sums(params, x, targets)
    engine = fused(dtype)
    for rows_given in (pixels, x) if engine.reads_pixels else (x,):  # uint8 pixels, read as they are, and floats
        loss, grads = engine.gradient_sums(params, rows_given, targets)
        assert abs(float(loss) - float(want_loss)) <= TOLERANCE[dtype] * max(abs(float(want_loss)), 1.0)
        for g, w in zip(grads, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            assert relative(g, w) <= TOLERANCE[dtype] or np.max(np.abs(w)) == 0 == np.max(np.abs(g))
    engine.close()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_flat_gradient_is_scaled_and_the_evaluation_sums_match(dtype: str) -> None:
    sizes, rows = [784, 16, 16, 10], 777
    pixels, x, targets, labels, params = problem(np.random.default_rng(7), sizes, rows, dtype)
    reference = LocalEngine(CPU_CHUNK_ROWS, 2)
    want = np.empty(Layout.of(params).size, dtype)
    want_loss = reference.gradient_flat(params, x, targets, 1.0 / rows, want)
    engine = fused(dtype)
    if not engine.reads_pixels:  # the reference, where numba is missing, takes the rows scaled
        pixels = x
    got = np.full_like(want, np.nan)
    loss = engine.gradient_flat(params, pixels, targets, 1.0 / rows, got)
    assert relative(got, want) <= TOLERANCE[dtype]
    assert abs(float(loss) - float(want_loss)) <= TOLERANCE[dtype] * abs(float(want_loss))
    loss_sum, correct = engine.evaluation_sums(params, pixels, targets, labels)
    want_sum, want_correct = reference.evaluation_sums(params, x, targets, labels)
    assert abs(float(loss_sum) - float(want_sum)) <= TOLERANCE[dtype] * abs(float(want_sum))
    assert float(correct) == float(want_correct)
    mean_loss, accuracy = engine.evaluate(params, pixels, targets, labels)
    want_mean, want_accuracy = reference.evaluate(params, x, targets, labels)
    assert accuracy == want_accuracy and abs(float(mean_loss) - float(want_mean)) <= TOLERANCE[dtype] * float(want_mean)
    engine.close()


def test_pixels_give_the_very_bits_of_the_scaled_rows_and_parts_add_in_order() -> None:
    """uint8 pixels are scaled inside exactly as the trainer scales them; a 2-thread sum is the two
    1-thread sums of its halves, added (what lets the Dask engine's two workers match it to the bit)."""
    sizes, rows = [784, 16, 16, 10], 301
    pixels, x, targets, _, params = problem(np.random.default_rng(3), sizes, rows, "float32")
    two = fused("float32", 2)
    if not two.reads_pixels:  # the reference (numba missing) takes scaled rows: the pixels' half is moot
        pixels = x
    flat = [np.empty(Layout.of(params).size, np.float32) for _ in range(3)]
    loss_pixels = two.gradient_flat(params, pixels, targets, 0.5, flat[0])
    loss_floats = two.gradient_flat(params, x, targets, 0.5, flat[1])
    assert np.array_equal(flat[0], flat[1]) and loss_pixels == loss_floats
    if not NUMBA:  # the reference adds its threads' products another way (tests/test_distributed.py)
        return
    one = fused("float32", 1)
    half = rows // 2 + 1 if rows % 2 else rows // 2
    first = one.gradient_flat(params, pixels[:half], targets[:half], 0.5, flat[1])
    first_grad = flat[1].copy()
    second = one.gradient_flat(params, pixels[half:], targets[half:], 0.5, flat[2])
    assert np.array_equal(first_grad + flat[2], flat[0]) and first + second == loss_pixels


def train_both(config: TrainConfig, dataset: datasets.Dataset):
    default = Trainer(config, dataset, CPU)
    reference = Trainer(config, dataset, CPU, engine=LocalEngine.for_device(CPU))
    try:
        return default.run(), reference.run(), default.schedule
    finally:
        default.close()
        reference.close()


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest relative (Frobenius) distance between two runs' weights, layer by layer."""
    return max(float(np.linalg.norm(p - q) / np.linalg.norm(q)) for p, q in zip(a, b))


def test_a_hundred_adam_steps_follow_the_reference_in_float64() -> None:
    fashion = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True).first(3000)
    fast, reference, schedule = train_both(TrainConfig(iterations=100, eval_every=25, dtype="float64"), fashion)
    assert schedule.startswith("numba CPU kernels") == NUMBA, schedule
    for a, b in zip(fast.params, reference.params):
        assert a.dtype == b.dtype == np.float64 and relative(a, b) < 1e-9
    for r, q in zip(fast.history, reference.history):
        assert r.iteration == q.iteration and abs(r.loss - q.loss) <= 1e-12 * q.loss
        assert r.test_accuracy == q.test_accuracy
    assert fast.final.loss < 0.6 * fast.history[0].loss  # it learned


def test_a_hundred_adam_steps_in_float32_stay_as_close_to_float64_as_the_reference_does() -> None:
    """In float32 two engines' sums differ in their last bits, and Adam, which divides each gradient
    by its own size, lets those differences grow: after 100 steps the reference's own float32 run is
    about 1.5% from its float64 run (PyTorch's, 7% after 500 steps; benchmarks/results). So the
    numba engine is held to the float64 run, no farther from it than the reference's float32 run is
    (with room for another ordering's luck), and to the same losses and accuracies."""
    fashion = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True).first(3000)
    config = TrainConfig(iterations=100, eval_every=25, dtype="float32")
    fast, reference, _ = train_both(config, fashion)
    exact = Trainer(replace(config, dtype="float64"), fashion, CPU, engine=LocalEngine.for_device(CPU)).run()
    assert all(p.dtype == np.float32 for p in fast.params)
    assert distance(fast.params, exact.params) <= 1.5 * distance(reference.params, exact.params) < 0.05
    for r, q, e in zip(fast.history, reference.history, exact.history):
        assert abs(r.loss - e.loss) <= 0.02 * e.loss and abs(r.test_accuracy - q.test_accuracy) <= 0.005
    assert fast.final.loss < 0.6 * fast.history[0].loss


def test_mini_batches_follow_the_reference_too() -> None:
    fashion = datasets.load("fashion-mnist", data_dir=FASHION_DIR, offline=True).first(2000)
    fast, reference, _ = train_both(TrainConfig(iterations=30, eval_every=10, batch_size=300, dtype="float64"), fashion)
    for a, b in zip(fast.params, reference.params):
        assert relative(a, b) < 1e-10


def test_the_default_engine_on_numpy_is_numba_where_it_imports() -> None:
    for dtype in ("float32", "float64"):
        engine = choose_engine(CPU, dtype)
        assert engine.describe().startswith("numba CPU kernels") == NUMBA
        assert engine.reads_pixels == NUMBA
        engine.close()
    assert choose_engine(CPU, "float32", 3).describe(60_000) == (
        "numba CPU kernels, 3 threads of 20,000 rows" if NUMBA else "3 threads, 3 chunks of 6,666-6,667 rows per thread"
    )


def test_other_arrays_and_devices_get_the_reference() -> None:
    strict = Device("cpu", array_api_strict)
    assert isinstance(choose_engine(strict, "float32"), LocalEngine)
    assert isinstance(choose_engine(Device("cuda:0", None), "float32"), LocalEngine)  # reads only the name
    # The numba engine handed array-api-strict arrays computes them as the reference does.
    sizes, rows = [20, 16, 3], 41
    _, x, targets, _, params = problem(np.random.default_rng(5), sizes, rows, "float64")
    engine = fused("float64")
    as_strict = [array_api_strict.asarray(p) for p in params]
    loss, grads = engine.gradient_sums(as_strict, array_api_strict.asarray(x), array_api_strict.asarray(targets))
    want_loss, want = LocalEngine(CPU_CHUNK_ROWS, 2).gradient_sums(params, x, targets)
    assert abs(float(loss) - float(want_loss)) < 1e-12 * abs(float(want_loss))
    for g, w in zip(grads, want):
        assert relative(np.asarray(g), w) < 1e-12


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


TRAIN = (
    "import sys; {block}from gpunet.cli.commands import app; "
    "sys.argv = ['gpunet', 'train', '--dataset', 'synthetic', '--iterations', '3', '--eval-every', '3', "
    "'--device', 'cpu', '--no-save']; app()"
)


def test_without_numba_the_reference_trains_saying_why_and_an_explicit_numba_is_refused() -> None:
    without = "sys.modules['numba'] = None; "
    done = run_python(TRAIN.format(block=without))
    assert done.returncode == 0, done.stderr
    why = "numba cannot be imported (import of numba halted; None in sys.modules)"
    said = f"the compiled CPU kernels cannot run here: {why}; the steps run in the array-API math"
    assert said in done.stdout.splitlines(), done.stdout
    assert "rows per thread)" in done.stdout and "step 3/3" in done.stdout
    refused = run_python(TRAIN.format(block=without), {"GPUNET_CPU_ENGINE": "numba"})
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout
    assert refused.stderr.strip().splitlines() == [f"error: $GPUNET_CPU_ENGINE is 'numba', but {why}"]


FIT = """
import sys, warnings
sys.modules["numba"] = None
import numpy as np
import gpunet
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    x = np.random.default_rng(0).random((50, 4)).astype("float32")
    gpunet.MLPClassifier(iterations=3).fit(x, np.arange(50) % 3)
for w in caught:
    print(w.category.__name__, "|", w.message, "|", w.filename)
"""


def test_a_python_fit_without_numba_warns_why_from_the_callers_line_and_trains() -> None:
    done = run_python(FIT)
    assert done.returncode == 0, done.stderr
    why = "numba cannot be imported (import of numba halted; None in sys.modules)"
    said = f"the compiled CPU kernels cannot run here: {why}; the steps run in the array-API math"
    assert done.stdout.splitlines() == [f"RuntimeWarning | {said} | <string>"], done.stdout


@pytest.mark.root  # a read-only file system, mounted
def test_where_numba_cannot_cache_its_kernels_the_reference_trains_saying_why(tmp_path: Path) -> None:
    """A read-only install with no writable cache directory: numba refuses to define cached
    kernels at all, which must not become a traceback."""
    from filesystems import run_privileged, tmpfs

    with tmpfs(tmp_path / "ro", "64m") as ro:
        shutil.copytree(
            Path(__file__).parents[1] / "gpunet", ro / "gpunet", ignore=shutil.ignore_patterns("__pycache__")
        )
        run_privileged("mount", "-o", "remount,ro", str(ro))
        nowhere = {"PYTHONPATH": str(ro), "HOME": str(ro / "home"), "XDG_CACHE_HOME": str(ro / "cache")}
        done = run_python(TRAIN.format(block=""), {**nowhere, "NUMBA_CACHE_DIR": ""}, cwd=tmp_path)
        refused = run_python(TRAIN.format(block=""), {**nowhere, "NUMBA_CACHE_DIR": "", "GPUNET_CPU_ENGINE": "numba"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "the compiled CPU kernels cannot run here: numba has no writable directory" in done.stdout, done.stdout
    assert "set NUMBA_CACHE_DIR to one; the steps run in the array-API math" in done.stdout
    assert "rows per thread)" in done.stdout and "step 3/3" in done.stdout
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("error: $GPUNET_CPU_ENGINE is 'numba', but numba has no writable directory")


def test_gpunet_cpu_engine_reference_pins_the_reference(tmp_path: Path) -> None:
    done = run_python(TRAIN.format(block=""), {"GPUNET_CPU_ENGINE": "reference"})
    assert done.returncode == 0, done.stderr
    assert "numba" not in done.stdout and "rows per thread)" in done.stdout, done.stdout
    refused = run_python(TRAIN.format(block=""), {"GPUNET_CPU_ENGINE": "fast"})
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: $GPUNET_CPU_ENGINE is 'fast': give numba (the compiled CPU kernels, the default where they can "
        "run) or reference (the array-API math)"
    ]


@pytest.mark.slow  # a cold compile: a minute on a busy 2-core machine
def test_the_first_run_says_it_compiles_and_the_next_loads_the_cache(tmp_path: Path) -> None:
    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    first = run_python(TRAIN.format(block=""), cache)
    assert first.returncode == 0, first.stderr
    said = [line for line in first.stdout.splitlines() if line.startswith("compiling the CPU kernels")]
    if not NUMBA:
        assert said == []
        return
    assert len(said) == 1 and said[0].startswith("compiling the CPU kernels (first run only): ")
    assert said[0].endswith(" s") and float(said[0].split(": ")[1][:-2]) > 0
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "nothing was cached"
    again = run_python(TRAIN.format(block=""), cache)
    assert again.returncode == 0 and "compiling" not in again.stdout, again.stdout
    # Said before the first step, which it never slows: the line comes before "training ...".
    lines = first.stdout.splitlines()
    assert lines.index(said[0]) < next(i for i, line in enumerate(lines) if line.startswith("training "))


def test_these_tests_hold_where_numba_cannot_be_imported(tmp_path: Path) -> None:
    """The suite runs where numba is missing: this file, with an `import numba` that fails, passes
    with the reference engine in every role (the fallback's own tests above run in processes)."""
    blocked = tmp_path / "no-numba" / "numba"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("numba is blocked for this run")\n')
    here = Path(__file__)
    path = os.pathsep.join([str(blocked.parent), str(here.parents[1]), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here), "-k", "not hold_where_numba"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": path},
        cwd=here.parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-3000:]


def test_the_tile_kernels_are_what_the_generator_writes() -> None:
    """Edited by hand, the tile kernels would drift from benchmarks/fused_cpu_codegen.py, the one
    place that says how they are written (and why)."""
    import runpy

    codegen = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "fused_cpu_codegen.py"))
    source = Path(codegen["TARGET"]).read_text()
    assert codegen["generated"]() in source
