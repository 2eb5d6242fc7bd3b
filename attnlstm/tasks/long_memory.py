"""The addition and multiplication long-term-memory problems, as Raffel & Ellis (2016) made them.

Each step carries (value, marker). Values are U[-1, 1] (addition) or U[0, 1] (multiplication)
up to the sequence's length and 0 after it. Markers are -1 at the first and last steps, 1 at two
marked steps N1 and N2, and 0 elsewhere. N1 is uniform over 1..9. N2 follows one of two
revisions of their ``lstm_problems`` code (``task.second_marker``, :class:`SecondMarker`):

- ``padded_half`` (default; commit f791f10 of 18 Aug 2015, the code of the paper's experiments
  in Oct-Nov 2015): N2 uniform over ``range(1, int(T/2 - 1))`` with T the padded length of the
  batch, then N2 + 1 where N2 = N1. A sequence shorter than T may have N2 past its middle.
- ``own_half`` (commit a41c5f2 of 13 Aug 2015): N2 uniform over
  ``range(1, N1) + range(N1 + 1, int(L/2 - 1))`` with L the sequence's own length.

Targets:

    addition:        y = 0.5 + (X1 + X2) / 4
    multiplication:  y = X1 * X2

Fixed-length mode pads every batch to ``ceil(1.1 T0)`` (in floating point, as their code: 111
for T0 = 100) and draws each sequence's length from ``[T0, ceil(1.1 T0))``. Variable-length mode
draws one length per training batch from ``[min_length, max_length]``; its fixed sets hold
batches at lengths ``linspace(min_length, max_length, n_batches)``.

Accuracy is the share of sequences with ``|prediction - target| < tolerance`` (0.04).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from attnlstm.batch import SequenceBatch
from attnlstm.config import LongMemoryProblem, LongMemoryTaskConfig, SecondMarker
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import AttentionMap, Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

#: the shortest sequence on which both markers and the end marker fit (N1 <= 9 < L - 1)
MIN_SEQUENCE_LENGTH = LongMemoryTaskConfig.MIN_LENGTH


def padded_length(min_length: int) -> int:
    """Raffel & Ellis's padded length, ``int(np.ceil(1.1 * min_length))``."""
    return math.ceil(1.1 * min_length)


def generate(
    problem: LongMemoryProblem | str,
    lengths: Tensor,
    padded_to: int,
    generator: torch.Generator,
    second_marker: SecondMarker | str = SecondMarker.padded_half,
) -> tuple[Tensor, Tensor]:
    """Generate one batch of the ``problem``.

    Args:
        problem: ``addition`` or ``multiplication``.
        lengths: (B,) int64, each >= MIN_SEQUENCE_LENGTH and <= ``padded_to``; with
            ``padded_half`` each also at least :func:`last_padded_half_step` + 2 (N2 must
            come before the end marker).
        padded_to: T, the padded length.
        generator: the random stream.
        second_marker: the rule that draws N2 (the module docstring).

    Returns:
        inputs (B, T, 2) float32 with channels (value, marker), and targets (B,) float32.
    """
    problem = LongMemoryProblem(problem)
    second_marker = SecondMarker(second_marker)
    n = lengths.numel()
    if n and (int(lengths.min()) < MIN_SEQUENCE_LENGTH or int(lengths.max()) > padded_to):
        raise ValueError(
            f"lengths must lie in [{MIN_SEQUENCE_LENGTH}, {padded_to}], got"
            f" [{int(lengths.min())}, {int(lengths.max())}]"
        )
    if n and second_marker is SecondMarker.padded_half:
        last = last_padded_half_step(padded_to)
        if int(lengths.min()) < last + 2:
            raise ValueError(
                f"with second_marker=padded_half and padded_to={padded_to} every length must"
                f" be at least {last + 2} (N2 reaches step {last}, before the end marker),"
                f" got {int(lengths.min())}"
            )
    low, high = (-1.0, 1.0) if problem is LongMemoryProblem.addition else (0.0, 1.0)
    values = torch.rand(n, padded_to, generator=generator) * (high - low) + low
    steps = torch.arange(padded_to)
    values = values * (steps.unsqueeze(0) < lengths.unsqueeze(1))  # zero beyond each length

    first = torch.randint(1, 10, (n,), generator=generator)  # N1 in 1..9
    if second_marker is SecondMarker.padded_half:
        second = _second_over_padded_half(first, padded_to, generator)
    else:
        second = _second_over_own_half(first, lengths, generator)

    rows = torch.arange(n)
    markers = torch.zeros(n, padded_to)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    markers[rows, 0] = -1.0
    markers[rows, lengths - 1] = -1.0

    x1, x2 = values[rows, first], values[rows, second]
    targets = 0.5 + (x1 + x2) / 4.0 if problem is LongMemoryProblem.addition else x1 * x2
    return torch.stack([values, markers], dim=-1), targets


