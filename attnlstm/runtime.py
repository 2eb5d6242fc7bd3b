"""How this process's OpenMP threads wait and how many there are, chosen before torch loads.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels). By default, a thread that
reaches the end of a parallel region spins for a while (libgomp: 300,000 iterations, about a
millisecond) before it sleeps, waiting for the others. On an idle machine that saves a wake-up;
beside another busy process it is a collapse: a region's threads wait for one that the kernel
has descheduled, each spinning away the time slice the late thread needs. Measured on the
project's 2-core machine with one busy neighbour, a chunked pooling update at T0 = 10,000 took
15.6 s with the default against 0.78 s with passive waiting (``docs/performance.md``).

libgomp reads its settings once, when it is loaded, that is when torch is imported. So
:func:`configure_openmp` sets them in ``os.environ`` first, where the user has not:

- ``OMP_WAIT_POLICY=PASSIVE``: a waiting thread sleeps at once (a futex wake-up costs a few
  microseconds per region, which ``scripts/bench_threading.py`` shows to be invisible idle);
- ``OMP_NUM_THREADS``: the cores this process may use, that is its CPU affinity mask and,
  inside a container, its cgroup CPU quota (``cpu.max``), which OpenMP does not read itself.

Importing this module applies them (so a script's first import line can be
``import attnlstm.runtime``); a user's own ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or
``OMP_NUM_THREADS`` is kept, and ``ATTNLSTM_OPENMP=keep`` leaves OpenMP's defaults alone. This
module imports the standard library only.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["APPLIED", "available_cores", "cgroup_cpu_quota", "configure_openmp"]

#: the cgroup v2 file that holds a container's CPU quota: "<quota> <period>" or "max <period>"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


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
    """Set OpenMP's wait policy and thread count in ``environ`` where the user has not.

    Returns:
        The variables set (empty when torch is already imported, since libgomp would not read
        them any more, or when ``ATTNLSTM_OPENMP=keep``).
    """
    if environ.get("ATTNLSTM_OPENMP", "").lower() == "keep" or "torch" in sys.modules:
        return {}
    chosen: dict[str, str] = {}
    # GOMP_SPINCOUNT is libgomp's finer setting of the same thing: a user who set it decided
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        chosen["OMP_WAIT_POLICY"] = "PASSIVE"
    if "OMP_NUM_THREADS" not in environ:
        chosen["OMP_NUM_THREADS"] = str(available_cores(cpu_max))
    environ.update(chosen)
    return chosen


#: what importing this module set (see :func:`configure_openmp`)
APPLIED: dict[str, str] = configure_openmp()
