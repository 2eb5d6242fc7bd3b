"""The one training loop: every task trains, evaluates, logs and checkpoints through it.

Lifecycle (as torchtune's recipes)::

    trainer = Trainer(task, model, device, run_dir, trainer_cfg, optim_cfg, config)
    trainer.setup(checkpoint=None)   # loggers; a stopped run's state when resuming
    trainer.fit()                    # epochs: train, validate, checkpoint (last.pt, best.pt)
    trainer.test()                   # the best checkpoint on the test split
    trainer.close(status)            # metrics.json with the final status, loggers closed

``run()`` does all of it and records how the run ended in ``metrics.json``: ``completed``
(max_epochs reached), ``solved``, ``early_stopped``, ``interrupted``, ``diverged``, or
``failed`` with the exception's one-line summary; never ``running`` once the process is done.
The trainer emits one record per logged step and one per epoch to a
:class:`~attnlstm.loggers.Logger`; which backends store them is the logger config's business.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from attnlstm.config import OptimConfig, TrainerConfig
from attnlstm.contracts import TaskSpec
from attnlstm.errors import ConfigError
from attnlstm.io import (
    CHECKPOINT_VERSION,
    WriteError,
    evaluated_weights,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from attnlstm.loggers import Logger, LoggerCollection, build_loggers, flatten_config
from attnlstm.plots import attention_figure, attention_image, attention_matrix_image
from attnlstm.runtime import available_cores, processor_name
from attnlstm.tasks.base import Task
from attnlstm.training import distributed, precision
from attnlstm.training.averaging import build_averaging
from attnlstm.training.interrupt import StopRequest, StopRequested
from attnlstm.training.optim import build_optimizer, build_scheduler, continue_schedule
from attnlstm.training.threads import epoch_threads, poll_threads

log = logging.getLogger(__name__)

#: how a run that stopped by itself ended, by its stop reason
_STATUS_OF_STOP = {
    "max_epochs": "completed",
    "solved": "solved",
    "early_stopping": "early_stopped",
    "diverged": "diverged",
}


class TrainingDiverged(RuntimeError):
    """The training loss or the validation monitor became NaN or infinite."""


def batch_limit(limit: int | float | None, total: int | None) -> int | None:
    """How many batches ``trainer.limit_*_batches`` allows out of ``total``: an int is a
    count, a float in (0, 1] a fraction (at least one batch); None: all of them."""
    if limit is None:
        return None
    if isinstance(limit, float):
        if total is None:
            return None
        return max(1, int(total * limit))
    return int(limit)


@dataclass
class TrainState:
    """Everything about the loop's progress that a resumed run needs."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed updates
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    solved_epoch: int | None = None  # first epoch whose validation solved the task
    stop_reason: str | None = None  # solved | early_stopping | max_epochs | diverged
    wall_time_s: float = 0.0  # training time over all sessions of the run
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class EpochProgress:
    """Where the loop stands inside an epoch, for a checkpoint taken between two updates
    (a stop, or ``trainer.checkpoint_every_n_steps``). Resuming rebuilds the epoch's batch
    stream from ``task_at_start`` (the task's generator state when the epoch began), draws
    and drops the first ``batches`` batches (the tasks draw their batches from their own
    generator only, so this replays the stream exactly), then restores ``stream`` (what the
    task carries between batches, e.g. a language model's hidden state) and trains on."""

    epoch: int
    steps_before: int  # completed updates when the epoch began
    task_at_start: dict[str, Any]
    batches: int = 0  # updates done in this epoch
    loss_sum: float = 0.0
    samples: int = 0
    train_time_s: float = 0.0
    cpu_time_s: float = 0.0  # this process's CPU time while training (all its threads)
    stream: dict[str, Any] = field(default_factory=dict)
    trained: bool = False  # every batch of the epoch is done (a stop came in validation)


