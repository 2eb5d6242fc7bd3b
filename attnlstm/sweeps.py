"""Scaling out on Hydra's own engines: CPU threads per job, the number an optimising sweeper
reads, and what a trial that has no number reports. See docs/sweeps.md for the commands.

Threads. A parallel launcher runs several jobs on one machine at once; each PyTorch process
would otherwise use every core, and jobs x threads > cores slows them all.
:func:`threads_for_job` picks a job's share from ``trainer.threads`` or, when that is null,
from the launcher's own settings (``hydra.launcher``); :func:`apply_threads` sets it.

Objective. ``optimized_metric`` (``conf/hparams_search/*``) names the number a job returns to
an optimising sweeper (Optuna): :func:`objective_value` reads it from the job's summary (the
dict written to ``metrics.json``).

A trial without a number: the run failed, diverged or its sampled config was refused. What
the job then does was decided from hydra-optuna-sweeper 1.3's ``_impl.py`` (with optuna 2.10)
and tried on it:

- returning NaN ends the whole study: ``study.tell(values=[nan])`` raises, the sweeper's
  ``except`` branch tells the trial FAIL *with* the NaN values, which raises again, out of
  the sweeper (a traceback, exit 1; the trial stays RUNNING in the storage);
- returning +-inf records a COMPLETE trial with a made-up value that the sampler learns from
  and that can even become the "best" one;
- returning ``None`` (anything not float-castable) records FAIL and carries on, but only
  because of a quirk: it bypasses ``max_failure_rate`` and logs "Return value must be
  float-castable";
- raising an exception: Hydra's ``run_job`` catches it (the JobReturn is FAILED), the sweeper
  tells Optuna the trial FAILED, logs "Failed experiment: <the exception>", and goes on as
  long as the batch's failures stay within ``hydra.sweeper.max_failure_rate`` (default 0.0:
  the first failure ends the study; ``conf/hparams_search/*`` set 1.0: never).

So a trial without a number raises :class:`TrialFailed` (:func:`failed_trial`). That only
goes to a sweeper that reads return values (:func:`sweeper_reads_objective`): Hydra's basic
sweeper (a plain ``-m`` grid) ends the whole sweep on a job that raises, so there a failed
job keeps returning as before. An ``optimized_metric`` that no run can produce is no trial's
fault: :func:`check_objective` finds it before training and :func:`objective_value` raises a
:class:`~attnlstm.errors.ConfigError`, which should end the study (exit 2) rather than fail
every trial in turn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnlstm.errors import ConfigError
from attnlstm.runtime import available_cores

log = logging.getLogger(__name__)

# -- threads ---------------------------------------------------------------------------------

#: ``hydra.launcher._target_`` class names, by plugin
_JOBLIB = "JoblibLauncher"
_SUBMITIT = ("LocalLauncher", "SlurmLauncher")
_RAY = ("RayLauncher", "RayAWSLauncher")

#: whether this process already set PyTorch's inter-op threads (possible once only)
_interop_threads_set: list[bool] = [False]


def _joblib_workers(n_jobs: Any, cores: int) -> int:
    """How many jobs joblib runs at once for ``n_jobs``: a count, or -1 for every core,
    -2 for all but one, ... (joblib's rule); null is 1."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    if n < 0:
        n = cores + 1 + n
    return max(1, n)


def launcher_threads(launcher: Mapping[str, Any] | None, cores: int) -> int | None:
    """The PyTorch threads one job should use under ``launcher`` (the ``hydra.launcher``
    config) on a machine with ``cores`` cores, or None to leave PyTorch's default.

    - joblib (``hydra/launcher=joblib``): ``n_jobs`` jobs share the machine, so each gets
      ``cores // n_jobs`` (at least 1); one job at a time (``n_jobs=1``): None;
    - submitit (``submitit_local``, ``submitit_slurm``): ``cpus_per_task`` when set (Slurm
      binds the job to them anyway), else None;
    - ray: the cores reserved for each job, ``ray.remote.num_cpus``; Ray's default
      reservation is 1 core (and Ray sets ``OMP_NUM_THREADS=1`` then);
    - Hydra's basic launcher (one job after the other) or anything else: None.
    """
    if not launcher:
        return None
    target = str(launcher.get("_target_") or "").rsplit(".", 1)[-1]
    if target == _JOBLIB:
        workers = _joblib_workers(launcher.get("n_jobs", -1), cores)
        return max(1, cores // workers) if workers > 1 else None
    if target in _SUBMITIT:
        cpus = launcher.get("cpus_per_task")
        return int(cpus) if cpus else None
    if target in _RAY:
        remote = (launcher.get("ray") or {}).get("remote") or {}
        cpus = remote.get("num_cpus")
        return max(1, int(cpus)) if cpus else 1
    return None


def _launcher_config() -> Mapping[str, Any] | None:
    """This job's ``hydra.launcher`` config (its keys resolved when read), or None outside a
    Hydra job."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().get("launcher")
    return launcher if isinstance(launcher, DictConfig) else None


def threads_for_job(configured: int | None) -> int | None:
    """The PyTorch CPU threads this job should use: ``configured`` (``trainer.threads``) when
    set; else, under a launcher that runs several jobs on one machine, this job's share of the
    cores (:func:`launcher_threads`); else None (PyTorch's default: every core, or what
    ``OMP_NUM_THREADS`` says). Outside a Hydra job (tests, a notebook): ``configured``."""
    if configured is not None:
        return configured
    return launcher_threads(_launcher_config(), available_cores())


def apply_threads(n: int | None) -> None:
    """Make PyTorch use ``n`` CPU threads for its operators (``torch.set_num_threads``) and,
    the first time only, for inter-op parallelism (``torch.set_num_interop_threads``, which
    PyTorch refuses once parallel work has started or it was set before: then it keeps its
    value, and the call is skipped with a debug line). None changes nothing."""
    if n is None:
        return
    if n < 1:
        raise ConfigError(f"trainer.threads={n} is not allowed: it must be positive, or null")
    import torch

    torch.set_num_threads(n)
    if not _interop_threads_set[0]:
        _interop_threads_set[0] = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError as error:  # parallel work has started already
            log.debug("inter-op threads stay at %d: %s", torch.get_num_interop_threads(), error)
    log.debug("PyTorch CPU threads: %d", n)


# -- the objective ---------------------------------------------------------------------------

#: the summary's blocks the objective reads, by the prefix of their keys
_BLOCK_OF_PREFIX = {"test/": "test", "val/": "best"}
#: ``status`` values of a run that produced no result (metrics.json, Trainer.run)
_NO_RESULT = ("diverged", "failed", "interrupted", "running")


class TrialFailed(RuntimeError):
    """A trial of an optimising sweep that has no objective value: its run failed, diverged,
    or its sampled config was refused. Raised from the job: the sweeper records the trial as
    FAILED and the study goes on (within ``hydra.sweeper.max_failure_rate``)."""


def check_objective(optimized_metric: str | None) -> None:
    """Before any training: the ``optimized_metric`` a sweep will ask for can exist, and an
    optimising sweeper has one. ConfigError otherwise (it names the key and the fix)."""
    if optimized_metric is None:
        if optimising_sweeper():
            raise ConfigError(
                "optimized_metric is not set, but the sweeper optimises a number each job"
                " returns; set it (e.g. optimized_metric=val/loss) or use a preset,"
                " hparams_search=lstm_attn_addition"
            )
        return
    if not any(
        optimized_metric.startswith(prefix) and len(optimized_metric) > len(prefix)
        for prefix in _BLOCK_OF_PREFIX
    ):
        raise ConfigError(
            f"optimized_metric={optimized_metric} is not allowed: it is test/<metric> (the test"
            " split, with the best checkpoint) or val/<metric> (validation, at the best epoch),"
            " e.g. val/loss or test/accuracy"
        )


def available_objectives(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers an ``optimized_metric`` can name in ``summary`` (``metrics.json``):
    ``test/<m>`` from ``test`` (the test split, evaluated with the best checkpoint) and
    ``val/<m>`` from ``best`` (validation at the best epoch, the one whose checkpoint is kept
    and tested, as chosen by the task's monitor, ``summary["monitor"]``)."""
    found: dict[str, float] = {}
    for prefix, block in _BLOCK_OF_PREFIX.items():
        values = summary.get(block) or {}
        for key, value in values.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and str(key).startswith(prefix):
                found[str(key)] = float(value)
    return found


def objective_value(summary: Mapping[str, Any], metric: str) -> float:
    """The number a sweeper optimises for this job: ``metric`` read from the job's
    ``summary`` (the dict written to ``metrics.json``; see :func:`available_objectives`).

    ``test/<m>`` is the test split's value with the best checkpoint; ``val/<m>`` the
    validation value at the best epoch (the task's monitor picks it: for its own metric,
    e.g. ``val/loss`` of a language model or ``val/accuracy`` of the addition problem, that is
    the best value reached; for another metric, its value at that epoch).

    Raises :class:`~attnlstm.errors.ConfigError` when ``metric`` is not among the summary's
    numbers (listing them): every trial would fail the same way, so the study should end.
    Raises :class:`TrialFailed` when the run has no result (diverged, failed, interrupted) or
    the value is NaN or infinite (a sweeper must never be handed NaN; see the module's
    docstring).
    """
    check_objective(metric)
    status = summary.get("status")
    if status in _NO_RESULT:
        reason = summary.get("error")
        raise TrialFailed(f"the run {status}{f' ({reason})' if reason else ''}: no {metric}")
    values = available_objectives(summary)
    if metric not in values:
        names = ", ".join(sorted(values)) or "none (the run wrote no test or best metrics)"
        raise ConfigError(
            f"optimized_metric={metric} is not among this run's metrics; choose one of: {names}"
        )
    value = values[metric]
    if not math.isfinite(value):
        raise TrialFailed(f"{metric} is {value}: the run has no usable objective value")
    return value


def optimising_sweeper() -> bool:
    """Whether this is a multirun job of a sweeper that reads the jobs' return values: any
    sweeper but Hydra's basic one (a plain ``-m`` grid ignores return values, and ends the
    whole sweep on a job that raises). False outside a Hydra job."""
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.get("mode") != RunMode.MULTIRUN:
        return False
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "")
    return bool(target) and not target.endswith(".BasicSweeper")


def sweeper_reads_objective(optimized_metric: str | None) -> bool:
    """Whether this job's return value is an objective a sweeper optimises: an
    ``optimized_metric`` is set and :func:`optimising_sweeper`."""
    return optimized_metric is not None and optimising_sweeper()


def failed_trial(message: str) -> NoReturn:
    """End this trial as FAILED for an optimising sweeper: raise :class:`TrialFailed` with
    ``message`` (the one sentence the job logged). See the module's docstring for why a
    failed or diverged trial raises rather than return NaN, inf or None."""
    raise TrialFailed(message)


# -- Optuna's storage ------------------------------------------------------------------------


class MakeSweepDir(Callback):
    """A Hydra callback (``hydra.callbacks``) that makes the sweep folder when a multirun
    starts: an SQLite storage inside it (``sqlite:///${hydra.sweep.dir}/optuna.db``) is
    opened by the sweeper before any job, and Hydra makes the folder only when it launches
    the first one."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot make the sweep folder {folder}: {error.strerror or error}; choose"
                " another with hydra.sweep.dir=<folder>"
            ) from None


__all__ = [
    "MakeSweepDir",
    "TrialFailed",
    "apply_threads",
    "available_cores",
    "available_objectives",
    "check_objective",
    "failed_trial",
    "launcher_threads",
    "objective_value",
    "optimising_sweeper",
    "sweeper_reads_objective",
    "threads_for_job",
]
