"""``attnlstm-compare`` aggregates seeds: one row, and one curve with a band, per group of runs
that differ only in ``seed`` (``--runs``: one per run, as before)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PolyCollection

from attnlstm import compare
from attnlstm.compare import Summary, build_table, draw_validation_curves, find_runs, group_name

#: method -> (seed, test/loss, test/accuracy, epochs, status) of each run
RUNS: dict[str, list[tuple[int, float, float, int, str]]] = {
    "dot": [
        (1, 0.2, 0.9, 3, "completed"),
        (2, 0.9, 0.6, 4, "completed"),
        (3, 1.0, 0.5, 5, "diverged"),
    ],
    "general": [(1, 0.5, 0.7, 2, "completed"), (2, 0.6, 0.8, 3, "completed")],
}


def _val_loss(test_loss: float, epoch: int) -> float:
    """The validation loss of a run at ``epoch`` (falls towards its test loss)."""
    return test_loss + 1.0 / epoch


def write_run(
    folder: Path,
    method: str,
    seed: int,
    loss: float,
    accuracy: float,
    epochs: int,
    status: str = "completed",
) -> None:
    """A run folder as the trainer leaves it: metrics.json and config.yaml."""
    folder.mkdir(parents=True)
    history = [
        {"epoch": e, "val/loss": _val_loss(loss, e), "val/accuracy": accuracy - 0.1 / e}
        for e in range(1, epochs + 1)
    ]
    metrics = {
        "status": status,
        "solved": False,
        "epochs": epochs,
        "wall_time_s": 10.0 * seed,
        "monitor": {"metric": "val/accuracy", "mode": "max"},
        "best": {"epoch": epochs, "val/accuracy": accuracy},
        "test": {"test/loss": loss, "test/accuracy": accuracy},
        "history": history,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(
        f"seed: {seed}\nresume: null\nattention:\n  method: {method}\nmodel:\n  name: lstm_attn\n"
    )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Three seeds of ``dot`` and two of ``general``, named as Hydra's multirun names them.

    By the mean, ``general`` is first (test/loss 0.55 < 0.7, test/accuracy 0.75 > 0.667);
    by its best seed, ``dot`` would be (0.2, 0.9)."""
    root = tmp_path / "sweep"
    for method, runs in RUNS.items():
        for seed, loss, accuracy, epochs, status in runs:
            folder = root / f"attention={method},seed={seed}"
            write_run(folder, method, seed, loss, accuracy, epochs, status)
    return root


