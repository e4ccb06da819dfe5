"""Ctrl-C, SIGTERM and SIGHUP in this process: raised, asked to stop, or held back during a save.

The end-to-end tests (a real `gpunet train` killed mid-run) are in test_run_end.py,
test_checkpoint.py and test_stop_signals.py; these check each rule of gpunet/files/signals.py directly,
signal by signal.
"""

from __future__ import annotations

import signal
import threading

import pytest

from gpunet.files import signals
from gpunet.files.signals import Terminated


def current_handlers() -> dict[int, object]:
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}


def test_users_know_the_signals_by_these_names() -> None:
    assert signals.STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    names = [signals.name(s) for s in (*signals.STOP_SIGNALS, signal.SIGUSR1)]
    assert names == ["Ctrl-C", "SIGTERM", "SIGHUP (terminal closed)", f"signal {int(signal.SIGUSR1)}"]
    stopped = Terminated(signal.SIGHUP)
    assert (stopped.signum, str(stopped)) == (signal.SIGHUP, "SIGHUP (terminal closed)")
    assert not isinstance(stopped, Exception)  # `except Exception` in user code does not swallow a stop


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_raises_terminated_and_the_old_handlers_come_back(signum: int) -> None:
    before = current_handlers()
    with pytest.raises(Terminated) as stopped, signals.handling():
        with signals.handling():  # nested: the inner block's end must not uninstall the outer's handlers
            pass
        assert current_handlers() != before
        signal.raise_signal(signum)
        pytest.fail("the signal did not stop the block")
    assert stopped.value.signum == signum
    assert current_handlers() == before


def test_during_training_every_signal_asks_and_none_raises() -> None:
    """Two signals close together (a launcher forwarding Ctrl-C to the process group) must not lose the
    save the first one asked for: the second one, and any after it, is only counted."""
    assert signals.stop_requested() is None
    with signals.stop_requests() as requested:
        assert signals.stop_requested() is None
        signal.raise_signal(signal.SIGTERM)
        assert requested == [signal.SIGTERM] and signals.stop_requested() == signal.SIGTERM
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGHUP):
            signal.raise_signal(signum)
        assert requested == [signal.SIGTERM, signal.SIGINT, signal.SIGINT, signal.SIGHUP]
        assert signals.stop_requested() == signal.SIGTERM  # the first one stopped the run
    assert signals.stop_requested() is None  # the request belonged to that run
    with pytest.raises(Terminated), signals.handling():
        signal.raise_signal(signal.SIGINT)  # outside training again, a signal stops at once


def test_outside_training_terminated_is_raised_once_and_later_signals_are_counted() -> None:
    """The unwinding after a stop (clean-up, the last line) is never cut short by a second signal."""
    unwound = []
    with signals.handling():
        with pytest.raises(Terminated) as stopped:
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # while unwinding: counted, not raised
        signal.raise_signal(signal.SIGINT)
        unwound.append("cleaned up")
        assert signals.received() == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]
        assert signals.said_after_the_first() == (
            "2 more stop signals (SIGTERM, Ctrl-C) arrived while stopping; "
            "the stop was finished all the same (kill -9 stops at once)"
        )
    assert stopped.value.signum == signal.SIGINT and unwound == ["cleaned up"]
    with pytest.raises(Terminated), signals.handling():  # a new command: a stop raises again
        assert signals.received() == [] and signals.said_after_the_first() == ""
        signal.raise_signal(signal.SIGHUP)


def test_from_now_on_a_command_only_asks_to_stop_until_its_handlers_go() -> None:
    with signals.handling():
        requested = signals.stop_requests_from_now()
        signal.raise_signal(signal.SIGINT)
        with signals.stop_requests() as run:  # the training loop's own block shares the command's list
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)  # after the loop, while the outputs are written
        assert requested is run and requested == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]
        assert signals.said_after_the_first().startswith("2 more stop signals (SIGTERM, Ctrl-C) arrived")
    assert signals.stop_requested() is None
    assert signals.stop_requests_from_now() == []  # without gpunet's handlers: nothing changes
    with pytest.raises(Terminated), signals.handling():
        signal.raise_signal(signal.SIGINT)


def test_a_signal_the_process_ignores_stays_ignored() -> None:
    """`nohup gpunet train ...` ignores SIGHUP: a closed terminal must not stop the run."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.handling(), signals.stop_requests() as requested:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)
            assert requested == []
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_during_a_save_waits_for_the_save_to_finish() -> None:
    finished = []
    with pytest.raises(Terminated) as stopped, signals.handling():
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)  # however many arrive
            finished.append("the file")
        pytest.fail("the held signal was dropped")
    assert finished == ["the file"] and stopped.value.signum == signal.SIGTERM  # the first one, after the save


def test_a_signal_during_a_training_save_becomes_a_stop_request() -> None:
    with signals.stop_requests() as requested:
        with signals.deferred(), signals.deferred():  # a save inside a save: held until the outer one ends
            signal.raise_signal(signal.SIGINT)
            assert requested == []
        assert requested == [signal.SIGINT]
        finished = []
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)  # a stop already asked for: a second one never cuts the save
            signal.raise_signal(signal.SIGINT)
            finished.append("the file")
        assert finished == ["the file"] and requested == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]


def test_a_library_caller_gets_its_own_handler_after_the_save() -> None:
    """Without gpunet's handlers (a Python caller), a save still finishes; then the caller's handler runs."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not signals._handle
        with signals.deferred():
            pass
        assert calls == [signal.SIGTERM]  # nothing held, nothing raised
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    """Python lets only the main thread set handlers: elsewhere each block runs as it is."""
    before = current_handlers()
    seen = []

    def work() -> None:
        with signals.handling(), signals.deferred(), signals.stop_requests() as requested:
            seen.append((current_handlers() == before, requested))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert seen == [(True, [])] and signals.stop_requested() is None


def test_a_run_inside_a_run_shares_its_stop_requests() -> None:
    """A training run started from inside another (a library caller's loop around fit): a stop asked
    for inside stops the outer run too, and after the inner one ends a signal is still only a request."""
    with signals.stop_requests() as outer:
        with signals.stop_requests() as inner:
            signal.raise_signal(signal.SIGINT)
        assert inner is outer and outer == [signal.SIGINT]
        signal.raise_signal(signal.SIGTERM)
        assert outer == [signal.SIGINT, signal.SIGTERM]
