"""How ``attnlstm-reproduce`` hands signals on to the sweep it runs
(:mod:`attnlstm.reproduce.sweep_process`): a terminal's Ctrl-C, ``kill -INT`` / ``kill`` /
``kill -9`` of the command alone, a closed terminal, ``nohup``, Ctrl-Z, Ctrl-\\. Real
processes; the sweep is a stand-in that logs the signals it takes and sleeps."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and sessions")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: the command's process, as a shell starts it: the default handling of each signal, whatever
#: pytest was started with (``nohup``, ``&``)
_AS_FROM_A_SHELL = (
    "import signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "for name in ('SIGTERM', 'SIGHUP', 'SIGTSTP', 'SIGQUIT'):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_DFL)\n"
)


def _start(tmp_path: Path, prelude: str = "") -> tuple[subprocess.Popen[str], int, Path]:
    """A command running :func:`run_sweep` on a stand-in sweep that logs each SIGINT /
    SIGTERM it takes, answers the first by "saving" for 1 s (four times what subprocess.run
    would wait before killing it) and exiting 0, and otherwise sleeps a minute. The command
    leads a process group of its own, as a shell's job does, and runs ``prelude`` first.
    Returns the command, the sweep's pid and the sweep's log."""
    log = tmp_path / "signals"
    sweep = (
        "import os, signal, sys, time, pathlib\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "def note(signum, _):\n"
        "    with log.open('a') as f: f.write(signal.Signals(signum).name + '\\n')\n"
        "def stop(signum, frame):\n"
        "    note(signum, frame)\n"
        "    signal.signal(signal.SIGINT, note); signal.signal(signal.SIGTERM, note)\n"
        "    time.sleep(1.0); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, stop); signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    command = (
        _AS_FROM_A_SHELL + f"{prelude}\n"
        "from attnlstm.reproduce.sweep_process import run_sweep\n"
        f"sys.exit(run_sweep([sys.executable, '-c', {sweep!r}]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", command],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=os.setpgrp,  # a job of its own, in this session
    )
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], 60)[0]:
        _end(process, None)
        pytest.fail("the stand-in sweep did not start within 60 s")
    ready, sweep_pid = process.stdout.readline().split()
    assert ready == "ready"
    return process, int(sweep_pid), log


def _end(process: subprocess.Popen[str], sweep_pid: int | None) -> None:
    """Leave nothing behind when a test fails: both processes, whatever their groups."""
    for pid in (process.pid, sweep_pid):
        for kill in (os.killpg, os.kill):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def _state(pid: int) -> str:
    """The process's state letter from ``/proc`` (``T`` stopped, ``S`` sleeping, ``Z`` a
    zombie), ``gone`` when it has been reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_for(predicate: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll ``predicate`` every 50 ms for up to ``seconds``: whether it came true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_reaches_the_sweep_once_and_is_waited_for_then_exits_130(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the command's process group: the sweep takes exactly one
    SIGINT (a second would stop its jobs at once), saves, and the command exits 130 though
    the sweep itself returned 0."""
    process, sweep_pid, log = _start(tmp_path)
    try:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, sweep_pid)


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_kill_or_hangup_of_the_command_alone_stops_the_sweep_at_a_checkpoint(
    tmp_path: Path, sent: str
) -> None:
    """``kill -INT <pid>``, ``kill <pid>`` or a closed terminal reach only the command: they
    used to leave the sweep training (with no parent after SIGTERM or SIGHUP); the sweep now
    takes one SIGINT, as from Ctrl-C, and is waited for."""
    process, sweep_pid, log = _start(tmp_path)
    try:
        os.kill(process.pid, getattr(signal, sent))
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, sweep_pid)


def test_a_hangup_ignored_under_nohup_stays_ignored(tmp_path: Path) -> None:
    """``nohup attnlstm-reproduce ...`` asks for the sweep to outlive its terminal."""
    process, sweep_pid, log = _start(tmp_path, "signal.signal(signal.SIGHUP, signal.SIG_IGN)")
    try:
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(1.5)  # longer than the sweep's "save": it would have ended by now
        assert process.poll() is None and not log.exists()
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, sweep_pid)


def test_a_signal_before_the_sweep_starts_is_handed_on_once_it_has(tmp_path: Path) -> None:
    """A ``kill`` while the command starts its sweep: the sweep is stopped, not left running
    (the stand-in has no handler, so the SIGINT ends it at once; left alone it sleeps a
    minute, and the command would wait that long)."""
    sweep = "import time; time.sleep(60)"
    command = (
        _AS_FROM_A_SHELL + "import subprocess\n"
        "real = subprocess.Popen\n"
        "def popen(*args, **kwargs):\n"
        "    signal.raise_signal(signal.SIGTERM)  # before the sweep exists\n"
        "    return real(*args, **kwargs)\n"
        "subprocess.Popen = popen\n"
        "from attnlstm.reproduce.sweep_process import run_sweep\n"
        f"sys.exit(run_sweep([sys.executable, '-c', {sweep!r}]))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", command], preexec_fn=os.setpgrp)
    try:
        assert process.wait(timeout=30) == 130
    finally:
        _end(process, None)


@linux_only
@pytest.mark.parametrize("whom", ["the command", "its process group"])
def test_a_sigkill_of_the_command_still_stops_the_sweep(tmp_path: Path, whom: str) -> None:
    """``kill -9``, ``timeout -k`` or the OOM killer: the command cannot hand anything on, and
    the sweep, in a session of its own, would train on with no parent; the kernel sends it
    SIGTERM instead."""
    process, sweep_pid, log = _start(tmp_path)
    try:
        (os.kill if whom == "the command" else os.killpg)(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        # Wait for the sweep to end, not for its log to exist: nothing waits for an orphan,
        # and the log exists from the moment the stand-in opens it, before its line is in.
        assert _wait_for(lambda: _state(sweep_pid) in ("Z", "gone")), "the sweep went on"
        assert log.read_text().split() == ["SIGTERM"]
    finally:
        _end(process, sweep_pid)


@linux_only
def test_ctrl_z_pauses_the_sweep_with_the_command_and_fg_resumes_both(tmp_path: Path) -> None:
    process, sweep_pid, log = _start(tmp_path)
    try:
        os.kill(process.pid, signal.SIGTSTP)
        assert _wait_for(lambda: _state(process.pid) == "T" and _state(sweep_pid) == "T")
        os.killpg(process.pid, signal.SIGCONT)  # what the shell's fg or bg sends
        assert _wait_for(lambda: "T" not in (_state(process.pid), _state(sweep_pid)))
        assert process.poll() is None and not log.exists()
        os.kill(process.pid, signal.SIGINT)  # and it still stops as before
        assert process.wait(timeout=30) == 130
        assert log.read_text().split() == ["SIGINT"]
    finally:
        _end(process, sweep_pid)


@linux_only
def test_ctrl_backslash_quits_the_sweep_with_the_command(tmp_path: Path) -> None:
    """SIGQUIT ends both at once, as it did when they shared a process group."""
    process, sweep_pid, log = _start(tmp_path)
    try:
        os.kill(process.pid, signal.SIGQUIT)
        assert process.wait(timeout=30) == -signal.SIGQUIT
        assert _wait_for(lambda: _state(sweep_pid) in ("Z", "X", "gone"))
        assert not log.exists()  # it quit: no SIGTERM from its parent's death came first
    finally:
        _end(process, sweep_pid)
