"""Data parallel training under torchrun, mixed precision and gradient accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from attnlstm.errors import ConfigError
from attnlstm.tasks.language_model import TokenBatch
from attnlstm.train import build_trainer
from attnlstm.training.distributed import shard, shard_bounds, share_weight
from tests.conftest import TINY, compose_config, run_cli
from tests.test_reliability import FAMILIES, _train

NO_DROPOUT = [*TINY, "model.dropout=0", "trainer.attention_images=0"]


def _torchrun(args: Sequence[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=<processes> -m attnlstm <args>`` (gloo, CPU)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "attnlstm", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _close(got: dict[str, Any], expected: dict[str, Any], tolerance: float = 1e-6) -> None:
    """Same steps, and every loss within ``tolerance`` (relative): the processes sum their
    gradients in another order than one process does."""
    assert got["steps"] == expected["steps"]
    for mine, theirs in zip(got["history"], expected["history"], strict=True):
        for key in ("train/loss", "val/loss"):
            assert mine[key] == pytest.approx(theirs[key], rel=tolerance), key
    for key, value in expected["test"].items():
        assert got["test"][key] == pytest.approx(value, rel=tolerance), key


@pytest.mark.slow
def test_two_processes_train_one_run_with_single_process_numbers(tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: one run folder (rank 0's), nothing from rank 1, and
    the losses of one process with the same global batch."""
    single = tmp_path / "single"
    run_cli([*NO_DROPOUT, "hydra.run.dir=run"], single)
    expected = json.loads((single / "run" / "metrics.json").read_text())
    result = _torchrun([*NO_DROPOUT, "trainer.max_epochs=2"], tmp_path / "ddp")
    runs = [p.parent for p in (tmp_path / "ddp").rglob("metrics.json")]
    assert len(runs) == 1, runs
    assert [p for p in (tmp_path / "ddp").rglob(".hydra")] == [runs[0] / ".hydra"]
    assert "data parallel: 2 processes" in result.stdout
    _close(json.loads((runs[0] / "metrics.json").read_text()), expected)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["language_model", "tagging", "seq2seq", "text_classification"])
def test_every_family_trains_data_parallel(family: str, tmp_path: Path) -> None:
    no_dropout = {
        "language_model": [
            "model.dropout_input=0",
            "model.dropout_hidden=0",
            "model.dropout_output=0",
            "model.weight_drop=0",
        ],
        "tagging": ["model.dropout=0", "task.word_dropout=0"],
        "seq2seq": ["model.dropout=0"],
        "text_classification": ["model.dropout=0", "task.word_dropout=0"],
    }[family]
    args = [
        *FAMILIES[family],
        *no_dropout,
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        "device=cpu",
        "hydra.run.dir=run",
    ]
    run_cli(args, tmp_path / "single")
    _torchrun(args, tmp_path / "ddp")
    expected = json.loads((tmp_path / "single" / "run" / "metrics.json").read_text())
    # seq2seq: 2e-5 after one epoch, 1e-4 after two (not traced further; a share's packed
    # encoder output is as long as its own longest source, so its sums run in another order)
    tolerance = 1e-3 if family == "seq2seq" else 1e-5
    _close(json.loads((tmp_path / "ddp" / "run" / "metrics.json").read_text()), expected, tolerance)


@pytest.mark.slow
def test_a_run_started_on_two_processes_resumes_on_one(tmp_path: Path) -> None:
    """The data stream does not depend on the number of processes: 1 epoch on 2 processes,
    then 1 more on 1 process, gives the numbers of 2 epochs on 1 process (no dropout)."""
    run_cli([*NO_DROPOUT, "hydra.run.dir=run"], tmp_path / "single")
    expected = json.loads((tmp_path / "single" / "run" / "metrics.json").read_text())
    _torchrun([*NO_DROPOUT, "trainer.max_epochs=1", "hydra.run.dir=run"], tmp_path / "ddp")
    run_cli(["resume=run", "trainer.max_epochs=2"], tmp_path / "ddp")
    _close(json.loads((tmp_path / "ddp" / "run" / "metrics.json").read_text()), expected)


