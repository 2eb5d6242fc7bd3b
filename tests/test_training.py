"""The trainer through the real command line: run directory, logs, checkpoints, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnlstm.io import load_checkpoint
from attnlstm.runtime import available_cores
from tests.conftest import (
    FIXED_THREADS,
    TINY,
    only_run_dir,
    run_cli,
    sigint_as_a_terminal_gives_it,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny default-model run, shared by the tests that only read it."""
    cwd = tmp_path_factory.mktemp("run")
    result = run_cli(TINY, cwd)
    return only_run_dir(cwd / "outputs"), result.stdout


def _events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def test_run_directory_layout(finished_run: tuple[Path, str]) -> None:
    run_dir, _ = finished_run
    relative = run_dir.relative_to(run_dir.parents[2])
    assert re.fullmatch(
        r"addition/lstm_attn-feedforward/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", str(relative)
    ), relative
    for name in (
        "config.yaml",
        "metrics.json",
        "last.pt",
        "best.pt",
        "train.log",
        ".hydra/config.yaml",
    ):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not list(run_dir.glob("*.tmp"))


def test_console_line_per_epoch(finished_run: tuple[Path, str]) -> None:
    _, stdout = finished_run
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert "train loss" in lines[0] and "val accuracy" in lines[0] and "samples/s" in lines[0]
    assert "device=auto" not in stdout  # device=cpu was asked for
    # the end says where the run is and how to look at it
    run_dir, _ = finished_run
    assert f"run folder: {run_dir}" in stdout
    assert f"tensorboard --logdir {run_dir}" in stdout and "attnlstm-compare" in stdout


def test_metrics_json(finished_run: tuple[Path, str]) -> None:
    run_dir, _ = finished_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs"] == 2 and metrics["steps"] == 12
    assert metrics["stop_reason"] == "max_epochs"
    assert isinstance(metrics["solved"], bool) and metrics["wall_time_s"] > 0
    assert set(metrics["test"]) == {"test/loss", "test/accuracy"}
    assert metrics["best"]["epoch"] in (1, 2) and "val/accuracy" in metrics["best"]
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert metrics["final"] == metrics["history"][-1]
    assert metrics["solved"] == (metrics["test"]["test/accuracy"] == 1.0)
    written = metrics["written"]  # the machine and date of the result
    assert written["device"] == "cpu" and written["torch"] == torch.__version__
    assert written["cores"] == available_cores() and written["cpu"] and "host" not in written
    assert datetime.fromisoformat(written["at"]).tzinfo is not None


def test_checkpoints_hold_everything_to_resume(finished_run: tuple[Path, str]) -> None:
    run_dir, _ = finished_run
    checkpoint = load_checkpoint(run_dir / "last.pt")  # weights_only=True
    assert {
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "task",
        "trainer",
        "epoch",
        "step",
        "config",
    } <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 12
    assert checkpoint["config"]["model"]["name"] == "lstm_attn"
    assert isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert "train_generator" in checkpoint["task"]
    best = load_checkpoint(run_dir / "best.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert best["epoch"] == metrics["best"]["epoch"]


def test_tensorboard_scalars_images_text(finished_run: tuple[Path, str]) -> None:
    run_dir, _ = finished_run
    events = _events(run_dir)
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/loss",
        "val/accuracy",
        "test/loss",
        "test/accuracy",
        "perf/samples_per_s",
        "perf/epoch_time_s",
        "perf/threads",
        "perf/cpu_busy",
    ):
        assert tag in scalars, tag
    # CPU seconds per second of training: above 0, at most the threads (and a little noise)
    busy = [e.value for e in events.Scalars("perf/cpu_busy")]
    threads = events.Scalars("perf/threads")[0].value
    assert threads >= 1 and all(0 < b <= threads + 0.5 for b in busy)
    assert len(events.Scalars("train/loss")) == 12  # every step
    assert len(events.Scalars("val/accuracy")) == 2  # every epoch
    # the pooling attention: one labelled figure per validation, every epoch
    assert "val/attention/0" in events.Tags()["images"]
    assert len(events.Images("val/attention/0")) == 2


