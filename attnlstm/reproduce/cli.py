"""``attnlstm-reproduce <table>`` (``python scripts/reproduce.py <table>``): run the sweeps
behind a table of the docs, then print the table.

    attnlstm-reproduce --list                      # the tables, their sweeps and costs
    attnlstm-reproduce raffel                      # run what is left, then print the table
    attnlstm-reproduce sst2 --jobs 2 --seeds 0 1 2 # two runs at a time, one thread each
    attnlstm-reproduce sst2 --print-only           # the table from the runs already there
    attnlstm-reproduce pos_ewt --left --keep docs/results   # which runs are left, and why
    attnlstm-reproduce raffel --sweeps fixed --dry-run   # the commands, without running
    attnlstm-reproduce pos_ewt --only attention=scaled_dot,feedforward   # some methods only
    attnlstm-reproduce sst2 --keep docs/results    # keep the finished runs' records there
    attnlstm-reproduce sst2 --print-only --doc     # write the table into docs/sst2.md

Each sweep is one ``attnlstm-train -m`` run in ``<out>/<table>/<sweep>`` with Hydra's joblib
launcher (``--jobs`` parallel runs share the cores) or, with ``--jobs 1``, one run after the
other. Re-running the same command finishes what is left: finished runs are skipped, stopped
ones resume from their checkpoint (Ctrl-C, ``kill -INT <pid>`` or ``kill <pid>`` stops the
runs at a checkpoint and the command exits with 130: :mod:`.sweep_process`). ``--keep DIR``
keeps each finished run's record (``config.yaml`` and ``metrics.json``, a few KB; no
checkpoints) under ``DIR/<table>``, at the end and when the command is stopped, and, before
the sweeps start, puts the records kept there back into ``<out>`` where a run is missing, so
that a fresh checkout (or another machine) skips the runs already made and the table counts
them. ``--only KEY=V1,V2`` runs only the jobs
of the table whose ``KEY`` is one of those values (a sweep that gives ``KEY`` none of them, or
leaves it to the config, is skipped); the runs land in the same folders as with the full
table. ``--left`` lists, without running or writing anything, each job that is not finished:
training now, stopped (it resumes from its ``last.pt``, epochs done of how many), blocked (its
folder holds files but nothing to resume), unknown (a ``${...}`` resolved per job) or not
started, under each sweep's cost (:mod:`.left`). Exit status: 0; 2 for bad input (an unknown
table, sweep or ``--only`` value); 130 when interrupted; 1 when a sweep failed (the table is
printed from what finished all the same); 141, quietly, when the reader of stdout leaves early
(``--left | head``).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import OverrideParseException

from attnlstm.compare import Run, find_runs
from attnlstm.console import EXIT_INTERRUPTED, quiet_on_closed_pipe
from attnlstm.io import write_text
from attnlstm.reproduce.left import JobState, left_report, table_states
from attnlstm.reproduce.sweep_process import run_sweep
from attnlstm.reproduce.tables import (
    TABLES,
    Sweep,
    Table,
    finished_runs,
    override_values,
    parse_override,
    runs_count,
)

DEFAULT_OUT = Path("outputs/reproduce")

#: what a folder given to ``--out`` may be named: it goes into a Hydra override unquoted
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/~-]+")


def _nested(a: Path, b: Path) -> bool:
    """Whether one of two folders lies inside the other (or they are the same)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def sweep_command(
    table: Table, sweep: Sweep | str, out: Path, seeds: Sequence[int], jobs: int
) -> list[str]:
    """The ``python -m attnlstm -m ...`` command line of one sweep of ``table`` (a sweep of
    it, perhaps narrowed by :meth:`Sweep.only`, or its name)."""
    if isinstance(sweep, str):
        sweep = next(s for s in table.sweeps if s.name == sweep)
    command = [sys.executable, "-m", "attnlstm", "-m", *sweep.arguments(seeds)]
    command.append(f"hydra.sweep.dir={out / table.name / sweep.name}")
    command.append("trainer.progress_bar=false")  # parallel bars would interleave
    if jobs > 1:
        command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return command


