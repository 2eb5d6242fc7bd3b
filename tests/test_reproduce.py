"""``attnlstm-reproduce``: every table's sweeps are valid runs, the tables print means and
spreads over seeds, and a table's command finishes only what is left when run again."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from attnlstm.compare import Run, Summary
from attnlstm.console import EXIT_INTERRUPTED
from attnlstm.paths import config_dir
from attnlstm.reproduce import TABLES, Sweep, Table, cli
from attnlstm.reproduce.cli import doc_markers, machines_line, main, sweep_command
from attnlstm.reproduce.tables import Column, method_table, raffel_table, runs_count, spread, winner
from attnlstm.train import check_config
from tests.conftest import TINY


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _expand(overrides: tuple[str, ...]) -> list[list[str]]:
    """The jobs of a multirun worth checking: the cartesian product of its comma lists of
    names (model x attention x task: what must fit together), then each other value of a
    numeric list (lengths, rates: each checked by its key's schema alone) in the first job.
    A value in brackets is a list, not a sweep."""
    names, numbers = [], []
    for override in overrides:
        key, value = override.split("=", 1)
        values = [value] if value.startswith("[") else value.split(",")
        choices = [f"{key}={v}" for v in values]
        (numbers if len(values) > 1 and all(map(_is_number, values)) else names).append(choices)
    firsts = [choices[0] for choices in numbers]
    jobs = [[*job, *firsts] for job in itertools.product(*names)]
    for i, choices in enumerate(numbers):
        jobs += [[*jobs[0][: len(names)], *firsts[:i], c, *firsts[i + 1 :]] for c in choices[1:]]
    return jobs


@pytest.mark.parametrize(
    ("table", "sweep"),
    [(table.name, sweep.name) for table in TABLES.values() for sweep in table.sweeps],
)
def test_every_job_of_every_table_is_a_valid_run(table: str, sweep: str) -> None:
    """Each job's config passes every check that needs no data (schemas, the model against
    the attention method and the task), so a table never fails hours into its sweep."""
    chosen = next(s for s in TABLES[table].sweeps if s.name == sweep)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for job in _expand(tuple(chosen.arguments([0]))):
            check_config(compose(config_name="train", overrides=job))


def _run(config: dict[str, Any], metrics: dict[str, Any]) -> Run:
    return Run(Path("/runs") / str(id(config)), config, {"status": "completed", **metrics})


def _classifier(method: str, seed: int, accuracy: float) -> Run:
    return _run(
        {"model.name": "lstm_attn", "attention.method": method, "seed": seed},
        {"test": {"test/acc": accuracy, "test/macro_f1": accuracy}, "wall_time_s": 120},
    )


def test_method_table_gives_mean_and_std_over_seeds_and_names_the_winner() -> None:
    runs = [
        _classifier("dot", 0, 0.84),
        _classifier("dot", 1, 0.85),
        _classifier("dot", 2, 0.86),
        _classifier("general", 0, 0.80),
        _classifier("general", 1, 0.81),
        _classifier("general", 2, 0.82),
    ]
    text = method_table(
        runs,
        rows=[("model", "model.name"), ("attention", "attention.method")],
        columns=[Column("test acc", "test/acc", 100), Column("minutes", "minutes", digits=1)],
        anchors=[("Kim (2014)", {"test acc": "83.7"})],
    )
    lines = text.splitlines()
    assert lines[0] == "| model | attention | seeds | test acc | minutes |"
    assert lines[2] == "| lstm_attn | dot | 0, 1, 2 | 85.00 ± 1.00 | 2.0 ± 0.0 |"
    assert lines[3] == "| lstm_attn | general | 0, 1, 2 | 81.00 ± 1.00 | 2.0 ± 0.0 |"
    assert lines[4] == "| Kim (2014) |  |  | 83.7 |  |"
    # 4 points apart against sqrt(1 + 1) = 1.41 of spread
    assert "**lstm_attn dot**" in text and "4.00 ahead of lstm_attn general" in text
    assert "exceeds the seed spread (√(s1² + s2²) = 1.41)" in text


def test_translation_bleu_is_shown_on_its_own_scale() -> None:
    """sacrebleu's BLEU is 0-100 already: the table shows 43.5, not 4350 (as it first did),
    while reversal's exact match, a fraction, is shown as a percentage."""
    runs = [
        _run(
            {"model.attention_style": "luong", "attention.method": "dot", "seed": seed},
            {"test": {"test/bleu": bleu, "test/acc": 0.78, "test/exact": 0.5}, "epochs": 20},
        )
        for seed, bleu in ((0, 43.0), (1, 44.0))
    ]
    bleu_table = TABLES["translation"].render(runs)
    assert "| luong | dot | 0, 1 | 43.5 ± 0.7 (n=2) | 78.0 ± 0.0 (n=2) |" in bleu_table
    exact_table = TABLES["seq2seq"].render(runs)
    assert "| luong | dot | 0, 1 | 50.0 ± 0.0 (n=2) | 78.0 ± 0.0 (n=2) |" in exact_table


