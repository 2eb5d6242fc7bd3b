#!/usr/bin/env python
"""The whole runner, end to end: ``attnlstm-train`` runs, idle and beside busy neighbours.

Each variant is one ``attnlstm-train`` process (the default experiment unless ``--work``
says otherwise) in a temporary folder; the script reports its wall time and the CPU time it
used (user and system, from the kernel's accounting of the finished child), first on the
machine as it is, then beside ``--busy N`` CPU-bound neighbour processes. Variants:

- ``governed``: the runner's default (``trainer.threads=null``), whose threads follow the cores
  that other processes leave free (:mod:`attnlstm.training.threads`);
- ``fixed``: ``trainer.threads=<all cores>``, every core's thread all the time (what the runner
  did before the governor).

    python scripts/bench_runner.py                           # the default run, beside 1 busy
    python scripts/bench_runner.py --busy 3 --work trainer.max_epochs=1
    python scripts/bench_runner.py --busy 0 --rounds 3 --work trainer.max_epochs=2
"""

from __future__ import annotations

import attnlstm.runtime  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnlstm.benchmark import BusyNeighbours, add_busy_option, machine_line


def run_once(work: list[str], threads: str) -> tuple[float, float, float]:
    """Wall, user and system seconds of one ``attnlstm-train`` run with ``work`` overrides."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "attnlstm",
                *work,
                f"trainer.threads={threads}",
                "trainer.progress_bar=false",
                f"hydra.run.dir={Path(folder) / 'run'}",
            ],
            cwd=folder,
            check=True,
            capture_output=True,
        )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", nargs="*", default=[], help="overrides of the run (default: the default run)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs per cell (the median)")
    add_busy_option(parser)
    args = parser.parse_args()
    cores = str(attnlstm.runtime.available_cores())
    variants = {"governed": "null", f"fixed, {cores} threads": cores}
    print(machine_line())
    print(f"run: attnlstm-train {' '.join(args.work) or '(the default experiment)'}\n")
    results: dict[tuple[str, str], tuple[float, float, float]] = {}
    for state, neighbours in (("idle", 0), (f"beside {args.busy} busy", args.busy)):
        if state != "idle" and args.busy == 0:
            continue
        with BusyNeighbours(neighbours):
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
            for _ in range(args.rounds):  # the variants alternate
                for name, threads in variants.items():
                    runs[name].append(run_once(args.work, threads))
                    print(f"{state}, {name}: {runs[name][-1][0]:.1f} s", flush=True)
            for name, measured in runs.items():  # the run of median wall time
                results[(state, name)] = sorted(measured)[len(measured) // 2]
    print("\n| machine | threads | wall s | user CPU s | system CPU s | busy / idle |")
    print("|---|---|---:|---:|---:|---:|")
    for (state, name), (wall, user, system) in results.items():
        ratio = results[("idle", name)][0] / wall  # throughput: the inverse of the wall times
        print(f"| {state} | {name} | {wall:.1f} | {user:.1f} | {system:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
