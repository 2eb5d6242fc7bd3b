"""The fused full-softmax log-likelihood (:mod:`attnlstm.models.fused_softmax`) against
autograd through ``cross_entropy(linear(o))``: values, gradients, no bias, one backward."""

from __future__ import annotations

import pytest
import torch

from attnlstm.models.fused_softmax import linear_log_prob


@pytest.mark.parametrize("with_bias", [True, False])
def test_values_and_gradients_equal_the_unfused_computation(with_bias: bool) -> None:
    torch.manual_seed(0)
    rows, size, vocab = 40, 6, 25
    leaves = [
        torch.randn(rows, size, dtype=torch.float64, requires_grad=True),
        torch.randn(vocab, size, dtype=torch.float64, requires_grad=True),
        torch.randn(vocab, dtype=torch.float64, requires_grad=True) if with_bias else None,
    ]
    features, weight, bias = leaves
    targets = torch.randint(0, vocab, (rows,))
    targets[:3] = targets[0]  # repeated targets: scatter_add must add, not overwrite
    upstream = torch.randn(rows, dtype=torch.float64)

    fused = linear_log_prob(features, weight, bias, targets)
    (fused * upstream).sum().backward()
    fused_grads = [t.grad.clone() for t in leaves if t is not None]
    for leaf in leaves:
        if leaf is not None:
            leaf.grad = None
    logits = torch.nn.functional.linear(features, weight, bias)
    plain = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    (plain * upstream).sum().backward()

    torch.testing.assert_close(fused, plain)
    for got, leaf in zip(fused_grads, [t for t in leaves if t is not None], strict=True):
        torch.testing.assert_close(got, leaf.grad)
    # extreme scores stay finite: the log-sum-exp is taken before any exp
    far = linear_log_prob(features.detach() * 1e3, weight.detach(), None, targets)
    assert torch.isfinite(far).all()


def test_the_backward_pass_runs_once() -> None:
    features = torch.randn(5, 3, requires_grad=True)
    weight = torch.randn(7, 3, requires_grad=True)
    log_prob = linear_log_prob(features, weight, None, torch.randint(0, 7, (5,)))
    log_prob.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        log_prob.sum().backward()
