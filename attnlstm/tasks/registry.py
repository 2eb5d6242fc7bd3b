"""The task registry: every task family registers its class here, where it is defined.

An entry holds the :class:`~attnlstm.tasks.base.Task` subclass, its config schema (a dataclass
in attnlstm.config: the family of a composed ``task`` config is found by its schema) and what
it needs of a model: ``target`` (what is predicted, a key of
:data:`~attnlstm.contracts.TARGET_KINDS`) and ``inputs`` (what the model reads, a key of
:data:`~attnlstm.contracts.INPUT_KINDS`). These are known before any data is read, so the
runner checks the model against them first.

Every task class is built as ``cls(cfg, seed, data_dir)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnlstm.registry import Entry, Registry

#: task family -> task class, schema and capabilities
TASKS: Registry[type] = Registry("task family")


def register_task(name: str, *, schema: type, target: str, inputs: str) -> Callable[[type], type]:
    """Class decorator: register a task family; see the module docstring."""
    return TASKS.register(name, schema=schema, target=target, inputs=inputs)


def task_family(task_cfg: Any) -> Entry[type]:
    """The entry whose schema ``task_cfg`` (typed, or a DictConfig composed from a schema)
    follows; ConfigError if none does."""
    from omegaconf import DictConfig, OmegaConf

    from attnlstm.errors import ConfigError

    schema = OmegaConf.get_type(task_cfg) if isinstance(task_cfg, DictConfig) else type(task_cfg)
    for entry in TASKS.entries():
        if entry.schema is schema:
            return entry
    raise ConfigError(
        f"task config of type {getattr(schema, '__name__', schema)} is no registered task"
        f" family; a task option's YAML starts from one of: {', '.join(TASKS.names())}"
    )
