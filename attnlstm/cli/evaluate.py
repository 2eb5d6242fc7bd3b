"""Evaluate a run's checkpoint on a split with the current code, optionally with other task
settings (decoding options, say), without touching the run.

    attnlstm-evaluate outputs/reverse/seq2seq-dot/<timestamp>            # best.pt, test
    attnlstm-evaluate RUN --split val --set task.beam_size=10 task.length_penalty=0.6
    attnlstm-evaluate RUN --out RUN/eval_beam10.json
    attnlstm-evaluate RUN_1 RUN_2 RUN_3              # an ensemble (taggers, text classifiers)

The model is rebuilt from the run (:func:`attnlstm.runs.load_run`), the task from the config
stored in the checkpoint, which reads the split's data (``--set`` may change ``task.*`` keys
only, and none that changes what the model reads or predicts: the model must stay the one
trained). Several runs of one classification task (tagging, text classification) and
vocabulary (other seeds, sizes or attention methods) are evaluated as an ensemble that
predicts with the mean of their class probabilities
(:class:`attnlstm.models.ensemble.ProbabilityEnsemble`). Metrics are printed as JSON; ``--out``
also writes them to a new file (never over an existing one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from attnlstm.cli.common import ArgumentParser, check_output_folder, command, fail, open_run
from attnlstm.errors import ConfigError
from attnlstm.io import checkpoint_file, write_json
from attnlstm.models.ensemble import ProbabilityEnsemble
from attnlstm.runs import LoadedRun, saved_config
from attnlstm.tasks import Task, build_task

__all__ = ["evaluate", "main"]


def _with_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``cfg`` (typed by :func:`attnlstm.runs.saved_config`) with the ``task.<key>=<value>``
    overrides applied; ConfigError for another key, a key the task does not have or a value
    of the wrong type."""
    for override in overrides:
        key, equals, _ = override.partition("=")
        if not key.startswith("task.") or not equals:
            raise ConfigError(f"--set takes task.<key>=<value>, got {override!r}")
        if OmegaConf.select(cfg, key, default=None) is None and key[5:] not in cfg.task:
            raise ConfigError(f"--set {override}: the task has no key {key[5:]!r}")
    try:
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:  # a value of the wrong type, say
        raise ConfigError(f"--set {' '.join(overrides)}: {error}") from error
    assert isinstance(merged, DictConfig)
    return merged


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """A task state without its random generators' states: what describes the data
    (vocabularies)."""
    return {key: value for key, value in state.items() if not isinstance(value, torch.Tensor)}


#: what the runs of an ensemble may differ in: auxiliary outputs (a tagger's second tag
#: column), which the vote drops unless every member predicts them alike
_AUXILIARY = frozenset({"aux_output_size", "aux_tags"})


def _without_auxiliary(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a spec or a task state, nested) without the auxiliary outputs' keys."""
    return {
        key: _without_auxiliary(value) if isinstance(value, dict) else value
        for key, value in values.items()
        if key not in _AUXILIARY
    }


def _check_task_fits(task: Task, run: LoadedRun, member: bool = False) -> None:
    """ConfigError unless ``task`` (rebuilt from the data) has the shape and vocabularies of
    the task ``run``'s model was trained on; for another ``member`` of an ensemble, apart
    from auxiliary outputs."""
    trained, now = run.spec.to_dict(), task.spec.to_dict()
    stored, rebuilt = _plain_state(run.task_state), _plain_state(task.state_dict())
    if member:
        trained, now = _without_auxiliary(trained), _without_auxiliary(now)
        stored, rebuilt = _without_auxiliary(stored), _without_auxiliary(rebuilt)
    if member and (trained != now or stored != rebuilt):
        raise ConfigError(
            f"{run.path} was trained with another vocabulary or other task settings than the"
            " ensemble's first run; an ensemble needs runs of the same task and data settings"
            " (they may differ in seed, sizes, attention and auxiliary outputs)"
        )
    if trained != now:
        changed = ", ".join(
            f"{key} {trained[key]} -> {now[key]}" for key in trained if trained[key] != now[key]
        )
        raise ConfigError(
            f"the task rebuilt for {run.path} does not fit its model ({changed}); --set may"
            " not change what the model reads or predicts, and the data must be the run's"
        )
    for key in stored.keys() & rebuilt.keys():
        if stored[key] != rebuilt[key]:
            raise ConfigError(
                f"the data's {key.replace('_', ' ')} differs from the one {run.path} was trained"
                " with; evaluate with the run's data and task settings"
            )


