"""What models, tasks, the trainer and the plots share, and nothing else.

This module is the neutral ground between the layers (see the README's architecture section):
a task describes the model it needs with a :class:`TaskSpec` and hands the trainer batches
that follow the :class:`Batch` protocol; a model returns an output that may carry attention
weights (:class:`ModelOutput`); a task labels attention weights for a figure with an
:class:`AttentionMap`. Models and tasks import this module, never each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "INPUT_KINDS",
    "TARGET_KINDS",
    "AttentionMap",
    "Batch",
    "InputKind",
    "ModelOutput",
    "SpecialTokens",
    "TargetKind",
    "TaskSpec",
    "lengths_to_mask",
]

#: What a model predicts (:attr:`TaskSpec.target`): ``value`` one output vector per sequence;
#: ``tokens`` the next word at every position of a stream (language models); ``tags`` one
#: class per word of a sentence; ``sequence`` a token sequence per source sequence.
TargetKind = Literal["value", "tokens", "tags", "sequence"]
TARGET_KINDS: dict[str, str] = {
    "value": "one value per sequence",
    "tokens": "the next word at every position",
    "tags": "a tag for every word",
    "sequence": "an output sequence for each input sequence",
}

#: What a model reads (:attr:`TaskSpec.inputs`): ``features`` float vectors (B, T, F) with
#: F = input_size; ``tokens`` token ids (B, T) from a vocabulary of input_size entries.
InputKind = Literal["features", "tokens"]
INPUT_KINDS: dict[str, str] = {
    "features": "a vector of numbers per step",
    "tokens": "token ids (words) per step",
}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens of a task's vocabularies; models take them from the spec
    (never from a data module), so that a checkpoint rebuilds its model without the data."""

    pad: int = 0
    unk: int = 1
    bos: int | None = 2  # None: the task's vocabularies have no such token
    eos: int | None = 3


@dataclass(frozen=True)
class TaskSpec:
    """What a model must read and produce for a task; stored in every checkpoint, so that a
    run folder rebuilds its model without reading the data.

    Attributes:
        input_size: features per input step (``inputs="features"``), or the input vocabulary's
            size (``inputs="tokens"``; a tagger's word vocabulary, a translator's source).
        output_size: values or classes predicted per sequence, the output vocabulary's size
            (language models, encoder-decoders) or the tag set's (taggers).
        target: what is predicted (:data:`TARGET_KINDS`).
        inputs: what is read (:data:`INPUT_KINDS`).
        char_vocab_size: characters known to the task (taggers' character features), or 0.
        aux_output_size: classes of an auxiliary per-word output (a tagger's second tag
            column), or 0.
        special: the ids of the special tokens.
        subword_buckets: hashed character n-gram buckets of the token inputs (ids 1 to
            ``subword_buckets``, 0 = none), or 0 when tokens come without subwords.
    """

    input_size: int
    output_size: int
    target: str = "value"
    inputs: str = "features"
    char_vocab_size: int = 0
    aux_output_size: int = 0
    special: SpecialTokens = field(default_factory=SpecialTokens)
    subword_buckets: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, as a checkpoint loaded with ``weights_only=True`` accepts."""
        return {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "target": self.target,
            "inputs": self.inputs,
            "char_vocab_size": self.char_vocab_size,
            "aux_output_size": self.aux_output_size,
            "special": vars(self.special).copy(),
            "subword_buckets": self.subword_buckets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        fields = dict(data)
        fields["special"] = SpecialTokens(**fields.get("special", {}))
        return cls(**fields)


@dataclass
class AttentionMap:
    """Attention weights to show as a heatmap: ``weights`` (Tq, T), one row per query step
    (``query_labels``, e.g. output tokens) and one column per key (``key_labels``).

    The same heatmap shows pooling attention (one weight per input step of each example):
    ``weights`` (K, T), one row per example, the time steps as keys.

    Attributes:
        lengths: (Tq,) the real keys of each row; the keys after them are padding, drawn
            masked. None: every key is real.
        marks: positions to point out, by legend entry: ``{label: (Tq, M) key indices}``,
            -1 where a row has fewer than M (e.g. the two marked steps of the addition problem).
        x_label, y_label: what the keys and the rows are.
        colour_max: the top of the colour scale, which starts at 0; None: the largest weight
            shown (pooling weights over a hundred steps are small, and would all look alike
            on a [0, 1] scale).
    """

    weights: Tensor
    query_labels: list[str]
    key_labels: list[str]
    title: str = ""
    lengths: Tensor | None = None
    marks: dict[str, Tensor] = field(default_factory=dict)
    x_label: str = "source"
    y_label: str = "output"
    colour_max: float | None = 1.0


@dataclass
class ModelOutput:
    """A sequence-to-value model's output: ``prediction`` (B, output_size) and the attention
    weights (B, T) over the input steps, or None. Other families return their own output
    types; the trainer relies only on an optional ``attention`` attribute."""

    prediction: Tensor
    attention: Tensor | None = None


@runtime_checkable
class Batch(Protocol):
    """What the trainer needs of a task's batch. ``len(batch)`` counts the samples (for
    throughput); ``lengths`` (B,) on the CPU, or None, says how long each sequence is."""

    lengths: Tensor | None

    def __len__(self) -> int: ...

    def to(self, device: torch.device) -> Batch:
        """The batch with its tensors on ``device`` (lengths may stay on the CPU)."""
        ...

    def select(self, count: int) -> Batch:
        """The first ``count`` samples (a few examples for attention figures)."""
        ...


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """Boolean mask (B, max_length), True at steps t < lengths[b]."""
    steps = torch.arange(max_length, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)