#: what a kept record of a run holds: enough to skip the run and to print its row
RECORD_FILES = ("config.yaml", "metrics.json")


def copy_records(source: Path, target: Path) -> list[Path]:
    """Copy the record (:data:`RECORD_FILES`) of every finished run under ``source`` to the
    same place under ``target`` where ``target`` has no finished run there; each file is
    written atomically, and a run already under ``target`` is never overwritten. Returns
    the run folders copied (relative to ``source``)."""
    copied = []
    for run in finished_runs(find_runs(source, warn=lambda _: None)):
        relative = run.path.relative_to(source)
        destination = target / relative
        if (destination / "metrics.json").exists():
            continue
        destination.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (run.path / name).is_file():
                write_text((run.path / name).read_text(encoding="utf-8"), destination / name)
        copied.append(relative)
    return copied


def _keep_finished(folder: Path, keep: Path | None) -> None:
    """With ``--keep``: copy the records of the table's finished runs (``folder`` is
    ``OUT/<table>``) to ``KEEP/<table>`` (:func:`copy_records`) and say how many. Called at
    the end and also when a stop signal ends the sweep, so that the runs which finished
    before the stop are kept without a second command."""
    if keep is None or not folder.is_dir():
        return
    kept = copy_records(folder, keep / folder.name)
    if kept:
        print(f"{runs_count(len(kept), 'finished')} kept in {keep / folder.name}", flush=True)


def machines_line(runs: Sequence[Run]) -> str:
    """When and where the runs were written (``metrics.json``'s ``written``): the dates'
    range and each machine with its count of runs."""
    records = [r.metrics.get("written") for r in runs]
    known = [w for w in records if isinstance(w, dict) and "at" in w]
    machines = Counter(
        f"{w.get('cpu')} ({w.get('cores')} cores), torch {w.get('torch')}, {w.get('device')}"
        for w in known
    )
    parts = []
    if known:
        days = sorted(str(w["at"])[:10] for w in known)
        span = days[0] if days[0] == days[-1] else f"{days[0]} to {days[-1]}"
        on = "; ".join(f"{machine}: {runs_count(count)}" for machine, count in machines.items())
        parts.append(f"Written {span} on {on}.")
    if len(known) < len(records):
        missing = len(records) - len(known)
        parts.append(
            f"{runs_count(missing)} "
            + ("does not record its machine." if missing == 1 else "do not record their machine.")
        )
    return " ".join(parts)


def report(table: Table, folder: Path, states: Sequence[JobState] = ()) -> str:
    """The table from the runs under ``folder``: a line saying how many runs finished, how
    many of the table's jobs (``states``, from :func:`table_states`) are not finished yet,
    and which diverged; the table; and when and on what its runs were written."""
    runs = find_runs(folder) if folder.is_dir() else []
    done = finished_runs(runs)
    diverged = [r for r in runs if r not in done and r.metrics.get("status") == "diverged"]
    left = sum(state.state != "finished" for state in states)
    lines = [
        f"`attnlstm-reproduce {table.name}`: {runs_count(len(done), 'finished')} under {folder}"
        + (
            f" ({left} of the table's {runs_count(len(states))} not finished yet: `--left`"
            " lists them, and the same command runs them)."
            if left
            else "."
        )
    ]
    if diverged:  # finished, without test metrics: they are not re-run, and not averaged
        names = ", ".join(str(r.path.relative_to(folder)) for r in diverged)
        lines.append(
            f"{runs_count(len(diverged))} diverged before a test and "
            + ("is" if len(diverged) == 1 else "are")
            + f" left out: {names}."
        )
    lines += ["", table.render(done) if done else "No finished runs yet."]
    if done:
        lines += ["", machines_line(done)]
    return "\n".join(lines)


