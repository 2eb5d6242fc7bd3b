"""Attention and mean pooling of a per-step dense layer, chunked through time, for long inputs.

Raffel & Ellis's network computes, for every step t of a (B, T, F) input,

    p_t = W x_t + b,   h_t = LReLU(p_t),            (D units)
    e_t = tanh(w . h_t + b_a),   alpha = softmax(e) over the sequence's steps,
    c   = sum_t alpha_t h_t                         (attention;  c = mean_t h_t for ``mean``)

Written plainly, autograd keeps p, h and their gradients as (B, T, D) tensors: at T = 11,000,
B = 100, D = 100 that is 440 MB each, and an update makes several passes through them. Here
the dense layer and the pooling are one autograd function that takes one sequence at a time
(every product is then a plain matrix product, with no per-sample loop inside ``bmm``), works
through its real steps in chunks of C, and skips its padding outright:

- forward: per chunk, compute h, the scores and an online softmax (running max, running sum,
  running weighted sum of h); keep only the scores e and the weights alpha, (B, T) each;
- backward: per chunk, recompute p and h (cheap: F is small) and accumulate the parameter
  gradients. With s_t = LReLU'(p_t) and g = dL/dc, every gradient is a sum over steps:

      dL/de_t = alpha_t (g . h_t - g . c),   dL/da_t = dL/de_t (1 - e_t^2)
      dL/dp_t = s_t * (alpha_t g + dL/da_t w)
      dL/dW   = sum_t dL/dp_t x_t^T,  dL/db = sum_t dL/dp_t,  dL/dw = sum_t dL/da_t h_t

  and since g and w do not depend on t, dL/dW and dL/db come from a few weighted sums of s_t
  (one (2F + 2) x C by C x D product per chunk) instead of building dL/dp_t, a C x D tensor.

Memory is O(C D) for the chunk buffers (reused) plus O(B T) for the scores and weights. The
results equal the plain computation (tests/test_long_pooling.py checks outputs and gradients,
masks included); ``scripts/bench_long.py`` measures both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from attnlstm.models.common import LEAKY_SLOPE


def _chunks(steps: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, steps)) for start in range(0, steps, chunk_size)]


def _row_lengths(x: Tensor, mask: Tensor | None) -> list[int]:
    """Real steps of each sequence: padding is skipped outright (its weight is exactly 0)."""
    if mask is None:
        return [x.size(1)] * x.size(0)
    lengths = mask.sum(dim=1)
    if not torch.equal(mask, torch.arange(mask.size(1), device=mask.device) < lengths[:, None]):
        raise ValueError(
            "the chunked pooling needs a padding mask: True on each sequence's"
            " first steps and False after them"
        )
    return lengths.tolist()


class _Workspace:
    """Reused (chunk, D) buffers. Allocating a fresh 0.8 MB tensor per chunk costs more than
    the arithmetic: the allocator returns such blocks to the OS, and every new one comes back
    as zeroed pages (measured: leaky_relu on a (2048, 100) chunk took 230 us with fresh
    outputs against 11 us into a reused buffer)."""

    def __init__(self, like: Tensor, chunk_size: int, units: int) -> None:
        rows = min(chunk_size, like.size(1))
        self.pre = like.new_empty(rows, units)
        self.hidden = like.new_empty(rows, units)
        self.slopes = like.new_empty(rows, units)

    def dense(self, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """p = x W^T + b and h = LReLU(p) for one sequence's chunk: (C, F) -> (C, D) x 2."""
        rows = x.size(0)
        pre = torch.addmm(bias, x, weight.t(), out=self.pre[:rows])
        hidden = torch.ops.aten.leaky_relu.out(pre, LEAKY_SLOPE, out=self.hidden[:rows])
        return pre, hidden

    def slope(self, pre: Tensor) -> Tensor:
        """LReLU'(p): 1 where p > 0, else the leaky slope; (C, D), in one pass over p."""
        ones = pre.new_ones(()).expand_as(pre)
        return torch.ops.aten.leaky_relu_backward.grad_input(
            ones, pre, LEAKY_SLOPE, False, grad_input=self.slopes[: pre.size(0)]
        )

    def slope_sums(self, pre: Tensor, x: Tensor, coefficients: list[Tensor]) -> Tensor:
        """sum_t k_t x_tf s_t (every feature f), then sum_t k_t s_t, for each coefficient k
        (C,): a (len(coefficients) (F + 1)) x D matrix."""
        rows = []
        for coefficient in coefficients:
            rows += [coefficient.unsqueeze(0) * x.t(), coefficient.unsqueeze(0)]
        return torch.mm(torch.cat(rows, dim=0), self.slope(pre))


