"""Tasks: one module per task family. ``build_task`` picks the family from ``task.name``."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from attnlstm.config import (
    LanguageModelTaskConfig,
    LanguageModelTaskName,
    LongMemoryProblem,
    LongMemoryTaskConfig,
    Seq2SeqTaskConfig,
    Seq2SeqTaskName,
    TaggingTaskConfig,
    TaggingTaskName,
)
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.language_model import LanguageModelTask
from attnlstm.tasks.long_memory import LongMemoryTask
from attnlstm.tasks.seq2seq import Seq2SeqTask
from attnlstm.tasks.tagging import TaggingTask

__all__ = ["Meter", "Monitor", "Task", "TaskSpec", "build_task"]

_LONG_MEMORY = {p.value for p in LongMemoryProblem}
_LANGUAGE_MODEL = {n.value for n in LanguageModelTaskName}
_TAGGING = {n.value for n in TaggingTaskName}
_SEQ2SEQ = {n.value for n in Seq2SeqTaskName}


def _as_dataclass(task_cfg: DictConfig, schema: type) -> object:
    cfg = OmegaConf.to_object(task_cfg) if isinstance(task_cfg, DictConfig) else task_cfg
    if not isinstance(cfg, schema):
        cfg = schema(**OmegaConf.to_container(OmegaConf.create(task_cfg)))
    return cfg


def build_task(task_cfg: DictConfig, seed: int, data_dir: str | None = None) -> Task:
    """The task named by ``task_cfg.name``; ``seed`` drives its training stream and
    ``data_dir`` (else ``$ATTNLSTM_DATA``) is where datasets are found."""
    if isinstance(task_cfg, DictConfig):
        name = str(OmegaConf.select(task_cfg, "name", default=""))
    else:
        name = str(getattr(task_cfg, "name", ""))
    if name in _LONG_MEMORY:
        return LongMemoryTask(_as_dataclass(task_cfg, LongMemoryTaskConfig), seed)
    if name in _LANGUAGE_MODEL:
        return LanguageModelTask(_as_dataclass(task_cfg, LanguageModelTaskConfig), seed, data_dir)
    if name in _TAGGING:
        return TaggingTask(_as_dataclass(task_cfg, TaggingTaskConfig), seed, data_dir)
    if name in _SEQ2SEQ:
        return Seq2SeqTask(_as_dataclass(task_cfg, Seq2SeqTaskConfig), seed, data_dir)
    known = _LONG_MEMORY | _LANGUAGE_MODEL | _TAGGING | _SEQ2SEQ
    raise ConfigError(f"unknown task {name!r}; choose one of {sorted(known)}")