@torch.inference_mode()
def evaluate(
    path: str | Path,
    split: str,
    overrides: Sequence[str] = (),
    data_dir: str | None = None,
    ensemble_with: Sequence[str | Path] = (),
) -> dict[str, float]:
    """Metrics of a run on a split.

    Args:
        path: a run folder (its best.pt, else last.pt) or a checkpoint file.
        split: ``val`` or ``test``.
        overrides: ``task.<key>=<value>`` settings that replace the run's own.
        data_dir: where the task's data is found (default: the run's ``data_dir``, else
            ``$ATTNLSTM_DATA``).
        ensemble_with: other runs of the same classification task and data to evaluate with
            ``path``'s as an ensemble (mean class probabilities).

    Returns:
        The task's metrics of ``split`` (names without the split prefix).

    Raises:
        FileNotFoundError: no checkpoint at a path.
        ConfigError: a bad override, data that does not fit a model (an ensemble member
            trained on other data or another vocabulary), or an ensemble of runs of a task
            that does not classify.
        ValueError: a checkpoint this attnlstm cannot read.
    """
    run = open_run(path)
    members = [open_run(other) for other in ensemble_with]
    for member in members:
        if member.cfg.model.name != run.cfg.model.name:
            # one call signature for every member: the task feeds them all the same batch
            raise ConfigError(
                f"{member.path} is a model={member.cfg.model.name} run, {run.path} a"
                f" model={run.cfg.model.name} one; an ensemble's runs share their model family"
            )
    # the stored config is plain: type its task by its schema, which then checks the overrides
    cfg = _with_overrides(saved_config(run.cfg), overrides)
    task = build_task(cfg.task, int(cfg.seed), data_dir or cfg.get("data_dir"))
    if members and not task.classifies:
        raise ConfigError(
            f"ensembles vote with class probabilities; {path} is a task={task.name} run"
            f" (model={run.cfg.model.name}), which predicts no classes"
        )
    _check_task_fits(task, run)
    for loaded in members:
        _check_task_fits(task, loaded, member=True)
    model = run.model
    if members:
        model = ProbabilityEnsemble([run.model, *(member.model for member in members)])
    model.eval()
    meter = task.new_meter(split)
    # listed first, for the bar's total: the batches of one split are views or small tensors
    batches = list(task.eval_batches(split))  # type: ignore[arg-type]
    # a long evaluation (a corpus, a treebank, beam search) shows its progress on stderr;
    # disable=None: no bar when stderr is not a terminal (logs, pipes, tests)
    with tqdm(
        total=len(batches),
        desc=f"evaluating {split}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=None,
    ) as bar:
        for batch in batches:
            meter.update(task.forward(model, batch), batch)
            bar.update()
    return meter.compute()


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-evaluate``."""
    parser = ArgumentParser(prog="attnlstm-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="+",
        help="a run folder or a .pt file; several runs of a classifier or tagger: an ensemble",
    )
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--set", nargs="*", default=[], metavar="task.KEY=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics here")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnlstm-evaluate`` with ``argv`` (default: ``sys.argv[1:]``): print the metrics
    as JSON (and write them to ``--out``); returns the exit status: 0, or 2 after one
    ``error:`` line on stderr."""
    args = build_parser().parse_intermixed_args(argv)  # run folders may follow the options
    if args.out is not None:  # before the work: not a traceback after the metrics
        if args.out.exists():
            return fail(f"{args.out} exists; it is never overwritten")
        if not args.out.parent.is_dir():
            return fail(f"--out {args.out}: no folder {args.out.parent} to write it in")
        check_output_folder(args.out.parent, "--out")
    first, *others = args.checkpoint
    metrics = evaluate(first, args.split, args.set, args.data_dir, others)
    files = [str(checkpoint_file(path)) for path in args.checkpoint]
    result = {
        "checkpoint": files if len(files) > 1 else files[0],
        "split": args.split,
        "overrides": list(args.set),
        "metrics": metrics,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
