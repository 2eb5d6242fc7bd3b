#!/usr/bin/env python
"""Markdown tables of encoder-decoder runs (``model=seq2seq``): one row per run, found under
the folders given, with its style and attention method and its test metrics.

    python scripts/seq2seq_table.py outputs/multirun/<reverse sweep>      # exact match by length
    python scripts/seq2seq_table.py outputs/translation --columns bleu beam_bleu exact beam_exact

Default columns: test exact match (greedy, beam) and exact match per source-length bucket
for the synthetic tasks; BLEU (greedy, beam) and exact match for translation. A run that has
not finished its test shows its status instead. ``--eval-file NAME`` takes a run's test
metrics from RUN/NAME, written by ``scripts/evaluate.py --out``, where there is one (to
re-score checkpoints with newer decoding code or settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlstm.console import quiet_on_closed_pipe


def find_runs(roots: Sequence[Path]) -> list[Path]:
    runs = []
    for root in roots:
        runs.extend(sorted(p.parent for p in root.rglob("metrics.json")))
    return runs


def describe(run: Path, cfg: Any, eval_file: str | None = None) -> tuple[str, str, str, dict, dict]:
    """(task, style, method, test metrics, the whole metrics.json) of a run folder whose
    config is ``cfg``."""
    metrics = json.loads((run / "metrics.json").read_text())
    method = str(cfg.attention.method)
    style = "-" if method == "none" else str(cfg.model.attention_style)
    if method != "none" and cfg.model.get("input_feed", False):
        style += " + input feeding"
    test = {k.removeprefix("test/"): v for k, v in metrics.get("test", {}).items()}
    if eval_file and (run / eval_file).is_file():
        test = json.loads((run / eval_file).read_text())["metrics"]
    return str(cfg.task.name), style, method, test, metrics


def percent(value: float | None, scale: float = 100.0) -> str:
    return "" if value is None else f"{value * scale:.1f}"


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders")
    parser.add_argument("--columns", nargs="*", help="test metrics to show (default: by task)")
    parser.add_argument("--eval-file", default=None, help="RUN/<this> overrides the test metrics")
    args = parser.parse_args(argv)
    runs = [r for r in find_runs(args.roots) if (r / "config.yaml").exists()]
    rows = []
    for run in runs:
        cfg = OmegaConf.load(run / "config.yaml")
        if str(cfg.model.name) == "seq2seq":
            rows.append((run, *describe(run, cfg, args.eval_file)))
    if not rows:
        print("error: no seq2seq runs found", file=sys.stderr)
        return 2
    for task in sorted({row[1] for row in rows}):
        chosen = [row for row in rows if row[1] == task]
        columns = args.columns
        if not columns:
            if task == "translation":
                columns = ["bleu", "beam_bleu", "exact", "beam_exact"]
            else:
                buckets = sorted(
                    {k for row in chosen for k in row[4] if k.startswith("exact_len_")},
                    key=lambda k: int(k.split("_")[2]),
                )
                columns = ["exact", "beam_exact", *buckets]
        print(f"\n{task}\n")
        print("| style | attention | " + " | ".join(columns) + " | epochs | run |")
        print("|---|---|" + "---:|" * len(columns) + "---:|---|")
        for run, _, style, method, test, metrics in sorted(chosen, key=lambda r: (r[2], r[3])):
            scale = lambda c: 1.0 if "bleu" in c else 100.0  # noqa: E731
            cells = [percent(test.get(c), scale(c)) for c in columns]
            if not test:
                cells = [metrics.get("status", "")] + [""] * (len(columns) - 1)
            print(
                f"| {style} | {method} | "
                + " | ".join(cells)
                + f" | {metrics.get('epochs', '')} | {run.name} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
