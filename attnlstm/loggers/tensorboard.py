"""TensorBoard: event files in the run's folder (``logger=tensorboard``, the default).

Hyperparameters go into the run's own event file (not a sub-run), the final metrics are
scalars under the tags the hparams summary names; attention weights are images or figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from attnlstm.loggers.base import HParamValue, Logger, flatten_config, register_logger

__all__ = [
    "TensorBoardLogger",
    "attention_image",
    "attention_matrix_image",
    "flatten_config",
    "write_hparams",
]


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


@register_logger("tensorboard")
class TensorBoardLogger(Logger):
    """One event file per run folder; ``tensorboard --logdir <sweep folder>`` compares runs."""

    def __init__(self, cfg: Any, run_dir: Path, resume_step: int | None = None) -> None:
        # purge_step drops events a crashed session logged after its last checkpoint
        self.writer = SummaryWriter(
            str(run_dir), purge_step=None if resume_step is None else resume_step + 1
        )

    def log_hyperparams(
        self, params: Mapping[str, HParamValue], metric_tags: Sequence[str], config_text: str
    ) -> None:
        self.writer.add_text("config", f"```yaml\n{config_text}\n```", 0)
        write_hparams(self.writer, params, metric_tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=False)

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HW")

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
