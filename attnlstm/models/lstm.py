"""LSTM sequence-to-value models: ``lstm`` (last state) and ``lstm_attn`` (attention pooling)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlstm.attention import Attention
from attnlstm.config import AttentionConfig, SequenceModelConfig
from attnlstm.contracts import ModelOutput, TaskSpec, lengths_to_mask
from attnlstm.errors import ConfigError
from attnlstm.models.common import Head, input_features, with_token_inputs
from attnlstm.models.recurrent import MaskedLSTM
from attnlstm.models.registry import configured_attention, register_model


class LSTMPooling(nn.Module):
    """An LSTM whose states are summarised into one vector, then an MLP head.

    Without attention (``lstm``): features = h_T, the last layer's final state (forward and
    backward halves concatenated when bidirectional).
    With attention (``lstm_attn``): (c, alpha) = attention(h_T or None, [h_1..h_T], mask) and
    features = [c; h_T]: query-based methods use h_T as the query, ``feedforward`` none.
    ``dropout`` drops the states before they are pooled and h_T (once each), and the head's
    hidden layer. ``forget_bias`` is added to the LSTM's initial forget-gate biases
    (:func:`attnlstm.models.recurrent.add_forget_gate_bias`).

    Padding never reaches a real step's state (:class:`MaskedLSTM`) and is masked in the
    attention: a sequence gives the same output alone as padded next to longer ones.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        head_size: int,
        output_activation: str,
        attention: Attention | None,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.lstm = MaskedLSTM(
            input_size, hidden_size, num_layers, bidirectional, dropout, forget_bias
        )
        state_size = self.lstm.output_size
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        feature_size = state_size * (2 if attention is not None else 1)
        self.head = Head(feature_size, head_size, output_size, dropout, output_activation)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> ModelOutput:
        """inputs (B, T, F); lengths (B,) on the CPU or None (every step is data).

        Returns prediction (B, output_size) and attention weights (B, T) (or None).
        """
        states, last = self.lstm(inputs, lengths)  # B x T x S, B x S
        mask = (
            None if lengths is None else lengths_to_mask(lengths.to(inputs.device), inputs.size(1))
        )
        weights = None
        last = self.dropout(last)
        if self.attention is None:
            features = last
        else:
            # dropout once on each path: the states before they are pooled, the last state
            query = last if self.attention.uses_query else None
            context, weights = self.attention(query, self.dropout(states), mask)
            features = torch.cat([context, last], dim=-1)
        return ModelOutput(self.head(features), weights)


def _check(cfg: SequenceModelConfig, attention_cfg: AttentionConfig) -> None:
    if str(cfg.pooling) == "chunked":
        raise ConfigError(
            f"model.pooling=chunked is not allowed: model={cfg.name} pools LSTM states; the"
            " chunked pooling applies to ffattn and mean (use model.pooling=auto)"
        )


def _build(cfg: SequenceModelConfig, attention_cfg: AttentionConfig, spec: TaskSpec) -> nn.Module:
    state_size = cfg.hidden_size * (2 if cfg.bidirectional else 1)
    model = LSTMPooling(
        input_features(cfg, spec),
        spec.output_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
        cfg.dropout,
        cfg.head_size,
        str(cfg.output_activation),
        configured_attention(attention_cfg, state_size, state_size),
        cfg.forget_bias,
    )
    return with_token_inputs(model, cfg, spec)


register_model(
    "lstm",
    schema=SequenceModelConfig,
    predicts="value",
    reads=("features", "tokens"),
    attention="none",
    check=_check,
)(_build)
register_model(
    "lstm_attn",
    schema=SequenceModelConfig,
    predicts="value",
    reads=("features", "tokens"),
    attention="required",
    check=_check,
)(_build)
