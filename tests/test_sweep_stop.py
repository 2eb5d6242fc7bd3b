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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from attnlstm import sweep_stop
from attnlstm.sigint import Interrupted, take_start_up_interrupt
from attnlstm.sweep_stop import (
    STOP_FILE,
    SWEEP_PID_VARIABLE,
    SweepStop,
    in_a_worker,
    worker_job,
)
from attnlstm.training.interrupt import StopRequest
from tests.conftest import TINY, default_sigint, sigint_as_a_terminal_gives_it
from tests.test_sweeps import BASIC, JOBLIB, SUBMITIT_LOCAL, needs_joblib

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def _sweep_config(
    sweep_dir: Path, launcher: str, sweeper: str = BASIC_SWEEPER, n_jobs: int = 2
) -> Any:
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "launcher": {"_target_": launcher, "n_jobs": n_jobs},
                "sweeper": {"_target_": sweeper},
            }
        }
    )


@contextmanager
def ignored_sigint() -> Iterator[None]:
    """SIGINT ignored, as a joblib worker of a sweep starts (SweepStop)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    """No stop recorded, no sweep running, before and after each test (module globals)."""
    take_start_up_interrupt()
    sweep_stop._stopped = sweep_stop._running = False
    yield
    take_start_up_interrupt()
    sweep_stop._stopped = sweep_stop._running = False


@pytest.fixture
def restore_environment() -> Iterator[None]:
    before = os.environ.get(SWEEP_PID_VARIABLE)
    yield
    os.environ.pop(SWEEP_PID_VARIABLE, None)
    if before is not None:
        os.environ[SWEEP_PID_VARIABLE] = before


def test_the_sweeps_process_ignores_ctrl_c_and_stops_on_sigterm(
    tmp_path: Path, restore_environment: None
) -> None:
    """Ctrl-C must not raise in the process joblib waits in, nor in an idle worker (which
    inherits the ignored SIGINT); SIGTERM starts no new job, a second one stops at once."""
    config = _sweep_config(tmp_path, JOBLIB)
    callback = SweepStop()
    with default_sigint():
        before = signal.getsignal(signal.SIGINT)
        callback.on_multirun_start(config)
        try:
            assert sweep_stop.sweep_running()
            assert os.environ[SWEEP_PID_VARIABLE] == str(os.getpid())
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert _child_ignores_sigint()
            signal.raise_signal(signal.SIGINT)  # nothing happens
            assert not (tmp_path / STOP_FILE).exists()
            signal.raise_signal(signal.SIGTERM)
            assert (tmp_path / STOP_FILE).exists()
            with pytest.raises(Interrupted):
                signal.raise_signal(signal.SIGTERM)
        finally:
            callback.on_multirun_end(config)
        assert signal.getsignal(signal.SIGINT) is before
    assert SWEEP_PID_VARIABLE not in os.environ
    assert sweep_stop.sweep_was_stopped() and not sweep_stop.sweep_running()


def _child_ignores_sigint() -> bool:
    """Whether a Python process started now (as loky starts a worker) ignores SIGINT."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() == "True"


@pytest.fixture
def as_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_environment: None
) -> Iterator[Path]:
    """This process as a joblib worker of a sweep in ``tmp_path``, SIGINT ignored as the
    worker inherits it; the sweep folder."""
    os.environ[SWEEP_PID_VARIABLE] = str(os.getpid() + 1)
    monkeypatch.setattr(sweep_stop, "_current_sweep_dir", lambda: tmp_path)
    with ignored_sigint():
        yield tmp_path


def test_a_ctrl_c_before_the_loop_is_remembered_and_stops_the_sweep_at_once(
    as_a_worker: Path,
) -> None:
    with worker_job():
        signal.raise_signal(signal.SIGINT)  # no exception: it might land in joblib's code
        assert (as_a_worker / STOP_FILE).exists()  # no job starts from now on
        with StopRequest() as stop:
            assert stop.requested  # the loop stops before its first update
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # between jobs


def test_the_loops_first_stop_stops_the_sweep_at_once(as_a_worker: Path) -> None:
    """Not only when the job has saved: a job starting meanwhile must see the stop."""
    with worker_job(), StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and (as_a_worker / STOP_FILE).exists()
    with StopRequest() as stop:  # outside a worker's job: nothing to tell
        assert not stop.requested


