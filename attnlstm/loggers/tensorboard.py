"""TensorBoard: event files in the run's folder (``logger=tensorboard``, the default).

Hyperparameters go into the run's own event file (not a sub-run): the keys that define the
experiment (:func:`~attnlstm.loggers.base.experiment_hparams`), the defining ones first; the
final metrics are scalars under the tags the hparams summary names (the HParams tab shows each
tag's last value in the same run). Attention weights are images or figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from attnlstm.loggers.base import (
    DEFINING_KEYS,
    HParamValue,
    Logger,
    experiment_hparams,
    flatten_config,
    register_logger,
)

__all__ = ["TensorBoardLogger", "flatten_config", "write_hparams"]


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """One hparams-plugin record (``_hparams_/...``), as TensorBoard's own writer makes it."""
    value = Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return Summary(value=[value])


def _data_type(value: HParamValue) -> int:
    if isinstance(value, bool):  # before int: a bool is an int
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, int | float):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def write_hparams(
    writer: SummaryWriter,
    hparams: Mapping[str, HParamValue],
    metric_tags: Iterable[str],
    leading: Iterable[str] = DEFINING_KEYS,
) -> None:
    """Write the hparams summary into ``writer``'s own event file.

    ``SummaryWriter.add_hparams`` opens a separate sub-run, so the HParams tab would list a run
    without the metrics logged beside it. Here the experiment, session-start and session-end
    summaries go into this run; the metrics are ordinary scalars logged under ``metric_tags``
    (TensorBoard shows each one's last value). Booleans stay booleans (``add_hparams`` would
    make them numbers).

    The experiment lists ``hparams`` in their order, but TensorBoard's HParams backend (2.21,
    ``_sort_and_reduce_to_hparams_limit``) re-sorts the tab's columns: those marked ``differs``
    (meant as "varies between the runs") first, then by name. The ``leading`` keys, the ones
    whose values set experiments apart, are marked so that the tab opens on them
    (``attention.method``, ``model.name``, ``seed``, ``task.name``), the others after them.
    """
    leading = set(leading)
    infos = [
        api_pb2.HParamInfo(name=name, type=_data_type(value), differs=name in leading)
        for name, value in hparams.items()
    ]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metric_tags]
    now = time.time()
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=now)
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = str(value)
    records = {
        metadata.EXPERIMENT_TAG: plugin_data_pb2.HParamsPluginData(
            experiment=api_pb2.Experiment(
                time_created_secs=now, hparam_infos=infos, metric_infos=metrics
            )
        ),
        metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(
            session_start_info=start
        ),
        # as add_hparams does: a session that has ended, so the tab does not list it running
        metadata.SESSION_END_INFO_TAG: plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(
                status=api_pb2.STATUS_SUCCESS, end_time_secs=now
            )
        ),
    }
    for tag, data in records.items():
        writer.file_writer.add_summary(_hparams_summary(tag, data))


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
        """The whole config as text; the keys that define the experiment as hparams."""
        self.writer.add_text("config", f"```yaml\n{config_text}\n```", 0)
        write_hparams(self.writer, experiment_hparams(params), metric_tags)

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
