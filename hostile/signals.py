# ruff: noqa: E501  (the report's lines are long)
"""Stop signals at random moments, issue 20 class 3: 1, 2, 3 or 10 of SIGINT, SIGTERM and SIGHUP sent
to a real `gpunet train` (and to a Python fit), 0-10 ms apart, at a random moment of the run, while
training, inside a periodic checkpoint save, or while the outputs are written at the end.

Each run must end with no traceback and exactly one `error:` line that says what was kept, and what
it says must be true: "checkpoint written to c.npz" with the checkpoint holding the step the line
names; "the run had completed; its outputs are written" with the checkpoint of the last step and a
complete summary; or "nothing was written" with no checkpoint. A Python fit must end in a
KeyboardInterrupt that says the model was kept, and the model must predict.

    PYTHONPATH=$PWD .venv/bin/python hostile/signals.py [--out hostile/results/DATE-signals.md] [--seed N] [--runs N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STOP_IN_WRITE = str(ROOT / "tests" / "stop_in_write.py")
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
CODES = {129: "SIGHUP (terminal closed)", 130: "Ctrl-C", 143: "SIGTERM"}
TRAIN = ["train", "--dataset", "synthetic", "--device", "cpu", "--eval-every", "5"]
COUNTS = (1, 2, 3, 10)
MOMENTS = ("anytime", "training", "in a periodic save", "writing the outputs")


@dataclass
class Run:
    moment: str
    count: int
    sent: list[int] = field(default_factory=list)
    before_the_line: list[int] = field(default_factory=list)  # sent before its last line was printed
    rc: int | None = None
    outcome: str = ""
    problems: list[str] = field(default_factory=list)
    line: str = ""
    seconds: float = 0.0


def send(proc: subprocess.Popen, signums: list[int], rng: random.Random) -> list[int]:
    """The signals 0-10 ms apart (each gap drawn; a third of them 0). Returns those sent before the
    process had printed anything on stderr (its last line): only those can its last line say."""
    before_the_line = []
    for i, signum in enumerate(signums):
        if i:
            gap = 0.0 if rng.random() < 1 / 3 else rng.uniform(0, 0.010)
            if gap:
                time.sleep(gap)
        printed = proc.stderr is not None and bool(select.select([proc.stderr], [], [], 0)[0])
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            break
        if not printed:
            before_the_line.append(signum)
    return before_the_line


def wait_stopped(proc: subprocess.Popen, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            return os.WIFSTOPPED(status)
        time.sleep(0.01)
    return False


def checkpoint_step(path: Path) -> int | None:
    if not path.exists():
        return None
    probe = subprocess.run(
        [PY, "-c", f"from gpunet.training import checkpoint; print(checkpoint.load({str(path)!r}).step)"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return int(probe.stdout) if probe.returncode == 0 else -1


def judge(run: Run, proc: subprocess.Popen, stderr: str, d: Path, iterations: int) -> None:
    run.rc = proc.returncode
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    run.line = errors[-1] if errors else (lines[-1] if lines else "")
    if "Traceback" in stderr:
        run.problems.append("traceback")
    if run.rc is not None and run.rc < 0:
        run.problems.append(f"killed by signal {-run.rc} with nothing said")
        run.outcome = "killed, said nothing"
        return
    if len(lines) != 1 or len(errors) != 1:
        run.problems.append(f"{len(lines)} lines on stderr, {len(errors)} error lines")
    if run.rc not in CODES:
        run.problems.append(f"exit {run.rc}")
        return
    line = errors[-1] if errors else ""
    if not line.startswith(f"error: interrupted by {CODES[run.rc]}"):
        run.problems.append("the line does not name the signal of the exit code")
    step = checkpoint_step(d / "c.npz")
    summary = json.loads((d / "r.json").read_text()) if (d / "r.json").exists() else None
    # Signals that came after the last line was printed (a fast stop) are ignored by the exiting
    # process, so it cannot say them; those that came before it must be said when of another kind.
    distinct = len(set(run.before_the_line))
    if distinct > 1 and "arrived while stopping" not in line:
        run.problems.append("the signals after the first are not said")
    if "the run had completed; its outputs are written" in line:
        run.outcome = "completed, outputs written, said"
        if step != iterations or not summary or summary.get("status") != "completed":
            run.problems.append(
                f"says completed, but checkpoint step {step}, summary {summary and summary.get('status')}"
            )
    elif "checkpoint written to" in line:
        said = int(line.split("after step ")[1].split(";")[0])
        run.outcome = "stopped, last step saved, said"
        if step != said:
            run.problems.append(f"says step {said} saved, the checkpoint holds {step}")
        if "also written: " in line and (not summary or summary.get("status") != "Interrupted"):
            run.problems.append("says the summary was written, but it is not an Interrupted summary")
    elif "nothing was written" in line:
        run.outcome = "stopped before training, nothing written, said"
        if step is not None or summary is not None:
            run.problems.append("says nothing was written, but a file is there")
    else:
        run.outcome = "other"
        run.problems.append("the line does not say what was written")
    leftovers = [p.name for p in d.iterdir() if p.name.startswith(".")]
    if leftovers:
        run.problems.append(f"left behind: {leftovers}")


def one_cli_run(run: Run, d: Path, rng: random.Random) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(d / "cache"), "PYTHONPATH": str(ROOT)}
    iterations = 1_000_000
    outputs = ["--checkpoint", str(d / "c.npz"), "--json", str(d / "r.json")]
    if run.moment == "in a periodic save":
        cmd = [
            PY,
            STOP_IN_WRITE,
            "c.npz",
            *TRAIN,
            "--iterations",
            str(iterations),
            *outputs,
            "--checkpoint-every",
            str(rng.randint(3, 12)),
        ]
    elif run.moment == "writing the outputs":
        iterations = rng.randint(5, 30)
        cmd = [PY, STOP_IN_WRITE, "r.json", *TRAIN, "--iterations", str(iterations), *outputs]
    else:
        cmd = [PY, "-m", "gpunet", *TRAIN, "--iterations", str(iterations), *outputs]
        if run.moment == "anytime":
            cmd += ["--checkpoint-every", str(rng.randint(1, 20))]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=d)
    if run.moment in ("in a periodic save", "writing the outputs"):
        if not wait_stopped(proc):
            run.problems.append("never reached the write")
        run.before_the_line = send(proc, run.sent, rng)
        proc.send_signal(signal.SIGCONT)
    elif run.moment == "training":
        for line in proc.stdout:
            if line.startswith("step") and not line.split()[1].startswith("0/"):
                break
        time.sleep(rng.uniform(0, 0.5))
        run.before_the_line = send(proc, run.sent, rng)
    else:  # anytime after gpunet's handlers are up (the first line it prints), up to a few seconds into the run
        proc.stdout.readline()
        time.sleep(rng.uniform(0, 2.5))
        run.before_the_line = send(proc, run.sent, rng)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        run.problems.append("did not end within 180 s of the signals")
    run.seconds = round(time.monotonic() - start, 1)
    judge(run, proc, stderr, d, iterations)


FIT = """
import sys
import numpy as np
import gpunet
from gpunet.training import train
step = train.Trainer.step
def announced(self):
    step(self)
    if self.steps_done == 3:
        print("fitting", flush=True)
