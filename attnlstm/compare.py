"""``attnlstm-compare DIR``: a table of the runs under DIR and a plot of their validation curves.

Every folder under DIR holding a ``metrics.json`` is a run; its ``config.yaml`` says how it was
configured. The table has one row per run, the config keys whose values differ between runs,
and the final metrics, sorted by a chosen metric; the plot has one panel per validation metric
and one line per run.

    attnlstm-compare outputs/multirun/2026-11-22_10-00-00-000000
    attnlstm-compare outputs --sort test/loss --format csv --plot curves.png
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlstm.loggers.base import flatten_config

#: config keys that never distinguish runs in a useful way
_IGNORED_KEYS = {"resume", "data_dir", "trainer.progress_bar"}


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    def final(self) -> dict[str, float]:
        """The numbers a run is compared by: test metrics, best validation, epochs, time."""
        values: dict[str, Any] = dict(self.metrics.get("test", {}))
        for key, value in self.metrics.get("best", {}).items():
            values["best_epoch" if key == "epoch" else f"best_{key}"] = value
        values["epochs"] = self.metrics.get("epochs")
        values["solved"] = self.metrics.get("solved")
        values["wall_time_s"] = self.metrics.get("wall_time_s")
        values["status"] = self.metrics.get("status")
        return values


def find_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included)."""
    runs = []
    for metrics_path in sorted(Path(root).rglob("metrics.json")):
        run_dir = metrics_path.parent
        config_path = run_dir / "config.yaml"
        config = (
            flatten_config(OmegaConf.to_container(OmegaConf.load(config_path)))
            if config_path.is_file()
            else {}
        )
        runs.append(Run(run_dir, config, json.loads(metrics_path.read_text())))
    return runs


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run."""
    keys = sorted({k for run in runs for k in run.config} - _IGNORED_KEYS)
    return [k for k in keys if len({repr(run.config.get(k)) for run in runs}) > 1]


def _sort_key(value: Any, descending: bool) -> tuple[int, float]:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return (1, 0.0)  # runs without the metric go last
    return (0, -value if descending else value)


def build_table(
    runs: Sequence[Run], root: Path, sort_by: str | None, descending: bool | None
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, differing config keys, final metrics; sorted by ``sort_by``."""
    keys = differing_keys(runs)
    metric_names: list[str] = []
    for run in runs:
        metric_names += [m for m in run.final() if m not in metric_names]
    if sort_by is None:
        monitor = next((r.metrics.get("monitor") for r in runs if r.metrics.get("monitor")), None)
        if monitor:
            sort_by = "test/" + monitor["metric"].split("/", 1)[1]
            descending = monitor["mode"] == "max" if descending is None else descending
    if sort_by is not None and sort_by not in metric_names and sort_by not in keys:
        raise SystemExit(
            f"attnlstm-compare: cannot sort by {sort_by!r}; choose one of"
            f" {', '.join(metric_names + keys)}"
        )
    descending = True if descending is None else descending
    header = ["run", *keys, *metric_names]
    rows = []
    for run in runs:
        final = run.final()
        name = str(run.path.relative_to(root)) if run.path != root else "."
        rows.append(
            [name, *(run.config.get(k) for k in keys), *(final.get(m) for m in metric_names)]
        )
    if sort_by is not None:
        column = header.index(sort_by)
        rows.sort(key=lambda row: _sort_key(row[column], descending))
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buffer.getvalue()


def plot_validation_curves(runs: Sequence[Run], root: Path, path: Path) -> Path:
    """One panel per validation metric, one line per run (labelled by its differing keys)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = differing_keys(runs)
    metrics = sorted(
        {
            k
            for run in runs
            for rec in run.metrics.get("history", [])
            for k in rec
            if k.startswith("val/")
        }
    )
    if not metrics:
        raise SystemExit("attnlstm-compare: no validation history to plot")
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for run in runs:
        history = run.metrics.get("history", [])
        label = ", ".join(f"{k}={run.config.get(k)}" for k in keys) or str(run.path.name)
        for axis, metric in zip(axes[0], metrics, strict=True):
            points = [(r["epoch"], r[metric]) for r in history if metric in r]
            if points:
                epochs, values = zip(*points, strict=True)
                axis.plot(epochs, values, marker="o", markersize=3, label=label)
    for axis, metric in zip(axes[0], metrics, strict=True):
        if "loss" in metric or "perplexity" in metric:
            axis.set_yscale("log")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize="small", loc="best")
    figure.suptitle(str(root))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnlstm-compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="a sweep folder, or any folder of runs")
    parser.add_argument(
        "--sort",
        dest="sort_by",
        default=None,
        help="metric or config key to sort by (default: the test monitor)",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="descending", action="store_false", default=None)
    order.add_argument("--descending", dest="descending", action="store_true")
    parser.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="where to write the PNG (default: ROOT/val_curves.png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    runs = find_runs(args.root)
    if not runs:
        parser.error(f"no runs (folders with metrics.json) under {args.root}")
    header, rows = build_table(runs, args.root, args.sort_by, args.descending)
    print(
        to_markdown(header, rows) if args.format == "markdown" else to_csv(header, rows),
        end="" if args.format == "csv" else "\n",
    )
    if not args.no_plot:
        path = plot_validation_curves(runs, args.root, args.plot or args.root / "val_curves.png")
        print(f"validation curves: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
