"""Ctrl-C in a sweep whose jobs run in joblib workers (attnlstm.sweep_stop): every running
job saves, no new job starts, the command exits 130, and the same command finishes it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attnlstm import sweep_stop
from attnlstm.sigint import Interrupted
from attnlstm.sweep_stop import STOP_FILE, SWEEP_PID_VARIABLE, SweepStop, in_a_worker
from tests.conftest import TINY, default_sigint, sigint_as_a_terminal_gives_it
from tests.test_sweeps import BASIC, JOBLIB, SUBMITIT_LOCAL, needs_joblib

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def _sweep_config(sweep_dir: Path, launcher: str, sweeper: str = BASIC_SWEEPER) -> object:
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "launcher": {"_target_": launcher},
                "sweeper": {"_target_": sweeper},
            }
        }
    )


@pytest.fixture
def restore_environment() -> Iterator[None]:
    before = os.environ.get(SWEEP_PID_VARIABLE)
    yield
    os.environ.pop(SWEEP_PID_VARIABLE, None)
    if before is not None:
        os.environ[SWEEP_PID_VARIABLE] = before


def test_first_ctrl_c_stops_the_sweep_without_raising_the_second_stops_at_once(
    tmp_path: Path, restore_environment: None
) -> None:
    config = _sweep_config(tmp_path, JOBLIB)
    callback = SweepStop()
    with default_sigint():
        before = signal.getsignal(signal.SIGINT)
        callback.on_multirun_start(config)
        try:
            assert sweep_stop.sweep_running()
            os.kill(os.getpid(), signal.SIGINT)  # joblib would kill the workers if this raised
            assert (tmp_path / STOP_FILE).exists()
            os.kill(os.getpid(), signal.SIGTERM)  # a stop already asked for: nothing more
            with pytest.raises(Interrupted):
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            callback.on_multirun_end(config)
        assert signal.getsignal(signal.SIGINT) is before
    assert sweep_stop.sweep_was_stopped() and not sweep_stop.sweep_running()


def test_a_new_sweep_forgets_the_last_stop(tmp_path: Path, restore_environment: None) -> None:
    (tmp_path / STOP_FILE).touch()
    config = _sweep_config(tmp_path, JOBLIB)
    callback = SweepStop()
    with default_sigint():
        callback.on_multirun_start(config)
        callback.on_multirun_end(config)
    assert not (tmp_path / STOP_FILE).exists()
    assert not sweep_stop.sweep_was_stopped()


@pytest.mark.parametrize(
    ("launcher", "sweeper"),
    [(BASIC, BASIC_SWEEPER), (SUBMITIT_LOCAL, BASIC_SWEEPER), (JOBLIB, OPTUNA)],
)
def test_other_launchers_and_optimising_sweepers_keep_their_handling(
    tmp_path: Path, restore_environment: None, launcher: str, sweeper: str
) -> None:
    """The basic launcher runs each job here (the trainer's own Ctrl-C handling applies);
    submitit's and Optuna's are left as they were."""
    config = _sweep_config(tmp_path, launcher, sweeper)
    callback = SweepStop()
    with default_sigint():
        callback.on_multirun_start(config)
        try:
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            assert not in_a_worker()
        finally:
            callback.on_multirun_end(config)


def test_a_worker_is_a_process_other_than_the_sweeps(restore_environment: None) -> None:
    os.environ.pop(SWEEP_PID_VARIABLE, None)
    assert not in_a_worker()  # no sweep at all
    os.environ[SWEEP_PID_VARIABLE] = str(os.getpid())
    assert not in_a_worker()
    os.environ[SWEEP_PID_VARIABLE] = str(os.getpid() + 1)
    assert in_a_worker()


# -- end to end: a real joblib pool ----------------------------------------------------------

#: long epochs (a stop lands inside one) and a checkpoint big enough to take a while to write
_LONG = [
    *(arg for arg in TINY if not arg.startswith(("task.batches_per_epoch", "model.hidden"))),
    "model.hidden_size=384",
    "task.batches_per_epoch=100000",
    "trainer.max_epochs=1",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.threads=1",
]


def _start_sweep(sweep: Path, cwd: Path) -> subprocess.Popen[str]:
    """Three jobs, two at a time, in a process group of their own (as a terminal's)."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *_LONG, "seed=0,1,2"]
    return subprocess.Popen(
        [sys.executable, "-m", "attnlstm", *args, f"hydra.sweep.dir={sweep}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=sigint_as_a_terminal_gives_it,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_until_both_train(sweep: Path, process: subprocess.Popen[str]) -> None:
    """Until two jobs have written a periodic checkpoint: both are inside the training loop."""
    deadline = time.monotonic() + 240
    while len(list(sweep.glob("*/last.pt"))) < 2:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the jobs never started training"
        time.sleep(0.1)


def _workers(parent: int) -> list[int]:
    """The pids of ``parent``'s loky workers (not its resource tracker), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"popen_loky_posix" in command:
            found.append(int(entry.name))
    return found


def _assert_stopped_and_saved(sweep: Path, process: subprocess.Popen[str]) -> str:
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 130, output
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2, (jobs, output)  # the third job never started: no folder
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "interrupted", output
        assert "the checkpoint holds the run up to update" in (job / "train.log").read_text()
        assert not list(job.glob(".*.tmp")), output  # no write cut short
    assert "the sweep was stopped; the same command finishes it" in output
    return output


@pytest.mark.slow
@needs_joblib
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_lets_every_joblib_job_save_and_starts_no_new_one(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the sweep's process and its workers. Before the fix the
    sweep's process raised, and joblib SIGKILLed the workers while they saved."""
    sweep = tmp_path / "sweep"
    process = _start_sweep(sweep, tmp_path)
    _wait_until_both_train(sweep, process)
    os.killpg(process.pid, signal.SIGINT)
    output = _assert_stopped_and_saved(sweep, process)
    assert "SIGINT received: the sweep starts no new job" in output


@pytest.mark.slow
@needs_joblib
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_stop_sent_to_one_worker_at_a_time_stops_the_sweep(tmp_path: Path) -> None:
    """``kill -INT`` to one worker, then, once its job has stopped, to the other: the first
    job to stop used to raise, and joblib then SIGKILLed the other worker, still training."""
    sweep = tmp_path / "sweep"
    process = _start_sweep(sweep, tmp_path)
    _wait_until_both_train(sweep, process)
    workers = _workers(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGINT)
    deadline = time.monotonic() + 120
    while not any(_status(job) == "interrupted" for job in sweep.glob("*/")):
        assert time.monotonic() < deadline, "the first job never stopped"
        time.sleep(0.1)
    time.sleep(2.0)  # what joblib needed to kill the other worker
    with contextlib.suppress(ProcessLookupError):  # gone if joblib killed it
        os.kill(workers[1], signal.SIGINT)
    _assert_stopped_and_saved(sweep, process)


def _status(job: Path) -> str | None:
    try:
        return json.loads((job / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None
