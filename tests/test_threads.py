"""The thread governor (:mod:`attnlstm.training.threads`): PyTorch's threads follow the cores
that other processes leave free, read from the machine's and this process's CPU time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnlstm.training.threads import (
    ThreadGovernor,
    epoch_threads,
    machine_busy_seconds,
    poll_threads,
    use_governor,
)


class FakeMachine:
    """A clock, the machine's busy CPU seconds and this process's, moved by hand."""

    def __init__(self) -> None:
        self.now, self.machine, self.own = 0.0, 0.0, 0.0
        self.set_to: list[int] = []

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += seconds * own_cores
        self.machine += seconds * (own_cores + other_cores)

    def governor(self, ceiling: int = 2, interval: float = 1.0) -> ThreadGovernor:
        return ThreadGovernor(
            ceiling,
            interval=interval,
            busy_seconds=lambda: self.machine,
            own_seconds=lambda: self.own,
            clock=lambda: self.now,
            set_threads=self.set_to.append,
        )


def test_threads_follow_the_cores_others_leave_free() -> None:
    machine = FakeMachine()
    governor = machine.governor(ceiling=2)
    assert machine.set_to == [2] and governor.active
    machine.run(1.0, own_cores=2.0, other_cores=0.0)  # idle machine
    assert governor.poll() == 2
    machine.run(1.0, own_cores=1.2, other_cores=0.8)  # a neighbour took most of a core
    assert governor.poll() == 1 and machine.set_to == [2, 1]
    machine.run(1.0, own_cores=1.0, other_cores=1.0)  # it stays
    assert governor.poll() == 1 and machine.set_to == [2, 1]  # no call without a change
    machine.run(1.0, own_cores=1.0, other_cores=0.05)  # it left
    assert governor.poll() == 2 and machine.set_to == [2, 1, 2]


def test_never_below_one_nor_above_the_ceiling() -> None:
    machine = FakeMachine()
    governor = machine.governor(ceiling=2)
    machine.run(1.0, own_cores=0.5, other_cores=5.0)  # more load than cores
    assert governor.poll() == 1
    roomy = FakeMachine()
    capped = ThreadGovernor(  # a sweep's share: 2 of 8 cores
        2,
        cores=8,
        busy_seconds=lambda: roomy.machine,
        own_seconds=lambda: roomy.own,
        clock=lambda: roomy.now,
        set_threads=roomy.set_to.append,
    )
    roomy.run(1.0, own_cores=2.0, other_cores=2.0)
    assert capped.poll() == 2


def test_the_load_is_read_once_per_interval() -> None:
    machine = FakeMachine()
    governor = machine.governor(interval=1.0)
    machine.run(0.5, own_cores=1.0, other_cores=1.0)
    assert governor.poll() == 2  # too early: nothing read
    machine.run(0.6, own_cores=1.0, other_cores=1.0)
    assert governor.poll() == 1  # over the whole 1.1 s since the start


def test_mean_threads_is_time_weighted() -> None:
    machine = FakeMachine()
    governor = machine.governor()
    machine.run(1.0, own_cores=2.0, other_cores=0.0)
    governor.poll()  # 2 threads for the first second
    machine.run(1.0, own_cores=1.0, other_cores=1.0)
    governor.poll()  # 1 from t = 2 s
    machine.run(2.0, own_cores=1.0, other_cores=1.0)
    assert governor.mean_threads() == pytest.approx((2 * 2 + 1 * 2) / 4)
    machine.run(1.0, own_cores=1.0, other_cores=1.0)
    assert governor.mean_threads() == pytest.approx(1.0)  # since the last call only


def test_without_proc_stat_nothing_changes() -> None:
    calls: list[int] = []
    governor = ThreadGovernor(2, busy_seconds=lambda: None, set_threads=calls.append)
    assert not governor.active and governor.poll() == 2 and calls == [2]


def test_machine_busy_seconds_reads_the_cpu_line(tmp_path: Path) -> None:
    import os

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 5000 70 1 2 3 40 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert machine_busy_seconds(stat) == pytest.approx((100 + 20 + 30 + 1 + 2 + 3) / hz)
    assert machine_busy_seconds(tmp_path / "absent") is None
    stat.write_text("intr 1 2 3\n")
    assert machine_busy_seconds(stat) is None
    if Path("/proc/stat").is_file():
        assert machine_busy_seconds() > 0


def test_installed_it_polls_before_every_optimiser_step() -> None:
    machine = FakeMachine()
    governor = machine.governor()
    polls: list[float] = []
    governor.poll = lambda: polls.append(machine.now) or 2  # type: ignore[method-assign]
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    handle = governor.install()
    try:
        for _ in range(3):
            parameter.sum().backward()
            optimizer.step()
    finally:
        handle.remove()
    optimizer.step()
    assert len(polls) == 3  # removed: the fourth step does not poll


def test_epoch_threads_reads_the_governor_in_use() -> None:
    machine = FakeMachine()
    governor = machine.governor()
    forget = use_governor(governor)
    try:
        machine.run(1.0, own_cores=1.0, other_cores=1.0)
        poll_threads()  # what the evaluation loop calls
        assert governor.threads == 1
        machine.run(1.0, own_cores=1.0, other_cores=1.0)
        assert epoch_threads() == pytest.approx(1.5)
    finally:
        forget()
    assert epoch_threads() == float(torch.get_num_threads())
    poll_threads()  # no governor: nothing to do
