"""``attnlstm-reproduce <table> --left``: the job folders it expects are the ones Hydra makes,
and each job is reported as finished, training, stopped (with its epochs) or not started,
without anything being written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from attnlstm import runfolder
from attnlstm.reproduce import TABLES, Sweep, Table
from attnlstm.reproduce.cli import main
from attnlstm.reproduce.left import DirnameRule, sweep_jobs, table_states
from attnlstm.runfolder import claim, job_dirname, lock_holder

RULE = DirnameRule.from_config()


def test_the_rule_is_read_from_the_config() -> None:
    # keys that never change what a run computes stay out of its folder's name
    assert {"resume", "trainer.progress_bar", "device"} <= RULE.exclude_keys
    assert (RULE.item_sep, RULE.kv_sep) == (",", "=")


#: a sweep that gives a key twice (the last value counts, in the first place) and names
#: longer than a file name may be (shortened with a hash)
ODD = Sweep(
    "odd",
    (
        "trainer.attention_images=2",
        *(f"task.key{i}=value{i}" for i in range(20)),
        "attention=dot,general",
        "trainer.attention_images=0",
        "device=cpu",
    ),
)


@pytest.mark.parametrize("table", [*sorted(TABLES), "odd"])
def test_job_folders_are_the_ones_hydra_names(table: str) -> None:
    """Each sweep's jobs and folder names against Hydra's own sweeper and dirname code."""
    parser = OverridesParser.create()
    for sweep in TABLES[table].sweeps if table in TABLES else (ODD,):
        arguments = [*sweep.arguments([0, 1, 2]), "trainer.progress_bar=false"]
        (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
        expected = [
            job_dirname(
                get_overrides_dirname(
                    parser.parse_overrides(job), sorted(RULE.exclude_keys), ",", "="
                )
            )
            for job in batch
        ]
        ours = [RULE.name(job) for job in sweep_jobs(sweep, [0, 1, 2])]
        assert ours == expected and len(set(ours)) == len(ours)


def _folder(root: Path, name: str, status: str | None, epochs: int = 0, last: bool = False) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("trainer:\n  max_epochs: 25\n")
    if status is not None:
        metrics = {"status": status, "epochs": epochs, "test": {"test/acc": 0.9}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if last:
        (folder / "last.pt").write_bytes(b"checkpoint")
    return folder


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_left_reports_each_job_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, keep = tmp_path / "out", tmp_path / "keep"
    sweep = tmp_path / "out/pos_ewt/attention"
    name = "attention={},experiment=pos_ewt,seed={}"
    _folder(sweep, name.format("none", 0), "completed", 25)
    _folder(keep / "pos_ewt/attention", name.format("dot", 0), "completed", 25)  # kept only
    _folder(sweep, name.format("general", 0), "running", 7, last=True)  # stopped
    _folder(sweep, name.format("concat", 0), "diverged", 3)  # finished: never re-run
    training = claim(_folder(sweep, name.format("additive", 0), "running", 2, last=True), False)
    _folder(sweep, name.format("scaled_dot", 0), None)  # started, nothing to resume
    before = _tree(tmp_path)
    try:
        assert (
            main(["pos_ewt", "--left", "--seeds", "0", "--out", str(out), "--keep", str(keep)]) == 0
        )
    finally:
        training.release()
    text = capsys.readouterr().out
    assert _tree(tmp_path) == before  # nothing written, not even a lock file

    assert "Table pos_ewt: 7 runs: 1 training, 1 stopped, 2 not started, 3 finished." in text
    lines = [line.strip() for line in text.splitlines()]
    assert lines[3:7] == [
        f"training now (pid {os.getpid()}): {name.format('additive', 0)}, 2 epochs done of 25",
        f"stopped: {name.format('general', 0)}, 7 epochs done of 25; resumes from its last.pt",
        f"not started: {name.format('scaled_dot', 0)}",
        f"not started: {name.format('feedforward', 0)}",
    ]
    assert lines[2].startswith("attention (") and lines[2].endswith("): 4 left")
    assert "The same command without --left runs what is left." in text


def test_left_follows_seeds_sweeps_and_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pos_ewt", "--left", "--out", str(tmp_path), "--only", "attention=dot,additive"]
    assert main([*argv, "--seeds", "1", "2"]) == 0
    text = capsys.readouterr().out
    assert "Table pos_ewt: 4 runs: 4 not started." in text
    assert text.count("attention=dot,") == 2 and text.count("attention=additive,") == 2
    assert text.count("seed=1") == 2 and text.count("seed=2") == 2 and "seed=0" not in text
    # a sweep with its own seeds keeps them; --sweeps chooses the sweeps
    assert main(["raffel", "--left", "--out", str(tmp_path), "--sweeps", "lstm"]) == 0
    text = capsys.readouterr().out
    assert "Table raffel: 4 runs: 4 not started." in text and "lstm (" in text
    assert "fixed (" not in text


def test_nothing_left_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sst2/last_state"
    _folder(sweep, "attention=none,experiment=sst2,model=lstm,seed=0", "completed", 3)
    argv = ["sst2", "--left", "--out", str(tmp_path), "--seeds", "0", "--sweeps", "last_state"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Table sst2: 1 run: 1 finished." in text and "Nothing is left." in text


def test_lock_holder_sees_a_training_process_and_only_looks(tmp_path: Path) -> None:
    assert lock_holder(tmp_path) is None
    assert not (tmp_path / ".lock").exists()  # looking creates no lock file
    folder = claim(tmp_path, fresh=True)
    assert lock_holder(tmp_path) == os.getpid()
    folder.release()
    assert lock_holder(tmp_path) is None


def test_a_kept_record_counts_only_where_the_command_restores_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record under --keep is put back only into a folder without its own metrics.json,
    and only when it has test metrics (cli.copy_records): elsewhere the job is not done."""
    out, keep = tmp_path / "out", tmp_path / "keep"
    sweep, kept = out / "pos_ewt/attention", keep / "pos_ewt/attention"
    name = "attention={},experiment=pos_ewt,seed=0"
    # stopped here, finished on another machine: the command resumes it here
    _folder(sweep, name.format("none"), "running", 4, last=True)
    _folder(kept, name.format("none"), "completed", 25)
    # a kept record without test metrics (it diverged) is not restored: the job starts
    (_folder(kept, name.format("dot"), None) / "metrics.json").write_text('{"status": "diverged"}')
    # training now, whatever is kept
    training = claim(_folder(sweep, name.format("general"), "running", 1, last=True), False)
    _folder(kept, name.format("general"), "completed", 25)
    argv = ["pos_ewt", "--left", "--seeds", "0", "--out", str(out), "--keep", str(keep)]
    try:
        assert main([*argv, "--only", "attention=none,dot,general"]) == 0
    finally:
        training.release()
    text = capsys.readouterr().out
    assert "Table pos_ewt: 3 runs: 1 training, 1 stopped, 1 not started." in text
    assert f"stopped: {name.format('none')}, 4 epochs done of 25" in text
    assert f"not started: {name.format('dot')}" in text


