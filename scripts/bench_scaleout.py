"""Scale-out on one machine, each comparison in one run, reported as ratios.

1. joblib: ``-m seed=0,1`` as 2 parallel jobs x 1 thread (``hydra/launcher=joblib``) against
   the same 2 jobs one after the other with all threads (Hydra's basic launcher): wall time.
2. Data parallel: ``torchrun --nproc_per_node=2`` (gloo, 1 thread each) against 1 process with
   2 threads, same global batch: training throughput (samples/s of the run's epochs).
3. bf16 autocast against float32 on the CPU: training throughput and validation loss.

    python scripts/bench_scaleout.py                 # all three, on the default addition problem
    python scripts/bench_scaleout.py --neighbour     # the same beside one busy process
    python scripts/bench_scaleout.py --only bf16 --work experiment=lm_ptb_small ...

Every command runs ``python -m attnlstm`` in a temporary folder; the numbers come from the
runs' ``metrics.json`` (throughput) and the wall clock (joblib).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

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


def joblib(work: Sequence[str]) -> str:
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
    return (
        f"joblib: 2 jobs one after the other (2 threads) {sequential:.1f} s, 2 parallel jobs x 1"
        f" thread {parallel:.1f} s: {sequential / parallel:.2f}x"
    )


def data_parallel(work: Sequence[str]) -> str:
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
    return (
        f"data parallel: 1 process x 2 threads {single:.0f} samples/s (val loss {loss_one:.4g}),"
        f" 2 processes x 1 thread {ddp:.0f} samples/s (val loss {loss_two:.4g}):"
        f" {ddp / single:.2f}x"
    )


def bf16(work: Sequence[str]) -> str:
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
    return (
        f"precision: float32 {fp32:.0f}/s (val loss {loss32:.4g}), bf16 autocast {b16:.0f}/s"
        f" (val loss {loss16:.4g}): {b16 / fp32:.2f}x"
    )


def _busy() -> None:  # the neighbour: one core's worth of pure Python work
    while True:
        sum(i * i for i in range(10_000))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["joblib", "ddp", "bf16"], action="append")
    parser.add_argument("--neighbour", action="store_true", help="beside one busy process")
    parser.add_argument("--work", nargs="*", default=None, help="overrides (default: quick)")
    args = parser.parse_args(argv)
    work = args.work or WORK
    neighbour = None
    if args.neighbour:
        neighbour = multiprocessing.Process(target=_busy, daemon=True)
        neighbour.start()
    try:
        chosen = args.only or ["joblib", "ddp", "bf16"]
        for name, bench in (("joblib", joblib), ("ddp", data_parallel), ("bf16", bf16)):
            if name in chosen:
                print(bench(work), flush=True)
    finally:
        if neighbour is not None:
            neighbour.terminate()
    print(f"({os.cpu_count()} cores; {'beside one busy process' if neighbour else 'idle'})")


if __name__ == "__main__":
    main()
