"""The command line, through typer's CliRunner and, for the real entry point, a subprocess."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FASHION_DIR, cuda_device
from tests.helpers import invoke
from tests.helpers import one_line_error as assert_one_line_error

QUICK = ["--dataset", "synthetic", "--iterations", "20", "--eval-every", "10", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def test_train_reports_output_layer_accuracy_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = invoke("train", *QUICK, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("dataset: synthetic")
    assert "test accuracy" in result.output
    summary = json.loads(out.read_text())
    for key in (
        "test_accuracy",
        "train_accuracy",
        "final_loss",
        "iterations",
        "train_seconds",
        "device",
        "dataset",
        "hidden",
        "optimizer",
        "lr",
        "dtype",
        "seed",
        "history",
    ):
        assert key in summary
    assert summary["status"] == "completed"
    assert summary["device"] == "cpu" and summary["hidden"] == [16, 16] and summary["iterations"] == 20
    assert summary["test_accuracy"] > 0.9
    assert [h["iteration"] for h in summary["history"]] == [0, 10, 20]
    assert set(summary["history"][0]) == {"iteration", "loss", "train_accuracy", "test_accuracy"}
    assert summary["history"][0]["loss"] == pytest.approx(math.log(10), abs=0.05)
    assert f"{summary['test_accuracy']:.4f}" in result.output


def test_quiet_prints_only_the_result() -> None:
    result = invoke("train", *QUICK, "--quiet")
    assert result.exit_code == 0
    assert result.output.strip().startswith("test accuracy")
    assert len(result.output.strip().splitlines()) == 1


def test_plain_log_lines_when_not_a_terminal() -> None:
    result = invoke("train", *QUICK, "--hidden", "8", "--optimizer", "momentum", "--lr", "0.05", "--batch-size", "500")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("step")]
    assert len(steps) == 3
    assert "training loss" in steps[-1] and "train acc " in steps[-1] and "test acc " in steps[-1]
    assert "training loss" in result.output.splitlines()[-2]
    assert "784-8-10 with momentum lr 0.05, batches of 500" in result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--hidden", "0"], "positive"),
        (["--hidden", "16,abc"], "comma-separated"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "-1"], "--lr must be above 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--iterations", "-1"], "iterations"),
        (["--iterations", "ten"], "--iterations"),
        (["--optimizer", "sgd"], "optimizer"),
        (["--dtype", "float16"], "dtype"),
        (["--eval-every", "0"], "--eval-every must be at least 1"),
        (["--dataset", "cifar"], "unknown dataset"),
        (["--device", "tpu"], "unknown device"),
        (["--device", "cuda:x"], "index"),
        (["--no-such-option"], "No such option"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_options_give_one_line_and_exit_2_or_1(args: list[str], text: str) -> None:
    result = invoke("train", "--dataset", "synthetic", *args)
    assert_one_line_error(result, text=text)
    assert result.exit_code in (1, 2)


@pytest.mark.skipif(cuda_device() is not None, reason="this machine has a usable GPU")
def test_cuda_without_gpu_says_why() -> None:
    line = assert_one_line_error(invoke("train", *QUICK[:-2], "--device", "cuda"), code=1)
    assert "cupy" in line or "CUDA" in line


def test_auto_device_falls_back_to_cpu_and_says_so() -> None:
    if cuda_device() is not None:
        pytest.skip("this machine has a usable GPU")
    result = invoke("train", *QUICK[:-2], "--device", "auto")
    assert result.exit_code == 0
    assert "device: cpu, since" in result.output


def test_missing_data_offline_says_how_to_get_it(tmp_path: Path) -> None:
    line = assert_one_line_error(invoke("train", "--dataset", "mnist", "--offline"), code=1)
    assert "gpunet datasets download mnist" in line and "--offline" in line


def test_no_network_fails_fast_with_a_clear_error() -> None:
    line = assert_one_line_error(invoke("train", "--dataset", "mnist"), code=1)
    assert "could not download" in line and "127.0.0.1" in line


def test_auto_dataset_announces_the_fashion_fallback_first() -> None:
    result = invoke("train", "--offline", "--iterations", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == f"MNIST unavailable offline: training on Fashion-MNIST from {FASHION_DIR}"


def test_auto_dataset_with_nothing_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpunet.data.datasets

    monkeypatch.setattr(gpunet.data.datasets, "search_dirs", lambda name, data_dir=None: [])
    line = assert_one_line_error(invoke("train", "--offline"), code=1)
    assert "no dataset available" in line


def copy_fashion(tmp_path: Path) -> Path:
    target = tmp_path / "fashion-mnist"
    shutil.copytree(FASHION_DIR, target)
    return target


def test_truncated_data_file(tmp_path: Path) -> None:
    target = copy_fashion(tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:2000])
    line = assert_one_line_error(invoke("train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)), code=1)
    assert "t10k-labels-idx1-ubyte.gz" in line and "gzip" in line


def test_mislabelled_data_file(tmp_path: Path) -> None:
    target = copy_fashion(tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8 + 17] = 12  # label 12 in a 10-class dataset
    labels.unlink()
    (target / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    line = assert_one_line_error(invoke("train", "--dataset", "fashion-mnist", "--data-dir", str(target)), code=1)
    assert "t10k-labels-idx1-ubyte" in line


def test_missing_data_file(tmp_path: Path) -> None:
    target = copy_fashion(tmp_path)
    (target / "train-labels-idx1-ubyte.gz").unlink()
    line = assert_one_line_error(invoke("train", "--dataset", "fashion-mnist", "--data-dir", str(target)), code=1)
    assert "missing train-labels-idx1-ubyte" in line


def test_divergence_exits_3_names_the_step_and_keeps_the_history(tmp_path: Path) -> None:
    out = tmp_path / "diverged.json"
    args = ["train", *QUICK, "--optimizer", "gd", "--lr", "1e30", "--json", str(out)]
    line = assert_one_line_error(invoke(*args), code=3)
    assert "at step" in line and "lower learning rate" in line
    summary = json.loads(out.read_text())
    assert summary["status"] == "DivergedError" and summary["history"][0]["iteration"] == 0


def test_devices_lists_cpu_and_explains_cuda() -> None:
    result = invoke("devices")
    assert result.exit_code == 0
    assert result.output.startswith("cpu")
    assert "numpy" in result.output and "BLAS" in result.output
    assert "cuda" in result.output


def test_datasets_lists_where_each_was_found() -> None:
    result = invoke("datasets")
    assert result.exit_code == 0
    assert f"fashion-mnist  found in {FASHION_DIR}" in result.output
    assert "mnist          not found" in result.output
    assert "synthetic" in result.output


def test_datasets_download_verifies_a_present_dataset() -> None:
    result = invoke("datasets", "download", "fashion-mnist")
    assert result.exit_code == 0, result.output
    assert "60,000 train" in result.output and "verified" in result.output


def test_datasets_download_without_network_fails_in_one_line() -> None:
    assert_one_line_error(invoke("datasets", "download", "mnist"), code=1, text="could not download")


def test_datasets_download_unknown_name() -> None:
    assert_one_line_error(invoke("datasets", "download", "cifar"), code=2, text="cannot download 'cifar'")


def test_the_installed_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "GPUNET_MIRRORS": "http://127.0.0.1:9/"}
    proc = subprocess.run(
        [sys.executable, "-m", "gpunet", "train", "--dataset", "mnist", "--offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_stops_between_steps_and_keeps_the_history(tmp_path: Path, signum: int, code: int, name: str) -> None:
    summary_path = tmp_path / "run.json"
    args = ["train", *QUICK, "--iterations", "1000000", "--eval-every", "5", "--json", str(summary_path)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpunet", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in proc.stdout:
        if line.startswith("step") and not line.split()[1].startswith("0/"):
            break  # the loop is running
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {name} after step ")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "Interrupted" and summary["history"][-1]["iteration"] >= 5


def test_doctor_passes_on_the_real_model() -> None:
    result = invoke("doctor", "--dataset", "synthetic", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("PASS") for line in result.output.splitlines()) == 8
    assert "8 checks: 8 passed" in result.output


def test_history_csv_and_curves_are_written(tmp_path: Path) -> None:
    history, curves = tmp_path / "h.csv", tmp_path / "c.png"
    result = invoke("train", *QUICK, "--history", str(history), "--plot", str(curves))
    assert result.exit_code == 0, result.output
    rows = history.read_text().splitlines()
    assert rows[0] == "iteration,loss,train_accuracy,test_accuracy"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [0, 10, 20]
    assert float(rows[1].split(",")[1]) == pytest.approx(math.log(10), abs=0.05)
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"history written to {history}" in result.output and f"curves written to {curves}" in result.output


def test_plot_without_matplotlib_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpunet.bench import plots
    from gpunet.errors import ConfigError

    def missing():
        raise ConfigError("--plot needs matplotlib: pip install 'gpunet[bench]'")

    monkeypatch.setattr(plots, "_pyplot", missing)
    result = invoke("train", *QUICK, "--plot", str(tmp_path / "c.png"))
    line = assert_one_line_error(result, code=2, text="needs matplotlib")
    assert "step" not in result.stdout and line


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--engine", "dask", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--engine", "dask", "--workers", "100"], "cores: a local cluster of more than"),
        (["--workers", "3"], "--workers is for --engine dask"),
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler is for --engine dask"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers sizes a local"),
        (["--engine", "spark"], "unknown engine 'spark'"),
        (["--engine", "dask", "--batch-size", "100"], "full batch"),
        (["--engine", "dask", "--dataset", "synthetic"], "use mnist or fashion-mnist"),
        (["--hidden", "99999999999999999999999"], "alone need 1,27"),
        (["--hidden", "100000000", "--optimizer", "gd"], "need 636 GB, more than the"),
        (["--no-save", "--checkpoint-every", "5"], "--no-save keeps no model file"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_options_are_refused_with_exit_2_before_any_data_is_read(args: list[str], text: str) -> None:
    """MNIST is nowhere here (and --offline): an option checked after loading would fail with exit 1."""
    result = invoke("train", "--dataset", "mnist", "--offline", "--device", "cpu", *args)
    assert_one_line_error(result, code=2, text=text)


def test_bench_refuses_options_of_the_other_engine() -> None:
    assert_one_line_error(invoke("bench", "--dask-samples", "100"), code=2, text="--dask-samples is for --engine dask")
    line = invoke("bench", "--engine", "dask", "--backends", "numpy", "--dataset", "mnist", "--offline")
    assert_one_line_error(line, code=2, text="--backends is for --engine local")


def test_predict_refuses_top_below_1(tmp_path: Path) -> None:
    assert_one_line_error(invoke("predict", str(tmp_path / "m.npz"), "x.png", "--top", "0"), code=2, text="--top")


def test_a_path_the_output_encoding_cannot_show_is_escaped_after_a_successful_run(tmp_path: Path) -> None:
    """A non-UTF-8 directory name and a strict UTF-8 output: the run's last lines print it escaped."""
    folder = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpunet",
            "train",
            *QUICK,
            "--json",
            f"{folder}/run.json",
            "--checkpoint",
            f"{folder}/c.npz",
        ],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert b"summary written to " + bytes(tmp_path) + b"/caf\\udce9/run.json" in proc.stdout
    assert json.loads(Path(folder, "run.json").read_text())["status"] == "completed"


