"""Sequence-to-value models: padding invariance, shapes, the paper's form, and learning."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from attnlstm.config import LongMemoryTaskConfig
from attnlstm.errors import ConfigError
from attnlstm.models import build_model, check_compatible
from attnlstm.models.ffattn import FeedForwardPooling
from attnlstm.models.recurrent import MaskedLSTM, reverse_within_lengths
from attnlstm.tasks.base import TaskSpec
from attnlstm.tasks.long_memory import LongMemoryTask

SPEC = TaskSpec(input_size=2, output_size=1)
ATTENTIONS = ["dot", "scaled_dot", "general", "concat", "additive", "feedforward"]

# (model, attention, bidirectional, layers): every model, every method, both directions
VARIANTS = (
    [("lstm", "none", bi, layers) for bi in (False, True) for layers in (1, 2)]
    + [("lstm_attn", m, False, 1) for m in ATTENTIONS]
    + [("lstm_attn", m, True, 2) for m in ("dot", "feedforward", "additive")]
    + [("ffattn", "feedforward", False, 1), ("ffattn", "feedforward", False, 2)]
    + [("mean", "none", False, 1)]
)


def _model(name: str, attention: str, bidirectional: bool = False, layers: int = 1, hidden=8):
    model_cfg = OmegaConf.create(
        {
            "name": name,
            "hidden_size": hidden,
            "num_layers": layers,
            "bidirectional": bidirectional,
            "dropout": 0.0,
            "head_size": 8,
            "output_activation": "none",
        }
    )
    attention_cfg = OmegaConf.create({"method": attention, "hidden_dim": None})
    return build_model(model_cfg, attention_cfg, SPEC)


@pytest.mark.parametrize(("name", "attention", "bidirectional", "layers"), VARIANTS)
def test_same_output_alone_and_padded(name, attention, bidirectional, layers) -> None:
    torch.manual_seed(0)
    model = _model(name, attention, bidirectional, layers).eval()
    lengths = torch.tensor([15, 9, 4])
    inputs = torch.randn(3, 15, 2)
    for i, length in enumerate(lengths.tolist()):
        inputs[i, length:] = 7.0  # junk in the padding must not matter
    batched = model(inputs, lengths)
    assert batched.prediction.shape == (3, 1)
    for i, length in enumerate(lengths.tolist()):
        alone = model(inputs[i : i + 1, :length], lengths[i : i + 1])
        torch.testing.assert_close(batched.prediction[i], alone.prediction[0], rtol=1e-5, atol=1e-6)
        if batched.attention is not None:
            torch.testing.assert_close(
                batched.attention[i, :length], alone.attention[0], rtol=1e-5, atol=1e-6
            )
            assert (batched.attention[i, length:] == 0).all()


def test_attention_models_return_weights_others_none() -> None:
    inputs, lengths = torch.randn(2, 6, 2), torch.tensor([6, 3])
    assert _model("lstm_attn", "dot")(inputs, lengths).attention.shape == (2, 6)
    assert _model("ffattn", "feedforward")(inputs, lengths).attention.shape == (2, 6)
    assert _model("lstm", "none")(inputs, lengths).attention is None
    assert _model("mean", "none")(inputs, lengths).attention is None


def test_bidirectional_lstm_matches_packed_nn_lstm_states() -> None:
    """MaskedLSTM's final states equal h_n of a packed nn.LSTM with the same weights."""
    torch.manual_seed(0)
    masked = MaskedLSTM(3, 5, num_layers=1, bidirectional=True, dropout=0.0)
    reference = torch.nn.LSTM(3, 5, bidirectional=True, batch_first=True)
    forward, backward = masked.forward_layers[0], masked.backward_layers[0]
    with torch.no_grad():
        for name, value in forward.named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in backward.named_parameters():
            getattr(reference, f"{name}_reverse").copy_(value)
    inputs, lengths = torch.randn(4, 9, 3), torch.tensor([9, 2, 5, 7])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        inputs, lengths, batch_first=True, enforce_sorted=False
    )
    packed_out, (h_n, _) = reference(packed)
    padded_out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True)
    states, last = masked(inputs, lengths)
    torch.testing.assert_close(last, torch.cat([h_n[0], h_n[1]], dim=-1))
    mask = torch.arange(9)[None, :, None] < lengths[:, None, None]
    torch.testing.assert_close(states * mask, padded_out * mask)


