#!/usr/bin/env python
"""Training throughput (tokens per second) of four LSTM language models of the same size.

  (a) reference: pytorch/examples' word_language_model loop, written here as it is there
      (nn.Embedding, nn.LSTM over a (T, B) batch, nn.Dropout, nn.Linear, plain SGD by hand);
  (b) ours, ``model=lm attention=none``, stepped as the trainer steps it;
  (c) ours with attention over the last W states (all positions in one batched product), as
      the ``lm_ptb_small`` preset configures it (residual, next-word values; ``--values``);
  (d) the naive attention LM: a Python loop over time steps that calls the LSTM and the same
      attention module one step at a time, attending to a list of earlier outputs.

Every variant trains on the same PTB segments (random tokens if PTB is absent) with the same
sizes, tied embeddings, dropout, gradient clipping and SGD. They alternate in one process, the
order rotating each round, and the median tokens/s of the rounds is reported with the ratios
the targets: (b)/(a) >= 1.1 and (c)/(a) >= 1.0 (ours against the peer, idle and busy),
(c)/(b) >= 0.75 and (c)/(d) >= 20. Then the same rounds run
again beside ``--busy N`` CPU-bound neighbour processes (default 1; 0: idle only), and the
ratios and a table of each variant's tokens/s idle, busy and busy / idle are printed.

    python scripts/bench_lm.py                        # 2 x 200, batch 20, bptt 35, W = 35
    python scripts/bench_lm.py --attention dot --window 50 --rounds 5
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from attnlstm.attention import Attention, make_attention
from attnlstm.benchmark import (
    add_busy_option,
    govern_threads,
    idle_and_busy,
    machine_line,
    print_ratio_table,
)
from attnlstm.config import LanguageModelConfig, LanguageModelTaskConfig
from attnlstm.contracts import TaskSpec
from attnlstm.data.corpus import batchify
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.tasks.language_model import LanguageModelTask, TokenBatch


class ReferenceModel(nn.Module):
    """pytorch/examples word_language_model's RNNModel (LSTM, tied), time-major (T, B)."""

    def __init__(self, vocab: int, size: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers, dropout=dropout)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, words: Tensor, hidden: tuple[Tensor, Tensor]):
        emb = self.drop(self.encoder(words))
        output, hidden = self.rnn(emb, hidden)
        return self.decoder(self.drop(output)), hidden


class NaiveAttentionModel(nn.Module):
    """The per-step approach: at each t, one LSTM step, then attention of h_t over a Python
    list of the last W outputs, then tanh(W_c [c; h_t]) and the decoder. Same parameters as
    ours with attention."""

    def __init__(
        self, vocab: int, size: int, layers: int, dropout: float, attention: Attention, window: int
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers, dropout=dropout, batch_first=True)
        self.attention = attention
        self.window = window
        self.combine = nn.Linear(2 * size, size)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, words: Tensor, hidden, history: list[Tensor]):
        emb = self.drop(self.encoder(words))  # B x T x E
        outputs = []
        for t in range(words.size(1)):  # the Python loop over time
            h_t, hidden = self.rnn(emb[:, t : t + 1], hidden)  # B x 1 x H
            h_t = h_t.squeeze(1)
            if history:
                keys = torch.stack(history[-self.window :], dim=1)  # B x M x H
                context, _ = self.attention(h_t, keys)
            else:
                context = torch.zeros_like(h_t)
            outputs.append(torch.tanh(self.combine(torch.cat([context, h_t], dim=-1))))
            history.append(h_t)
        logits = self.decoder(self.drop(torch.stack(outputs, dim=1)))
        del history[: -self.window]
        return logits, hidden, history


def segments(args: argparse.Namespace) -> tuple[int, Callable[[], Iterator[TokenBatch]]]:
    """The PTB training stream in (B, T) segments, or a random one of PTB's vocabulary size."""
    try:
        task = LanguageModelTask(
            LanguageModelTaskConfig(name="lm_ptb", batch_size=args.batch, bptt=args.bptt), 0
        )
        vocab, data, source = len(task.vocab), task.train_data, "PTB"
    except ConfigError:
        vocab, source = 10_000, "random tokens"
        data = batchify(torch.randint(0, vocab, (args.batch * 20_000,)), args.batch)
    print(f"data: {source}, vocabulary {vocab}")

    def stream() -> Iterator[TokenBatch]:
        while True:
            for start in range(0, data.size(1) - 1 - args.bptt, args.bptt):
                yield TokenBatch(
                    data[:, start : start + args.bptt], data[:, start + 1 : start + 1 + args.bptt]
                )

    return vocab, stream