def test_shards_cover_the_batch_and_weigh_as_their_rows() -> None:
    assert [shard_bounds(5, r, 2) for r in range(2)] == [(0, 2), (2, 5)]
    assert shard_bounds(1, 1, 2) == (0, 1)  # too few rows: every process takes them all
    batch = TokenBatch(torch.arange(15).view(5, 3), torch.arange(15).view(5, 3), 0.5)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p.inputs for p in parts]), batch.inputs)
    assert all(p.weight == 0.5 for p in parts)
    # the processes' mean losses, weighted, average to the global mean
    weights = [share_weight(len(p), len(batch), 2) for p in parts]
    assert sum(w * len(p) / len(p) for w, p in zip(weights, parts, strict=True)) / 2 == 1.0
    assert weights == [6 * 2 / 15, 9 * 2 / 15]


# -- gradient accumulation and precision ------------------------------------------------------


def _one_update(overrides: Sequence[str], batches: list[Any], tmp_path: Path) -> list[torch.Tensor]:
    cfg = compose_config([*overrides, "trainer.progress_bar=false", "logger=csv"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    trainer, _ = build_trainer(cfg, tmp_path)
    trainer.task.train_batches = lambda epoch: iter(batches)  # type: ignore[method-assign]
    trainer._train_epoch(1)
    assert trainer.state.step == 1
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_k_accumulated_batches_make_the_update_of_one_k_times_larger(tmp_path: Path) -> None:
    cfg = compose_config(NO_DROPOUT)
    from attnlstm.tasks import build_task

    big = next(iter(build_task(cfg.task, 0, None).train_batches(1)))
    halves = [shard(big, 0, 2), shard(big, 1, 2)]
    once = _one_update(NO_DROPOUT, [big], tmp_path / "once")
    twice = _one_update(
        [*NO_DROPOUT, "trainer.accumulate_grad_batches=2"], halves, tmp_path / "twice"
    )
    untouched = _one_update(NO_DROPOUT, [halves[0]], tmp_path / "half")
    for a, b in zip(once, twice, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(once, untouched, strict=True))


def test_accumulation_keeps_the_language_model_state_and_resumes_exactly(tmp_path: Path) -> None:
    overrides = [
        *FAMILIES["language_model"],
        "trainer.accumulate_grad_batches=2",
        "trainer.max_epochs=2",
    ]
    expected = _train(overrides, tmp_path / "straight")
    per_epoch = expected["history"][0]["step"]
    assert expected["history"][-1]["train/ppl"] > 0
    _train(overrides, tmp_path / "stopped", stop_at=per_epoch + 1)
    got = _train(overrides, tmp_path / "stopped")
    assert got["history"] == [
        {**r, "epoch_time_s": g["epoch_time_s"], **{k: g[k] for k in g if k.startswith("perf/")}}
        for r, g in zip(expected["history"], got["history"], strict=True)
    ]


def test_bf16_trains_on_the_cpu_close_to_float32(tmp_path: Path) -> None:
    overrides = [*FAMILIES["language_model"], "trainer.max_epochs=1"]
    full = _train(overrides, tmp_path / "fp32")
    half = _train([*overrides, "trainer.precision=bf16"], tmp_path / "bf16")
    assert half["status"] == "completed"
    assert half["history"][0]["val/loss"] == pytest.approx(full["history"][0]["val/loss"], rel=0.02)
    assert half["history"][0]["val/loss"] != full["history"][0]["val/loss"]


def test_float16_on_the_cpu_is_refused_with_a_sentence(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "trainer.precision=16"])
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU.*bf16"):
        build_trainer(cfg, tmp_path)
    result = run_cli([*TINY, "trainer.precision=16"], tmp_path, check=False)
    assert result.returncode == 2 and "trainer.precision=16" in result.stderr


def test_evaluation_shares_never_count_a_row_twice() -> None:
    batch = TokenBatch(torch.arange(6).view(1, 6), torch.arange(6).view(1, 6))
    assert shard(batch, 0, 2, exact=True) is None  # one row: rank 0 adds nothing
    assert shard(batch, 1, 2, exact=True) is batch  # rank 1 takes it


def test_the_environment_of_torchrun_and_of_slurm_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlstm.training.distributed import DistributedEnv, detect

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert detect() == DistributedEnv() and not detect().active
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert detect() == DistributedEnv(3, 4, 1)
    monkeypatch.setenv("RANK", "1")  # torchrun's variables win
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert detect() == DistributedEnv(1, 2, 0)