def _compare(args: Sequence[object], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert compare.main([str(arg) for arg in args]) == 0
    out, err = capsys.readouterr()
    return out, err


def _markdown(out: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows (column -> cell) of a markdown table."""
    lines = out.strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def _column(method: str, index: int) -> list[float]:
    return [run[index] for run in RUNS[method]]


def test_groups_hold_the_mean_std_and_n_of_their_seeds(sweep: Path) -> None:
    header, rows = build_table(find_runs(sweep), sweep, None, None)
    assert header[:4] == ["run", "attention.method", "n", "seeds"]
    assert "seed" not in header and "resume" not in header and "model.name" not in header
    assert [row[1] for row in rows] == ["general", "dot"]  # test/accuracy's mean, best first
    for row in rows:
        method = row[1]
        assert row[2] == len(RUNS[method])
        assert row[3] == ", ".join(str(seed) for seed in _column(method, 0))
        for name, index in [("test/loss", 1), ("test/accuracy", 2), ("epochs", 3)]:
            summary = row[header.index(name)]
            assert isinstance(summary, Summary)
            values = _column(method, index)
            assert summary.n == summary.runs == len(values)
            assert summary.mean == pytest.approx(statistics.mean(values), abs=1e-9)
            assert summary.std == pytest.approx(statistics.stdev(values), abs=1e-9)
    dot = rows[1]
    assert dot[0] == "attention=dot,seed=*"
    assert dot[header.index("status")] == "2 completed, 1 diverged"
    assert dot[header.index("solved")] is False  # the common value


def test_markdown_shows_one_row_per_group_with_mean_plus_minus_std(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = _compare([sweep, "--sort", "test/loss", "--ascending", "--no-plot"], capsys)
    header, rows = _markdown(out)
    assert header[:4] == ["run", "attention.method", "n", "seeds"] and "seed" not in header
    assert [row["attention.method"] for row in rows] == ["general", "dot"]  # 0.55 < 0.7
    general, dot = rows
    assert (general["run"], general["n"], general["seeds"]) == (
        "attention=general,seed=*",
        "2",
        "1, 2",
    )
    assert (dot["run"], dot["n"], dot["seeds"]) == ("attention=dot,seed=*", "3", "1, 2, 3")
    assert general["test/loss"] == f"0.55 ± {statistics.stdev([0.5, 0.6]):.2g}"
    assert dot["test/loss"] == f"0.7 ± {statistics.stdev([0.2, 0.9, 1.0]):.2g}"
    assert dot["epochs"] == "4 ± 1"
    assert dot["status"] == "2 completed, 1 diverged" and general["status"] == "completed"

    out, _ = _compare([sweep, "--sort", "test/loss", "--descending", "--no-plot"], capsys)
    assert [row["attention.method"] for row in _markdown(out)[1]] == ["dot", "general"]


def test_runs_flag_shows_every_run_with_its_seed(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag in ("--runs", "--no-aggregate"):
        out, _ = _compare([sweep, flag, "--sort", "test/loss", "--ascending", "--no-plot"], capsys)
        header, rows = _markdown(out)
        assert header[:3] == ["run", "attention.method", "seed"]
        assert "n" not in header and "seeds" not in header
        assert len(rows) == 5
        assert [float(row["test/loss"]) for row in rows] == [0.2, 0.5, 0.6, 0.9, 1.0]
        assert rows[0]["run"] == "attention=dot,seed=1" and rows[0]["status"] == "completed"


def test_csv_has_mean_and_std_columns(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(sweep / "attention=concat,seed=1", "concat", 1, 0.1, 0.95, 2)  # a group of one
    out, _ = _compare([sweep, "--format", "csv", "--no-plot"], capsys)
    reader = csv.DictReader(io.StringIO(out))
    columns = reader.fieldnames or []
    assert columns[:4] == ["run", "attention.method", "n", "seeds"]
    for metric in ("test/loss", "test/accuracy", "best_val/accuracy", "epochs", "wall_time_s"):
        assert f"{metric}_mean" in columns and f"{metric}_std" in columns and metric not in columns
    assert "status" in columns and "status_mean" not in columns
    rows = {row["attention.method"]: row for row in reader}
    assert list(rows) == ["concat", "general", "dot"]  # test/accuracy's mean, best first
    assert rows["concat"]["n"] == "1" and rows["concat"]["test/loss_std"] == ""
    assert rows["concat"]["run"] == "attention=concat,seed=1"
    assert float(rows["concat"]["test/loss_mean"]) == 0.1
    for method in ("dot", "general"):
        losses = _column(method, 1)
        assert rows[method]["n"] == str(len(losses))
        assert float(rows[method]["test/loss_mean"]) == pytest.approx(statistics.mean(losses))
        assert float(rows[method]["test/loss_std"]) == pytest.approx(
            statistics.stdev(losses), rel=1e-5
        )
    # the csv column's name sorts too
    out, _ = _compare([sweep, "--format", "csv", "--no-plot", "--sort", "test/loss_mean"], capsys)
    assert [row["attention.method"] for row in csv.DictReader(io.StringIO(out))] == [
        "dot",
        "general",
        "concat",
    ]


def test_a_metric_some_seeds_lack_is_averaged_over_those_that_have_it(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics_path = sweep / "attention=dot,seed=3" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics.update(status="failed", test={})  # died before testing
    metrics_path.write_text(json.dumps(metrics))
    header, rows = build_table(find_runs(sweep), sweep, "test/loss", False)
    dot = next(row for row in rows if row[1] == "dot")
    summary: Any = dot[header.index("test/loss")]
    assert (summary.n, summary.runs) == (2, 3)
    assert summary.mean == pytest.approx(0.55, abs=1e-9)
    assert summary.std == pytest.approx(statistics.stdev([0.2, 0.9]), abs=1e-9)
    out, _ = _compare([sweep, "--no-plot"], capsys)
    dot_row = next(row for row in _markdown(out)[1] if row["attention.method"] == "dot")
    assert dot_row["test/loss"].endswith("(n=2)") and dot_row["n"] == "3"
    assert dot_row["status"] == "2 completed, 1 failed"


def test_sorting_by_seed_needs_the_runs(sweep: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot sort by 'seed'.*--runs"):
        compare.main([str(sweep), "--sort", "seed", "--no-plot"])
    assert compare.main([str(sweep), "--runs", "--sort", "seed", "--no-plot"]) == 0


def test_plot_draws_a_mean_curve_and_one_band_per_group(sweep: Path) -> None:
    figure = draw_validation_curves(find_runs(sweep), sweep)
    assert figure is not None
    try:
        axes = {axis.get_title(): axis for axis in figure.axes if axis.get_title()}
        assert set(axes) == {"val/accuracy", "val/loss"}
        for axis in axes.values():
            bands = [c for c in axis.collections if isinstance(c, PolyCollection)]
            assert len(bands) == 2  # one per group
            assert len(axis.get_lines()) == 2
        lines = {line.get_label(): line for line in axes["val/loss"].get_lines()}
        assert set(lines) == {"attention.method=dot (n=3)", "attention.method=general (n=2)"}
        dot = lines["attention.method=dot (n=3)"]
        assert list(dot.get_xdata()) == [1, 2, 3, 4, 5]  # the longest run's epochs
        expected = [
            statistics.mean(
                _val_loss(loss, e) for _, loss, _, epochs, _ in RUNS["dot"] if e <= epochs
            )
            for e in range(1, 6)
        ]
        assert list(dot.get_ydata()) == pytest.approx(expected, abs=1e-9)
        legend = figure.axes[-1].get_legend()
        assert legend is not None and "± 1 std" in legend.get_title().get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)

    runs_figure = draw_validation_curves(find_runs(sweep), sweep, aggregate=False)
    assert runs_figure is not None
    try:
        axis = runs_figure.axes[0]
        assert len(axis.get_lines()) == 5
        assert not [c for c in axis.collections if isinstance(c, PolyCollection)]
    finally:
        import matplotlib.pyplot as plt

        plt.close(runs_figure)


def test_the_plot_file_is_written(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = sweep / "curves.png"
    _, err = _compare([sweep, "--plot", plot], capsys)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert f"validation curves: {plot}" in err
    _compare([sweep, "--runs"], capsys)  # the default path, one line per run
    assert (sweep / "val_curves.png").stat().st_size > 5000


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a,seed=1"], "a,seed=1"),
        (["a,seed=1", "a,seed=2", "a,seed=3"], "a,seed=*"),
        (["seed=1,lr=0.1", "seed=12,lr=0.1"], "seed=*,lr=0.1"),
        (["sweep/seed=10/x", "sweep/seed=20/x"], "sweep/seed=*/x"),
        (["0", "1", "2"], "0 +2 more"),
    ],
)
def test_group_name(names: list[str], expected: str) -> None:
    assert group_name(names) == expected


def test_help_explains_the_aggregation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        compare.main(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert "--runs" in text and "--no-aggregate" in text
    assert "sample standard deviation (n-1)" in text and "differ only in seed" in text
    assert "_mean" in text and "``" not in text
