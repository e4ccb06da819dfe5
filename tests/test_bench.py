"""The benchmark on a tiny configuration: structure, sanity and arithmetic, never timing thresholds."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.bench import suite
from gpunet.cli.commands import app
from gpunet.data import datasets
from gpunet.errors import ConfigError
from gpunet.training.train import TrainConfig
from tests.conftest import cuda_device

TINY = suite.BenchSettings(
    TrainConfig(iterations=30, eval_every=10), target_accuracy=0.5, warmup=1, timed_steps=3, repeats=2
)


def cpu_backends() -> list[str]:
    """numpy always; the PyTorch reference where torch is installed (CI installs it)."""
    return ["numpy"] + ([] if suite.unavailable("torch-cpu") else ["torch-cpu"])


@pytest.fixture(scope="module")
def report() -> dict:
    return suite.run_bench(TINY, datasets.synthetic(n_train=1000, n_test=300), cpu_backends())


def test_step_cost_of_the_seed_network() -> None:
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 60000, 4)
    # forward 2n(784*16 + 16*16 + 16*10), the same again for weight gradients,
    # and 2n(16*16 + 16*10) for the gradients flowing back past the first layer
    assert flops == 2 * 60000 * (2 * (12544 + 256 + 160) + 256 + 160) == 3_160_320_000
    assert nbytes == 60000 * 784 * 4


def test_the_floor_is_the_slower_of_compute_and_memory() -> None:
    floor = suite.Floor("cpu", matmul_flops_per_s=1e11, bandwidth_bytes_per_s=1e10, measured_with="test")
    assert floor.ms(1e9, 1e7) == pytest.approx(10.0)  # compute-bound
    assert floor.ms(1e6, 1e9) == pytest.approx(100.0)  # memory-bound


class Clock:
    """A stand-in for time.perf_counter: each read is logged in `events` and advances by the next tick."""

    def __init__(self, events: list[str], ticks: list[float]) -> None:
        self.events, self.ticks, self.now = events, iter(ticks), 0.0

    def __call__(self) -> float:
        self.events.append("clock")
        self.now += next(self.ticks, 1.0)
        return self.now


def test_the_floor_measurement_is_exact_arithmetic_on_its_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the timings stubbed, the rates are exactly work / time: a 2x error in the FLOP or byte count fails."""
    import sys
    from types import SimpleNamespace

    seconds = {"matmul": 0.5, "copy": 0.25}
    timed, allocated = [], []

    def stub_best_time(fn, sync, repeats):
        kind = "copy" if fn.__name__ == "copy" else "matmul"
        timed.append((kind, repeats))
        done = fn()  # the timed work is the work: a product, or a copy into the second vector
        if kind == "matmul":
            np.testing.assert_array_equal(done, np.full((2, 2), 2.0))
        else:
            np.testing.assert_array_equal(vectors[-1], vectors[-2])
        return seconds[kind]

    vectors: list[np.ndarray] = []

    def ones(shape, dtype):  # numpy, without its gigabytes: the sizes asked for are what is checked
        allocated.append((shape, dtype))
        if len(shape) == 2:
            return np.ones((2, 2))
        vectors.append(np.arange(3.0) if len(vectors) % 2 == 0 else np.zeros(3))  # source, then destination
        return vectors[-1]

    monkeypatch.setattr(suite, "_best_time", stub_best_time)
    monkeypatch.setattr(suite, "np", SimpleNamespace(ones=ones, float32="f32", float64="f64", dtype=np.dtype))
    monkeypatch.setitem(sys.modules, "torch", None)  # numpy alone (torch's part: the tests below)
    for dtype, itemsize in (("float32", 4), ("float64", 8)):
        timed.clear()
        allocated.clear()
        floor = suite.measure_floor("cpu", dtype)
        words = 256 * 2**20 // itemsize  # 256 MiB read and 256 MiB written
        short = {"float32": "f32", "float64": "f64"}[dtype]
        assert allocated == [((2048, 2048), short), ((words,), short), ((words,), short)]  # a matrix, two vectors
        assert floor.matmul_flops_per_s == 2 * 2048**3 / 0.5  # a 2048x2048 product is 2*2048^3 operations
        assert floor.bandwidth_bytes_per_s == 2 * words * itemsize / 0.25 == 2 * 2**28 / 0.25
        assert timed == [("matmul", 3), ("copy", 3)] and floor.device == "cpu"
        assert floor.measured_with == "matmul: numpy, bandwidth: numpy"


