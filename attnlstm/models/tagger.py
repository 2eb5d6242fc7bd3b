"""``model=tagger``: a (Bi)LSTM part-of-speech tagger with character features and optional
self-attention over the sentence.

For a batch of B sentences padded to T words (words of at most C characters):

    x_i  = Dropout([E_w[w_i]; chars(w_i)])                    B x T x (E + F)
    h    = (Bi)LSTM(x)                                         B x T x D   (D = dirs * H)
    c_i  = Attention(h_i, h, mask: the real words of the sentence)        B x T x D
    o_i  = tanh(W_c [c_i; h_i])   (+ h_i with ``residual``; o_i = h_i without attention)
    p_i  = softmax(W_o Dropout(o_i) + b_o)                     B x T x K
    q_i  = softmax(W_a Dropout(o_i) + b_a)   (with ``aux_tags``: a second tag column, B x T x A)

``chars`` is the final forward and backward states of a character BiLSTM (Plank et al. 2016),
or max-pooled character convolutions (Ma & Hovy 2016): F features computed once per distinct
word form of the batch (about half its words), for the real words only. Every step is exact per
sentence (:class:`MaskedLSTM`, masked attention, characters masked per word), so a sentence gets
the same tags alone as in a padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlstm.attention import Attention
from attnlstm.config import AttentionConfig, TaggerConfig
from attnlstm.contracts import TaskSpec, lengths_to_mask
from attnlstm.models.recurrent import MaskedLSTM
from attnlstm.models.registry import configured_attention, register_model

#: upper bounds (characters) of the length buckets the character BiLSTM runs in; longer words
#: make one more bucket. A padded batch runs every row for as many steps as its longest row, and
#: a batch of words pads to its longest (URLs, e-mail addresses) while most words are short.
CHAR_LENGTH_BUCKETS = (4, 8, 12)


def distinct_rows(chars: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct words of a batch, so each form's characters are encoded once.

    chars (N, C) int64 (0 = padding, so a row's length is its count of non-zero ids) ->
    (unique (U, C'), unique lengths (U,), inverse (N,)) with ``unique[inverse] == chars`` up
    to the padding columns dropped (C' = the longest word)."""
    unique, inverse = torch.unique(chars, dim=0, return_inverse=True)
    unique_lengths = (unique != 0).sum(dim=1)
    return unique[:, : int(unique_lengths.max())], unique_lengths, inverse


@dataclass
class TaggerOutput:
    """logits (B, T, K); attention (B, T, T) weights of each word over its sentence, or None
    (a query-free method gives one row per sentence, (B, 1, T)); aux_logits (B, T, A) of the
    auxiliary tag column, or None."""

    logits: Tensor
    attention: Tensor | None = None
    aux_logits: Tensor | None = None


