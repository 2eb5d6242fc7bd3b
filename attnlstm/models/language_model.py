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

The decoder is a full softmax (``decoder="full"``: logits = W o + b, V x D') or the adaptive
softmax of Grave et al. (2017) (``decoder="adaptive"``, :class:`nn.AdaptiveLogSoftmaxWithLoss`;
see :class:`attnlstm.config.LanguageModelConfig` for its formula). The adaptive one never
builds the B x T x V scores while it learns: given the targets y (B x T), the forward returns
only log p(y_t | o_t) (B x T), exact, and the loss is their negated mean, as the full
softmax's cross-entropy is. Without targets (generation) it returns the full
log-distribution log p(. | o_t) (B x T x V) as the logits (softmax of it is p itself).
The state handed back for the next segment (LSTM (h, c) per layer and the attention memory m)
is detached: gradients never cross a segment boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlstm.attention import Attention
from attnlstm.config import AttentionConfig, LanguageModelConfig
from attnlstm.contracts import TaskSpec
from attnlstm.errors import ConfigError
from attnlstm.models.fused_softmax import linear_log_prob
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
    """logits (B, T, V): scores whose softmax is the next-word distribution (the adaptive
    decoder's are log-probabilities), None where the adaptive decoder was given the targets;
    state for the next segment (detached); attention (B, T, M + T) weights over [memory;
    segment] or None; regularization: the AR + TAR penalty (a scalar, 0 in eval mode);
    target_log_probs (B, T): log p(y_t | w_<=t) of the given targets, when the model was given
    them and either decodes with the adaptive softmax or trains (the full softmax's scores are
    then made and spent inside :func:`~attnlstm.models.fused_softmax.linear_log_prob`, and
    ``logits`` is None); None otherwise."""

    logits: Tensor | None
    state: LanguageModelState
    attention: Tensor | None
    regularization: Tensor
    target_log_probs: Tensor | None = None


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
        decoder: str = "full",
        adaptive_cutoffs: Sequence[int] = (2000, 5000),
        adaptive_div_value: float = 4.0,
    ) -> None:
        super().__init__()
        if decoder not in ("full", "adaptive"):
            raise ValueError(f"decoder must be 'full' or 'adaptive', got {decoder!r}")
        if decoder == "adaptive" and tie_weights:  # the config refuses it first, by its keys
            raise ValueError(
                "decoder='adaptive' cannot tie its weights to the embedding matrix: it has no"
                " vocabulary-by-features matrix; pass tie_weights=False"
            )
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
        self.decoder: nn.Linear | nn.AdaptiveLogSoftmaxWithLoss
        if decoder == "adaptive":
            self.decoder = adaptive_softmax(
                output_size, vocab_size, list(adaptive_cutoffs), adaptive_div_value
            )
        else:
            self.decoder = nn.Linear(output_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            # every matrix ~ U(-r, r) as the full decoder's; the head's bias starts at 0
            for name, parameter in self.decoder.named_parameters():
                if name == "head.bias":
                    nn.init.zeros_(parameter)
                else:
                    nn.init.uniform_(parameter, -init_range, init_range)
        else:
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
        self,
        words: Tensor,
        state: LanguageModelState | dict[str, Any] | None = None,
        targets: Tensor | None = None,
    ) -> LanguageModelOutput:
        """words (B, T) int64 -> logits (B, T, V), continuing from ``state`` (None: zeros; a
        dict of its fields, as a checkpoint taken inside an epoch stores it, is accepted).

        ``targets`` (B, T) int64, the next words: the adaptive decoder, and the full one in
        training, then return ``target_log_probs`` (B, T) = log p(targets) instead of the
        logits (which the full decoder still returns in evaluation)."""
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
        target_log_probs = None
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            logits, target_log_probs = self._adaptive(dropped, targets)
            regularization = dropped.new_zeros((), dtype=torch.float32)
        elif (
            targets is not None
            and self.training
            and not torch.is_autocast_enabled(dropped.device.type)
        ):
            # training: log p(targets) straight from the features, the (N, V) scores made
            # and spent in place (attnlstm.models.fused_softmax); no logits to return
            rows, steps, size = dropped.shape
            picked = linear_log_prob(
                dropped.reshape(rows * steps, size),
                self.decoder.weight,
                self.decoder.bias,
                targets.reshape(rows * steps),
            )
            logits, target_log_probs = None, picked.view(rows, steps)
            regularization = dropped.new_zeros(())
        else:
            logits = self.decoder(dropped)  # B x T x V
            regularization = logits.new_zeros(())
        if self.training and self.ar > 0.0:
            regularization = regularization + self.ar * dropped.pow(2).mean()
        if self.training and self.tar > 0.0 and top.size(1) > 1:
            regularization = regularization + self.tar * (top[:, 1:] - top[:, :-1]).pow(2).mean()
        return LanguageModelOutput(
            logits,
            LanguageModelState(layer_states, memory, memory_words),
            weights,
            regularization,
            target_log_probs,
        )

    def _adaptive(
        self, features: Tensor, targets: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """The adaptive decoder on features (B, T, D'): (None, log p(targets) (B, T)) given
        targets (B, T); else (log p(. | o) (B, T, V), None). It runs in float32 outside any
        autocast: torch's adaptive softmax mixes its input's dtype with its log-softmax's,
        which autocast makes differ, and the perplexity should not be read in bfloat16."""
        decoder = self.decoder
        assert isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss)
        rows, steps, size = features.shape
        flat = features.reshape(rows * steps, size).float()
        with torch.autocast(features.device.type, enabled=False):
            if targets is None:
                return decoder.log_prob(flat).view(rows, steps, -1), None
            picked = adaptive_target_log_probs(decoder, flat, targets.reshape(-1))
        return None, picked.view(rows, steps)