def test_best_time_synchronises_before_every_clock_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the work is queued: a clock read not preceded by a sync measures the queueing, not the work."""
    events: list[str] = []
    monkeypatch.setattr(suite.time, "perf_counter", Clock(events, [10.0, 0.3, 10.0, 0.2, 10.0, 0.4]))
    best = suite._best_time(lambda: events.append("work"), lambda: events.append("sync"), 3)
    timed = ["sync", "clock", "work", "sync", "clock"]
    assert events == ["work", "sync", *timed * 3]  # one untimed run first: warm caches, compiled kernels
    assert best == pytest.approx(0.2)


def test_step_timings_synchronise_around_every_timed_step(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class Recording:
        def __init__(self, name: str) -> None:
            self.name = name

        def step(self) -> None:
            events.append(f"step {self.name}")

        def synchronize(self) -> None:
            events.append(f"sync {self.name}")

    ticks = [100.0, 0.002, 100.0, 0.004, 100.0, 0.003, 100.0, 0.001]
    monkeypatch.setattr(suite.time, "perf_counter", Clock(events, ticks))
    times = suite.time_steps({"a": Recording("a"), "b": Recording("b")}, warmup=2, steps=2, repeats=1)

    def turn(name: str) -> list[str]:
        timed = [f"sync {name}", "clock", f"step {name}", f"sync {name}", "clock"]
        return [f"step {name}", *timed * 2]  # an untimed step, then the timed ones

    assert events == ["step a", "step a", "step b", "step b", *turn("a"), *turn("b")]
    assert times["a"] == pytest.approx([2.0, 4.0]) and times["b"] == pytest.approx([3.0, 1.0])


def test_step_summary_arithmetic() -> None:
    floor = suite.Floor("cpu", matmul_flops_per_s=1e9, bandwidth_bytes_per_s=1e12, measured_with="test")
    summary = suite.step_summary([4.0, 1.0, 3.0, 2.0, 10.0], flops=2e6, nbytes=1e6, floor=floor)
    assert summary["ms_per_step_median"] == 3.0
    assert (summary["ms_per_step_p25"], summary["ms_per_step_p75"]) == (2.0, 4.0)
    assert summary["ms_per_step_iqr"] == 2.0 and summary["timed_steps"] == 5
    assert summary["floor_ms"] == pytest.approx(2.0)  # 2e6 operations at 1e9 per second
    assert summary["x_floor"] == pytest.approx(1.5)
    assert (summary["flops_per_step"], summary["bytes_per_step"]) == (2e6, 1e6)


def test_the_real_floor_measurement_runs() -> None:
    """On the real machine the numbers exist and are positive; their arithmetic is checked above."""
    floor = suite.measure_floor("cpu")
    assert floor.matmul_flops_per_s > 0 and floor.bandwidth_bytes_per_s > 0
    assert math.isfinite(floor.matmul_flops_per_s) and math.isfinite(floor.bandwidth_bytes_per_s)


def test_initialization_runs_untimed_steps_on_a_few_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = suite.make_trainer

    def recording(backend, config, dataset):
        seen.append((config.iterations, len(dataset.train_images)))
        return real(backend, config, dataset)

    monkeypatch.setattr(suite, "make_trainer", recording)
    assert suite.initialize("numpy", TrainConfig(), datasets.synthetic()) > 0
    assert seen == [(2, suite.INIT_SAMPLES)]


def test_report_structure(report: dict) -> None:
    assert {"date", "machine", "config", "floors", "results", "skipped", "agreement"} <= set(report)
    assert report["machine"]["cores"] >= 1 and "blas" in report["machine"]
    assert report["config"]["iterations"] == 30 and report["config"]["dataset"] == "synthetic"
    assert [r["backend"] for r in report["results"]] == cpu_backends()
    for r in report["results"]:
        for key in ("backend", "device", "ms_per_step_median", "ms_per_step_iqr", "time_to_target_s"):
            assert key in r
        for key in ("train_accuracy", "test_accuracy", "floor_ms", "x_floor"):
            assert key in r
        assert r["timed_steps"] == TINY.timed_steps * TINY.repeats
        assert r["ms_per_step_p25"] <= r["ms_per_step_median"] <= r["ms_per_step_p75"]
        assert r["x_floor"] == pytest.approx(r["ms_per_step_median"] / r["floor_ms"])
        # 1000 samples through 784-16-16-10 in float32: the full batch, every row counted once
        assert r["flops_per_step"] == 2 * 1000 * (2 * (12544 + 256 + 160) + 256 + 160)
        assert r["bytes_per_step"] == 1000 * 784 * 4
        floor = suite.Floor(**report["floors"][r["device"]])
        assert r["floor_ms"] == pytest.approx(floor.ms(r["flops_per_step"], r["bytes_per_step"]))
        assert r["time_to_target_s"] is not None and r["time_to_target_s"] <= r["wall_seconds"]
        assert r["curve"][0]["iteration"] == 0 and r["curve"][-1]["iteration"] == 30
        assert r["peak_host_rss_mb"] > 0
        assert r["init_seconds"] > 0  # paid, and recorded, before the time-to-target clock
    json.dumps(report)  # machine-readable as it stands


def test_every_backend_learns_the_same_from_the_same_start(report: dict) -> None:
    accuracies = [r["test_accuracy"] for r in report["results"]]
    assert min(accuracies) > 0.8
    assert max(accuracies) - min(accuracies) <= 0.01
    for detail in report["agreement"].values():
        assert detail["max_relative_weight_difference"] < 1e-2


@pytest.mark.skipif(cuda_device() is not None, reason="this machine has a GPU")
def test_unavailable_backends_are_listed_with_the_reason() -> None:
    result = suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), ["numpy", "cupy"])
    # The reason is the one found (no cupy, or cupy without a usable CUDA), not a blank
    assert result["skipped"]["cupy"] == suite.unavailable("cupy") and result["skipped"]["cupy"]
    assert [r["backend"] for r in result["results"]] == ["numpy"]


def test_sweep_rows() -> None:
    sweep = suite.sweep(TINY, datasets.synthetic(n_train=400, n_test=50), ["numpy"], samples=(100, 400), widths=(8, 16))
    rows = sweep["sweep"]
    assert [(r["axis"], r["samples"], r["hidden"]) for r in rows] == [
        ("samples", 100, [16, 16]),
        ("samples", 400, [16, 16]),
        ("width", 400, [8, 8]),
        ("width", 400, [16, 16]),
    ]
    assert rows[1]["flops_per_step"] == pytest.approx(4 * rows[0]["flops_per_step"])


def test_cli_bench_writes_json_and_plots(tmp_path: Path) -> None:
    out, figure = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "--dataset", "synthetic", "--backends", "numpy", "--iterations", "20", "--timed-steps", "2"]
    args += ["--repeats", "1", "--target-accuracy", "0.5", "--sweep", "--json", str(out), "--plot", str(figure)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ms/step" in result.output and "x floor" in result.output
    saved = json.loads(out.read_text())
    assert saved["results"][0]["backend"] == "numpy" and saved["sweep"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "bench-sweep.png").exists()


@pytest.mark.parametrize(
    ("backends", "code", "text"),
    [("tpu", 2, "unknown backend"), ("numpy,nonesuch", 2, "nonesuch")],
)
def test_cli_bench_refuses_unknown_backends(backends: str, code: int, text: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--dataset", "synthetic", "--backends", backends])
    assert result.exit_code == code
    assert result.stderr.startswith("error: ") and text in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(cuda_device() is not None, reason="this machine has a GPU")
def test_cli_bench_names_a_backend_that_cannot_run() -> None:
    result = CliRunner().invoke(app, ["bench", "--dataset", "synthetic", "--backends", "numpy,cupy"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: backend cupy: ")


def test_torch_reference_matches_gpunet_step_for_step() -> None:
    pytest.importorskip("torch", reason="the PyTorch reference is optional; CI installs torch")
    config = TrainConfig(iterations=5, eval_every=5, dtype="float64", optimizer="momentum", lr=0.05, batch_size=128)
    ds = datasets.synthetic(n_train=500, n_test=100)
    ours, theirs = suite.make_trainer("numpy", config, ds), suite.make_trainer("torch-cpu", config, ds)
    for _ in range(5):
        ours.step()
        theirs.step()
    for a, b in zip(ours.host_params(), theirs.host_params()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert astuple(ours.evaluate()) == pytest.approx(astuple(theirs.evaluate()), rel=1e-9)


def test_without_torch_the_hint_names_the_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    result = CliRunner().invoke(app, ["bench", "--dataset", "synthetic", "--backends", "numpy,torch-cpu"])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("error: backend torch-cpu: torch is not installed") and len(line.splitlines()) == 1
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in line
    assert "./setup.sh --bench" in line and "gpunet[bench]" not in line


def test_bench_shows_progress_as_train_does_plain_lines_off_a_terminal() -> None:
    args = ["bench", "--dataset", "synthetic", "--backends", "numpy", "--iterations", "20", "--timed-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--target-accuracy", "0.5"])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("numpy step")]
    assert [line.split()[2] for line in steps] == ["0/20", "10/20", "20/20"]
    assert "training loss" in steps[-1] and "test acc " in steps[-1]


def test_bench_shows_a_progress_bar_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from gpunet.cli.report import Reporter

    screen = io.StringIO()
    out = Reporter(console=Console(file=screen, force_terminal=True, width=200))
    assert out.live
    suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), ["numpy"], out.say, progress=out)
    shown = screen.getvalue()
    assert "numpy step" in shown and "30/30" in shown  # the training bar, with its metrics
    assert "training loss" in shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the terminal's colour and cursor codes
    assert re.search(r"(^|\s)timed step\s+6/6", plain, re.MULTILINE)  # 2 rounds of 3 timed steps
    assert "numpy step 30/30  training loss" not in shown  # a bar, not the plain lines


def test_the_bench_defaults_are_the_documented_ones_in_the_cli_and_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """README and benchmarks/README.md: time to 0.85, 5 warm-up steps, then 3 rounds of 30 timed steps."""
    seen = []

    def stop_here(settings, *args, **kwargs):
        seen.append(settings)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(suite, "run_bench", stop_here)
    result = CliRunner().invoke(app, ["bench", "--dataset", "synthetic", "--backends", "numpy"])
    assert result.stderr == "error: stopped by the test\n"
    assert seen == [suite.BenchSettings()] == [suite.BenchSettings(TrainConfig(), 0.85, 5, 30, 3)]


class StandInProc:
    """`open` with the /proc files in `files` served from there and those in `absent` missing; others as usual."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], absent: tuple[str, ...] = ()) -> None:
        import builtins
        import io

        self.files, self.written, real_open = files, [], builtins.open

        def stand_in(path, mode="r", *args, **kwargs):
            if str(path) in absent:
                raise FileNotFoundError(2, "No such file or directory", str(path))
            if str(path) not in self.files:
                return real_open(path, mode, *args, **kwargs)
            if "w" in mode:
                buffer = io.StringIO()
                buffer.close = lambda: self.written.append((str(path), buffer.getvalue()))
                return buffer
            return io.StringIO(self.files[str(path)])

        monkeypatch.setattr(builtins, "open", stand_in)


