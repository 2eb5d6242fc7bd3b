#!/usr/bin/env python
"""Why ``MaskedLSTM`` does not pack: seconds per training update, packed vs. masked.

Both variants compute the same states for every real step (tests/test_models.py checks it);
they differ in how the LSTM kernel runs. The variants alternate in one process so that machine
noise hits both alike; the script prints absolute times and the ratio. Then the same repeats
run again beside ``--busy N`` CPU-bound neighbour processes (default 1; 0: idle only), and the
ratio and a table of each variant's updates/s idle, busy and busy / idle are printed.

    python scripts/bench_lstm_packing.py                       # the addition problem, T0 = 100
    python scripts/bench_lstm_packing.py --bidirectional --repeats 10
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlstm.benchmark import (
    add_busy_option,
    govern_threads,
    idle_and_busy,
    machine_line,
    print_ratio_table,
)
from attnlstm.models.recurrent import MaskedLSTM
from attnlstm.training.threads import poll_threads


class PackedLSTM(nn.Module):
    """The textbook way: pack, run nn.LSTM, unpack."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=inputs.size(1))
        return states


def time_update(model: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor) -> float:
    poll_threads()  # no optimiser step here: the thread governor is polled by hand
    started = time.perf_counter()
    states = model(inputs, lengths)
    states = states[0] if isinstance(states, tuple) else states
    states.sum().backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--min-length", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads()  # as attnlstm-train: the threads follow the free cores
    print(machine_line())

    torch.manual_seed(0)
    max_length = int(1.1 * args.min_length) + 1
    inputs = torch.randn(args.batch, max_length, 2)
    lengths = torch.randint(args.min_length, max_length, (args.batch,))
    variants = {
        "packed nn.LSTM": PackedLSTM(2, args.hidden, args.bidirectional),
        "MaskedLSTM": MaskedLSTM(2, args.hidden, 1, args.bidirectional, 0.0),
    }
    for model in variants.values():  # warm-up
        time_update(model, inputs, lengths)

    def measure() -> dict[str, float]:
        """Updates per second of each variant: 1 / the median seconds per update."""
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, model in variants.items():
                times[name].append(time_update(model, inputs, lengths))
        return {name: 1 / statistics.median(values) for name, values in times.items()}

    idle, busy = idle_and_busy(measure, args.busy)
    print(
        f"batch {args.batch}, lengths [{args.min_length}, {max_length}), hidden {args.hidden},"
        f" {'bi' if args.bidirectional else 'uni'}directional; median of {args.repeats}, idle"
    )
    for name, rate in idle.items():
        print(f"  {name:15s} {1000 / rate:8.1f} ms per update (forward + backward)")
    ratio = f"{idle['MaskedLSTM'] / idle['packed nn.LSTM']:.1f}x"
    if busy is None:
        print(f"  MaskedLSTM is {ratio} faster")
    else:
        loaded = busy["MaskedLSTM"] / busy["packed nn.LSTM"]
        print(f"  MaskedLSTM is faster: idle {ratio}, busy {loaded:.1f}x")
    print_ratio_table(idle, busy, "updates/s", args.busy)


if __name__ == "__main__":
    main()