def adaptive_target_log_probs(
    decoder: nn.AdaptiveLogSoftmaxWithLoss, features: Tensor, targets: Tensor
) -> Tensor:
    """log p(y_k | o_k) (N,) of targets y (N,) under the adaptive softmax, from features o
    (N, D'): the head's log-softmax at y (a shortlist word, y < c_1) or at y's cluster i, plus
    the cluster's own log-softmax at y - c_i. This is the ``output`` of the module's forward,
    but every cluster runs, an empty one on no rows: its parameters take part in each step
    (with a zero gradient), as DistributedDataParallel (find_unused_parameters=False) needs;
    torch's forward skips a cluster no target falls in."""
    shortlist = decoder.shortlist_size
    bounds = torch.tensor(decoder.cutoffs, device=targets.device)  # c_1 .. c_n, V
    cluster = torch.bucketize(targets, bounds[:-1], right=True)  # 0: head, i: cluster i
    column = torch.where(cluster == 0, targets, shortlist + cluster - 1)
    head = torch.log_softmax(decoder.head(features), dim=1)  # N x (c_1 + n)
    picked = head.gather(1, column.unsqueeze(1)).squeeze(1)
    for index, tail in enumerate(decoder.tail):
        rows = (cluster == index + 1).nonzero().squeeze(1)
        local = torch.log_softmax(tail(features[rows]), dim=1)  # rows x cluster size
        words = (targets[rows] - decoder.cutoffs[index]).unsqueeze(1)
        picked = picked.index_add(0, rows, local.gather(1, words).squeeze(1))
    return picked


def adaptive_softmax(
    in_features: int, vocab_size: int, cutoffs: list[int], div_value: float
) -> nn.AdaptiveLogSoftmaxWithLoss:
    """The adaptive softmax over ``vocab_size`` words (its head with a bias, as the full
    decoder); a ConfigError naming the keys when the cut-offs do not fit the vocabulary or a
    cluster's projection would have no feature left (D' // div^i = 0)."""
    if cutoffs and max(cutoffs) >= vocab_size:
        raise ConfigError(
            f"model.adaptive_cutoffs={_show_list(cutoffs)} is not allowed: every cut-off must be"
            f" below the vocabulary size, {vocab_size} words here; lower them (the first"
            " cut-off is the size of the head's shortlist)"
        )
    for cluster in range(1, len(cutoffs) + 1):
        width = int(in_features // (div_value**cluster))
        if width < 1:
            raise ConfigError(
                f"model.adaptive_div_value={div_value:g} is not allowed with"
                f" model.adaptive_cutoffs={_show_list(cutoffs)}: tail cluster {cluster} would"
                f" project the decoder's {in_features} input features onto"
                f" {in_features} // {div_value:g}^{cluster} = 0; lower model.adaptive_div_value,"
                " use fewer cut-offs, or widen the model"
            )
    return nn.AdaptiveLogSoftmaxWithLoss(
        in_features, vocab_size, cutoffs, div_value=div_value, head_bias=True
    )


def _show_list(values: Sequence[int]) -> str:
    """[2000,5000], as the list is written on the command line."""
    return "[" + ",".join(str(value) for value in values) + "]"


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
        decoder=str(cfg.decoder),
        adaptive_cutoffs=list(cfg.adaptive_cutoffs),
        adaptive_div_value=cfg.adaptive_div_value,
    )
