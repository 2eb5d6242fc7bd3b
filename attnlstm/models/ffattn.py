"""Raffel & Ellis (2016): feed-forward attention (``ffattn``) and its unweighted mean (``mean``)."""

from __future__ import annotations

from torch import Tensor, nn

from attnlstm.attention import Attention
from attnlstm.batch import lengths_to_mask
from attnlstm.models.common import LEAKY_SLOPE, Head, ModelOutput, init_lasagne_he_normal


class FeedForwardPooling(nn.Module):
    """A per-step network pooled over time, no recurrence.

        h_t   = LReLU(W x_t + b)                       (``num_layers`` such layers)
        c     = sum_t alpha_t h_t, alpha = attention   (``ffattn``; masked steps excluded)
        c     = mean of h_t over the sequence's steps  (``mean``)
        y     = act(w^T LReLU(W c + b) + b)

    Shapes: inputs (B, T, F) -> h (B, T, D) -> c (B, D) -> y (B, output_size).
    Initialisation follows the authors' code: every weight N(0, 1/fan_in), biases 0.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        head_size: int,
        output_activation: str,
        attention: Attention | None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in range(num_layers):
            layers += [
                nn.Linear(input_size if layer == 0 else hidden_size, hidden_size),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.Dropout(dropout),
            ]
        self.encoder = nn.Sequential(*layers)
        self.attention = attention
        self.head = Head(hidden_size, head_size, output_size, dropout, output_activation)
        init_lasagne_he_normal(self)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> ModelOutput:
        """inputs (B, T, F); lengths (B,) or None (every padded step is data, as the paper)."""
        hidden = self.encoder(inputs)  # B x T x D
        mask = (
            None if lengths is None else lengths_to_mask(lengths.to(inputs.device), inputs.size(1))
        )
        weights = None
        if self.attention is not None:
            context, weights = self.attention(None, hidden, mask)  # B x D, B x T
        elif mask is None:
            context = hidden.mean(dim=1)
        else:
            counts = mask.sum(dim=1, keepdim=True).clamp(min=1).to(hidden.dtype)  # B x 1
            context = (hidden * mask.unsqueeze(-1)).sum(dim=1) / counts
        return ModelOutput(self.head(context), weights)
