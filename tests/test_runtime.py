"""OpenMP's wait policy and thread count, chosen before torch loads (:mod:`attnlstm.runtime`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnlstm.runtime import available_cores, cgroup_cpu_quota, configure_openmp

_OPENMP = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "ATTNLSTM_OPENMP")


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_openmp as in a fresh process, before torch is imported."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)


def test_cgroup_quota_is_read_and_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_quota(cpu_max) == 1.5
    assert available_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))  # 1.5 -> 2
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_quota(cpu_max) is None
    assert available_cores(cpu_max) == len(os.sched_getaffinity(0))
    assert cgroup_cpu_quota(tmp_path / "absent") is None
    cpu_max.write_text("garbage")
    assert cgroup_cpu_quota(cpu_max) is None


def test_the_cores_are_set_where_the_user_has_not(no_torch: None, tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    chosen = configure_openmp(environ, tmp_path / "absent")
    assert chosen == {"OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    assert environ == chosen  # the wait policy stays OpenMP's own


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}),
        ({"OMP_NUM_THREADS": "7"}, {"OMP_NUM_THREADS": "7"}),
        ({"ATTNLSTM_OPENMP": "keep"}, {"ATTNLSTM_OPENMP": "keep"}),
    ],
)
def test_the_users_own_settings_are_kept(
    no_torch: None, tmp_path: Path, user: dict[str, str], expected: dict[str, str]
) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000")  # one core's quota
    environ = dict(user)
    configure_openmp(environ, cpu_max)
    assert environ == expected


def test_nothing_is_set_once_torch_is_loaded(tmp_path: Path) -> None:
    import torch  # noqa: F401  # loaded: libgomp has read its settings already

    environ: dict[str, str] = {}
    assert configure_openmp(environ, tmp_path / "absent") == {}
    assert environ == {}


@pytest.mark.parametrize(
    "entry",
    [
        "import attnlstm.launch",  # attnlstm-train, python -m attnlstm
        "import attnlstm.cli.evaluate",  # the run commands
    ],
)
def test_entry_points_set_openmp_before_torch_loads(entry: str) -> None:
    """In a fresh interpreter, the entry point's import sets the threads: torch's follow the
    cores this process may use, and the user's wait policy is left alone."""
    code = (
        f"{entry}\nimport json, os, torch\n"
        "print(json.dumps([os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads()]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in _OPENMP}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    variable, threads = json.loads(result.stdout.splitlines()[-1])
    assert variable == str(available_cores()) and threads == available_cores()
