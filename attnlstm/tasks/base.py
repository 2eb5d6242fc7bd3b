"""What every task gives the trainer: data, loss, metrics and the shape of model it needs."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

# the shared types live in attnlstm.contracts; re-exported for the task modules' convenience
from attnlstm.contracts import AttentionMap, Batch, TaskSpec

__all__ = ["AttentionMap", "Batch", "Meter", "Monitor", "Task", "TaskSpec"]


@dataclass(frozen=True)
class Monitor:
    """The validation metric that picks the best checkpoint and drives early stopping."""

    metric: str
    mode: Literal["min", "max"]

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` (None: nothing yet); NaN or infinity never does."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


class Meter(ABC):
    """Accumulates a metric over the batches of one evaluation."""

    @abstractmethod
    def update(self, output: Any, batch: Any) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...

    def merge(self, other: Meter) -> None:
        """Add ``other``'s counts (the same split, other examples) to this meter's: the
        processes of a data-parallel run each evaluate a share and merge their meters."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge with another meter")


class Task(ABC):
    """A problem: its data, its loss, its metrics. Knows nothing of models' insides."""

    name: str
    spec: TaskSpec
    monitor: Monitor
    #: metrics reported by :meth:`new_meter`, ``loss`` included
    metric_names: tuple[str, ...]
    #: what ``len(batch)`` counts, for the throughput logged as ``perf/<unit>_per_s``
    throughput_unit: str = "samples"
    #: the model's outputs are class scores (logits over their last dimension), so runs of
    #: this task can vote as an ensemble by their mean probability (``attnlstm-evaluate``)
    classifies: bool = False

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of one training epoch (CPU tensors)."""

    @abstractmethod
    def num_train_batches(self) -> int: ...

    @abstractmethod
    def eval_batches(self, split: Literal["val", "test"]) -> Iterable[Batch]:
        """The fixed batches of a split (CPU tensors)."""

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """Feed ``batch`` to ``model``; stateful tasks override this to carry state."""
        return model(batch.inputs, batch.lengths)

    @abstractmethod
    def loss(self, output: Any, batch: Any) -> Tensor:
        """Mean loss of a batch (the quantity minimised)."""

    @abstractmethod
    def new_meter(self, split: str = "val") -> Meter:
        """A fresh meter for one evaluation of ``split`` (``val`` or ``test``; a task may
        report more at test time, e.g. per-class accuracies)."""

    def attention_maps(self, output: Any, batch: Any) -> list[AttentionMap] | None:
        """Labelled attention heatmaps of ``batch``'s examples from ``output`` (an evaluation
        forward), for the trainer to log as figures; None: the trainer logs the output's
        ``attention`` weights as plain images instead.

        By default, pooling weights (``output.attention`` (B, T): one weight per input step of
        each example) make one heatmap, a row per example, the steps after ``batch.lengths``
        masked as padding; other attention is left to the trainer (None). Tasks override this
        to label the steps or mark the ones that matter.
        """
        weights = getattr(output, "attention", None)
        if weights is None or weights.dim() != 2:
            return None
        weights = weights.detach().float().cpu()
        examples, steps = weights.shape
        return [
            AttentionMap(
                weights,
                [f"example {row}" for row in range(examples)],
                [str(step) for step in range(steps)],
                title=f"{self.name}: attention over the input steps",
                lengths=getattr(batch, "lengths", None),
                x_label="time step",
                y_label="example",
                colour_max=None,
            )
        ]

    def loss_count(self, batch: Any) -> int:
        """What :meth:`loss` is a mean over in ``batch`` (default ``len(batch)``: sequences,
        or the words of a tagging batch; a task whose loss averages over something else says
        so). Data-parallel processes weigh their shares' losses by it."""
        return len(batch)

    def train_epoch_metrics(self) -> dict[str, float]:
        """Metrics of the training epoch just finished, logged as ``train/<name>`` (e.g. the
        language model's perplexity); the trainer logs the mean loss itself."""
        return {}

    def is_solved(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics`` (of one split) count as solving the task."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """RNG and other state needed to resume the training stream exactly."""
        return {}

    def train_stream_state(self) -> dict[str, Any]:
        """What the task carries from one training batch to the next within an epoch (e.g. a
        language model's hidden state and the epoch's loss sums): saved by a checkpoint taken
        inside an epoch. Tensors, numbers and plain containers only."""
        return {}

    def load_train_stream_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`train_stream_state` when resuming inside an epoch."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
