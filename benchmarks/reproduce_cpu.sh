#!/usr/bin/env bash
# Reproduces the recorded CPU results: seed-bug figures, the training runs the
# README quotes, and the side-by-side benchmark with its sweep and figures.
#   benchmarks/reproduce_cpu.sh [OUT_DIR]      (default: benchmarks/results)
# Run from the repository root with gpunet installed and on PATH (./setup.sh --dev --bench, which
# adds PyTorch's CPU build for the reference; then . .venv/bin/activate). Takes ~15 minutes on 2 cores.
# The two training runs also keep their models, in runs/.
set -euo pipefail
out=${1:-benchmarks/results}
day=$(date -u +%F)
mkdir -p "$out"

python benchmarks/chunk_rows.py --json "$out/$day-cpu-chunk-rows.json" | tee "$out/$day-cpu-chunk-rows.txt"
python benchmarks/cpu_bound.py --json "$out/$day-cpu-bound.json" | tee "$out/$day-cpu-bound.txt"
python benchmarks/seed_bugs.py --json "$out/$day-seed-bugs.json" | tee "$out/$day-seed-bugs.txt"
gpunet train --dataset fashion-mnist --device cpu --json "$out/$day-cpu-train-adam.json" | tee "$out/$day-cpu-train-adam.txt"
gpunet train --dataset fashion-mnist --device cpu --optimizer gd --lr 0.1 --iterations 500 \
  --json "$out/$day-cpu-train-gd.json" | tee "$out/$day-cpu-train-gd.txt"
gpunet bench --backends numpy,torch-cpu --sweep --json "$out/$day-cpu-bench.json" --plot "$out/$day-cpu-bench.png" \
  | tee "$out/$day-cpu-bench.txt"
