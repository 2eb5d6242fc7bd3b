"""Tasks: one module per task family, each registering itself in :data:`TASKS`.

``build_task`` is a look-up by the config's schema: the ``task`` option's YAML starts from a
family's schema (``defaults: [/schema/task@_here_: <family>]``).
"""

from __future__ import annotations

from typing import Any

# importing the family modules registers them
from attnlstm.config import typed
from attnlstm.contracts import TaskSpec
from attnlstm.tasks import (  # noqa: F401
    language_model,
    long_memory,
    seq2seq,
    tagging,
    text_classification,
)
from attnlstm.tasks.base import Meter, Monitor, Task
from attnlstm.tasks.registry import TASKS, register_task, task_family

__all__ = [
    "TASKS",
    "Meter",
    "Monitor",
    "Task",
    "TaskSpec",
    "build_task",
    "register_task",
    "task_family",
]


def build_task(task_cfg: Any, seed: int, data_dir: str | None = None) -> Task:
    """The task ``task_cfg`` configures; ``seed`` drives its training stream and ``data_dir``
    (else ``$ATTNLSTM_DATA``) is where datasets are found."""
    entry = task_family(task_cfg)
    return entry.component(typed(task_cfg, entry.schema), seed, data_dir)
