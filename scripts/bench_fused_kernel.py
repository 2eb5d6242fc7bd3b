#!/usr/bin/env python
"""The fused pooling kernel of an earlier git revision against the working tree's, in one run.

Both versions of ``attnlstm/models/fused_pool.cpp`` are compiled (the earlier one taken with
``git show REV:...``, each build cached under its own name), then one ``ffattn`` training
update (``bench_long.py``'s: T0 steps padded to 1.1 T0, batch 100, D = 100) is timed with
each kernel in turn, the order alternating over ``--rounds`` rounds so that both see the same
machine. The median of each round's updates is taken, the best round reported, and the ratio
earlier / now printed per T0 (above 1: the working tree is faster); then the same beside
``--busy N`` CPU-bound neighbour processes.

    python scripts/bench_fused_kernel.py --against cd68d10          # T0 = 1000 and 10000
    python scripts/bench_fused_kernel.py --against HEAD~1 --lengths 10000 --busy 0

Needs a git checkout (for the earlier revision), a C++ compiler and ninja.
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from attnlstm.benchmark import (
    add_busy_option,
    govern_threads,
    idle_and_busy,
    machine_line,
    print_ratio_table,
)
from attnlstm.models import fused_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long import make, update  # the update bench_long.py times

REPOSITORY = Path(__file__).resolve().parent.parent
KERNEL = "attnlstm/models/fused_pool.cpp"


def kernel_source(revision: str, folder: Path) -> Path:
    """The kernel's source at ``revision`` ("work": the working tree's), written into folder."""
    if revision == "work":
        return fused_pool.SOURCE
    done = subprocess.run(
        ["git", "-C", str(REPOSITORY), "show", f"{revision}:{KERNEL}"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"git show {revision}:{KERNEL} failed: {done.stderr.strip()}")
    path = folder / revision.replace("/", "_").replace("~", "_") / "fused_pool.cpp"
    path.parent.mkdir(parents=True)
    path.write_text(done.stdout)
    return path


def build(source: Path, tag: str) -> Any:
    """The compiled kernel of ``source``; the tag gives each source its own cached build."""
    fused_pool.SOURCE = source
    os.environ[fused_pool.CFLAGS_ENV] = f"-DATTNLSTM_KERNEL_{tag}"
    fused_pool.fused_kernel.cache_clear()
    module = fused_pool.fused_kernel()
    if module is None:
        raise SystemExit(f"the kernel of {source} does not build here (see the warning above)")
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the earlier git revision")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000], help="T0s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="updates per round")
    add_busy_option(parser)
    args = parser.parse_args()
    os.environ.pop(fused_pool.DISABLE_ENV, None)
    govern_threads()
    print(machine_line())

    with tempfile.TemporaryDirectory() as folder:
        sources = {
            args.against: kernel_source(args.against, Path(folder)),
            "now": kernel_source("work", Path(folder)),
        }
        # the source's content names its build, so an unchanged kernel is not rebuilt
        tags = {
            name: hashlib.sha1(path.read_bytes()).hexdigest()[:10] for name, path in sources.items()
        }

        def measure() -> dict[str, float]:
            """updates/s of each kernel at each T0 (best round's median)"""
            seconds: dict[str, list[float]] = {}
            for length in args.lengths:
                for round_ in range(args.rounds):
                    names = list(sources) if round_ % 2 == 0 else list(sources)[::-1]
                    for name in names:
                        build(sources[name], tags[name])
                        task, model, optimizer = make("ffattn", "fused", length, 100, False, 4096)
                        data = next(task.train_batches(1))
                        update(task, model, optimizer, data)  # warm-up
                        median = statistics.median(
                            update(task, model, optimizer, data) for _ in range(args.repeats)
                        )
                        seconds.setdefault(f"T0 = {length}, {name}", []).append(median)
            return {key: 1.0 / min(values) for key, values in seconds.items()}

        idle, busy = idle_and_busy(measure, args.busy)
    print_ratio_table(idle, busy, "updates/s", args.busy)
    for length in args.lengths:
        for state, figures in (("idle", idle), (f"beside {args.busy} busy", busy)):
            if figures is None:
                continue
            ratio = figures[f"T0 = {length}, now"] / figures[f"T0 = {length}, {args.against}"]
            print(f"T0 = {length}, {state}: now / {args.against} = {ratio:.2f}x the updates/s")


if __name__ == "__main__":
    main()
