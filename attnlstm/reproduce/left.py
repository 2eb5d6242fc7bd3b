"""What is left of a table (``attnlstm-reproduce <table> --left``): every job of its sweeps
and where it stands, read from the run folders without writing anything.

A job's folder is the one its sweep gives it, ``<out>/<table>/<sweep>/<job>``, with ``<job>``
named as ``conf/train.yaml`` tells Hydra to (``hydra.sweep.subdir``: the job's overrides,
sorted and joined, less ``hydra.job.config.override_dirname.exclude_keys``; shortened by
:func:`attnlstm.runfolder.job_dirname` when long). A job is

- ``finished``: its ``metrics.json`` has a final status, or ``--keep`` holds a record the
  command restores (:func:`restorable`);
- ``training``: a process holds its folder's lock now;
- ``stopped``: it has a ``last.pt``, so the table's command resumes it;
- ``blocked``: its folder holds files but nothing to resume (say a ``metrics.json`` whose
  ``last.pt`` was removed): the command refuses to train over them and its sweep stops there;
- ``unknown``: its overrides hold a ``${...}`` that Hydra resolves in each job, so its folder
  cannot be named beforehand;
- ``not started``: nothing to resume (the command starts it).

So a user reads, before a long session, exactly which runs the command would make and which
it would resume, with each sweep's cost.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlstm.paths import config_dir
from attnlstm.reproduce.tables import (
    Sweep,
    Table,
    is_finished_record,
    override_values,
    parse_override,
    runs_count,
)
from attnlstm.runfolder import job_dirname, lock_holder
from attnlstm.sweep_resume import job_plan, read_summary, start_up_leftovers

#: the states of a job, in the order the report lists them
STATES = ("training", "stopped", "blocked", "unknown", "not started", "finished")


@dataclass(frozen=True)
class DirnameRule:
    """How Hydra names a job's folder (``hydra.job.config.override_dirname``)."""

    exclude_keys: frozenset[str]
    item_sep: str = ","
    kv_sep: str = "="

    @classmethod
    def from_config(cls, path: Path | None = None) -> DirnameRule:
        """The rule of ``conf/train.yaml`` (or ``path``), read without composing it."""
        config = OmegaConf.load(path or config_dir() / "train.yaml")
        rule = OmegaConf.select(config, "hydra.job.config.override_dirname", default=None)
        if rule is None:  # Hydra's own defaults
            return cls(frozenset())
        return cls(
            frozenset(rule.get("exclude_keys", [])),
            str(rule.get("item_sep", ",")),
            str(rule.get("kv_sep", "=")),
        )

    def name(self, job: Sequence[str]) -> str:
        """The folder of a job given its overrides (``key=value`` each): Hydra's
        ``override_dirname`` (the overrides not excluded, sorted, joined by ``item_sep``,
        with ``=`` written as ``kv_sep``), then :func:`job_dirname`."""
        lines = sorted(o for o in job if parse_override(o).key_or_group not in self.exclude_keys)
        return job_dirname(self.item_sep.join(lines).replace("=", self.kv_sep))


def sweep_jobs(sweep: Sweep, seeds: Sequence[int]) -> list[list[str]]:
    """The jobs of a sweep, each its list of overrides, in the order Hydra's basic sweeper
    runs them: the product of each key's values, the first key outermost; as there, a key
    given twice keeps its first place and its last value."""
    choices: dict[str, list[str]] = {}
    for text in sweep.arguments(seeds):
        override = parse_override(text)
        key = override.get_key_element()
        choices[key] = [f"{key}={value}" for value in override_values(override)]
    return [list(job) for job in itertools.product(*choices.values())]


