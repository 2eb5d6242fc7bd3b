"""The attention library: one base class, one scorer per method.

Every method computes scores ``e`` between queries and keys, then the base class masks and
normalises them once and returns the weighted sum of the keys:

    alpha = softmax(e)  over the key axis, masked steps excluded
    c     = sum_t alpha_t k_t

Shapes (B = batch, T = key steps, Tq = query steps, Dq / Dk = query / key features):

==============  ================  =====================  ================
query           keys              context                weights
==============  ================  =====================  ================
(B, Dq)         (B, T, Dk)        (B, Dk)                (B, T)
(B, Tq, Dq)     (B, T, Dk)        (B, Tq, Dk)            (B, Tq, T)
None            (B, T, Dk)        (B, Dk)                (B, T)    query-free methods only
None, mask      (B, T, Dk)        (B, Tq, Dk)            (B, Tq, T)  query-free, mask (B|1, Tq, T)
==============  ================  =====================  ================

``mask`` is boolean and broadcastable to the weights' shape; True marks a step that may be
attended to. Masked steps get weight exactly 0; a row with nothing to attend to returns a zero
context and zero weights (never NaN). Padded key values must be finite: they are multiplied by
an exact zero weight.

Methods (``make_attention(method, ...)``; each class registers itself in :data:`ATTENTION` with
``@register_attention(name)``, and its capabilities are its class attributes ``uses_query`` and
``takes_hidden_dim``):

- ``dot``         e = q . k                                   (Luong et al. 2015)
- ``scaled_dot``  e = q . k / sqrt(Dk)                        (Vaswani et al. 2017)
- ``general``     e = q^T W k                                 (Luong et al. 2015)
- ``concat``      e = v^T tanh(W [q; k] + b)                  (Luong et al. 2015)
- ``additive``    e = v^T tanh(W q + U k)                     (Bahdanau et al. 2015)
- ``feedforward`` e = tanh(w^T k + b), no query               (Raffel & Ellis 2016)
                  or e = v^T tanh(W k + b) with ``hidden_dim``

``concat`` and ``additive`` are the same family (a one-hidden-layer scorer on query and key);
they are kept apart because papers and users name them apart, and they differ in the bias.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnlstm.registry import Registry

__all__ = [
    "ATTENTION",
    "ATTENTION_METHODS",
    "AdditiveAttention",
    "Attention",
    "ConcatAttention",
    "DotAttention",
    "FeedForwardAttention",
    "GeneralAttention",
    "ScaledDotAttention",
    "make_attention",
    "masked_softmax",
    "register_attention",
]

#: Every attention method by its ``attention=`` name. Adding a method is one class decorated
#: with :func:`register_attention` (here or in its own module), one ``conf/attention/<name>.yaml``
#: and its hand-computed test case.
ATTENTION: Registry[type[Attention]] = Registry("attention method")


def register_attention(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator: register an :class:`Attention` subclass as ``attention=<name>``, its
    capabilities read from its class attributes."""

    def add(cls: type[Attention]) -> type[Attention]:
        return ATTENTION.register(
            name, uses_query=cls.uses_query, takes_hidden_dim=cls.takes_hidden_dim
        )(cls)

    return add


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` along ``dim`` where ``mask`` is True; exactly 0 elsewhere.

    Masked scores are replaced by the dtype's most negative finite value rather than -inf, so
    a fully masked row softmaxes to finite numbers (then zeroed) and never produces NaN, in the
    forward pass or in the gradients.

    Args:
        scores: any shape, e.g. (B, Tq, T).
        mask: boolean, broadcastable to ``scores``; True = keep. None keeps everything.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    very_negative = torch.finfo(scores.dtype).min
    weights = torch.softmax(scores.masked_fill(~mask, very_negative), dim=dim)
    return weights.masked_fill(~mask, 0.0)


class Attention(nn.Module, ABC):
    """Base class: shape handling, masking and normalisation, written once.

    A subclass implements only :meth:`score`, mapping a 3-D query (B, Tq, Dq) (or None for a
    query-free method) and keys (B, T, Dk) to scores (B, Tq, T) (query-free: (B, 1, T)).
    """

    #: False for query-free methods, which take ``query=None`` (and ``query_dim=None``).
    uses_query: bool = True
    #: whether ``hidden_dim`` (``attention.hidden_dim``) sizes the scorer; others ignore it
    takes_hidden_dim: bool = False

    def __init__(self, query_dim: int | None, key_dim: int, hidden_dim: int | None = None) -> None:
        """Every method takes the same arguments: the query's and the keys' feature sizes and
        the scorer's hidden width (used where :attr:`takes_hidden_dim`)."""
        super().__init__()
        if key_dim <= 0:
            raise ValueError(f"key_dim must be positive, got {key_dim}")
        if hidden_dim is not None and hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be positive or None, got {hidden_dim}")
        if self.uses_query and query_dim is None:
            raise ValueError(f"{type(self).__name__} needs a query_dim")
        self.query_dim = query_dim
        self.key_dim = key_dim

    @abstractmethod
    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        """Unnormalised scores: query (B, Tq, Dq) or None, keys (B, T, Dk) -> (B, Tq, T).
        ``key_features``: :meth:`key_features` of these keys, computed earlier, or None."""

    def key_features(self, keys: Tensor) -> Tensor | None:
        """The query-independent part of the scores (e.g. U k of the additive score), or None
        where there is none worth keeping. A decoder that attends to the same keys at every
        step computes it once and passes it to :meth:`forward`, instead of once per step."""
        return None

    def forward(
        self,
        query: Tensor | None,
        keys: Tensor,
        mask: Tensor | None = None,
        values: Tensor | None = None,
        key_features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend over ``keys`` with ``query``; see the module docstring for the shapes.

        ``values`` (B, T, Dv), when given, are what the weights average instead of the keys
        (context_i = sum_j a_ij v_j); the scores still compare the query with the keys.
        ``key_features``: ``self.key_features(keys)``, computed once for keys attended to
        many times (the result is the same as without it).

        Returns:
            (context, weights): context (B, Dv) or (B, Tq, Dv) (Dv = Dk without ``values``);
            weights (B, T) or (B, Tq, T).
        """
        if keys.dim() != 3:
            raise ValueError(
                f"keys must be (batch, steps, {self.key_dim}), got {tuple(keys.shape)}"
            )
        if keys.size(-1) != self.key_dim:
            raise ValueError(f"keys have {keys.size(-1)} features, expected key_dim={self.key_dim}")
        if values is not None and (values.dim() != 3 or values.shape[:2] != keys.shape[:2]):
            raise ValueError(
                f"values must be (batch, steps, Dv) matching keys {tuple(keys.shape[:2])},"
                f" got {tuple(values.shape)}"
            )
        if self.uses_query:
            if query is None:
                raise ValueError(f"{type(self).__name__} needs a query (B, Dq) or (B, Tq, Dq)")
            if query.dim() not in (2, 3) or query.size(-1) != self.query_dim:
                raise ValueError(
                    f"query must be (batch, {self.query_dim}) or (batch, steps, {self.query_dim}),"
                    f" got {tuple(query.shape)}"
                )
            single_step = query.dim() == 2
            query_3d = query.unsqueeze(1) if single_step else query  # B x Tq x Dq
        else:
            if query is not None:
                raise ValueError(f"{type(self).__name__} is query-free: call it with query=None")
            # One pooling per sequence, or, given a mask with a query axis (B, Tq, T), one per
            # query step: the scores are shared and the masks differ (e.g. causal attention).
            single_step = mask is None or mask.dim() < 3
            query_3d = None

        scores = self.score(query_3d, keys, key_features)  # B x Tq x T
        if mask is not None:
            mask = self._broadcast_mask(mask, scores, single_step)
        weights = masked_softmax(scores, mask)  # B x Tq x T
        context = torch.bmm(weights, keys if values is None else values)  # B x Tq x Dv
        if single_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    @staticmethod
    def _broadcast_mask(mask: Tensor, scores: Tensor, single_step: bool) -> Tensor:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor (True = attend), got {mask.dtype}")
        batch, query_steps, steps = scores.shape
        if single_step:
            weights_shape: tuple[int, ...] = (batch, steps)
        else:  # a query-free scorer's single row of scores serves every query step of the mask
            weights_shape = (batch, query_steps if query_steps > 1 else mask.size(-2), steps)
        try:
            mask = torch.broadcast_to(mask, weights_shape)
        except RuntimeError:
            hint = "" if single_step else "; for a key-padding mask (B, T) pass mask[:, None, :]"
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the attention weights'"
                f" shape {weights_shape}{hint}"
            ) from None
        return mask.unsqueeze(1) if single_step else mask

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}"


@register_attention("dot")
class DotAttention(Attention):
    """Luong's dot score, e_ij = q_i . k_j. Needs query_dim == key_dim."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        _require_same_dims(type(self), query_dim, key_dim)
        super().__init__(query_dim, key_dim)

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        assert query is not None
        return torch.bmm(query, keys.transpose(1, 2))  # B x Tq x T


@register_attention("scaled_dot")
class ScaledDotAttention(DotAttention):
    """Scaled dot product, e_ij = q_i . k_j / sqrt(Dk). Needs query_dim == key_dim."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(query_dim, key_dim)
        self.scale = 1.0 / math.sqrt(key_dim)

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        return super().score(query, keys) * self.scale


@register_attention("general")
class GeneralAttention(Attention):
    """Luong's general score, e_ij = q_i^T W k_j with W of shape (Dq, Dk), no bias."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(query_dim, key_dim)
        self.linear = nn.Linear(query_dim, key_dim, bias=False)  # q -> q^T W

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        assert query is not None
        return torch.bmm(self.linear(query), keys.transpose(1, 2))  # B x Tq x T


@register_attention("concat")
class ConcatAttention(Attention):
    """Luong's concat score, e_ij = v^T tanh(W [q_i; k_j] + b), W of shape (H, Dq + Dk).

    The concatenation is never materialised: W [q; k] = W_q q + W_k k with W = [W_q, W_k].
    Memory is O(B Tq T H). H = ``hidden_dim`` (default Dk).
    """

    takes_hidden_dim = True

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(query_dim, key_dim, hidden_dim)
        hidden_dim = hidden_dim or key_dim
        self.linear = nn.Linear(query_dim + key_dim, hidden_dim)  # W, b on [q; k]
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def key_features(self, keys: Tensor) -> Tensor:
        """W_k k: (B, T, Dk) -> (B, T, H)."""
        return nn.functional.linear(keys, self.linear.weight[:, self.query_dim :])

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        assert query is not None
        w_query = self.linear.weight[:, : self.query_dim]
        projected_query = nn.functional.linear(query, w_query, self.linear.bias)  # B x Tq x H
        projected_keys = self.key_features(keys) if key_features is None else key_features
        hidden = torch.tanh(projected_query.unsqueeze(2) + projected_keys.unsqueeze(1))
        return self.v(hidden).squeeze(-1)  # B x Tq x T


@register_attention("additive")
class AdditiveAttention(Attention):
    """Bahdanau's additive score, e_ij = v^T tanh(W q_i + U k_j), no biases. Memory O(B Tq T H),
    H = ``hidden_dim`` (default Dk)."""

    takes_hidden_dim = True

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(query_dim, key_dim, hidden_dim)
        hidden_dim = hidden_dim or key_dim
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)  # W
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)  # U
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def key_features(self, keys: Tensor) -> Tensor:
        """U k: (B, T, Dk) -> (B, T, H)."""
        return self.key_proj(keys)

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        assert query is not None
        projected_keys = self.key_proj(keys) if key_features is None else key_features
        hidden = torch.tanh(
            self.query_proj(query).unsqueeze(2) + projected_keys.unsqueeze(1)
        )  # B x Tq x T x H
        return self.v(hidden).squeeze(-1)  # B x Tq x T


@register_attention("feedforward")
class FeedForwardAttention(Attention):
    """Raffel & Ellis's query-free score, computed from each key alone.

    Without ``hidden_dim`` (the paper): e_t = tanh(w^T k_t + b), w ~ N(0, 1/Dk), b = 0.
    With ``hidden_dim`` = H: e_t = v^T tanh(W k_t + b), W of shape (H, Dk).
    """

    uses_query = False
    takes_hidden_dim = True

    def __init__(self, query_dim: int | None, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(None, key_dim, hidden_dim)
        self.hidden_dim = hidden_dim
        if hidden_dim is None:
            self.linear = nn.Linear(key_dim, 1)
            nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(key_dim))
            nn.init.zeros_(self.linear.bias)
            self.v = None
        else:
            self.linear = nn.Linear(key_dim, hidden_dim)
            self.v = nn.Linear(hidden_dim, 1, bias=False)

    def score(
        self, query: Tensor | None, keys: Tensor, key_features: Tensor | None = None
    ) -> Tensor:
        hidden = torch.tanh(self.linear(keys))  # B x T x (1 or H)
        scores = hidden if self.v is None else self.v(hidden)  # B x T x 1
        return scores.transpose(1, 2)  # B x 1 x T


def _require_same_dims(cls: type[Attention], query_dim: int, key_dim: int) -> None:
    if query_dim != key_dim:
        raise ValueError(
            f"{cls.__name__} needs query_dim == key_dim, got query_dim={query_dim} and"
            f" key_dim={key_dim}; use a method with a learned projection (e.g. q^T W k) to"
            " compare vectors of different sizes"
        )


def attention_methods() -> dict[str, type[Attention]]:
    """``{name: class}`` of every registered method."""
    return {entry.name: entry.component for entry in ATTENTION.entries()}


#: ``{name: class}`` of the methods defined in this module (:func:`attention_methods` also
#: lists methods registered elsewhere)
ATTENTION_METHODS: dict[str, type[Attention]] = attention_methods()


def make_attention(
    method: str, query_dim: int | None, key_dim: int, hidden_dim: int | None = None
) -> Attention:
    """Build the registered attention ``method``.

    Args:
        method: a name in :data:`ATTENTION` (``ValueError`` listing them otherwise).
        query_dim: Dq; ignored (may be None) for query-free methods.
        key_dim: Dk.
        hidden_dim: the scorer's hidden width, for methods that take one (``takes_hidden_dim``;
            default: their own, see each class); ignored by the others.
    """
    if str(method) not in ATTENTION:
        raise ValueError(
            f"unknown attention method {str(method)!r}; choose one of {ATTENTION.names()}"
        )
    cls = ATTENTION.get(method).component
    return cls(query_dim if cls.uses_query else None, key_dim, hidden_dim)
