#!/usr/bin/env python
"""Plain vs. chunked vs. fused pooling on long sequences: seconds per update and peak memory.

One update = forward, backward and an Adam step of the ``ffattn`` (or ``mean``) model on a
freshly generated batch of the addition problem, exactly as the trainer runs it. The
implementations alternate in one process (median over ``--repeats``); each one's peak memory
is measured in a child process of its own, so they cannot mix. ``fused`` (the compiled
kernel, attnlstm/models/fused_pool.py) is measured where it builds.

    python scripts/bench_long.py                          # T0 = 1000 and 10000, batch 100
    python scripts/bench_long.py --lengths 10000 --model mean --repeats 5
    python scripts/bench_long.py --lengths 10000 --busy 1   # also beside one busy process
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import multiprocessing
import resource
import statistics
import time

import torch
from omegaconf import OmegaConf

from attnlstm.benchmark import (
    BusyNeighbours,
    add_busy_option,
    govern_threads,
    machine_line,
    print_ratio_table,
)
from attnlstm.config import LongMemoryTaskConfig
from attnlstm.models import build_model
from attnlstm.models.fused_pool import fused_kernel
from attnlstm.tasks.long_memory import LongMemoryTask


def make(model_name: str, pooling: str, min_length: int, batch: int, masked: bool, chunk_size: int):
    torch.manual_seed(0)
    attention = "feedforward" if model_name == "ffattn" else "none"
    model_cfg = OmegaConf.create(
        {
            "name": model_name,
            "hidden_size": 100,
            "num_layers": 1,
            "bidirectional": False,
            "dropout": 0.0,
            "head_size": 100,
            "output_activation": "leaky_relu",
            "pooling": pooling,
            "chunk_size": chunk_size,
        }
    )
    attention_cfg = OmegaConf.create({"method": attention, "hidden_dim": None})
    task = LongMemoryTask(
        LongMemoryTaskConfig(
            min_length=min_length, batch_size=batch, batches_per_epoch=10**6, mask_padding=masked
        ),
        seed=0,
    )
    model = build_model(model_cfg, attention_cfg, task.spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return task, model, optimizer


def update(task, model, optimizer, batch) -> float:
    started = time.perf_counter()
    loss = task.loss(task.forward(model, batch), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def peak_memory(args: tuple, queue: multiprocessing.Queue) -> None:
    """Child process: peak RSS before the first update and after two updates, in MB."""
    task, model, optimizer = make(*args)
    batch = next(task.train_batches(1))
    before = _peak_rss_mb()
    for _ in range(2):
        update(task, model, optimizer, batch)
    queue.put((before, _peak_rss_mb()))


def poolings() -> tuple[str, ...]:
    """The implementations to compare: plain, chunked, and fused where its kernel builds."""
    return ("plain", "chunked", "fused") if fused_kernel() is not None else ("plain", "chunked")


def time_updates(args: argparse.Namespace, min_length: int) -> tuple[dict[str, float], int]:
    """Median seconds per update of each pooling at ``min_length`` (alternating in this
    process), and the batch's padded length."""
    variants = {
        pooling: make(args.model, pooling, min_length, args.batch, args.masked, args.chunk_size)
        for pooling in poolings()
    }
    batch = next(variants["plain"][0].train_batches(1))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for task, model, optimizer in variants.values():  # warm-up
        update(task, model, optimizer, batch)
    for _ in range(args.repeats):
        for name, (task, model, optimizer) in variants.items():
            times[name].append(update(task, model, optimizer, batch))
    return {name: statistics.median(values) for name, values in times.items()}, batch.inputs.size(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000], help="T0s")
    parser.add_argument("--model", choices=["ffattn", "mean"], default="ffattn")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk-size", type=int, default=4096, help="steps per chunk")
    parser.add_argument(
        "--masked",
        action="store_true",
        help="mask the padding (default: the paper's unmasked padding)",
    )
    add_busy_option(parser)
    args = parser.parse_args()
    govern_threads()  # as attnlstm-train: the threads follow the free cores

    print(machine_line())
    print(
        f"model {args.model}, D = 100, batch {args.batch}, chunks of {args.chunk_size} steps, "
        f"{'masked' if args.masked else 'unmasked (paper)'} padding, "
        f"median of {args.repeats} updates\n"
    )
    names = poolings()

    def row(*groups: list[str]) -> str:
        """One markdown table row of the cells of every group."""
        return "| " + " | ".join(cell for group in groups for cell in group) + " |"

    print(
        row(
            ["T0", "padded length"],
            [f"{n} s/update" for n in names],
            [f"plain / {n}" for n in names[1:]],
            [f"{n} peak MB" for n in names],
        )
    )
    print("|---:|---:|" + "---:|" * (3 * len(names) - 1))
    context = multiprocessing.get_context("spawn")
    idle: dict[str, float] = {}
    for min_length in args.lengths:
        seconds, padded = time_updates(args, min_length)
        idle.update({f"T0 = {min_length}, {n}": 1 / v for n, v in seconds.items()})
        memory = {}
        for pooling in names:
            queue = context.Queue()
            child = context.Process(
                target=peak_memory,
                args=(
                    (args.model, pooling, min_length, args.batch, args.masked, args.chunk_size),
                    queue,
                ),
            )
            child.start()
            memory[pooling] = queue.get()
            child.join()
        baseline = min(before for before, _ in memory.values())
        print(
            row(
                [str(min_length), str(padded)],
                [f"{seconds[n]:.3f}" for n in names],
                [f"{seconds['plain'] / seconds[n]:.1f}x" for n in names[1:]],
                [f"{memory[n][1]:.0f}" for n in names],
            )
        )
    print(
        "\npeak MB = peak resident memory of a process that builds the model and runs two"
        " updates (Python, torch and the batch included; such a process idles at about"
        f" {baseline:.0f} MB)"
    )
    if args.busy > 0:
        busy: dict[str, float] = {}
        with BusyNeighbours(args.busy):
            for min_length in args.lengths:
                seconds, _ = time_updates(args, min_length)
                busy.update({f"T0 = {min_length}, {n}": 1 / v for n, v in seconds.items()})
        print_ratio_table(idle, busy, "updates/s", args.busy)
        for min_length in args.lengths:
            key = f"T0 = {min_length}, "
            for name in names[1:]:
                print(
                    f"T0 = {min_length}: {name} / plain speed-up idle"
                    f" {idle[key + name] / idle[key + 'plain']:.1f}x, beside {args.busy} busy"
                    f" {busy[key + name] / busy[key + 'plain']:.1f}x"
                )


if __name__ == "__main__":
    main()