class _NoProfiler:
    """What :meth:`Trainer._profiler` returns when nothing is profiled."""

    def __enter__(self) -> _NoProfiler:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self) -> None:
        return None


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (the final metrics.json is written even
    if a second signal arrives during clean-up); elsewhere than the main thread, a no-op."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        blocked = True
    except (AttributeError, ValueError, OSError):  # not POSIX, or not the main thread
        blocked = False
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def machine_record(device: torch.device) -> dict[str, Any]:
    """When and on what a run's metrics were last written: UTC time, CPU model, the cores
    this process may use, torch version and the device trained on (``metrics.json``'s
    ``written``), so that a result carries its machine and date (no host name: records of
    runs are kept in the repository)."""
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": processor_name(),
        "cores": available_cores(),
        "torch": torch.__version__,
        "device": str(device),
    }


class Trainer:
    """Trains ``model`` on ``task`` as ``trainer_cfg`` and ``optim_cfg`` say, in ``run_dir``.

    ``config`` is the run's resolved config as plain containers: it is stored in every
    checkpoint and logged as hyperparameters. ``loggers``: ``{key: LoggerConfig}`` (the
    ``logger`` config), or a ready :class:`Logger`. Only the process that owns the run folder
    logs (``owns_run_folder``; default: ``$RANK`` is unset or 0).
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        device: torch.device,
        run_dir: Path,
        trainer_cfg: TrainerConfig,
        optim_cfg: OptimConfig,
        config: Mapping[str, Any],
        loggers: Mapping[str, Any] | Logger | None = None,
        owns_run_folder: bool | None = None,
    ) -> None:
        self.task = task
        self.model = model.to(device)
        self.device = device
        self.run_dir = Path(run_dir)
        self.cfg = trainer_cfg
        self.config = dict(config)
        self.logger_cfgs = loggers
        self.optimizer = build_optimizer(optim_cfg, self.model.parameters())
        self.scheduler = build_scheduler(
            optim_cfg, self.optimizer, trainer_cfg.max_epochs, task.monitor.mode
        )
        self.averaging = build_averaging(optim_cfg, self.model)
        if str(trainer_cfg.precision) == "16" and device.type != "cuda":
            raise ConfigError(
                "trainer.precision=16 is not allowed here: float16 training needs a CUDA GPU"
                f" (it runs on {device}); use trainer.precision=bf16, or 32"
            )
        cpu_bf16_note = precision.describe_cpu_bf16(device, str(trainer_cfg.precision))
        if cpu_bf16_note is not None:
            log.warning(cpu_bf16_note)
        # float16 needs its gradients scaled (a no-op otherwise); bf16 has float32's range
        self.scaler = torch.amp.GradScaler(device.type, enabled=str(trainer_cfg.precision) == "16")
        # data parallel (torchrun / SLURM): this process's rank among world_size processes
        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if initialised else 0
        self.world_size = torch.distributed.get_world_size() if initialised else 1
        self.dist_env = distributed.DistributedEnv(self.rank, self.world_size)
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False,
            )
            if self.rank > 0:  # each process draws its own dropout masks
                torch.manual_seed(int(config.get("seed", 0)) * 1009 + self.rank)
        self.state = TrainState()
        self.resumed = False
        self.logger: Logger = LoggerCollection([])
        self.test_metrics: dict[str, float] = {}
        self.stop_request = StopRequest()
        self._set_up = False
        # the epoch in progress (None between epochs) and, when resuming inside an epoch,
        # where the stopped run stood in it
        self._progress: EpochProgress | None = None
        self._resume_progress: EpochProgress | None = None
        # debug=overfit: the task's state before the first epoch, restored before each epoch
        self._overfit_start: dict[str, Any] | None = None
        # debug=fast_dev_run: nothing is written that could be mistaken for a result
        self.writes_results = not trainer_cfg.fast_dev_run
        # one process of a multi-process run (RANK > 0 under torchrun) trains without logging
        self.owns_run_folder = (
            self.rank == 0 and int(os.environ.get("RANK", "0")) == 0
            if owns_run_folder is None
            else owns_run_folder
        )

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self, checkpoint: dict[str, Any] | None = None) -> None:
        """Restore a stopped run from its ``checkpoint`` (None: a new run), open the loggers
        and, for a new run, log the hyperparameters."""
        self._set_up = True
        if checkpoint is not None:
            self.resume(checkpoint)
        if not self.owns_run_folder or not self.writes_results:
            self.logger = LoggerCollection([])
            return
        if isinstance(self.logger_cfgs, Logger):
            self.logger = self.logger_cfgs
        else:
            resume_step = self.state.step if self.resumed else None
            self.logger = build_loggers(self.logger_cfgs or {}, self.run_dir, resume_step)
        if self.logger.started_fresh:  # a new run, or a logger added when resuming
            from omegaconf import OmegaConf

            names = self.task.metric_names
            tags = [f"val/{m}" for m in names] + [f"test/{m}" for m in names]
            self.logger.log_hyperparams(
                flatten_config(self.config), tags, OmegaConf.to_yaml(self.config)
            )

    def run(self, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """setup (from ``checkpoint`` when resuming; skipped if done), fit, test, close;
        returns the final summary. Whatever way the run ends, ``metrics.json`` says how; a
        resume that fails before the stopped run's state is restored leaves its
        ``metrics.json`` as it was."""
        status, error = "running", None
        # the signal handlers stay installed until metrics.json is written, so a second
        # SIGTERM during clean-up only sets the flag again
        self.stop_request.__enter__()
        try:
            self.stop_request.check()  # a Ctrl-C in start-up whose exception Python dropped
            if not self._set_up:
                self.setup(checkpoint)
            self.fit()
            self.test()
            status = _STATUS_OF_STOP.get(self.state.stop_reason or "max_epochs", "completed")
        except KeyboardInterrupt as stop:
            status = "interrupted"
            self._save_on_stop(at_safe_point=isinstance(stop, StopRequested))
            raise
        except TrainingDiverged as diverged:
            status = "diverged"
            self.state.stop_reason = "diverged"
            error = str(diverged)
            log.error("%s", diverged)
        except Exception as failure:
            status = "failed"
            first_line = str(failure).splitlines()[0] if str(failure) else ""
            error = f"{type(failure).__name__}: {first_line}"
            raise
        finally:
            with _signals_deferred():
                try:
                    lost_state = checkpoint is not None and not self.resumed
                    summary = self.close(status, error, write=not lost_state)
                finally:
                    self.stop_request.__exit__(None, None, None)
        return summary

    def close(self, status: str, error: str | None = None, write: bool = True) -> dict[str, Any]:
        """Write the final ``metrics.json`` (``status``; ``error``: a one-line summary of
        what failed; ``write=False``: leave the file as it is) and close the loggers. A
        failed write (a full disk) is reported, not raised: the run's status is returned."""
        try:
            summary = self.write_metrics(status, error, write=write)
        except WriteError as failure:
            log.error("%s", failure)
            summary = self.write_metrics(status, error, write=False)
        try:
            self.logger.close(status)
        finally:
            self.logger = LoggerCollection([])
        return summary

    def _save_on_stop(self, at_safe_point: bool) -> None:
        """On Ctrl-C / SIGTERM: save a checkpoint at the current update when the stop came
        between updates (inside an epoch: with where the epoch stood), and say how to go on."""
        if at_safe_point and self._progress is not None and self._progress.batches > 0:
            try:
                self.save_checkpoint(improved=False, progress=self._progress)
            except WriteError as failure:
                log.error("%s", failure)
        if self.last_path.exists() and self.writes_results:
            checkpoint_step = self.state.step if at_safe_point else None
            where = f"update {checkpoint_step}" if checkpoint_step is not None else "its last save"
            log.warning(
                "interrupted; the checkpoint holds the run up to %s. Continue with:\n"
                "  attnlstm-train resume=%s",
                where,
                self.run_dir,
            )
        else:
            log.warning("interrupted before the first update: nothing to resume")

    # -- checkpoints ------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def checkpoint(self, progress: EpochProgress | None = None) -> dict[str, Any]:
        """Model, optimiser, schedule, RNG states, loop state, the resolved config and the
        task's spec (what rebuilds the model without the data); ``progress``: taken inside an
        epoch, where the epoch stands (``within_epoch``, see :class:`EpochProgress`)."""
        spec: TaskSpec = self.task.spec
        within_epoch = None
        if progress is not None:
            within_epoch = asdict(progress)
            within_epoch["stream"] = self.task.train_stream_state()
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            # the weights that validation saw (an average, see averaging.py), when they differ
            "eval_model": None
            if self.averaging is None or not self.averaging.active
            else self.averaging.eval_model.state_dict(),
            "averaging": None if self.averaging is None else self.averaging.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "task": self.task.state_dict(),
            "spec": spec.to_dict(),
            "trainer": asdict(self.state),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "within_epoch": within_epoch,
            "config": self.config,
        }

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint made by :meth:`checkpoint`."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
        if self.rank > 0:  # the checkpoint holds rank 0's generator; others draw their own
            seed = int(self.config.get("seed", 0))
            torch.manual_seed(seed * 1009 + self.rank + 7919 * checkpoint["step"])
        if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in checkpoint["rng"]["cuda"]])
        self.task.load_state_dict(checkpoint["task"])
        if self.averaging is not None and checkpoint.get("averaging") is not None:
            self.averaging.load_state_dict(checkpoint["averaging"])
        self.state = TrainState(**checkpoint["trainer"])
        within_epoch = checkpoint.get("within_epoch")
        self._resume_progress = None if within_epoch is None else EpochProgress(**within_epoch)
        if self.scheduler is not None:
            # a new trainer.max_epochs: the schedule continues over the new horizon
            continue_schedule(self.scheduler, self.cfg.max_epochs, self.state.epoch)
        self.resumed = True
        log.info(
            "resumed from %s at epoch %d, step %d%s",
            self.last_path,
            self.state.epoch,
            self.state.step,
            ""
            if self._resume_progress is None
            else f" (inside epoch {self._resume_progress.epoch},"
            f" after {self._resume_progress.batches} of its updates)",
        )

    def save_checkpoint(self, improved: bool, progress: EpochProgress | None = None) -> None:
        """``last.pt``, and ``best.pt`` when the validation monitor ``improved`` (only the
        process that owns the run folder writes them); ``progress``: a checkpoint inside an
        epoch (never a best one)."""
        if not self.owns_run_folder or not self.writes_results:
            return
        save_checkpoint(self.checkpoint(progress), self.last_path)
        if improved:  # same bytes as last.pt; copy, then rename, so best.pt is never half-written
            tmp = self.best_path.with_name(".best.pt.tmp")
            shutil.copyfile(self.last_path, tmp)
            tmp.replace(self.best_path)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until max_epochs, the task is solved, early stopping, or divergence."""
        if self.state.stop_reason in ("solved", "early_stopping"):
            log.info(
                "this run already stopped (%s at epoch %d); nothing left to train",
                self.state.stop_reason,
                self.state.epoch,
            )
            return
        self.state.stop_reason = None
        last_epoch = 1 if self.cfg.fast_dev_run else self.cfg.max_epochs  # a smoke test: one
        for epoch in range(self.state.epoch + 1, last_epoch + 1):
            record, improved = self._epoch(epoch)
            # decide whether to stop before checkpointing, so that a resumed run that already
            # stopped knows it (and does not train on)
            self.state.stop_reason = self._stop_reason(record)
            self.save_checkpoint(improved)
            self._progress = None  # the epoch is in last.pt now
            self._report(record, improved)
            self.write_metrics("running")
            if self.state.stop_reason is not None:
                return
        self.state.stop_reason = "max_epochs"

    def _epoch(self, epoch: int) -> tuple[dict[str, float], bool]:
        """Train one epoch, validate, update the loop state; the epoch's record and whether
        the validation monitor improved."""
        progress = self._train_epoch(epoch)
        train_extra = self.task.train_epoch_metrics()
        started = time.perf_counter()
        val = self.evaluate("val")
        self._log_attention()
        epoch_time = progress.train_time_s + time.perf_counter() - started
        self.state.wall_time_s += epoch_time

        monitored = val[self.task.monitor.metric]
        for name in dict.fromkeys(("loss", self.task.monitor.metric)):
            # a NaN model is never a best checkpoint (its accuracy may still be a number)
            if name in val and not math.isfinite(val[name]):
                raise TrainingDiverged(
                    f"validation {name} became {val[name]} at epoch {epoch} (step"
                    f" {self.state.step}); try a lower optim.lr or set trainer.grad_clip"
                )
        improved = self.task.monitor.better(monitored, self.state.best_value)
        if improved:
            self.state.best_value, self.state.best_epoch = monitored, epoch
            self.state.epochs_without_improvement = 0
        else:
            self.state.epochs_without_improvement += 1
        lr = self.optimizer.param_groups[0]["lr"]
        self._step_scheduler(monitored)
        if self.averaging is not None:
            self.averaging.observe(val["loss"], epoch)
        if self.task.is_solved(val) and self.state.solved_epoch is None:
            self.state.solved_epoch = epoch
        self.state.epoch = epoch

        unit = self.task.throughput_unit
        train_time = max(progress.train_time_s, 1e-9)
        record = {
            "epoch": epoch,
            "step": self.state.step,
            "lr": lr,
            "train/loss": progress.loss_sum / max(progress.batches, 1),
            **{f"train/{k}": v for k, v in train_extra.items()},
            **{f"val/{k}": v for k, v in val.items()},
            "epoch_time_s": epoch_time,
            f"perf/{unit}_per_s": progress.samples / train_time,
        }
        self.state.history.append(record)
        scalars = {
            k: v
            for k, v in record.items()
            if k.startswith(("val/", "perf/")) or k in {f"train/{k}" for k in train_extra}
        }
        scalars["perf/epoch_time_s"] = epoch_time
        scalars["perf/updates_per_s"] = (self.state.step - progress.steps_before) / train_time
        # a slow run or a starved one: CPU seconds per second of training (about the threads
        # when the cores are free; much less when other processes take them)
        scalars["perf/threads"] = epoch_threads()  # a mean when they follow the load
        scalars["perf/cpu_busy"] = progress.cpu_time_s / train_time
        record["perf/threads"] = scalars["perf/threads"]
        record["perf/cpu_busy"] = scalars["perf/cpu_busy"]
        scalars["train/epoch_loss"] = record["train/loss"]
        self.logger.log_metrics(scalars, self.state.step)
        self.logger.flush()
        return record, improved

    def _stop_reason(self, record: dict[str, float]) -> str | None:
        val = {k[4:]: v for k, v in record.items() if k.startswith("val/")}
        if self.task.is_solved(val) and self.cfg.stop_when_solved:
            return "solved"
        patience = self.cfg.early_stopping_patience
        if patience is not None and self.state.epochs_without_improvement >= patience:
            return "early_stopping"
        return None

    def _report(self, record: dict[str, float], improved: bool) -> None:
        train_extra = {
            k[6:]: v for k, v in record.items() if k.startswith("train/") and k != "train/loss"
        }
        unit = self.task.throughput_unit
        log.info(
            "epoch %d/%d  train loss %.4g%s  %s  lr %.3g  %.1fs  %.0f %s/s%s",
            record["epoch"],
            1 if self.cfg.fast_dev_run else self.cfg.max_epochs,
            record["train/loss"],
            "".join(f"  train {k} {v:.4g}" for k, v in train_extra.items()),
            "  ".join(
                f"{k.replace('/', ' ')} {v:.4g}" for k, v in record.items() if k.startswith("val/")
            ),
            record["lr"],
            record["epoch_time_s"],
            record[f"perf/{unit}_per_s"],
            unit,
            "  (best)" if improved else "",
        )
        monitor = self.task.monitor
        if self.state.stop_reason == "solved":
            log.info("solved at epoch %d (val %s)", record["epoch"], monitor.metric)
        elif self.state.stop_reason == "early_stopping":
            log.info(
                "early stopping: no better val %s for %d epochs",
                monitor.metric,
                self.cfg.early_stopping_patience,
            )

    def _step_scheduler(self, monitored: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def _start_epoch(self, epoch: int) -> EpochProgress:
        """The progress record of ``epoch``: a fresh one, or the stopped run's when resuming
        inside this epoch (then the task goes back to its state at the epoch's start)."""
        resumed, self._resume_progress = self._resume_progress, None
        if resumed is not None and resumed.epoch == epoch:
            self.task.load_state_dict(resumed.task_at_start)
            return resumed
        if self.cfg.overfit_batches > 0:  # the same batches every epoch
            if self._overfit_start is None:
                self._overfit_start = copy.deepcopy(self.task.state_dict())
            self.task.load_state_dict(self._overfit_start)
        return EpochProgress(
            epoch=epoch,
            steps_before=self.state.step,
            task_at_start=copy.deepcopy(self.task.state_dict()),
        )

    def _train_batch_limit(self) -> int | None:
        cfg = self.cfg
        if cfg.fast_dev_run:
            return 1
        if cfg.overfit_batches > 0:
            return cfg.overfit_batches
        return batch_limit(cfg.limit_train_batches, self.task.num_train_batches())

    def _train_epoch(self, epoch: int) -> EpochProgress:
        """One epoch of updates (the rest of it, when resuming inside it); returns the
        epoch's progress record: its loss sum, batches, samples and training time."""
        cfg = self.cfg
        progress = self._start_epoch(epoch)
        self._progress = progress
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        limit = self._train_batch_limit()
        total = self.task.num_train_batches()
        done_before = progress.batches  # replayed, not trained again
        bar = tqdm(
            total=total if limit is None else min(total, limit),
            initial=done_before,
            desc=f"epoch {epoch}",
            leave=False,
            dynamic_ncols=True,
            disable=None if cfg.progress_bar else True,
        )
        profiler = self._profiler(epoch)
        restored = done_before == 0  # the stream state a resumed epoch carries on from
        accumulate = cfg.accumulate_grad_batches
        pending = 0  # micro-batches whose gradients wait for the next update
        pending_loss = 0.0
        with bar, profiler:
            started = time.perf_counter() - progress.train_time_s
            cpu_started = time.process_time() - progress.cpu_time_s
            for index, batch in enumerate(self.task.train_batches(progress.epoch)):
                if limit is not None and index >= limit:
                    break
                if index < done_before:  # drawn only to advance the stream
                    continue
                if not restored:
                    self.task.load_train_stream_state(progress.stream)
                    restored = True
                global_rows = len(batch)
                batch = self._local_share(batch).to(self.device)
                if pending == 0:
                    self.optimizer.zero_grad(set_to_none=True)
                last_micro = pending + 1 == accumulate
                with self._gradient_sync(last_micro), self._autocast():
                    output = self.task.forward(self.train_model, batch)
                    loss = self.task.loss(output, batch)
                    # data parallel: shares of unequal size weigh as their rows
                    loss = loss * distributed.share_weight(len(batch), global_rows, self.world_size)
                # the mean over an update's micro-batches: the gradient of one batch
                # ``accumulate`` times larger (for losses that are means over equal batches)
                with self._gradient_sync(last_micro):
                    self.scaler.scale(loss / accumulate).backward()
                loss_value = self._global_mean(loss.detach())
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"training loss became {loss_value} at epoch {epoch}, step"
                        f" {self.state.step + 1}; try a lower optim.lr or set trainer.grad_clip"
                    )
                pending += 1
                pending_loss += loss_value
                progress.samples += global_rows
                bar.update()
                if pending < accumulate:
                    continue
                self._update(params, max_norm, pending, pending_loss, progress, started)
                progress.cpu_time_s = time.process_time() - cpu_started
                pending, pending_loss = 0, 0.0
                profiler.step()
                self._check_stop()  # between updates only: a consistent checkpoint
                if progress.batches % 20 == 0:
                    bar.set_postfix(loss=f"{progress.loss_sum / progress.batches:.4g}")
            if pending:  # the epoch's last, shorter accumulation
                self._update(params, max_norm, pending, pending_loss, progress, started)
            progress.train_time_s = time.perf_counter() - started
            progress.cpu_time_s = time.process_time() - cpu_started
        if not restored:  # resumed after the epoch's last update (the stop came in validation)
            self.task.load_train_stream_state(progress.stream)
        progress.trained = True
        return progress

    def _update(
        self,
        params: list[nn.Parameter],
        max_norm: float,
        micro_batches: int,
        loss_sum: float,
        progress: EpochProgress,
        started: float,
    ) -> None:
        """One optimiser update from the gradients of ``micro_batches`` batches: unscale (16),
        clip, step, average, count, log, and checkpoint every N updates when asked."""
        cfg = self.cfg
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.averaging is not None:
            self.averaging.update()
        self.state.step += 1
        progress.loss_sum += loss_sum
        progress.batches += micro_batches
        progress.train_time_s = time.perf_counter() - started
        if self.state.step % cfg.log_every_n_steps == 0:
            self.logger.log_metrics(
                {
                    "train/loss": loss_sum / micro_batches,
                    "train/lr": self.optimizer.param_groups[0]["lr"],
                    "train/grad_norm": float(grad_norm),
                },
                self.state.step,
            )
        every = cfg.checkpoint_every_n_steps
        if every is not None and self.state.step % every == 0:
            self.save_checkpoint(improved=False, progress=progress)

    def _autocast(self) -> Any:
        """``trainer.precision``: bf16 or float16 autocast; a no-op context for 32
        (:func:`attnlstm.training.precision.autocast`)."""
        return precision.autocast(self.device, str(self.cfg.precision))

    def _gradient_sync(self, last_micro_batch: bool) -> Any:
        """Under DistributedDataParallel, gradients are all-reduced on the last micro-batch of
        an update only (``no_sync`` before it); otherwise a no-op context."""
        no_sync = getattr(self.train_model, "no_sync", None)
        if no_sync is None or last_micro_batch:
            return _NoProfiler()
        return no_sync()

    def _global_mean(self, loss: Tensor) -> float:
        """The loss over the global batch: the processes' (weighted) losses averaged."""
        if self.world_size > 1:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world_size
        return loss.item()

    def _check_stop(self) -> None:
        """Stop here if asked (StopRequested). Data parallel: if any process was asked, every
        process stops at this same update (a collective decision, so none waits forever)."""
        if self.world_size > 1:
            flag = torch.tensor([1.0 if self.stop_request.requested else 0.0])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() > 0:
                self.stop_request.requested = True
        self.stop_request.check()

    def _local_share(self, batch: Any) -> Any:
        """This process's rows of a global batch (data parallel), or the batch itself."""
        if self.world_size == 1:
            return batch
        return distributed.shard(batch, self.rank, self.world_size)

    def _profiler(self, epoch: int) -> Any:
        """``trainer.profile_steps`` > 0: a torch.profiler over the first epoch's first updates
        (one warm-up update, then N recorded), written as a Chrome trace to
        ``<run dir>/profile/``; else a no-op context."""
        steps = self.cfg.profile_steps
        if steps <= 0 or epoch != 1 or not self.owns_run_folder:
            return _NoProfiler()
        from torch.profiler import ProfilerActivity, profile, schedule

        folder = self.run_dir / "profile"
        folder.mkdir(exist_ok=True)

        def export(prof: Any) -> None:
            trace = folder / "trace.json"
            prof.export_chrome_trace(str(trace))
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
            (folder / "top_ops.txt").write_text(table + "\n")
            log.info("profile of %d updates: %s (open in https://ui.perfetto.dev)", steps, trace)

        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        return profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
            on_trace_ready=export,
            record_shapes=True,
        )

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics on ``split`` (``val`` or ``test``) of the current model, or of its averaged
        weights when they are averaged (``optim.averaging``); on the first
        ``trainer.limit_eval_batches`` batches when that is set. A bar shows long ones.
        Data parallel: each process evaluates its share of every batch's rows, and the
        meters are gathered and merged (``Meter.merge``), so the metrics are those of the
        whole split, as a single process computes them (up to the order of float sums)."""
        meter = self._evaluate(split)
        if self.world_size > 1:
            meters: list[Any] = [None] * self.world_size
            torch.distributed.all_gather_object(meters, meter)
            meter = meters[0]
            for other in meters[1:]:
                meter.merge(other)
        return meter.compute()

    @torch.inference_mode()
    def _evaluate(self, split: str) -> Any:
        model = self.model if self.averaging is None else self.averaging.eval_model
        model.eval()
        meter = self.task.new_meter(split)
        batches = self.task.eval_batches(split)
        limit_cfg = 1 if self.cfg.fast_dev_run else self.cfg.limit_eval_batches
        if isinstance(limit_cfg, float) and not hasattr(batches, "__len__"):
            batches = list(batches)  # a fraction needs the count
        total = len(batches) if hasattr(batches, "__len__") else None
        limit = batch_limit(limit_cfg, total)
        if limit is not None and total is not None:
            total = min(total, limit)
        bar = tqdm(
            total=total,
            desc=split,
            leave=False,
            dynamic_ncols=True,
            disable=None if self.cfg.progress_bar else True,
        )
        with bar:
            for index, batch in enumerate(batches):
                if limit is not None and index >= limit:
                    break
                if self.world_size > 1:  # this process's rows (none: nothing to add)
                    batch = distributed.shard(batch, self.rank, self.world_size, exact=True)
                    if batch is None:
                        bar.update()
                        continue
                batch = batch.to(self.device)
                poll_threads()  # no optimiser step here to poll the thread governor
                with self._autocast():
                    meter.update(self.task.forward(model, batch), batch)
                bar.update()
                if self.world_size == 1:  # data parallel: stops are decided between updates
                    self.stop_request.check()
        return meter

    @torch.inference_mode()
    def _log_attention(self) -> None:
        """Log the attention of the first ``trainer.attention_images`` validation examples:
        the task's labelled heatmaps as figures (``val/attention/<i>``: one per example of an
        encoder-decoder, one for all the examples of a pooling model), else the output's
        ``attention`` weights as a grey image (``val/attention``)."""
        count = self.cfg.attention_images
        if count <= 0 or not self.owns_run_folder:
            return
        self.model.eval()
        batch = next(iter(self.task.eval_batches("val"))).select(count).to(self.device)
        output = self.task.forward(self.model, batch)
        maps = self.task.attention_maps(output, batch)
        step = self.state.step
        if maps is not None:  # labelled heatmaps
            import matplotlib.pyplot as plt  # loaded by attention_figure already

            for index, attention in enumerate(maps):
                figure = attention_figure(attention)
                try:
                    self.logger.log_figure(f"val/attention/{index}", figure, step)
                finally:  # pyplot keeps every open figure alive until it is closed
                    plt.close(figure)
            return
        weights = getattr(output, "attention", None)
        if weights is None:
            return
        if weights.dim() == 2:  # pooling, from a task that draws no heatmap: a row per example
            image = attention_image(weights, batch.lengths)
        else:  # each step attends (B, Tq, T): the matrix of the longest example shown
            row, length = 0, None
            if batch.lengths is not None:
                row = int(batch.lengths.argmax())
                length = int(batch.lengths[row])
            matrix = weights[row] if length is None else weights[row, :length, :length]
            image = attention_matrix_image(matrix)
        self.logger.log_image("val/attention", image, step)

    def test(self) -> dict[str, float]:
        """Evaluate the best checkpoint (the last one if none is better) on the test split."""
        distributed.barrier(self.dist_env)  # rank 0 has written its last checkpoints
        source = self.best_path if self.best_path.exists() else self.last_path
        if source.exists():
            checkpoint = load_checkpoint(source, self.device)
            self.model.load_state_dict(evaluated_weights(checkpoint))
            self.averaging = None  # the weights just loaded are the ones to test
        self.test_metrics = self.evaluate("test")
        self.logger.log_metrics(
            {f"test/{k}": v for k, v in self.test_metrics.items()}, self.state.step
        )
        log.info(
            "test (%s): %s",
            source.name if source.exists() else "the current weights",
            "  ".join(f"{k} {v:.4g}" for k, v in self.test_metrics.items()),
        )
        return self.test_metrics

    def write_metrics(
        self, status: str, error: str | None = None, write: bool = True
    ) -> dict[str, Any]:
        """Write ``metrics.json``: status, solved flag, best/final/test metrics, history (only
        the process that owns the run folder writes; ``write=False``: return it only)."""
        state = self.state
        monitor = self.task.monitor
        best_record = next((r for r in state.history if r["epoch"] == state.best_epoch), {})
        summary = {
            "status": status,
            "stop_reason": state.stop_reason,
            "solved": bool(self.test_metrics) and self.task.is_solved(self.test_metrics),
            "solved_epoch": state.solved_epoch,
            "epochs": state.epoch,
            "steps": state.step,
            "wall_time_s": round(state.wall_time_s, 3),
            "monitor": {"metric": f"val/{monitor.metric}", "mode": monitor.mode},
            "best": {k: v for k, v in best_record.items() if k == "epoch" or k.startswith("val/")},
            "final": state.history[-1] if state.history else {},
            "test": {f"test/{k}": v for k, v in self.test_metrics.items()},
            "history": state.history,
            "written": machine_record(self.device),
        }
        if error is not None:
            summary["error"] = error
        if write and self.owns_run_folder and self.writes_results:
            write_json(summary, self.run_dir / "metrics.json")
        return summary
