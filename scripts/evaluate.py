#!/usr/bin/env python
"""Evaluate a run's checkpoint on a split with the current code, optionally with other task
settings (decoding options, say), without touching the run.

    python scripts/evaluate.py outputs/reverse/seq2seq-dot/<timestamp>            # best.pt, test
    python scripts/evaluate.py RUN --split val --set task.beam_size=10 task.length_penalty=0.6
    python scripts/evaluate.py RUN --out RUN/eval_beam10.json
    python scripts/evaluate.py TAGGER_RUN_1 TAGGER_RUN_2      # an ensemble of taggers

The model and the task are rebuilt from the config stored in the checkpoint (``--set`` may
change ``task.*`` keys only: the model must stay the one trained). Several tagger runs of
one task and vocabulary (other seeds, sizes or attention) are evaluated as an ensemble that
tags with the mean of their probabilities (:class:`attnlstm.models.ensemble.TaggerEnsemble`).
Metrics are printed as JSON; ``--out`` also writes them to a new file (never over an
existing one).
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
from attnlstm.io import checkpoint_file, load_checkpoint, write_json
from attnlstm.training.tagger_io import load_taggers


@torch.inference_mode()
def evaluate(
    path: Path,
    split: str,
    overrides: Sequence[str] = (),
    data_dir: str | None = None,
    ensemble_with: Sequence[Path] = (),
) -> dict[str, float]:
    """Metrics of the checkpoint at ``path`` (a run folder: its best.pt, else last.pt), or of
    the tagger ensemble of it and the runs ``ensemble_with``."""
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
    if ensemble_with:
        if cfg.model.name != "tagger":
            raise ConfigError(f"ensembles are for taggers; {path} is a model={cfg.model.name} run")
        model = load_taggers([path, *ensemble_with])[0]
    else:
        model = build_model(cfg.model, cfg.attention, task.spec)
        model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    model.eval()
    meter = task.new_meter(split)
    for batch in task.eval_batches(split):  # type: ignore[arg-type]
        meter.update(task.forward(model, batch), batch)
    return meter.compute()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint", type=Path, nargs="+", help="a run folder or a .pt file (taggers: several)"
    )
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--set", nargs="*", default=[], metavar="task.KEY=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics here")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        print(f"error: {args.out} exists; it is never overwritten", file=sys.stderr)
        return 2
    try:
        first, *others = args.checkpoint
        metrics = evaluate(first, args.split, args.set, args.data_dir, others)
    except (FileNotFoundError, ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {
        "checkpoint": [str(checkpoint_file(path)) for path in args.checkpoint]
        if len(args.checkpoint) > 1
        else str(checkpoint_file(args.checkpoint[0])),
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
