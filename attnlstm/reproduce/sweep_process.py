"""Run a sweep (``python -m attnlstm -m ...``) as a child process of ``attnlstm-reproduce``
and hand it the signals that stop, pause or end the command (:func:`run_sweep`).

The sweep runs in a session of its own. Sharing the command's process group, a terminal's
Ctrl-C reached the sweep directly, but a ``kill -INT <pid>`` or ``kill <pid>`` of the command
alone never did: the run went on, with or without its parent. Handing each signal on once keeps
both cases the same and never signals a job twice for one Ctrl-C (a second SIGINT stops a job
at once instead of at a checkpoint). What the sweep's processes do with SIGINT is theirs
(:mod:`attnlstm.training.interrupt`, :mod:`attnlstm.sweep_stop`, docs/sweeps.md): each running
job saves a checkpoint at its current update and stops, no new job starts, and a second SIGINT
stops them at once.

Signals and what the sweep gets:

- SIGINT (Ctrl-C, ``kill -INT``), SIGTERM (``kill``, ``timeout``), SIGHUP (a closed
  terminal): SIGINT, to its whole process group, as a terminal's Ctrl-C gives it. A signal
  that was ignored when the command started (``nohup``'s SIGHUP, SIGINT under a script's
  ``&``) stays ignored.
- SIGTSTP (Ctrl-Z): SIGSTOP to its process group, then the command stops itself; when the
  shell continues the command (``fg``, ``bg``), the sweep gets SIGCONT. (SIGSTOP, because a
  process group whose parent lives in another session ignores the terminal's stop signals.)
- SIGQUIT (Ctrl-\\): SIGQUIT to its process group, then the command quits as it would have.
- SIGKILL of the command cannot be handed on: on Linux the kernel then sends the sweep's own
  process SIGTERM (:func:`_stop_when_orphaned`). With one job at a time that job stops at a
  checkpoint; in a joblib pool no new job starts and the running ones finish (SIGTERM to
  ``attnlstm-train -m``, docs/sweeps.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from attnlstm.console import EXIT_INTERRUPTED

#: the signals that stop the sweep, each handed on as one SIGINT to its process group
_STOPPING = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: every signal :func:`run_sweep` takes: the stopping ones, then those that pause or quit
_TAKEN = _STOPPING + tuple(
    getattr(signal, name) for name in ("SIGTSTP", "SIGQUIT") if hasattr(signal, name)
)
#: ``prctl`` option: the signal the kernel sends a process when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1


def run_sweep(command: Sequence[str]) -> int:
    """Run ``command`` (a sweep) and return its exit status, or 130 (``EXIT_INTERRUPTED``)
    if a stopping signal came while it ran, whatever the sweep then returned. Signals are
    handed on as the module says; this waits for the sweep, as long as it takes, instead of
    killing it (:func:`subprocess.run` would, a quarter second after an interrupt). Where
    signal handlers cannot be set (not POSIX, not the main thread) the sweep shares this
    process group and only a Ctrl-C of the whole group reaches it."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return _wait_through_ctrl_c(subprocess.Popen(list(command)))
    process: subprocess.Popen[bytes] | None = None
    stopped: list[int] = []  # the stopping signals taken
    waiting: list[int] = []  # signals taken before the sweep started, to hand on once it has

    def to_sweep(signum: int) -> None:
        """Signal the sweep's process group, unless the sweep has ended (its pid may be
        another process's by then)."""
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)

    def hand_on(signum: int) -> None:
        if signum in _STOPPING:
            to_sweep(signal.SIGINT)
            return
        # SIGTSTP or SIGQUIT: the sweep first, then this process as if it had no handler
        to_sweep(signal.SIGSTOP if signum == signal.SIGTSTP else signum)
        handler = signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # stops here until continued (SIGQUIT ends here)
        signal.signal(signum, handler)
        if signum == signal.SIGTSTP:
            to_sweep(signal.SIGCONT)

    def take(signum: int, frame: FrameType | None) -> None:
        if signum in _STOPPING:
            stopped.append(signum)
        if process is None:
            waiting.append(signum)
        else:
            hand_on(signum)

    previous = {
        sig: signal.signal(sig, take)
        for sig in _TAKEN
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        # taken from before the start, so that no signal finds the sweep without its parent
        process = subprocess.Popen(
            list(command), start_new_session=True, preexec_fn=_stop_when_orphaned()
        )
        while waiting:
            hand_on(waiting.pop(0))
        try:
            code = process.wait()
        except BaseException:  # an error or a timeout's exception here: the sweep stops too
            to_sweep(signal.SIGINT)
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_INTERRUPTED if stopped else code


def _stop_when_orphaned() -> Callable[[], None] | None:
    """What the sweep runs before its program (``preexec_fn``), on Linux: have the kernel
    send it SIGTERM when this process dies, so that a SIGKILL of the command (``kill -9``,
    ``timeout -k``, the OOM killer), which cannot be handed on, still stops the sweep (see
    the module for what SIGTERM does to it) rather than leave it training with no parent.
    None elsewhere, and where other Python threads run here (a ``preexec_fn`` may then
    deadlock the child before it starts, on a lock one of them held at the fork)."""
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        # The child still runs this process's Python handlers until its program starts:
        # the SIGTERM below, or the kernel's, must end it, not be handed on.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the command died before the request was in place
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _wait_through_ctrl_c(process: subprocess.Popen[bytes]) -> int:
    """Wait for ``process`` through any Ctrl-C (it reached the child too): 130 if one came."""
    interrupted = False
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            interrupted = True  # keep waiting: the runs are writing their checkpoints
    return EXIT_INTERRUPTED if interrupted else code
