"""Mutation testing by hand (too slow for CI); see mutation/README.md.

Each module below gets small bugs put into it one at a time (mutmut), and each
mutant is run against the tests that reach the mutated function, chosen from
that module's own short list of test files (slow and gpu tests left out); a
mutant no test notices "survives".

    python mutation/run.py                 every module, one after the other
    python mutation/run.py flat model      only these

It mutates a copy of the commit checked out when it starts (HEAD), one folder per module under
$MUTATION_DIR (default: a new temporary folder), never this checkout, at low
priority (nice 15) with $MUTATION_JOBS parallel children (default 2), and
writes <module>/results.txt (every mutant and its fate) and a summary line per
module to summary.txt there. Needs the `mutation` extra: pip install -e '.[dev,mutation]'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests that can notice a bug in each module: fast ones, enough to reach every function.
TESTS = {
    "core/flat": ["tests/test_flat.py", "tests/test_optimizers.py"],
    "files/outputs": [
        "tests/test_files.py",
        "tests/test_durability.py",
        "tests/test_checkpoint.py",
        "tests/test_run_end.py",
    ],
    "core/optimizers": ["tests/test_optimizers.py", "tests/test_checkpoint.py"],
    "data/idx": ["tests/test_idx.py"],  # test_data.py reads the real Fashion-MNIST: minutes per mutant
    "core/model": [
        "tests/test_model.py",
        "tests/test_engine.py",
        "tests/test_train.py",
        "tests/test_evaluate_predict.py",
    ],
    "training/checkpoint": ["tests/test_checkpoint.py", "tests/test_evaluate_predict.py"],
    "training/engine": ["tests/test_engine.py", "tests/test_train.py"],
    "data/datasets": ["tests/test_data.py", "tests/test_download.py"],
    "data/download": ["tests/test_download.py", "tests/test_data.py"],
    # What a file holds, named from its first bytes: reached through every loader.
    "files/inputs": ["tests/test_inputs.py", "tests/test_checkpoint.py", "tests/test_data.py"],
    "training/train": ["tests/test_train.py", "tests/test_checkpoint.py", "tests/test_not_learning.py"],
    "bench/suite": ["tests/test_bench.py"],
    # Signals sent to this process (test_signals.py), and to real training runs (test_run_end.py).
    "files/signals": ["tests/test_signals.py", "tests/test_run_end.py"],
}


def mutmut_table(module: str) -> str:
    selection = ", ".join(f'"{t}"' for t in TESTS[module])
    return (
        "[tool.mutmut]\n"
        'source_paths = ["gpunet/"]\n'
        f'only_mutate = ["gpunet/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        'pytest_add_cli_args = ["-m", "not slow and not gpu", "-p", "no:cacheprovider", "-x", "-q"]\n'
    )


def run_module(module: str, root: Path, jobs: str, commit: str) -> str:
    work = root / module
    work.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    start = text.index("[tool.mutmut]")
    end = text.find("\n[", start + 1)  # the table ends where the next one begins
    pyproject.write_text(text[:start] + mutmut_table(module) + ("" if end < 0 else text[end:]))
    began = time.time()
    mutmut = [sys.executable, "-m", "mutmut"]
    # mutmut forks a child per mutant from a process that has run the tests once; an OpenMP thread
    # pool (torch's, in the bench tests) does not survive a fork and hangs the child. One thread: no pool.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(work / "run.log", "w") as log:
        run = ["nice", "-n", "15", *mutmut, "run", "--max-children", jobs]
        subprocess.run(run, cwd=work, stdout=log, stderr=log, env=env)
    results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    lines = [line.strip() for line in results.splitlines() if line.strip().startswith("gpunet.")]
    (work / "results.txt").write_text("\n".join(lines) + "\n")
    killed = sum(line.endswith(": killed") for line in lines)
    summary = f"{module}: {killed} of {len(lines)} killed in {time.time() - began:.0f} s"
    return "\n".join([summary, *(f"    {line}" for line in lines if not line.endswith(": killed"))])


def main() -> None:
    modules = sys.argv[1:] or list(TESTS)
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        sys.exit(f"unknown module {', '.join(unknown)}: choose from {', '.join(TESTS)}")
    root = Path(os.environ.get("MUTATION_DIR") or tempfile.mkdtemp(prefix="gpunet-mutation-"))
    root.mkdir(parents=True, exist_ok=True)
    jobs = os.environ.get("MUTATION_JOBS", "2")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    version = subprocess.run([sys.executable, "-m", "mutmut", "--version"], capture_output=True, text=True).stdout
    header = f"commit {commit.strip()}, {version.strip()}, in {root}"
    print(header, flush=True)
    with open(root / "summary.txt", "a") as summary:
        summary.write(header + "\n")
        for module in modules:
            report = run_module(module, root, jobs, commit.strip())
            print(report, flush=True)
            summary.write(report + "\n")
            summary.flush()


if __name__ == "__main__":
    main()
