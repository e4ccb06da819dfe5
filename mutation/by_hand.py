"""The mutants mutmut cannot make: bugs in decorated functions, put in by hand.

mutmut 3 leaves every decorated function alone (its trampoline would sit
under the decorator), and here those are the fused math kernels (`@fusable`
in core/model.py and core/optimizers.py), the atomic writer and the Ctrl-C handler
(`@contextlib.contextmanager` in files/outputs.py and files/signals.py), and two properties. Each bug below is one
edit a developer could make; it is applied to a copy of HEAD and the module's
tests (mutation/run.py's list) are run against it.

    python mutation/by_hand.py              writes a line per mutant; exit 1 if any survives
    python mutation/by_hand.py files/signals    only the mutants of these modules
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, TESTS

# (module, the code as it is, the bug)
MUTANTS = [
    ("core/model", "return xp.maximum(z + b, 0.0)", "return xp.maximum(z - b, 0.0)"),
    ("core/model", "return xp.maximum(z + b, 0.0)", "return xp.maximum(z + b, 1.0)"),
    ("core/model", "return xp.maximum(z + b, 0.0)", "return xp.minimum(z + b, 0.0)"),
    ("core/model", "return delta * xp.sign(out)", "return delta"),
    ("core/model", "return delta * xp.sign(out)", "return delta * xp.abs(out)"),
    ("core/model", "return xp.sum(xp.exp(z - z_max), axis=0)", "return xp.sum(xp.exp(z + z_max), axis=0)"),
    ("core/model", "return xp.sum(xp.exp(z - z_max), axis=0)", "return xp.sum(xp.exp(z), axis=0)"),
    (
        "core/model",
        "return -xp.sum(targets * ((z - z_max) - xp.log(sum_e)))",
        "return xp.sum(targets * ((z - z_max) - xp.log(sum_e)))",
    ),
    (
        "core/model",
        "return -xp.sum(targets * ((z - z_max) - xp.log(sum_e)))",
        "return -xp.sum(targets * ((z - z_max) + xp.log(sum_e)))",
    ),
    (
        "core/model",
        "return -xp.sum(targets * ((z - z_max) - xp.log(sum_e)))",
        "return -xp.sum(targets * (z - xp.log(sum_e)))",
    ),
    (
        "core/model",
        "return xp.exp((z - z_max) - xp.log(sum_e)) - targets",
        "return xp.exp((z - z_max) - xp.log(sum_e)) + targets",
    ),
    (
        "core/model",
        "return xp.exp((z - z_max) - xp.log(sum_e)) - targets",
        "return xp.exp(z - xp.log(sum_e)) - targets",
    ),
    (
        "core/model",
        "return xp.exp((z - z_max) - xp.log(sum_e)) - targets",
        "return xp.exp((z - z_max) / sum_e) - targets",
    ),
    ("core/optimizers", "    p -= lr * g\n", "    p += lr * g\n"),
    ("core/optimizers", "    p -= lr * g\n", "    p -= g\n"),
    ("core/optimizers", "    v *= beta\n", "    v *= 1 - beta\n"),
    ("core/optimizers", "    v += g\n    p -= lr * v", "    v += g\n    p -= lr * g"),
    ("core/optimizers", "    m *= beta1\n", "    m *= beta2\n"),
    ("core/optimizers", "    v *= beta2\n", "    v *= beta1\n"),
    ("core/optimizers", "(g * g)", "g"),
    ("core/optimizers", "xp.sqrt(v) * v_scale + eps", "xp.sqrt(v) * v_scale"),
    ("core/optimizers", "xp.sqrt(v) * v_scale + eps", "xp.sqrt(v + eps) * v_scale"),
    ("core/optimizers", "xp.sqrt(v) * v_scale + eps", "v * v_scale + eps"),
    ("files/outputs", "            f.flush()\n", ""),
    ("files/outputs", "            os.fsync(f.fileno())\n", ""),
    ("files/outputs", "0o666 & ~UMASK", "0o666"),
    ("files/outputs", "0o666 & ~UMASK", "0o600"),
    ("files/outputs", "        Path(tmp).unlink(missing_ok=True)\n", "        pass\n"),
    # properties, which mutmut leaves alone like any decorated function
    ("core/flat", "return sum(prod(s) for s in self.shapes)", "return sum(len(s) for s in self.shapes)"),
    ("training/train", "        return self.history[-1]\n", "        return self.history[0]\n"),
    # signals.py: the handlers for Ctrl-C, SIGTERM and SIGHUP (contextmanagers, and a constant set at import)
    ("files/signals", "(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)", "(signal.SIGINT, signal.SIGTERM)"),
    ("files/signals", "                signal.signal(s, handler)\n", "                pass\n"),
    ("files/signals", "        _state.deferring += 1\n", "        pass\n"),
    ("files/signals", "            signal.raise_signal(pending[0])", "            pass"),
    ("files/signals", "            _act(pending[0])", "            pass"),
    ("files/signals", "    _state.requests = requested\n", "    pass\n"),
    ("files/signals", "        _state.requests = outer\n", "        _state.requests = None\n"),
]


def run_one(module: str, before: str, after: str) -> str:
    with tempfile.TemporaryDirectory(prefix="gpunet-by-hand-") as work:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
        source = Path(work, "gpunet", f"{module}.py")
        text = source.read_text()
        if text.count(before) != 1:
            return "no longer applies"
        source.write_text(text.replace(before, after))
        tests = ["-m", "not slow and not gpu", "-x", "-q", "-p", "no:cacheprovider", *TESTS[module]]
        done = subprocess.run(
            ["nice", "-n", "15", sys.executable, "-m", "pytest", *tests], cwd=work, capture_output=True
        )
        return "survived" if done.returncode == 0 else "killed"


def main() -> None:
    chosen = [m for m in MUTANTS if not sys.argv[1:] or m[0] in sys.argv[1:]]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    print(f"commit {commit.strip()}: {len(chosen)} mutants by hand", flush=True)
    fates = []
    for module, before, after in chosen:
        fate = run_one(module, before, after)
        fates.append(fate)
        print(f"{fate:>17}  {module}.py: {before.strip()!r} -> {after.strip()!r}", flush=True)
    print(f"{fates.count('killed')} of {len(chosen)} killed, {fates.count('no longer applies')} no longer apply")
    sys.exit(1 if "survived" in fates else 0)  # one that no longer applies needs its line updated, not a test


if __name__ == "__main__":
    main()
