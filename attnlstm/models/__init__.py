"""Models: one module per family, each registering its builder in :data:`MODELS`.

``build_model`` is a look-up; ``check_compatible`` reads the registered capabilities of the
model and the attention method against what the task needs, before any data is read.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch import nn

from attnlstm.attention import ATTENTION
from attnlstm.config import AttentionConfig, typed
from attnlstm.contracts import INPUT_KINDS, TARGET_KINDS, ModelOutput, TaskSpec
from attnlstm.errors import ConfigError

# importing the family modules registers them
from attnlstm.models import ffattn, language_model, lstm, seq2seq, tagger  # noqa: F401
from attnlstm.models.registry import MODELS, configured_attention, register_model

__all__ = [
    "MODELS",
    "ModelOutput",
    "build_model",
    "check_compatible",
    "configured_attention",
    "register_model",
]


def check_compatible(
    model_cfg: Any,
    attention_cfg: Any,
    target: str,
    inputs: str = "features",
    task: str | None = None,
) -> None:
    """Raise :class:`ConfigError` with a plain sentence if the model cannot run as configured
    on a task (named ``task`` in the messages) that needs ``target`` predicted from
    ``inputs`` (see attnlstm.contracts)."""
    this_task = "this task" if task is None else f"task={task}"
    name = str(model_cfg.name)
    entry = MODELS.get(name)
    method = str(attention_cfg.method)
    attention = None if method == "none" else ATTENTION.get(method)
    if entry.predicts != target:
        fitting = [e.name for e in MODELS.entries() if e.predicts == target]
        raise ConfigError(
            f"model={name} predicts {TARGET_KINDS.get(entry.predicts, entry.predicts)}, but"
            f" {this_task} needs {TARGET_KINDS.get(target, target)}; models that fit it:"
            f" {', '.join(sorted(fitting)) or 'none yet'}"
        )
    if inputs not in entry.reads:
        fitting = [e.name for e in MODELS.entries() if e.predicts == target and inputs in e.reads]
        raise ConfigError(
            f"model={name} reads {' or '.join(INPUT_KINDS[i] for i in entry.reads)}, but"
            f" {this_task} gives {INPUT_KINDS.get(inputs, inputs)}; models that fit it:"
            f" {', '.join(sorted(fitting)) or 'none yet'}"
        )
    needs = entry.attention
    if needs == "none" and attention is not None:
        pooled = [
            e.name for e in MODELS.entries() if e.predicts == target and e.attention == "required"
        ]
        alternative = (
            f"use model={pooled[0]} to pool its states with {method} attention, or "
            if pooled
            else ""
        )
        raise ConfigError(
            f"model={name} uses no attention, but attention={method} was chosen;"
            f" {alternative}drop the attention override"
        )
    if needs in ("required", "query_free") and attention is None:
        raise ConfigError(
            f"model={name} pools its states with attention, but attention=none was chosen; pick"
            f" an attention method ({', '.join(ATTENTION.names())})"
        )
    if needs == "query_free" and attention is not None and attention.uses_query:
        query_free = [e.name for e in ATTENTION.entries() if not e.uses_query]
        raise ConfigError(
            f"model={name} has no query to attend with, so it needs a query-free method"
            f" (attention={' or '.join(query_free)}; got attention={method})"
        )
    if entry.schema is not None and not isinstance(model_cfg, entry.schema | DictConfig):
        raise ConfigError(
            f"model.name={name} needs the {entry.schema.__name__} settings; choose the model"
            f" with model={name} rather than overriding model.name"
        )
    if entry.check is not None:
        entry.check(model_cfg, attention_cfg)


def build_model(model_cfg: Any, attention_cfg: Any, spec: TaskSpec) -> nn.Module:
    """The model named by ``model_cfg.name`` for a task of shape ``spec``; the configs may be
    typed (attnlstm.config) or DictConfig."""
    entry = MODELS.get(str(model_cfg.name))
    model_cfg = typed(model_cfg, entry.schema)
    attention_cfg = typed(attention_cfg, AttentionConfig)
    check_compatible(model_cfg, attention_cfg, spec.target, spec.inputs)
    return entry.component(model_cfg, attention_cfg, spec)
