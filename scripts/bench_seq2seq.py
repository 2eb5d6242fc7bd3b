#!/usr/bin/env python
"""Training throughput (pairs per second) of the encoder-decoder's decoding paths, on the
``reverse`` problem.

  (a) Luong attention without input feeding, teacher-forced: ours runs the decoder over the
      whole target in one recurrent call and attends for all steps in one batched product;
  (b) the same model and weights through the step loop (one decoder step at a time, each step
      batched), the path that input feeding, Bahdanau attention and decoding need;
  (c) the same model with the attention scores computed in a Python loop over the batch and
      the source positions at every step, as the seq2seq tutorial's reference code did;
  (d) Bahdanau attention (additive scores), our step loop.

The variants alternate in one process (the order rotating each round) and the median of the
rounds is reported with the ratios (a)/(b) and (a)/(c); then the same rounds run again beside
``--busy N`` CPU-bound neighbour processes (default 1; 0: idle only), and the ratios and a table
of each variant's pairs/s idle, busy and busy / idle are printed.

    python scripts/bench_seq2seq.py                       # reverse, lengths 5-50, B = 64, H = 128
    python scripts/bench_seq2seq.py --method dot --rounds 5 --threads 1
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnlstm.attention import make_attention
from attnlstm.benchmark import (
    add_busy_option,
    govern_threads,
    idle_and_busy,
    machine_line,
    print_ratio_table,
)
from attnlstm.config import SyntheticSeq2SeqTaskConfig
from attnlstm.data.seq2seq import IGNORE, Seq2SeqBatch
from attnlstm.models.seq2seq import Memory, Seq2Seq
from attnlstm.tasks.seq2seq import Seq2SeqTask


class SteppedSeq2Seq(Seq2Seq):
    """Ours, forced through the step loop."""

    vectorised = False  # type: ignore[assignment]


class PerElementSeq2Seq(SteppedSeq2Seq):
    """The step loop with the tutorial reference's scoring: a Python loop over the batch and
    the source positions, one score at a time."""

    def _attend(self, query: Tensor | None, memory: Memory) -> tuple[Tensor, Tensor]:
        assert query is not None and self.attention is not None and query.dim() == 2
        states, mask = memory.states, memory.mask
        batch, steps = states.shape[:2]
        energies = states.new_zeros(batch, steps)
        for b in range(batch):
            for i in range(steps):
                one_score = self.attention.score(query[b, None, None], states[b, None, i, None])
                energies[b, i] = one_score[0, 0, 0]
        weights = torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights


def build(cls: type[Seq2Seq], args: argparse.Namespace, vocab: int, method: str, style: str):
    torch.manual_seed(0)
    attention = make_attention(method, args.hidden, args.hidden)
    return cls(vocab, vocab, args.embedding, args.hidden, 1, "lstm", True, 0.0, attention, style)


def updater(model: Seq2Seq) -> Callable[[Seq2SeqBatch], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def update(batch: Seq2SeqBatch) -> None:
        logits = model(batch.source, batch.source_lengths, batch.target_input).logits
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            batch.target_output.reshape(-1),
            ignore_index=IGNORE,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="general", help="Luong score for (a)-(c)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embedding", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--min-length", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--updates", type=int, default=10, help="timed updates per round")
    parser.add_argument("--slow-updates", type=int, default=1, help="the same, for (c)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads(args.threads)  # as attnlstm-train: fixed, or following the free cores
    print(machine_line())

    cfg = SyntheticSeq2SeqTaskConfig(
        name="reverse",
        min_length=args.min_length,
        max_length=args.max_length,
        batch_size=args.batch,
        batches_per_epoch=args.updates + 2,
        eval_size=1,
    )
    task = Seq2SeqTask(cfg, seed=0)
    batches = list(task.train_batches(1))
    vocab = task.spec.input_size
    variants = {
        "(a) Luong, one call for all steps": (
            updater(build(Seq2Seq, args, vocab, args.method, "luong")),
            args.updates,
        ),
        "(b) Luong, step loop": (
            updater(build(SteppedSeq2Seq, args, vocab, args.method, "luong")),
            args.updates,
        ),
        "(c) Luong, loop over batch and source": (
            updater(build(PerElementSeq2Seq, args, vocab, args.method, "luong")),
            args.slow_updates,
        ),
        "(d) Bahdanau additive, step loop": (
            updater(build(Seq2Seq, args, vocab, "additive", "bahdanau")),
            args.updates,
        ),
    }
    for update, _ in variants.values():  # warm-up
        update(batches[0])
    names = list(variants)

    def measure() -> dict[str, float]:
        """Median pairs/s of each variant over the rounds."""
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                update, count = variants[name]
                pairs, started = 0, time.perf_counter()
                for batch in batches[1 : count + 1]:
                    update(batch)
                    pairs += len(batch)
                rates[name].append(pairs / (time.perf_counter() - started))
        return {name: statistics.median(values) for name, values in rates.items()}

    idle, busy = idle_and_busy(measure, args.busy)
    print(
        f"reverse {args.min_length}-{args.max_length}, batch {args.batch}, hidden {args.hidden},"
        f" attention {args.method}; median of {args.rounds} rounds, idle"
    )
    for name, value in idle.items():
        print(f"  {name:40s} {value:8.1f} pairs/s")
    a, b, c = names[:3]
    for label, top, bottom, digits in (("(a)/(b)", a, b, 2), ("(a)/(c)", a, c, 0)):
        ratio = f"{idle[top] / idle[bottom]:.{digits}f}"
        if busy is not None:
            ratio = f"idle {ratio}x, busy {busy[top] / busy[bottom]:.{digits}f}x"
        print(f"  {label} = {ratio}")
    print_ratio_table(idle, busy, "pairs/s", args.busy)


if __name__ == "__main__":
    main()
