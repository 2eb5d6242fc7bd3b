"""The batch that flows from a task to a model; neither owns it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnlstm.contracts import lengths_to_mask

__all__ = ["SequenceBatch", "lengths_to_mask"]


@dataclass
class SequenceBatch:
    """Padded sequences and one target per sequence.

    Attributes:
        inputs: (B, T, F) float, zero beyond each sequence's length.
        targets: (B,) float (regression) or long (classes).
        lengths: (B,) int64 on the CPU, or None when the model must see every padded step as
            data (the paper's unmasked zero padding).
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None

    def __len__(self) -> int:
        return self.inputs.size(0)

    @property
    def mask(self) -> Tensor | None:
        """(B, T) bool, True at real steps; None when unmasked."""
        if self.lengths is None:
            return None
        return lengths_to_mask(self.lengths.to(self.inputs.device), self.inputs.size(1))

    def to(self, device: torch.device) -> SequenceBatch:
        """Inputs and targets moved to ``device``; lengths stay on the CPU (packing wants them
        there)."""
        return SequenceBatch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.lengths,
        )

    def select(self, count: int) -> SequenceBatch:
        """The first ``count`` sequences."""
        lengths = None if self.lengths is None else self.lengths[:count]
        return SequenceBatch(self.inputs[:count], self.targets[:count], lengths)