def test_a_stop_after_the_loop_stops_the_sweep_and_not_the_workers_next_job(
    as_a_worker: Path,
) -> None:
    with worker_job():
        with StopRequest():
            pass  # the job trained
        (as_a_worker / STOP_FILE).unlink(missing_ok=True)
        signal.raise_signal(signal.SIGINT)  # during the test split, say
    assert (as_a_worker / STOP_FILE).exists()
    with StopRequest() as stop:
        assert not stop.requested


def test_a_new_sweep_forgets_the_last_stop(tmp_path: Path, restore_environment: None) -> None:
    (tmp_path / STOP_FILE).touch()
    config = _sweep_config(tmp_path, JOBLIB)
    callback = SweepStop()
    with default_sigint():
        callback.on_multirun_start(config)
        callback.on_multirun_end(config)
    assert not (tmp_path / STOP_FILE).exists()
    assert not sweep_stop.sweep_was_stopped()


def test_the_pid_of_a_joblib_sweep_before_does_not_reach_other_launchers(
    tmp_path: Path, restore_environment: None
) -> None:
    os.environ[SWEEP_PID_VARIABLE] = "1"  # left by an earlier sweep, or inherited
    callback = SweepStop()
    config = _sweep_config(tmp_path, SUBMITIT_LOCAL)
    callback.on_multirun_start(config)
    try:
        assert SWEEP_PID_VARIABLE not in os.environ and not in_a_worker()
    finally:
        callback.on_multirun_end(config)


@pytest.mark.parametrize(
    ("launcher", "sweeper"),
    [(BASIC, BASIC_SWEEPER), (SUBMITIT_LOCAL, BASIC_SWEEPER), (JOBLIB, OPTUNA), (JOBLIB, None)],
)
def test_other_launchers_and_optimising_sweepers_keep_their_handling(
    tmp_path: Path, restore_environment: None, launcher: str, sweeper: str
) -> None:
    """The basic launcher, and joblib with one job at a time, run each job here (the
    trainer's own Ctrl-C handling applies); submitit's and Optuna's are left as they were."""
    config = _sweep_config(tmp_path, launcher, sweeper or BASIC_SWEEPER, n_jobs=2)
    if sweeper is None:
        config = _sweep_config(tmp_path, launcher, BASIC_SWEEPER, n_jobs=1)
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


def _start_sweep(
    sweep: Path, cwd: Path, n_jobs: int = 2, seeds: str = "0,1,2"
) -> subprocess.Popen[str]:
    """By default three jobs, two at a time, in a process group of their own (as a
    terminal's)."""
    args = ["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", *_LONG]
    args.append(f"seed={seeds}")
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


def _assert_stopped_and_saved(
    sweep: Path, process: subprocess.Popen[str], not_started: int = 1
) -> str:
    """Both running jobs saved; ``not_started`` jobs never started, and the summary line
    counts them (it used to count only the jobs that ran)."""
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 130, output
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2, (jobs, output)  # the third job never started: no folder
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "interrupted", output
        assert "the checkpoint holds the run up to update" in (job / "train.log").read_text()
        assert not list(job.glob(".*.tmp")), output  # no write cut short
    assert f"the sweep was stopped; the same command with hydra.sweep.dir={sweep}" in output
    counted = f"{2 + not_started} jobs: 0 skipped (finished before), 0 resumed from their"
    counted += " last.pt, 2 started"
    if not_started:
        counted += f", {not_started} not started (the sweep was stopped)"
    assert counted in output, output
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
    _assert_stopped_and_saved(sweep, process)


@pytest.mark.slow
@needs_joblib
def test_ctrl_c_reaching_an_idle_worker_breaks_nothing(tmp_path: Path) -> None:
    """Three workers for two jobs: the idle one gets the Ctrl-C too. It used to exit on the
    KeyboardInterrupt, and joblib then SIGKILLed the two that trained (a broken pool)."""
    sweep = tmp_path / "sweep"
    process = _start_sweep(sweep, tmp_path, n_jobs=3, seeds="0,1")
    _wait_until_both_train(sweep, process)
    os.killpg(process.pid, signal.SIGINT)
    _assert_stopped_and_saved(sweep, process, not_started=0)


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
