#!/usr/bin/env python
"""OpenMP wait policies and thread counts, idle and beside busy neighbours: which one the runner
uses (:mod:`attnlstm.training.threads`).

Each (policy, workload) pair runs in a fresh child process, since OpenMP reads its settings
when torch is loaded. A child times ``--updates`` training updates of one workload after a
warm-up and reports updates per second; the parent runs every child on the machine as it is,
then again beside ``--busy N`` CPU-bound neighbour processes, and prints both with the ratio.

Policies: ``spin`` (libgomp's default: a waiting thread spins ~300,000 iterations before it
sleeps), ``spin30k`` and ``spin3k`` (``GOMP_SPINCOUNT=30000``, ``3000``), ``passive``
(``OMP_WAIT_POLICY=PASSIVE``), ``1 thread`` (``OMP_NUM_THREADS=1``), and ``governed``: what
``attnlstm-train`` does, libgomp's default with the threads following the cores that other
processes leave free (:mod:`attnlstm.training.threads`, polled before each optimiser step).

Workloads: ``long`` (the chunked ffattn pooling at T0 = 10,000, batch 100: many mid-size
kernels), ``lm`` (the 2 x 200 language model, batch 20 x 35, PTB's 10,000 words, no attention:
LSTM steps and one large softmax), ``addition`` (``lstm_attn`` with dot attention on the
addition problem at T0 = 100, batch 100, 100 units: the default run's model at a longer T0).

    python scripts/bench_threading.py                       # all, idle and beside 1 busy
    python scripts/bench_threading.py --rounds 3               # the median of 3 children a cell
    python scripts/bench_threading.py --workloads long --busy 1 --updates 5
"""

import attnlstm.runtime  # (sets OpenMP up; the children set their own env)

# isort: split

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

#: policy -> the OpenMP variables of its child process (the others are removed)
POLICIES: dict[str, dict[str, str]] = {
    "spin": {},
    "spin30k": {"GOMP_SPINCOUNT": "30000"},
    "spin3k": {"GOMP_SPINCOUNT": "3000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "governed": {"ATTNLSTM_BENCH_GOVERN": "1"},
}
WORKLOADS = ("long", "lm", "addition")
_OPENMP_VARIABLES = (
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "ATTNLSTM_OPENMP",
    "ATTNLSTM_BENCH_GOVERN",
)


def _long_update() -> Callable[[], None]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_long import make, update  # the same update bench_long.py times

    task, model, optimizer = make("ffattn", "chunked", 10_000, 100, False, 4096)
    batch = next(task.train_batches(1))
    return lambda: update(task, model, optimizer, batch) and None


def _lm_update() -> Callable[[], None]:
    import torch
    from omegaconf import OmegaConf

    from attnlstm.config import LanguageModelConfig
    from attnlstm.contracts import TaskSpec
    from attnlstm.models import build_model

    torch.manual_seed(0)
    vocab = 10_000
    cfg = OmegaConf.structured(LanguageModelConfig(embedding_size=200, hidden_size=200))
    spec = TaskSpec(vocab, vocab, target="tokens", inputs="tokens")
    model = build_model(cfg, OmegaConf.create({"method": "none"}), spec).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    words = torch.randint(0, vocab, (20, 36))

    def step() -> None:
        output = model(words[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            output.logits.reshape(-1, vocab), words[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()

    return step


def _addition_update() -> Callable[[], None]:
    import torch
    from omegaconf import OmegaConf

    from attnlstm.config import LongMemoryTaskConfig
    from attnlstm.models import build_model
    from attnlstm.tasks.long_memory import LongMemoryTask

    torch.manual_seed(0)
    task = LongMemoryTask(LongMemoryTaskConfig(min_length=100, batch_size=100), seed=0)
    cfg = OmegaConf.create(
        {"name": "lstm_attn", "hidden_size": 100, "num_layers": 1, "head_size": 100}
    )
    model = build_model(cfg, OmegaConf.create({"method": "dot", "hidden_dim": None}), task.spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = next(task.train_batches(1))

    def step() -> None:
        loss = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def child(workload: str, updates: int) -> None:
    """In a child process: time ``updates`` updates of ``workload``; print updates/s as JSON."""
    import torch

    if os.environ.get("ATTNLSTM_BENCH_GOVERN") == "1":
        from attnlstm.benchmark import govern_threads

        govern_threads()
    step = {"long": _long_update, "lm": _lm_update, "addition": _addition_update}[workload]()
    warm_until = time.perf_counter() + 2.0  # a steady state: a governor has read the load
    while time.perf_counter() < warm_until:
        step()
    started = time.perf_counter()
    for _ in range(updates):
        step()
    seconds = time.perf_counter() - started
    print(json.dumps({"per_s": updates / seconds, "threads": torch.get_num_threads()}))


def run_child(policy: str, workload: str, updates: int) -> float:
    """Updates/s of ``workload`` in a fresh process under ``policy``."""
    env = {k: v for k, v in os.environ.items() if k not in _OPENMP_VARIABLES}
    env.update(POLICIES[policy])
    if "OMP_NUM_THREADS" not in POLICIES[policy]:
        env["OMP_NUM_THREADS"] = str(attnlstm.runtime.available_cores())
    result = subprocess.run(
        [sys.executable, __file__, "--child", workload, "--updates", str(updates)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["per_s"])


def main() -> None:
    from attnlstm.benchmark import add_busy_option, idle_and_busy, machine_line, print_ratio_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument(
        "--updates", type=int, default=None, help="per child (default: by workload)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="children per cell (median)")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    add_busy_option(parser)
    args = parser.parse_args()
    default_updates = {"long": 4, "lm": 20, "addition": 20}
    if args.child:
        child(args.child, args.updates or default_updates[args.child])
        return

    print(machine_line())

    def measure() -> dict[str, float]:
        rounds: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # the cells alternate: a noisy minute hits all of them
            for workload in args.workloads:
                for policy in args.policies:
                    rounds.setdefault(f"{workload}, {policy}", []).append(
                        run_child(policy, workload, args.updates or default_updates[workload])
                    )
        return {cell: statistics.median(values) for cell, values in rounds.items()}

    idle, busy = idle_and_busy(measure, args.busy)
    print_ratio_table(idle, busy, "updates/s", args.busy)
    if busy is not None:
        print("\nbusy throughput relative to the idle `spin` default of the same workload:")
        for workload in args.workloads:
            base = idle.get(f"{workload}, spin")
            if base:
                cells = ", ".join(
                    f"{policy} {busy[f'{workload}, {policy}'] / base:.2f}x"
                    for policy in args.policies
                )
                print(f"- {workload}: {cells}")


if __name__ == "__main__":
    main()
