"""``model.forget_bias``: the LSTM's initial forget-gate bias, and runs saved before the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from attnlstm import compare
from attnlstm.compare import Run
from attnlstm.config import SequenceModelConfig
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.recurrent import MaskedLSTM, add_forget_gate_bias
from attnlstm.sweep_resume import config_drift
from attnlstm.tasks.base import TaskSpec

SPEC = TaskSpec(input_size=2, output_size=1)
HIDDEN = 4


def _masked(bidirectional: bool, layers: int, forget_bias: float) -> MaskedLSTM:
    torch.manual_seed(0)
    return MaskedLSTM(3, HIDDEN, layers, bidirectional, 0.0, forget_bias)


SHAPES = [(False, 1), (False, 2), (True, 1), (True, 2)]  # (bidirectional, layers)


@pytest.mark.parametrize(("bidirectional", "layers"), SHAPES)
def test_forget_bias_moves_every_forget_gate_by_exactly_the_value_and_nothing_else(
    bidirectional: bool, layers: int
) -> None:
    before = dict(_masked(bidirectional, layers, 0.0).named_parameters())
    after = dict(_masked(bidirectional, layers, 1.5).named_parameters())
    assert before.keys() == after.keys()
    moved = 0
    for name, old in before.items():
        change = after[name].detach() - old.detach()
        if ".bias_ih_l" in name:  # gates (input, forget, cell, output), HIDDEN rows each
            expected = torch.zeros_like(change)
            expected[HIDDEN : 2 * HIDDEN] = 1.5
            torch.testing.assert_close(change, expected)
            moved += 1
        else:  # bias_hh and every weight: the same draw as without the option
            assert torch.equal(change, torch.zeros_like(change)), name
    assert moved == layers * (2 if bidirectional else 1)  # every layer and direction


def test_the_forget_gate_starts_near_sigmoid_of_the_value() -> None:
    """The gate's bias b_if + b_hf is PyTorch's plus the value; sigmoid of it is the gate's
    first output for a zero input and state: near 0.5 by default, near 0.73 with 1.0."""
    hidden = 100
    torch.manual_seed(3)
    lstm = nn.LSTM(1, hidden)
    default = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[hidden : 2 * hidden].detach().clone()
    add_forget_gate_bias(lstm, 1.0)
    total = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[hidden : 2 * hidden].detach()
    torch.testing.assert_close(total, default + 1.0)
    assert abs(torch.sigmoid(default).mean().item() - 0.5) < 0.02
    assert abs(torch.sigmoid(total).mean().item() - torch.sigmoid(torch.tensor(1.0)).item()) < 0.02


def test_zero_is_pytorchs_own_initialisation() -> None:
    torch.manual_seed(0)
    reference = nn.LSTM(3, HIDDEN, 1, batch_first=True)
    ours = _masked(False, 1, 0.0).lstm
    for (name, theirs), mine in zip(reference.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(theirs, mine), name


def test_every_layer_and_direction_of_a_bidirectional_nn_lstm() -> None:
    torch.manual_seed(0)
    before = nn.LSTM(3, HIDDEN, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    after = nn.LSTM(3, HIDDEN, num_layers=2, bidirectional=True)
    add_forget_gate_bias(after, -0.5)
    moved = []
    for (name, old), new in zip(before.named_parameters(), after.parameters(), strict=True):
        change = (new - old).detach()
        if name.startswith("bias_ih"):
            torch.testing.assert_close(change[HIDDEN : 2 * HIDDEN], torch.full((HIDDEN,), -0.5))
            change[HIDDEN : 2 * HIDDEN] = 0.0
            moved.append(name)
        assert torch.equal(change, torch.zeros_like(change)), name
    assert moved == ["bias_ih_l0", "bias_ih_l0_reverse", "bias_ih_l1", "bias_ih_l1_reverse"]


def test_an_lstm_without_biases_is_refused() -> None:
    with pytest.raises(ValueError, match="no forget-gate bias"):
        add_forget_gate_bias(nn.LSTM(1, HIDDEN, bias=False), 1.0)


def _model(name: str, attention: str, forget_bias: float) -> nn.Module:
    model_cfg = OmegaConf.create({"name": name, "hidden_size": HIDDEN, "forget_bias": forget_bias})
    return build_model(model_cfg, OmegaConf.create({"method": attention}), SPEC)


@pytest.mark.parametrize(("name", "attention"), [("lstm", "none"), ("lstm_attn", "dot")])
def test_lstm_models_read_model_forget_bias(name: str, attention: str) -> None:
    torch.manual_seed(0)
    plain = _model(name, attention, 0.0)
    torch.manual_seed(0)
    opened = _model(name, attention, 2.0)
    change = opened.lstm.lstm.bias_ih_l0.detach() - plain.lstm.lstm.bias_ih_l0.detach()
    torch.testing.assert_close(change[HIDDEN : 2 * HIDDEN], torch.full((HIDDEN,), 2.0))
    assert torch.equal(change[:HIDDEN], torch.zeros(HIDDEN))


@pytest.mark.parametrize(("name", "attention"), [("ffattn", "feedforward"), ("mean", "none")])
def test_forget_bias_is_refused_where_there_is_no_lstm(name: str, attention: str) -> None:
    with pytest.raises(ConfigError, match=f"model.forget_bias=1 is not allowed: model={name}"):
        _model(name, attention, 1.0)
    _model(name, attention, 0.0)  # the default is no setting at all


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_forget_bias_must_be_finite(value: float) -> None:
    with pytest.raises(ConfigError, match=r"model\.forget_bias=.* it must be a finite number"):
        SequenceModelConfig(forget_bias=value)


def _run(config: dict[str, Any], seed: int) -> Run:
    metrics = {"test": {"test/acc": 0.5}}
    return Run(path=Path(f"run{seed}"), config={**config, "seed": seed}, metrics=metrics)


BEFORE = {"model.name": "lstm", "model.hidden_size": 100}  # saved before the key existed


def test_runs_saved_before_the_key_group_with_todays_default_only() -> None:
    today = _run({**BEFORE, "model.forget_bias": 0.0}, 1)
    opened = _run({**BEFORE, "model.forget_bias": 1.0}, 2)
    old = _run(BEFORE, 0)
    assert compare.group_key(old) == compare.group_key(today)
    assert compare.group_key(old) != compare.group_key(opened)
    assert [len(g) for g in compare.group_runs([old, today, opened])] == [2, 1]
    assert compare.differing_keys([old, today]) == ["seed"]
    assert compare.differing_keys([old, opened]) == ["model.forget_bias", "seed"]


def test_the_default_written_another_way_is_the_same_setting_everywhere() -> None:
    old = _run(BEFORE, 0)
    negative_zero = _run({**BEFORE, "model.forget_bias": -0.0}, 1)
    integer = _run({**BEFORE, "model.forget_bias": 0}, 2)
    runs = [old, negative_zero, integer]
    assert len({compare.group_key(run) for run in runs}) == 1
    assert compare.differing_keys(runs) == ["seed"]
    # beside another setting, the old run shows the value it stands for, not a blank
    opened = _run({**BEFORE, "model.forget_bias": 1.0}, 3)
    for aggregate in (False, True):
        header, rows = compare.build_table([old, opened], Path("."), None, None, aggregate)
        assert [row[header.index("model.forget_bias")] for row in rows] == [0.0, 1.0]


def test_a_finished_job_saved_before_the_key_has_not_drifted_at_the_default() -> None:
    saved = {"model": {"name": "lstm", "hidden_size": 100}}
    assert config_drift(saved, {"model": {**saved["model"], "forget_bias": 0.0}}) == []
    drift = config_drift(saved, {"model": {**saved["model"], "forget_bias": 1.0}})
    assert drift == ["model.forget_bias"]
