"""The attention library: hand-computed scores, shapes, masks and padding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from attnlstm.attention import ATTENTION_METHODS, make_attention, masked_softmax

METHODS = sorted(ATTENTION_METHODS)
QUERY_METHODS = [m for m in METHODS if m != "feedforward"]

# Three keys and one query in 2-D, small enough to work out by hand.
KEYS = [[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]
QUERY = [1.0, 2.0]


def _softmax(scores: list[float]) -> list[float]:
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


def _expected(scores: list[float]) -> tuple[list[float], list[float]]:
    weights = _softmax(scores)
    context = [sum(w * k[d] for w, k in zip(weights, KEYS, strict=True)) for d in range(2)]
    return context, weights


def _set(linear: torch.nn.Module, weight: list[list[float]], bias: list[float] | None = None):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias))


def _hand_scores(method: str, attention: torch.nn.Module) -> list[float]:
    """Set the scorer's parameters to round numbers and return the scores worked out by hand."""
    q1, q2 = QUERY
    if method == "dot":
        return [q1 * k1 + q2 * k2 for k1, k2 in KEYS]  # [1, 2, 0]
    if method == "scaled_dot":
        return [(q1 * k1 + q2 * k2) / math.sqrt(2) for k1, k2 in KEYS]
    if method == "general":
        # W q = [[0, 1], [1, 0]] q = (q2, q1); score = (W q) . k
        _set(attention.linear, [[0.0, 1.0], [1.0, 0.0]])
        return [q2 * k1 + q1 * k2 for k1, k2 in KEYS]
    if method == "concat":
        # hidden = tanh(W [q; k] + b) with W (2 x 4), b; score = v . hidden
        _set(attention.linear, [[1.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, -1.0]], [0.1, -0.2])
        _set(attention.v, [[1.0, 2.0]])
        return [
            1.0 * math.tanh(q1 + k1 + 0.1) + 2.0 * math.tanh(0.5 * q2 - k2 - 0.2) for k1, k2 in KEYS
        ]
    if method == "additive":
        # score = v . tanh(W q + U k), no biases
        _set(attention.query_proj, [[0.5, 0.0], [0.0, -0.5]])
        _set(attention.key_proj, [[1.0, 1.0], [2.0, 0.0]])
        _set(attention.v, [[-1.0, 1.0]])
        return [
            -1.0 * math.tanh(0.5 * q1 + k1 + k2) + 1.0 * math.tanh(-0.5 * q2 + 2.0 * k1)
            for k1, k2 in KEYS
        ]
    if method == "feedforward":
        # the paper's scorer: e_t = tanh(w . k_t + b)
        _set(attention.linear, [[0.7, -1.3]], [0.2])
        return [math.tanh(0.7 * k1 - 1.3 * k2 + 0.2) for k1, k2 in KEYS]
    raise AssertionError(method)


@pytest.mark.parametrize("method", METHODS)
def test_hand_computed_values(method: str) -> None:
    attention = make_attention(method, 2, 2)
    expected_context, expected_weights = _expected(_hand_scores(method, attention))
    keys = torch.tensor([KEYS])
    query = None if method == "feedforward" else torch.tensor([QUERY])
    context, weights = attention(query, keys)
    assert weights.shape == (1, 3) and context.shape == (1, 2)
    torch.testing.assert_close(weights[0], torch.tensor(expected_weights), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(context[0], torch.tensor(expected_context), rtol=1e-6, atol=1e-6)


def test_feedforward_with_hidden_layer_matches_formula() -> None:
    attention = make_attention("feedforward", None, 2, hidden_dim=2)
    _set(attention.linear, [[1.0, 0.0], [0.5, 0.5]], [0.0, 0.1])
    _set(attention.v, [[2.0, -1.0]])
    scores = [2.0 * math.tanh(k1) - math.tanh(0.5 * k1 + 0.5 * k2 + 0.1) for k1, k2 in KEYS]
    _, weights = attention(None, torch.tensor([KEYS]))
    torch.testing.assert_close(weights[0], torch.tensor(_softmax(scores)), rtol=1e-6, atol=1e-6)


def _random_case(method: str, batch: int = 3, steps: int = 7, dim: int = 6, query_steps=None):
    torch.manual_seed(0)
    attention = make_attention(method, dim, dim, hidden_dim=5)
    keys = torch.randn(batch, steps, dim)
    if method == "feedforward":
        query = None
    elif query_steps is None:
        query = torch.randn(batch, dim)
    else:
        query = torch.randn(batch, query_steps, dim)
    return attention, query, keys


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_normalisation(method: str) -> None:
    attention, query, keys = _random_case(method)
    context, weights = attention(query, keys)
    assert context.shape == (3, 6) and weights.shape == (3, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert (weights >= 0).all()


@pytest.mark.parametrize("method", QUERY_METHODS)
def test_many_queries_equal_one_query_at_a_time(method: str) -> None:
    attention, query, keys = _random_case(method, query_steps=4)
    context, weights = attention(query, keys)
    assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 7)
    for step in range(4):
        one_context, one_weights = attention(query[:, step], keys)
        torch.testing.assert_close(context[:, step], one_context)
        torch.testing.assert_close(weights[:, step], one_weights)


@pytest.mark.parametrize("method", METHODS)
def test_masked_steps_get_exactly_zero_weight(method: str) -> None:
    attention, query, keys = _random_case(method)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, ::2] = False
    _, weights = attention(query, keys, mask)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))