train.Trainer.step = announced
rng = np.random.default_rng(0)
X, y = rng.random((300, 8), dtype=np.float32), np.arange(300) % 3
clf = gpunet.MLPClassifier(hidden=(8,), iterations=1000000, eval_every=50, device="cpu")
try:
    clf.fit(X, y)
except KeyboardInterrupt as e:
    import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's choice: the rest of the burst is theirs
    print("KeyboardInterrupt:", e)
    print("predicts", len(clf.predict(X)))
"""


def one_fit_run(run: Run, d: Path, rng: random.Random) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.Popen([PY, "-c", FIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=d)
    proc.stdout.readline()
    time.sleep(rng.uniform(0, 0.3))
    send(proc, run.sent, rng)
    out, stderr = proc.communicate(timeout=180)
    run.seconds = round(time.monotonic() - start, 1)
    run.rc = proc.returncode
    lines = out.splitlines()
    run.line = lines[0] if lines else stderr.strip().splitlines()[-1:]
    if "Traceback" in stderr:
        run.problems.append("traceback")
    if (
        lines[:1]
        and lines[0].startswith("KeyboardInterrupt: training interrupted by Ctrl-C after step ")
        and lines[1:] == ["predicts 300"]
    ):
        run.outcome = "KeyboardInterrupt, model kept and said"
    else:
        run.outcome = "other"
        run.problems.append("not a KeyboardInterrupt that kept the model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as markdown here")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2, help="runs per (moment, count)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    runs = [Run(m, k) for _ in range(args.runs) for m in MOMENTS for k in COUNTS]
    runs += [Run("Python fit (Ctrl-C only)", k) for k in (1, 2, 3, 10)]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpunet-signals-") as tmp:
        for i, run in enumerate(runs, 1):
            d = Path(tmp) / f"run{i}"
            d.mkdir()
            if run.moment.startswith("Python"):
                run.sent = [signal.SIGINT] * run.count
                one_fit_run(run, d, rng)
            else:
                run.sent = [rng.choice(SIGNALS) for _ in range(run.count)]
                one_cli_run(run, d, rng)
            names = ",".join(signal.Signals(s).name[3:] for s in run.sent)
            print(f"{'PASS' if not run.problems else 'FAIL'} {i:>3} {run.moment}: {names} -> exit {run.rc}, {run.outcome} ({run.seconds} s)"
                  + (f": {'; '.join(run.problems)}" if run.problems else ""), flush=True)  # fmt: skip
    failed = [r for r in runs if r.problems]
    total_s = round(time.monotonic() - began)
    print(f"{len(runs)} runs in {total_s} s: {len(runs) - len(failed)} passed, {len(failed)} failed")
    if args.out:
        by = Counter((r.moment, r.outcome, "pass" if not r.problems else "FAIL") for r in runs)
        lines = [
            "# Stop signals at random moments, issue 20 class 3",
            "",
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {platform.node()}, {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
            f"- commit: {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}",
            f"- command: `PYTHONPATH=$PWD .venv/bin/python hostile/signals.py --seed {args.seed} --runs {args.runs} --out {args.out}` ({total_s} s)",
            "- each run: a fresh directory; `gpunet train --dataset synthetic --device cpu --checkpoint c.npz --json r.json`; "
            "1, 2, 3 or 10 signals drawn from SIGINT, SIGTERM, SIGHUP, 0-10 ms apart (a third of the gaps 0). Moments: "
            "*anytime* (0-2.5 s after the first line printed, with --checkpoint-every 1-20: data loading, the first "
            "evaluation, training, periodic saves); *training* (after a progress line); *in a periodic save* and "
            "*writing the outputs* (tests/stop_in_write.py stops the process inside the write of c.npz, or of r.json "
            "after a completed run, the signals are sent, then SIGCONT). Python fit: `MLPClassifier.fit` in `python -c`, "
            "Ctrl-C only. Passed: no traceback, exactly one `error:` line naming the signal of the exit code and what was "
            "written, the signals after the first said when of another kind (those sent before the last line was printed: a faster stop ignores the rest as it exits), and what the line says true (the checkpoint's "
            "step, the summary's status, no file when it says nothing was written, no temporary file left).",
            f"- result: {len(runs)} runs, {len(runs) - len(failed)} passed, {len(failed)} failed",
            "",
            "## Counts",
            "",
            "| moment | outcome | result | runs |",
            "|---|---|---|---|",
            *[f"| {m} | {o} | {p} | {n} |" for (m, o, p), n in sorted(by.items())],
            "",
            "## Runs",
            "",
            "| # | moment | signals sent | exit | result | last line |",
            "|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(runs, 1):
            names = ", ".join(signal.Signals(s).name for s in r.sent)
            verdict = "pass" if not r.problems else "FAIL: " + "; ".join(r.problems)
            last = str(r.line).replace("|", "\\|")
            lines.append(f"| {i} | {r.moment} | {names} | {r.rc} | {verdict} | {last} |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
