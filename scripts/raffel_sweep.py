#!/usr/bin/env python
"""Run cells of Raffel & Ellis's Table 1 with their learning-rate search and its pruning.

For every cell (problem x model x T0) the learning rates are tried in the authors' order,
0.01, 0.003, 0.001, 0.0003, as their ``fixed_length_experiments.py`` does, and, as there, a
later rate is stopped once it has trained as many epochs as the best rate so far needed (it
can only tie); once a rate solves a cell in one epoch the rest are skipped. The plain Hydra
multirun (``conf/experiment/raffel_fixed.yaml``) runs every rate to the end instead; both
leave run directories that ``scripts/raffel_table.py`` reads.

    python scripts/raffel_sweep.py --out runs/table --lengths 50 100 500 1000
    python scripts/raffel_sweep.py --out runs/table --problems addition --models ffattn \\
        --lengths 10000 --rates 0.001 --max-epochs 5 --jobs 1
    python scripts/raffel_sweep.py --out runs/lstm --models lstm lstm_attn --lengths 50 100 \\
        --experiment quick_lstm ...   # any model; extra overrides after --
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAPER_RATES = [0.01, 0.003, 0.001, 0.0003]
#: metrics.json statuses of a run that has not finished: re-running the sweep resumes it
UNFINISHED = {"running", "interrupted", "failed"}


def run_cell(problem: str, model: str, length: int, args: argparse.Namespace) -> str:
    """Every rate of one cell, pruned as the authors did; returns a one-line summary."""
    best: int | None = None
    summary = []
    for rate in args.rates:
        if best == 1:
            summary.append(f"lr={rate}: skipped")
            continue
        run_dir = args.out / f"{problem}-{model}-T{length}" / f"lr{rate}"
        metrics_path = run_dir / "metrics.json"
        status = json.loads(metrics_path.read_text())["status"] if metrics_path.exists() else None
        if status in UNFINISHED and not (run_dir / "last.pt").exists():
            summary.append(f"lr={rate}: {status} before its first checkpoint ({run_dir})")
            continue
        if status is None or status in UNFINISHED:
            max_epochs = args.max_epochs if best is None else min(args.max_epochs, best)
            # a run that crashed, was interrupted or is marked running continues where it
            # stopped; a new one starts in its own folder
            where = (
                [f"resume={run_dir}"]
                if status is not None
                else [
                    f"experiment={args.experiment}",
                    f"task={problem}",
                    f"model={model}",
                    f"task.min_length={length}",
                    f"optim.lr={rate}",
                    f"hydra.run.dir={run_dir}",
                    *args.overrides,
                ]
            )
            command = [
                sys.executable,
                "-m",
                "attnlstm",
                *where,
                f"trainer.max_epochs={max_epochs}",
                "trainer.progress_bar=false",
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            with open(args.out / "sweep.log", "a") as log:
                subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
        if not metrics_path.exists():
            summary.append(f"lr={rate}: failed (see sweep.log)")
            continue
        metrics = json.loads(metrics_path.read_text())
        if metrics["solved"]:
            best = metrics["solved_epoch"] if best is None else min(best, metrics["solved_epoch"])
        summary.append(f"lr={rate}: epochs {metrics['epochs']}, solved {metrics['solved']}")
    return f"{problem} {model} T0={length}: " + "; ".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--problems", nargs="+", default=["addition", "multiplication"])
    parser.add_argument("--models", nargs="+", default=["ffattn", "mean"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 500, 1000])
    parser.add_argument("--rates", type=float, nargs="+", default=PAPER_RATES)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--experiment", default="raffel_fixed")
    parser.add_argument("--jobs", type=int, default=1, help="cells run side by side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("overrides", nargs="*", help="extra overrides (after --)")
    args = parser.parse_args()
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)

    cells = list(itertools.product(args.problems, args.models, args.lengths))
    printing = threading.Lock()

    def work(cell: tuple[str, str, int]) -> None:
        line = run_cell(*cell, args)
        with printing:
            print(line, flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(work, cells))


if __name__ == "__main__":
    main()