@pytest.mark.parametrize("method", METHODS)
def test_fully_masked_row_gives_zeros_and_finite_gradients(method: str) -> None:
    attention, query, keys = _random_case(method)
    keys.requires_grad_(True)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1] = False
    context, weights = attention(query, keys, mask)
    assert (weights[1] == 0).all() and (context[1] == 0).all()
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    (context.sum() + weights.pow(2).sum()).backward()
    assert torch.isfinite(keys.grad).all()
    for parameter in attention.parameters():
        assert torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("many_queries", [False, True])
def test_appending_masked_steps_changes_nothing(method: str, many_queries: bool) -> None:
    if many_queries and method == "feedforward":
        pytest.skip("feedforward attention has no query")
    attention, query, keys = _random_case(method, query_steps=4 if many_queries else None)
    lengths = torch.tensor([7, 5, 2])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    padded_keys = torch.cat([keys, 100 * torch.randn(3, 5, 6)], dim=1)  # junk, masked
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    if many_queries:
        mask, padded_mask = mask[:, None, :], padded_mask[:, None, :]
    context, weights = attention(query, keys, mask)
    padded_context, padded_weights = attention(query, padded_keys, padded_mask)
    torch.testing.assert_close(padded_context, context, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(padded_weights[..., :7], weights, rtol=1e-6, atol=1e-6)
    assert (padded_weights[..., 7:] == 0).all()


@pytest.mark.parametrize("method", ["dot", "scaled_dot"])
def test_dot_products_need_equal_sizes(method: str) -> None:
    with pytest.raises(ValueError, match=r"query_dim == key_dim.*query_dim=4 and key_dim=6"):
        make_attention(method, 4, 6)


@pytest.mark.parametrize("method", ["general", "concat", "additive"])
def test_other_methods_accept_different_sizes(method: str) -> None:
    attention = make_attention(method, 4, 6)
    context, weights = attention(torch.randn(2, 4), torch.randn(2, 5, 6))
    assert context.shape == (2, 6) and weights.shape == (2, 5)


def test_unknown_method_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown attention method 'dott'.*'additive'"):
        make_attention("dott", 4, 4)


def test_query_rules() -> None:
    keys = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="query-free"):
        make_attention("feedforward", 4, 4)(torch.randn(2, 4), keys)
    with pytest.raises(ValueError, match="needs a query"):
        make_attention("dot", 4, 4)(None, keys)
    with pytest.raises(ValueError, match="query must be"):
        make_attention("general", 3, 4)(torch.randn(2, 4), keys)


def test_mask_errors_are_explained() -> None:
    attention = make_attention("dot", 4, 4)
    keys = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"pass mask\[:, None, :\]"):
        attention(torch.randn(2, 3, 4), keys, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        attention(torch.randn(2, 4), keys, torch.ones(2, 5))


def test_causal_mask_broadcasts_over_the_batch() -> None:
    attention = make_attention("scaled_dot", 4, 4)
    keys = torch.randn(2, 5, 4)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    _, weights = attention(keys, keys, causal)
    assert weights.shape == (2, 5, 5)
    assert (weights.triu(1) == 0).all()
    torch.testing.assert_close(weights[:, 0, 0], torch.ones(2))


def test_masked_softmax_without_mask_is_softmax() -> None:
    scores = torch.randn(3, 4)
    torch.testing.assert_close(masked_softmax(scores, None), torch.softmax(scores, -1))


@pytest.mark.parametrize("method", ["dot", "general", "additive", "feedforward"])
def test_values_are_averaged_with_the_weights_of_the_keys(method: str) -> None:
    torch.manual_seed(0)
    attention = make_attention(method, 4, 4)
    query = None if method == "feedforward" else torch.randn(2, 3, 4)
    keys, values = torch.randn(2, 5, 4), torch.randn(2, 5, 7)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])[:, None, :]
    mask = mask.expand(2, 3, 5)
    context, weights = attention(query, keys, mask, values)
    assert context.shape == (2, 3, 7)
    torch.testing.assert_close(context, weights @ values)
    _, keys_only = attention(query, keys, mask)
    torch.testing.assert_close(weights, keys_only)  # values change what is averaged, not how
    with pytest.raises(ValueError, match="values must be"):
        attention(query, keys, mask, torch.randn(2, 4, 7))


@pytest.mark.parametrize("method", QUERY_METHODS)
def test_precomputed_key_features_give_the_same_attention(method: str) -> None:
    """A decoder computes key_features once per source and attends with them at every step:
    the contexts, weights and gradients are those computed from the keys alone."""
    torch.manual_seed(0)
    attention = make_attention(method, 6, 6, 5)
    query, keys = torch.randn(3, 6), torch.randn(3, 4, 6, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    plain_context, plain_weights = attention(query, keys, mask)
    features = attention.key_features(keys)
    if method in ("concat", "additive"):
        assert features is not None and features.shape == (3, 4, 5)
    else:
        assert features is None  # nothing query-independent worth keeping
    context, weights = attention(query, keys, mask, key_features=features)
    torch.testing.assert_close(context, plain_context)
    torch.testing.assert_close(weights, plain_weights)
    (plain_grad,) = torch.autograd.grad(plain_context.sum(), keys)
    (grad,) = torch.autograd.grad(context.sum(), keys)
    torch.testing.assert_close(grad, plain_grad)
