"""Scale-out on one machine, each comparison in one run, reported as ratios.

1. joblib: ``-m seed=0,1`` as 2 parallel jobs x 1 thread (``hydra/launcher=joblib``) against
   the same 2 jobs one after the other with all threads (Hydra's basic launcher): wall time.
2. Data parallel: ``torchrun --nproc_per_node=2`` (gloo, 1 thread each) against 1 process with
   2 threads, same global batch: training throughput (samples/s of the run's epochs).
3. bf16 autocast against float32 on the CPU: training throughput and validation loss.

Every comparison runs on the machine as it is ("idle"), then all again beside ``--busy N``
CPU-bound neighbour processes (default 1; 0: idle only); the script prints each comparison's
ratio idle and busy, and a table of every figure idle, busy and busy / idle.

    python scripts/bench_scaleout.py                 # all three, idle and beside 1 busy process
    python scripts/bench_scaleout.py --busy 0        # idle only
    python scripts/bench_scaleout.py --only bf16 --work experiment=lm_ptb_small ...

(``--neighbour``, from before ``--busy``, is kept as ``--busy 1``.) Every command runs
``python -m attnlstm`` in a temporary folder; the numbers come from the runs' ``metrics.json``
(throughput) and the wall clock (joblib: runs per minute).
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch (machine_line): as the runs set OpenMP

# isort: split

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from attnlstm.benchmark import add_busy_option, idle_and_busy, machine_line, print_ratio_table

#: one epoch of 300 updates of the default problem (addition, T0 = 100, batch 100, 100 units)
WORK = [
    "task.batches_per_epoch=300",
    "task.eval_size=500",
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "trainer.attention_images=0",
    "device=cpu",
]


def _run(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Run a command in ``cwd``; its wall time in seconds (fails loudly)."""
    started = time.perf_counter()
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def _throughput(root: Path) -> tuple[float, float]:
    """Mean training samples/s over the epochs of the one run under ``root``, and its last
    validation loss."""
    (metrics,) = list(root.rglob("metrics.json"))
    history = json.loads(metrics.read_text())["history"]
    rates = [
        v for r in history for k, v in r.items() if k.startswith("perf/") and k.endswith("_per_s")
    ]
    return statistics.mean(rates), history[-1]["val/loss"]


#: the figures (higher is better), each comparison's baseline first
JOBLIB_SEQUENTIAL = "joblib: 2 runs one after the other x 2 threads (runs/min)"
JOBLIB_PARALLEL = "joblib: 2 parallel runs x 1 thread (runs/min)"
ONE_PROCESS = "data parallel: 1 process x 2 threads (samples/s)"
TWO_PROCESSES = "data parallel: torchrun, 2 processes x 1 thread (samples/s)"
FLOAT32 = "precision: float32 (samples/s)"
BFLOAT16 = "precision: bf16 autocast (samples/s)"

#: --only's name -> (the comparison's name, its baseline, the figure compared with it)
COMPARISONS = {
    "joblib": ("joblib, parallel / one after the other", JOBLIB_SEQUENTIAL, JOBLIB_PARALLEL),
    "ddp": ("data parallel, 2 processes / 1 process", ONE_PROCESS, TWO_PROCESSES),
    "bf16": ("precision, bf16 / float32", FLOAT32, BFLOAT16),
}

Figures = tuple[dict[str, float], str]  # the figures of one comparison, and its line


def joblib(work: Sequence[str]) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "attnlstm", "-m", *work, "seed=0,1"]
        sequential = _run([*base, "hydra.sweep.dir=seq"], Path(tmp))
        parallel = _run(
            [
                *base,
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "trainer.threads=1",
                "hydra.sweep.dir=par",
            ],
            Path(tmp),
        )
    figures = {JOBLIB_SEQUENTIAL: 2 * 60 / sequential, JOBLIB_PARALLEL: 2 * 60 / parallel}
    return figures, (
        f"joblib: 2 jobs one after the other (2 threads) {sequential:.1f} s, 2 parallel jobs x 1"
        f" thread {parallel:.1f} s: {sequential / parallel:.2f}x"
    )


def data_parallel(work: Sequence[str]) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp, "one")
        one.mkdir()
        _run([sys.executable, "-m", "attnlstm", *work], one, {"OMP_NUM_THREADS": "2"})
        two = Path(tmp, "two")
        two.mkdir()
        _run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                "-m",
                "attnlstm",
                *work,
            ],
            two,
            {"OMP_NUM_THREADS": "1"},
        )
        (single, loss_one), (ddp, loss_two) = _throughput(one), _throughput(two)
    return {ONE_PROCESS: single, TWO_PROCESSES: ddp}, (
        f"data parallel: 1 process x 2 threads {single:.0f} samples/s (val loss {loss_one:.4g}),"
        f" 2 processes x 1 thread {ddp:.0f} samples/s (val loss {loss_two:.4g}):"
        f" {ddp / single:.2f}x"
    )


def bf16(work: Sequence[str]) -> Figures:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("32", "bf16"):
            folder = Path(tmp, precision)
            folder.mkdir()
            _run(
                [sys.executable, "-m", "attnlstm", *work, f"trainer.precision={precision}"], folder
            )
            results[precision] = _throughput(folder)
    (fp32, loss32), (b16, loss16) = results["32"], results["bf16"]
    return {FLOAT32: fp32, BFLOAT16: b16}, (
        f"precision: float32 {fp32:.0f}/s (val loss {loss32:.4g}), bf16 autocast {b16:.0f}/s"
        f" (val loss {loss16:.4g}): {b16 / fp32:.2f}x"
    )


BENCHES: dict[str, Callable[[Sequence[str]], Figures]] = {
    "joblib": joblib,
    "ddp": data_parallel,
    "bf16": bf16,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(BENCHES), action="append")
    add_busy_option(parser)
    parser.add_argument(
        "--neighbour",
        dest="busy",
        action="store_const",
        const=1,
        help="the same as --busy 1 (kept from before --busy)",
    )
    parser.add_argument("--work", nargs="*", default=None, help="overrides (default: quick)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work or WORK
    chosen = [name for name in BENCHES if name in (args.only or BENCHES)]
    print(machine_line(), flush=True)
    conditions = ["idle", f"beside {args.busy} busy process{'es' if args.busy != 1 else ''}"]

    def measure() -> dict[str, float]:
        print(f"{conditions.pop(0)}:", flush=True)
        figures: dict[str, float] = {}
        for name in chosen:
            values, line = BENCHES[name](work)
            print(f"  {line}", flush=True)
            figures.update(values)
        return figures

    idle, busy = idle_and_busy(measure, args.busy)
    print()
    for name in chosen:
        label, baseline, other = COMPARISONS[name]
        ratio = f"{idle[other] / idle[baseline]:.2f}x"
        if busy is not None:
            ratio = f"idle {ratio}, busy {busy[other] / busy[baseline]:.2f}x"
        print(f"{label}: {ratio}")
    print_ratio_table(idle, busy, "rate", args.busy)


if __name__ == "__main__":
    main()