def last_padded_half_step(padded_to: int) -> int:
    """The largest N2 the paper's rule can draw at padded length T: the draws reach
    ``int(T/2 - 1) - 1``, and a draw equal to N1 (at most 9) moves one step on."""
    top_draw = padded_to // 2 - 2
    return max(top_draw, min(top_draw, 9) + 1)


def _second_over_padded_half(first: Tensor, padded_to: int, generator: torch.Generator) -> Tensor:
    """N2 as the paper's code (f791f10) draws it: ``np.random.choice(range(1, int(T/2 - 1)))``
    with T the padded length, then ``N2[N2 == N1] += 1``. (B,) int64 from N1 (B,)."""
    upper = padded_to // 2 - 1  # int(T/2 - 1), also under Python 2's integer division
    second = torch.randint(1, upper, first.shape, generator=generator)
    return second + (second == first).long()


def _second_over_own_half(first: Tensor, lengths: Tensor, generator: torch.Generator) -> Tensor:
    """N2 as the first revision (a41c5f2) draws it: uniform over
    ``range(1, N1) + range(N1 + 1, int(L/2 - 1))`` with L each sequence's length. (B,) int64
    from N1 and the lengths (B,)."""
    upper = torch.div(lengths, 2, rounding_mode="floor") - 1  # int(L/2 - 1) for L >= 2
    below = first - 1  # size of range(1, N1)
    above = (upper - first - 1).clamp(min=0)  # size of range(N1 + 1, upper)
    pick = (torch.rand(first.shape, generator=generator) * (below + above)).long()
    pick = torch.minimum(pick, below + above - 1)  # guard the float edge
    return torch.where(pick < below, pick + 1, pick + 2)


def marked_steps(inputs: Tensor) -> Tensor:
    """The two marked steps (N1, N2) of each sequence, in time order.

    Args:
        inputs: (B, T, 2) with channels (value, marker), as :func:`generate` makes them.

    Returns:
        (B, 2) int64 step indices (-1 where a sequence has fewer than two marked steps).
    """
    marked = inputs[..., 1] == 1.0
    padded_to = inputs.size(1)
    steps = torch.arange(padded_to, device=inputs.device).expand_as(marked)
    # unmarked steps sort after every marked one
    first_two = torch.where(marked, steps, padded_to).sort(dim=1).values[:, :2]
    return torch.where(first_two < padded_to, first_two, -1)


def last_steps(inputs: Tensor) -> Tensor:
    """The last real step of each sequence (its end marker, -1), (B,) int64, from ``inputs``
    (B, T, 2): the lengths are known even where the batch does not carry them (unmasked)."""
    ends = inputs[..., 1] == -1.0
    steps = torch.arange(inputs.size(1), device=inputs.device).expand_as(ends)
    return torch.where(ends, steps, -1).amax(dim=1)