def test_hparams_live_in_the_run_itself(finished_run: tuple[Path, str]) -> None:
    """The HParams tab needs the hparams summary in the same run (folder) as the metrics."""
    run_dir, _ = finished_run
    assert [p for p in run_dir.iterdir() if p.is_dir() and p.name != ".hydra"] == []
    events = _events(run_dir)
    plugin_tags = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin_tags)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        plugin_tags["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["model.name"].string_value == "lstm_attn"
    assert start.hparams["task.min_length"].number_value == 20
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        plugin_tags["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"test/accuracy", "val/loss"}
    assert "config" in "".join(events.Tags()["tensors"])  # the resolved config as text


@pytest.mark.slow  # three runs; the resume tests compare identical runs by default
def test_same_seed_same_numbers_other_seed_others(tmp_path: Path) -> None:
    histories = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run_cli(
            [*TINY, f"seed={seed}", "trainer.attention_images=0", FIXED_THREADS], tmp_path / name
        )
        metrics = json.loads((only_run_dir(tmp_path / name) / "metrics.json").read_text())
        histories.append([(r["train/loss"], r["val/loss"]) for r in metrics["history"]])
    assert histories[0] == histories[1]
    assert histories[0] != histories[2]


def test_resume_keeps_the_threads_the_run_fixed(tmp_path: Path) -> None:
    """trainer.threads comes from the stopped run's config on resume, not from the command
    line (where ``resume=...`` alone leaves it unset): the run started with 2 threads where
    OpenMP's default is 1, and its resumed epoch has 2 too, not the thread governor's 1."""
    one_core = {"OMP_NUM_THREADS": "1"}
    args = [*TINY, "trainer.max_epochs=1", "trainer.attention_images=0", "trainer.threads=2"]
    run_cli(args, tmp_path, extra_env=one_core)
    run_dir = only_run_dir(tmp_path)
    run_cli([f"resume={run_dir}", "trainer.max_epochs=2"], tmp_path, extra_env=one_core)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [record["perf/threads"] for record in history] == [2.0, 2.0]


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path: Path) -> None:
    """Two epochs straight equal one epoch, then a resumed second, in the same directory."""
    straight = [*TINY, "trainer.max_epochs=3", "trainer.attention_images=0", "model.dropout=0.2"]
    straight.append(FIXED_THREADS)
    run_cli(straight, tmp_path / "straight")
    expected = json.loads((only_run_dir(tmp_path / "straight") / "metrics.json").read_text())

    run_cli([*straight, "trainer.max_epochs=1"], tmp_path / "split")
    run_dir = only_run_dir(tmp_path / "split")
    result = run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], tmp_path / "split")
    assert "resumed from" in result.stdout
    assert only_run_dir(tmp_path / "split") == run_dir  # no new run directory
    assert list(run_dir.glob(".hydra-resume-*"))  # the first session's .hydra is kept
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got["epochs"] == 3 and got["steps"] == expected["steps"]
    for mine, theirs in zip(got["history"], expected["history"], strict=True):
        assert mine["train/loss"] == theirs["train/loss"]
        assert mine["val/loss"] == theirs["val/loss"]
    assert got["test"] == expected["test"]
    events = _events(run_dir)
    assert [e.step for e in events.Scalars("val/loss")] == [6, 12, 18]


