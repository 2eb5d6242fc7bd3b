"""A stacked (Bi)LSTM over zero-padded batches that is exact per sequence, without packing.

On the CPU, ``pack_padded_sequence`` pushes ``nn.LSTM`` off its fast path: an update of the
addition problem (B = 100, T = 111, H = 100) took 162 ms packed and 23 ms this way on a 2-core
machine (``scripts/bench_lstm_packing.py``, numbers in the README). Packing is not needed
for exactness:

- forward direction: the state at step t depends on steps <= t only, so every real step is
  computed exactly and the final state of a sequence of length L is the output at step L - 1;
- backward direction: each sequence is reversed *within its length* (padding stays at the
  end), run forward, and reversed back; its final state is the output at step 0.

Outputs at padded steps are garbage and must be masked by whoever reads them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def reverse_within_lengths(sequences: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's first ``lengths[b]`` steps, leaving its padding in place.

    Args:
        sequences: (B, T, F).
        lengths: (B,) or None (every sequence is T long).
    """
    if lengths is None:
        return sequences.flip(1)
    steps = sequences.size(1)
    positions = torch.arange(steps, device=sequences.device).unsqueeze(0)  # 1 x T
    lengths = lengths.to(sequences.device).unsqueeze(1)  # B x 1
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # B x T
    return sequences.gather(1, index.unsqueeze(-1).expand_as(sequences))


def last_real_step(sequences: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, F) -> (B, F): the output at each sequence's last real step."""
    if lengths is None:
        return sequences[:, -1]
    rows = torch.arange(sequences.size(0), device=sequences.device)
    return sequences[rows, lengths.to(sequences.device) - 1]


def add_forget_gate_bias(lstm: nn.LSTM, value: float) -> None:
    """Add ``value`` to the initial bias of every forget gate of ``lstm`` (all layers and
    directions), in place.

    PyTorch stacks each layer's gate biases as (input, forget, cell, output), H rows each, and
    the gate sees ``bias_ih + bias_hh``: f_t = sigmoid(W_if x_t + b_if + W_hf h_(t-1) + b_hf).
    Both start uniform in [-1/sqrt(H), 1/sqrt(H)], so f_t starts near sigmoid(0) = 0.5 and a
    cell keeps about half of its content per step. ``value`` goes into ``bias_ih[H:2H]``, so
    b_if + b_hf moves by exactly ``value``; 1.0 (Gers et al. 2000; Jozefowicz et al. 2015)
    starts the gate near sigmoid(1) = 0.73. 0.0 leaves the module untouched. No random number
    is drawn, so every other weight is what the same seed gives without it.
    """
    if value == 0.0:
        return
    if not lstm.bias:
        raise ValueError("the LSTM has no biases (bias=False): it has no forget-gate bias to set")
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, parameter in lstm.named_parameters():
            if name.startswith("bias_ih_l"):  # bias_ih_l0, bias_ih_l0_reverse, bias_ih_l1, ...
                parameter[hidden : 2 * hidden] += value


class MaskedLSTM(nn.Module):
    """Stacked (Bi)LSTM on padded batches: (B, T, F) -> states (B, T, dirs*H), last (B, dirs*H).

    ``last`` is the final state of the top layer (forward and backward halves side by side),
    as ``h_n`` of a packed ``nn.LSTM``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        forget_bias: float = 0.0,
    ) -> None:
        """``forget_bias`` is added to every forget gate's initial bias
        (:func:`add_forget_gate_bias`; 0.0: PyTorch's initialisation)."""
        super().__init__()
        self.bidirectional = bidirectional
        self.hidden_size = hidden_size
        self.output_size = hidden_size * (2 if bidirectional else 1)
        if not bidirectional:  # one fused multi-layer kernel
            self.lstm = nn.LSTM(
                input_size,
                hidden_size,
                num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            add_forget_gate_bias(self.lstm, forget_bias)
            return
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else 2 * hidden_size
            self.forward_layers.append(nn.LSTM(layer_input, hidden_size, batch_first=True))
            self.backward_layers.append(nn.LSTM(layer_input, hidden_size, batch_first=True))
            add_forget_gate_bias(self.forward_layers[-1], forget_bias)
            add_forget_gate_bias(self.backward_layers[-1], forget_bias)
        self.between_layers = nn.Dropout(dropout)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """inputs (B, T, F); lengths (B,) or None. Returns (states, last)."""
        if not self.bidirectional:
            states, _ = self.lstm(inputs)  # B x T x H
            return states, last_real_step(states, lengths)
        layer_input = inputs
        for layer, (forward_lstm, backward_lstm) in enumerate(
            zip(self.forward_layers, self.backward_layers, strict=True)
        ):
            if layer > 0:
                layer_input = self.between_layers(layer_input)
            forward_states, _ = forward_lstm(layer_input)  # B x T x H
            backward_reversed, _ = backward_lstm(reverse_within_lengths(layer_input, lengths))
            backward_states = reverse_within_lengths(backward_reversed, lengths)  # B x T x H
            layer_input = torch.cat([forward_states, backward_states], dim=-1)  # B x T x 2H
        last = torch.cat(
            [last_real_step(forward_states, lengths), backward_states[:, 0]], dim=-1
        )  # B x 2H
        return layer_input, last
