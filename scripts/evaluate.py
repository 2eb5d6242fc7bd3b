#!/usr/bin/env python
"""Evaluate a run's checkpoint on a split with the current code, optionally with other task
settings (decoding options, say), without touching the run.

    python scripts/evaluate.py outputs/reverse/seq2seq-dot/<timestamp>            # best.pt, test
    python scripts/evaluate.py RUN --split val --set task.beam_size=10 task.length_penalty=0.6
    python scripts/evaluate.py RUN --out RUN/eval_beam10.json

The model and the task are rebuilt from the config stored in the checkpoint (``--set`` may
change ``task.*`` keys only: the model must stay the one trained). Metrics are printed as
JSON; ``--out`` also writes them to a new file (never over an existing one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.tasks import build_task
from attnlstm.training.io import checkpoint_file, load_checkpoint, write_json


@torch.inference_mode()
def evaluate(
    path: Path, split: str, overrides: Sequence[str] = (), data_dir: str | None = None
) -> dict[str, float]:
    """Metrics of the checkpoint at ``path`` (a run folder: its best.pt, else last.pt)."""
    checkpoint = load_checkpoint(checkpoint_file(path))
    cfg = OmegaConf.create(checkpoint["config"])
    for override in overrides:
        key, equals, _ = override.partition("=")
        if not key.startswith("task.") or not equals:
            raise ConfigError(f"--set takes task.<key>=<value>, got {override!r}")
        if OmegaConf.select(cfg, key, default=None) is None and key[5:] not in cfg.task:
            raise ConfigError(f"--set {override}: the task has no key {key[5:]!r}")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    task = build_task(cfg.task, cfg.seed, data_dir or cfg.get("data_dir"))
    model = build_model(cfg.model, cfg.attention, task.spec)
    model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    model.eval()
    meter = task.new_meter(split)
    for batch in task.eval_batches(split):  # type: ignore[arg-type]
        meter.update(task.forward(model, batch), batch)
    return meter.compute()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--set", nargs="*", default=[], metavar="task.KEY=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics here")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        print(f"error: {args.out} exists; it is never overwritten", file=sys.stderr)
        return 2
    try:
        metrics = evaluate(args.checkpoint, args.split, args.set, args.data_dir)
    except (FileNotFoundError, ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {
        "checkpoint": str(checkpoint_file(args.checkpoint)),
        "split": args.split,
        "overrides": list(args.set),
        "metrics": metrics,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
