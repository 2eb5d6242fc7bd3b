"""``model=lm``: an AWD-LSTM-style language model whose top-layer states attend to earlier ones.

Per BPTT segment of T tokens (B rows):

    x      = LockedDrop_i(EmbedDrop(E)[w])                     B x T x E
    h^l    = LockedDrop_h(LSTM_l(h^{l-1}))    l = 1..L         B x T x H   (top: B x T x D)
    keys   = [m; h^L]          m = the last <= W top states of the previous segment (detached)
    c_t    = Attention(h^L_t, keys, mask: keys at positions t-W .. t-1)     B x T x D
             (``next_word_values``: c_t = sum_j a_tj E[w_{j+1}], the embeddings of the words
              that followed the attended states; w_{j+1} is an input at or before t) B x T x E
    o_t    = tanh(W_c [c_t; h^L_t])        (o_t = h^L_t without attention)  B x T x D'
             (+ h^L_t with ``residual``: the plain model's path kept, attention adds to it)
    logits = Decoder(LockedDrop_o(o))                                       B x T x V

Every position's attention is one batched product under a causal, windowed mask: no Python
loop over time. With ``tie_weights`` D' = E and the decoder shares the embedding matrix.
The state handed back for the next segment (LSTM (h, c) per layer and the attention memory m)
is detached: gradients never cross a segment boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlstm.attention import Attention
from attnlstm.config import AttentionConfig, LanguageModelConfig
from attnlstm.contracts import TaskSpec
from attnlstm.models.registry import configured_attention, register_model
from attnlstm.models.regularizers import WeightDropLSTM, embedding_dropout, locked_dropout


@dataclass
class LanguageModelState:
    """What one segment hands to the next: per-layer (h, c), each (1, B, H_l), the attention
    memory (B, M, D) with M <= W (None without attention) and the input words at the memory's
    positions (B, M) (None without attention)."""

    layers: list[tuple[Tensor, Tensor]]
    memory: Tensor | None
    memory_words: Tensor | None = None

    def select(self, rows: slice | Tensor) -> LanguageModelState:
        """The state of some rows of the batch."""
        layers = [(h[:, rows], c[:, rows]) for h, c in self.layers]
        memory = None if self.memory is None else self.memory[rows]
        words = None if self.memory_words is None else self.memory_words[rows]
        return LanguageModelState(layers, memory, words)


@dataclass
class LanguageModelOutput:
    """logits (B, T, V); state for the next segment (detached); attention (B, T, M + T)
    weights over [memory; segment] or None; regularization: the AR + TAR penalty (a scalar,
    0 in eval mode)."""

    logits: Tensor
    state: LanguageModelState
    attention: Tensor | None
    regularization: Tensor


def causal_window_mask(steps: int, memory: int, window: int, device: torch.device) -> Tensor:
    """(1, T, M + T) bool: query t (position t) may attend to key j (position j - M) iff
    t - window <= j - M < t. Keys are the memory (positions -M .. -1) then the segment."""
    query_pos = torch.arange(steps, device=device).unsqueeze(1)  # T x 1
    key_pos = torch.arange(-memory, steps, device=device).unsqueeze(0)  # 1 x (M + T)
    return ((key_pos < query_pos) & (key_pos >= query_pos - window)).unsqueeze(0)


class LSTMLanguageModel(nn.Module):
    """Stacked LSTM language model with AWD-LSTM's regularisers and optional attention over
    its earlier states; see the module docstring for the computation and shapes."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        tie_weights: bool = True,
        dropout_embedding: float = 0.0,
        dropout_input: float = 0.0,
        dropout_hidden: float = 0.0,
        dropout_output: float = 0.0,
        weight_drop: float = 0.0,
        ar: float = 0.0,
        tar: float = 0.0,
        attention: Attention | None = None,
        attention_window: int = 35,
        init_range: float = 0.1,
        residual: bool = False,
        next_word_values: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        # Tied without attention: the top layer outputs E features, as in AWD-LSTM. With
        # attention the combination layer maps to E instead, and the top layer keeps H.
        top_size = embedding_size if tie_weights and attention is None else hidden_size
        sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [top_size]
        self.layers = nn.ModuleList(
            WeightDropLSTM(sizes[i], sizes[i + 1], weight_drop) for i in range(num_layers)
        )
        self.attention = attention
        self.attention_window = attention_window
        output_size = embedding_size if tie_weights else top_size
        # no bias, as in Luong et al.: a bias here, right before the tied decoder, soaks up the
        # unigram signal, saturates the tanh at SGD rates of 20 and stalls training
        context_size = embedding_size if next_word_values else top_size
        self.combine = (
            None
            if attention is None
            else nn.Linear(context_size + top_size, output_size, bias=False)
        )
        self.next_word_values = next_word_values
        self.decoder = nn.Linear(output_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)
        self.dropout_embedding = dropout_embedding
        self.dropout_input = dropout_input
        self.dropout_hidden = dropout_hidden
        self.dropout_output = dropout_output
        self.ar, self.tar = ar, tar
        self.residual = residual

    def forward(
        self, words: Tensor, state: LanguageModelState | dict[str, Any] | None = None
    ) -> LanguageModelOutput:
        """words (B, T) int64 -> logits (B, T, V), continuing from ``state`` (None: zeros; a
        dict of its fields, as a checkpoint taken inside an epoch stores it, is accepted)."""
        if isinstance(state, dict):
            state = LanguageModelState(**state)
        x = embedding_dropout(self.embedding, words, self.dropout_embedding, self.training)
        x = locked_dropout(x, self.dropout_input, self.training)  # B x T x E
        layer_states = []
        for index, layer in enumerate(self.layers):
            x, layer_state = layer(x, None if state is None else state.layers[index])
            layer_states.append((layer_state[0].detach(), layer_state[1].detach()))
            if index < len(self.layers) - 1:
                x = locked_dropout(x, self.dropout_hidden, self.training)
        top = x  # B x T x D, the raw top-layer output

        weights = memory = memory_words = None
        output = top
        if self.attention is not None:
            assert self.combine is not None
            past = None if state is None else state.memory
            past_words = None if state is None else state.memory_words
            if past is None:
                past = top.new_zeros(top.size(0), 0, top.size(2))
            if past_words is None or past_words.size(1) != past.size(1):
                # a memory without its words (a state from before the words were kept): the
                # words are only needed by next_word values, which then see a padding word
                past_words = words.new_zeros(words.size(0), past.size(1))
            keys = torch.cat([past, top], dim=1)  # B x (M + T) x D
            key_words = torch.cat([past_words, words], dim=1)  # B x (M + T)
            mask = causal_window_mask(top.size(1), past.size(1), self.attention_window, top.device)
            query = top if self.attention.uses_query else None
            values = None
            if self.next_word_values:
                # key j's value is the word after it, w_{j+1}: an input at or before any query
                # t > j that may attend to j. The last key's next word is unknown; no query of
                # this segment may attend to it (j < t), so a padding word 0 stands in.
                next_words = torch.cat([key_words[:, 1:], words.new_zeros(words.size(0), 1)], 1)
                values = self.embedding(next_words)  # B x (M + T) x E
            # context B x T x D (E with next_word values), weights B x T x (M + T)
            context, weights = self.attention(query, keys, mask, values)
            output = torch.tanh(self.combine(torch.cat([context, top], dim=-1)))
            if self.residual:
                output = output + top
            memory = keys[:, -self.attention_window :].detach()
            memory_words = key_words[:, -self.attention_window :]

        dropped = locked_dropout(output, self.dropout_output, self.training)
        logits = self.decoder(dropped)  # B x T x V
        regularization = logits.new_zeros(())
        if self.training and self.ar > 0.0:
            regularization = regularization + self.ar * dropped.pow(2).mean()
        if self.training and self.tar > 0.0 and top.size(1) > 1:
            regularization = regularization + self.tar * (top[:, 1:] - top[:, :-1]).pow(2).mean()
        return LanguageModelOutput(
            logits, LanguageModelState(layer_states, memory, memory_words), weights, regularization
        )


@register_model(
    "lm", schema=LanguageModelConfig, predicts="tokens", reads=("tokens",), attention="optional"
)
def build_language_model(
    cfg: LanguageModelConfig, attention_cfg: AttentionConfig, spec: TaskSpec
) -> LSTMLanguageModel:
    """``model=lm`` over a vocabulary of ``spec.input_size`` words."""
    method = str(attention_cfg.method)
    top_size = cfg.embedding_size if cfg.tie_weights and method == "none" else cfg.hidden_size
    return LSTMLanguageModel(
        spec.input_size,
        cfg.embedding_size,
        cfg.hidden_size,
        cfg.num_layers,
        tie_weights=cfg.tie_weights,
        dropout_embedding=cfg.dropout_embedding,
        dropout_input=cfg.dropout_input,
        dropout_hidden=cfg.dropout_hidden,
        dropout_output=cfg.dropout_output,
        weight_drop=cfg.weight_drop,
        ar=cfg.ar,
        tar=cfg.tar,
        attention=configured_attention(attention_cfg, top_size, top_size),
        attention_window=cfg.attention_window,
        init_range=cfg.init_range,
        residual=cfg.attention_residual,
        next_word_values=str(cfg.attention_values) == "next_word",
    )
