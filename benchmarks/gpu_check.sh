#!/usr/bin/env bash
# The GPU verification run, in one call on a lent GPU machine (no network there).
#   benchmarks/gpu_check.sh DATA_DIR OUT_DIR
# The exact call, with the device tool's `run` from the repository root here:
#   prepare (once, here):  mkdir -p .data && cp /usr/share/datasets/fashion-mnist/* .data/
#                          pip install --target .gpu-deps array-api-compat threadpoolctl array-api-strict
#   run:  command "benchmarks/gpu_check.sh .data $OUT", carry [".data", ".gpu-deps"], timeout_s 600
# (.data/ and .gpu-deps/ are git-ignored, so they travel only when carried; $OUT is the folder
# that comes back.) DATA_DIR holds Fashion-MNIST's four files; it is exported as $GPUNET_DATA,
# so the tests (tests/conftest.py) and gpunet read it there. The machine's own Python must have
# numpy, cupy, typer, rich, pytest and torch; gpunet's pure-Python dependencies that it lacks
# (array-api-compat, threadpoolctl) come from .gpu-deps/.
#
# Every gpu-marked test in tests/ runs (`pytest -m gpu tests`, collected by marker, no list kept
# here), with GPUNET_REQUIRE_GPU=1: a gpu test never skips here, a broken cuda fails them all.
# A test module that needs a CPU-only test tool the image lacks (hypothesis, array-api-strict,
# Pillow, scikit-learn) is left out of that run by tests/conftest.py and named at its end;
# tests/test_gpu_check.py holds that no gpu test is in such a module.
#
# Each step runs under a time cap, and all the caps fit in BUDGET seconds (540 by default, under
# the tool's 600 s per command; tests/test_gpu_check.py adds them up), so the summary is always
# written. A step stopped by its cap is CUT OFF (in its output and the summary, never shown like
# a finished one); a step the budget no longer allows is SKIPPED. The environment (GPU, versions,
# TF32 switches of CuPy, the driver and torch, every CUDA_*/CUPY_* variable) goes into
# environment.txt and the summary; the first fused step's time (the kernels' compile, into an
# empty cupy kernel cache) into the summary beside later steps'.
# OUT_DIR gets at most 8 files (what the device tool brings back): summary.txt, environment.txt,
# pytest-gpu.txt, log.txt (every other step's output), results.json (the steps' states and
# JSON records) and bench.png.
set -uo pipefail
data=${1:?usage: gpu_check.sh DATA_DIR OUT_DIR}
out=${2:?usage: gpu_check.sh DATA_DIR OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
data=$(cd "$data" && pwd) || { echo "gpu_check.sh: no data folder $1" >&2; exit 2; }
export GPUNET_DATA="$data"
export GPUNET_REQUIRE_GPU=1 # tests/conftest.py: a gpu test fails, never skips, where cuda does not work
export PYTHONPATH="$PWD:$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget=${BUDGET:-540}
summary_reserve=15 # seconds kept for the summary
parts="$out/parts" # the steps' own files, merged into the files above at the end
mkdir -p "$parts"
: >"$parts/steps.tsv"
cold_cache=$(mktemp -d) # an empty kernel cache: gpu_step.py's first step compiles for real

# limited CAP CMD...: CMD under `timeout`, for CAP seconds or what is left of the budget if less.
# Returns CMD's status; 124 when the cap stopped it (timeout's, also after the KILL: 137); 125
# when the budget is spent before it starts. Leaves the cap it gave in $last_cap.
last_cap=0
limited() {
  local cap=$1 left
  shift
  left=$((budget - summary_reserve - SECONDS))
  if [ "$left" -lt "$cap" ]; then cap=$left; fi
  last_cap=$cap
  if [ "$cap" -lt 5 ]; then
    echo "SKIPPED: the ${budget} s budget is spent ($*)"
    return 125
  fi
  timeout -k 5 "$cap" "$@"
}

# step NAME CAP CMD...: one step of the check, its output in parts/NAME.txt (and on the terminal),
# its state in parts/steps.tsv: done, failed (exit status), CUT OFF (stopped by its cap) or SKIPPED.
step() {
  local name=$1 cap=$2 start=$SECONDS rc state
  shift 2
  echo "== $name"
  limited "$cap" "$@" >"$parts/$name.txt" 2>&1
  rc=$?
  case $rc in
    0) state="done" ;;
    124 | 137) state="CUT OFF" ;;
    125) state="SKIPPED" ;;
    *) state="failed" ;;
  esac
  if [ "$last_cap" -lt "$cap" ]; then cap="$last_cap (what the budget left of its $cap)"; fi
  if [ "$state" = "CUT OFF" ]; then
    echo "CUT OFF: stopped by its time cap, $cap s, after $((SECONDS - start)) s; not a finished run" \
      >>"$parts/$name.txt"
  fi
  tail -4 "$parts/$name.txt"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$state" "$rc" "$((SECONDS - start))" "$cap" >>"$parts/steps.tsv"
}