def test_peak_memory_is_the_high_water_mark_linux_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    status = "Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100000 kB\n"
    proc = StandInProc(monkeypatch, {"/proc/self/status": status, "/proc/self/clear_refs": ""})
    assert suite.peak_rss_bytes() == 123456 * 1024  # the resident high-water mark, not the virtual peak
    suite.reset_peak_rss()
    assert proc.written == [("/proc/self/clear_refs", "5")]  # "5" resets the high-water mark (proc(5))
    # Without /proc: getrusage's peak, which Linux gives in kB and macOS in bytes; nothing to reset.
    StandInProc(monkeypatch, {}, absent=("/proc/self/status", "/proc/self/clear_refs"))
    usage = type("Usage", (), {"ru_maxrss": 777})()
    monkeypatch.setattr(resource, "getrusage", lambda who: usage if who == resource.RUSAGE_SELF else None)
    assert suite.peak_rss_bytes() == 777 * 1024
    monkeypatch.setattr(suite.sys, "platform", "darwin")
    assert suite.peak_rss_bytes() == 777
    suite.reset_peak_rss()  # and no error


def test_the_cpu_is_named_by_its_model_name_or_else_by_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R): 2 cores @ 2.20GHz\n"
    StandInProc(monkeypatch, {"/proc/cpuinfo": cpuinfo})
    assert suite.machine_info()["cpu"] == "Intel(R) Xeon(R): 2 cores @ 2.20GHz"  # colons in the name kept
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    StandInProc(monkeypatch, {"/proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 48.00\n"})  # an ARM board's
    assert suite.machine_info()["cpu"] == "aarch64"
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    StandInProc(monkeypatch, {}, absent=("/proc/cpuinfo",))  # no /proc at all
    assert suite.machine_info()["cpu"] == "arm"


