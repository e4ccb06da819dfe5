#!/usr/bin/env bash
# The GPU verification run, in one call on a lent GPU machine (no network there).
#   benchmarks/gpu_check.sh DATA_DIR OUT_DIR
# The exact call, with the device tool's `run` from the repository root here:
#   prepare (once, here):  mkdir -p .data && cp /usr/share/datasets/fashion-mnist/* .data/
#                          pip install --target .gpu-deps array-api-compat threadpoolctl
#   run:  command "benchmarks/gpu_check.sh .data $OUT", carry [".data", ".gpu-deps"], timeout_s 600
# (.data/ and .gpu-deps/ are git-ignored, so they travel only when carried; $OUT is the folder
# that comes back.) DATA_DIR holds Fashion-MNIST's four files; it is exported as $GPUNET_DATA,
# so the tests (tests/conftest.py) and gpunet read it there. The machine's own Python must have
# numpy, cupy, typer, rich, pytest and torch; gpunet's pure-Python dependencies that it lacks
# (array-api-compat, threadpoolctl) come from .gpu-deps/. Only the test files that hold
# gpu-marked tests are collected, so the CPU-only test tools (hypothesis, array-api-strict,
# Pillow) are not needed there.
# Writes logs, JSON and figures to OUT_DIR, ending with a summary. Every step has a time limit
# and all of them fit in BUDGET seconds (540 by default, under the tool's 600 s per command),
# so the summary is always written.
set -uo pipefail
data=${1:?usage: gpu_check.sh DATA_DIR OUT_DIR}
out=${2:?usage: gpu_check.sh DATA_DIR OUT_DIR}
mkdir -p "$out"
data=$(cd "$data" && pwd) || { echo "gpu_check.sh: no data folder $1" >&2; exit 2; }
export GPUNET_DATA="$data"
export PYTHONPATH="$PWD:$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
budget=${BUDGET:-540}
summary_reserve=15  # seconds kept for the summary
step() { echo "== $1"; }
# limited CAP CMD...: CMD under `timeout`, for CAP seconds or what is left of the budget if less.
limited() {
  local cap=$1 left
  shift
  left=$((budget - summary_reserve - SECONDS))
  if [ "$left" -lt "$cap" ]; then cap=$left; fi
  if [ "$cap" -lt 5 ]; then
    echo "skipped: the ${budget} s budget is spent ($*)"
    return 124
  fi
  timeout -k 5 "$cap" "$@"
}

step "environment"
{
  date -u +%FT%TZ
  limited 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  limited 20 "$py" -c 'import sys, numpy, cupy, typer; print(sys.version); print("numpy", numpy.__version__, "cupy", cupy.__version__, "typer", typer.__version__)'
  limited 20 "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

step "gpunet devices"
limited 30 "$py" -m gpunet devices 2>&1 | tee "$out/devices.txt"

step "pytest -m gpu"
gpu_tests="tests/test_gpu.py tests/test_model.py tests/test_optimizers.py tests/test_engine.py tests/test_backend.py tests/test_flat.py"
# shellcheck disable=SC2086
limited 150 "$py" -m pytest -m gpu -q -p no:cacheprovider $gpu_tests > "$out/pytest-gpu.txt" 2>&1
echo "pytest exit code $?" | tee -a "$out/pytest-gpu.txt"
tail -3 "$out/pytest-gpu.txt"

for device in cuda cpu; do
  step "gpunet train --device $device"
  limited 70 "$py" -m gpunet train --dataset fashion-mnist --data-dir "$data" --offline --device "$device" \
    --json "$out/train-$device.json" 2>&1 | tail -2 | tee "$out/train-$device.txt"
done

step "where a step's time goes (fused/unfused, host/device, graph capture)"
limited 60 "$py" benchmarks/gpu_step.py --data-dir "$data" --json "$out/gpu-step.json" 2>&1 | tee "$out/gpu-step.txt"

step "gpunet bench"
limited 130 "$py" -m gpunet bench --dataset fashion-mnist --data-dir "$data" --offline \
  --backends numpy,cupy,torch-cuda --json "$out/bench.json" --plot "$out/bench.png" 2>&1 | tee "$out/bench.txt"

step "summary"
"$py" - "$out" <<'PY' | tee "$out/summary.txt"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
p = out / "pytest-gpu.txt"
if p.exists():
    print("pytest -m gpu:", " | ".join(line for line in p.read_text().splitlines()[-2:] if line.strip()))
for device in ("cuda", "cpu"):
    p = out / f"train-{device}.json"
    if p.exists():
        r = json.loads(p.read_text())
        print(f"train {device:5s} test {r['test_accuracy']:.4f} train {r['train_accuracy']:.4f} {r['train_seconds']:.2f} s")
p = out / "bench.json"
if p.exists():
    for r in json.loads(p.read_text())["results"]:
        ttt = "-" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.3f} s"
        print(f"bench {r['backend']:10s} {r['ms_per_step_median']:9.3f} ms/step (floor {r['floor_ms']:.3f}, "
              f"x{r['x_floor']:.1f})  to target {ttt}  test {r['test_accuracy']:.4f}")
PY