echo "== environment"
{
  date -u +%FT%TZ
  limited 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  limited 20 "$py" -c 'import sys, numpy, cupy, typer; print(sys.version); print("numpy", numpy.__version__, "cupy", cupy.__version__, "typer", typer.__version__)' 2>&1
  # TF32 changes products' results beyond the 1e-4 agreement of the tests: every switch is recorded.
  limited 30 "$py" - <<'PY' 2>&1
import os
for name in ("CUPY_TF32", "NVIDIA_TF32_OVERRIDE"):
    print(f"setting {name}={os.environ.get(name, '(unset)')}")
for name in sorted(os.environ):
    if name.startswith(("CUDA_", "CUPY_")) and name != "CUPY_TF32":
        print(f"setting {name}={os.environ[name]}")
try:
    import torch
except ImportError as e:
    print(f"setting torch: not importable ({e})")
else:
    print("torch", torch.__version__, "cuda", torch.version.cuda)
    print(f"setting torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    print(f"setting torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")
    print(f"setting torch.get_float32_matmul_precision()={torch.get_float32_matmul_precision()}")
PY
} >"$out/environment.txt" 2>&1
cat "$out/environment.txt"

step devices 20 "$py" -m gpunet devices

# Every gpu test: the math on cupy, the README's cupy estimator example (X never reaches the host),
# the README block that trains on cuda with mini-batches, ...
step pytest-gpu 165 "$py" -m pytest -m gpu -q -rfEs -p no:cacheprovider tests
mv "$parts/pytest-gpu.txt" "$out/pytest-gpu.txt"

step train-cuda 40 "$py" -m gpunet train --dataset fashion-mnist --data-dir "$data" --offline --device cuda \
  --json "$parts/train-cuda.json"
step train-cpu 70 "$py" -m gpunet train --dataset fashion-mnist --data-dir "$data" --offline --device cpu \
  --json "$parts/train-cpu.json"

# Where a step's time goes (fused/unfused, host/device, per kernel, graph capture), and what the
# first compile costs: gpu_step.py gets an empty kernel cache of its own.
step gpu-step 60 env CUPY_CACHE_DIR="$cold_cache" "$py" benchmarks/gpu_step.py --data-dir "$data" \
  --json "$parts/gpu-step.json"

step bench 110 "$py" -m gpunet bench --dataset fashion-mnist --data-dir "$data" --offline \
  --backends numpy,cupy,torch-cuda --json "$parts/bench.json" --plot "$out/bench.png"

echo "== summary"
"$py" - "$out" <<'PY' | tee "$out/summary.txt"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
parts = out / "parts"
steps = {}
for line in (parts / "steps.tsv").read_text().splitlines():
    name, state, rc, seconds, cap = line.split("\t")
    steps[name] = {"state": state, "exit_code": int(rc), "seconds": int(seconds), "cap_s": cap}
records = {}
for name in ("train-cuda", "train-cpu", "gpu-step", "bench"):
    p = parts / f"{name}.json"
    if p.exists():
        try:
            records[name] = json.loads(p.read_text())
        except ValueError as e:
            records[name] = {"unreadable": str(e)}
env = (out / "environment.txt").read_text().splitlines()
for line in env:
    if line.startswith("setting "):
        print(line)
for name, s in steps.items():
    if s["state"] != "done":
        print(f"{name}: {s['state']}" + (f" (exit code {s['exit_code']})" if s["state"] == "failed" else "")
              + (f" after {s['seconds']} s, by its {s['cap_s']} s cap: not a finished run" if s["state"] == "CUT OFF" else ""))
p = out / "pytest-gpu.txt"
if p.exists():
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    words = (" passed", " failed", " error", " skipped", " deselected")
    tally = [line for line in lines if not line.startswith(("FAILED", "ERROR", "SKIPPED")) and any(w in line for w in words)]
    print("pytest -m gpu:", tally[-1] if tally else "(no tally)", f"[{steps['pytest-gpu']['state']}]")
    if any(" skipped" in line for line in tally[-1:]):
        print("pytest -m gpu: NOT OK, a gpu test skipped on a GPU machine")
    for line in lines:
        if line.startswith("not collected in this gpu-only run"):
            print("pytest -m gpu:", line)
for device in ("cuda", "cpu"):
    r, s = records.get(f"train-{device}"), steps.get(f"train-{device}", {})
    if r and "test_accuracy" in r:
        done = s.get("state") == "done" and r.get("status") == "completed"
        print(f"train {device:5s} {'finished' if done else s.get('state', '?') + ', NOT finished'} "
              f"(status {r.get('status', '?')}): test {r['test_accuracy']:.4f} train {r['train_accuracy']:.4f} "
              f"{r['train_seconds']:.2f} s")
step = records.get("gpu-step")
if step and "first_step_ms" in step:
    for variant, ms in step["first_step_ms"].items():
        print(f"gpu_step {variant:8s} first step {ms:.1f} ms (cold kernel cache: compiles), later warm-up steps "
              f"{step['later_warm_up_step_ms'][variant]:.3f} ms")
    for variant, r in step["ms_per_step"].items():
        print(f"gpu_step {variant:8s} synced {r['synced']:.3f} ms, queued {r['queued']:.3f} ms, host {r['host']:.3f} ms")
    if "graph_capture" in step:
        print(f"gpu_step graph capture: {step['graph_capture']}")
bench = records.get("bench")
if bench and "results" in bench:
    for r in bench["results"]:
        ttt = "-" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.3f} s"
        print(f"bench {r['backend']:10s} {r['ms_per_step_median']:9.3f} ms/step (floor {r['floor_ms']:.3f}, "
              f"x{r['x_floor']:.1f})  to target {ttt}  test {r['test_accuracy']:.4f}")
(out / "results.json").write_text(json.dumps({"steps": steps, "records": records}, indent=2) + "\n")
PY
# The device tool brings back 8 files at most: the steps' outputs go into one log.
for f in "$parts"/*.txt; do
  echo "== $(basename "$f" .txt)"
  cat "$f"
done >"$out/log.txt"
if [ -s "$out/results.json" ]; then rm -rf "$parts"; fi
rm -rf "$cold_cache"
