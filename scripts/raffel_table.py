#!/usr/bin/env python
"""Our Raffel & Ellis Table 1 beside theirs, from the run directories of a sweep.

Reads every run (a folder with ``metrics.json`` and ``config.yaml``) under the given folders,
groups them into cells (problem, model, T0), keeps the best learning rate of each cell (fewest
epochs to 100% test accuracy; if none solved it, the best test accuracy) and prints markdown:
each cell as ``ours (paper)``, an epoch count when solved, else the test accuracy reached and
after how many epochs. Variable-length runs get a table of their own. A run stopped by hand
counts with its best checkpoint's validation accuracy (the validation set is the fixed test
set in the paper's protocol); runs still training are left out.

    python scripts/raffel_table.py outputs/multirun/<timestamp>
    python scripts/raffel_table.py runs/table runs/lstm --details
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlstm.console import quiet_on_closed_pipe
from attnlstm.loggers.base import flatten_config
from attnlstm.reproduce.tables import (  # Table 1
    PAPER_VARIABLE,
    model_key,
    model_words,
    table1_grid,
)


def load_runs(roots: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for root in roots:
        for metrics_path in sorted(root.rglob("metrics.json")):
            config_path = metrics_path.parent / "config.yaml"
            if not config_path.is_file():
                continue
            config = OmegaConf.to_container(OmegaConf.load(config_path))
            metrics = json.loads(metrics_path.read_text())
            if metrics["status"] in ("running", "failed") or not metrics["history"]:
                continue  # still training, crashed (re-run the sweep), or no epoch finished
            if not metrics["test"]:  # stopped by hand: its best checkpoint on the fixed set
                best = metrics.get("best") or metrics["final"]
                metrics["test"] = {"test/accuracy": best["val/accuracy"]}
            runs.append({"path": metrics_path.parent, "config": config, "metrics": metrics})
    return runs


def cell_key(run: dict[str, Any]) -> tuple[str, str, int, bool]:
    task = run["config"]["task"]
    model = model_key(flatten_config(run["config"]))  # a forget-bias LSTM is a row of its own
    return (task["name"], model, task["min_length"], bool(task["variable_length"]))


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fewest epochs to solve; else highest test accuracy (then more epochs trained)."""
    solved = [r for r in runs if r["metrics"]["solved"]]
    if solved:
        return min(solved, key=lambda r: r["metrics"]["solved_epoch"])
    return max(
        runs, key=lambda r: (r["metrics"]["test"].get("test/accuracy", 0.0), r["metrics"]["epochs"])
    )


def describe(run: dict[str, Any]) -> str:
    metrics = run["metrics"]
    if metrics["solved"]:
        return str(metrics["solved_epoch"])
    accuracy = 100 * metrics["test"].get("test/accuracy", float("nan"))
    return f"{accuracy:.1f}% after {metrics['epochs']}"


def fixed_table(cells: dict[tuple, dict[str, Any]]) -> str:
    return "\n".join(
        table1_grid({key[:3]: describe(run) for key, run in cells.items() if not key[3]})
    )


def variable_table(cells: dict[tuple, dict[str, Any]]) -> str:
    lines = [
        "| problem | model | ours: test accuracy | epochs | paper (after 100 epochs) |",
        "|---|---|---|---|---|",
    ]
    for key, run in sorted(cells.items()):
        if not key[3]:
            continue
        accuracy = 100 * run["metrics"]["test"].get("test/accuracy", float("nan"))
        paper = PAPER_VARIABLE.get((key[0], key[1]), "")
        lines.append(
            f"| {key[0]} | {model_words(key[1])} | {accuracy:.1f}% |"
            f" {run['metrics']['epochs']} | {paper} |"
        )
    return "\n".join(lines)


def details(groups: dict[tuple, list[dict[str, Any]]], cells: dict) -> str:
    lines = [
        "| cell | learning rates tried: epochs, test accuracy | best | s/epoch |",
        "|---|---|---|---|",
    ]
    for key in sorted(groups):
        tried = sorted(groups[key], key=lambda r: -r["config"]["optim"]["lr"])
        parts = [
            f"{r['config']['optim']['lr']}: {r['metrics']['epochs']},"
            f" {100 * r['metrics']['test'].get('test/accuracy', 0):.1f}%"
            for r in tried
        ]
        best = cells[key]
        epochs = max(best["metrics"]["epochs"], 1)
        per_epoch = best["metrics"]["wall_time_s"] / epochs
        name = f"{key[0]} {model_words(key[1])} T0={key[2]}"
        if key[3]:  # min_length is the shortest of the lengths drawn, not the T0 of a cell
            longest = best["config"]["task"].get("max_length")
            name = f"{key[0]} {model_words(key[1])}, variable T0 from {key[2]}"
            name += f" to {longest}" if longest is not None else ""
        lines.append(
            f"| {name} | {'; '.join(parts)} | lr {best['config']['optim']['lr']} |"
            f" {per_epoch:.1f} |"
        )
    return "\n".join(lines)


@quiet_on_closed_pipe
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", type=Path, nargs="+", help="folders holding run directories")
    parser.add_argument(
        "--details", action="store_true", help="also list every learning rate tried per cell"
    )
    args = parser.parse_args()
    runs = load_runs(args.roots)
    if not runs:
        parser.error("no runs (folders with metrics.json and config.yaml) found")
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[cell_key(run)].append(run)
    cells = {key: best_run(group) for key, group in groups.items()}
    print(
        "Epochs to 100% test accuracy, ours (paper); a percentage is the test accuracy after"
        " the epochs given.\n"
    )
    print(fixed_table(cells))
    if any(key[3] for key in cells):
        print("\nVariable length (50 to 10000):\n")
        print(variable_table(cells))
    if args.details:
        print("\n" + details(groups, cells))


if __name__ == "__main__":
    sys.exit(main())  # 141 when stdout closed early (quiet_on_closed_pipe)
