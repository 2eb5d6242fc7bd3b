"""A run folder rebuilds its own model: :func:`load_run`.

Every checkpoint stores the resolved config, the task's spec (vocabulary sizes, special ids)
and the task's state (its vocabularies, where decoding needs them), so the model is rebuilt
without reading any data. The evaluate / generate / tag / translate commands and the trainer's
own tests all load runs through this one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from attnlstm.config import retyped
from attnlstm.contracts import TaskSpec
from attnlstm.io import CHECKPOINT_VERSION, checkpoint_file, evaluated_weights, load_checkpoint
from attnlstm.models import MODELS, build_model
from attnlstm.tasks import TASKS

__all__ = ["LoadedRun", "family_schemas", "load_run", "saved_config"]


def family_schemas() -> dict[str, dict[str, type]]:
    """``{"task": {family: schema}, "model": {model name: schema}}`` from the registries:
    what the ConfigStore holds under ``schema/task`` and ``schema/model``."""
    return {
        "task": {entry.name: entry.schema for entry in TASKS.entries()},
        "model": {entry.name: entry.schema for entry in MODELS.entries()},
    }


def saved_config(cfg: DictConfig) -> DictConfig:
    """A run's saved config with its task and model nodes typed by their registered schemas
    again (:func:`attnlstm.config.retyped`), as a freshly composed config has them."""
    candidates = {
        group: list(dict.fromkeys(schemas.values())) for group, schemas in family_schemas().items()
    }
    return retyped(cfg, candidates)


@dataclass
class LoadedRun:
    """What :func:`load_run` returns: the model (its evaluated weights, in eval mode), the
    run's config, the task's saved state (vocabularies), its spec and the checkpoint file."""

    model: nn.Module
    cfg: DictConfig
    task_state: dict[str, Any]
    spec: TaskSpec
    path: Path

    def __iter__(self) -> Iterator[Any]:
        """``model, cfg, task_state = load_run(path)``."""
        return iter((self.model, self.cfg, self.task_state))


def load_run(
    path: str | Path, map_location: str | torch.device = "cpu", model: str | None = None
) -> LoadedRun:
    """The model of a run folder (its ``best.pt``, else ``last.pt``) or of a checkpoint file.

    Args:
        path: a run folder or a ``.pt`` file.
        map_location: where the weights go.
        model: if given, the ``model=`` the run must have been trained with (ValueError
            naming both otherwise), e.g. ``"lm"`` for a command that generates text.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: the checkpoint's format version is not this attnlstm's, or the run is not
            a ``model`` run.
    """
    file = checkpoint_file(Path(path))
    checkpoint = load_checkpoint(file, map_location)
    version = checkpoint.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"{file} has checkpoint format version {version}; this attnlstm reads version"
            f" {CHECKPOINT_VERSION}"
            + (
                " (version 1 checkpoints do not store the task's spec: re-run the training,"
                " or load them with the attnlstm release that wrote them)"
                if version == 1
                else ""
            )
        )
    cfg = OmegaConf.create(checkpoint["config"])
    if model is not None and str(cfg.model.name) != model:
        raise ValueError(f"{file} is a model={cfg.model.name} run, not model={model}")
    spec = TaskSpec.from_dict(checkpoint["spec"])
    module = build_model(cfg.model, cfg.attention, spec)
    module.load_state_dict(evaluated_weights(checkpoint))
    module.to(map_location).eval()
    return LoadedRun(module, cfg, checkpoint.get("task", {}), spec, file)
