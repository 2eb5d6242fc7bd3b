"""``attnlstm-compare DIR``: a table of the runs under DIR and a plot of their validation curves.

Every folder under DIR holding a ``metrics.json`` is a run; its ``config.yaml`` says how it was
configured. The table shows the config keys whose values differ between runs and the final
metrics (test metrics, best validation metrics, epochs, solved, wall time, status), sorted by a
chosen metric; the plot has one panel per validation metric.

Seeds are aggregated: runs whose configs differ only in ``seed`` form a group, shown as one
row: its run folders (as a pattern such as ``attention=dot,seed=*`` where their names allow),
``n`` (how many runs) and ``seeds``, then each numeric metric as "mean ± std", the std being
the sample standard deviation (n-1) over the runs of the group that have the metric, followed
by "(n=2)" when fewer runs have it. A group of one run shows its value alone. Status and solved
show the common value or counts ("2 completed, 1 diverged"). ``seed`` is not a column then,
and ``--sort`` orders the groups by the metric's mean. In csv, each numeric metric is two
columns, ``<metric>_mean`` and ``<metric>_std`` (empty for a group of one). The plot draws, per
group, the mean validation curve (at each epoch, over the runs that reached it) in a shaded
band of ± one standard deviation (where two runs or more reached the epoch).

``--runs`` (or ``--no-aggregate``) shows one row, and one curve, per run instead, with ``seed``
among the columns.

    attnlstm-compare outputs/multirun/2026-11-22_10-00-00-000000
    attnlstm-compare outputs --sort test/loss --format csv --plot curves.png
    attnlstm-compare outputs --runs --sort seed --ascending
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from attnlstm.cli.common import ArgumentParser, UsageError, fail
from attnlstm.config import KEYS_ADDED_SINCE, NOT_A_SETTING, setting_value
from attnlstm.console import quiet_on_closed_pipe
from attnlstm.loggers.base import flatten_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the config key whose runs are aggregated: runs that differ only in it are one group
SEED_KEY = "seed"

#: what the shaded band around a group's mean validation curve shows
BAND = "mean ± 1 std over seeds"


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
    keys = sorted({k for run in runs for k in run.config} - NOT_A_SETTING)
    return [k for k in keys if len({repr(setting_value(run.config, k)) for run in runs}) > 1]


@dataclass(frozen=True)
class Summary:
    """One numeric metric over the runs of a group: the values of the runs that have it
    (``n`` of them) out of the group's ``runs``."""

    values: tuple[float, ...]
    runs: int

    @property
    def n(self) -> int:
        """How many runs of the group have the metric."""
        return len(self.values)

    @property
    def mean(self) -> float | None:
        """The mean of the values; None when no run has the metric."""
        return _sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation (n-1) of the values; None under two values."""
        mean = self.mean
        if mean is None or self.n < 2:
            return None
        return math.sqrt(_sum([(v - mean) * (v - mean) for v in self.values]) / (self.n - 1))


def _sum(values: Sequence[float]) -> float:
    """The exact sum of ``values`` (:func:`math.fsum`), or inf or NaN where that overflows or
    meets inf and -inf (a diverged run's loss), rather than an error."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return sum(values)


def group_key(run: Run) -> tuple[tuple[str, str], ...]:
    """What runs of one group share: every config key but the seed (and the ignored keys);
    a key added since (:data:`attnlstm.config.KEYS_ADDED_SINCE`) at the value that does
    what runs saved before it did counts as absent, so those runs group with today's."""
    return tuple(
        sorted(
            (k, repr(v))
            for k, v in run.config.items()
            if k != SEED_KEY
            and k not in NOT_A_SETTING
            and not (k in KEYS_ADDED_SINCE and v == KEYS_ADDED_SINCE[k])
        )
    )


def group_runs(runs: Sequence[Run]) -> list[list[Run]]:
    """``runs`` in groups of runs whose configs differ only in ``seed``, in the order of
    each group's first run."""
    groups: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    return list(groups.values())


def _run_name(run: Run, root: Path) -> str:
    """The folder of ``run`` relative to ``root`` ("." for ``root`` itself)."""
    return str(run.path.relative_to(root)) if run.path != root else "."


def group_name(names: Sequence[str]) -> str:
    """One name for the run folders ``names`` of a group: the name of a lone run; else a
    ``*`` pattern that matches them all (``dot,seed=*`` for ``dot,seed=1`` and
    ``dot,seed=12``), or the first name and how many more when they share too little."""
    if len(names) == 1:
        return names[0]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    room = min(len(name) for name in names) - len(prefix)
    suffix = names[0][len(names[0]) - room :] if room > 0 else ""
    for name in names[1:]:
        while suffix and not name.endswith(suffix):
            suffix = suffix[1:]
    # cut at a whole number: seed=1 and seed=12 are seed=*, not seed=1*
    prefix, suffix = prefix.rstrip("0123456789"), suffix.lstrip("0123456789")
    if not prefix + suffix:
        return f"{names[0]} +{len(names) - 1} more"
    return f"{prefix}*{suffix}"


def _seeds(group: Sequence[Run]) -> str:
    """The seeds of a group's runs, in order ("0, 1, 2"); empty when none has one."""
    seeds = [run.config[SEED_KEY] for run in group if run.config.get(SEED_KEY) is not None]
    if all(_is_number(seed) for seed in seeds):
        seeds.sort()
    else:
        seeds.sort(key=str)
    return ", ".join(str(seed) for seed in seeds)


def _tally(values: Sequence[Any]) -> Any:
    """A non-numeric field over a group: the common value, or counts, most frequent first
    ("2 completed, 1 diverged"; a run without the field counts as "missing")."""
    if len({repr(v) for v in values}) == 1:
        return values[0]
    counts = Counter(_cell(v) or "missing" for v in values)
    return ", ".join(f"{count} {value}" for value, count in counts.most_common())


def _sort_key(value: Any, descending: bool) -> tuple[int, float]:
    if isinstance(value, Summary):
        value = value.mean  # groups sort by the mean
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return (1, 0.0)  # runs without the metric go last
    return (0, -value if descending else value)


def build_table(
    runs: Sequence[Run],
    root: Path,
    sort_by: str | None,
    descending: bool | None,
    aggregate: bool = True,
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows, sorted by ``sort_by`` (a metric or config key; default: the test
    metric of the runs' monitor).

    ``aggregate`` (the default): one row per group of runs that differ only in ``seed``
    (:func:`group_runs`): the group's name (:func:`group_name`), the config keys that differ
    between groups, ``n`` (its number of runs), ``seeds`` (if runs have one), then each
    metric: a :class:`Summary` for a numeric one (groups sort by its mean), the common value
    or counts (:func:`_tally`) for another. Else one row per run: its folder, the differing
    config keys (``seed`` among them) and its values.

    Raises:
        CompareError: ``sort_by`` is not a column (``seed`` when aggregating).
    """
    keys = differing_keys(runs)
    if aggregate:
        keys = [k for k in keys if k != SEED_KEY]
    metric_names: list[str] = []
    for run in runs:
        metric_names += [m for m in run.final() if m not in metric_names]
    if sort_by is None:
        monitor = next((r.metrics.get("monitor") for r in runs if r.metrics.get("monitor")), None)
        if monitor:
            sort_by = "test/" + monitor["metric"].split("/", 1)[1]
            descending = monitor["mode"] == "max" if descending is None else descending
    extra = ["n"] if aggregate else []
    if aggregate and any(run.config.get(SEED_KEY) is not None for run in runs):
        extra.append("seeds")
    if aggregate and sort_by is not None and sort_by.removesuffix("_mean") in metric_names:
        sort_by = sort_by.removesuffix("_mean")  # the csv column's name does too
    if sort_by is not None and sort_by not in [*metric_names, *keys, *extra]:
        hint = " (seeds are aggregated: add --runs to sort runs by seed)"
        raise CompareError(
            f"cannot sort by {sort_by!r}; choose one of {', '.join(metric_names + keys + extra)}"
            + (hint if sort_by == SEED_KEY and "seeds" in extra else "")
        )
    descending = True if descending is None else descending
    header = ["run", *keys, *extra, *metric_names]
    rows: list[list[Any]] = []
    if aggregate:
        numeric = {
            m
            for m in metric_names
            if all(_is_number(v) for run in runs if (v := run.final().get(m)) is not None)
        }
        for group in group_runs(runs):
            finals = [run.final() for run in group]
            cells = [
                Summary(tuple(f[m] for f in finals if _is_number(f.get(m))), len(group))
                if m in numeric
                else _tally([f.get(m) for f in finals])
                for m in metric_names
            ]
            name = group_name([_run_name(run, root) for run in group])
            extras = [len(group), _seeds(group)][: len(extra)]
            rows.append([name, *(setting_value(group[0].config, k) for k in keys), *extras, *cells])
    else:
        for run in runs:
            final = run.final()
            rows.append(
                [
                    _run_name(run, root),
                    *(setting_value(run.config, k) for k in keys),
                    *(final.get(m) for m in metric_names),
                ]
            )
    if sort_by is not None:
        column = header.index(sort_by)
        rows.sort(key=lambda row: _sort_key(row[column], descending))
    return header, rows


def _cell(value: Any) -> str:
    """A value as the table shows it (floats to 6 significant digits; a :class:`Summary`
    as "mean ± std", its std to 2 digits, and "(n=2)" when not all runs have the metric)."""
    if isinstance(value, Summary):
        if value.mean is None:
            return ""
        text = _cell(value.mean)
        if value.std is not None:
            text += f" ± {value.std:.2g}"
        return text + (f" (n={value.n})" if value.n < value.runs else "")
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (a :class:`Summary` in one cell: "mean ± std")."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text; a column of :class:`Summary` cells is two, ``<name>_mean`` and
    ``<name>_std`` (empty for a group of one run)."""
    summarized = [any(isinstance(row[i], Summary) for row in rows) for i in range(len(header))]
    columns: list[str] = []
    for name, split in zip(header, summarized, strict=True):
        columns += [f"{name}_mean", f"{name}_std"] if split else [name]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells: list[str] = []
        for value, split in zip(row, summarized, strict=True):
            if split and isinstance(value, Summary):
                cells += [_cell(value.mean), _cell(value.std)]
            else:
                cells += [_cell(value), ""] if split else [_cell(value)]
        writer.writerow(cells)
    return buffer.getvalue()


def _curve(history: Sequence[dict[str, Any]], metric: str) -> dict[float, float]:
    """``metric`` by epoch in a run's history (the last record of an epoch wins)."""
    return {
        r["epoch"]: r[metric]
        for r in history
        if _is_number(r.get("epoch")) and _is_number(r.get(metric))
    }


def draw_validation_curves(
    runs: Sequence[Run], root: Path, aggregate: bool = True
) -> Figure | None:
    """The figure of :func:`plot_validation_curves`; None when no run has a validation
    history. ``aggregate``: per group of seeds (:func:`group_runs`), the mean curve over the
    runs that reached each epoch (labelled by the group's differing keys and ``n``) and, for
    a group of two runs or more, one shaded band (``fill_between``) of ± one sample standard
    deviation, where two runs or more reached the epoch. Else one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = differing_keys(runs)
    if aggregate:
        keys = [k for k in keys if k != SEED_KEY]
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
    groups = group_runs(runs) if aggregate else [[run] for run in runs]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for group in groups:
        first = group[0]
        label = ", ".join(f"{k}={setting_value(first.config, k)}" for k in keys) or (
            group_name([_run_name(run, root) for run in group]) if aggregate else first.path.name
        )
        if aggregate:
            label += f" (n={len(group)})"
        for axis, metric in zip(axes[0], metrics, strict=True):
            curves = [_curve(run.metrics.get("history", []), metric) for run in group]
            epochs = sorted({epoch for curve in curves for epoch in curve})
            if not epochs:
                continue
            columns = [[c[e] for c in curves if e in c] for e in epochs]
            means = [_sum(column) / len(column) for column in columns]
            (line,) = axis.plot(epochs, means, marker="o", markersize=3, label=label)
            if len(group) > 1:
                stds = [Summary(tuple(column), len(group)).std for column in columns]
                spread = [math.nan if std is None else std for std in stds]
                axis.fill_between(
                    epochs,
                    [mean - std for mean, std in zip(means, spread, strict=True)],
                    [mean + std for mean, std in zip(means, spread, strict=True)],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
    for axis, metric in zip(axes[0], metrics, strict=True):
        if "loss" in metric or "perplexity" in metric:
            axis.set_yscale("log")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    banded = aggregate and any(len(group) > 1 for group in groups)
    axes[0][-1].legend(fontsize="small", loc="best", title=BAND if banded else None)
    figure.suptitle(str(root))
    figure.tight_layout()
    return figure


def plot_validation_curves(
    runs: Sequence[Run], root: Path, path: Path, aggregate: bool = True
) -> Path | None:
    """One panel per validation metric, one line per group of seeds with its ± one std
    band (``aggregate``, see :func:`draw_validation_curves`) or one line per run, written to
    ``path``; None, and nothing written, when no run has a validation history.

    Raises:
        OSError: ``path`` cannot be written (a read-only folder, no such folder).
        ValueError: matplotlib cannot write the format of ``path``'s suffix.
    """
    figure = draw_validation_curves(runs, root, aggregate)
    if figure is None:
        return None
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


def _is_number(value: Any) -> bool:
    """Whether ``value`` can be plotted (a history written by hand may hold anything)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-compare`` (its help: the module's docstring)."""
    first, _, rest = __doc__.partition("\n\n")
    parser = ArgumentParser(
        prog="attnlstm-compare",
        description=first.replace("``", ""),
        epilog=rest.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="a sweep folder, or any folder of runs")
    parser.add_argument(
        "--sort",
        dest="sort_by",
        default=None,
        help="metric or config key to sort by (default: the test monitor); groups of seeds"
        " sort by the metric's mean",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="descending", action="store_false", default=None)
    order.add_argument("--descending", dest="descending", action="store_true")
    parser.add_argument(
        "--runs",
        "--no-aggregate",
        dest="aggregate",
        action="store_false",
        help="one row (and one curve) per run, seed a column, rather than one per group of"
        " runs that differ only in seed (mean ± std, n, seeds)",
    )
    parser.add_argument(
        "--format",
        choices=["markdown", "csv"],
        default="markdown",
        help="markdown: mean ± std in one cell; csv: <metric>_mean and <metric>_std columns",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="where to write the PNG (default: ROOT/val_curves.png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    return parser


@quiet_on_closed_pipe
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
    header, rows = build_table(runs, args.root, args.sort_by, args.descending, args.aggregate)
    print(
        to_markdown(header, rows) if args.format == "markdown" else to_csv(header, rows),
        end="" if args.format == "csv" else "\n",
    )
    if not args.no_plot:
        # the table is shown: a plot that cannot be written is a warning, not a failure
        path = args.plot or args.root / "val_curves.png"
        try:
            written = plot_validation_curves(runs, args.root, path, args.aggregate)
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
