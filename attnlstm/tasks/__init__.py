"""Tasks: one module per task family. ``build_task`` picks the family from ``task.name``."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from attnlstm.config import LongMemoryProblem, LongMemoryTaskConfig
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.long_memory import LongMemoryTask

__all__ = ["Meter", "Monitor", "Task", "TaskSpec", "build_task"]

_LONG_MEMORY = {p.value for p in LongMemoryProblem}


def build_task(task_cfg: DictConfig, seed: int) -> Task:
    """The task named by ``task_cfg.name``; ``seed`` drives its training stream."""
    name = str(OmegaConf.select(task_cfg, "name", default=""))
    if name in _LONG_MEMORY:
        cfg = OmegaConf.to_object(task_cfg) if isinstance(task_cfg, DictConfig) else task_cfg
        if not isinstance(cfg, LongMemoryTaskConfig):
            cfg = LongMemoryTaskConfig(**OmegaConf.to_container(task_cfg))
        return LongMemoryTask(cfg, seed)
    raise ConfigError(f"unknown task {name!r}; choose one of {sorted(_LONG_MEMORY)}")
