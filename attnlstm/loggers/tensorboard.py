"""TensorBoard: event files in the run's folder (``logger=tensorboard``, the default).

Hyperparameters go into the run's own event file (not a sub-run), the final metrics are
scalars under the tags the hparams summary names; attention weights are images or figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from attnlstm.loggers.base import HParamValue, Logger, flatten_config, register_logger

__all__ = ["TensorBoardLogger", "flatten_config", "write_hparams"]


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


@register_logger("tensorboard")
class TensorBoardLogger(Logger):
    """One event file per run folder; ``tensorboard --logdir <sweep folder>`` compares runs."""

    def __init__(self, cfg: Any, run_dir: Path, resume_step: int | None = None) -> None:
        self.started_fresh = resume_step is None or not any(
            Path(run_dir).glob("events.out.tfevents.*")
        )
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
