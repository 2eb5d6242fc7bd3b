"""An ensemble of taggers trained on the same vocabulary: the mean of their per-word tag
probabilities.

For M taggers with logits z_m (B, T, K) the ensemble's scores are the log of the mean
probability,

    s = log (1/M sum_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log M      (B, T, K)

so that ``argmax`` is the ensemble's tag and ``cross_entropy(s, y)`` is its negative log
likelihood (``softmax(s)`` is the mean probability itself). The auxiliary tag column is
combined the same way when every member predicts it, and dropped otherwise. Members may differ
in anything but their input and output vocabularies (seeds, sizes, attention); averaging
probabilities, not logits, keeps each member's calibration its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attnlstm.models.tagger import BiLSTMTagger, TaggerOutput


def mean_probability_scores(logits: Sequence[Tensor]) -> Tensor:
    """M tensors (..., K) of logits -> log of the mean of their softmaxes (..., K)."""
    log_probs = torch.stack([z.log_softmax(dim=-1) for z in logits])  # M x ... x K
    return log_probs.logsumexp(dim=0) - math.log(len(logits))


class TaggerEnsemble(nn.Module):
    """Taggers with one vocabulary, voting with their mean probabilities; the same call
    signature and output as :class:`BiLSTMTagger` (``attention`` is None)."""

    def __init__(self, taggers: Sequence[BiLSTMTagger]) -> None:
        super().__init__()
        if not taggers:
            raise ValueError("an ensemble needs at least one tagger")
        self.members = nn.ModuleList(taggers)

    def forward(
        self, words: Tensor, chars: Tensor, char_lengths: Tensor, lengths: Tensor
    ) -> TaggerOutput:
        """words (B, T), chars (B, T, C), char_lengths (B, T), lengths (B,) -> (B, T, K)."""
        outputs = [member(words, chars, char_lengths, lengths) for member in self.members]
        aux = [o.aux_logits for o in outputs]
        aux_scores = None if any(a is None for a in aux) else mean_probability_scores(aux)  # type: ignore[arg-type]
        return TaggerOutput(mean_probability_scores([o.logits for o in outputs]), None, aux_scores)
