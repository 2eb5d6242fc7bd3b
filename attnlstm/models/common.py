"""Pieces shared by the model families: outputs, the MLP head, initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlstm.contracts import ModelOutput, TaskSpec

#: Lasagne's leaky_rectify slope, used by Raffel & Ellis: LReLU(x) = max(x, 0.01 x)
LEAKY_SLOPE = 0.01


class Head(nn.Module):
    """Two-layer MLP, y = act(W2 LReLU(W1 x + b1) + b2): (B, in) -> (B, out)."""

    def __init__(
        self, in_size: int, hidden_size: int, out_size: int, dropout: float, output_activation: str
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, out_size)
        self.output_activation = str(output_activation)

    def forward(self, features: Tensor) -> Tensor:
        hidden = self.dropout(nn.functional.leaky_relu(self.hidden(features), LEAKY_SLOPE))
        out = self.out(hidden)
        if self.output_activation == "leaky_relu":
            out = nn.functional.leaky_relu(out, LEAKY_SLOPE)
        return out


def init_lasagne_he_normal(module: nn.Module) -> None:
    """Initialise every ``nn.Linear`` as Lasagne's ``HeNormal()`` default (gain 1) did in
    Raffel & Ellis's code: W ~ N(0, 1 / fan_in), b = 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class EmbeddedTokens(nn.Module):
    """A sequence-to-value model reading token ids: each id is embedded first.

        x_t = dropout(E[token_t])   (B, T) ids -> (B, T, embedding_size) -> ``model``

    Padding (``pad`` id) embeds to zeros; the wrapped model masks it by ``lengths`` anyway.
    E is initialised N(0, 0.1^2), as word vectors usually are, rather than nn.Embedding's
    N(0, 1), which saturates the LSTM's gates at the start of training.
    """

    def __init__(
        self, vocab_size: int, embedding_size: int, dropout: float, pad: int, model: nn.Module
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[pad].zero_()
        self.dropout = nn.Dropout(dropout)
        self.model = model

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> ModelOutput:
        """tokens (B, T) int64; lengths (B,) on the CPU or None."""
        return self.model(self.dropout(self.embedding(tokens)), lengths)


def input_features(cfg: object, spec: TaskSpec) -> int:
    """Features per step that a sequence model's first layer reads: the task's own features,
    or ``cfg.embedding_size`` when the task gives token ids."""
    return spec.input_size if spec.inputs == "features" else int(cfg.embedding_size)  # type: ignore[attr-defined]


def with_token_inputs(model: nn.Module, cfg: object, spec: TaskSpec) -> nn.Module:
    """``model`` itself for feature inputs; wrapped in :class:`EmbeddedTokens` for token ids."""
    if spec.inputs == "features":
        return model
    return EmbeddedTokens(
        spec.input_size,
        int(cfg.embedding_size),  # type: ignore[attr-defined]
        float(cfg.embedding_dropout),  # type: ignore[attr-defined]
        spec.special.pad,
        model,
    )
