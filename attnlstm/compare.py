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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from attnlstm.cli.common import ArgumentParser, UsageError, fail
from attnlstm.loggers.base import flatten_config

#: config keys that never distinguish runs in a useful way
_IGNORED_KEYS = {"resume", "data_dir", "trainer.progress_bar", "trainer.threads"}


class CompareError(SystemExit):
    """Bad input (no runs under the folder, an unknown sort key, a bad option): :func:`main`
    prints it as one ``error:`` line and the command exits with status 2.

    A SystemExit whose text is the message (``str(error)``) and whose ``code`` is 2, so that
    a caller of :func:`build_table` or :func:`main` that does not catch it stops with status
    2 too, as it did with argparse's own errors.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2


def _warn(message: str) -> None:
    """One ``warning:`` line on stderr (stdout carries the table only)."""
    print(f"warning: {message}", file=sys.stderr)


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


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    """How JSON names the type of ``value`` (for the warning about a metrics.json)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_metrics(path: Path) -> dict[str, Any]:
    """The metrics of a run: ``path`` (a metrics.json) as an object whose ``test`` and
    ``best`` are objects and whose ``history`` is a list of objects, where present.

    Raises:
        ValueError: what is wrong with the file, worded to follow its name ("is not valid
            JSON ...": cut short by a run killed while writing it, say; "holds an array, not
            a JSON object"; a part of another type).
        OSError: the file cannot be read.
    """
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"is not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}:"
            " cut short?)"
        ) from None
    if not isinstance(metrics, dict):
        raise ValueError(f"holds {_json_type(metrics)}, not a JSON object")
    for key in ("test", "best"):
        if key in metrics and not isinstance(metrics[key], dict):
            raise ValueError(f"has {_json_type(metrics[key])} as {key!r}, not an object")
    history = metrics.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ValueError("has a 'history' that is not a list of objects")
    monitor = metrics.get("monitor")
    if monitor is not None and not (
        isinstance(monitor, dict)
        and "/" in str(monitor.get("metric", ""))
        and monitor.get("mode") in ("min", "max")
    ):
        raise ValueError("has a 'monitor' without a metric (split/name) and a mode (min or max)")
    return metrics


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml, flattened (``model.hidden_size``); ValueError (worded as
    :func:`read_metrics`'s) if it is not a YAML mapping, OSError if it cannot be read."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except (YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        first_line = (str(error).splitlines() or [""])[0]
        raise ValueError(f"is not readable YAML ({first_line})") from None
    if not isinstance(config, dict):
        raise ValueError("is not a YAML mapping of config keys")
    return flatten_config(config)  # type: ignore[arg-type]


def find_runs(root: Path, warn: Callable[[str], None] = _warn) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included). A run whose
    metrics.json or config.yaml cannot be read (cut short, not an object, unreadable) is
    skipped with one ``warn`` line naming the file, so that one broken run does not hide
    the others."""
    runs = []
    for metrics_path in sorted(Path(root).rglob("metrics.json")):
        run_dir = metrics_path.parent
        config_path = run_dir / "config.yaml"
        reading = metrics_path
        try:
            metrics = read_metrics(metrics_path)
            reading = config_path
            config = read_config(config_path) if config_path.is_file() else {}
        except OSError as error:
            warn(f"skipped {run_dir}: {reading} cannot be read ({error.strerror or error})")
            continue
        except ValueError as error:
            warn(f"skipped {run_dir}: {reading} {error}")
            continue
        runs.append(Run(run_dir, config, metrics))
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
        raise CompareError(
            f"cannot sort by {sort_by!r}; choose one of {', '.join(metric_names + keys)}"
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


def plot_validation_curves(runs: Sequence[Run], root: Path, path: Path) -> Path | None:
    """One panel per validation metric, one line per run (labelled by its differing keys),
    written to ``path``; None, and nothing written, when no run has a validation history.

    Raises:
        OSError: ``path`` cannot be written (a read-only folder, no such folder).
        ValueError: matplotlib cannot write the format of ``path``'s suffix.
    """
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
        return None
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for run in runs:
        history = run.metrics.get("history", [])
        label = ", ".join(f"{k}={run.config.get(k)}" for k in keys) or str(run.path.name)
        for axis, metric in zip(axes[0], metrics, strict=True):
            points = [
                (r["epoch"], r[metric])
                for r in history
                if _is_number(r.get("epoch")) and _is_number(r.get(metric))
            ]
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
    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


def _is_number(value: Any) -> bool:
    """Whether ``value`` can be plotted (a history written by hand may hold anything)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-compare``."""
    parser = ArgumentParser(
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnlstm-compare`` with ``argv`` (default: ``sys.argv[1:]``): print the table
    (stdout) and write the plot; returns 0 once the table is shown, even when the plot could
    not be written (a warning on stderr says why).

    Raises:
        CompareError: bad input (a bad option, no folder, no readable runs, an unknown sort
            key), after one ``error:`` line on stderr: the command exits with status 2.
    """
    try:
        args = build_parser().parse_args(argv)
        return _compare(args)
    except (UsageError, CompareError) as error:
        fail(error)
        raise error if isinstance(error, CompareError) else CompareError(str(error)) from None


def _compare(args: argparse.Namespace) -> int:
    """The table and the plot of the runs under ``args.root``."""
    if not args.root.is_dir():
        raise CompareError(f"{args.root} is not a folder")
    runs = find_runs(args.root)
    if not runs:
        raise CompareError(
            f"no readable runs under {args.root}: no folder there holds a metrics.json that"
            " attnlstm-compare can read (point it at a sweep folder, or a folder of run folders)"
        )
    header, rows = build_table(runs, args.root, args.sort_by, args.descending)
    print(
        to_markdown(header, rows) if args.format == "markdown" else to_csv(header, rows),
        end="" if args.format == "csv" else "\n",
    )
    if not args.no_plot:
        # the table is shown: a plot that cannot be written is a warning, not a failure
        path = args.plot or args.root / "val_curves.png"
        try:
            written = plot_validation_curves(runs, args.root, path)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            _warn(
                f"could not write the validation curves to {path} ({reason}); the table is"
                " complete: choose another file with --plot PATH, or leave the plot out with"
                " --no-plot"
            )
        else:
            if written is None:
                _warn("no validation curves to plot: no run has a validation history")
            else:
                print(f"validation curves: {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