def test_a_folder_the_command_cannot_train_in_is_called_blocked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "pos_ewt/attention"
    name = "attention={},experiment=pos_ewt,seed=0"
    (_folder(sweep, name.format("dot"), None) / "metrics.json").write_text("{corrupt")
    _folder(sweep, name.format("general"), "running", 3)  # its last.pt was removed
    leftovers = _folder(sweep, name.format("concat"), None)  # killed while starting
    (leftovers / "train.log").write_text("starting\n")
    (leftovers / ".hydra").mkdir()
    argv = ["pos_ewt", "--left", "--seeds", "0", "--out", str(tmp_path)]
    assert main([*argv, "--only", "attention=dot,general,concat"]) == 0
    text = capsys.readouterr().out
    assert "3 runs: 2 blocked, 1 not started." in text
    assert f"blocked: {name.format('dot')}; holds files but no last.pt" in text
    assert f"blocked: {name.format('general')}; " in text
    assert f"not started: {name.format('concat')}" in text


def test_a_folder_hydra_names_per_job_is_unknown(tmp_path: Path) -> None:
    table = Table("odd", "odd", "tests", (Sweep("s", ("task.note='${seed}'",)),), str)
    (state,) = table_states(table, table.sweeps, tmp_path, [0])
    assert state.state == "unknown" and "the folder is not known" in state.describe()


@pytest.mark.parametrize("other", [["--print-only"], ["--dry-run"], ["--doc"], ["--doc", "x.md"]])
def test_left_with_an_option_that_runs_or_writes_is_refused(
    other: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sst2", "--left", "--out", str(tmp_path), *other])
    assert exit_.value.code == 2
    assert "--left lists what is left and runs and writes nothing" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_lock_holder_without_proc_locks_tests_with_a_shared_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = claim(tmp_path, fresh=True)
    if runfolder._flock_holders(tmp_path / ".lock") is not None:  # Linux: read, no lock taken
        assert runfolder._flock_holders(tmp_path / ".lock") == [os.getpid()]
    monkeypatch.setattr(runfolder, "_flock_holders", lambda path: None)
    assert lock_holder(tmp_path) == os.getpid()
    folder.release()
    assert lock_holder(tmp_path) is None
