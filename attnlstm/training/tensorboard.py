"""TensorBoard helpers: hparams in the run's own file, attention weights as images."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

HParamValue = bool | int | float | str


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, HParamValue]:
    """``{"model": {"hidden_size": 100}}`` -> ``{"model.hidden_size": 100}``; values that
    TensorBoard cannot show (None, lists) become strings."""
    flat: dict[str, HParamValue] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def write_hparams(
    writer: SummaryWriter, hparams: Mapping[str, HParamValue], metric_tags: Iterable[str]
) -> None:
    """Write the hparams summary into ``writer``'s own event file.

    ``SummaryWriter.add_hparams`` opens a separate sub-run, so the HParams tab would list a run
    without the metrics logged beside it. Here the experiment, session-start and session-end
    summaries go into this run; the metrics are ordinary scalars logged under ``metric_tags``.
    """
    metrics = dict.fromkeys(metric_tags, 0.0)  # values unused: only the tag names are recorded
    for summary in hparams_summary(dict(hparams), metrics):
        writer.file_writer.add_summary(summary)


def attention_image(weights: Tensor, lengths: Tensor | None, row_height: int = 12) -> Tensor:
    """Attention weights of a few examples as a grey image (H, W) in [0, 1].

    Each example is one band of ``row_height`` pixels, scaled by its own maximum so that
    peaked and flat distributions are both visible; steps beyond its length stay black.

    Args:
        weights: (K, T).
        lengths: (K,) or None.
    """
    weights = weights.detach().float().cpu()
    if lengths is not None:
        steps = torch.arange(weights.size(1))
        weights = weights * (steps.unsqueeze(0) < lengths.cpu().unsqueeze(1))
    scaled = weights / weights.amax(dim=1, keepdim=True).clamp(min=1e-12)
    bands = scaled.repeat_interleave(row_height, dim=0)  # (K * row_height) x T
    separators = torch.arange(bands.size(0)) % row_height == row_height - 1
    bands[separators] = 0.25
    return bands


def attention_matrix_image(weights: Tensor, cell: int = 8) -> Tensor:
    """One example's attention as a grey image (H, W) in [0, 1]: a (Tq, T) matrix, each query
    row scaled by its own maximum, every weight drawn as a ``cell`` x ``cell`` square.

    Args:
        weights: (Tq, T), row i the weights of query step i over the T keys.
    """
    weights = weights.detach().float().cpu()
    scaled = weights / weights.amax(dim=1, keepdim=True).clamp(min=1e-12)
    return scaled.repeat_interleave(cell, dim=0).repeat_interleave(cell, dim=1)