def test_the_record_names_cupys_version_and_leaves_out_what_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(suite, "cupy_version", lambda: "14.2.0")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    versions = suite.machine_info()["versions"]
    assert versions["cupy"] == "14.2.0" and "torch" not in versions
    monkeypatch.setattr(suite, "cupy_version", lambda: None)
    assert "cupy" not in suite.machine_info()["versions"]


class Scripted:
    """A trainer whose test accuracy follows a script, one value per evaluation; it logs every call."""

    def __init__(self, accuracies: list[float], calls: list[str]) -> None:
        self.accuracies, self.calls, self.steps_done = iter(accuracies), calls, 0
        self.schedule = "scripted"

    def step(self) -> None:
        self.calls.append("step")
        self.steps_done += 1

    def evaluate(self):
        from gpunet.training.train import Record

        self.calls.append(f"evaluate at {self.steps_done}")
        return Record(self.steps_done, 1.0 / (1 + self.steps_done), 0.5, next(self.accuracies))

    def synchronize(self) -> None:
        self.calls.append("sync")

    def host_params(self) -> list[np.ndarray]:
        return [np.full(2, float(self.steps_done))]

    def close(self) -> None:
        self.calls.append("close")


def test_time_to_target_stops_at_the_first_evaluation_that_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    made = []

    def make(backend, config, dataset):
        made.append((backend, config.iterations))
        return Scripted([0.2, 0.6, 0.7, 0.6, 0.8, 0.9], calls)

    monkeypatch.setattr(suite, "make_trainer", make)
    monkeypatch.setattr(suite.time, "perf_counter", Clock([], [100.0] + [1.0] * 20))
    records = []
    config = TrainConfig(iterations=9, eval_every=2)
    out = suite.train_to_target("numpy", config, datasets.synthetic(10, 10), 0.7, records.append)
    # Evaluations at 0, 2, 4, 6, 8 and the last at 9: the final stretch is one step, not two.
    assert calls == [
        "evaluate at 0", "step", "step", "evaluate at 2", "step", "step", "evaluate at 4", "step", "step",
        "evaluate at 6", "step", "step", "evaluate at 8", "step", "evaluate at 9", "close",
    ]  # fmt: skip
    assert made == [("numpy", 9)] and [r.iteration for r in records] == [0, 2, 4, 6, 8, 9]
    assert (out["time_to_target_s"], out["target_step"]) == (3.0, 4)  # 0.7 reached (>=) at the third reading
    assert out["wall_seconds"] == 6.0 and [p["seconds"] for p in out["curve"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert out["test_accuracy"] == 0.9 and out["train_accuracy"] == 0.5 and out["final_loss"] == 1 / 10
    assert out["curve"][2] == {"seconds": 3.0, "iteration": 4, "loss": 0.2, "train_accuracy": 0.5, "test_accuracy": 0.7}
    np.testing.assert_array_equal(out["final_params"][0], [9.0, 9.0])
    assert out["schedule"] == "scripted"


def test_a_target_never_reached_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "make_trainer", lambda *a: Scripted([0.1, 0.2], []))
    out = suite.train_to_target("numpy", TrainConfig(iterations=1, eval_every=5), datasets.synthetic(10, 10), 0.5)
    assert out["time_to_target_s"] is None and out["target_step"] is None and len(out["curve"]) == 2


def test_initialization_is_two_steps_and_an_evaluation_then_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    configs = []

    def make(backend, config, dataset):
        configs.append((backend, config))
        return Scripted([0.0], calls)

    monkeypatch.setattr(suite, "make_trainer", make)
    monkeypatch.setattr(suite.time, "perf_counter", Clock([], [10.0, 2.5]))
    assert suite.initialize("torch-cpu", TrainConfig(iterations=500, eval_every=50), datasets.synthetic(300, 10)) == 2.5
    assert calls == ["step", "step", "evaluate at 2", "sync", "close"]
    [(backend, config)] = configs
    assert (backend, config.iterations, config.eval_every) == ("torch-cpu", 2, 2)


def test_time_steps_reports_progress_between_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    turns: list[int] = []
    calls: list[str] = []
    trainers = {"a": Scripted([], calls), "b": Scripted([], calls)}
    times = suite.time_steps(trainers, warmup=0, steps=3, repeats=2, on_turn=turns.append)
    assert turns == [3, 6, 9, 12]  # timed steps so far, after each backend's turn
    assert [len(t) for t in times.values()] == [6, 6] and all(ms >= 0 for t in times.values() for ms in t)
    assert calls.count("step") == 2 * 2 * (1 + 3)  # each turn: one untimed step, then the timed ones


def test_agreement_is_measured_against_the_first_backend_that_shares_the_start() -> None:
    def result(backend: str, accuracy: float, params: list[np.ndarray]) -> dict:
        return {"backend": backend, "test_accuracy": accuracy, "final_params": params}

    reference = [np.array([3.0, 4.0]), np.array([1.0])]  # norms 5 and 1
    results = [
        result("sklearn", 0.5, [np.zeros(2), np.zeros(1)]),  # its own start: left out
        result("numpy", 0.80, reference),
        result("torch-cpu", 0.75, [np.array([3.0, 4.5]), np.array([1.2])]),
    ]
    agreement = suite._agreement(results)
    assert list(agreement) == ["torch-cpu"]
    assert agreement["torch-cpu"]["versus"] == "numpy"
    assert agreement["torch-cpu"]["max_relative_weight_difference"] == pytest.approx(0.2)  # max(0.5 / 5, 0.2 / 1)
    assert agreement["torch-cpu"]["test_accuracy_difference"] == pytest.approx(-0.05)
    zero = [result("numpy", 0.1, [np.zeros(1)]), result("cupy", 0.1, [np.array([1e-40])])]
    assert suite._agreement(zero)["cupy"]["max_relative_weight_difference"] == pytest.approx(1e-10)  # 1e-40 / 1e-30
    assert suite._agreement([results[0]]) == {}


def test_each_backend_runs_where_its_name_says(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [suite.device_kind(b) for b in suite.BACKENDS] == ["cpu", "cuda", "cpu", "cuda", "cpu"]
    assert suite.unavailable("tpu") == "unknown backend (choose from numpy, cupy, torch-cpu, torch-cuda, sklearn)"
    assert suite.unavailable("numpy") is None
    asked = []

    def torch_unavailable(device):
        asked.append(device)
        return f"no torch on {device}"

    monkeypatch.setattr("gpunet.bench.torch_reference.torch_unavailable", torch_unavailable)
    assert (suite.unavailable("torch-cpu"), suite.unavailable("torch-cuda")) == ("no torch on cpu", "no torch on cuda")
    assert asked == ["cpu", "cuda"]
    monkeypatch.setattr("gpunet.bench.sklearn_reference.sklearn_unavailable", lambda config: f"config {config}")
    assert suite.unavailable("sklearn", TINY.config) == f"config {TINY.config}"  # a batch size it cannot honour


def test_make_trainer_gives_each_backend_its_own_trainer() -> None:
    from gpunet.bench.sklearn_reference import SklearnTrainer
    from gpunet.training.train import Trainer

    ds = datasets.synthetic(n_train=50, n_test=10)
    numpy_trainer = suite.make_trainer("numpy", TINY.config, ds)
    assert isinstance(numpy_trainer, Trainer) and numpy_trainer.device.is_cuda is False
    suite.close(numpy_trainer)
    assert isinstance(suite.make_trainer("sklearn", TINY.config, ds), SklearnTrainer)  # in the dev extra
    # The PyTorch references: test_the_torch_references_run_on_their_own_devices, which needs no torch.


def test_the_machine_record_says_what_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpunet.device.backend import blas_info, describe
    from gpunet.training.engine import cpu_cores

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    info = suite.machine_info()
    with open("/proc/cpuinfo") as f:
        model_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    assert info["cpu"] == model_name and info["cores"] == cpu_cores()
    assert info["blas"] == blas_info() and info["openblas_coretype"] == "Prescott"
    assert info["devices"] == [f"{name}: {detail}" for name, detail in describe()]
    import platform

    import gpunet

    assert info["platform"] == platform.platform()
    assert {k: info["versions"][k] for k in ("python", "numpy", "gpunet")} == {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpunet": gpunet.__version__,
    }
    try:
        import torch
    except ImportError:
        assert "torch" not in info["versions"]
    else:
        assert info["versions"]["torch"] == torch.__version__
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert suite.machine_info()["openblas_coretype"] is None


FIXED_FLOOR = suite.Floor("cpu", matmul_flops_per_s=1e9, bandwidth_bytes_per_s=1e9, measured_with="stub")


def test_run_bench_says_what_it_does_and_records_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = []
    monkeypatch.setattr(suite, "measure_floor", lambda kind, dtype: measured.append((kind, dtype)) or FIXED_FLOOR)
    monkeypatch.setattr(suite.sys, "argv", ["/venv/bin/gpunet", "bench", "--repeats", "2"])
    said: list[str] = []
    settings = suite.BenchSettings(
        TrainConfig(iterations=4, eval_every=2, batch_size=100, dtype="float64"),
        0.3,
        warmup=0,
        timed_steps=2,
        repeats=2,
    )
    ds = datasets.synthetic(n_train=300, n_test=50)
    report = suite.run_bench(settings, ds, ["numpy", "tpu"], said.append)
    assert said == [
        "tpu: skipped (unknown backend (choose from numpy, cupy, torch-cpu, torch-cuda, sklearn))",
        "measuring this machine's cpu matrix-multiply rate and memory bandwidth",
        "numpy: training 4 steps",
        "timing steps: 2 rounds of 2 per backend, taking turns",
    ]
    assert measured == [("cpu", "float64")] and report["floors"] == {"cpu": dataclasses.asdict(FIXED_FLOOR)}
    assert report["command"] == "gpunet bench --repeats 2"
    assert report["skipped"] == {"tpu": suite.unavailable("tpu")}
    expected = {**dataclasses.asdict(settings.config), "dataset": "synthetic", "dataset_source": ds.source}
    expected |= {"samples": 300, "target_accuracy": 0.3, "warmup": 0, "timed_steps": 2, "repeats": 2}
    assert report["config"] == expected
    (result,) = report["results"]
    assert "final_params" not in result and result["backend"] == "numpy" and result["device"] == "cpu"
    assert result["peak_device_mb"] is None  # no device memory on the CPU
    # A step of --batch-size 100 in float64 is 100 rows' work, whatever the training set's size.
    assert (result["flops_per_step"], result["bytes_per_step"]) == suite.step_cost([784, 16, 16, 10], 100, 8)
    monkeypatch.setattr(suite.sys, "argv", ["pytest"])  # called from Python: no command line to record
    assert suite.run_bench(settings, ds, ["numpy"])["command"] is None


def test_the_sweep_times_fewer_steps_and_reuses_a_floor_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    timed, made = [], []

    def time_steps(trainers, warmup, steps, repeats, on_turn=None):
        timed.append((list(trainers), warmup, steps, repeats))
        return {name: [1.0] * steps for name in trainers}

    def make_trainer(backend, config, dataset):
        made.append((len(dataset.train_images), config.hidden, config.batch_size))
        return Scripted([], [])

    monkeypatch.setattr(suite, "time_steps", time_steps)
    monkeypatch.setattr(suite, "make_trainer", make_trainer)
    monkeypatch.setattr(suite, "measure_floor", lambda *a: pytest.fail("the floor given is used"))
    said: list[str] = []
    settings = suite.BenchSettings(TrainConfig(hidden=(12, 12), batch_size=50), warmup=9, timed_steps=30, repeats=4)
    ds = datasets.synthetic(n_train=300, n_test=50)
    out = suite.sweep(settings, ds, ["numpy", "tpu"], (100, 300, 600), (8,), said.append, {"cpu": FIXED_FLOOR})
    assert said == [
        "sweep: 100 samples, hidden 12,12",
        "sweep: 300 samples, hidden 12,12",
        "sweep: 300 samples, hidden 8,8",
    ]
    assert timed == [(["numpy"], 2, 5, 4)] * 3
    assert made == [(100, (12, 12), None), (300, (12, 12), None), (300, (8, 8), None)]  # the full batch
    assert out["floors"] == {"cpu": dataclasses.asdict(FIXED_FLOOR)} and out["machine"] == suite.machine_info()
    row = out["sweep"][0]
    assert (row["backend"], row["axis"], row["samples"], row["hidden"]) == ("numpy", "samples", 100, [12, 12])
    assert row["flops_per_step"] == suite.step_cost([784, 12, 12, 10], 100, 4)[0]
    settings = suite.BenchSettings(TrainConfig(), warmup=1, timed_steps=3, repeats=1)
    suite.sweep(settings, ds, ["numpy"], (100,), (), floors={"cpu": FIXED_FLOOR})
    assert timed[-1][1:4] == (1, 3, 1)  # fewer asked for: fewer taken


class FakeCuda:
    """torch.cuda as far as the bench uses it, logging calls: no GPU needed."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def is_available(self) -> bool:
        return True

    def synchronize(self) -> None:
        self.calls.append("torch sync")

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self) -> None:
        self.calls.append("reset_peak_memory_stats")

    def max_memory_allocated(self) -> float:
        return 3.0 * 2**20


def fake_torch(calls: list) -> object:
    from types import SimpleNamespace

    def ones(shape, dtype, device):
        calls.append(("torch ones", shape, dtype, device))

    return SimpleNamespace(float32="t32", float64="t64", cuda=FakeCuda(calls), ones=ones)


def fake_gpu(calls: list) -> object:
    from types import SimpleNamespace

    xp = SimpleNamespace(
        float32="c32", float64="c64", ones=lambda shape, dtype: calls.append(("cupy ones", shape, dtype))
    )
    return SimpleNamespace(
        xp=xp,
        synchronize=lambda: calls.append("cupy sync"),
        reset_memory_peak=lambda: calls.append("cupy reset"),
        memory_peak_bytes=lambda: 5 * 2**20,
    )


def test_the_gpu_floor_uses_large_arrays_and_the_best_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    calls: list = []
    gpu = fake_gpu(calls)
    monkeypatch.setattr(suite, "resolve_device", lambda name: gpu if name == "cuda" else pytest.fail(name))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))
    seconds = iter([1.0, 1.0, 0.5, 2.0])  # cupy: matmul, copy; torch: matmul, copy

    def stub_best_time(fn, sync, repeats):
        sync()  # which library's synchronisation comes with its timing
        return next(seconds)

    monkeypatch.setattr(suite, "_best_time", stub_best_time)
    floor = suite.measure_floor("cuda")
    words = 2048 * 2**20 // 4  # 2 GiB read and 2 GiB written: far past any GPU cache
    assert calls == [
        ("cupy ones", (8192, 8192), "c32"), "cupy sync", ("cupy ones", (words,), "c32"), ("cupy ones", (words,), "c32"),
        "cupy sync", ("torch ones", (8192, 8192), "t32", "cuda"), "torch sync", ("torch ones", (words,), "t32", "cuda"),
        ("torch ones", (words,), "t32", "cuda"), "torch sync",
    ]  # fmt: skip
    assert floor == suite.Floor("cuda", 2 * 8192**3 / 0.5, 2 * words * 4 / 1.0, "matmul: torch, bandwidth: cupy")


def test_a_floor_without_torch_is_numpys_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    monkeypatch.setattr(suite, "_best_time", lambda fn, sync, repeats: 1.0)
    assert suite.measure_floor("cpu").measured_with == "matmul: numpy, bandwidth: numpy"


def test_peak_device_memory_comes_from_each_gpu_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    calls: list = []
    monkeypatch.setattr(suite, "resolve_device", lambda name: fake_gpu(calls) if name == "cuda" else pytest.fail(name))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))
    cupy_memory, torch_memory, cpu_memory = (suite._DeviceMemory(b) for b in ("cupy", "torch-cuda", "numpy"))
    for memory in (cupy_memory, torch_memory, cpu_memory):
        memory.reset()
    assert calls == ["cupy reset", "empty_cache", "reset_peak_memory_stats"]
    assert (cupy_memory.peak(), torch_memory.peak(), cpu_memory.peak()) == (5 * 2**20, 3 * 2**20, None)
    assert suite._DeviceMemory("torch-cpu").peak() is None


def test_a_training_measurement_resets_the_peaks_after_initialisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-time costs are paid first and kept out of the peaks, as they are kept off the clock."""
    calls: list[str] = []

    class Memory:
        def __init__(self, backend: str) -> None:
            calls.append(f"memory for {backend}")

        def reset(self) -> None:
            calls.append("reset device peak")

        def peak(self) -> int:
            calls.append("read device peak")
            return 3 * 2**19

    def train_to_target(backend, config, dataset, target, on_record):
        calls.append(f"train {backend} to {target}")
        return {"test_accuracy": 0.9}

    monkeypatch.setattr(suite, "initialize", lambda backend, *a: calls.append(f"initialize {backend}") or 1.5)
    monkeypatch.setattr(suite, "_DeviceMemory", Memory)
    monkeypatch.setattr(suite, "reset_peak_rss", lambda: calls.append("reset host peak"))
    monkeypatch.setattr(suite, "peak_rss_bytes", lambda: 2**21)
    monkeypatch.setattr(suite, "train_to_target", train_to_target)
    out = suite.measure_training("torch-cuda", TINY, datasets.synthetic(10, 10))
    assert calls == [
        "initialize torch-cuda", "memory for torch-cuda", "reset device peak", "reset host peak",
        "train torch-cuda to 0.5", "read device peak",
    ]  # fmt: skip
    assert out == {
        "backend": "torch-cuda",
        "device": "cuda",
        "init_seconds": 1.5,
        "test_accuracy": 0.9,
        "peak_host_rss_mb": 2.0,
        "peak_device_mb": 1.5,
    }


def stand_in_backends(monkeypatch: pytest.MonkeyPatch, calls: list) -> dict[str, suite.Floor]:
    """numpy and torch-cuda with no GPU: floors, trainers and training runs are stand-ins that log their calls."""
    floors = {"cpu": FIXED_FLOOR, "cuda": suite.Floor("cuda", 1e12, 1e11, "stub")}

    def make_trainer(backend, config, dataset):
        calls.append(("trainer", backend, len(dataset.train_images), len(dataset.train_labels)))
        return Scripted([], calls)

    def measure_training(backend, settings, dataset, on_record=None):
        params = [np.full(3, 1.0 if backend == "numpy" else 1.5)]
        return {"backend": backend, "device": suite.device_kind(backend), "test_accuracy": 0.5, "final_params": params}

    monkeypatch.setattr(suite, "unavailable", lambda backend, config=None: None)
    monkeypatch.setattr(
        suite, "measure_floor", lambda kind, dtype: calls.append(("floor", kind, dtype)) or floors[kind]
    )
    monkeypatch.setattr(suite, "make_trainer", make_trainer)
    monkeypatch.setattr(suite, "measure_training", measure_training)
    monkeypatch.setattr(suite, "time_steps", lambda trainers, *a, **k: {name: [2.0, 4.0] for name in trainers})
    return floors


def test_each_backend_is_measured_against_its_own_devices_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    floors = stand_in_backends(monkeypatch, calls)
    ds = datasets.synthetic(n_train=200, n_test=50)
    report = suite.run_bench(TINY, ds, ["numpy", "torch-cuda"])
    assert [c for c in calls if c[0] != "trainer"] == [
        ("floor", "cpu", "float32"),
        ("floor", "cuda", "float32"),
        "close",
        "close",
    ]
    assert [c for c in calls if c[0] == "trainer"] == [
        ("trainer", "numpy", 200, 200),
        ("trainer", "torch-cuda", 200, 200),
    ]
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 200, 4)
    for result, kind in zip(report["results"], ["cpu", "cuda"]):
        assert result["floor_ms"] == floors[kind].ms(flops, nbytes) and result["x_floor"] == 3.0 / result["floor_ms"]
    assert report["agreement"]["torch-cuda"]["max_relative_weight_difference"] == pytest.approx(0.5)
    assert report["date"].endswith("+00:00")  # in UTC, whatever the machine's time zone


@pytest.mark.parametrize(("dtype", "itemsize"), [("float32", 4), ("float64", 8)])
def test_the_sweep_measures_each_devices_floor_in_the_runs_dtype_and_closes_its_trainers(
    monkeypatch: pytest.MonkeyPatch, dtype: str, itemsize: int
) -> None:
    calls: list = []
    floors = stand_in_backends(monkeypatch, calls)
    settings = suite.BenchSettings(TrainConfig(dtype=dtype), warmup=1, timed_steps=2, repeats=1)
    out = suite.sweep(settings, datasets.synthetic(n_train=300, n_test=50), ["numpy", "torch-cuda"], (100,), ())
    assert sorted(c for c in calls if c[0] == "floor") == [("floor", "cpu", dtype), ("floor", "cuda", dtype)]
    made = [c for c in calls if c[0] == "trainer"]
    assert made == [("trainer", "numpy", 100, 100), ("trainer", "torch-cuda", 100, 100)]  # images and labels cut alike
    assert calls.count("close") == len(made)  # each trainer's threads let go
    flops, nbytes = suite.step_cost([784, 16, 16, 10], 100, itemsize)
    for row, kind in zip(out["sweep"], ["cpu", "cuda"]):
        assert (row["flops_per_step"], row["bytes_per_step"]) == (flops, nbytes)
        assert row["floor_ms"] == floors[kind].ms(flops, nbytes)


def test_a_backend_that_cannot_honour_the_settings_is_skipped_with_the_reason() -> None:
    pytest.importorskip("sklearn", reason="scikit-learn is in the dev extra")
    settings = suite.BenchSettings(TrainConfig(iterations=2, batch_size=10), 0.5, warmup=0, timed_steps=1, repeats=1)
    report = suite.run_bench(settings, datasets.synthetic(n_train=50, n_test=10), ["sklearn"])
    reason = "the scikit-learn reference trains full batch only (one partial_fit is one update)"
    assert report["skipped"] == {"sklearn": reason} and report["results"] == []


def test_no_refresh_thread_competes_with_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bars are redrawn between timed steps by the bench itself, never by rich's own thread."""
    import io
    import threading

    from rich.console import Console
    from rich.live import _RefreshThread

    from gpunet.cli.report import Reporter

    def refreshing() -> bool:
        return any(isinstance(t, _RefreshThread) for t in threading.enumerate())

    out = Reporter(console=Console(file=io.StringIO(), force_terminal=True, width=200))
    with out.training(10, "step"):
        assert refreshing()  # the premise: an ordinary progress bar has one
    seen = []
    for name in ("train_to_target", "time_steps"):  # the two clocks: time to target, and ms per step
        real = getattr(suite, name)
        monkeypatch.setattr(
            suite, name, lambda *a, real=real, name=name, **k: seen.append((name, refreshing())) or real(*a, **k)
        )
    suite.run_bench(TINY, datasets.synthetic(n_train=200, n_test=50), ["numpy"], out.say, progress=out)
    assert seen == [("train_to_target", False), ("time_steps", False)]


def test_cupy_runs_where_a_cuda_device_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpunet.errors import DeviceError
    from gpunet.training.train import Trainer
    from tests.conftest import numpy_device

    asked: list[str] = []

    def no_gpu(spec: str):
        asked.append(spec)
        raise DeviceError("no CUDA driver here")

    monkeypatch.setattr(suite, "resolve_device", no_gpu)
    assert suite.unavailable("cupy") == "no CUDA driver here" and asked == ["cuda"]
    stand_in = numpy_device()  # a device that works, standing in for the GPU
    monkeypatch.setattr(suite, "resolve_device", lambda spec: asked.append(spec) or stand_in)
    assert suite.unavailable("cupy") is None
    ds = datasets.synthetic(n_train=50, n_test=10)
    trainer = suite.make_trainer("cupy", TINY.config, ds)
    assert isinstance(trainer, Trainer) and trainer.device is stand_in and trainer.config == TINY.config
    assert trainer.dataset_name == "synthetic" and asked[-1] == "cuda"
    suite.make_trainer("numpy", TINY.config, ds)
    assert asked[-1] == "cpu"


def test_the_torch_references_run_on_their_own_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpunet.bench.torch_reference

    made = []
    monkeypatch.setattr(
        gpunet.bench.torch_reference, "TorchTrainer", lambda config, dataset, device: made.append(device)
    )
    for backend in ("torch-cpu", "torch-cuda"):
        suite.make_trainer(backend, TINY.config, datasets.synthetic(n_train=10, n_test=5))
    assert made == ["cpu", "cuda"]


def test_the_cpu_floor_takes_torch_where_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    calls: list = []
    torch = fake_torch(calls)
    torch.cuda.is_available = lambda: False  # PyTorch's CPU build
    monkeypatch.setitem(sys.modules, "torch", torch)
    seconds = iter([1.0, 1.0, 0.5, 0.5])  # numpy: matmul, copy; torch: matmul, copy

    def stub_best_time(fn, sync, repeats):
        assert sync() is None  # nothing to wait for on the CPU
        return next(seconds)

    monkeypatch.setattr(suite, "_best_time", stub_best_time)
    floor = suite.measure_floor("cpu", "float64")
    assert floor.measured_with == "matmul: torch, bandwidth: torch"
    assert [c[3] for c in calls if c[0] == "torch ones"] == ["cpu"] * 3 and "torch sync" not in calls
    assert floor.matmul_flops_per_s == 2 * 2048**3 / 0.5 and floor.bandwidth_bytes_per_s == 2 * 2**28 / 0.5


def test_the_floor_takes_each_rate_from_the_library_best_at_it_the_first_on_a_tie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    calls: list = []
    torch = fake_torch(calls)
    torch.cuda.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "torch", torch)
    seconds = iter([1.0, 1.0, 1.0, 0.5])  # the same matmul rate; torch copies twice as fast
    monkeypatch.setattr(suite, "_best_time", lambda fn, sync, repeats: next(seconds))
    assert suite.measure_floor("cpu").measured_with == "matmul: numpy, bandwidth: torch"
