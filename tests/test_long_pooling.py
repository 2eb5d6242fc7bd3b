"""The chunked pooling equals the plain computation: outputs and gradients, masks included."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.ffattn import AUTO_CHUNKED_FROM_STEPS
from attnlstm.models.long_pooling import chunked_attention_pool, chunked_mean_pool
from attnlstm.tasks.base import TaskSpec


def _pair(name: str, chunk_size: int, hidden: int = 12):
    """Two models with the same weights: plain and chunked pooling."""
    models = []
    for pooling in ("plain", "chunked"):
        torch.manual_seed(0)
        cfg = OmegaConf.create(
            {
                "name": name,
                "hidden_size": hidden,
                "num_layers": 1,
                "bidirectional": False,
                "dropout": 0.0,
                "head_size": 8,
                "output_activation": "leaky_relu",
                "pooling": pooling,
                "chunk_size": chunk_size,
            }
        )
        attention = OmegaConf.create(
            {"method": "feedforward" if name == "ffattn" else "none", "hidden_dim": None}
        )
        models.append(build_model(cfg, attention, TaskSpec(2, 1)))
    return models


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("name", ["ffattn", "mean"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_model_equals_plain(name: str, masked: bool, chunk_size: int, dtype) -> None:
    """Within 1e-5 relative: each output against its largest value; the gradients as one
    vector against its norm (a single summed entry such as the score bias's gradient can
    cancel to near zero, where float32 rounding alone exceeds 1e-5 of its own size; in
    float64 every entry agrees to 1e-5 of itself)."""
    plain, chunked = (model.to(dtype) for model in _pair(name, chunk_size))
    torch.manual_seed(1)
    inputs = torch.randn(5, 83, 2, dtype=dtype)
    lengths = torch.tensor([83, 60, 17, 2, 1]) if masked else None
    target = torch.randn(5, 1, dtype=dtype)
    outputs, grads = [], []
    for model in (plain, chunked):
        out = model(inputs, lengths)
        loss = (out.prediction - target).pow(2).mean()
        outputs.append(out)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert chunked.uses_chunked(83) and not plain.uses_chunked(83)
    assert _relative_error(outputs[1].prediction, outputs[0].prediction) < 1e-5
    if name == "ffattn":
        assert _relative_error(outputs[1].attention, outputs[0].attention) < 1e-5
    flat_chunked = torch.cat([g.flatten() for g in grads[1]])
    flat_plain = torch.cat([g.flatten() for g in grads[0]])
    assert float((flat_chunked - flat_plain).norm() / flat_plain.norm()) < 1e-5
    if dtype == torch.float64:
        for (param_name, _), grad_chunked, grad_plain in zip(
            plain.named_parameters(), grads[1], grads[0], strict=True
        ):
            assert _relative_error(grad_chunked, grad_plain) < 1e-5, param_name


def test_padding_is_skipped_exactly() -> None:
    """Masked steps contribute nothing, whatever they hold; weights there are exactly 0."""
    _, chunked = _pair("ffattn", 16)
    inputs = torch.randn(2, 40, 2)
    lengths = torch.tensor([40, 25])
    junk = inputs.clone()
    junk[1, 25:] = 1e4
    first, second = chunked(inputs, lengths), chunked(junk, lengths)
    torch.testing.assert_close(first.prediction, second.prediction)
    assert (second.attention[1, 25:] == 0).all()
    alone = chunked(inputs[1:, :25], lengths[1:])
    torch.testing.assert_close(first.prediction[1], alone.prediction[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_input_gradients_match(masked: bool) -> None:
    torch.manual_seed(0)
    dense, scorer = torch.nn.Linear(2, 6).double(), torch.nn.Linear(6, 1).double()
    x = torch.randn(3, 21, 2, dtype=torch.float64, requires_grad=True)
    mask = (torch.arange(21)[None] < torch.tensor([21, 9, 1])[:, None]) if masked else None

    def attention_pool(x):
        return chunked_attention_pool(x, mask, dense, scorer, 4)[0]

    def mean_pool(x):
        return chunked_mean_pool(x, mask, dense, 5)

    assert torch.autograd.gradcheck(attention_pool, (x,))
    assert torch.autograd.gradcheck(mean_pool, (x,))


def test_sequence_with_no_steps_gives_zero_context() -> None:
    dense, scorer = torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)
    x = torch.randn(2, 5, 2, requires_grad=True)
    mask = torch.tensor([[True] * 5, [False] * 5])
    context, weights = chunked_attention_pool(x, mask, dense, scorer, 2)
    assert (context[1] == 0).all() and (weights[1] == 0).all()
    context.sum().backward()
    assert torch.isfinite(dense.weight.grad).all()
    assert (chunked_mean_pool(x, mask, dense, 2)[1] == 0).all()


def test_auto_uses_chunked_only_for_long_inputs() -> None:
    auto = _pair("ffattn", 64)[0]
    auto.pooling = "auto"
    assert not auto.uses_chunked(AUTO_CHUNKED_FROM_STEPS - 1)
    assert auto.uses_chunked(AUTO_CHUNKED_FROM_STEPS)


def test_chunked_is_refused_where_it_does_not_apply() -> None:
    cfg = OmegaConf.create(
        {
            "name": "ffattn",
            "hidden_size": 8,
            "num_layers": 2,
            "bidirectional": False,
            "dropout": 0.0,
            "head_size": 8,
            "output_activation": "none",
            "pooling": "chunked",
            "chunk_size": 64,
        }
    )
    attention = OmegaConf.create({"method": "feedforward", "hidden_dim": None})
    with pytest.raises(ConfigError, match=r"model\.pooling=chunked applies to"):
        build_model(cfg, attention, TaskSpec(2, 1))
    cfg.num_layers = 1
    with pytest.raises(ConfigError, match="single-layer"):
        build_model(
            cfg, OmegaConf.create({"method": "feedforward", "hidden_dim": 5}), TaskSpec(2, 1)
        )


def test_a_mask_with_holes_is_refused() -> None:
    dense, scorer = torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="padding mask"):
        chunked_attention_pool(torch.randn(1, 3, 2), mask, dense, scorer, 2)
