"""Ctrl-C, SIGTERM and SIGHUP: gpunet stops cleanly on each, and never halfway through writing a file.

The three are handled alike (SIGHUP is a closed terminal). Where gpunet's
handlers are installed (`handling()`, for the whole of a CLI command):

- by default a signal raises `Terminated` (a BaseException carrying the
  signal), so `finally` blocks run and no temporary file is left; it is
  raised once: signals arriving while the command unwinds are only counted,
  so the clean-up and the last line are never cut short;
- during a training run (`stop_requests()`, from the loop's start until every
  output is written) no signal ever raises: each one is appended to the run's
  list, the loop stops between two steps at the first, and the state of that
  step is saved and the outputs written however many more arrive (they are
  counted, and said in the last line); only SIGKILL stops such a run at once;
- inside `deferred()` (every atomic file write, every checkpoint save) any
  signal waits until the block ends, then acts as above: a save is finished,
  never cut in half, however many signals arrive.

Handlers can only be set from the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP (terminal closed)"}


def name(signum: int) -> str:
    """How a user knows the signal: 'Ctrl-C', 'SIGTERM', ..."""
    return _NAMES.get(signum) or f"signal {signum}"


class Terminated(BaseException):
    """A stop signal arrived outside training: unwind, clean up, exit 128 + signum.

    Like KeyboardInterrupt, no `except Exception` catches it; unlike it, click
    and typer let it through, so the CLI can name the signal in its exit code.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(name(signum))


@dataclass
class _State:
    installed: int = 0  # nesting depth of handling()
    previous: dict[int, Any] = field(default_factory=dict)  # the handlers to put back
    requests: list[int] | None = None  # set while training: signals ask to stop
    deferring: int = 0  # nesting depth of deferred()
    pending: list[int] = field(default_factory=list)  # signals that arrived while deferring
    raised: bool = False  # Terminated was raised: later signals only count, the command is unwinding
    closing: bool = False  # the command has ended (its last line, the exit): signals only count
    early: bool = False  # the process's handlers are up, the command not started: a signal waits for it
    received: list[int] = field(default_factory=list)  # every stop signal since handling() was installed


_state = _State()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _act(signum: int) -> None:
    requests = _state.requests
    if requests is not None:
        requests.append(signum)  # the training loop stops at the next step; its outputs are still written
        return
    if _state.raised or _state.closing or _state.early:
        # One Terminated is unwinding the command already, or the command has ended and is saying so, or it
        # has not begun (it then stops at its start): counted in `received`, never raised twice or late.
        return
    _state.raised = True
    raise Terminated(signum)


