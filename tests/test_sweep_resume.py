"""Re-running a sweep with the same hydra.sweep.dir finishes only what is left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attnlstm.sweep_resume import (
    PLANS_FILE,
    job_plan,
    record_plan,
    start_up_leftovers,
    summary_line,
)
from tests.conftest import TINY, run_cli

SWEEP = ["-m", *TINY, "trainer.max_epochs=1", "trainer.attention_images=0"]
SWEEP += ["attention=dot,general,additive", "hydra.sweep.dir=sweep"]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_rerun_skips_finished_jobs_resumes_stopped_ones_and_starts_the_rest(
    tmp_path: Path,
) -> None:
    first = run_cli(SWEEP, tmp_path)
    assert "3 jobs: 0 skipped (finished before), 0 resumed from their last.pt, 3 started" in (
        first.stdout
    )
    jobs = {p.name.split(",")[0]: p for p in (tmp_path / "sweep").iterdir() if p.is_dir()}
    finished, stopped, lost = (
        jobs["attention=additive"],
        jobs["attention=dot"],
        jobs["attention=general"],
    )
    # a stop after the checkpoint (as Ctrl-C or a preemption leaves it), a job never started
    metrics = json.loads((stopped / "metrics.json").read_text())
    (stopped / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    shutil.rmtree(lost)
    before = _files(finished)

    again = run_cli(SWEEP, tmp_path)
    assert "3 jobs: 1 skipped (finished before), 1 resumed from their last.pt, 1 started" in (
        again.stdout
    )
    assert _files(finished) == before  # not a byte changed
    assert json.loads((stopped / "metrics.json").read_text())["status"] == "completed"
    assert list(stopped.glob(".hydra-resume-*"))
    assert json.loads((lost / "metrics.json").read_text())["status"] == "completed"
    assert "epoch 1/1" in (lost / "train.log").read_text()  # each job keeps its log


def test_job_plans_follow_the_folder(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert job_plan(job) == "new"
    job.mkdir()
    (job / ".hydra").mkdir()
    (job / "train.log").write_text("")
    assert job_plan(job) == "new" and len(start_up_leftovers(job)) == 2
    (job / "last.pt").write_bytes(b"x")
    assert job_plan(job) == "resumed" and start_up_leftovers(job) == []
    (job / "metrics.json").write_text(json.dumps({"status": "failed"}))
    assert job_plan(job) == "resumed"
    (job / "metrics.json").write_text(json.dumps({"status": "early_stopped"}))
    assert job_plan(job) == "done"


def test_the_summary_counts_jobs_a_stop_left_unstarted(tmp_path: Path) -> None:
    assert summary_line(tmp_path) is None  # no plans file: no sweep ran here
    for job, plan in [("seed=0", "done"), ("seed=1", "resumed"), ("seed=2", "new")]:
        record_plan(tmp_path, job, plan)
    line = summary_line(tmp_path)
    assert line is not None and line.endswith(
        "3 jobs: 1 skipped (finished before), 1 resumed from their last.pt, 1 started"
    )  # nothing about a stop when none happened
    record_plan(tmp_path, "seed=3", "not_started")
    record_plan(tmp_path, "seed=4", "not_started")
    assert len((tmp_path / PLANS_FILE).read_text().splitlines()) == 5
    assert summary_line(tmp_path) == (
        f"sweep {tmp_path}: 5 jobs: 1 skipped (finished before), 1 resumed from their"
        " last.pt, 1 started, 2 not started (the sweep was stopped)"
    )
