"""How many OpenMP threads this process starts with, chosen before torch loads.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels), which reads its settings
once, when torch is imported. :func:`configure_openmp` sets ``OMP_NUM_THREADS`` first, where
the user has not, to the cores this process may use: its CPU affinity mask (``taskset``,
Slurm's binding) and, inside a container, its cgroup CPU quota (``cpu.max``), which neither
OpenMP nor torch reads (a container limited to 2 CPUs on a 64-core host would otherwise start
64 threads).

The wait policy stays OpenMP's own (spin a while, then sleep): on the project's 2-core VM,
``OMP_WAIT_POLICY=PASSIVE`` made an idle training step 1.5-2x slower (every wake-up of a
sleeping thread goes through the hypervisor; ``scripts/bench_threading.py``). What spinning
costs beside a busy process is avoided by changing the number of threads while a run trains
(:mod:`attnlstm.training.threads`).

Importing this module applies it (so a script's first import line can be
``import attnlstm.runtime``); a user's own ``OMP_NUM_THREADS`` is kept, and
``ATTNLSTM_OPENMP=keep`` leaves OpenMP's defaults alone. This module imports the standard
library only.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

__all__ = [
    "APPLIED",
    "available_cores",
    "cgroup_cpu_quota",
    "configure_openmp",
    "processor_name",
]

#: the cgroup v2 file that holds a container's CPU quota: "<quota> <period>" or "max <period>"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    import platform

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cgroup_cpu_quota(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """The CPUs' worth of time this process's cgroup may use (quota / period), or None when
    there is no quota (no such file, ``max``, or a file that cannot be read)."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its affinity mask (``taskset``, Slurm's binding), capped
    by its cgroup's CPU quota rounded up; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cpu_max)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def configure_openmp(
    environ: MutableMapping[str, str] = os.environ, cpu_max: Path = CGROUP_CPU_MAX
) -> dict[str, str]:
    """Set OpenMP's thread count in ``environ`` where the user has not.

    Returns:
        The variables set (empty when torch is already imported, since libgomp would not read
        them any more, or when ``ATTNLSTM_OPENMP=keep``).
    """
    if environ.get("ATTNLSTM_OPENMP", "").lower() == "keep" or "torch" in sys.modules:
        return {}
    chosen: dict[str, str] = {}
    if "OMP_NUM_THREADS" not in environ:
        chosen["OMP_NUM_THREADS"] = str(available_cores(cpu_max))
    environ.update(chosen)
    return chosen


#: what importing this module set (see :func:`configure_openmp`)
APPLIED: dict[str, str] = configure_openmp()
