#!/usr/bin/env python
"""The SST-2 table of docs/sst2.md: test accuracy and macro-F1 of the runs under a folder,
one row per model and attention method (mean and standard deviation over seeds), beside the
published anchors on the same test split.

    python scripts/sst2_table.py /work/runs/sst2b
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

#: published test accuracies on this split (SST-2 sentences), for the table's last rows
ANCHORS = [
    ("Kim (2014) CNN, random embeddings", 83.7),
    ("Tai et al. (2015) LSTM, GloVe", 84.9),
    ("Tai et al. (2015) BiLSTM, GloVe", 87.5),
]


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def table(root: Path) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for metrics_path in sorted(root.rglob("metrics.json")):
        metrics = json.loads(metrics_path.read_text())
        config_path = metrics_path.parent / "config.yaml"
        if not metrics.get("test") or not config_path.is_file():
            continue  # unfinished, or not a run folder
        cfg = OmegaConf.load(config_path)
        if str(cfg.task.name) != "sst2":
            continue
        groups[(str(cfg.model.name), str(cfg.attention.method))].append(
            {**metrics, "seed": int(cfg.seed)}
        )
    lines = [
        "| model | attention | seeds | test acc | test macro-F1 | best val acc | minutes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    order = sorted(
        groups, key=lambda k: -statistics.fmean(r["test"]["test/acc"] for r in groups[k])
    )
    for model, attention in order:
        runs = groups[(model, attention)]
        lines.append(
            f"| {model} | {attention} | {', '.join(str(r['seed']) for r in runs)}"
            f" | {_spread([r['test']['test/acc'] for r in runs])}"
            f" | {_spread([r['test']['test/macro_f1'] for r in runs])}"
            f" | {_spread([r['best']['val/acc'] for r in runs])}"
            f" | {statistics.fmean(r['wall_time_s'] for r in runs) / 60:.1f} |"
        )
    for name, accuracy in ANCHORS:
        lines.append(f"| {name} | | | {accuracy:.1f} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a folder holding SST-2 run folders")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    print(table(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
