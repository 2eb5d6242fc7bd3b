"""Weight averaging: the model that is validated, selected and tested is an average of the
weights the optimiser visits, while training goes on with the raw weights.

- ``optim.averaging=nt_asgd``: :class:`NonMonotoneAveraging`, awd-lstm-lm's NT-ASGD.
- ``optim.averaging=ema``: :class:`ExponentialAveraging`, an exponential moving average.

NT-ASGD: SGD until validation stalls, then evaluate the averaged weights.

Merity et al. (2018), section 3: averaged SGD with a non-monotone trigger. Training keeps taking
plain SGD steps (ASGD with a constant rate takes the same steps); what changes after the trigger
is that the model used for validation, checkpoint selection and testing is the running mean of
the weights after every update since the trigger,

    w_avg = (1 / k) sum_{i=1..k} w_{t0 + i}.

The trigger is awd-lstm-lm's: at the end of an epoch with validation loss v, switch when more
than ``nonmono`` epochs have been seen and v > min(losses of all but the last ``nonmono``
epochs). The mean is kept by ``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from attnlstm.errors import ConfigError

log = logging.getLogger(__name__)


class NonMonotoneAveraging:
    """Watches validation losses; once triggered, averages the model's weights after every
    update. ``eval_model`` is the model to evaluate (the average once triggered)."""

    def __init__(self, model: nn.Module, nonmono: int) -> None:
        if nonmono < 0:
            raise ValueError(f"nonmono must not be negative, got {nonmono}")
        self.model = model
        self.nonmono = nonmono
        self.history: list[float] = []
        self.averaged: AveragedModel | None = None
        self.triggered_epoch: int | None = None

    @property
    def active(self) -> bool:
        return self.averaged is not None

    @property
    def eval_model(self) -> nn.Module:
        return self.model if self.averaged is None else self.averaged.module

    def observe(self, val_loss: float, epoch: int) -> None:
        """Record an epoch's validation loss; start averaging if the trigger fires."""
        if (
            self.averaged is None
            and len(self.history) > self.nonmono
            and val_loss > min(self.history[: len(self.history) - self.nonmono])
        ):
            self._start()
            self.triggered_epoch = epoch
            log.info("NT-ASGD: validation stalled at epoch %d; averaging weights from now", epoch)
        self.history.append(val_loss)

    def _start(self) -> None:
        self.averaged = AveragedModel(self.model, use_buffers=True)

    def update(self) -> None:
        """Fold the current weights into the mean (call after every optimiser step)."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "triggered_epoch": self.triggered_epoch,
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.triggered_epoch = state["triggered_epoch"]
        if state["averaged"] is not None:
            self._start()
            assert self.averaged is not None
            self.averaged.load_state_dict(state["averaged"])


class ExponentialAveraging:
    """An exponential moving average of the weights from the first update on (Polyak averaging
    with a horizon of about 1 / (1 - decay) updates):

        w_ema <- decay * w_ema + (1 - decay) * w      after every optimiser step

    ``eval_model`` (the average) is validated, checkpointed as the best model and tested. It
    smooths out the last updates' noise, which matters most with a high learning rate."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in (0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )

    @property
    def active(self) -> bool:
        return True

    @property
    def eval_model(self) -> nn.Module:
        return self.averaged.module

    def observe(self, val_loss: float, epoch: int) -> None:
        """Nothing to decide: the average runs from the start."""

    def update(self) -> None:
        """Fold the current weights into the average (call after every optimiser step)."""
        self.averaged.update_parameters(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])


def build_averaging(
    optim_cfg: Any, model: nn.Module
) -> NonMonotoneAveraging | ExponentialAveraging | None:
    """The weight averaging ``optim.averaging`` names, or None for ``none``."""
    name = str(optim_cfg.averaging)
    if name == "nt_asgd":
        return NonMonotoneAveraging(model, optim_cfg.nonmono)
    if name == "ema":
        return ExponentialAveraging(model, float(optim_cfg.ema_decay))
    return None