def test_a_lead_inside_the_spread_is_called_so() -> None:
    close = {
        "a": Summary((0.850, 0.860, 0.840), 3),
        "b": Summary((0.845, 0.855, 0.835), 3),
    }
    text = winner(close, Column("test acc", "test/acc", 100))
    assert "**a**" in text and "0.50 ahead of b" in text and "is within the seed spread" in text
    lower = winner(close, Column("ppl", "test/ppl"), higher_is_better=False)
    assert "**b**" in lower


def test_a_single_seed_is_said_of_one_or_both_rows() -> None:
    column = Column("ppl", "test/ppl")
    one = {"a": Summary((101.0,), 1), "b": Summary((113.7, 114.1), 2)}
    both = {"a": Summary((101.0,), 1), "b": Summary((113.7,), 1)}
    assert "; one of them has a single seed" in winner(one, column, higher_is_better=False)
    assert "; both have a single seed" in winner(both, column, higher_is_better=False)


def test_unfinished_runs_stay_out_and_short_groups_say_how_many_seeds() -> None:
    runs = [_classifier("dot", 0, 0.84), _classifier("dot", 1, 0.86)]
    running = _classifier("dot", 2, 0.10)
    running.metrics["status"] = "running"
    text = method_table(
        [*runs, running], [("attention", "attention.method")], [Column("acc", "test/acc", 100)]
    )
    assert "| dot | 0, 1 | 85.00 ± 1.41 (n=2) |" in text
    assert spread(Summary((0.5,), 1), 100) == "50.00 (n=1)"


def _raffel(problem: str, model: str, length: int, seed: int, solved_epoch: int | None) -> Run:
    metrics: dict[str, Any] = {
        "solved": solved_epoch is not None,
        "epochs": solved_epoch or 40,
        "wall_time_s": 10.0 * (solved_epoch or 40),
        "test": {"test/accuracy": 1.0 if solved_epoch else 0.5},
    }
    if solved_epoch is not None:
        metrics["solved_epoch"] = solved_epoch
    config = {
        "task.name": problem,
        "model.name": model,
        "task.min_length": length,
        "task.variable_length": False,
        "optim.lr": 0.01,
        "seed": seed,
    }
    return _run(config, metrics)


def test_raffel_table_shows_epochs_to_solve_beside_the_paper() -> None:
    runs = [
        _raffel("addition", "ffattn", 50, 0, 1),
        _raffel("addition", "ffattn", 50, 1, 1),
        _raffel("addition", "ffattn", 50, 2, 2),
        _raffel("multiplication", "mean", 1000, 0, 26),
        _raffel("multiplication", "mean", 1000, 1, None),
    ]
    text = raffel_table(runs)
    assert "| T0 | 50 | 1000 |" in text
    assert "| Addition, attention | 1.3 ± 0.6 (1) | not run (1) |" in text
    assert (
        "| Multiplication, unweighted | not run (2) | 1/2 solved; mean 75.0% after 33 (33) |"
        in text
    )
    assert "| multiplication unweighted T0=1000 | 0.01 | 0: 26, 1: 40 (no) | 10 |" in text


