"""PyTorch's CPU threads follow the cores that other processes leave free.

OpenMP's threads wait for each other at the end of every parallel region. By default
(libgomp) a waiting thread spins before it sleeps, which is the fastest choice on an idle
machine: a woken thread costs tens of microseconds in a virtual machine, and the many small
kernels of a training step each end in such a wait. Beside another busy process, the same
spinning is a collapse: the region waits for a thread the kernel has descheduled while its
partner spins away the time slice. Measured on the project's 2-core VM
(``scripts/bench_threading.py --rounds 3``, ``docs/performance.md``), one update of the
chunked pooling at T0 = 10,000 ran at 5.3 updates/s idle with 2 spinning threads and 1.4/s
beside one busy process; with passive waiting 2.4/s idle (slower: every wake-up goes through
the hypervisor) and 4.2/s busy; with one thread 5.5/s idle and 5.0/s busy; with this
governor 7.1/s idle and 5.1/s busy.

So :class:`ThreadGovernor` keeps OpenMP's spinning default and changes the number of threads
instead: about once a second (checked before each optimiser step) it reads how much CPU the
*other* processes used over the last interval (the machine's busy time in ``/proc/stat``
minus this process's own CPU time) and uses the cores they left free,

    threads = clamp(round(cores - others' busy cores), 1, ceiling)

where ``ceiling`` is the most threads the run may use (its cores, or a parallel sweep's share
of them). Idle, that is every core; beside one busy process on 2 cores, one thread, which then
never waits for another. ``trainer.threads`` set to a number fixes the threads and turns the
governor off. Outside Linux (no ``/proc/stat``) the threads stay as they are.

The price is bit-for-bit reproducibility: many CPU kernels split a sum over the threads, so
the same seed under another thread count differs in the last bits (about 1e-8 relative in a
loss at first). Runs that must match exactly (a resume compared to an unbroken run, two
runs of one seed) fix ``trainer.threads``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

log = logging.getLogger(__name__)

__all__ = [
    "ThreadGovernor",
    "epoch_threads",
    "machine_busy_seconds",
    "poll_threads",
    "use_governor",
]

PROC_STAT = Path("/proc/stat")
#: the fields of /proc/stat's "cpu" line that count as busy: user, nice, system, irq,
#: softirq, steal (not idle, iowait, nor guest time, which user already includes)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def machine_busy_seconds(proc_stat: Path = PROC_STAT) -> float | None:
    """CPU seconds all processes have been busy since boot (every core summed), or None
    where ``/proc/stat`` cannot be read."""
    try:
        with proc_stat.open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = sum(int(fields[1 + index]) for index in _BUSY_FIELDS if 1 + index < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """This process's CPU seconds (user + system, every thread)."""
    times = os.times()
    return times.user + times.system


class ThreadGovernor:
    """Sets ``torch.set_num_threads`` to the cores other processes leave free; call
    :meth:`poll` often (it does the work at most every ``interval`` seconds).

    Args:
        ceiling: the most threads to use (at least 1).
        interval: seconds between two readings of the machine's load.
        cores: the cores this process may use (default: the ceiling).
        busy_seconds, own_seconds, clock, set_threads: where the readings come from and where
            the choice goes (tests replace them).
    """

    def __init__(
        self,
        ceiling: int,
        interval: float = 1.0,
        cores: int | None = None,
        busy_seconds: Callable[[], float | None] = machine_busy_seconds,
        own_seconds: Callable[[], float] = _own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"a thread ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.cores = cores or ceiling
        self.interval = interval
        self._busy_seconds, self._own_seconds = busy_seconds, own_seconds
        self._clock, self._set_threads = clock, set_threads
        self.threads = ceiling
        self._set_threads(ceiling)
        self._last = self._reading()
        self._weighted = 0.0  # thread-seconds since the last mean_threads()
        self._since = self._clock()
        self._changed_at = self._since

    def _reading(self) -> tuple[float, float | None, float]:
        return self._clock(), self._busy_seconds(), self._own_seconds()

    @property
    def active(self) -> bool:
        """Whether the machine's load can be read here (else poll() does nothing)."""
        return self._last[1] is not None

    def poll(self) -> int:
        """Re-read the load if ``interval`` has passed and set the threads; returns them."""
        now = self._clock()
        if not self.active or now - self._last[0] < self.interval:
            return self.threads
        reading = self._reading()
        wall = reading[0] - self._last[0]
        machine = reading[1] - self._last[1]  # type: ignore[operator]
        own = reading[2] - self._last[2]
        self._last = reading
        others = max(0.0, machine - own) / wall  # busy cores of every other process
        wanted = max(1, min(self.ceiling, round(self.cores - others)))
        if wanted != self.threads:
            self._weighted += self.threads * (now - self._changed_at)
            self._changed_at = now
            log.debug("threads %d -> %d (others busy on %.2f cores)", self.threads, wanted, others)
            self.threads = wanted
            self._set_threads(wanted)
        return self.threads

    def mean_threads(self) -> float:
        """The time-weighted mean number of threads since the last call (or the start)."""
        now = self._clock()
        total = self._weighted + self.threads * (now - self._changed_at)
        span = now - self._since
        self._weighted, self._since, self._changed_at = 0.0, now, now
        return total / span if span > 0 else float(self.threads)

    def install(self) -> Any:
        """Poll before every optimiser step of this process (any ``torch.optim`` optimiser);
        returns the hook's handle (``.remove()`` to stop)."""

        def hook(*_: Any) -> None:
            self.poll()

        return register_optimizer_step_pre_hook(hook)


#: the governor of this process's run, if any (what the trainer reports as perf/threads)
_CURRENT: list[ThreadGovernor] = []


def use_governor(governor: ThreadGovernor) -> Callable[[], None]:
    """Make ``governor`` the one :func:`epoch_threads` reads; returns the function that
    forgets it again."""
    _CURRENT[:] = [governor]
    return _CURRENT.clear


def epoch_threads() -> float:
    """The threads of the last epoch: the governor's time-weighted mean since it was last
    asked, or torch's fixed number of threads when no governor runs."""
    return _CURRENT[0].mean_threads() if _CURRENT else float(torch.get_num_threads())


def poll_threads() -> None:
    """Poll the governor in use, if any: what loops without optimiser steps (evaluation)
    call."""
    if _CURRENT:
        _CURRENT[0].poll()
