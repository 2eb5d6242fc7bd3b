#!/usr/bin/env python
"""Why ``MaskedLSTM`` does not pack: seconds per training update, packed vs. masked.

Both variants compute the same states for every real step (tests/test_models.py checks it);
they differ in how the LSTM kernel runs. The variants alternate in one process so that machine
noise hits both alike; the script prints absolute times and the ratio.

    python scripts/bench_lstm_packing.py                       # the addition problem, T0 = 100
    python scripts/bench_lstm_packing.py --bidirectional --repeats 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlstm.models.recurrent import MaskedLSTM


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
    args = parser.parse_args()

    torch.manual_seed(0)
    max_length = int(1.1 * args.min_length) + 1
    inputs = torch.randn(args.batch, max_length, 2)
    lengths = torch.randint(args.min_length, max_length, (args.batch,))
    variants = {
        "packed nn.LSTM": PackedLSTM(2, args.hidden, args.bidirectional),
        "MaskedLSTM": MaskedLSTM(2, args.hidden, 1, args.bidirectional, 0.0),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for model in variants.values():  # warm-up
        time_update(model, inputs, lengths)
    for _ in range(args.repeats):
        for name, model in variants.items():
            times[name].append(time_update(model, inputs, lengths))

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"batch {args.batch}, lengths [{args.min_length}, {max_length}), hidden {args.hidden},"
        f" {'bi' if args.bidirectional else 'uni'}directional; median of {args.repeats}"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"  {name:15s} {value * 1000:8.1f} ms per update (forward + backward)")
    ratio = medians["packed nn.LSTM"] / medians["MaskedLSTM"]
    print(f"  MaskedLSTM is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