class RegressionMeter(Meter):
    """Mean squared error and accuracy (|error| < tolerance) over sequences."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.squared_error = 0.0
        self.correct = 0
        self.count = 0

    def update(self, output: Any, batch: SequenceBatch) -> None:
        error = output.prediction.squeeze(-1).float() - batch.targets
        self.squared_error += float(error.pow(2).sum())
        self.correct += int((error.abs() < self.tolerance).sum())
        self.count += error.numel()

    def merge(self, other: Meter) -> None:
        assert isinstance(other, RegressionMeter)
        self.squared_error += other.squared_error
        self.correct += other.correct
        self.count += other.count

    def compute(self) -> dict[str, float]:
        count = max(self.count, 1)
        return {"loss": self.squared_error / count, "accuracy": self.correct / count}


@register_task("long_memory", schema=LongMemoryTaskConfig, target="value", inputs="features")
class LongMemoryTask(Task):
    """Addition or multiplication with fresh training sequences every epoch and fixed,
    seeded test (and optional validation) sets."""

    metric_names = ("loss", "accuracy")
    monitor = Monitor("accuracy", "max")
    spec = TaskSpec(input_size=2, output_size=1, target="value")

    def __init__(self, cfg: LongMemoryTaskConfig, seed: int, data_dir: str | None = None) -> None:
        """``cfg`` was checked by its schema; the problems are generated, so ``data_dir`` is
        unused."""
        self.cfg = cfg
        self.name = LongMemoryProblem(cfg.name).value
        self.min_length = cfg.min_length
        if cfg.variable_length:
            self.max_length = cfg.max_length or cfg.min_length
        else:
            self.max_length = padded_length(cfg.min_length) - 1
        self._check_memory()
        self._train_generator = torch.Generator().manual_seed(seed)
        self._splits: dict[str, list[SequenceBatch]] = {}

    def _check_memory(self) -> None:
        """ConfigError, before any data are made, when one batch of the generated sequences
        (B x (max_length + 1) x 2 float32 inputs) cannot fit in this machine's memory: the
        allocator would fail only once training has started, with a raw message."""
        cfg = self.cfg
        steps = self.max_length + 1
        rows = max(cfg.batch_size, cfg.eval_batch_size)
        largest = rows * steps * 2 * 4
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not POSIX: let the allocator decide
            return
        if largest > memory:
            raise ConfigError(
                f"task.min_length={cfg.min_length}: one batch of {rows} sequences of {steps}"
                f" steps needs {largest / 2**30:.1f} GiB, more than this machine's"
                f" {memory / 2**30:.1f} GiB of memory; lower task.min_length"
                " (task.max_length) or the batch sizes"
            )

    # -- data -------------------------------------------------------------------------------

    def _batch(self, lengths: Tensor, padded_to: int, generator: torch.Generator) -> SequenceBatch:
        inputs, targets = generate(
            self.cfg.name, lengths, padded_to, generator, self.cfg.second_marker
        )
        return SequenceBatch(inputs, targets, lengths if self.cfg.mask_padding else None)

    def _training_batch(self) -> SequenceBatch:
        cfg, gen = self.cfg, self._train_generator
        if cfg.variable_length:
            length = int(torch.randint(self.min_length, self.max_length + 1, (1,), generator=gen))
            lengths = torch.full((cfg.batch_size,), length, dtype=torch.long)
            return self._batch(lengths, length, gen)
        lengths = torch.randint(
            self.min_length, self.max_length + 1, (cfg.batch_size,), generator=gen
        )
        return self._batch(lengths, self.max_length + 1, gen)

    def train_batches(self, epoch: int) -> Iterator[SequenceBatch]:
        for _ in range(self.cfg.batches_per_epoch):
            yield self._training_batch()

    def num_train_batches(self) -> int:
        return self.cfg.batches_per_epoch

    def _fixed_set(self, seed: int) -> list[SequenceBatch]:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(seed)
        n_batches = cfg.eval_size // cfg.eval_batch_size
        if cfg.variable_length:
            spaced = torch.linspace(
                self.min_length, self.max_length, n_batches, dtype=torch.float64
            )
            return [
                self._batch(
                    torch.full((cfg.eval_batch_size,), int(length), dtype=torch.long),
                    int(length),
                    gen,
                )
                for length in spaced.long().tolist()
            ]
        return [
            self._batch(
                torch.randint(
                    self.min_length, self.max_length + 1, (cfg.eval_batch_size,), generator=gen
                ),
                self.max_length + 1,
                gen,
            )
            for _ in range(n_batches)
        ]

    def eval_batches(self, split: Literal["val", "test"]) -> list[SequenceBatch]:
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'val' or 'test'")
        if split == "val" and not self.cfg.separate_validation:
            split = "test"  # the paper validates (and stops) on its fixed test set
        if split not in self._splits:
            seed = self.cfg.data_seed + (1 if split == "val" else 0)
            self._splits[split] = self._fixed_set(seed)
        return self._splits[split]

    # -- loss and metrics -------------------------------------------------------------------

    def loss(self, output: Any, batch: SequenceBatch) -> Tensor:
        """Mean squared error, as the paper."""
        return torch.nn.functional.mse_loss(output.prediction.squeeze(-1), batch.targets)

    def new_meter(self, split: str = "val") -> RegressionMeter:
        return RegressionMeter(self.cfg.tolerance)

    def attention_maps(self, output: Any, batch: SequenceBatch) -> list[AttentionMap] | None:
        """The pooling weights as one heatmap, a row per sequence labelled with its target
        and prediction, the two marked steps (whose values make the target) circled; with
        masked padding the steps after each length are greyed, without it (the model reads
        the padding as data) each sequence's last step is ticked instead."""
        maps = super().attention_maps(output, batch)
        if not maps:
            return maps
        heatmap = maps[0]
        inputs = batch.inputs.cpu()
        predictions = output.prediction.detach().float().cpu().reshape(-1)
        heatmap.query_labels = [
            f"y {float(target):.2f}, pred {float(predicted):.2f}"
            for target, predicted in zip(batch.targets.cpu(), predictions, strict=True)
        ]
        heatmap.y_label = "sequence"
        operation = "added" if self.name == LongMemoryProblem.addition.value else "multiplied"
        heatmap.marks = {f"marked steps (their values are {operation})": marked_steps(inputs)}
        if batch.lengths is None:
            heatmap.marks["last step (padding follows, unmasked)"] = last_steps(inputs)[:, None]
        return maps

    def is_solved(self, metrics: dict[str, float]) -> bool:
        """Solved at 100% accuracy."""
        return metrics.get("accuracy", 0.0) >= 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"train_generator": self._train_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_generator.set_state(state["train_generator"])
