"""The model registry: every model family registers its builder here, where it is defined.

A builder takes the typed model config, the attention config and the task's
:class:`~attnlstm.contracts.TaskSpec`, and returns the module. Its capabilities say what the
model predicts (``predicts``: a :data:`~attnlstm.contracts.TARGET_KINDS` key), which inputs it
reads (``reads``: :data:`~attnlstm.contracts.INPUT_KINDS` keys) and which attention it accepts
(``attention``: ``none``, ``required``, ``optional`` or ``query_free``); ``check``, optional,
is a function ``(model_cfg, attention_cfg) -> None`` raising :class:`ConfigError` for settings
of the family that do not go together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from attnlstm.attention import ATTENTION, Attention, make_attention
from attnlstm.config import AttentionConfig
from attnlstm.contracts import TaskSpec
from attnlstm.registry import Registry

ModelBuilder = Callable[[Any, AttentionConfig, TaskSpec], nn.Module]

#: model name (``model=<name>``) -> builder, schema and capabilities
MODELS: Registry[ModelBuilder] = Registry("model")

ATTENTION_NEEDS = ("none", "required", "optional", "query_free")


def register_model(
    name: str,
    *,
    schema: type,
    predicts: str,
    reads: tuple[str, ...],
    attention: str,
    check: Callable[[Any, AttentionConfig], None] | None = None,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register a builder as ``model=<name>``; see the module docstring."""
    if attention not in ATTENTION_NEEDS:
        raise ValueError(f"attention must be one of {ATTENTION_NEEDS}, got {attention!r}")
    return MODELS.register(
        name, schema=schema, predicts=predicts, reads=reads, attention=attention, check=check
    )


def configured_attention(
    attention_cfg: AttentionConfig, query_dim: int | None, key_dim: int
) -> Attention | None:
    """The ``attention=`` method between query_dim and key_dim vectors; None for ``none``."""
    method = str(attention_cfg.method)
    if method == "none":
        return None
    ATTENTION.get(method)  # ConfigError listing the methods if unknown
    return make_attention(method, query_dim, key_dim, attention_cfg.hidden_dim)
