"""benchmarks/gpu_check.sh, the GPU verification run, exercised on the CPU with a stand-in for its Python.

The stand-in runs everything as the real interpreter would, except what needs a GPU: its `pytest`
records how it was called and reports a pass, `gpunet train --device cuda` never ends (so the time
cap must stop it), and the rest of gpunet and the version probe answer at once. With a small BUDGET the run must mark
the stopped training CUT OFF and the steps the budget no longer allows SKIPPED, record the TF32
and CUDA settings, and leave at most the 8 files the device tool brings back. The pytest call it
made is then collected for real with the CPU-only test tools made unimportable, as on the GPU
machine's image: it must find every gpu test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FASHION_DIR

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEP = [sys.executable, "benchmarks/gpu_step.py"]
CPU_ONLY_TOOLS = ("array_api_strict", "hypothesis", "PIL", "sklearn")

STAND_IN = """#!/usr/bin/env bash
echo "GPUNET_REQUIRE_GPU=${{GPUNET_REQUIRE_GPU:-}} $*" >>"{log}"
case "$1 $2 $3" in
  "-m pytest "*) echo "33 passed in 0.01s"; exit 0 ;;
  "-m gpunet train") case "$*" in *"--device cuda"*) exec sleep 600 ;; esac; echo "trained"; exit 0 ;;
  "-m gpunet "*) echo "gpunet $3 answered"; exit 0 ;;
  "-c "*) echo "versions (stand-in)"; exit 0 ;;
esac
if [ "$*" = "-" ]; then  # the environment probe: without torch, whose import takes seconds
  exec "{python}" -c 'import sys; sys.modules["torch"] = None; exec(sys.stdin.read())'