class _ChunkedAttentionPool(torch.autograd.Function):
    """context, weights = pool(x, mask, W, b, w, b_a, chunk_size); see the module docstring.

    Sequences are processed one at a time (every product is then a plain matrix product, with
    no per-batch loop inside ``bmm``), their real steps in chunks of ``chunk_size``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,  # B x T x F
        mask: Tensor | None,  # B x T bool, or None
        weight: Tensor,  # D x F
        bias: Tensor,  # D
        score_weight: Tensor,  # 1 x D
        score_bias: Tensor,  # 1
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        batch, steps, _ = x.shape
        units = weight.size(0)
        w = score_weight.reshape(units)
        lengths = _row_lengths(x, mask)
        scores = x.new_zeros(batch, steps)  # e; 0 on padding
        weights = x.new_zeros(batch, steps)  # alpha; exactly 0 on padding
        context = x.new_zeros(batch, units)
        work = _Workspace(x, chunk_size, units)
        for row, length in enumerate(lengths):
            running_max, running_sum = -math.inf, x.new_zeros(())
            running_context = x.new_zeros(units)
            for start, end in _chunks(length, chunk_size):
                _, hidden = work.dense(x[row, start:end], weight, bias)  # C x D
                chunk_scores = torch.tanh(torch.addmv(score_bias, hidden, w))  # C
                scores[row, start:end] = chunk_scores
                new_max = max(running_max, float(chunk_scores.max()))
                rescale = math.exp(running_max - new_max)  # 0.0 for the first chunk
                exps = torch.exp(chunk_scores - new_max)
                running_sum = running_sum * rescale + exps.sum()
                running_context = running_context * rescale + torch.mv(hidden.t(), exps)
                running_max = new_max
            if length:
                context[row] = running_context / running_sum
                weights[row, :length] = torch.exp(scores[row, :length] - running_max) / running_sum
        ctx.save_for_backward(x, weight, bias, w, scores, weights, context)
        ctx.lengths, ctx.chunk_size = lengths, chunk_size
        ctx.mark_non_differentiable(weights)
        return context, weights

    @staticmethod
    def backward(ctx: Any, grad_context: Tensor, _grad_weights: Tensor) -> tuple[Any, ...]:
        x, weight, bias, w, scores, weights, context = ctx.saved_tensors
        features, units = x.size(-1), weight.size(0)
        g_dot_c = (grad_context * context).sum(dim=1)  # B
        grad_weight = weight.new_zeros(units, features)
        grad_bias = bias.new_zeros(units)
        grad_w = w.new_zeros(units)
        grad_score_bias = w.new_zeros(1)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        work = _Workspace(x, ctx.chunk_size, units)
        for row, length in enumerate(ctx.lengths):
            g = grad_context[row]  # D
            for start, end in _chunks(length, ctx.chunk_size):
                x_chunk = x[row, start:end]  # C x F
                pre, hidden = work.dense(x_chunk, weight, bias)  # C x D
                alpha = weights[row, start:end]  # C
                grad_score = alpha * (torch.mv(hidden, g) - g_dot_c[row])  # dL/de
                grad_act = grad_score * (1 - scores[row, start:end].square())  # dL/da
                grad_w += torch.mv(hidden.t(), grad_act)  # before the slopes reuse buffers
                sums = work.slope_sums(pre, x_chunk, [alpha, grad_act])  # 2 (F + 1) x D
                by_alpha, by_act = sums[: features + 1], sums[features + 1 :]
                grad_weight += (by_alpha[:features] * g + by_act[:features] * w).t()
                grad_bias += by_alpha[features] * g + by_act[features] * w
                grad_score_bias += grad_act.sum()
                if grad_x is not None:
                    grad_pre = work.slope(pre) * (
                        alpha.unsqueeze(1) * g + grad_act.unsqueeze(1) * w
                    )
                    grad_x[row, start:end] = grad_pre @ weight
        return (grad_x, None, grad_weight, grad_bias, grad_w.view(1, units), grad_score_bias, None)


class _ChunkedMeanPool(torch.autograd.Function):
    """context = mean over each sequence's real steps of LReLU(W x_t + b), chunked."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,  # B x T x F
        mask: Tensor | None,  # B x T bool, or None
        weight: Tensor,  # D x F
        bias: Tensor,  # D
        chunk_size: int,
    ) -> Tensor:
        lengths = _row_lengths(x, mask)
        context = x.new_zeros(x.size(0), weight.size(0))
        work = _Workspace(x, chunk_size, weight.size(0))
        for row, length in enumerate(lengths):
            for start, end in _chunks(length, chunk_size):
                _, hidden = work.dense(x[row, start:end], weight, bias)
                context[row] += hidden.sum(dim=0)
            context[row] /= max(length, 1)
        ctx.save_for_backward(x, weight, bias)
        ctx.lengths, ctx.chunk_size = lengths, chunk_size
        return context

    @staticmethod
    def backward(ctx: Any, grad_context: Tensor) -> tuple[Any, ...]:
        x, weight, bias = ctx.saved_tensors
        features = x.size(-1)
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros_like(bias)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        work = _Workspace(x, ctx.chunk_size, weight.size(0))
        for row, length in enumerate(ctx.lengths):
            g = grad_context[row] / max(length, 1)  # dL/dh_t for every real step
            for start, end in _chunks(length, ctx.chunk_size):
                x_chunk = x[row, start:end]
                pre, _ = work.dense(x_chunk, weight, bias)
                ones = x_chunk.new_ones(end - start)
                sums = work.slope_sums(pre, x_chunk, [ones])  # (F + 1) x D
                grad_weight += (sums[:features] * g).t()
                grad_bias += sums[features] * g
                if grad_x is not None:
                    grad_x[row, start:end] = (work.slope(pre) * g) @ weight
        return grad_x, None, grad_weight, grad_bias, None


def chunked_attention_pool(
    x: Tensor,
    mask: Tensor | None,
    dense: torch.nn.Linear,
    scorer: torch.nn.Linear,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """c, alpha for h_t = LReLU(dense(x_t)) and e_t = tanh(scorer(h_t)), chunked through time.

    Args:
        x: (B, T, F). mask: (B, T) bool padding mask (True on each sequence's first steps,
            False after them) or None (every step is data).
        dense: Linear(F, D). scorer: Linear(D, 1). chunk_size: steps per chunk.

    Returns:
        context (B, D) and weights (B, T); the weights carry no gradient.
    """
    return _ChunkedAttentionPool.apply(
        x, mask, dense.weight, dense.bias, scorer.weight, scorer.bias, chunk_size
    )


def chunked_mean_pool(
    x: Tensor, mask: Tensor | None, dense: torch.nn.Linear, chunk_size: int
) -> Tensor:
    """Mean over each sequence's real steps of LReLU(dense(x_t)): (B, T, F) -> (B, D)."""
    return _ChunkedMeanPool.apply(x, mask, dense.weight, dense.bias, chunk_size)
