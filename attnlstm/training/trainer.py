"""The one training loop: every task trains, evaluates, logs and checkpoints through it.

Lifecycle (as torchtune's recipes): ``Trainer(...)`` sets up the optimiser, schedule and writer;
``resume(checkpoint)`` restores a stopped run; ``fit()`` trains epoch by epoch, evaluating on
the validation split after each and checkpointing (``last.pt``, ``best.pt``); ``test()``
evaluates the best checkpoint on the test split; ``close()`` flushes the logs. ``run()`` does
all of it and keeps ``metrics.json`` current, whatever way the run ends.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from attnlstm.plots import attention_figure
from attnlstm.tasks.base import Task
from attnlstm.training.averaging import build_averaging
from attnlstm.training.interrupt import StopRequest
from attnlstm.training.io import load_checkpoint, save_checkpoint, write_json
from attnlstm.training.optim import build_optimizer, build_scheduler
from attnlstm.training.tensorboard import (
    attention_image,
    attention_matrix_image,
    flatten_config,
    write_hparams,
)

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


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


class Trainer:
    """Trains ``model`` on ``task`` as ``cfg.trainer`` and ``cfg.optim`` say, in ``run_dir``."""

    def __init__(
        self, cfg: DictConfig, task: Task, model: nn.Module, device: torch.device, run_dir: Path
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.model = model.to(device)
        self.device = device
        self.run_dir = Path(run_dir)
        self.trainer_cfg = cfg.trainer
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.scheduler = build_scheduler(
            cfg.optim, self.optimizer, cfg.trainer.max_epochs, task.monitor.mode
        )
        self.averaging = build_averaging(cfg.optim, self.model)
        self.state = TrainState()
        self.resumed = False
        self.writer: SummaryWriter | None = None
        self.test_metrics: dict[str, float] = {}
        self.stop_request = StopRequest()

    # -- checkpoints ------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def checkpoint(self) -> dict[str, Any]:
        """Model, optimiser, schedule, RNG states, loop state and the resolved config."""
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
            "trainer": asdict(self.state),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
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

    def _save(self, improved: bool) -> None:
        save_checkpoint(self.checkpoint(), self.last_path)
        if improved:  # same bytes as last.pt; copy, then rename, so best.pt is never half-written
            tmp = self.best_path.with_name(".best.pt.tmp")
            shutil.copyfile(self.last_path, tmp)
            tmp.replace(self.best_path)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """fit, then test, keeping ``metrics.json`` current; returns the final summary."""
        self._open_writer()
        status = "running"
        try:
            with self.stop_request:
                self.fit()
                self.test()
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            log.warning(
                "interrupted after epoch %d; continue with resume=%s",
                self.state.epoch,
                self.run_dir,
            )
            raise
        except TrainingDiverged as error:
            status = "diverged"
            self.state.stop_reason = "diverged"
            log.error("%s", error)
        finally:
            summary = self.write_metrics(status)
            self.close()
        return summary

    def _open_writer(self) -> None:
        # purge_step drops events a crashed session logged after its last checkpoint
        self.writer = SummaryWriter(
            str(self.run_dir), purge_step=self.state.step + 1 if self.resumed else None
        )
        if self.resumed:
            return
        config_yaml = OmegaConf.to_yaml(self.cfg, resolve=True)
        self.writer.add_text("config", f"```yaml\n{config_yaml}\n```", 0)
        names = self.task.metric_names
        tags = [f"val/{m}" for m in names] + [f"test/{m}" for m in names]
        hparams = flatten_config(OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True))
        write_hparams(self.writer, hparams, tags)

    def fit(self) -> None:
        """Train until max_epochs, the task is solved, early stopping, or divergence."""
        cfg = self.trainer_cfg
        if self.state.stop_reason in ("solved", "early_stopping"):
            log.info(
                "this run already stopped (%s at epoch %d); nothing left to train",
                self.state.stop_reason,
                self.state.epoch,
            )
            return
        self.state.stop_reason = None
        monitor = self.task.monitor
        for epoch in range(self.state.epoch + 1, cfg.max_epochs + 1):
            started = time.perf_counter()
            steps_before = self.state.step
            train_loss, samples = self._train_epoch(epoch)
            train_time = time.perf_counter() - started
            train_extra = self.task.train_epoch_metrics()
            val = self.evaluate("val")
            self._log_attention(epoch)
            epoch_time = time.perf_counter() - started
            self.state.wall_time_s += epoch_time

            value = val[monitor.metric]
            improved = monitor.better(value, self.state.best_value)
            if improved:
                self.state.best_value, self.state.best_epoch = value, epoch
                self.state.epochs_without_improvement = 0
            else:
                self.state.epochs_without_improvement += 1
            lr = self.optimizer.param_groups[0]["lr"]
            self._step_scheduler(value)
            if self.averaging is not None:
                self.averaging.observe(val["loss"], epoch)
            solved = self.task.is_solved(val)
            if solved and self.state.solved_epoch is None:
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
            for key, value_ in record.items():
                if key.startswith(("val/", "perf/")) or key in (f"train/{k}" for k in train_extra):
                    self.writer.add_scalar(key, value_, self.state.step)
            self.writer.add_scalar("perf/epoch_time_s", epoch_time, self.state.step)
            self.writer.add_scalar(
                "perf/updates_per_s", (self.state.step - steps_before) / train_time, self.state.step
            )
            self.writer.add_scalar("train/epoch_loss", train_loss, self.state.step)
            self.writer.flush()

            # decide whether to stop before checkpointing, so that a resumed run that already
            # stopped knows it (and does not train on)
            patience = cfg.early_stopping_patience
            if solved and cfg.stop_when_solved:
                self.state.stop_reason = "solved"
            elif patience is not None and self.state.epochs_without_improvement >= patience:
                self.state.stop_reason = "early_stopping"
            self._save(improved)
            log.info(
                "epoch %d/%d  train loss %.4g%s  %s  lr %.3g  %.1fs  %.0f %s/s%s",
                epoch,
                cfg.max_epochs,
                train_loss,
                "".join(f"  train {k} {v:.4g}" for k, v in train_extra.items()),
                "  ".join(f"val {k} {v:.4g}" for k, v in val.items()),
                lr,
                epoch_time,
                samples / train_time,
                unit,
                "  (best)" if improved else "",
            )
            self.write_metrics("running")

            if self.state.stop_reason == "solved":
                log.info("solved at epoch %d (val %s)", epoch, monitor.metric)
                break
            if self.state.stop_reason == "early_stopping":
                log.info("early stopping: no better val %s for %d epochs", monitor.metric, patience)
                break
        else:
            self.state.stop_reason = "max_epochs"

    def _step_scheduler(self, monitored: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        """One epoch of updates; returns the mean training loss and the samples seen."""
        cfg = self.trainer_cfg
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        total_loss, batches, samples = 0.0, 0, 0
        limit = cfg.get("limit_train_batches")
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
                    self.writer.add_scalar("train/loss", loss_value, self.state.step)
                    self.writer.add_scalar(
                        "train/lr", self.optimizer.param_groups[0]["lr"], self.state.step
                    )
                    self.writer.add_scalar("train/grad_norm", float(grad_norm), self.state.step)
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
    def _log_attention(self, epoch: int) -> None:
        count = self.trainer_cfg.attention_images
        if count <= 0:
            return
        self.model.eval()
        batch = next(iter(self.task.eval_batches("val"))).select(count).to(self.device)
        output = self.task.forward(self.model, batch)
        maps = self.task.attention_maps(output, batch)
        if maps is not None:  # labelled heatmaps, one figure per example
            for index, attention in enumerate(maps):
                self.writer.add_figure(
                    f"val/attention/{index}", attention_figure(attention), self.state.step
                )
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
        self.writer.add_image("val/attention", image, self.state.step, dataformats="HW")

    def test(self) -> dict[str, float]:
        """Evaluate the best checkpoint (the last one if none is better) on the test split."""
        source = self.best_path if self.best_path.exists() else self.last_path
        if source.exists():
            checkpoint = load_checkpoint(source, self.device)
            weights = checkpoint.get("eval_model") or checkpoint["model"]
            self.model.load_state_dict(weights)
            self.averaging = None  # the weights just loaded are the ones to test
        self.test_metrics = self.evaluate("test")
        for key, value in self.test_metrics.items():
            self.writer.add_scalar(f"test/{key}", value, self.state.step)
        log.info(
            "test (%s): %s",
            source.name,
            "  ".join(f"{k} {v:.4g}" for k, v in self.test_metrics.items()),
        )
        return self.test_metrics

    def write_metrics(self, status: str) -> dict[str, Any]:
        """Write ``metrics.json``: status, solved flag, best/final/test metrics, history."""
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
        write_json(summary, self.run_dir / "metrics.json")
        return summary

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