@dataclass(frozen=True)
class JobState:
    """Where one job of a table stands."""

    sweep: str
    folder: Path
    state: str  # one of STATES
    epochs: int | None = None  # epochs done (from metrics.json)
    max_epochs: int | None = None  # trainer.max_epochs (from config.yaml)
    pid: int | None = None  # the process training it, when one is

    def describe(self) -> str:
        """One line: the state, the job's folder name and how far it got."""
        progress = ""
        if self.epochs is not None:
            progress = f", {self.epochs} epochs done" + (
                f" of {self.max_epochs}" if self.max_epochs else ""
            )
        state = self.state
        if self.state == "training":
            state += f" now (pid {self.pid})" if self.pid and self.pid > 0 else " now"
        elif self.state == "stopped":
            progress += "; resumes from its last.pt"
        elif self.state == "blocked":
            progress = (
                "; holds files but no last.pt, so the command stops there: move the folder"
                " away (or finish it with resume=<folder>)"
            )
        elif self.state == "unknown":
            progress = " (a ${...} that Hydra resolves in each job: the folder is not known)"
        return f"{state}: {self.folder.name}{progress}"


def _max_epochs(folder: Path) -> int | None:
    try:
        value: Any = OmegaConf.select(OmegaConf.load(folder / "config.yaml"), "trainer.max_epochs")
    except Exception:  # no or unreadable config.yaml: say nothing about it
        return None
    return value if isinstance(value, int) else None


def restorable(kept: Path, folder: Path) -> bool:
    """Whether ``--keep`` would put the record ``kept`` into the job folder ``folder``, which
    the command then skips: the record is finished (:func:`is_finished_record`) and the
    folder has no ``metrics.json`` of its own (as :func:`.cli.copy_records` decides)."""
    summary = read_summary(kept)
    return (
        summary is not None
        and is_finished_record(summary)
        and not (folder / "metrics.json").exists()
    )


def job_state(sweep: str, folder: Path, kept: Path | None = None) -> JobState:
    """The state of the job whose folder is ``folder`` (``kept``: where ``--keep`` holds its
    record, if it does)."""
    if job_plan(folder) == "done":
        return JobState(sweep, folder, "finished")
    summary = read_summary(folder) or {}
    epochs = summary.get("epochs") if isinstance(summary.get("epochs"), int) else None
    pid = lock_holder(folder)
    if pid is not None:
        return JobState(sweep, folder, "training", epochs, _max_epochs(folder), pid)
    if kept is not None and restorable(kept, folder):
        return JobState(sweep, folder, "finished")
    if job_plan(folder) == "resumed":
        return JobState(sweep, folder, "stopped", epochs, _max_epochs(folder))
    if folder.is_dir() and any(folder.iterdir()) and not start_up_leftovers(folder):
        return JobState(sweep, folder, "blocked")
    return JobState(sweep, folder, "not started")


def table_states(
    table: Table,
    sweeps: Sequence[Sweep],
    out: Path,
    seeds: Sequence[int],
    keep: Path | None = None,
    rule: DirnameRule | None = None,
) -> list[JobState]:
    """Every job of ``sweeps`` (of ``table``) with its state, in the order they run."""
    rule = rule or DirnameRule.from_config()
    states = []
    for sweep in sweeps:
        for job in sweep_jobs(sweep, seeds):
            name = rule.name(job)
            folder = out / table.name / sweep.name / name
            if "${" in name:  # Hydra resolves it in the job: "${seed}" becomes "0"
                states.append(JobState(sweep.name, folder, "unknown"))
                continue
            kept = keep / table.name / sweep.name / name if keep is not None else None
            states.append(job_state(sweep.name, folder, kept))
    return states


def left_report(table: Table, sweeps: Sequence[Sweep], states: Sequence[JobState]) -> str:
    """The counts, then each sweep's unfinished jobs with the sweep's cost."""
    counts = Counter(s.state for s in states)
    parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
    lines = [f"Table {table.name}: {runs_count(len(states))}: {', '.join(parts) or 'none'}."]
    for sweep in sweeps:
        left = [s for s in states if s.sweep == sweep.name and s.state != "finished"]
        if not left:
            continue
        cost = f" ({sweep.cost})" if sweep.cost else ""
        lines += ["", f"{sweep.name}{cost}: {len(left)} left"]
        order = {state: i for i, state in enumerate(STATES)}
        lines += [f"  {s.describe()}" for s in sorted(left, key=lambda s: order[s.state])]
    if len(states) > counts["finished"]:
        lines += ["", "The same command without --left runs what is left."]
    else:
        lines += ["", "Nothing is left."]
    return "\n".join(lines)
