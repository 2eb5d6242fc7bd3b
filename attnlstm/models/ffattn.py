"""Raffel & Ellis (2016): feed-forward attention (``ffattn``) and its unweighted mean (``mean``)."""

from __future__ import annotations

from torch import Tensor, nn

from attnlstm.attention import Attention, FeedForwardAttention
from attnlstm.config import AttentionConfig, SequenceModelConfig
from attnlstm.contracts import ModelOutput, TaskSpec, lengths_to_mask
from attnlstm.errors import ConfigError
from attnlstm.models.common import (
    LEAKY_SLOPE,
    Head,
    init_lasagne_he_normal,
    input_features,
    with_token_inputs,
)
from attnlstm.models.fused_pool import (
    fused_applies,
    fused_attention_pool,
    fused_kernel,
    fused_mean_pool,
)
from attnlstm.models.long_pooling import chunked_attention_pool, chunked_mean_pool
from attnlstm.models.registry import configured_attention, register_model

#: ``pooling=auto`` switches to the fused (or chunked) pooling from this many steps on (below
#: it the plain computation is as fast; see scripts/bench_long.py)
AUTO_CHUNKED_FROM_STEPS = 512
CHUNKED_POOLING_APPLIES = (
    "model.pooling={pooling} applies to ffattn and mean with one dense layer and no dropout;"
    " use model.pooling=auto or plain"
)


class FeedForwardPooling(nn.Module):
    """A per-step network pooled over time, no recurrence.

        h_t   = LReLU(W x_t + b)                       (``num_layers`` such layers)
        c     = sum_t alpha_t h_t, alpha = attention   (``ffattn``; masked steps excluded)
        c     = mean of h_t over the sequence's steps  (``mean``)
        y     = act(w^T LReLU(W c + b) + b)

    Shapes: inputs (B, T, F) -> h (B, T, D) -> c (B, D) -> y (B, output_size).
    Initialisation follows the authors' code: every weight N(0, 1/fan_in), biases 0.

    ``pooling`` picks how h and c are computed: ``plain`` autograd keeps (B, T, D) tensors;
    ``chunked`` fuses the dense layer with the pooling and works through time in chunks,
    recomputing h in the backward pass (same numbers, far less memory, faster on long inputs;
    one dense layer, the paper's scorer and no dropout between them); ``fused`` computes the
    same in one compiled CPU kernel (:mod:`attnlstm.models.fused_pool`; chunked on a GPU or in
    another precision); ``auto`` takes ``fused`` where the kernel builds, else ``chunked``,
    where they apply and the input has at least ``AUTO_CHUNKED_FROM_STEPS`` steps.
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
        pooling: str = "auto",
        chunk_size: int = 4096,
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
        self.pooling = str(pooling)
        self.chunk_size = chunk_size
        self.chunkable = (
            num_layers == 1
            and dropout == 0.0
            and (
                attention is None
                or (isinstance(attention, FeedForwardAttention) and attention.v is None)
            )
        )
        if self.pooling in ("chunked", "fused") and not self.chunkable:
            raise ConfigError(
                f"{self.pooling} pooling needs one dense layer, no dropout and the paper's"
                " single-layer feedforward scorer (or the mean); use pooling=plain or auto"
            )
        if self.pooling == "fused" and fused_kernel() is None:
            raise ConfigError(
                "model.pooling=fused needs its C++ kernel, which could not be built here (a C++"
                " compiler and ninja are needed; the log says why); use model.pooling=auto or"
                " chunked"
            )
        init_lasagne_he_normal(self)

    def uses_chunked(self, steps: int) -> bool:
        """Whether an input of ``steps`` steps skips the plain (B, T, D) computation: the
        chunked or the fused pooling."""
        if self.pooling == "auto":
            return self.chunkable and steps >= AUTO_CHUNKED_FROM_STEPS
        return self.pooling in ("chunked", "fused")

    def implementation(self, inputs: Tensor) -> str:
        """``plain``, ``chunked`` or ``fused``: what pools ``inputs`` (B, T, F)."""
        if not self.uses_chunked(inputs.size(1)):
            return "plain"
        if self.pooling == "chunked":
            return "chunked"
        return "fused" if fused_applies(inputs) else "chunked"

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> ModelOutput:
        """inputs (B, T, F); lengths (B,) or None (every padded step is data, as the paper)."""
        mask = (
            None if lengths is None else lengths_to_mask(lengths.to(inputs.device), inputs.size(1))
        )
        implementation = self.implementation(inputs)
        if implementation == "fused":
            dense = self.encoder[0]
            if self.attention is None:
                context, weights = fused_mean_pool(inputs, mask, dense), None
            else:
                context, weights = fused_attention_pool(inputs, mask, dense, self.attention.linear)
            return ModelOutput(self.head(context), weights)
        if implementation == "chunked":
            dense = self.encoder[0]
            if self.attention is None:
                context, weights = chunked_mean_pool(inputs, mask, dense, self.chunk_size), None
            else:
                context, weights = chunked_attention_pool(
                    inputs, mask, dense, self.attention.linear, self.chunk_size
                )
            return ModelOutput(self.head(context), weights)

        hidden = self.encoder(inputs)  # B x T x D
        weights = None
        if self.attention is not None:
            context, weights = self.attention(None, hidden, mask)  # B x D, B x T
        elif mask is None:
            context = hidden.mean(dim=1)
        else:
            counts = mask.sum(dim=1, keepdim=True).clamp(min=1).to(hidden.dtype)  # B x 1
            context = (hidden * mask.unsqueeze(-1)).sum(dim=1) / counts
        return ModelOutput(self.head(context), weights)


def _check(cfg: SequenceModelConfig, attention_cfg: AttentionConfig) -> None:
    if cfg.bidirectional:
        raise ConfigError(
            f"model.bidirectional=true is not allowed: model={cfg.name} has no recurrence"
        )
    if cfg.forget_bias != 0.0:
        raise ConfigError(
            f"model.forget_bias={cfg.forget_bias:g} is not allowed: model={cfg.name} has no"
            " LSTM (the key sets the forget gates of model=lstm and lstm_attn)"
        )
    pooling = str(cfg.pooling)
    if pooling in ("chunked", "fused") and (cfg.num_layers != 1 or cfg.dropout > 0):
        raise ConfigError(CHUNKED_POOLING_APPLIES.format(pooling=pooling))
    if pooling in ("chunked", "fused") and attention_cfg.hidden_dim is not None:
        raise ConfigError(
            f"attention.hidden_dim={attention_cfg.hidden_dim} is not allowed with"
            f" model.pooling={pooling}: the {pooling} pooling computes the paper's single-layer"
            " feedforward scorer; use model.pooling=plain or auto, or drop attention.hidden_dim"
        )


def _build(cfg: SequenceModelConfig, attention_cfg: AttentionConfig, spec: TaskSpec) -> nn.Module:
    model = FeedForwardPooling(
        input_features(cfg, spec),
        spec.output_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.dropout,
        cfg.head_size,
        str(cfg.output_activation),
        configured_attention(attention_cfg, None, cfg.hidden_size),
        pooling=str(cfg.pooling),
        chunk_size=cfg.chunk_size,
    )
    return with_token_inputs(model, cfg, spec)


register_model(
    "ffattn",
    schema=SequenceModelConfig,
    predicts="value",
    reads=("features", "tokens"),
    attention="query_free",
    check=_check,
)(_build)
register_model(
    "mean",
    schema=SequenceModelConfig,
    predicts="value",
    reads=("features", "tokens"),
    attention="none",
    check=_check,
)(_build)
