"""Does a bare ``nn.LSTM`` leave the mean-target plateau of Raffel & Ellis's problems?

A check, outside attnlstm's model code, of the "LSTM" rows of docs/raffel.md (where
``model=lstm`` predicts the mean target for 100 epochs at T0 = 50). It trains a plain
``torch.nn.LSTM(2, H)`` whose state at each sequence's last real step feeds the same head as
attnlstm's (Linear(H, H), leaky ReLU, Linear(H, 1)), on batches from attnlstm's own generator
(the paper-era rule; lengths from [T0, ceil(1.1 T0)) as in attnlstm's fixed-length
mode), with Adam and the MSE loss, once for each forget-gate bias asked for.

The forget-gate bias b_f is added to PyTorch's initial biases (gate order i, f, g, o; the
``b_f / 2`` goes into both ``bias_ih`` and ``bias_hh``, so the gate's total bias moves by
``b_f``). Every variant sees the same batches and starts from the same weights apart from
that bias. It prints the mean training MSE over each window of updates beside the target's
variance (1/24 for addition, 7/144 for multiplication): a loss near the variance means the
network predicts the mean.

    python scripts/lstm_plateau_check.py --min-length 50 --forget-bias 0 1 --updates 6000 --lr 0.003
    python scripts/lstm_plateau_check.py --min-length 50 --forget-bias 0 1 --updates 3000 --lr 0.001

(the two commands behind the table in docs/raffel.md, "Why the LSTM alone stays at the mean").
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from attnlstm.tasks.long_memory import generate, padded_length

TARGET_VARIANCE = {"addition": 1 / 24, "multiplication": 7 / 144}
LEAKY_SLOPE = 0.01


class BareLSTMRegressor(nn.Module):
    """(B, T, 2) inputs, (B,) lengths -> (B,) predictions from the last real step's state."""

    def __init__(self, hidden_size: int, forget_bias: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, hidden_size, batch_first=True)
        with torch.no_grad():  # the forget gate's rows are the second quarter
            for bias in (self.lstm.bias_ih_l0, self.lstm.bias_hh_l0):
                bias[hidden_size : 2 * hidden_size] += forget_bias / 2
        self.hidden = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        states, _ = self.lstm(inputs)  # B x T x H
        last = states[torch.arange(inputs.size(0)), lengths - 1]  # B x H
        hidden = nn.functional.leaky_relu(self.hidden(last), LEAKY_SLOPE)
        return self.out(hidden).squeeze(-1)


def train(args: argparse.Namespace, forget_bias: float) -> list[float]:
    """Train one variant; returns the mean training MSE of each window of updates."""
    torch.manual_seed(args.seed)
    model = BareLSTMRegressor(args.hidden_size, forget_bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = torch.Generator().manual_seed(args.seed + 1)
    padded_to = padded_length(args.min_length)
    windows, total, started = [], 0.0, time.perf_counter()
    for update in range(1, args.updates + 1):
        lengths = torch.randint(args.min_length, padded_to, (args.batch_size,), generator=batches)
        inputs, targets = generate(args.problem, lengths, padded_to, batches)
        loss = nn.functional.mse_loss(model(inputs, lengths), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        if update % args.window == 0:
            windows.append(total / args.window)
            total = 0.0
            print(
                f"forget bias {forget_bias:g}: updates {update - args.window + 1}-{update}"
                f"  MSE {windows[-1]:.5f}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=sorted(TARGET_VARIANCE), default="addition")
    parser.add_argument("--min-length", type=int, default=50, help="T0")
    parser.add_argument("--forget-bias", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--updates", type=int, default=6000)
    parser.add_argument("--window", type=int, default=1000, help="updates per printed mean")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.updates < args.window or args.window < 1:
        parser.error("--updates must be at least --window, and --window at least 1")
    torch.set_num_threads(args.threads)
    variance = TARGET_VARIANCE[args.problem]
    results = [(bias, train(args, bias)) for bias in args.forget_bias]  # repeats kept
    print(f"\n{args.problem}, T0 = {args.min_length}, target variance {variance:.5f}")
    print("| forget bias | first window MSE | last window MSE | last / variance |")
    print("|---:|---:|---:|---:|")
    for bias, windows in results:
        print(f"| {bias:g} | {windows[0]:.5f} | {windows[-1]:.5f} | {windows[-1] / variance:.3f} |")


if __name__ == "__main__":
    main()