def test_reverse_within_lengths() -> None:
    sequences = torch.arange(10.0).view(2, 5, 1)
    reversed_ = reverse_within_lengths(sequences, torch.tensor([5, 3]))
    assert reversed_[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert reversed_[1, :, 0].tolist() == [7, 6, 5, 8, 9]


def test_ffattn_is_the_papers_network() -> None:
    """y = LReLU(w^T LReLU(W c + b) + b), c = sum_t softmax(tanh(w^T h_t + b)) h_t,
    h_t = LReLU(W x_t + b), worked out step by step from the parameters."""
    torch.manual_seed(0)
    model = FeedForwardPooling(
        2, 1, 6, 1, 0.0, 5, "leaky_relu", _model("ffattn", "feedforward", hidden=6).attention
    )
    x = torch.randn(1, 7, 2)
    lrelu = torch.nn.functional.leaky_relu
    dense, score, head = model.encoder[0], model.attention.linear, model.head
    h = lrelu(x @ dense.weight.T + dense.bias, 0.01)
    alpha = torch.softmax(torch.tanh(h @ score.weight.T + score.bias).squeeze(-1), dim=1)
    c = (alpha.unsqueeze(-1) * h).sum(1)
    s = lrelu(c @ head.hidden.weight.T + head.hidden.bias, 0.01)
    y = lrelu(s @ head.out.weight.T + head.out.bias, 0.01)
    torch.testing.assert_close(model(x, None).prediction, y)
    # Lasagne's HeNormal(gain=1) / Normal(1/sqrt(D)) initialisation: std 1/sqrt(fan_in), b = 0
    big = FeedForwardPooling(2, 1, 400, 1, 0.0, 400, "leaky_relu", None)
    assert abs(float(big.head.hidden.weight.detach().std()) - 400**-0.5) < 0.002
    assert float(big.head.hidden.bias.detach().abs().max()) == 0.0


def test_mean_baseline_averages_real_steps_only() -> None:
    model = _model("mean", "none").eval()
    hidden = model.encoder(torch.ones(1, 4, 2))
    expected = model.head(hidden.mean(1))
    inputs = torch.cat([torch.ones(1, 4, 2), torch.full((1, 3, 2), 9.0)], dim=1)
    torch.testing.assert_close(model(inputs, torch.tensor([4])).prediction, expected)


def test_unmasked_input_uses_every_step() -> None:
    """Without lengths (the paper's zero padding) padded steps are data."""
    torch.manual_seed(0)
    model = _model("ffattn", "feedforward").eval()
    inputs = torch.randn(1, 6, 2)
    padded = torch.cat([inputs, torch.zeros(1, 4, 2)], dim=1)
    masked = model(padded, torch.tensor([6])).prediction
    unmasked = model(padded, None).prediction
    torch.testing.assert_close(masked, model(inputs, None).prediction)
    assert not torch.allclose(masked, unmasked)


@pytest.mark.parametrize(
    ("name", "attention", "message"),
    [
        ("lstm", "dot", "model=lstm uses no attention"),
        ("mean", "feedforward", "model=mean uses no attention"),
        ("lstm_attn", "none", "attention=none was chosen"),
        ("ffattn", "general", "needs a query-free method"),
    ],
)
def test_incompatible_model_and_attention(name: str, attention: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _model(name, attention)


def test_incompatible_model_and_task() -> None:
    model_cfg = OmegaConf.create(
        {
            "name": "lstm_attn",
            "hidden_size": 8,
            "num_layers": 1,
            "bidirectional": False,
            "dropout": 0.0,
            "head_size": 8,
        }
    )
    tagging = TaskSpec(input_size=2, output_size=5, target="tags")  # a per-step task
    with pytest.raises(ConfigError, match="predicts one value per sequence, but this task"):
        check_compatible(model_cfg, OmegaConf.create({"method": "dot"}), tagging.target)


@pytest.mark.parametrize(
    ("name", "attention"),
    [
        ("lstm", "none"),
        ("lstm_attn", "dot"),
        ("lstm_attn", "feedforward"),
        ("ffattn", "feedforward"),
        ("mean", "none"),
    ],
)
@pytest.mark.parametrize("problem", ["addition", "multiplication"])
def test_each_model_learns_each_task(name: str, attention: str, problem: str) -> None:
    """A few dozen Adam steps on a tiny problem lower the test loss."""
    torch.manual_seed(0)
    task = LongMemoryTask(
        LongMemoryTaskConfig(
            name=problem,
            min_length=20,
            batch_size=32,
            batches_per_epoch=40,
            eval_size=64,
            eval_batch_size=32,
        ),
        seed=0,
    )
    model = _model(name, attention, hidden=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def test_loss() -> float:
        with torch.no_grad():
            return sum(
                float(task.loss(task.forward(model, b), b)) for b in task.eval_batches("test")
            )

    before = test_loss()
    for batch in task.train_batches(1):
        loss = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = test_loss()
    assert after < 0.95 * before, (before, after)
