"""Ctrl-C, SIGTERM and SIGHUP in this process: raised, asked to stop, or held back during a save.

The end-to-end tests (a real `gpunet train` killed mid-run) are in test_run_end.py and
test_checkpoint.py; these check each rule of gpunet/files/signals.py directly, signal by signal.
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


def test_during_training_the_first_signal_asks_and_a_second_one_stops() -> None:
    assert signals.stop_requested() is None
    with signals.stop_requests() as requested:
        assert signals.stop_requested() is None
        signal.raise_signal(signal.SIGTERM)
        assert requested == [signal.SIGTERM] and signals.stop_requested() == signal.SIGTERM
        with pytest.raises(Terminated) as stopped:
            signal.raise_signal(signal.SIGINT)  # a stuck run: the second one acts at once
        assert stopped.value.signum == signal.SIGINT and requested == [signal.SIGTERM]
    assert signals.stop_requested() is None  # the request belonged to that run
    with pytest.raises(Terminated), signals.handling():
        signal.raise_signal(signal.SIGINT)  # outside training again, a signal stops at once


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
        assert requested == [signal.SIGINT]
        finished = []
        with pytest.raises(Terminated) as stopped, signals.deferred():
            signal.raise_signal(signal.SIGTERM)  # a stop already asked for: a second signal stops, after the save
            finished.append("the file")
        assert finished == ["the file"] and stopped.value.signum == signal.SIGTERM and requested == [signal.SIGINT]


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


def test_a_run_inside_a_run_hands_the_requests_back_when_it_ends() -> None:
    """A training run started from inside another (a library caller's loop around fit): after the inner
    one ends, a signal is the outer run's stop request again, not an immediate stop."""
    with signals.stop_requests() as outer:
        with signals.stop_requests() as inner:
            signal.raise_signal(signal.SIGINT)
        assert (inner, outer) == ([signal.SIGINT], [])
        signal.raise_signal(signal.SIGTERM)
        assert outer == [signal.SIGTERM]
