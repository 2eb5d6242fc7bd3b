"""The one training loop and what it needs: device, optimiser, checkpoints, logging."""

from attnlstm.training.device import resolve_device
from attnlstm.training.trainer import Trainer

__all__ = ["Trainer", "resolve_device"]