def doc_markers(name: str) -> tuple[str, str]:
    """The comment lines between which a doc page holds table ``name``."""
    return (
        f"<!-- attnlstm-reproduce {name}: start -->",
        f"<!-- attnlstm-reproduce {name}: end -->",
    )


def write_into_doc(doc: Path, name: str, text: str) -> None:
    """Replace what lies between ``doc``'s markers for table ``name`` with ``text``
    (atomically); ValueError when the page lacks the markers."""
    start, end = doc_markers(name)
    page = doc.read_text(encoding="utf-8")
    if page.count(start) != 1 or page.count(end) != 1 or page.index(start) > page.index(end):
        raise ValueError(
            f"{doc} has no place for table {name}: put the lines {start!r} and {end!r} where"
            " it goes"
        )
    before, rest = page.split(start, 1)
    after = rest.split(end, 1)[1]
    write_text(f"{before}{start}\n{text}\n{end}{after}", doc)


def list_tables() -> str:
    """Every table with its sweeps, their seeds and what one run costs."""
    lines = []
    for table in TABLES.values():
        lines.append(f"{table.name}: {table.title} ({table.doc})")
        for sweep in table.sweeps:
            seeds = "seeds " + ",".join(map(str, sweep.seeds)) if sweep.seeds else "--seeds"
            lines.append(f"  {sweep.name}: {' '.join(sweep.overrides)} [{seeds}; {sweep.cost}]")
    return "\n".join(lines)


