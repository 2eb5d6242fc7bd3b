"""scripts/raffel_sweep.py (learning-rate search with pruning) and scripts/raffel_table.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def _fake_run(
    root: Path,
    name: str,
    problem: str,
    model: str,
    length: int,
    lr: float,
    solved_epoch: int | None,
    epochs: int,
    accuracy: float,
    variable: bool = False,
) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "task": {
            "name": problem,
            "min_length": length,
            "max_length": 10000 if variable else length,
            "variable_length": variable,
        },
        "model": {"name": model},
        "optim": {"lr": lr},
    }
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    metrics = {
        "status": "completed",
        "solved": solved_epoch is not None,
        "solved_epoch": solved_epoch,
        "epochs": epochs,
        "wall_time_s": 10.0 * epochs,
        "test": {"test/accuracy": accuracy},
        "final": {"val/accuracy": accuracy},
        "history": [{"epoch": e + 1} for e in range(epochs)],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def _table(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "raffel_table.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_table_keeps_the_best_rate_and_shows_the_paper(tmp_path: Path) -> None:
    _fake_run(tmp_path, "a1", "addition", "ffattn", 50, 0.01, 2, 2, 1.0)
    _fake_run(tmp_path, "a2", "addition", "ffattn", 50, 0.003, 1, 1, 1.0)  # best: 1 epoch
    _fake_run(tmp_path, "m1", "multiplication", "mean", 1000, 0.01, None, 40, 0.912)
    _fake_run(tmp_path, "m2", "multiplication", "mean", 1000, 0.001, None, 40, 0.955)
    _fake_run(tmp_path, "v", "addition", "ffattn", 50, 0.003, None, 12, 0.97, variable=True)
    out = _table(str(tmp_path), "--details")
    assert "| T0 | 50 | 1000 |" in out
    assert "| Addition, attention | 1 (1) | not run (1) |" in out
    assert "| Multiplication, unweighted | not run (2) | 95.5% after 40 (33) |" in out
    assert "| addition | attention | 97.0% | 12 | 99.9% |" in out  # variable length
    assert "0.003: 1, 100.0%" in out and "lr 0.003" in out
    assert "| addition attention, variable T0 from 50 to 10000 | 0.003: 12, 97.0% |" in out


def test_a_forget_bias_lstm_is_not_credited_to_the_plain_lstm(tmp_path: Path) -> None:
    _fake_run(tmp_path, "plain", "addition", "lstm", 50, 0.003, None, 100, 0.162)
    _fake_run(tmp_path, "opened", "addition", "lstm", 50, 0.001, 5, 5, 1.0)
    config = OmegaConf.load(tmp_path / "opened" / "config.yaml")
    config.model.forget_bias = 1.0
    OmegaConf.save(config, tmp_path / "opened" / "config.yaml")
    out = _table(str(tmp_path))
    assert "| Addition, LSTM | 16.2% after 100 |" in out
    assert "| Addition, LSTM, forget bias 1 | 5 |" in out


def test_table_skips_runs_still_training(tmp_path: Path) -> None:
    _fake_run(tmp_path, "done", "addition", "mean", 100, 0.01, 1, 1, 1.0)
    _fake_run(tmp_path, "busy", "addition", "mean", 500, 0.01, None, 1, 0.5)
    busy = json.loads((tmp_path / "busy" / "metrics.json").read_text())
    busy["status"] = "running"
    (tmp_path / "busy" / "metrics.json").write_text(json.dumps(busy))
    out = _table(str(tmp_path))
    assert "| T0 | 100 |" in out and "500" not in out.split("\n")[2]


@pytest.mark.slow
def test_sweep_prunes_later_rates_at_the_best_epoch_count(tmp_path: Path) -> None:
    """Rates run in the authors' order; a later rate stops at the best epochs so far, and
    after a one-epoch solve the rest are skipped."""
    out = tmp_path / "sweep"
    command = [
        sys.executable,
        str(REPO / "scripts" / "raffel_sweep.py"),
        "--out",
        str(out),
        "--problems",
        "addition",
        "--models",
        "mean",
        "--lengths",
        "20",
        "--rates",
        "0.01",
        "0.003",
        "--max-epochs",
        "3",
        "--",
        "task.batches_per_epoch=20",
        "task.eval_size=100",
        "model.hidden_size=8",
        "model.head_size=8",
        "device=cpu",
        "task.tolerance=10",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=240,
    )
    # tolerance 10: every prediction counts as correct, so lr 0.01 solves in one epoch
    assert "lr=0.01: epochs 1, solved True; lr=0.003: skipped" in result.stdout
    metrics = json.loads((out / "addition-mean-T20" / "lr0.01" / "metrics.json").read_text())
    assert metrics["solved_epoch"] == 1
    assert not (out / "addition-mean-T20" / "lr0.003").exists()
    table = _table(str(out))
    assert "| Addition, unweighted | 1 |" in table

    # a run that crashed is resumed by the next sweep, not taken as finished
    metrics_path = out / "addition-mean-T20" / "lr0.01" / "metrics.json"
    crashed = json.loads(metrics_path.read_text())
    crashed["status"] = "failed"
    metrics_path.write_text(json.dumps(crashed))
    subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path, timeout=240)
    assert json.loads(metrics_path.read_text())["status"] == "solved"
    assert "resumed from" in (out / "sweep.log").read_text()


@pytest.mark.parametrize("preset", ["raffel_fixed", "raffel_variable"])
def test_presets_have_the_papers_settings(preset: str) -> None:
    from tests.conftest import compose_config

    cfg = compose_config([f"experiment={preset}"])
    assert str(cfg.model.name) == "ffattn" and cfg.model.hidden_size == 100
    assert cfg.task.batch_size == 100 and cfg.task.batches_per_epoch == 1000
    assert cfg.task.eval_size == 1000 and cfg.trainer.max_epochs == 100
    assert cfg.task.mask_padding is False and str(cfg.optim.name) == "adam"
    if preset == "raffel_variable":
        assert cfg.task.variable_length and cfg.task.eval_batch_size == 10
        assert (cfg.task.min_length, cfg.task.max_length) == (50, 10000)


def test_lstm_plateau_check_compares_the_forget_biases_on_the_same_batches() -> None:
    script = str(REPO / "scripts" / "lstm_plateau_check.py")
    tiny = ["--min-length", "20", "--hidden-size", "4", "--updates", "4", "--window", "2"]
    out = subprocess.run(
        [sys.executable, script, *tiny, "--forget-bias", "0", "0", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "addition, T0 = 20, target variance 0.04167" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| 0 |")]
    # the same bias twice: the same weights and batches, so the same losses
    assert len(rows) == 2 and rows[0] == rows[1]
    opened = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert len(opened) == 1 and opened[0] != "| 1 " + " | ".join(rows[0][1:])
    refused = subprocess.run(
        [sys.executable, script, "--updates", "1", "--window", "2"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--updates must be at least --window" in refused.stderr
