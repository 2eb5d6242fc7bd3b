"""The first Ctrl-C asks the loop to stop at a safe point; the second stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from attnlstm.training.interrupt import StopRequest


def test_first_signal_sets_the_flag_and_check_raises() -> None:
    with StopRequest() as stop:
        stop.check()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.check()


def test_second_ctrl_c_interrupts_at_once() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested


def test_sigterm_is_a_stop_request_too() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested


def test_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopRequest():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 here")
def test_usr2_stops_first_and_is_handed_on_to_its_handler_at_exit() -> None:
    """submitit's USR2 handler requeues a Slurm job and ends the process: the run must be
    saved first, so the signal reaches that handler only when the stop is done."""
    calls: list[int] = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.requested and calls == []  # the loop saves here
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_usr2_is_left_alone_without_a_python_handler() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    with StopRequest():
        assert signal.getsignal(signal.SIGUSR2) is before
