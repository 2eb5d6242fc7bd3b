"""Entry point (``attnlstm-train``, ``python -m attnlstm``): compose -> build -> fit -> test.

attnlstm-train                                        # the default experiment
attnlstm-train model=lstm task=multiplication task.min_length=50
attnlstm-train -m attention=dot,general,concat,additive,feedforward
attnlstm-train resume=outputs/addition/lstm_attn-feedforward/<timestamp> trainer.max_epochs=20
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnlstm.config import TrainConfig, register_configs, validate
from attnlstm.console import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    fail,
)
from attnlstm.contracts import TaskSpec
from attnlstm.errors import ConfigError
from attnlstm.io import CHECKPOINT_VERSION, WriteError, load_checkpoint, write_text
from attnlstm.loggers import LOGGERS
from attnlstm.models import build_model, check_compatible
from attnlstm.paths import config_dir
from attnlstm.runfolder import LOCK_NAME, RunFolder, check_unused, claim, job_dirname
from attnlstm.runs import family_schemas, saved_config
from attnlstm.runtime import available_cores
from attnlstm.sweep_resume import (
    config_drift,
    job_plan,
    read_summary,
    record_plan,
    start_up_leftovers,
)
from attnlstm.sweep_stop import (
    in_a_worker,
    request_stop,
    stop_requested,
    stopped_sweep_dir,
    sweep_running,
    sweep_was_stopped,
    worker_job,
)
from attnlstm.sweeps import (
    apply_threads,
    check_objective,
    failed_trial,
    objective_value,
    sweeper_reads_objective,
    threads_for_job,
)
from attnlstm.tasks import build_task, task_family
from attnlstm.training import Trainer, distributed, resolve_device
from attnlstm.training.threads import ThreadGovernor, use_governor

log = logging.getLogger("attnlstm")

#: groups whose choice is part of a run's identity: a resumed run keeps them
_FIXED_ON_RESUME = ("task", "model", "attention", "optim", "experiment", "seed")


#: rank > 0 of a data-parallel run: Hydra's run folder is a scratch folder (rank 0 alone
#: writes the run's folder; Hydra would otherwise make one per process), removed at exit
_WORKER_DIR: str | None = None
#: the run folders this process has claimed (locked), by Hydra's output_dir
_CLAIMED: dict[str, RunFolder] = {}
#: the ``hydra.output_subdir`` chosen for each output_dir (Hydra may resolve it again)
_SUBDIRS: dict[str, str] = {}
#: a sweep job's plan by output_dir: new, resumed or done (see attnlstm.sweep_resume)
_SWEEP_PLANS: dict[str, str] = {}


class _NotStarted(KeyboardInterrupt):
    """A sweep job that starts after the sweep was stopped (:mod:`attnlstm.sweep_stop`)."""


def _run_dir(resume: str | None, default: str) -> str:
    """``hydra.run.dir``: the run to resume, or a fresh timestamped folder. A bad ``resume``
    ends the command here with one sentence (exit 2), before Hydra makes any folder."""
    if _WORKER_DIR is not None:  # rank > 0 of a data-parallel run: never the real folder
        return _WORKER_DIR
    if resume in (None, ""):
        _check_creatable(Path(default))
        return default
    path = Path(str(resume)).expanduser()
    example = "e.g. outputs/addition/lstm_attn-feedforward/<timestamp>"
    if not path.exists():
        fail(f"resume={resume}: no such folder; resume takes an earlier run's folder ({example})")
    if not path.is_dir():
        fail(
            f"resume={resume} is a file; resume takes the folder of an earlier run, the one"
            f" that holds last.pt ({example})"
        )
    if not (path / "last.pt").is_file():
        fail(
            f"resume={resume}: no last.pt there, so there is nothing to resume (a run that"
            " stopped before its first update has no checkpoint); resume takes the folder of"
            f" an earlier run ({example})"
        )
    return str(path)


def _check_creatable(folder: Path) -> None:
    """End the command with a sentence (exit 2) when ``folder`` cannot be made: a file in the
    way, or a read-only or immutable place. Nothing is made here (Hydra may resolve the run
    folder more than once; a folder it does not use must not appear): a scratch folder is
    made and removed in the nearest existing folder above, which also catches read-only
    mounts for root, whom permission bits do not stop."""
    import tempfile

    folder = folder.expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        fail(f"{folder} is a file, not a folder; choose another hydra.run.dir")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        Path(tempfile.mkdtemp(prefix=".attnlstm-probe-", dir=existing)).rmdir()
    except OSError as error:
        fail(
            f"cannot make the run folder {folder}: {error.strerror or error}; run from a"
            " writable folder, or choose one with hydra.run.dir=<folder>"
        )


def _check_run_dir_overrides(args: list[str]) -> None:
    """Before Hydra starts: an explicit ``hydra.run.dir=<folder>`` (or ``hydra.sweep.dir``)
    must be a folder that can be made, else Hydra fails with a traceback making it; and
    ``resume=`` names the folder itself, so it does not go with ``hydra.run.dir``."""
    keys = {arg.partition("=")[0].lstrip("+~") for arg in args if "=" in arg}
    resuming = any(arg.startswith("resume=") and arg != "resume=null" for arg in args)
    if resuming and "hydra.run.dir" in keys:
        fail("resume=<run dir> continues the run in its own folder; leave out hydra.run.dir")
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir"):
            value = value.strip("'\"")
            if value and "${" not in value:
                if key.lstrip("+") == "hydra.run.dir" and "-m" not in args:
                    try:  # before Hydra opens its train.log in it
                        check_unused(Path(value))
                    except ConfigError as error:
                        fail(str(error))
                _check_creatable(Path(value))


def _hydra_subdir(resume: str | None, output_dir: str, mode: str = "RUN") -> str:
    """``hydra.output_subdir``, resolved before Hydra writes anything into ``output_dir``:
    the place to claim the run folder (see :mod:`attnlstm.runfolder`). A fresh run needs an
    unused folder; a resumed run keeps the ``.hydra/`` of its first session and writes its own
    beside it. A refusal ends the command with one sentence (exit 2), the folder untouched.
    A sweep job (``mode`` MULTIRUN) whose folder exists is skipped or resumed instead
    (:mod:`attnlstm.sweep_resume`)."""
    if output_dir in _SUBDIRS:
        return _SUBDIRS[output_dir]
    if _WORKER_DIR is not None:  # rank > 0: a scratch folder, nothing to claim
        return ".hydra"
    fresh = resume in (None, "")
    folder = Path(output_dir)
    if fresh and "MULTIRUN" in str(mode) and folder.is_dir():
        plan = job_plan(folder)
        _SWEEP_PLANS[output_dir] = plan
        if plan == "done":  # Hydra's files of this session go to a scratch folder
            import tempfile

            _SUBDIRS[output_dir] = tempfile.mkdtemp(prefix="attnlstm-skipped-")
            return _SUBDIRS[output_dir]
        if plan == "resumed":
            fresh = False
        else:
            for leftover in start_up_leftovers(folder):
                if leftover.name == "train.log" and leftover.stat().st_size == 0:
                    continue  # Hydra's logging has just opened it for this job
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    try:
        _CLAIMED[output_dir] = claim(Path(output_dir), fresh=fresh)
    except ConfigError as error:
        fail(str(error))
    from datetime import datetime

    subdir = ".hydra" if fresh else f".hydra-resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    _SWEEP_PLANS.setdefault(output_dir, "new" if fresh else "resumed")
    _SUBDIRS[output_dir] = subdir
    return subdir


register_configs(family_schemas())
OmegaConf.register_new_resolver("attnlstm_job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("attnlstm_run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("attnlstm_hydra_subdir", _hydra_subdir, replace=True)


def _drift_since(cfg: DictConfig, run_dir: Path) -> list[str]:
    """The config keys in which a finished sweep job's saved config.yaml differs from the
    one composed for it now (:func:`attnlstm.sweep_resume.config_drift`); empty when the
    file is missing or unreadable."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        current = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # no config.yaml (a record without one): nothing to compare
        return []
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return []
    return config_drift(saved, current)  # type: ignore[arg-type]