def test_the_variable_length_table_alone_has_no_table_1_grid() -> None:
    """raffel_variable's runs are all variable-length: its block starts with their table,
    not with Table 1's legend and a "No fixed-length runs." line."""
    run = _raffel("addition", "ffattn", 50, 0, None)
    variable = _run(
        {**run.config, "task.variable_length": True, "task.max_length": 10000},
        {**run.metrics, "final": {"val/accuracy": 0.25}},
    )
    lines = raffel_table([variable]).splitlines()
    assert lines[0].startswith("Variable length (T0 from 50 to 10000)")
    assert not any("No fixed-length runs" in line or "Epochs to 100%" in line for line in lines)
    assert "| addition | attention | 1 | 50.0 (n=1) | 25.0 (n=1) | 40 (n=1) | 99.9% |" in lines
    # its settings line names the range of lengths, not "T0=50" (the shortest drawn)
    assert "| addition attention, variable T0 from 50 to 10000 | 0.01 | 0: 40 (no) | 10 |" in lines
    # an older record without its longest length: the range says only what it knows
    del variable.config["task.max_length"]
    lines = raffel_table([variable]).splitlines()
    assert lines[0].startswith("Variable length (T0 from 50):")
    assert "| addition attention, variable T0 from 50 | 0.01 | 0: 40 (no) | 10 |" in lines
    variable.config["task.max_length"] = 10000
    both = raffel_table([variable, _raffel("addition", "ffattn", 50, 0, 1)]).splitlines()
    assert both[0].startswith("Epochs to 100%") and "" in both
    assert both[both.index("| Addition, attention | 1.0, n=1 (1) |") + 1] == ""  # one blank line


def test_the_variable_length_table_shows_the_last_epoch_beside_the_best_checkpoint() -> None:
    """The variable-length accuracy swings from epoch to epoch (22% to 99% over the last 50
    epochs of one run), and the best checkpoint is chosen on the test set itself (no separate
    validation set, as in the authors' code): the table shows the accuracy after the last
    epoch beside it, mean ± std over the seeds, and says how the checkpoint was chosen."""
    runs = []
    for seed, (best, last) in enumerate([(0.99, 0.96), (0.97, 0.80), (0.98, 0.90)]):
        run = _raffel("multiplication", "ffattn", 50, seed, None)
        runs.append(
            _run(
                {**run.config, "task.variable_length": True, "task.max_length": 10000},
                {**run.metrics, "test": {"test/accuracy": best}, "final": {"val/accuracy": last}},
            )
        )
    lines = raffel_table(runs).splitlines()
    assert "| ours: best checkpoint (%) | ours: after the last epoch (%) |" in lines[2]
    assert "| multiplication | attention | 3 | 98.0 ± 1.0 | 88.7 ± 8.1 | 40 ± 0 | 99.4% |" in lines
    assert any("best_accuracy" in line and "test set" in line for line in lines)
    assert not any(line.startswith("(val)") for line in lines)
    # a row whose runs had a separate validation set is marked, and the note goes with it
    for run in runs:
        run.config["task.separate_validation"] = True
    lines = raffel_table(runs).splitlines()
    assert (
        "| multiplication | attention | 3 | 98.0 ± 1.0 | 88.7 ± 8.1 (val) | 40 ± 0 | 99.4% |"
        in lines
    )
    assert not any("best_accuracy" in line for line in lines)
    assert any(line.startswith("(val)") for line in lines)
    # mixed: each row says which set its last-epoch figure is on, and both notes stand
    addition = _raffel("addition", "ffattn", 50, 0, None)
    runs.append(
        _run(
            {**addition.config, "task.variable_length": True, "task.max_length": 10000},
            {**addition.metrics, "final": {"val/accuracy": 0.5}},
        )
    )
    lines = raffel_table(runs).splitlines()
    assert "| addition | attention | 1 | 50.0 (n=1) | 50.0 (n=1) | 40 (n=1) | 99.9% |" in lines
    assert (
        "| multiplication | attention | 3 | 98.0 ± 1.0 | 88.7 ± 8.1 (val) | 40 ± 0 | 99.4% |"
        in lines
    )
    assert any("best_accuracy" in line for line in lines)
    assert any(line.startswith("(val)") for line in lines)


def test_a_record_without_a_last_epoch_figure_leaves_its_cell_empty() -> None:
    """Records whose ``final`` is missing, null, not an object, or not a number: the table is
    still written (before, a null ``final`` raised AttributeError)."""
    for final in (None, [], {"val/accuracy": True}, {"val/accuracy": float("nan")}, "x"):
        run = _raffel("addition", "ffattn", 50, 0, None)
        metrics = {**run.metrics, "final": final}
        variable = _run({**run.config, "task.variable_length": True}, metrics)
        lines = raffel_table([variable]).splitlines()
        assert "| addition | attention | 1 | 50.0 (n=1) |  | 40 (n=1) | 99.9% |" in lines, final


