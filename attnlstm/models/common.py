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

        x_t = dropout(E[token_t])                                 (B, T) ids
        x_t = dropout(E[token_t] + mean_k G[ngram_t,k])           (B, T, 1 + K) ids, subwords

    -> (B, T, embedding_size) -> ``model``. With ``subword_buckets`` > 0 the inputs carry each
    token's hashed character n-gram ids after its word id (0 = none; the mean is over the real
    ones, and a token without any adds nothing), so a word unknown to the vocabulary (``<unk>``)
    is still embedded by its parts, as fastText does. ``unk``: the id of ``<unk>``, whose tokens
    differ in their n-grams (every other word id has one set of n-grams).

    Padding (``pad`` id) embeds to zeros; the wrapped model masks it by ``lengths`` anyway.
    E and G are initialised N(0, 0.1^2), as word vectors usually are, rather than nn.Embedding's
    N(0, 1), which saturates the LSTM's gates at the start of training.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        dropout: float,
        pad: int,
        model: nn.Module,
        subword_buckets: int = 0,
        unk: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[pad].zero_()
        self.subwords: nn.EmbeddingBag | None = None
        if subword_buckets > 0:
            self.subwords = nn.EmbeddingBag(
                subword_buckets + 1, embedding_size, mode="mean", padding_idx=0
            )
            nn.init.normal_(self.subwords.weight, std=0.1)
            with torch.no_grad():
                self.subwords.weight[0].zero_()
        self.unk = unk
        self.dropout = nn.Dropout(dropout)
        self.model = model

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> ModelOutput:
        """tokens (B, T) int64, or (B, T, 1 + K) with subwords; lengths (B,) on the CPU or
        None."""
        if self.subwords is None:
            if tokens.dim() != 2:
                raise ValueError(
                    f"this model reads token ids (B, T), got {tuple(tokens.shape)}: it was built"
                    " without subwords (task.subword_buckets=0)"
                )
            return self.model(self.dropout(self.embedding(tokens)), lengths)
        if tokens.dim() != 3:
            raise ValueError(
                f"this model reads token and subword ids (B, T, 1 + K), got"
                f" {tuple(tokens.shape)}: it was built with task.subword_buckets > 0"
            )
        batch, steps, width = tokens.shape
        embedded = self.embedding(tokens[..., 0])
        if width > 1:
            ngrams = self._subword_features(tokens.reshape(batch * steps, width))
            embedded = embedded + ngrams.view(batch, steps, -1)
        return self.model(self.dropout(embedded), lengths)

    def _subword_features(self, rows: Tensor) -> Tensor:
        """(N, 1 + K) word and n-gram ids -> (N, embedding_size) mean n-gram embeddings.

        Every known word id has the same n-grams wherever it occurs, so each is looked up once
        per batch (a text batch repeats its words many times); ``<unk>`` tokens stand for many
        words and are looked up one by one.
        """
        assert self.subwords is not None
        words = rows[:, 0]
        key = words
        if self.unk is not None:
            unknown = words == self.unk
            # a key of its own (beyond every word id) for each unknown token
            own = self.embedding.num_embeddings + torch.arange(words.numel(), device=rows.device)
            key = torch.where(unknown, own, words)
        distinct, inverse = torch.unique(key, return_inverse=True)
        first = torch.empty_like(distinct).scatter_(
            0, inverse, torch.arange(words.numel(), device=rows.device)
        )
        return self.subwords(rows[first, 1:])[inverse]


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
        spec.subword_buckets,
        spec.special.unk,
    )