def _handle(signum: int, frame: object) -> None:
    _state.received.append(signum)
    if _state.deferring:
        _state.pending.append(signum)
        return
    _act(signum)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """gpunet's handlers for Ctrl-C, SIGTERM and SIGHUP during the block (nests; main thread only)."""
    if not _in_main_thread():
        yield
        return
    if _state.early:  # the first command of a process, whose handlers are already up (for_the_process)
        _state.early = False
        if _state.received:  # a signal came before the command began: it stops here, before any work
            _state.raised = True
            raise Terminated(_state.received[0])
    if _state.installed == 0:
        _state.raised, _state.closing, _state.received = False, False, []
        # A signal the process was told to ignore (nohup's SIGHUP) stays ignored.
        _state.previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    _state.installed += 1
    outer_requests = _state.requests
    try:
        yield
    finally:
        _state.installed -= 1
        _state.requests = outer_requests  # a stop_requests_from_now() inside ends with this block
        if _state.installed == 0:
            for s, handler in _state.previous.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals until the block ends (a file being written is finished first).

    Where gpunet's handlers were not installed (a library caller), they are for
    the block, and a held signal is then re-raised with the caller's own handler.
    """
    if not _in_main_thread():
        yield
        return
    installing = _state.installed == 0
    with handling() if installing else contextlib.nullcontext():
        _state.deferring += 1
        try:
            yield
        finally:
            _state.deferring -= 1
            pending = _state.pending if _state.deferring == 0 else []
            if _state.deferring == 0:
                _state.pending = []
    if pending:
        if installing:
            signal.raise_signal(pending[0])  # the caller's handler, now restored
        else:
            for signum in pending:  # as if they arrived now that the save is done (a stop raises once)
                _act(signum)


def for_the_process() -> None:
    """gpunet's handlers from now until the process exits (a CLI process, before its command starts).

    Without it a command's handlers would be removed when it ends, and a signal between its last
    line and the exit would meet Python's defaults: a traceback, or death by the signal, with an exit
    code that is not the one the line explains. A signal before the command begins stops it at its
    start (`handling()`); one after `closing()` is only counted.
    """
    if not _in_main_thread() or _state.installed:
        return
    _state.raised, _state.closing, _state.received = False, False, []
    _state.previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    _state.installed = 1  # never removed: the process ends with them
    _state.early = True


def ignored_for_the_exit() -> None:
    """The process is exiting, its last line said: stop signals are ignored from now.

    Python's finalisation puts back the default handlers of those it handled (not of ignored
    ones), so a signal during a slow exit (threads, a cluster, numpy's teardown) would kill the
    process and change the exit code the last line explains; only SIGKILL stops it now.
    """
    if _in_main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def kept_from_children() -> Iterator[None]:
    """Processes started in the block (a local Dask cluster's) never see Ctrl-C or SIGHUP.

    A terminal sends those to its whole foreground process group: without this the workers
    would die of the Ctrl-C that asked the run to stop, each printing a traceback, while the
    run saves. The signals are blocked while the processes start (they inherit the mask and keep
    it); one that arrives meanwhile is handled here when the block ends. SIGTERM stays: it is how
    the cluster stops its own processes.
    """
    held = {signal.SIGINT, signal.SIGHUP}
    if not _in_main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def closing() -> None:
    """The command has ended: until the handlers are removed (or the process exits), a signal is only counted."""
    _state.closing = True


def stop_requests_from_now() -> list[int]:
    """From now until the enclosing `handling()` block ends (a CLI command's end, its last line
    printed), every signal is appended to the returned list, as in `stop_requests()`, and none raises.

    A command calls it once a run has a state worth saving: the rest of the command (the loop,
    the saves, the outputs, the unwinding and the last line) can then not be cut short by a signal.
    Outside gpunet's handlers (or the main thread) it does nothing and returns an empty list.
    """
    if not _in_main_thread() or not _state.installed:
        return []
    if _state.requests is None:
        _state.requests = []
    return _state.requests


def said_after_the_first() -> str:
    """The signals after the first one, as a command's last line says them ('' when there were none)."""
    more = _state.received[1:]
    if not more:
        return ""
    names = ", ".join(dict.fromkeys(name(s) for s in more))
    count = "a second stop signal" if len(more) == 1 else f"{len(more)} more stop signals"
    return f"{count} ({names}) arrived while stopping; the stop was finished all the same (kill -9 stops at once)"


def hand_over(signum: int, message: str) -> None:
    """Give a stop signal that gpunet held (a fit stopped, its model kept) to the caller's own handler.

    Python's default Ctrl-C handler becomes a KeyboardInterrupt carrying `message`;
    any other handler gets the signal itself (the default SIGTERM ends the process,
    as it would have without gpunet), after `message` as a warning. Inside gpunet's
    own stop requests (a run around this one) the outer run has the signal already.
    """
    if _state.requests is not None or not _in_main_thread():
        return
    handler = signal.getsignal(signum)
    if handler is signal.default_int_handler:
        raise KeyboardInterrupt(message)
    if handler in (signal.SIG_IGN, None):
        return
    warnings.warn(message, stacklevel=3)
    signal.raise_signal(signum)


def received() -> list[int]:
    """Every stop signal that arrived since gpunet's handlers were installed (for a command's last line)."""
    return list(_state.received)


def stop_requested() -> int | None:
    """The signal that asked the training loop to stop, if one did: a source that waits on a
    cluster polls this and gives the step up, so a stop never waits for a step that may never come."""
    return _state.requests[0] if _state.requests else None


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """During the block, every signal is appended to the yielded list instead of raising.

    The training loop checks the list between steps, so a step is never cut in
    half, and nothing raises in what follows (the final save, the outputs), so
    a stop is never cut short by another signal: the caller reads the list to
    say how many came. Nested blocks share the outermost one's list: a stop
    asked for inside stops the whole run (a command holds a block from its
    run's start until its last output, around the training loop's own).
    """
    outer = _state.requests
    requested: list[int] = outer if outer is not None else []
    if not _in_main_thread():
        yield requested
        return
    _state.requests = requested
    try:
        with handling():
            yield requested
    finally:
        _state.requests = outer
