#!/usr/bin/env python
"""Training throughput (words per second) of the tagger's character-feature paths, on UD
English EWT training batches with the ``experiment=pos_ewt`` model:

  (a) ours: the character BiLSTM reads each distinct word form of the batch once, in length
      buckets (``CHAR_LENGTH_BUCKETS``), each bucket padded to its own longest word;
  (b) every distinct form once, all in one batch padded to the longest word;
  (c) every word of the batch, in one batch padded to the longest word (the straightforward
      way, and this model's path before the change).

The three compute the same features (tests/test_tagging.py checks (a) against one padded
batch). Each variant runs whole training updates (forward, backward, Adam) of the same model
on the same batches; the variants alternate in one process, the order rotating each round,
and the median of the rounds is reported with the ratios (a)/(b) and (a)/(c). Then the same
rounds run again beside ``--busy N`` CPU-bound neighbour processes (default 1; 0: idle only),
and the ratios and a table of each variant's words/s idle, busy and busy / idle are printed.

    python scripts/bench_tagger.py                       # 40 updates per round, 3 rounds
    python scripts/bench_tagger.py --threads 1 --data-dir ~/data/attnlstm
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir

from attnlstm.benchmark import (
    add_busy_option,
    govern_threads,
    idle_and_busy,
    machine_line,
    print_ratio_table,
)
from attnlstm.config import register_configs
from attnlstm.data.tagging import TaggingBatch
from attnlstm.models import build_model
from attnlstm.models.tagger import BiLSTMTagger, CharLSTMEncoder
from attnlstm.paths import config_dir
from attnlstm.runs import family_schemas
from attnlstm.tasks import build_task


class OnePaddedBatchEncoder(CharLSTMEncoder):
    """The character BiLSTM over all its rows at once, padded to the longest: no buckets."""

    length_buckets = ()


class EveryWordTagger(BiLSTMTagger):
    """Character features for every word of the batch, repeated forms included."""

    encode_distinct_forms = False


def build_variant(cfg, spec, tagger_class: type, encoder_class: type) -> BiLSTMTagger:  # type: ignore[no-untyped-def]
    """The preset's model with another tagger / char-encoder class, the same initial weights."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.attention, spec)
    model.__class__ = tagger_class
    model.char_encoder.__class__ = encoder_class
    return model


def updater(task, model: BiLSTMTagger) -> Callable[[TaggingBatch], None]:  # type: ignore[no-untyped-def]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.9))
    model.train()

    def update(batch: TaggingBatch) -> None:
        loss = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=40, help="timed updates per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None, help="default: $ATTNLSTM_DATA, ../shared/data")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.hidden_size=300")
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads(args.threads)  # as attnlstm-train: fixed, or following the free cores
    print(machine_line())
    register_configs(family_schemas())
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose("train", overrides=["experiment=pos_ewt", *args.overrides])
    task = build_task(cfg.task, cfg.seed, args.data_dir)
    batches = list(task.train_batches(1))[: args.updates + 1]
    encoder_class = type(build_model(cfg.model, cfg.attention, task.spec).char_encoder)
    if encoder_class is not CharLSTMEncoder:
        parser.error(
            "the benchmark compares the character BiLSTM's paths (model.char_encoder=lstm)"
        )
    variants = {
        "(a) distinct forms, length buckets": updater(
            task, build_variant(cfg, task.spec, BiLSTMTagger, CharLSTMEncoder)
        ),
        "(b) distinct forms, one padded batch": updater(
            task, build_variant(cfg, task.spec, BiLSTMTagger, OnePaddedBatchEncoder)
        ),
        "(c) every word, one padded batch": updater(
            task, build_variant(cfg, task.spec, EveryWordTagger, OnePaddedBatchEncoder)
        ),
    }
    for update in variants.values():  # warm-up
        update(batches[0])
    names = list(variants)

    def measure() -> dict[str, float]:
        """Median words/s of each variant over the rounds."""
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                words, started = 0, time.perf_counter()
                for batch in batches[1:]:
                    variants[name](batch)
                    words += len(batch)
                rates[name].append(words / (time.perf_counter() - started))
        return {name: statistics.median(values) for name, values in rates.items()}

    idle, busy = idle_and_busy(measure, args.busy)
    print(
        f"EWT train, experiment=pos_ewt {' '.join(args.overrides)}; {args.updates} updates,"
        f" median of {args.rounds} rounds, idle"
    )
    for name, value in idle.items():
        print(f"  {name:40s} {value:8.0f} words/s")
    a, b, c = names
    for label, top, bottom in (("(a)/(b)", a, b), ("(a)/(c)", a, c)):
        ratio = f"{idle[top] / idle[bottom]:.2f}"
        if busy is not None:
            ratio = f"idle {ratio}x, busy {busy[top] / busy[bottom]:.2f}x"
        print(f"  {label} = {ratio}")
    print_ratio_table(idle, busy, "words/s", args.busy)


if __name__ == "__main__":
    main()
