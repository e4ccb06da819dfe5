"""The errors gpunet reports to a user as one line, without a traceback."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from gpunet.files import signals

_CHECKOUT = Path(__file__).resolve().parent.parent  # where setup.sh is, when gpunet runs from its source


def program() -> str:
    """How a hint names gpunet: `gpunet` where that is on PATH, else as it was typed (.venv/bin/gpunet).

    Anything else running (python -m gpunet, a Python script using the API) is told `gpunet`.
    """
    typed = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("gpunet")
    on_path = shutil.which("gpunet")
    if typed.name != "gpunet" or (on_path and typed.resolve() == Path(on_path).resolve()):
        return "gpunet"
    return str(typed)


def install_hint(setup_option: str, pip_spec: str) -> str:
    """How to install what is missing: the README's `./setup.sh OPTION` where gpunet runs from a
    checkout (setup.sh beside the package; its path as seen from here), else `pip install 'SPEC'`."""
    setup = _CHECKOUT / "setup.sh"
    if not (setup.is_file() and (_CHECKOUT / "pyproject.toml").is_file()):
        return f"pip install '{pip_spec}'"
    try:
        here = Path.cwd().resolve() == _CHECKOUT
    except OSError:  # a working directory that is gone
        here = False
    return f"{'./setup.sh' if here else setup} {setup_option}"


class GpunetError(Exception):
    """Something the user can fix: bad data, a missing device, a diverging run."""

    exit_code = 1
    result: object = None  # what a training run had done when it stopped, if anything
    hint: str = ""  # what to do next, added by whoever knows (a checkpoint's path, say)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; {self.hint}" if self.hint else text

    def for_flags(self) -> str:
        """The message as the command line shows it: settings named by their flags (`--lr`), not
        by their Python names (`lr`). The same text for every error that names no setting."""
        return str(self)


class ConvergenceWarning(UserWarning):
    """A fit that ended with finite losses but did not learn: the model is kept, and may be poor.

    gpunet's own class (scikit-learn is not a dependency), named and used as scikit-learn's
    sklearn.exceptions.ConvergenceWarning is; filter either one by its own name.
    """


# Characters that act on a terminal instead of showing: C0 and C1 controls, DEL, and the
# bidirectional overrides that reorder what follows them on screen.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """Text that came from outside (a label, a file name) as it can be shown: each control
    character written as its escape (ESC as \\x1b, a newline as \\n), so it can neither
    drive the terminal nor break a one-line message."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], str(text))


def shown(path: object) -> str:
    """A path as a message shows it: one of thousands of characters keeps its two ends."""
    text = printable(path)
    if len(text) <= 300:
        return text
    return f"{text[:100]}…{text[-100:]} ({len(text):,} characters)"


class DatasetError(GpunetError):
    """A data file is missing, corrupt, truncated, mislabelled or cannot be fetched."""

    def __init__(self, reason: str, path: object = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{shown(path)}: {reason}" if path is not None else reason)


class ValuesOutOfRange(DatasetError, ValueError):
    """Input values the training dtype cannot hold (they would become infinite); a ValueError for Python callers."""


class DatasetMissing(DatasetError):
    """The dataset is nowhere to be found and could not be downloaded."""


class ForeignFile(DatasetError):
    """A file of another known dataset stands where this dataset's file was expected."""


class DeviceError(GpunetError):
    """The requested device cannot run: no cupy, no GPU, an old driver, a bad index."""


class ConfigError(GpunetError, ValueError):
    """An option value that makes no sense (hidden size 0, a NaN learning rate, ...).

    A ValueError too, as Python callers of the estimator expect of a bad argument.
    """

    exit_code = 2


class OutputRefused(ConfigError):
    """An output path that cannot be used: it would destroy an input, another output or a non-file."""


class OutputInUse(GpunetError):
    """Another running gpunet process is writing the same output."""


class WriteFailed(GpunetError):
    """An output could not be written; whatever was at its path before is intact."""

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {shown(path)}: {reason}")


class DivergedError(GpunetError):
    """The loss became NaN or infinite."""

    exit_code = 3

    def __init__(self, step: int, loss: float, lr: float) -> None:
        self.step = step
        self.loss = loss
        super().__init__(
            f"training diverged: the loss became {loss} at step {step}; try a lower learning rate than {lr:g}"
        )


class NotLearning(GpunetError):
    """Training finished with finite losses but did not learn (see gpunet.training.train.learning_failure).

    `what` says how the run went; `lr` is the learning rate to try instead. str() names it as Python
    does (lr=0.5), for_flags() as the command line does (--lr 0.5).
    """

    exit_code = 3

    def __init__(self, what: str, lr: float) -> None:
        self.what, self.lr = what, lr
        super().__init__(self._worded(f"lr={lr:g}", "gpunet.training.doctor.run_checks"))

    def for_flags(self) -> str:
        text = self._worded(f"--lr {self.lr:g}", "gpunet doctor")
        return f"{text}; {self.hint}" if self.hint else text

    def _worded(self, lr: str, doctor: str) -> str:
        advice = f"try a lower learning rate, such as {lr} ({doctor} checks the network itself)"
        return f"not learning: {self.what}; {advice}"


class StepFailed(GpunetError):
    """A step could not be computed (a distributed engine lost what it needed); no update was applied."""


class Interrupted(GpunetError):
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP stopped training between two steps."""

    def __init__(self, step: int, signum: int = 2) -> None:
        self.step = step
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        super().__init__(f"interrupted by {signals.name(signum)} after step {step}")
