"""Shared helpers: compose configs in-process, run the CLI in a subprocess, tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import attnlstm.train  # noqa: F401  (registers the schemas and resolvers)
from attnlstm.paths import config_dir

#: a problem small enough to train in a second or two
TINY = [
    "task.min_length=20",
    "task.batch_size=16",
    "task.batches_per_epoch=6",
    "task.eval_size=32",
    "task.eval_batch_size=16",
    "model.hidden_size=8",
    "model.head_size=8",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "trainer.attention_images=2",
    "device=cpu",
]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``attnlstm-train <overrides>`` would run with (Hydra's own keys dropped)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_cli(
    args: Sequence[str],
    cwd: Path,
    module: str = "attnlstm",
    check: bool = True,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` in ``cwd``; output captured as text."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def only_run_dir(root: Path) -> Path:
    """The single run directory (holding metrics.json) under ``root``."""
    runs = sorted(p.parent for p in root.rglob("metrics.json"))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
