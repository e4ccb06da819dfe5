"""Ctrl-C, SIGTERM and SIGHUP: gpunet stops cleanly on each, and never halfway through writing a file.

The three are handled alike (SIGHUP is a closed terminal). Where gpunet's
handlers are installed (`handling()`, for the whole of a CLI command):

- by default a signal raises `Terminated` (a BaseException carrying the
  signal), so `finally` blocks run and no temporary file is left;
- during training (`stop_requests()`) the first signal only asks the loop to
  stop between two steps; a second one, for a stuck run, raises at once;
- inside `deferred()` (every atomic file write, every checkpoint save) any
  signal waits until the block ends, then acts as above: a save is finished,
  never cut in half, however many signals arrive.

Handlers can only be set from the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
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


_state = _State()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _act(signum: int) -> None:
    requests = _state.requests
    if requests is not None and not requests:
        requests.append(signum)  # the training loop stops at the next step
        return
    raise Terminated(signum)


def _handle(signum: int, frame: object) -> None:
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
    if _state.installed == 0:
        _state.previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS}
    _state.installed += 1
    try:
        yield
    finally:
        _state.installed -= 1
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
            _act(pending[0])  # as if it arrived now that the save is done


def stop_requested() -> int | None:
    """The signal that asked the training loop to stop, if one did: a source that waits on a
    cluster polls this and gives the step up, so a stop never waits for a step that may never come."""
    return _state.requests[0] if _state.requests else None


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """During the block, a signal is appended to the yielded list instead of raising.

    The training loop checks the list between steps, so a step is never cut in
    half. A second signal while a stop is pending raises Terminated at once
    (unless a save is in progress: then when it is done).
    """
    requested: list[int] = []
    if not _in_main_thread():
        yield requested
        return
    outer = _state.requests
    _state.requests = requested
    try:
        with handling():
            yield requested
    finally:
        _state.requests = outer
