"""``trainer.precision``: the autocast context, and bf16 on CPUs without bfloat16 LSTMs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from attnlstm.training import precision
from tests.test_reliability import FAMILIES, _train

CPU = torch.device("cpu")


@pytest.fixture
def cpu_without_bf16_lstm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Act as an AVX2-only CPU, whatever this one is."""
    monkeypatch.setattr(precision, "cpu_bf16_lstm_works", lambda: False)


def test_float32_is_no_autocast() -> None:
    with precision.autocast(CPU, "32"):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocasts_and_keeps_onednn_where_it_runs_bf16_lstms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_lstm_works", lambda: True)
    before = torch.backends.mkldnn.enabled
    with precision.autocast(CPU, "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        assert torch.backends.mkldnn.enabled == before
    assert precision.describe_cpu_bf16(CPU, "bf16") is None


@pytest.mark.usefixtures("cpu_without_bf16_lstm")
def test_bf16_without_bf16_lstms_turns_onednn_off_for_the_block_only() -> None:
    before = torch.backends.mkldnn.enabled
    with precision.autocast(CPU, "bf16"):
        assert not torch.backends.mkldnn.enabled
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        # the LSTM takes torch's own kernel: it runs, forward and backward
        lstm = torch.nn.LSTM(3, 4)
        output, _ = lstm(torch.randn(5, 2, 3))
    output.float().sum().backward()
    assert lstm.weight_hh_l0.grad is not None and torch.isfinite(lstm.weight_hh_l0.grad).all()
    assert torch.backends.mkldnn.enabled == before
    note = precision.describe_cpu_bf16(CPU, "bf16")
    assert note is not None and "float32" in note and "trainer.precision=32" in note
    assert precision.describe_cpu_bf16(CPU, "32") is None


def test_the_probe_agrees_with_an_lstm_under_bf16_autocast() -> None:
    """On this machine, whichever CPU it is: where the probe says oneDNN runs bf16 LSTMs, a
    language-model-sized LSTM runs under plain autocast; where it says not, it fails as
    the probe found (the error the fallback exists for)."""
    lstm = torch.nn.LSTM(12, 12, batch_first=True)
    inputs = torch.randn(3, 7, 12)
    if precision.cpu_bf16_lstm_works():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(inputs)
    else:
        with pytest.raises(RuntimeError), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(inputs)


@pytest.mark.usefixtures("cpu_without_bf16_lstm")
def test_bf16_run_on_a_cpu_without_bf16_lstms_trains_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*FAMILIES["language_model"], "trainer.max_epochs=1", "trainer.precision=bf16"]
    with caplog.at_level(logging.WARNING, logger="attnlstm.training.trainer"):
        metrics = _train(overrides, tmp_path / "bf16")
    assert metrics["status"] == "completed"
    assert metrics["history"][0]["val/loss"] > 0
    assert any("no bfloat16 instructions" in r.getMessage() for r in caplog.records)
