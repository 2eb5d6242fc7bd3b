#!/usr/bin/env python
"""The floor of one long-sequence pooling update on this machine, and how far the chunked
pooling is from it.

One training update of Raffel & Ellis's ``ffattn`` network on the addition problem (T0 steps,
zero-padded to ceil(1.1 T0), batch B, D units, F = 2 input features) must, for every (b, t, d)
element, at least (``attnlstm/models/long_pooling.py`` has the formulas):

    forward    p = W x_t + b (2F + 1 flops), h = LReLU(p) (1), e_t: w . h_t (2),
               c += alpha_t h_t (2)                                            10 flops
    backward   p, h again (2F + 2), g . h_t (2), dL/dw += dL/da_t h_t (2),
               s = LReLU'(p) (1), sum_t k_t x_tf s_t and sum_t k_t s_t for k in
               {alpha, dL/da} (4 (F + 1))                                     23 flops

and read the input x (B T F floats) in each pass; everything else (scores, weights, the
head) is O(B T) or smaller. With the per-chunk buffers in cache, nothing of size B T D needs
to travel to memory. So the floor is arithmetic:

    floor = max(flops / measured peak FLOP rate, bytes / measured memory bandwidth)

where the peak FLOP rate is that of an in-cache single-precision matrix product (the best this
CPU does with torch's threads) and the bandwidth that of a large copy. A second, looser floor
counts what an implementation built from unfused torch kernels cannot avoid: 10 passes over
the B T D elements (4 forward, 6 backward, as listed), each at the measured rate of an
in-cache elementwise kernel. The script prints both, then the chunked and plain updates'
measured times (median of ``--repeats``) and their ratios to the floors.

    python scripts/pooling_floor.py                      # T0 = 10000, B = 100, D = 100
    python scripts/pooling_floor.py --busy 1             # also beside one busy process
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from attnlstm.benchmark import BusyNeighbours, add_busy_option, govern_threads, machine_line
from attnlstm.models.fused_pool import fused_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long import make, update  # the update bench_long.py times

FEATURES = 2
FORWARD_FLOPS = (2 * FEATURES + 1) + 1 + 2 + 2
BACKWARD_FLOPS = (2 * FEATURES + 2) + 2 + 2 + 1 + 4 * (FEATURES + 1)
TORCH_PASSES = 4 + 6


def _best_seconds(work: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``work()`` after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def peak_flops(size: int = 256, products: int = 64) -> float:
    """FLOP/s of ``products`` in-cache ``size`` x ``size`` single-precision matrix products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)

    def work() -> None:
        for _ in range(products):
            torch.mm(a, b, out=out)

    return 2 * size**3 * products / _best_seconds(work, 5)


def elementwise_rate(rows: int = 4096, units: int = 100, passes: int = 50) -> float:
    """Elements/s of an in-cache fused multiply-add kernel (``addcmul``) on a chunk-sized
    (rows, units) buffer: what one unfused pass over the chunk costs."""
    a, b, c = (torch.randn(rows, units) for _ in range(3))
    out = torch.empty(rows, units)

    def work() -> None:
        for _ in range(passes):
            torch.addcmul(a, b, c, out=out)

    return rows * units * passes / _best_seconds(work, 5)


def bandwidth(megabytes: int = 512) -> float:
    """Bytes/s of a large copy (read + write), far beyond the caches."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / _best_seconds(lambda: target.copy_(source), 3)


def update_seconds(pooling: str, min_length: int, batch: int, repeats: int) -> float:
    """Median seconds of one ``ffattn`` update with ``pooling`` (bench_long.py's update)."""
    task, model, optimizer = make("ffattn", pooling, min_length, batch, False, 4096)
    data = next(task.train_batches(1))
    update(task, model, optimizer, data)  # warm-up
    return statistics.median(update(task, model, optimizer, data) for _ in range(repeats))


def print_profile(min_length: int, batch: int) -> None:
    """torch.profiler's operators of three chunked updates, by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    task, model, optimizer = make("ffattn", "chunked", min_length, batch, False, 4096)
    data = next(task.train_batches(1))
    update(task, model, optimizer, data)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            update(task, model, optimizer, data)
    print("\nthree chunked updates, by self CPU time:\n")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=10_000, help="T0")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per variant")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain update")
    parser.add_argument("--profile", action="store_true", help="also profile chunked updates")
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads()  # as attnlstm-train: the threads follow the free cores

    print(machine_line())
    units = 100
    steps = -(-11 * args.length // 10)  # the padded length, ceil(1.1 T0)
    elements = args.batch * steps * units
    flops = elements * (FORWARD_FLOPS + BACKWARD_FLOPS)
    bytes_moved = 2 * args.batch * steps * FEATURES * 4 + 6 * args.batch * steps * 4
    rates = {"peak": peak_flops(), "elementwise": elementwise_rate(), "bandwidth": bandwidth()}
    arithmetic_floor = flops / rates["peak"]
    memory_floor = bytes_moved / rates["bandwidth"]
    floor = max(arithmetic_floor, memory_floor)
    kernel_floor = TORCH_PASSES * elements / rates["elementwise"]

    print(
        f"\nT0 = {args.length} (padded {steps}), B = {args.batch}, D = {units}, F = {FEATURES}:"
        f" {elements / 1e6:.0f} M (b, t, d) elements"
    )
    print(
        f"work: {FORWARD_FLOPS} + {BACKWARD_FLOPS} flops per element = {flops / 1e9:.2f} GFLOP;"
        f" unavoidable memory traffic {bytes_moved / 1e6:.0f} MB"
    )
    print(
        f"this machine: {rates['peak'] / 1e9:.1f} GFLOP/s (in-cache sgemm),"
        f" {rates['elementwise'] / 1e9:.2f} G elements/s (in-cache addcmul),"
        f" {rates['bandwidth'] / 1e9:.1f} GB/s (copy)"
    )
    print(
        f"floor: {floor * 1e3:.1f} ms (arithmetic {arithmetic_floor * 1e3:.1f} ms,"
        f" memory {memory_floor * 1e3:.1f} ms); unfused-kernel floor"
        f" ({TORCH_PASSES} passes): {kernel_floor * 1e3:.1f} ms"
    )

    def measure() -> dict[str, float]:
        seconds = {"chunked": update_seconds("chunked", args.length, args.batch, args.repeats)}
        if fused_kernel() is not None:  # the compiled kernel, where it builds
            seconds["fused"] = update_seconds("fused", args.length, args.batch, args.repeats)
        if not args.no_plain:
            seconds["plain"] = update_seconds("plain", args.length, args.batch, args.repeats)
        return seconds

    if args.profile:
        print_profile(args.length, args.batch)
    results = {"idle": measure()}
    if args.busy > 0:
        with BusyNeighbours(args.busy):
            results[f"beside {args.busy} busy"] = measure()

    print(
        "\n| machine | pooling | s/update | / floor | / unfused-kernel floor | plain / this |"
        "\n|---|---|---:|---:|---:|---:|"
    )
    for state, seconds in results.items():
        for pooling, value in seconds.items():
            speedup = (
                f"{seconds['plain'] / value:.1f}x"
                if "plain" in seconds and pooling != "plain"
                else ""
            )
            print(
                f"| {state} | {pooling} | {value:.3f} | {value / floor:.1f}x |"
                f" {value / kernel_floor:.1f}x | {speedup} |"
            )


if __name__ == "__main__":
    main()
