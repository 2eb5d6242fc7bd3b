"""What the benchmark scripts share: busy neighbour processes and the idle / busy table.

Users run attnlstm beside other work, so every ``scripts/bench_*.py`` measures twice: on the
machine as it is ("idle"), then beside ``--busy N`` CPU-bound neighbour processes, and prints
each figure's ratio busy / idle. With one neighbour on a 2-core machine the physical share of
this process is half the machine, so a ratio near 0.5 is the honest expectation for work that
uses both cores, and near 1 for work that uses one.

    with BusyNeighbours(1):
        seconds = measure()

A neighbour is a separate process running a pure-Python loop (one core's worth of work, no
memory traffic), as an editor's language server or another experiment's data loader would. This
module imports the standard library only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import date
from types import TracebackType

from attnlstm.runtime import processor_name

__all__ = [
    "BusyNeighbours",
    "add_busy_option",
    "govern_threads",
    "idle_and_busy",
    "machine_line",
    "print_ratio_table",
]


#: a neighbour's program: one core's worth of pure Python work until it is stopped
_SPIN = "while True:\n    sum(i * i for i in range(100_000))\n"


class BusyNeighbours:
    """A context in which ``count`` CPU-bound processes run beside this one (none for 0).

    Each neighbour is a fresh interpreter running a pure-Python loop (it imports nothing, so
    it is busy within milliseconds); they are started when the ``with`` block starts and
    killed when it ends, an exception included.
    """

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"--busy takes a count of neighbour processes >= 0, not {count}")
        self.count = count
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BusyNeighbours:
        for _ in range(self.count):
            self._processes.append(subprocess.Popen([sys.executable, "-S", "-c", _SPIN]))
        if self._processes:
            time.sleep(0.5)  # an interpreter without site starts in ~20 ms; leave it ample time
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self._processes:
            process.kill()
        for process in self._processes:
            process.wait()
        self._processes.clear()

    @property
    def pids(self) -> list[int]:
        """The neighbours' process ids (while the block runs)."""
        return [process.pid for process in self._processes]


def _neighbour_count(text: str) -> int:
    """argparse type of ``--busy``: an int >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_busy_option(parser: argparse.ArgumentParser) -> None:
    """``--busy N`` (default 1): also measure beside N busy neighbour processes (0: idle only)."""
    parser.add_argument(
        "--busy",
        type=_neighbour_count,
        default=1,
        metavar="N",
        help="also measure beside N CPU-bound neighbour processes and print busy / idle"
        " (default 1; 0: idle only)",
    )


def idle_and_busy(
    measure: Callable[[], Mapping[str, float]], busy: int
) -> tuple[dict[str, float], dict[str, float] | None]:
    """``measure()`` (figures where higher is better, e.g. items/s), on the machine as it is,
    then beside ``busy`` neighbours (None when ``busy`` is 0)."""
    if busy < 0:
        raise ValueError(f"busy takes a count of neighbour processes >= 0, not {busy}")
    idle = dict(measure())
    if busy == 0:
        return idle, None
    with BusyNeighbours(busy):
        loaded = dict(measure())
    return idle, loaded


def govern_threads(threads: int | None = None) -> None:
    """Set torch's threads as ``attnlstm-train`` does: a fixed ``threads`` (a script's
    ``--threads``), or, when None, threads that follow the cores other processes leave free
    (:class:`attnlstm.training.threads.ThreadGovernor`, polled before each optimiser step;
    a loop without one calls :func:`attnlstm.training.threads.poll_threads`)."""
    import torch

    from attnlstm.runtime import available_cores
    from attnlstm.training.threads import ThreadGovernor, use_governor

    global _GOVERNED
    if threads:
        torch.set_num_threads(threads)
        _GOVERNED = False
        return
    governor = ThreadGovernor(torch.get_num_threads(), cores=available_cores())
    governor.install()
    use_governor(governor)  # loops without an optimiser step call poll_threads()
    _GOVERNED = True


#: whether govern_threads() installed a governor (machine_line says so)
_GOVERNED = False


def machine_line() -> str:
    """One line naming the machine, its cores, torch's threads and the date."""
    import torch  # here, not at module level: importers set OpenMP up before torch loads

    processor = processor_name()
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    threads = (
        f"up to {torch.get_num_threads()} threads following the free cores"
        if _GOVERNED
        else f"{torch.get_num_threads()} threads"
    )
    return (
        f"machine: {processor}, {os.cpu_count()} cores, torch {torch.__version__},"
        f" {threads}, OMP_WAIT_POLICY={wait}, {date.today().isoformat()}"
    )


def print_ratio_table(
    idle: Mapping[str, float],
    busy: Mapping[str, float] | None,
    unit: str,
    neighbours: int,
) -> None:
    """A Markdown table: each figure idle, beside ``neighbours`` busy processes, and busy / idle."""
    if busy is None:
        print(f"\n| what | idle {unit} |\n|---|---:|")
        for name, value in idle.items():
            print(f"| {name} | {value:.4g} |")
        return
    plural = "es" if neighbours != 1 else ""
    print(
        f"\n| what | idle {unit} | beside {neighbours} busy process{plural} | busy / idle |"
        "\n|---|---:|---:|---:|"
    )
    for name, value in idle.items():
        loaded = busy.get(name, float("nan"))
        print(f"| {name} | {value:.4g} | {loaded:.4g} | {loaded / value:.2f}x |")
