"""Ctrl-C in a sweep whose jobs run in a joblib pool (``hydra/launcher=joblib`` with two or
more jobs at a time, the list sweeper): each running job stops at a safe point and saves, and
no new job starts.

joblib ends its pool the moment one job raises, the moment a worker dies, or the moment the
process waiting for the jobs gets a ``KeyboardInterrupt``: it kills the other workers with
SIGKILL (loky's ``kill_process_tree``), in the middle of a checkpoint or ``metrics.json`` if
one is being written, so a stopped sweep lost up to an epoch of every other job. A terminal's
Ctrl-C reaches every process of the command at once: the sweep's own, the workers running a
job, and the idle workers (an idle loky worker that gets a ``KeyboardInterrupt`` exits, and
the pool is then broken). So, while such a sweep runs (:class:`SweepStop`):

- the sweep's own process ignores SIGINT, and so do the workers it starts (an ignored signal
  stays ignored in a child process, and Python then installs no handler of its own); a job
  takes SIGINT only while it runs: the trainer's handler stops it at its next update
  (:mod:`attnlstm.training.interrupt`), and before the training loop :func:`worker_job`
  remembers a Ctrl-C for the loop, which then stops before its first update;
- an interrupted job writes the stop file (:data:`STOP_FILE`) in the sweep folder and
  returns instead of raising (:func:`in_a_worker`); a job that starts once the stop file is
  there does nothing (``attnlstm.train`` removes the folder Hydra made for it);
- a second Ctrl-C stops each running job at once (the trainer raises at once); the jobs
  keep their last checkpoint;
- SIGTERM to the sweep's process writes the stop file: no new job starts, the running ones
  carry on unless they get the signal too; a second SIGTERM stops the sweep's process at once
  (joblib then kills the jobs, which keep their last checkpoint).

Left as they are: a Ctrl-C while a worker starts, or while Hydra sets up its next job, is not
seen by that worker (press it again once the jobs train); SIGTERM to an idle worker ends it,
and joblib then kills the others; workers that a joblib pool of this process made before the
sweep started keep the default handling.

The stop file goes when the next sweep in the same folder starts; a stopped sweep's command
exits 130 (:func:`sweep_was_stopped`), and the same command finishes it: finished jobs are
skipped, stopped ones resume from their ``last.pt`` (:mod:`attnlstm.sweep_resume`). Sweeps
on other launchers, on one joblib worker (joblib then runs the jobs in the sweep's own
process) or with an optimising sweeper (Optuna reads each job's return value) keep the
trainer's own handling.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnlstm import sigint
from attnlstm.sigint import Interrupted, remember_start_up_interrupt, take_start_up_interrupt

log = logging.getLogger(__name__)

#: in the sweep folder while the sweep stops: jobs that start then do nothing
STOP_FILE = ".sweep_stopped"
#: the pid of the process that runs the sweep, for the jobs (workers inherit the environment)
SWEEP_PID_VARIABLE = "ATTNLSTM_SWEEP_PID"
#: the launcher whose pool kills its other jobs when one raises
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
#: the sweeper that runs a fixed list of jobs
LIST_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_stopped = False  # the last sweep of this process was stopped
_running = False  # a sweep in a joblib pool is under way in this process
_stopped_dir: Path | None = None  # the folder of the sweep that was stopped


def in_a_worker() -> bool:
    """Whether this process runs a job for a sweep in a joblib pool, in another process: an
    exception it raised would make joblib kill the other jobs."""
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
    """Whether the last sweep this process ran in a joblib pool ended by a stop (the command
    exits 130)."""
    return _stopped


def stopped_sweep_dir() -> Path | None:
    """The folder of the sweep in a joblib pool this process runs, or ran last if it was
    stopped; else None."""
    return _stopped_dir if _stopped or _running else None


def sweep_running() -> bool:
    """Whether this process is running a sweep in a joblib pool (between start and end)."""
    return _running


def _remember(signum: int, frame: FrameType | None) -> None:
    """SIGINT / SIGTERM in a worker's job outside the training loop: the loop stops before
    its first update (no exception: it could land in Hydra's or joblib's code)."""
    remember_start_up_interrupt()


def _current_sweep_dir() -> Path:
    """The folder of the sweep whose job this process runs (Hydra's ``hydra.sweep.dir``)."""
    return Path(str(HydraConfig.get().sweep.dir))


@contextmanager
def worker_job() -> Iterator[None]:
    """Around one job of a sweep in a worker (elsewhere: nothing).
    SIGINT, ignored in the worker, and SIGTERM are remembered for the training loop, whose own
    handler takes over while it runs; the first stop writes the stop file at once, so that
    no job starts meanwhile. After the job SIGINT is ignored again, and a stop the loop did
    not take (it came after the loop) stops the sweep."""
    if not in_a_worker() or threading.current_thread() is not threading.main_thread():
        yield
        return
    sweep_dir = _current_sweep_dir()
    sigint.on_stop_requested = lambda: request_stop(sweep_dir)
    previous = {sig: signal.signal(sig, _remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sigint.on_stop_requested = None
        if take_start_up_interrupt():
            request_stop(sweep_dir)


def _parallel_pool(config: DictConfig) -> bool:
    """Whether the sweep's jobs run two or more at a time in a joblib pool, from a list."""
    hydra_cfg = config.hydra
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    sweeper = str(hydra_cfg.get("sweeper", {}).get("_target_", LIST_SWEEPER))
    if launcher != JOBLIB_LAUNCHER or sweeper != LIST_SWEEPER:
        return False
    from joblib import effective_n_jobs  # installed with the joblib launcher

    n_jobs = hydra_cfg.launcher.get("n_jobs", -1)
    return bool(effective_n_jobs(-1 if n_jobs is None else int(n_jobs)) > 1)


class SweepStop(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): a stale stop file goes
    when a sweep starts; while the jobs run in a joblib pool, Ctrl-C stops the sweep without
    killing them (see the module's docstring)."""

    def __init__(self) -> None:
        self._sweep_dir = Path(".")
        self._requested = False
        self._previous: dict[int, _Handler] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into every job (Hydra's context): without the saved signal handlers."""
        return {"_sweep_dir": self._sweep_dir, "_requested": False, "_previous": {}}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _stopped, _running, _stopped_dir
        _stopped, _running = False, False
        os.environ.pop(SWEEP_PID_VARIABLE, None)  # a sweep before, on another launcher
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._requested = False
        (self._sweep_dir / STOP_FILE).unlink(missing_ok=True)
        if threading.current_thread() is not threading.main_thread():
            return
        if not _parallel_pool(config):
            return  # the jobs run here, or elsewhere than a joblib pool: as before
        _running, _stopped_dir = True, self._sweep_dir
        os.environ[SWEEP_PID_VARIABLE] = str(os.getpid())
        # ignored here, and so in the workers started from now on (see the docstring)
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle_term)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _stopped, _running
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        _stopped = _running and (self._requested or stop_requested(self._sweep_dir))
        _running = False
        os.environ.pop(SWEEP_PID_VARIABLE, None)

    def _handle_term(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM: no new job; a second one stops this process at once."""
        if self._requested:
            raise Interrupted
        self._requested = True
        request_stop(self._sweep_dir)
        log.warning(
            "SIGTERM received: the sweep starts no new job; running jobs carry on unless"
            " they get the signal too (SIGTERM again to stop at once)"
        )


__all__ = [
    "JOBLIB_LAUNCHER",
    "LIST_SWEEPER",
    "STOP_FILE",
    "SWEEP_PID_VARIABLE",
    "SweepStop",
    "in_a_worker",
    "request_stop",
    "stop_requested",
    "stopped_sweep_dir",
    "sweep_running",
    "sweep_was_stopped",
    "worker_job",
]