def _narrow(sweeps: list[Sweep], text: str, table: str) -> str | None:
    """Narrow ``sweeps`` in place to the jobs that ``--only KEY=V1,V2`` (``text``) keeps,
    dropping a sweep with none of them; return the error to show for bad input, else None.
    ``text`` is read as Hydra reads an override (``[1,2]`` is one value, ``true`` is
    ``True``). Several ``--only`` narrow in turn: each one sees the sweeps the ones before it
    left, so a key given twice keeps the values common to both."""
    key = text.partition("=")[0].strip()
    if key == "seed":
        return "--only seed=...: choose seeds with --seeds"
    try:
        parsed = parse_override(text)
        wanted = override_values(parsed) if parsed.value() is not None else ()
    except OverrideParseException:  # Hydra's message is long; say what is expected instead
        wanted = ()
    if not wanted or "" in wanted or not key or "=" not in text:
        return f"--only {text}: write KEY=VALUE or KEY=V1,V2 (for example attention=dot,general)"
    key = parsed.key_or_group
    given = [v for sweep in sweeps for v in sweep.values(key) or ()]
    if not given:
        keys = sorted({parse_override(o).key_or_group for sweep in sweeps for o in sweep.overrides})
        return (
            f"--only {text}: no sweep of table {table} sets {key} on its command line (a"
            f" value its experiment sets is not selectable); they set {', '.join(keys)}"
        )
    unknown = [v for v in wanted if v not in given]
    if unknown:
        silent = [sweep.name for sweep in sweeps if sweep.values(key) is None]
        besides = f" (sweeps {', '.join(silent)} leave {key} to their experiment)" if silent else ""
        return (
            f"--only {text}: the sweeps of table {table} give {key} no value"
            f" {', '.join(unknown)}; they give {', '.join(dict.fromkeys(given))}{besides}"
        )
    # a wanted value is given by some sweep (checked above), so at least one sweep is left
    narrowed = [sweep.only(key, wanted) for sweep in sweeps]
    sweeps[:] = [sweep for sweep in narrowed if sweep is not None]
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnlstm-reproduce",
        description="Run the sweeps behind a table of the docs (resumable), then print it.",
    )
    parser.add_argument("table", nargs="?", help=f"one of: {', '.join(TABLES)}")
    parser.add_argument("--list", action="store_true", help="list the tables and their sweeps")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"root folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time, sharing the cores (default 2)"
    )
    parser.add_argument("--sweeps", nargs="+", help="run only these sweeps of the table")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="run only the jobs whose KEY is one of these values (for example"
        " attention=scaled_dot,feedforward); may be given for several keys",
    )
    parser.add_argument("--print-only", action="store_true", help="print the table; run nothing")
    parser.add_argument(
        "--left",
        action="store_true",
        help="list the runs not finished (training, stopped with their epochs, not started)"
        " with each sweep's cost; run and write nothing",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sweeps' commands; run nothing"
    )
    parser.add_argument(
        "--doc",
        nargs="?",
        const="",
        metavar="PAGE",
        help="also write the table into PAGE (default: the table's docs page) between its"
        " '<!-- attnlstm-reproduce TABLE: start/end -->' lines",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep finished runs' config.yaml and metrics.json under KEEP/<table>; runs kept"
        " there are skipped and counted",
    )
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if args.table is None:
        parser.error(f"name a table: {', '.join(TABLES)} (--list describes them)")
    table = TABLES.get(args.table)
    if table is None:
        parser.error(f"unknown table {args.table!r}; the tables are {', '.join(TABLES)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if not _PLAIN_PATH.fullmatch(str(args.out)):
        parser.error(
            f"--out {args.out}: use a folder name of letters, digits and . _ - / only (it"
            " becomes a Hydra override, where , = and spaces have meanings)"
        )
    if args.left and (args.print_only or args.dry_run or args.doc is not None):
        parser.error(
            "--left lists what is left and runs and writes nothing: use it without"
            " --print-only, --dry-run and --doc"
        )
    args.seeds = list(dict.fromkeys(args.seeds))  # a seed given twice is one run
    if args.keep is not None and _nested(args.keep, args.out / args.table):
        parser.error(
            f"--keep {args.keep} and --out {args.out} overlap; keep the records elsewhere"
            " (for example docs/results)"
        )
    names = [sweep.name for sweep in table.sweeps]
    chosen = args.sweeps or names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        parser.error(
            f"table {table.name} has no sweep {', '.join(unknown)}; its sweeps are"
            f" {', '.join(names)}"
        )
    by_name = {sweep.name: sweep for sweep in table.sweeps}
    sweeps = [by_name[name] for name in dict.fromkeys(chosen)]  # in the order given, once
    for text in args.only:
        error = _narrow(sweeps, text, table.name)
        if error:
            parser.error(error)
    if args.left:
        print(
            left_report(table, sweeps, table_states(table, sweeps, args.out, args.seeds, args.keep))
        )
        return 0
    if args.only and args.print_only:
        print("note: --only chooses the runs to make; --print-only prints the whole table")
    failed = []
    folder = args.out / table.name
    if args.keep is not None and (args.keep / table.name).is_dir() and not args.dry_run:
        restored = copy_records(args.keep / table.name, folder)
        if restored:
            print(f"{runs_count(len(restored), 'finished')} restored from {args.keep / table.name}")
    if not args.print_only:
        for sweep in sweeps:
            command = sweep_command(table, sweep, args.out, args.seeds, args.jobs)
            print("$ attnlstm-train " + shlex.join(command[3:]), flush=True)
            if args.dry_run:
                continue
            code = run_sweep(command)
            if code == EXIT_INTERRUPTED:
                _keep_finished(folder, args.keep)  # the runs that finished before the stop
                print(
                    f"\ninterrupted; run the same command again to finish table {table.name}",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
            if code != 0:
                failed.append(sweep.name)
    if args.dry_run:
        return 0
    _keep_finished(folder, args.keep)
    # every job of the table (not only the sweeps or values chosen), so the docs say what
    # the table still lacks
    text = report(table, folder, table_states(table, table.sweeps, args.out, args.seeds, args.keep))
    print(f"\n## {table.title}\n\n{text}")
    if args.doc is not None:
        doc = Path(args.doc or table.doc)
        try:
            write_into_doc(doc, table.name, text)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"\nwritten into {doc}")
    if failed:
        print(f"\nerror: sweep {', '.join(failed)} failed; re-run to finish", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