def test_json_holds_null_not_nan_when_the_run_diverges(tmp_path: Path) -> None:
    out = tmp_path / "diverged.json"
    assert_one_line_error(invoke("train", *QUICK, "--optimizer", "gd", "--lr", "1e30", "--json", str(out)), code=3)
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert summary["history"][-1]["loss"] is None or math.isfinite(summary["history"][-1]["loss"])


def test_datasets_with_a_data_dir_too_long_is_one_line_per_dataset(tmp_path: Path) -> None:
    long = "/".join(["d" * 200] * 30)
    result = invoke("datasets", "--data-dir", long)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("the path is too long") == 2
    assert "2 of 2 datasets have a problem" in result.output
    assert all(len(line) < 400 for line in result.output.splitlines())


def test_train_with_a_missing_data_dir_uses_no_other_copy() -> None:
    """Fashion-MNIST is installed here, yet a --data-dir without it is refused, not passed over."""
    result = invoke("train", "--dataset", "fashion-mnist", "--data-dir", "/no/such/dir", "--device", "cpu")
    assert_one_line_error(result, code=1, text="--data-dir /no/such/dir: no such directory")


def test_version() -> None:
    from gpunet import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"gpunet {__version__}"


def test_help_states_each_optimizer_rule_and_the_one_default_lr() -> None:
    text = " ".join(invoke("train", "--help").output.split())
    text = text.replace("│", "").replace(" ", "")  # rich wraps the help in a box
    for rule in ("p-=lr*g", "v=0.9*v+g", "0.999*v", "+1e-8", "afterthebiascorrection", "onedefaultforallthree"):
        assert rule in text, rule
    assert "0.005" in text


@pytest.mark.parametrize(
    "args",
    [
        ["doctor", "--hidden", "100000000000"],
        ["bench", "--hidden", "100000000000"],
        ["bench", "--engine", "dask", "--dask-samples", "1000000000000"],
    ],
    ids=" ".join,
)
def test_sizes_that_would_need_terabytes_are_refused_before_any_data_is_read(args: list[str]) -> None:
    result = invoke(*args, "--dataset", "mnist", "--offline")
    line = assert_one_line_error(result, code=2, text=" PB")
    assert "more than the" in line and "of memory" in line