def config_for_resume(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The stopped run's own config, with the command line's ``key=value`` overrides applied
    (e.g. ``trainer.max_epochs=50``; a new ``device=`` is allowed too)."""
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
    else:
        saved = OmegaConf.create(load_checkpoint(run_dir / "last.pt")["config"])
    had_loggers = "logger" in saved
    saved = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved_config(saved))
    if not had_loggers:  # a run from before the logger group: the default loggers
        saved.logger = cfg.logger
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        root = key.split(".", 1)[0]
        if key == "resume" or root == "hydra":
            continue
        if root in _FIXED_ON_RESUME:
            raise ConfigError(
                f"resume continues a run with its own config, so '{override}' cannot change it;"
                " only trainer.*, device and similar keys may change (start a new run instead)"
            )
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False)
    saved.resume = str(run_dir)
    return saved


def resumable_checkpoint(run_dir: Path, spec: TaskSpec, device: torch.device) -> dict[str, Any]:
    """``last.pt`` of the run to resume, checked before anything is trained or written: a
    format this attnlstm reads, and a task whose data give the model the same shape (the
    vocabularies built from today's files match the run's)."""
    checkpoint = load_checkpoint(run_dir / "last.pt", device)
    version = checkpoint.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ConfigError(
            f"{run_dir / 'last.pt'} has checkpoint format version {version}; this attnlstm"
            f" resumes versions up to {CHECKPOINT_VERSION} (update attnlstm)"
        )
    saved = checkpoint.get("spec")  # version 1 did not store it
    if saved is not None and TaskSpec.from_dict(saved) != spec:
        raise ConfigError(
            f"resume={run_dir}: the task built from today's data does not match the run's"
            f" (run: {TaskSpec.from_dict(saved)}, now: {spec}); the data files or the data"
            " directory changed since the run started; resume with the same data"
        )
    return checkpoint


def _resolve_vocab_order(cfg: DictConfig) -> None:
    """``task.vocab_order=auto`` becomes ``frequency`` for a model with an adaptive softmax
    (its head must hold the frequent words) and ``first_seen`` otherwise, in ``cfg`` itself,
    so that config.yaml and the checkpoint record the order the task was built with."""
    if OmegaConf.select(cfg, "task.vocab_order", default=None) != "auto":
        return
    adaptive = OmegaConf.select(cfg, "model.decoder", default=None) == "adaptive"
    cfg.task.vocab_order = "frequency" if adaptive else "first_seen"


def check_config(cfg: DictConfig) -> TrainConfig:
    """Every check that needs no data, in the order a user would fix them: each key's range
    (the schemas), then the model against the attention method and the task family (the
    registries' capabilities), then the device. Returns the typed config."""
    _resolve_vocab_order(cfg)
    typed = validate(cfg)
    family = task_family(cfg.task)
    check_compatible(
        typed.model, typed.attention, family.target, family.inputs, task=str(cfg.task.name)
    )
    for key, logger in typed.logger.items():
        entry = LOGGERS.get(logger.name)  # ConfigError listing the loggers
        missing = entry.needs_module is not None and importlib.util.find_spec(entry.needs_module)
        if missing is None:
            raise ConfigError(
                f"logger.{key}.name={logger.name} is not allowed here: it needs the"
                f' {entry.needs_module} package (pip install "attnlstm[{logger.name}]"); or'
                " choose logger=tensorboard or logger=csv"
            )
    return typed


def build_trainer(
    cfg: DictConfig, run_dir: Path, checkpoint_wanted: bool = False
) -> tuple[Trainer, dict[str, Any] | None]:
    """Check ``cfg``, build the task, the model and the trainer for ``run_dir``; with
    ``checkpoint_wanted``, also load and check the run's ``last.pt`` (resume). Nothing is
    written. Returns the trainer and the checkpoint to resume from (or None)."""
    typed = check_config(cfg)
    device = resolve_device(typed.device.type, typed.device.index)
    env = distributed.detect()
    if env.active and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", env.local_rank)
    torch.manual_seed(typed.seed)
    try:
        task = build_task(typed.task, typed.seed, typed.data_dir)
        model = build_model(typed.model, typed.attention, task.spec)
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "alloc" not in str(error).lower():
            raise
        raise ConfigError(
            "not enough memory to build the task's data and the model"
            f" ({str(error).splitlines()[0][:120]}); lower task.batch_size, the lengths"
            " (task.min_length / task.max_length), task.eval_size or the model's sizes"
        ) from None
    checkpoint = resumable_checkpoint(run_dir, task.spec, device) if checkpoint_wanted else None
    log.info("run directory: %s", run_dir)
    log.info(
        "task %s, model %s, attention %s: %d parameters on %s",
        cfg.task.name,
        cfg.model.name,
        cfg.attention.method,
        sum(p.numel() for p in model.parameters()),
        device,
    )
    trainer = Trainer(
        task,
        model,
        device,
        run_dir,
        typed.trainer,
        typed.optim,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        loggers=typed.logger,
    )
    return trainer, checkpoint


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the task, model and trainer from ``cfg`` and train in Hydra's run directory.
    ``config.yaml`` is written once the run's state is restored (a resume that fails leaves
    the folder's files as they were). Under torchrun or SLURM with several processes, they
    join one process group and train one run in rank 0's folder."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    env = distributed.detect()
    if env.active:
        wants_cuda = str(cfg.device.type) != "cpu" and torch.cuda.is_available()
        distributed.initialise(env, torch.device("cuda" if wants_cuda else "cpu"))
        run_dir = Path(distributed.broadcast(str(run_dir), env))  # rank 0's folder
        if env.rank == 0:
            log.info("data parallel: %d processes, this one is rank 0", env.world_size)
    try:
        return _run_in(cfg, run_dir, hydra_cfg, env)
    finally:
        distributed.finish()


def use_threads(cfg: DictConfig, stack: contextlib.ExitStack) -> None:
    """Set this run's CPU threads from ``cfg``, the config the run trains with: on a resume,
    the stopped run's own (a run that fixed ``trainer.threads`` for exact numbers keeps them;
    the command line's ``resume=...`` alone does not set them). ``trainer.threads`` when set;
    else a parallel launcher's share of the cores (jobs x threads <= cores), which the thread
    governor then lowers to the cores other processes leave free, until ``stack`` closes."""
    configured = cfg.trainer.get("threads")
    share = threads_for_job(configured)
    apply_threads(share)
    if configured is None:
        governor = ThreadGovernor(share or torch.get_num_threads(), cores=available_cores())
        stack.callback(governor.install().remove)
        stack.callback(use_governor(governor))


def _run_in(
    cfg: DictConfig, run_dir: Path, hydra_cfg: Any, env: distributed.DistributedEnv
) -> dict[str, Any]:
    plan = _SWEEP_PLANS.get(str(run_dir)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    if plan is not None:
        record_plan(Path(hydra_cfg.sweep.dir), hydra_cfg.job.override_dirname, plan)
    if plan == "done":  # print, not log: the job's train.log stays as it was
        summary = read_summary(run_dir) or {}
        drift = _drift_since(cfg, run_dir)
        note = (
            f"; its config.yaml differs from what this sweep composes today in"
            f" {', '.join(drift[:5])}{' ...' if len(drift) > 5 else ''}: move its folder"
            " away to run it again"
            if drift
            else ""
        )
        print(f"job {run_dir.name}: finished before ({summary.get('status')}); skipped{note}")
        return summary
    if plan == "resumed" and not cfg.resume:  # the job's own config, its overrides included
        log.info("job %s: resuming from its last.pt", run_dir.name)
        cfg = config_for_resume(cfg, run_dir, [])
    elif cfg.resume:
        cfg = config_for_resume(cfg, run_dir, list(hydra_cfg.overrides.task))
    elif (run_dir / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; it is never overwritten")
    with contextlib.ExitStack() as threads:  # set from the run's own config, resumed or not
        use_threads(cfg, threads)
        trainer, checkpoint = build_trainer(cfg, run_dir, checkpoint_wanted=bool(cfg.resume))
        trainer.setup(checkpoint)
        if trainer.writes_results and trainer.owns_run_folder:
            write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
        summary = trainer.run(checkpoint)
    if not trainer.owns_run_folder:
        return summary
    if trainer.writes_results:
        log.info(
            "run folder: %s\n  metrics:     %s\n  TensorBoard: tensorboard --logdir %s\n"
            "  compare:     attnlstm-compare %s",
            run_dir,
            run_dir / "metrics.json",
            run_dir,
            run_dir.parent,
        )
    else:
        log.info(
            "fast_dev_run: done; no checkpoint, metrics.json or logger output was written"
            " (the run's folder holds only its train.log and config)"
        )
    return summary


def _clean_up_failed_start(run_dir: Path, hydra_subdir: str | None) -> bool:
    """After a run that did no work (it failed or was stopped before its first checkpoint):
    remove what this invocation made in ``run_dir``. A new run's folder goes (and the empty
    folders made for it); a resumed run loses only this session's ``.hydra-resume-*``.
    Returns whether the run folder itself was removed."""
    claimed = _CLAIMED.get(str(run_dir))
    if claimed is None or not run_dir.is_dir():
        return False
    if not claimed.fresh:
        if hydra_subdir and hydra_subdir.startswith(".hydra-resume-"):
            shutil.rmtree(run_dir / hydra_subdir, ignore_errors=True)
        return False
    if (run_dir / "last.pt").exists():  # it trained: keep everything
        return False
    for child in run_dir.iterdir():  # the folder was empty before this run claimed it
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name != LOCK_NAME:
            child.unlink(missing_ok=True)
    if claimed.existed:
        return False
    claimed.release()
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()
        for parent in run_dir.parents:  # and the folders made for it, while empty
            if parent == Path.cwd() or any(parent.iterdir()):
                break
            parent.rmdir()
    return not run_dir.exists()


def _close_file_logs() -> None:
    """Close the train.log handler, so that a removed run folder is not recreated by it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            root.removeHandler(handler)


def _log_traceback_to_file(error: BaseException) -> None:
    """The traceback of an unexpected error, in train.log only (the console shows a sentence)."""
    record = logging.LogRecord(
        "attnlstm", logging.ERROR, __file__, 0, "traceback", None, (type(error), error, None)
    )
    record.exc_info = (type(error), error, error.__traceback__)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _out_of_memory(error: BaseException) -> bool:
    """PyTorch reports a failed allocation as a RuntimeError (CPU) or OutOfMemoryError."""
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _unexpected(failure: BaseException, run_dir: Path) -> str:
    """The sentence for an error attnlstm did not foresee (a bug): its type and first line,
    and where the traceback is (train.log), which it also writes there."""
    _log_traceback_to_file(failure)
    first_line = str(failure).splitlines()[0] if str(failure) else ""
    return (
        f"{type(failure).__name__}: {first_line} (unexpected: the traceback is in"
        f" {run_dir / 'train.log'}; ATTNLSTM_DEBUG=1 shows it here)"
    )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job (:func:`_job`); in a joblib worker, with SIGINT taken only while it runs
    (:func:`attnlstm.sweep_stop.worker_job`)."""
    with worker_job():
        return _job(cfg)


def _job(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job and turn how it ended into an exit code (:mod:`attnlstm.console`). In a
    sweep (``-m``), a job that fails or diverges is logged and the sweep goes on."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    job = hydra_cfg.job.override_dirname
    code, message, error = 0, "", None
    summary = None
    optimized = cfg.get("optimized_metric")
    if sweeping:
        try:  # a metric no run can have ends the study at once, not trial after trial
            check_objective(optimized)
        except ConfigError as failure:
            fail(str(failure))
    try:
        if sweeping and stop_requested(Path(hydra_cfg.sweep.dir)):
            # counted in the sweep's summary line, so that its total is every job
            record_plan(Path(hydra_cfg.sweep.dir), job, "not_started")
            raise _NotStarted
        summary = run(cfg)
        if summary.get("status") == "diverged":
            code = EXIT_DIVERGED
            kept = (
                " and the checkpoints of its last good epoch"
                if (run_dir / "last.pt").exists()
                else ""
            )
            message = (
                f"the run diverged ({summary.get('error', 'loss not finite')}); its"
                f" metrics.json{kept} are in {run_dir}"
            )
    except ConfigError as failure:
        code, message = EXIT_BAD_INPUT, str(failure)
    except KeyboardInterrupt as stop:
        code = EXIT_INTERRUPTED
        message = "interrupted"
        if isinstance(stop, _NotStarted):
            message = "not started: the sweep was stopped"
        elif not (run_dir / "last.pt").exists():
            message = "interrupted before the first update; nothing was trained"
    except WriteError as failure:
        code, message, error = EXIT_FAILED, str(failure), failure
    except (MemoryError, RuntimeError) as failure:
        code, error = EXIT_FAILED, failure
        if isinstance(failure, MemoryError) or _out_of_memory(failure):
            message = (
                "out of memory; lower task.batch_size (and task.eval_batch_size), the"
                " sequence lengths or the model's sizes"
                f" ({str(failure).splitlines()[0][-90:] if str(failure) else 'MemoryError'})"
            )
        else:
            message = _unexpected(failure, run_dir)
    except Exception as failure:
        code, error = EXIT_FAILED, failure
        message = _unexpected(failure, run_dir)
    finally:
        if code in (EXIT_BAD_INPUT, EXIT_INTERRUPTED) or (
            code == EXIT_FAILED and not (run_dir / "last.pt").exists()
        ):
            if code != EXIT_FAILED:
                _close_file_logs()
            if _clean_up_failed_start(run_dir, hydra_cfg.output_subdir) and code == EXIT_FAILED:
                message = message.replace(f" the traceback is in {run_dir / 'train.log'};", "")
        claimed = _CLAIMED.pop(str(run_dir), None)
        if claimed is not None:
            claimed.release()
    reads_objective = sweeping and sweeper_reads_objective(optimized)
    if code == 0:
        if reads_objective and summary is not None:  # an Optuna trial: its number
            try:
                return objective_value(summary, str(optimized))  # TrialFailed: a failed trial
            except ConfigError as failure:
                fail(str(failure))
        return summary
    if sweeping and code != EXIT_INTERRUPTED:  # one bad job does not stop a sweep
        outcome = {EXIT_BAD_INPUT: "skipped", EXIT_DIVERGED: "diverged"}.get(code, "failed")
        log.error("%s job %s: %s", outcome, job or "(no overrides)", message)
        if reads_objective:  # the sweeper records the trial as failed and goes on
            failed_trial(f"{outcome} job {job}: {message}")
        return summary
    if code == EXIT_INTERRUPTED and sweeping and in_a_worker():
        # raising would make joblib kill the other jobs, perhaps while they save: stop the
        # sweep instead, and let the other jobs stop by themselves (attnlstm.sweep_stop)
        request_stop(Path(hydra_cfg.sweep.dir))
        log.warning("job %s: %s", job or "(no overrides)", message)
        return summary
    if code == EXIT_INTERRUPTED:
        # the trainer has said how to resume when it saved; rank > 0 has nothing to add
        if _WORKER_DIR is None and not (run_dir / "last.pt").exists():
            print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code)
    fail(message, code, error)


def _become_worker() -> None:
    """Rank > 0 of a data-parallel run: Hydra runs in a scratch folder, with the console
    quiet below warnings (rank 0 reports); the scratch folder goes when the process ends."""
    global _WORKER_DIR
    import atexit
    import tempfile

    _WORKER_DIR = tempfile.mkdtemp(prefix="attnlstm-rank-")
    atexit.register(shutil.rmtree, _WORKER_DIR, True)
    sys.argv += [f"hydra.run.dir={_WORKER_DIR}", "hydra.output_subdir=null"]
    logging.getLogger("attnlstm").setLevel(logging.WARNING)


def main() -> None:
    """Console entry point."""
    if distributed.detect().rank > 0:
        _become_worker()
        _hydra_main()
        return
    _check_run_dir_overrides(sys.argv[1:])
    try:
        _hydra_main()
    except KeyboardInterrupt:  # in Hydra's own start-up or clean-up, outside the job
        _close_file_logs()
        for output_dir, claimed in list(_CLAIMED.items()):
            _clean_up_failed_start(Path(output_dir), _SUBDIRS.get(output_dir))
            claimed.release()
        if sweep_running():  # a second SIGTERM while the jobs of a sweep ran in workers
            print(_stopped_sweep(at_once=True), file=sys.stderr)
        else:
            print("error: interrupted during start-up; nothing was trained", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if sweep_was_stopped():
        print(_stopped_sweep(), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED)


def _stopped_sweep(at_once: bool = False) -> str:
    """What a stopped sweep's command says last: how to finish the sweep."""
    folder = stopped_sweep_dir()
    again = f" with hydra.sweep.dir={folder}" if folder is not None else ""
    how = (
        " (stopped at once: each job keeps its last checkpoint)"
        if at_once
        else " (finished jobs are skipped, stopped ones resume from their last.pt)"
    )
    return f"error: the sweep was stopped; the same command{again} finishes it{how}"


__all__ = ["build_trainer", "config_for_resume", "main", "run"]