fi
exec "{python}" "$@"
"""

# Python as on an image without the CPU-only test tools: importing one fails as if not installed.
WITHOUT_CPU_TOOLS = f"""
import sys
LACKING = {CPU_ONLY_TOOLS!r}
class Lacking:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in LACKING:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Lacking())
import pytest
sys.exit(pytest.main(["-p", "no:hypothesispytest", *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run of the script with the stand-in and a 24 s budget (9 s for the steps, less the probes)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    log = tmp / "calls.log"
    stand_in = tmp / "python"
    stand_in.write_text(STAND_IN.format(log=log, python=sys.executable))
    stand_in.chmod(0o755)
    out = tmp / "out"
    env = {
        **os.environ,
        "PYTHON": str(stand_in),
        "BUDGET": "24",
        "CUPY_TF32": "1",
        "NVIDIA_TF32_OVERRIDE": "0",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), FASHION_DIR, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {"done": done, "out": out, "calls": log.read_text().splitlines()}


def test_it_finishes_with_a_summary(run: dict) -> None:
    assert run["done"].returncode == 0, run["done"].stderr
    assert (run["out"] / "summary.txt").read_text() in run["done"].stdout


def test_a_training_stopped_by_its_cap_is_cut_off_and_later_steps_skipped(run: dict) -> None:
    summary = (run["out"] / "summary.txt").read_text()
    assert re.search(
        r"^train-cuda: CUT OFF after \d+ s, by its \d+ \(what the budget left of its 40\) s cap", summary, re.M
    )
    for name in ("train-cpu", "gpu-step", "bench"):
        assert f"{name}: SKIPPED" in summary
    assert "train cuda" not in summary  # no result line, as a finished run would have
    assert "pytest -m gpu: 33 passed in 0.01s [done]" in summary
    log = (run["out"] / "log.txt").read_text()
    assert re.search(r"== train-cuda\n(.*\n)*CUT OFF: stopped by its time cap, \d+ \(what the budget left", log)
    steps = json.loads((run["out"] / "results.json").read_text())["steps"]
    assert {name: s["state"] for name, s in steps.items()} == {
        "devices": "done",
        "pytest-gpu": "done",
        "train-cuda": "CUT OFF",
        "train-cpu": "SKIPPED",
        "gpu-step": "SKIPPED",
        "bench": "SKIPPED",
    }


def test_tf32_and_cuda_settings_are_recorded(run: dict) -> None:
    environment = (run["out"] / "environment.txt").read_text()
    summary = (run["out"] / "summary.txt").read_text()
    for line in ("setting CUPY_TF32=1", "setting NVIDIA_TF32_OVERRIDE=0", "setting CUDA_VISIBLE_DEVICES=0"):
        assert line in environment and line in summary
    assert "setting torch: not importable" in environment  # the stand-in hides torch; on the GPU its switches


def test_it_leaves_what_the_device_tool_brings_back(run: dict) -> None:
    # At most 8 files, named in letters, digits, '.', '_' and '-' (the device tool's limits).
    files = sorted(p.name for p in run["out"].rglob("*"))
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    assert all((run["out"] / f).is_file() for f in files)


def test_the_caps_fit_one_device_call() -> None:
    # Every cap the script sets, added up, with the summary's reserve, fits the default budget of 540 s
    # (the device tool's 600 s per command, less a minute for the start and the transfers).
    text = SCRIPT.read_text()
    caps = [int(n) for n in re.findall(r"^\s*(?:limited|step \S+) (\d+) ", text, re.M)]
    reserve = int(re.search(r"^summary_reserve=(\d+)", text, re.M).group(1))
    budget = int(re.search(r"budget=\$\{BUDGET:-(\d+)\}", text).group(1))
    assert len(caps) >= 9 and budget == 540
    assert sum(caps) + reserve <= budget, f"caps {caps} = {sum(caps)} s + {reserve} s > {budget} s"


def collected(python_args: list[str]) -> set[str]:
    done = subprocess.run(python_args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_its_pytest_call_collects_every_gpu_test_without_the_cpu_only_tools(run: dict, tmp_path: Path) -> None:
    (call,) = [c for c in run["calls"] if " -m pytest " in f" {c.split(' ', 1)[1]} "]
    required, args = call.split(" ", 1)
    assert required == "GPUNET_REQUIRE_GPU=1"  # there, a gpu test fails rather than skips without cuda
    words = args.split()
    assert words[:2] == ["-m", "pytest"] and words[-1] == "tests"  # by marker, over the whole folder
    lacking = tmp_path / "lacking.py"
    lacking.write_text(WITHOUT_CPU_TOOLS)
    on_the_image = collected([sys.executable, str(lacking), *words[2:], "--collect-only"])
    everywhere = collected(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "--collect-only", "-p", "no:cacheprovider", "tests"]
    )
    assert on_the_image == everywhere
    assert {
        "tests/test_readme.py::test_python_blocks_run_as_written[gpu.md]",  # docs/gpu.md's cupy estimator example
        "tests/test_readme.py::test_documented_commands_run_as_written[gpu.md-block0]",  # its cuda commands
        "tests/test_gpu.py::test_minibatches_on_cuda_match_numpy",
    } <= everywhere
    assert len(everywhere) >= 33


def test_gpu_step_runs_dry_on_the_cpu(tmp_path: Path) -> None:
    record_path = tmp_path / "step.json"
    done = subprocess.run(
        [
            *STEP,
            "--device",
            "cpu",
            "--steps",
            "2",
            "--rounds",
            "1",
            "--data-dir",
            FASHION_DIR,
            "--json",
            str(record_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(record_path.read_text())
    assert set(record["first_step_ms"]) == set(record["later_warm_up_step_ms"]) == {"fused", "unfused"}
    kernels = record["kernels"]
    assert {"bias_relu", "softmax_cross_entropy", "adam_update"} <= set(kernels)
    for timed in kernels.values():  # each timed on arguments of the step's own layouts, listed
        assert timed["arguments"] and all(re.fullmatch(r"\(.*\) strides \(.*\)|float", a) for a in timed["arguments"])