def test_resume_refuses_to_change_the_run(tmp_path: Path) -> None:
    run_cli([*TINY, "trainer.max_epochs=1"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    result = run_cli([f"resume={run_dir}", "model.hidden_size=16"], tmp_path, check=False)
    assert result.returncode == 2
    assert "resume continues a run with its own config" in result.stderr
    missing = run_cli([f"resume={tmp_path / 'nowhere'}"], tmp_path, check=False)
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


def test_never_overwrites_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "fixed"
    run_cli([*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    again = run_cli(
        [*TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"], tmp_path, check=False
    )
    assert again.returncode != 0
    assert "already holds a run; it is never overwritten" in again.stdout + again.stderr
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # not even .hydra/ or train.log was touched


@pytest.mark.slow  # trains to 100% accuracy (8 s)
def test_stops_when_solved(tmp_path: Path) -> None:
    # with a huge tolerance every prediction is correct: solved after the first epoch
    run_cli([*TINY, "trainer.max_epochs=5", "task.tolerance=100"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stop_reason"] == "solved" and metrics["solved"] is True
    assert metrics["epochs"] == 1 and metrics["solved_epoch"] == 1
    # the checkpoint knows the run stopped: resuming it trains nothing more
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["trainer"]["stop_reason"] == "solved"
    result = run_cli([f"resume={run_dir}"], tmp_path)
    assert "nothing left to train" in result.stdout + result.stderr
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["epochs"] == 1 and again["test"] == metrics["test"]


def test_early_stopping(tmp_path: Path) -> None:
    # a learning rate too small to change the accuracy: no improvement after epoch 1
    run_cli(
        [*TINY, "trainer.max_epochs=6", "trainer.early_stopping_patience=2", "optim.lr=1e-12"],
        tmp_path,
    )
    metrics = json.loads((only_run_dir(tmp_path / "outputs") / "metrics.json").read_text())
    assert metrics["stop_reason"] == "early_stopping" and metrics["epochs"] == 3


def test_schedule_and_clipping_are_applied(tmp_path: Path) -> None:
    run_cli(
        [
            *TINY,
            "trainer.max_epochs=3",
            "optim.scheduler=step",
            "optim.step_size=1",
            "optim.gamma=0.1",
            "trainer.grad_clip=0.001",
            "optim=sgd",
        ],
        tmp_path,
    )
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [round(r["lr"], 6) for r in metrics["history"]] == [0.1, 0.01, 0.001]
    assert torch.load(run_dir / "last.pt", weights_only=True)["scheduler"]["last_epoch"] == 3
    # grad_norm is logged before clipping; the update is bounded by lr * 0.001
    norms = [e.value for e in _events(run_dir).Scalars("train/grad_norm")]
    assert len(norms) == 18 and all(n > 0 for n in norms)


@pytest.mark.slow
def test_interrupt_keeps_the_last_checkpoint_and_resumes(tmp_path: Path) -> None:
    args = [*TINY, "trainer.max_epochs=200", "task.batches_per_epoch=3"]
    process = subprocess.Popen(
        [sys.executable, "-m", "attnlstm", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "outputs").rglob("last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted", output
    assert "resume=" in output
    stopped_at = load_checkpoint(run_dir / "last.pt")["epoch"]
    assert stopped_at >= 1
    run_cli([f"resume={run_dir}", f"trainer.max_epochs={stopped_at + 1}"], tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == stopped_at + 1


def test_progress_bar_stays_quiet_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    args = [a for a in TINY if not a.startswith("trainer.progress_bar")]
    result = run_cli([*args, "trainer.max_epochs=1", "trainer.progress_bar=true"], tmp_path)
    assert "it/s" not in result.stderr and "epoch 1:" not in result.stderr
    assert "epoch 1/1" in result.stdout  # the per-epoch line is still there


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses a Linux pseudo-terminal")
def test_progress_bar_shows_on_a_terminal(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    args = [a for a in TINY if not a.startswith("trainer.progress_bar")]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attnlstm",
            *args,
            "trainer.max_epochs=1",
            "task.batches_per_epoch=200",
            "trainer.progress_bar=true",
        ],
        stdout=terminal,
        stderr=terminal,
        cwd=tmp_path,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0
    assert b"epoch 1:" in output and b"/200" in output and b"it/s" in output


# -- weight averaging ---------------------------------------------------------------------


def test_ema_averages_the_weights_after_every_update() -> None:
    from torch import nn

    from attnlstm.errors import ConfigError
    from attnlstm.training.averaging import ExponentialAveraging

    model = nn.Linear(1, 1, bias=False)
    averaging = ExponentialAveraging(model, decay=0.5)
    assert averaging.active  # from the first update on
    for value in (2.0, 4.0, 8.0):  # the first update copies; then 0.5 * old + 0.5 * new
        with torch.no_grad():
            model.weight.fill_(value)
        averaging.update()
    assert averaging.eval_model.weight.item() == pytest.approx(0.5 * (0.5 * 2 + 0.5 * 4) + 4)
    assert model.weight.item() == 8.0  # training keeps the raw weights
    restored = ExponentialAveraging(nn.Linear(1, 1, bias=False), decay=0.5)
    restored.load_state_dict(averaging.state_dict())
    assert restored.eval_model.weight.item() == pytest.approx(5.5)
    with pytest.raises(ConfigError, match="ema_decay"):
        ExponentialAveraging(model, decay=1.0)


@pytest.mark.slow
def test_ema_run_tests_the_average_and_resumes_exactly(tmp_path: Path) -> None:
    ema = [*TINY, "trainer.attention_images=0", "optim.averaging=ema", "optim.ema_decay=0.9"]
    ema.append(FIXED_THREADS)
    run_cli([*ema, "trainer.max_epochs=3"], tmp_path / "straight")
    straight = only_run_dir(tmp_path / "straight")
    expected = json.loads((straight / "metrics.json").read_text())
    best = load_checkpoint(straight / "best.pt")
    assert best["eval_model"] is not None  # the average, saved beside the raw weights
    assert any(not torch.equal(best["eval_model"][k], v) for k, v in best["model"].items()), (
        "the tested weights are the average, not the last raw ones"
    )

    run_cli([*ema, "trainer.max_epochs=1"], tmp_path / "split")
    run_dir = only_run_dir(tmp_path / "split")
    run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], tmp_path / "split")
    got = json.loads((run_dir / "metrics.json").read_text())
    assert [r["val/loss"] for r in got["history"]] == [r["val/loss"] for r in expected["history"]]
    assert got["test"] == expected["test"]

    other = [*TINY, "trainer.attention_images=0", "trainer.max_epochs=3", FIXED_THREADS]
    run_cli(other, tmp_path / "plain")  # the same run without averaging validates other weights
    plain = json.loads((only_run_dir(tmp_path / "plain") / "metrics.json").read_text())
    assert [r["train/loss"] for r in plain["history"]] == [
        r["train/loss"] for r in expected["history"]
    ]
    assert [r["val/loss"] for r in plain["history"]] != [r["val/loss"] for r in expected["history"]]


def test_a_bad_ema_decay_stops_the_run_with_a_config_error(tmp_path: Path) -> None:
    result = run_cli([*TINY, "optim.averaging=ema", "optim.ema_decay=1.5"], tmp_path, check=False)
    assert result.returncode == 2
    assert "optim.ema_decay=1.5 is not allowed" in result.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))
