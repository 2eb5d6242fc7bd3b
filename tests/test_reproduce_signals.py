"""How ``attnlstm-reproduce`` hands stop signals on to the sweep it runs
(:func:`attnlstm.reproduce.cli.run_sweep`): a terminal's Ctrl-C, ``kill -INT`` / ``kill`` of
the command alone, a closed terminal. Real processes, a stand-in child that sleeps."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and sessions")


def _sweep_under_run_sweep(
    tmp_path: Path, prelude: str = ""
) -> tuple[subprocess.Popen[str], int, Path]:
    """A parent running :func:`run_sweep` on a child that logs each SIGINT / SIGTERM it
    takes, answers the first by "saving" for 1 s (four times what subprocess.run would wait
    before killing it) and exiting 130, and otherwise sleeps a minute. The parent leads a
    session of its own, like a command started from a terminal, and runs ``prelude`` first.
    Returns the parent, the child's pid and the child's log."""
    log = tmp_path / "signals"
    child = (
        "import os, signal, sys, time, pathlib\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "def stop(signum, _):\n"
        "    with log.open('a') as f: f.write(signal.Signals(signum).name + '\\n')\n"
        "    signal.signal(signal.SIGINT, note); signal.signal(signal.SIGTERM, note)\n"
        "    time.sleep(1.0); sys.exit(130)\n"
        "def note(signum, _):\n"
        "    with log.open('a') as f: f.write(signal.Signals(signum).name + '\\n')\n"
        "signal.signal(signal.SIGINT, stop); signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import signal, sys\n"
        f"{prelude}\n"
        "from attnlstm.reproduce.cli import run_sweep\n"
        f"sys.exit(run_sweep([sys.executable, '-c', {child!r}]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    ready, child_pid = process.stdout.readline().split()
    assert ready == "ready"
    time.sleep(0.2)  # both have their handlers: the parent's come before the child starts
    return process, int(child_pid), log


def _end(process: subprocess.Popen[str], child_pid: int) -> None:
    """Leave nothing behind when a test fails: both processes, whatever their groups."""
    for pid in (process.pid, child_pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_ctrl_c_reaches_the_sweep_once_and_is_waited_for_then_exits_130(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the command's process group: the sweep takes exactly one
    SIGINT (a second would stop its jobs at once), saves, and the command exits 130."""
    process, child_pid, log = _sweep_under_run_sweep(tmp_path)
    try:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, child_pid)


def test_kill_int_of_the_command_alone_stops_the_sweep(tmp_path: Path) -> None:
    """``kill -INT <pid>`` from another shell or a script reaches only the command; it hands
    the signal on (it used to wait a whole run for a sweep that never heard it)."""
    process, child_pid, log = _sweep_under_run_sweep(tmp_path)
    try:
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, child_pid)


@pytest.mark.parametrize("sent", ["SIGTERM", "SIGHUP"])
def test_kill_of_the_command_stops_the_sweep_instead_of_leaving_it_running(
    tmp_path: Path, sent: str
) -> None:
    """``kill <pid>`` or a closed terminal used to end the command alone and leave its sweep
    training with no parent; the sweep now takes SIGTERM, saves, and is waited for."""
    process, child_pid, log = _sweep_under_run_sweep(tmp_path)
    try:
        os.kill(process.pid, getattr(signal, sent))
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGTERM"]
    finally:
        _end(process, child_pid)


def test_a_hangup_the_command_ignores_under_nohup_stays_ignored(tmp_path: Path) -> None:
    """``nohup attnlstm-reproduce ...`` asks for the sweep to outlive its terminal."""
    process, child_pid, log = _sweep_under_run_sweep(
        tmp_path, prelude="signal.signal(signal.SIGHUP, signal.SIG_IGN)"
    )
    try:
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(1.5)  # longer than the child's "save": it would have ended by now
        assert process.poll() is None and not log.exists()
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, child_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("whom", ["the command", "its process group"])
def test_a_sigkill_of_the_command_still_stops_the_sweep(tmp_path: Path, whom: str) -> None:
    """``kill -9``, ``timeout -k`` or the OOM killer: the command cannot hand anything on, and
    the sweep, in a session of its own, would train on with no parent; the kernel sends it
    SIGTERM instead."""
    process, child_pid, log = _sweep_under_run_sweep(tmp_path)
    try:
        if whom == "the command":
            os.kill(process.pid, signal.SIGKILL)
        else:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().split() == ["SIGTERM"]
    finally:
        _end(process, child_pid)
