"""Pieces shared by the model families: outputs, the MLP head, initialisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

#: Lasagne's leaky_rectify slope, used by Raffel & Ellis: LReLU(x) = max(x, 0.01 x)
LEAKY_SLOPE = 0.01


@dataclass
class ModelOutput:
    """prediction (B, output_size); attention (B, T) weights over input steps, or None."""

    prediction: Tensor
    attention: Tensor | None = None


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
