"""What the user sees while things run: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gpunet.data.download import Progress as ByteProgress
from gpunet.errors import printable
from gpunet.training.train import Record


def format_record(r: Record, width: str = "compact") -> str:
    """The metrics of one evaluation: the loss is the training set's, as the optimizer sees it.

    `width`: "full" (69 columns), "compact" (51: what a plain line and an 80-column bar show) or
    "short" (38: for a bar whose label is long).
    """
    if width == "full":
        return f"training loss {r.loss:.4f}  train accuracy {r.train_accuracy:.4f}  test accuracy {r.test_accuracy:.4f}"
    if width == "short":
        return f"loss {r.loss:.4f}  train {r.train_accuracy:.4f}  test {r.test_accuracy:.4f}"
    return f"training loss {r.loss:.4f}  train acc {r.train_accuracy:.4f}  test acc {r.test_accuracy:.4f}"


METRICS_WIDTH = {"full": 69, "compact": 51, "short": 38}
CLOCK = 8  # a time column: 0:00:15, and one more for runs of ten hours and more
MIN_BAR = 6


def bar_layout(width: int, label: str, total: int) -> tuple[str, int, bool]:
    """How a progress line of `width` columns is shared: the metrics' width, the bar's, and whether
    the elapsed time fits beside the step count and the time remaining (which are always shown)."""
    count = 2 * len(str(total)) + 1  # 120/500
    for metrics, elapsed in (("full", True), ("compact", True), ("compact", False), ("short", False)):
        # Rich puts one space between columns: label, count, bar, metrics, [elapsed,] remaining.
        fixed = len(label) + count + METRICS_WIDTH[metrics] + CLOCK * (1 + elapsed) + 4 + elapsed
        if width - fixed >= MIN_BAR:
            return metrics, min(40, width - fixed), elapsed
    return "short", max(1, width - fixed), False


class Reporter:
    """Progress and messages for one command; `quiet` keeps only results and errors."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        # A pipe or file gets wide lines: tables are not wrapped to 80 columns there.
        self.console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        self.live = self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = TaskID(0)  # the bar's task: set with _progress, and used only while it is
        self._total = 0
        self._label = "step"
        self._redraw = False
        self._metrics = "compact"

    def say(self, text: str) -> None:
        """An informational line (suppressed by --quiet)."""
        if not self.quiet:
            self.result(text)

    def result(self, text: str) -> None:
        """A line that is printed even with --quiet (names in it from outside shown as text, escapes visible)."""
        text = printable(text)
        if self.live:
            self.console.print(text, markup=False)
        else:
            print(text, flush=True)

    @contextlib.contextmanager
    def training(self, total_steps: int, label: str = "step", redraw_on_update: bool = False) -> Iterator[None]:
        """A progress bar of `total_steps` labelled `label` (plain lines per record off a terminal).

        With `redraw_on_update` the bar is redrawn only when step() or record() is called, not by
        rich's refresh thread: for timed work, which no other thread should compete with.
        """
        self._total, self._label, self._redraw = total_steps, label, redraw_on_update
        if not self.live:
            yield
            return
        # Within the terminal's width (80 columns included): the step count and the time remaining
        # always show; the metrics shorten and the elapsed time goes first when room is short.
        self._metrics, bar, elapsed = bar_layout(self.console.width, label, total_steps)
        columns = [
            TextColumn(label),
            MofNCompleteColumn(),
            BarColumn(bar_width=bar),
            TextColumn("{task.fields[metrics]}"),
            *([TimeElapsedColumn()] if elapsed else []),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=True, auto_refresh=not redraw_on_update) as progress:
            self._progress = progress
            self._task = progress.add_task("train", total=total_steps, metrics="")
            try:
                yield
            finally:
                self._progress = None

    def step(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, refresh=self._redraw)

    def record(self, r: Record) -> None:
        if self._progress is not None:
            metrics = format_record(r, self._metrics)
            self._progress.update(self._task, completed=r.iteration, metrics=metrics, refresh=self._redraw)
        elif not self.quiet:
            width = len(str(self._total))
            print(f"{self._label} {r.iteration:>{width}}/{self._total}  {format_record(r)}", flush=True)

    @contextlib.contextmanager
    def downloads(self) -> Iterator[None]:
        """Byte progress bars for any download started inside this block."""
        if not self.live:
            yield
            return
        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            self._progress = progress
            try:
                yield
            finally:
                self._progress = None

    def download_progress(self, name: str) -> ByteProgress:
        """A byte-count callback; it speaks only once bytes arrive, so a mirror that
        cannot be reached leaves no line behind (`auto` announces its fallback first)."""
        progress = self._progress
        task = TaskID(0)  # set when the first bytes arrive, before any update
        started = False

        def update(done: int, total: int) -> None:
            nonlocal task, started
            if not started:
                started = True
                if progress is None:
                    self.say(f"downloading {name}")
                else:
                    task = progress.add_task(name, total=total or None)
            if progress is not None:
                progress.update(task, completed=done, total=total or None)

        return update


def standard_streams() -> None:
    """A command started with stdin, stdout or stderr closed (`>&-`) gets /dev/null there.

    Otherwise the first file gpunet opens would take descriptor 1 or 2, and what
    is printed (by this process or a worker it starts) would land in that file;
    and Python's sys.stdout would be None, which printing cannot use.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_RDWR)
                if devnull != fd:
                    os.dup2(devnull, fd)
                    os.close(devnull)
        if getattr(sys, name) is None:
            with contextlib.suppress(OSError):
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def safe_output() -> None:
    """Lines that hold a path no output encoding can show (a non-UTF-8 file name, a strict
    C locale) print it escaped (\\udcff, \\xe9) instead of failing after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


class _ForgivingStream:
    """stdout or stderr whose writes cannot fail: once its terminal is gone (EIO after SIGHUP) or
    its pipe is closed (EPIPE), what follows goes to /dev/null; losing the display never loses a run."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()  # what was pending goes nowhere, and exiting flushes without an error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def forgiving_output() -> Iterator[None]:
    """For the block, sys.stdout and sys.stderr drop what they cannot write (see _ForgivingStream)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ForgivingStream(sys.stdout), _ForgivingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def stderr_line(text: str) -> None:
    """One line on stderr, whatever the text held (and nothing, not a traceback, if the terminal is gone)."""
    with contextlib.suppress(OSError):  # EIO once SIGHUP closed the terminal, EPIPE: the exit code still tells
        print(printable(" ".join(text.split())), file=sys.stderr, flush=True)
