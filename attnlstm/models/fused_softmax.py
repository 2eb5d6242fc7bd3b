"""The full softmax decoder and its negative log-likelihood in one autograd step.

For N rows of features o (N, D), a decoder W (V, D), b (V) and targets y (N,),

    z = o W^T + b                    (N, V)
    log p(y_k | o_k) = z_{k, y_k} - logsumexp_v z_{k, v}

and, for an upstream gradient g_k of each row's log-probability,

    dL/dz = g (onehot(y) - softmax(z))             (N, V)
    dL/do = dL/dz W,   dL/dW = dL/dz^T o,   dL/db = sum_k dL/dz_k

Autograd, applied to ``cross_entropy(linear(o))``, keeps z and log_softmax(z) and builds three
more (N, V) tensors in the backward pass (the scattered loss gradient, the log-softmax
gradient, and the zero tensor under the scatter): at N = 700 positions and V = 10,000 words
each is 28 MB, and every one is a pass through memory that a CPU pays for. Here z is
computed once, turned into softmax(z) in place, kept, and turned into dL/dz in place in the
backward pass: one (N, V) tensor and two passes fewer. Values and gradients equal the
unfused computation up to float rounding (tests/test_language_model.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = ["linear_log_prob"]


class _LinearLogProb(torch.autograd.Function):
    """log p(y | o) (N,) of the softmax of o W^T + b; see the module docstring. Its backward
    pass reuses the kept probabilities in place, so it runs once (no ``retain_graph``)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor
    ) -> Tensor:
        # N x V
        logits = features @ weight.t() if bias is None else torch.addmm(bias, features, weight.t())
        log_norm = torch.logsumexp(logits, dim=1)  # N; one pass, each row in cache
        log_prob = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - log_norm
        # softmax(z) in place: one pass through memory (each row's max, exp and sum are
        # taken in cache), where exp(z - log_norm) would take two
        probabilities = torch.ops.aten._softmax.out(logits, 1, False, out=logits)
        ctx.save_for_backward(features, weight, probabilities, targets)
        ctx.has_bias = bias is not None
        ctx.spent = False
        return log_prob

    @staticmethod
    def backward(ctx: Any, grad_log_prob: Tensor) -> tuple[Any, ...]:
        if ctx.spent:
            raise RuntimeError(
                "linear_log_prob's backward pass reuses its saved probabilities in place and"
                " runs once; recompute the forward pass instead of retain_graph=True"
            )
        ctx.spent = True
        features, weight, probabilities, targets = ctx.saved_tensors
        grad = grad_log_prob.unsqueeze(1)  # N x 1
        # dL/dz = g (onehot(y) - softmax(z)), built in the probabilities' memory
        grad_logits = probabilities.mul_(grad.neg())
        grad_logits.scatter_add_(1, targets.unsqueeze(1), grad.to(grad_logits.dtype))
        grad_features = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.t() @ features if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_features, grad_weight, grad_bias, None


def linear_log_prob(
    features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor
) -> Tensor:
    """log p(targets | features) (N,) under softmax(features W^T + b); features (N, D), weight
    (V, D), bias (V) or None, targets (N,) int64."""
    return _LinearLogProb.apply(features, weight, bias, targets)
