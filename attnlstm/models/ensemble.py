"""An ensemble of classifiers trained on the same task and vocabulary (other seeds, sizes or
attention methods): the mean of their class probabilities.

For M members with logits z_m (..., K) (a text's classes (B, K), a sentence's tags (B, T, K))
the ensemble's scores are the log of the mean probability,

    s = log (1/M sum_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log M      (..., K)

so that ``argmax`` is the ensemble's class and ``cross_entropy(s, y)`` is its negative log
likelihood (``softmax(s)`` is the mean probability itself). Averaging probabilities, not
logits, keeps each member's calibration its own.

The members are called with the same arguments and return the same output type (a dataclass:
:class:`attnlstm.contracts.ModelOutput`, the tagger's ``TaggerOutput``). Every score field of
the output (a tensor in every member, ``prediction`` / ``logits`` / ``aux_logits``) is
combined as above; a field that some member leaves None (a tagger without the auxiliary head)
or that differs in shape between members is None, and the attention weights, which are the
members' own, are dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ProbabilityEnsemble", "TaggerEnsemble", "mean_probability_scores"]


def mean_probability_scores(logits: Sequence[Tensor]) -> Tensor:
    """M tensors (..., K) of logits -> log of the mean of their softmaxes (..., K)."""
    log_probs = torch.stack([z.float().log_softmax(dim=-1) for z in logits])  # M x ... x K
    return log_probs.logsumexp(dim=0) - math.log(len(logits))


class ProbabilityEnsemble(nn.Module):
    """Classifiers of one task and vocabulary, voting with their mean probabilities; the same
    call signature and output type as its members (``attention`` is None)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def forward(self, *inputs: Any) -> Any:
        """The members' outputs on ``inputs`` with their score fields combined."""
        outputs = [member(*inputs) for member in self.members]
        first = outputs[0]
        if not dataclasses.is_dataclass(first) or isinstance(first, type):
            raise TypeError(f"an ensemble combines dataclass outputs, not {type(first).__name__}")
        combined: dict[str, Tensor | None] = {}
        for field in dataclasses.fields(first):
            values = [getattr(output, field.name) for output in outputs]
            if (
                field.name == "attention"
                or any(v is None for v in values)
                or len({v.shape for v in values}) > 1  # auxiliary heads of other sizes
            ):
                combined[field.name] = None
            else:
                combined[field.name] = mean_probability_scores(values)
        return dataclasses.replace(first, **combined)


#: the name ``attnlstm-tag`` and earlier code know the tagger ensemble by
TaggerEnsemble = ProbabilityEnsemble
