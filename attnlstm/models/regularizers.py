"""AWD-LSTM's regularisers (Merity, Keskar & Socher 2018), as small reusable pieces."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, the same at every
    step. x (B, T, D) -> (B, T, D), kept units scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, words: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole words: rows of the embedding matrix are zeroed (for the whole batch) with
    probability ``p``, the others scaled by 1 / (1 - p). words (B, T) -> (B, T, E)."""
    weight = embedding.weight
    if training and p > 0.0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p).div_(1.0 - p)
        weight = weight * mask
    return nn.functional.embedding(words, weight, embedding.padding_idx)


class WeightDropLSTM(nn.Module):
    """One LSTM layer with DropConnect on its hidden-to-hidden matrix (AWD-LSTM's weight drop).

    W_hh' = dropout(W_hh, p) is drawn once per forward call (per BPTT segment) and the layer
    then runs PyTorch's fused LSTM kernel (``torch._VF.lstm``, the call inside ``nn.LSTM``)
    with it, so the drop costs one elementwise op on a (4H, H) matrix, not a Python loop over
    time. Parameters and initialisation are ``nn.LSTM``'s: U(-1/sqrt(H), 1/sqrt(H)).

    Shapes: x (B, T, I); state (h, c), each (1, B, H) -> output (B, T, H), (h, c).
    """

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must lie in [0, 1), got {weight_drop}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_drop = weight_drop
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        if state is None:
            zeros = x.new_zeros(1, x.size(0), self.hidden_size)
            state = (zeros, zeros)
        weight_hh = self.weight_hh
        if self.training and self.weight_drop > 0.0:
            weight_hh = nn.functional.dropout(weight_hh, self.weight_drop, training=True)
        flat_weights = [self.weight_ih, weight_hh, self.bias_ih, self.bias_hh]
        # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        output, h, c = torch._VF.lstm(
            x, state, flat_weights, True, 1, 0.0, self.training, False, True
        )
        return output, (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, weight_drop={self.weight_drop}"
