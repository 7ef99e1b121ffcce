"""The command line's wait for Ctrl-C or SIGTERM: no signal lost before the wait, none ignored in it."""

from __future__ import annotations

import os
import signal
import threading

from harness.cli._signals import StopSignals


def test_a_signal_before_the_wait_ends_it_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # the command is still starting: the signal is kept
        assert stop.wait(60) is True
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_the_wait_ends_it() -> None:
    with StopSignals() as stop:
        waiting = threading.Event()
        sender = threading.Thread(target=lambda: (waiting.wait(10), os.kill(os.getpid(), signal.SIGINT)))
        sender.start()
        waiting.set()
        assert stop.wait(60) is True  # would take 60 s, and fail, if the signal were ignored
        sender.join()
        assert stop.received == signal.SIGINT


def test_without_a_signal_the_wait_times_out() -> None:
    with StopSignals() as stop:
        assert stop.wait(0.01) is False and stop.received is None
