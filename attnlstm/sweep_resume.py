"""Sweeps that resume: re-running a multirun with the same ``hydra.sweep.dir`` finishes only
what is left (Hydra itself starts every job again).

Each job's folder tells what to do with it (:func:`job_plan`):

- ``done``: its ``metrics.json`` has a final status (completed, solved, early-stopped,
  diverged): it is skipped, its folder untouched, its summary reported as its result;
- ``resumed``: it has a ``last.pt`` but no final status (stopped, preempted, crashed): it
  continues from its checkpoint, as ``resume=<job folder>`` would;
- ``new``: it never trained: it starts.

A job that a stopped sweep (:mod:`attnlstm.sweep_stop`) never starts records
``not_started``, so the summary counts every job of the sweep.

Each job appends its plan to ``<sweep dir>/.sweep_plans.jsonl``; the :class:`SweepSummary`
callback (``hydra.callbacks`` in ``conf/train.yaml``) empties the file when the sweep starts
and prints one line when it ends: how many jobs were skipped, resumed, started and (after a
stop) not started.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnlstm.config import NOT_A_SETTING, setting_value

log = logging.getLogger(__name__)

#: metrics.json statuses of a job that has nothing left to do
FINISHED = frozenset({"completed", "solved", "early_stopped", "diverged"})
PLANS_FILE = ".sweep_plans.jsonl"
#: what a job that did no work may have left in its folder (a kill during start-up)
_START_UP_LEFTOVERS = {".hydra", "train.log", ".lock", "config.yaml"}


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A job's ``metrics.json``, or None when missing or unreadable."""
    try:
        summary = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def job_plan(folder: Path) -> str:
    """``done``, ``resumed`` or ``new`` for a sweep job's folder (see the module docstring)."""
    summary = read_summary(folder)
    if summary is not None and summary.get("status") in FINISHED:
        return "done"
    if (folder / "last.pt").is_file():
        return "resumed"
    return "new"


#: keys that do not change what a run computes, and ``task.vocab_order``, which a run resolves
#: when it starts (``auto`` is saved as the order it chose)
_NOT_THE_RUN = NOT_A_SETTING | {"task.vocab_order"}


def config_drift(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The flattened config keys (``task.second_marker``) whose values differ between a
    finished job's saved config and the one the sweep composes for it today (a preset or a
    default changed since), apart from :data:`_NOT_THE_RUN`. A key the saved config lacks
    because it was added since (:data:`attnlstm.config.KEYS_ADDED_SINCE`) differs only where
    today's value does something else than what the job did."""
    from attnlstm.loggers.base import flatten_config

    old, new = flatten_config(saved), flatten_config(current)
    keys = (set(old) | set(new)) - _NOT_THE_RUN
    return sorted(
        k
        for k in keys
        if k.split(".")[0] != "hydra" and setting_value(old, k) != setting_value(new, k)
    )


def start_up_leftovers(folder: Path) -> list[Path]:
    """The files of a job that was killed before it trained (no checkpoint), which a new
    start may remove; empty if the folder holds anything else (then it is left alone)."""
    if not folder.is_dir():
        return []
    entries = list(folder.iterdir())
    leftovers = [
        p for p in entries if p.name in _START_UP_LEFTOVERS or p.name.startswith("events.out")
    ]
    return leftovers if len(leftovers) == len(entries) else []


def record_plan(sweep_dir: Path, job: str, plan: str) -> None:
    """Append one job's plan to the sweep's plans file (one short line: an atomic append,
    also from the parallel processes of a joblib or submitit launcher)."""
    line = json.dumps({"job": job, "plan": plan}) + "\n"
    with open(sweep_dir / PLANS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)


def summary_line(sweep_dir: Path) -> str | None:
    """``sweep <dir>: N jobs: a skipped (finished before), b resumed, c started``, and
    ``, d not started (the sweep was stopped)`` when a stop left jobs unstarted."""
    try:
        lines = (sweep_dir / PLANS_FILE).read_text().splitlines()
    except OSError:
        return None
    plans = Counter(json.loads(line)["plan"] for line in lines if line.strip())
    total = sum(plans.values())
    not_started = (
        f", {plans['not_started']} not started (the sweep was stopped)"
        if plans["not_started"]
        else ""
    )
    return (
        f"sweep {sweep_dir}: {total} jobs: {plans['done']} skipped (finished before),"
        f" {plans['resumed']} resumed from their last.pt, {plans['new']} started{not_started}"
    )


class SweepSummary(Callback):
    """Hydra callback: an empty plans file when a sweep starts, one summary line at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            (sweep_dir / PLANS_FILE).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        line = summary_line(Path(str(config.hydra.sweep.dir)))
        if line is not None:
            print(line, flush=True)
            if os.environ.get("ATTNLSTM_DEBUG"):
                log.info(line)