def build_variants(args: argparse.Namespace, vocab: int) -> dict[str, Callable[[TokenBatch], None]]:
    size, layers, drop = args.size, args.layers, args.dropout
    criterion = nn.CrossEntropyLoss()

    # (a) pytorch/examples: time-major batches, hidden state repackaged, manual SGD update
    torch.manual_seed(0)
    reference = ReferenceModel(vocab, size, layers, drop).train()
    ref_hidden = [None]

    def step_reference(batch: TokenBatch) -> None:
        words, targets = batch.inputs.t().contiguous(), batch.targets.t().contiguous()
        hidden = ref_hidden[0]
        if hidden is None:
            zeros = torch.zeros(layers, words.size(1), size)
            hidden = (zeros, zeros)
        hidden = tuple(h.detach() for h in hidden)
        reference.zero_grad()
        output, hidden = reference(words, hidden)
        loss = criterion(output.view(-1, vocab), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), args.clip)
        for p in reference.parameters():
            p.data.add_(p.grad, alpha=-args.lr)
        ref_hidden[0] = hidden
        loss.item()

    # (b), (c) ours, through the task exactly as the trainer calls it
    def ours(method: str) -> Callable[[TokenBatch], None]:
        torch.manual_seed(0)
        cfg = OmegaConf.structured(
            LanguageModelConfig(
                embedding_size=size,
                hidden_size=size,
                num_layers=layers,
                dropout_input=drop,
                dropout_hidden=drop,
                dropout_output=drop,
                attention_window=args.window,
                attention_values=args.values,
                attention_residual=True,
            )
        )
        attention_cfg = OmegaConf.create({"method": method, "hidden_dim": None})
        spec = TaskSpec(vocab, vocab, target="tokens", inputs="tokens")
        model = build_model(cfg, attention_cfg, spec).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        task = LanguageModelTask.__new__(LanguageModelTask)  # only its forward/loss are used
        task._state, task._train_nll, task._train_tokens = {}, 0.0, 0

        def step(batch: TokenBatch) -> None:
            loss = task.loss(task.forward(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            loss.item()

        return step

    # (d) the Python loop over time
    torch.manual_seed(0)
    naive = NaiveAttentionModel(
        vocab, size, layers, drop, make_attention(args.attention, size, size), args.window
    ).train()
    naive_optimizer = torch.optim.SGD(naive.parameters(), lr=args.lr)
    naive_state: list = [None, []]

    def step_naive(batch: TokenBatch) -> None:
        hidden, history = naive_state
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        history = [h.detach() for h in history]
        logits, hidden, history = naive(batch.inputs, hidden, history)
        loss = criterion(logits.reshape(-1, vocab), batch.targets.reshape(-1))
        naive_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(naive.parameters(), args.clip)
        naive_optimizer.step()
        naive_state[:] = [hidden, history]
        loss.item()

    return {
        "(a) pytorch/examples loop": step_reference,
        "(b) ours, attention=none": ours("none"),
        f"(c) ours, attention={args.attention}": ours(args.attention),
        "(d) per-step Python loop": step_naive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="embedding and hidden units")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--attention", default="general")
    parser.add_argument("--window", type=int, default=35)
    parser.add_argument(
        "--values",
        default="next_word",
        choices=["state", "next_word"],
        help="(c)'s model.attention_values (the lm_ptb_small preset's: next_word)",
    )
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--updates", type=int, default=40, help="timed updates per round")
    parser.add_argument("--naive-updates", type=int, default=4, help="the same, for (d)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--profile", action="store_true", help="first profile 10 updates of (a) and of (b)"
    )
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads(args.threads)  # as attnlstm-train: fixed, or following the free cores
    print(machine_line())

    vocab, stream = segments(args)
    variants = build_variants(args, vocab)
    batches = stream()
    tokens_per_update = args.batch * args.bptt
    names = list(variants)
    for name in names:  # warm-up: first calls allocate and pick kernels
        for _ in range(2):
            variants[name](next(batches))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in names[:2]:
            work = [next(batches) for _ in range(10)]
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for batch in work:
                    variants[name](batch)
            print(f"\n{name}: 10 updates, by self CPU time\n")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    def measure() -> dict[str, float]:
        """Median tokens/s of each variant over the rounds (the models' states carry on)."""
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                count = args.naive_updates if name.startswith("(d)") else args.updates
                work = [next(batches) for _ in range(count)]
                started = time.perf_counter()
                for batch in work:
                    variants[name](batch)
                rates[name].append(count * tokens_per_update / (time.perf_counter() - started))
        return {name: statistics.median(r) for name, r in rates.items()}

    idle, busy = idle_and_busy(measure, args.busy)

    print(
        f"{args.layers} x {args.size}, batch {args.batch}, bptt {args.bptt}, W = {args.window};"
        f" median of {args.rounds} rounds, idle"
    )
    for name in names:
        print(f"  {name:34s} {idle[name]:9.0f} tokens/s")
    a, b, c, d = names
    for label, top, bottom, digits, target in (
        ("(b)/(a)", b, a, 2, ">= 1.1"),
        ("(c)/(a)", c, a, 2, ">= 1.0"),
        ("(c)/(b)", c, b, 2, ">= 0.75"),
        ("(c)/(d)", c, d, 1, ">= 20"),
    ):
        ratio = f"{idle[top] / idle[bottom]:.{digits}f}"
        if busy is not None:
            ratio = f"idle {ratio}x, busy {busy[top] / busy[bottom]:.{digits}f}x"
        print(f"  {label} = {ratio}   target {target}")
    print_ratio_table(idle, busy, "tokens/s", args.busy)


if __name__ == "__main__":
    main()
