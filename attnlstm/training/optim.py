"""Optimisers and learning-rate schedules from the ``optim`` config."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from attnlstm.config import OptimConfig
from attnlstm.errors import ConfigError


def build_optimizer(
    cfg: OptimConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """Adam (betas, L2 weight decay), AdamW (betas, decoupled weight decay) or SGD (momentum,
    Nesterov, weight decay); ``cfg`` was range-checked by its schema."""
    name = str(cfg.name)
    if name in ("adam", "adamw"):
        optimizer = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return optimizer(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            fused=True if cfg.fused else None,
        )
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    raise ConfigError(f"optim.name={name} is not allowed: choose adam, adamw or sgd")


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, max_epochs: int, monitor_mode: str
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The per-epoch schedule: none, step (x gamma every step_size epochs), cosine (to min_lr
    over max_epochs) or plateau (x gamma after ``patience`` epochs without a better monitor)."""
    name = str(cfg.scheduler)
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max_epochs, eta_min=cfg.min_lr
        )
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=monitor_mode,
            factor=cfg.gamma,
            patience=cfg.patience,
            min_lr=cfg.min_lr,
        )
    raise ConfigError(f"unknown scheduler {name!r}; choose none, step, cosine or plateau")


def continue_schedule(
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau,
    max_epochs: int,
    completed_epochs: int,
) -> None:
    """Fit a restored schedule to the resumed run's ``trainer.max_epochs``.

    Only the cosine schedule depends on the horizon: a run resumed with a new max_epochs
    continues on the cosine over the new horizon, at the position of its completed epochs,

        lr_e = min_lr + (base_lr - min_lr) * (1 + cos(pi * e / max_epochs)) / 2,

    the learning rate a run configured with that max_epochs from the start would have at
    epoch e (the restored scheduler would otherwise keep the first session's horizon and
    reach min_lr, then climb back up). step and plateau do not depend on the horizon."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    if scheduler.T_max == max_epochs:
        return
    scheduler.T_max = max_epochs
    position = min(completed_epochs, max_epochs)
    factor = (1 + math.cos(math.pi * position / max_epochs)) / 2
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * factor
    # the recursive form that step() uses continues from these values
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