def test_sweep_command_is_one_resumable_multirun(tmp_path: Path) -> None:
    table = TABLES["sst2"]
    command = sweep_command(table, "attention", tmp_path, [0, 1, 2], jobs=2)
    assert command[1:4] == ["-m", "attnlstm", "-m"]
    assert "seed=0,1,2" in command
    assert f"hydra.sweep.dir={tmp_path / 'sst2' / 'attention'}" in command
    assert command[-2:] == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert "hydra/launcher=joblib" not in sweep_command(table, "mean", tmp_path, [0], jobs=1)
    pinned = Sweep("one", ("task=addition",), seeds=(7,))
    assert pinned.arguments([0, 1, 2]) == ["task=addition", "seed=7"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "unknown table 'nosuch'; the tables are raffel, "),
        (["sst2", "--sweeps", "nosuch"], "table sst2 has no sweep nosuch; its sweeps are"),
        (["sst2", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        ([], "name a table: raffel, "),
        (["sst2", "--out", "my runs"], "--out my runs: use a folder name of letters"),
        (["sst2", "--out", "o", "--keep", "o/sst2/kept"], "overlap; keep the records elsewhere"),
        (["pos_ewt", "--only", "attention"], "--only attention: write KEY=VALUE or KEY=V1,V2"),
        (["pos_ewt", "--only", "attention="], "--only attention=: write KEY=VALUE"),
        (["pos_ewt", "--only", "seed=1"], "choose seeds with --seeds"),
        (["pos_ewt", "--only", "=dot"], "--only =dot: write KEY=VALUE"),
        (["pos_ewt", "--only", "attention=[dot"], "--only attention=[dot: write KEY=VALUE"),
        (
            ["sst2", "--only", "model=lstm_attn"],
            "they give lstm, mean (sweeps attention, subwords leave model to their experiment)",
        ),
        (
            ["pos_ewt", "--only", "task=x"],
            "no sweep of table pos_ewt sets task on its command line",
        ),
        (
            ["pos_ewt", "--only", "attention=dot,lstm"],
            "give attention no value lstm; they give none, dot, general,",
        ),
        (
            ["raffel", "--sweeps", "lstm", "--only", "model=ffattn"],
            "the sweeps of table raffel give model no value ffattn; they give lstm",
        ),
        (
            ["raffel", "--only", "model=mean", "--only", "model=ffattn"],
            "give model no value ffattn; they give mean",  # what the first --only left
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_print_only_reads_what_is_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sst2", "--print-only", "--out", str(tmp_path)]) == 0
    assert "No finished runs yet." in capsys.readouterr().out
    run = tmp_path / "sst2" / "attention" / "attention=dot,seed=0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "seed: 0\nmodel:\n  name: lstm_attn\nattention:\n  method: dot\n"
    )
    metrics = {"status": "completed", "test": {"test/acc": 0.8}, "wall_time_s": 60.0}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["sst2", "--print-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 finished run under" in out and "| lstm_attn | dot | 0 | 0 | 80.00 (n=1) |" in out


@pytest.mark.slow
def test_a_table_runs_its_sweep_and_a_second_call_finishes_only_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    tiny = tuple(x for x in TINY if not x.startswith("trainer.progress_bar"))
    table = Table(
        "tiny",
        "a tiny table",
        "tests",
        (Sweep("methods", (*tiny, "trainer.attention_images=0", "attention=dot,general")),),
        TABLES["sst2"].render,
    )
    monkeypatch.setitem(TABLES, "tiny", table)
    monkeypatch.chdir(tmp_path)
    argv = ["tiny", "--seeds", "0", "1", "--jobs", "1", "--out", "out"]
    assert main(argv) == 0
    first = capfd.readouterr().out
    assert "4 finished runs under out/tiny" in first
    folders = sorted(p.parent for p in (tmp_path / "out/tiny/methods").rglob("metrics.json"))
    assert len(folders) == 4
    stamps = [(f / "metrics.json").stat().st_mtime_ns for f in folders]
    # --left names the folders Hydra made as finished, and the third seed's as not started
    assert main(["tiny", "--left", "--seeds", "0", "1", "2", "--out", "out"]) == 0
    left = capfd.readouterr().out
    assert "Table tiny: 6 runs: 2 not started, 4 finished." in left
    started = sorted(
        line.split(": ", 1)[1] for line in left.splitlines() if "not started: " in line
    )
    # a finished job made under another default (here: its tolerance) is skipped, and named
    config = folders[0] / "config.yaml"
    config.write_text(config.read_text().replace("tolerance: 0.04", "tolerance: 0.05"))
    assert main([*argv[:2], "0", "1", "2", *argv[4:]]) == 0  # a third seed: two new runs
    second = capfd.readouterr().out
    assert "6 jobs: 4 skipped (finished before), 0 resumed from their last.pt, 2 started" in second
    assert second.count("differs from what this sweep composes today") == 1
    assert f"job {folders[0].name}: finished before (completed); skipped; its config.yaml" in second
    assert "composes today in task.tolerance: move its folder away" in second
    assert [(f / "metrics.json").stat().st_mtime_ns for f in folders] == stamps
    assert "6 finished runs under out/tiny" in second
    made = sorted(p.parent.name for p in (tmp_path / "out/tiny/methods").rglob("metrics.json"))
    assert started == sorted(set(made) - {f.name for f in folders})  # what --left foretold

    # kept records let a fresh checkout skip the six runs
    keep = ["--keep", "kept"]
    assert main([*argv[:2], "0", "1", "2", *argv[4:], *keep, "--print-only"]) == 0
    capfd.readouterr()
    fresh = [*argv[:2], "0", "1", "2", *argv[4:6], "--out", "fresh", *keep]
    assert main(fresh) == 0
    third = capfd.readouterr().out
    assert "6 finished runs restored from kept/tiny" in third
    assert "6 jobs: 6 skipped (finished before), 0 resumed from their last.pt, 0 started" in third
    assert not list((tmp_path / "fresh").rglob("*.pt"))  # nothing trained


def _record(folder: Path, method: str, accuracy: float, status: str = "completed") -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        f"seed: 0\nmodel:\n  name: lstm_attn\nattention:\n  method: {method}\n"
    )
    metrics = {"status": status, "test": {"test/acc": accuracy}, "wall_time_s": 60.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_the_table_says_how_many_of_its_runs_are_not_finished_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docs' block counts the table's runs that have no finished record, those of every
    sweep and value (not only the ones chosen), so a half-run table says so; before, runs not
    started were not counted at all."""
    sweeps = (Sweep("methods", ("attention=dot,general",)), Sweep("plain", ("attention=none",)))
    monkeypatch.setitem(
        TABLES, "two", Table("two", "two sweeps", "tests", sweeps, TABLES["sst2"].render)
    )
    _record(tmp_path / "two/methods/attention=dot,seed=0", "dot", 0.8)
    argv = ["two", "--print-only", "--seeds", "0", "--out", str(tmp_path)]
    assert main([*argv, "--sweeps", "methods", "--only", "attention=dot"]) == 0
    out = capsys.readouterr().out
    assert "1 finished run under" in out
    assert "(2 of the table's 3 runs not finished yet: `--left` lists them" in out
    _record(tmp_path / "two/methods/attention=general,seed=0", "general", 0.7)
    _record(tmp_path / "two/plain/attention=none,seed=0", "none", 0.6)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 finished runs under" in out and "not finished" not in out


def test_kept_records_travel_to_a_fresh_checkout_and_are_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, keep = tmp_path / "out", tmp_path / "keep"
    _record(out / "sst2/attention/attention=dot,seed=0", "dot", 0.8)
    _record(out / "sst2/attention/attention=general,seed=0", "general", 0.1, status="running")
    (out / "sst2/attention/attention=dot,seed=0/last.pt").write_bytes(b"large")
    assert main(["sst2", "--print-only", "--out", str(out), "--keep", str(keep)]) == 0
    assert "1 finished run kept in" in capsys.readouterr().out
    kept = keep / "sst2/attention/attention=dot,seed=0"
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "metrics.json"]
    assert not (keep / "sst2/attention/attention=general,seed=0").exists()  # not finished

    fresh = tmp_path / "fresh"
    assert main(["sst2", "--print-only", "--out", str(fresh), "--keep", str(keep)]) == 0
    printed = capsys.readouterr().out
    assert "1 finished run restored from" in printed
    assert "| lstm_attn | dot | 0 | 0 | 80.00 (n=1) |" in printed
    assert (fresh / "sst2/attention/attention=dot,seed=0/metrics.json").is_file()

    # a run made since is kept beside; the kept one is not rewritten
    (kept / "metrics.json").write_text(json.dumps({"status": "completed", "test": {}}))
    _record(fresh / "sst2/attention/attention=concat,seed=0", "concat", 0.9)
    assert main(["sst2", "--print-only", "--out", str(fresh), "--keep", str(keep)]) == 0
    assert json.loads((kept / "metrics.json").read_text())["test"] == {}
    assert (keep / "sst2/attention/attention=concat,seed=0/metrics.json").is_file()


def test_a_stopped_command_still_keeps_the_runs_that_finished_before_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep stopped (Ctrl-C, ``kill``) after one of its runs finished: that run's record
    is kept at once, not only by a later command; the unfinished one is not."""
    out, keep = tmp_path / "out", tmp_path / "keep"

    def a_sweep_stopped_after_one_run(command: list[str]) -> int:
        _record(out / "sst2/attention/attention=dot,seed=0", "dot", 0.8)
        _record(out / "sst2/attention/attention=general,seed=0", "general", 0.1, "interrupted")
        return EXIT_INTERRUPTED

    monkeypatch.setattr(cli, "run_sweep", a_sweep_stopped_after_one_run)
    argv = ["sst2", "--seeds", "0", "--out", str(out), "--keep", str(keep)]
    assert main(argv) == EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert "1 finished run kept in" in captured.out
    assert "interrupted; run the same command again" in captured.err
    assert (keep / "sst2/attention/attention=dot,seed=0/metrics.json").is_file()
    assert not (keep / "sst2/attention/attention=general,seed=0").exists()


def test_the_table_says_when_and_where_its_runs_were_written() -> None:
    def written(day: str, cpu: str) -> dict[str, Any]:
        return {"at": f"{day}T10:00:00+00:00", "cpu": cpu, "cores": 2, "torch": "2.13.0"}

    runs = [_classifier("dot", seed, 0.8) for seed in range(4)]
    runs[0].metrics["written"] = written("2026-12-02", "EPYC") | {"device": "cpu"}
    runs[1].metrics["written"] = written("2026-12-04", "EPYC") | {"device": "cpu"}
    runs[2].metrics["written"] = written("2026-12-03", "Xeon") | {"device": "cuda:0"}
    assert machines_line(runs) == (
        "Written 2026-12-02 to 2026-12-04 on EPYC (2 cores), torch 2.13.0, cpu: 2 runs;"
        " Xeon (2 cores), torch 2.13.0, cuda:0: 1 run. 1 run does not record its machine."
    )
    runs[3].metrics["written"] = written("2026-12-04", "EPYC") | {"device": "cpu"}
    runs.append(_classifier("dot", 4, 0.8))
    runs.append(_classifier("dot", 5, 0.8))
    assert machines_line(runs).endswith(
        "cpu: 3 runs; Xeon (2 cores), torch 2.13.0, cuda:0: 1 run."
        " 2 runs do not record their machine."
    )


def test_runs_are_counted_in_words() -> None:
    assert [runs_count(n) for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert runs_count(1, "finished") == "1 finished run"
    assert runs_count(21, "finished") == "21 finished runs"


def test_runs_of_other_settings_are_never_averaged_together_and_repeats_count_once() -> None:
    fast = [_classifier("additive", seed, 0.85) for seed in range(2)]
    slow = [_classifier("additive", seed, 0.80) for seed in range(2)]
    for run in slow:
        run.config["optim.lr"] = 0.002
    for run in fast:
        run.config["optim.lr"] = 0.001
    repeat = _classifier("additive", 0, 0.10)  # the same run read from a second folder
    repeat.config["optim.lr"] = 0.001
    text = method_table(
        [*fast, *slow, repeat],
        [("model", "model.name"), ("attention", "attention.method")],
        [Column("acc", "test/acc", 100)],
    )
    assert "| lstm_attn | additive (optim.lr=0.001) | 0, 1 | 85.00 ± 0.00 (n=2) |" in text
    assert "| lstm_attn | additive (optim.lr=0.002) | 0, 1 | 80.00 ± 0.00 (n=2) |" in text


def test_a_table_1_cell_with_several_rates_shows_the_best_as_the_paper_did() -> None:
    runs = []
    for seed in range(3):
        quick = _raffel("addition", "mean", 1000, seed, 2)
        slow = _raffel("addition", "mean", 1000, seed, 5)
        slow.config["optim.lr"] = 0.001
        runs += [quick, slow]
    text = raffel_table(runs)
    assert "| Addition, unweighted | 2.0 ± 0.0 (2) |" in text
    assert "| addition unweighted T0=1000 | 0.01* | 0: 2, 1: 2, 2: 2 | 10 |" in text
    assert "| addition unweighted T0=1000 | 0.001 | 0: 5, 1: 5, 2: 5 | 10 |" in text


def test_dry_run_prints_each_sweep_as_a_shell_command_once_per_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["lm_wikitext2", "--dry-run", "--seeds", "0", "0", "1", "--jobs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("$ attnlstm-train -m ") for line in lines)
    assert "seed=0,1 " in lines[1]
    assert "'model.adaptive_cutoffs=[2000,10000]'" in lines[1]  # quoted for the shell


def test_diverged_runs_are_named_not_averaged_nor_called_unfinished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(tmp_path / "sst2/attention/attention=dot,seed=0", "dot", 0.8)
    folder = tmp_path / "sst2/attention/attention=dot,seed=1"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 1\nmodel:\n  name: lstm_attn\n")
    (folder / "metrics.json").write_text(json.dumps({"status": "diverged", "test": {}}))
    assert main(["sst2", "--print-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 finished run under" in out and "unfinished" not in out
    assert "1 run diverged before a test and is left out: attention/attention=dot,seed=1." in out
    second = tmp_path / "sst2/attention/attention=dot,seed=2"
    second.mkdir(parents=True)
    (second / "config.yaml").write_text("seed: 2\nmodel:\n  name: lstm_attn\n")
    (second / "metrics.json").write_text(json.dumps({"status": "diverged", "test": {}}))
    assert main(["sst2", "--print-only", "--out", str(tmp_path)]) == 0
    assert "2 runs diverged before a test and are left out: " in capsys.readouterr().out


def test_doc_writes_the_table_between_its_markers_and_nowhere_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(tmp_path / "out/sst2/attention/attention=dot,seed=0", "dot", 0.8)
    page = tmp_path / "sst2.md"
    start, end = doc_markers("sst2")
    page.write_text(f"# SST-2\n\nintro\n\n{start}\nold table\n{end}\n\nafter\n")
    argv = ["sst2", "--print-only", "--out", str(tmp_path / "out"), "--doc", str(page)]
    assert main(argv) == 0
    text = page.read_text()
    assert text.startswith(f"# SST-2\n\nintro\n\n{start}\n`attnlstm-reproduce sst2`: 1 finished")
    assert "| lstm_attn | dot | 0 | 0 | 80.00 (n=1) |" in text and "old table" not in text
    assert text.endswith(f"{end}\n\nafter\n")
    assert main(argv) == 0 and page.read_text() == text  # the same runs, the same page
    page.write_text("# no markers\n")
    capsys.readouterr()
    assert main(argv) == 2
    assert "has no place for table sst2: put the lines" in capsys.readouterr().err
    assert page.read_text() == "# no markers\n"


def test_sst2_rows_say_whether_the_runs_read_subwords() -> None:
    """Records kept before ``task.subword_buckets`` existed have no such key: they are the
    rows with 0 buckets, apart from the runs with subwords, not averaged with them."""
    plain = [_classifier("additive", seed, 0.84) for seed in range(2)]
    subwords = [_classifier("additive", seed, 0.86) for seed in range(2)]
    for run in subwords:
        run.config.update(
            {"task.subword_buckets": 20000, "task.subword_min_n": 3, "task.subword_max_n": 5}
        )
    lines = TABLES["sst2"].render([*plain, *subwords]).splitlines()
    assert lines[0].startswith("| model | attention | subword buckets | seeds | test acc |")
    assert lines[2].startswith("| lstm_attn | additive | 20000 | 0, 1 | 86.00 ± 0.00 (n=2) |")
    assert lines[3].startswith("| lstm_attn | additive | 0 | 0, 1 | 84.00 ± 0.00 (n=2) |")


def test_only_narrows_a_sweep_to_some_of_its_values_in_its_own_order() -> None:
    sweep = Sweep("s", ("experiment=x", "attention=none,dot,general", "m.cut=[1,2]"), cost="c")
    assert sweep.values("attention") == ("none", "dot", "general")
    assert sweep.values("m.cut") == ("[1,2]",)  # a list in brackets is one value
    assert sweep.values("task") is None
    narrowed = sweep.only("attention", ["general", "none", "feedforward"])
    assert narrowed is not None
    assert narrowed.overrides == ("experiment=x", "attention=none,general", "m.cut=[1,2]")
    assert (narrowed.name, narrowed.cost) == ("s", "c")
    assert sweep.only("attention", ["concat"]) is None
    assert sweep.only("task", ["addition"]) is None  # left to the config: not this sweep's jobs


@pytest.mark.parametrize(
    ("table", "only"),
    [
        ("pos_ewt", ["attention=feedforward,scaled_dot"]),
        ("raffel", ["model=mean"]),
        ("raffel", ["model=ffattn", "task.min_length=100,10000"]),
        ("seq2seq", ["attention=dot,feedforward", "model.attention_style=bahdanau"]),
        ("lm_wikitext2", ["model.adaptive_cutoffs=[2000,10000]"]),  # a list is one value
        ("raffel", ["task.mask_padding=True", "task=multiplication"]),
    ],
)
def test_only_runs_a_subset_of_the_tables_jobs_in_the_same_folders(
    table: str, only: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    def jobs_of(lines: list[str]) -> set[frozenset[str]]:
        """Every job of the printed multiruns, as Hydra's basic sweeper splits them (its
        overrides name the job's folder), with the sweep's folder."""
        parser = OverridesParser.create()
        jobs = set()
        for line in lines:
            overrides = parser.parse_overrides(shlex.split(line)[3:])
            (batch,) = BasicSweeper.split_arguments(overrides, None)
            jobs |= {frozenset(job) for job in batch}
        return jobs

    argv = [table, "--dry-run", "--jobs", "1"]
    assert main(argv) == 0
    full = jobs_of(capsys.readouterr().out.splitlines())
    assert main([*argv, *(a for o in only for a in ("--only", o))]) == 0
    narrowed = jobs_of(capsys.readouterr().out.splitlines())
    wanted = {
        k: [v] if v.startswith("[") else v.split(",") for k, v in (o.split("=", 1) for o in only)
    }

    def keeps(job: frozenset[str]) -> bool:
        values = dict(o.split("=", 1) for o in job)
        return all(k in values and values[k] in v for k, v in wanted.items())

    # the same runs (hydra.sweep.dir included, so the same folders), exactly those wanted
    assert narrowed and narrowed == {job for job in full if keeps(job)}


def test_sweeps_run_in_the_order_given_and_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["raffel", "--sweeps", "lstm", "fixed", "lstm", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("hydra.sweep.dir=")[1].split()[0] for line in lines] == [
        "outputs/reproduce/raffel/lstm",
        "outputs/reproduce/raffel/fixed",
    ]


def test_a_forget_bias_lstm_is_a_row_of_its_own_after_its_model() -> None:
    runs = [_raffel("addition", "lstm", 50, 0, None), _raffel("addition", "lstm", 50, 1, 3)]
    runs[1].config["model.forget_bias"] = 1.0
    runs.append(_raffel("addition", "lstm_attn", 50, 0, 2))
    runs.append(_raffel("addition", "lstm", 100, 0, None))
    runs[-1].config["model.forget_bias"] = 0.0  # today's default: the plain LSTM's row
    lines = raffel_table(runs).splitlines()
    rows = [line for line in lines if line.startswith("| Addition")]
    assert rows == [
        "| Addition, LSTM + attention | 2.0, n=1 | not run |",
        "| Addition, LSTM | 0/1 solved; mean 50.0% after 40 | 0/1 solved; mean 50.0% after 40 |",
        "| Addition, LSTM, forget bias 1 | 3.0, n=1 | not run |",
    ]
    assert "| addition LSTM, forget bias 1 T0=50 | 0.01 | 1: 3 | 10 |" in lines
