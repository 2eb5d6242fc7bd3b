"""Ctrl-C in a sweep whose jobs run in a joblib pool (``hydra/launcher=joblib``, the list
sweeper): each running job stops at a safe point and saves, and no new job starts.

joblib ends its pool the moment one job raises, or the moment the process waiting for the
jobs gets a ``KeyboardInterrupt``: it kills the other workers with SIGKILL (loky's
``kill_process_tree``), in the middle of a checkpoint or ``metrics.json`` if one is being
written, so a stopped sweep lost up to an epoch of every other job. Instead:

- the sweep's own process (:class:`SweepStop`, a Hydra callback) takes the first SIGINT or
  SIGTERM without raising: it writes the stop file (:data:`STOP_FILE`) in the sweep folder and
  goes on waiting for the jobs, which stop at their next update and save when the signal
  reaches them too (a terminal's Ctrl-C reaches every process of the command). A second
  Ctrl-C stops at once, as before;
- a job in a worker process that is interrupted writes the stop file and returns instead of
  raising (:func:`in_a_worker`), so a signal sent only to the workers stops the sweep too;
- a job that starts once the stop file is there does nothing (``attnlstm.train`` removes the
  folder Hydra made for it).

The stop file goes when the next sweep in the same folder starts; a stopped sweep's command
exits 130 (:func:`sweep_was_stopped`), and the same command finishes it: finished jobs are
skipped, stopped ones resume from their ``last.pt`` (:mod:`attnlstm.sweep_resume`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnlstm.sigint import Interrupted

log = logging.getLogger(__name__)

#: in the sweep folder while the sweep stops: jobs that start then do nothing
STOP_FILE = ".sweep_stopped"
#: the pid of the process that runs the sweep, for the jobs (workers inherit the environment)
SWEEP_PID_VARIABLE = "ATTNLSTM_SWEEP_PID"
#: the launcher whose pool kills its other jobs when one raises
_JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
#: the sweeper that runs a fixed list of jobs; an optimising one (Optuna) keeps asking for
#: trials and reads each job's return value, so its sweeps keep the old behaviour
_LIST_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

_stopped = False  # the last sweep of this process was stopped
_running = False  # a sweep is under way in this process


def in_a_worker() -> bool:
    """Whether this process runs a sweep's job for another process (a joblib worker): an
    exception it raises would make joblib kill the other jobs."""
    sweep_pid = os.environ.get(SWEEP_PID_VARIABLE)
    return sweep_pid is not None and sweep_pid != str(os.getpid())


def request_stop(sweep_dir: Path) -> None:
    """Tell the sweep in ``sweep_dir`` to start no new job (an empty :data:`STOP_FILE`)."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STOP_FILE).touch()
    except OSError as error:  # the running jobs still stop; only queued ones would start
        log.error("cannot write %s: %s", sweep_dir / STOP_FILE, error.strerror or error)


def stop_requested(sweep_dir: Path) -> bool:
    """Whether the sweep in ``sweep_dir`` is stopping (see :func:`request_stop`)."""
    return (sweep_dir / STOP_FILE).exists()


def sweep_was_stopped() -> bool:
    """Whether the last sweep this process ran ended by a stop (the command exits 130)."""
    return _stopped


def sweep_running() -> bool:
    """Whether this process is running a sweep (between its start and its end)."""
    return _running


class SweepStop(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): a stale stop file goes
    when a sweep starts; while jobs run in a joblib pool, the first SIGINT / SIGTERM stops
    the sweep without killing them (see the module's docstring). Other launchers and the
    Optuna sweeper keep their own behaviour."""

    def __init__(self) -> None:
        self._sweep_dir = Path(".")
        self._requested = False
        self._previous: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _stopped, _running
        _stopped, _running = False, True
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._requested = False
        (self._sweep_dir / STOP_FILE).unlink(missing_ok=True)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        sweeper = str(config.hydra.get("sweeper", {}).get("_target_", _LIST_SWEEPER))
        if launcher != _JOBLIB_LAUNCHER or sweeper != _LIST_SWEEPER:
            return  # jobs in this process, or elsewhere than a joblib pool: as before
        if threading.current_thread() is threading.main_thread():
            os.environ[SWEEP_PID_VARIABLE] = str(os.getpid())
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _stopped, _running
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        _stopped = self._requested or stop_requested(self._sweep_dir)
        _running = False
        os.environ.pop(SWEEP_PID_VARIABLE, None)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """First signal: no new job; the running ones save. Second Ctrl-C: stop at once."""
        if self._requested and signum == signal.SIGINT:
            raise Interrupted
        if self._requested:
            return
        self._requested = True
        request_stop(self._sweep_dir)
        log.warning(
            "%s received: the sweep starts no new job; each running job stops at its next"
            " update and saves once the signal reaches it (a terminal's Ctrl-C reaches them"
            " all). Ctrl-C again to stop at once",
            signal.Signals(signum).name,
        )


__all__ = [
    "STOP_FILE",
    "SWEEP_PID_VARIABLE",
    "SweepStop",
    "in_a_worker",
    "request_stop",
    "stop_requested",
    "sweep_running",
    "sweep_was_stopped",
]