class CharLSTMEncoder(nn.Module):
    """Words as characters -> the char BiLSTM's final states: (N, C) ids -> (N, 2 * hidden)."""

    #: bucket bounds (``()``: all words in one padded batch; ``scripts/bench_tagger.py``)
    length_buckets: tuple[int, ...] = CHAR_LENGTH_BUCKETS

    def __init__(self, num_chars: int, embedding_size: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.lstm = MaskedLSTM(embedding_size, hidden_size, 1, bidirectional=True, dropout=0.0)
        self.output_size = 2 * hidden_size

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        """chars (N, C) int64 (0 = padding), lengths (N,) >= 1 -> (N, 2H).

        Words run in buckets of similar length (:data:`CHAR_LENGTH_BUCKETS`), each padded to
        its own longest word: the same states, in fewer steps (``scripts/bench_tagger.py``)."""
        lengths = lengths.to(chars.device)
        if not self.length_buckets or chars.size(1) <= self.length_buckets[0]:
            return self.lstm(self.embedding(chars), lengths)[1]
        output: Tensor | None = None
        lower = 0
        for upper in (*self.length_buckets, chars.size(1)):
            rows = ((lengths > lower) & (lengths <= upper)).nonzero().squeeze(1)
            lower = upper
            if rows.numel() == 0:
                continue
            width = int(lengths[rows].max())
            _, last = self.lstm(self.embedding(chars[rows, :width]), lengths[rows])
            if output is None:
                output = last.new_zeros(chars.size(0), last.size(1))
            output = output.index_copy(0, rows, last)
        assert output is not None, "every word has at least one character"
        return output


class CharCNNEncoder(nn.Module):
    """Words as characters -> max over positions of a 1-D convolution: (N, C) -> (N, filters).

    Padding characters embed to zeros (``padding_idx``), exactly what the convolution's own
    zero padding supplies, and are excluded from the max: a word's features do not depend on
    how wide its batch is padded."""

    def __init__(self, num_chars: int, embedding_size: int, filters: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"char_kernel_size must be odd, got {kernel_size}")
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.conv = nn.Conv1d(embedding_size, filters, kernel_size, padding=kernel_size // 2)
        self.output_size = filters

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        """chars (N, C) int64 (0 = padding), lengths (N,) >= 1 -> (N, filters)."""
        features = self.conv(self.embedding(chars).transpose(1, 2))  # N x filters x C
        real = lengths_to_mask(lengths.to(chars.device), chars.size(1)).unsqueeze(1)  # N x 1 x C
        return features.masked_fill(~real, float("-inf")).amax(dim=2)


class BiLSTMTagger(nn.Module):
    """See the module docstring for the computation and shapes."""

    #: encode each distinct form of a batch once (False: every word; ``scripts/bench_tagger.py``)
    encode_distinct_forms = True

    def __init__(
        self,
        vocab_size: int,
        num_tags: int,
        word_embedding_size: int = 100,
        char_encoder: nn.Module | None = None,
        hidden_size: int = 200,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.33,
        attention: Attention | None = None,
        residual: bool = True,
        aux_tags: int = 0,
    ) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(vocab_size, word_embedding_size, padding_idx=0)
        self.char_encoder = char_encoder
        char_size = 0 if char_encoder is None else char_encoder.output_size
        self.input_dropout = nn.Dropout(dropout)
        self.lstm = MaskedLSTM(
            word_embedding_size + char_size, hidden_size, num_layers, bidirectional, dropout
        )
        state_size = self.lstm.output_size
        self.attention = attention
        self.combine = (
            None if attention is None else nn.Linear(2 * state_size, state_size, bias=False)
        )
        self.residual = residual
        self.output_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(state_size, num_tags)
        self.aux_classifier = nn.Linear(state_size, aux_tags) if aux_tags > 0 else None

    def forward(
        self, words: Tensor, chars: Tensor, char_lengths: Tensor, lengths: Tensor
    ) -> TaggerOutput:
        """words (B, T), chars (B, T, C), char_lengths (B, T), lengths (B,) -> logits (B, T, K).

        Positions beyond a sentence's length get logits too; the loss and metrics skip them.
        """
        batch, steps = words.shape
        mask = lengths_to_mask(lengths.to(words.device), steps)  # B x T
        features = [self.word_embedding(words)]  # B x T x E
        if self.char_encoder is not None:
            real = mask.reshape(-1).nonzero().squeeze(1)  # the real words, flattened
            word_chars = chars.reshape(batch * steps, -1)[real]
            word_lengths = char_lengths.reshape(-1)[real]
            if self.encode_distinct_forms:
                forms, form_lengths, form_of_word = distinct_rows(word_chars)
            else:
                forms, form_lengths = word_chars, word_lengths
                form_of_word = torch.arange(real.numel(), device=real.device)
            encoded = self.char_encoder(forms, form_lengths)[form_of_word]  # N x F
            char_features = encoded.new_zeros(batch * steps, encoded.size(1))
            char_features = char_features.index_copy(0, real, encoded)
            features.append(char_features.view(batch, steps, -1))
        x = self.input_dropout(torch.cat(features, dim=-1))
        states, _ = self.lstm(x, lengths)  # B x T x D
        output, weights = states, None
        if self.attention is not None:
            assert self.combine is not None
            query = states if self.attention.uses_query else None
            context, weights = self.attention(query, states, mask.unsqueeze(1))
            context = context.expand_as(states)  # a query-free method: one context per sentence
            output = torch.tanh(self.combine(torch.cat([context, states], dim=-1)))
            if self.residual:
                output = output + states
        dropped_output = self.output_dropout(output)
        aux_logits = None if self.aux_classifier is None else self.aux_classifier(dropped_output)
        return TaggerOutput(self.classifier(dropped_output), weights, aux_logits)


@register_model(
    "tagger", schema=TaggerConfig, predicts="tags", reads=("tokens",), attention="optional"
)
def build_tagger(cfg: TaggerConfig, attention_cfg: AttentionConfig, spec: TaskSpec) -> BiLSTMTagger:
    """``model=tagger`` for a task with ``spec.input_size`` words, ``spec.output_size`` tags,
    ``spec.char_vocab_size`` characters and ``spec.aux_output_size`` auxiliary tags."""
    encoder_name = str(cfg.char_encoder)
    char_encoder: nn.Module | None = None
    if encoder_name == "lstm":
        char_encoder = CharLSTMEncoder(
            spec.char_vocab_size, cfg.char_embedding_size, cfg.char_hidden_size
        )
    elif encoder_name == "cnn":
        char_encoder = CharCNNEncoder(
            spec.char_vocab_size,
            cfg.char_embedding_size,
            2 * cfg.char_hidden_size,
            cfg.char_kernel_size,
        )
    state_size = cfg.hidden_size * (2 if cfg.bidirectional else 1)
    return BiLSTMTagger(
        spec.input_size,
        spec.output_size,
        cfg.word_embedding_size,
        char_encoder,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
        cfg.dropout,
        configured_attention(attention_cfg, state_size, state_size),
        residual=cfg.attention_residual,
        aux_tags=spec.aux_output_size,
    )
