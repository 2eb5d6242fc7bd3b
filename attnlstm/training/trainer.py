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

import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from attnlstm.config import OptimConfig, TrainerConfig
from attnlstm.contracts import TaskSpec
from attnlstm.io import (
    CHECKPOINT_VERSION,
    evaluated_weights,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from attnlstm.loggers import Logger, LoggerCollection, build_loggers, flatten_config
from attnlstm.plots import attention_figure, attention_image, attention_matrix_image
from attnlstm.tasks.base import Task
from attnlstm.training.averaging import build_averaging
from attnlstm.training.interrupt import StopRequest
from attnlstm.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

#: how a run that stopped by itself ended, by its stop reason
_STATUS_OF_STOP = {
    "max_epochs": "completed",
    "solved": "solved",
    "early_stopping": "early_stopped",
    "diverged": "diverged",
}


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


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
        self.state = TrainState()
        self.resumed = False
        self.logger: Logger = LoggerCollection([])
        self.test_metrics: dict[str, float] = {}
        self.stop_request = StopRequest()
        self._set_up = False
        # one process of a multi-process run (RANK > 0 under torchrun) trains without logging
        self.owns_run_folder = (
            int(os.environ.get("RANK", "0")) == 0 if owns_run_folder is None else owns_run_folder
        )

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self, checkpoint: dict[str, Any] | None = None) -> None:
        """Restore a stopped run from its ``checkpoint`` (None: a new run), open the loggers
        and, for a new run, log the hyperparameters."""
        self._set_up = True
        if checkpoint is not None:
            self.resume(checkpoint)
        if not self.owns_run_folder:
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
            if not self._set_up:
                self.setup(checkpoint)
            self.fit()
            self.test()
            status = _STATUS_OF_STOP.get(self.state.stop_reason or "max_epochs", "completed")
        except KeyboardInterrupt:
            status = "interrupted"
            if self.last_path.exists():
                log.warning(
                    "interrupted after epoch %d; continue with resume=%s",
                    self.state.epoch,
                    self.run_dir,
                )
            else:
                log.warning("interrupted before the first checkpoint: nothing to resume")
            raise
        except TrainingDiverged as diverged:
            status = "diverged"
            self.state.stop_reason = "diverged"
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
        what failed; ``write=False``: leave the file as it is) and close the loggers."""
        summary = self.write_metrics(status, error, write=write)
        try:
            self.logger.close(status)
        finally:
            self.logger = LoggerCollection([])
        return summary

    # -- checkpoints ------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def checkpoint(self) -> dict[str, Any]:
        """Model, optimiser, schedule, RNG states, loop state, the resolved config and the
        task's spec (what rebuilds the model without the data)."""
        spec: TaskSpec = self.task.spec
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
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "task": self.task.state_dict(),
            "spec": spec.to_dict(),
            "trainer": asdict(self.state),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "config": self.config,
        }

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint made by :meth:`checkpoint`."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
        if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in checkpoint["rng"]["cuda"]])
        self.task.load_state_dict(checkpoint["task"])
        if self.averaging is not None and checkpoint.get("averaging") is not None:
            self.averaging.load_state_dict(checkpoint["averaging"])
        self.state = TrainState(**checkpoint["trainer"])
        self.resumed = True
        log.info(
            "resumed from %s at epoch %d, step %d",
            self.last_path,
            self.state.epoch,
            self.state.step,
        )

    def save_checkpoint(self, improved: bool) -> None:
        """``last.pt``, and ``best.pt`` when the validation monitor ``improved`` (only the
        process that owns the run folder writes them)."""
        if not self.owns_run_folder:
            return
        save_checkpoint(self.checkpoint(), self.last_path)
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
        for epoch in range(self.state.epoch + 1, self.cfg.max_epochs + 1):
            record, improved = self._epoch(epoch)
            # decide whether to stop before checkpointing, so that a resumed run that already
            # stopped knows it (and does not train on)
            self.state.stop_reason = self._stop_reason(record)
            self.save_checkpoint(improved)
            self._report(record, improved)
            self.write_metrics("running")
            if self.state.stop_reason is not None:
                return
        self.state.stop_reason = "max_epochs"

    def _epoch(self, epoch: int) -> tuple[dict[str, float], bool]:
        """Train one epoch, validate, update the loop state; the epoch's record and whether
        the validation monitor improved."""
        started = time.perf_counter()
        steps_before = self.state.step
        train_loss, samples = self._train_epoch(epoch)
        train_time = time.perf_counter() - started
        train_extra = self.task.train_epoch_metrics()
        val = self.evaluate("val")
        self._log_attention()
        epoch_time = time.perf_counter() - started
        self.state.wall_time_s += epoch_time

        monitored = val[self.task.monitor.metric]
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
        record = {
            "epoch": epoch,
            "step": self.state.step,
            "lr": lr,
            "train/loss": train_loss,
            **{f"train/{k}": v for k, v in train_extra.items()},
            **{f"val/{k}": v for k, v in val.items()},
            "epoch_time_s": epoch_time,
            f"perf/{unit}_per_s": samples / train_time,
        }
        self.state.history.append(record)
        scalars = {
            k: v
            for k, v in record.items()
            if k.startswith(("val/", "perf/")) or k in {f"train/{k}" for k in train_extra}
        }
        scalars["perf/epoch_time_s"] = epoch_time
        scalars["perf/updates_per_s"] = (self.state.step - steps_before) / train_time
        scalars["train/epoch_loss"] = train_loss
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
            self.cfg.max_epochs,
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

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        """One epoch of updates; returns the mean training loss and the samples seen."""
        cfg = self.cfg
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        total_loss, batches, samples = 0.0, 0, 0
        limit = cfg.limit_train_batches
        total = self.task.num_train_batches()
        bar = tqdm(
            total=total if limit is None else min(total, limit),
            desc=f"epoch {epoch}",
            leave=False,
            dynamic_ncols=True,
            disable=None if cfg.progress_bar else True,
        )
        with bar:
            for batch in self.task.train_batches(epoch):
                if limit is not None and batches >= limit:
                    break
                batch = batch.to(self.device)
                output = self.task.forward(self.model, batch)
                loss = self.task.loss(output, batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                self.optimizer.step()
                if self.averaging is not None:
                    self.averaging.update()
                self.state.step += 1
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"training loss became {loss_value} at epoch {epoch}, step"
                        f" {self.state.step}; try a lower optim.lr or trainer.grad_clip"
                    )
                total_loss += loss_value
                batches += 1
                samples += len(batch)
                if self.state.step % cfg.log_every_n_steps == 0:
                    self.logger.log_metrics(
                        {
                            "train/loss": loss_value,
                            "train/lr": self.optimizer.param_groups[0]["lr"],
                            "train/grad_norm": float(grad_norm),
                        },
                        self.state.step,
                    )
                bar.update()
                self.stop_request.check()
                if batches % 20 == 0:
                    bar.set_postfix(loss=f"{total_loss / batches:.4g}")
        return total_loss / max(batches, 1), samples

    @torch.inference_mode()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics on ``split`` (``val`` or ``test``) of the current model, or of its averaged
        weights when they are averaged (``optim.averaging``)."""
        model = self.model if self.averaging is None else self.averaging.eval_model
        model.eval()
        meter = self.task.new_meter(split)
        for batch in self.task.eval_batches(split):
            batch = batch.to(self.device)
            meter.update(self.task.forward(model, batch), batch)
            self.stop_request.check()
        return meter.compute()

    @torch.inference_mode()
    def _log_attention(self) -> None:
        count = self.cfg.attention_images
        if count <= 0:
            return
        self.model.eval()
        batch = next(iter(self.task.eval_batches("val"))).select(count).to(self.device)
        output = self.task.forward(self.model, batch)
        maps = self.task.attention_maps(output, batch)
        step = self.state.step
        if maps is not None:  # labelled heatmaps, one figure per example
            import matplotlib.pyplot as plt  # loaded by attention_figure already

            for index, attention in enumerate(maps):
                figure = attention_figure(attention)
                self.logger.log_figure(f"val/attention/{index}", figure, step)
                plt.close(figure)
            return
        weights = getattr(output, "attention", None)
        if weights is None:
            return
        if weights.dim() == 2:  # pooling: one row of weights per example
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
            source.name,
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
        }
        if error is not None:
            summary["error"] = error
        if write and self.owns_run_folder:
            write_json(summary, self.run_dir / "metrics.json")
        return summary
