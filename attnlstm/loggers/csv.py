"""``logger=csv``: ``metrics.csv`` in the run's folder, one row per logged step.

Columns are ``step`` and every tag logged so far (``train/loss``, ``val/acc``, ...); the
records of one step (the last update of an epoch and that epoch's validation) share a row; a
cell is empty where a tag was not logged at that step. ``pandas.read_csv`` reads it as is.
The file is rewritten atomically at every flush (after each epoch and at the end), so it is
never half-written; a resumed run keeps the rows up to its checkpoint's step.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlstm.io import write_text
from attnlstm.loggers.base import HParamValue, Logger, register_logger

FILE_NAME = "metrics.csv"


@register_logger("csv")
class CSVLogger(Logger):
    """Scalars to ``<run_dir>/metrics.csv``; figures, images and hyperparameters are not
    written (the run's ``config.yaml`` holds the hyperparameters)."""

    def __init__(self, cfg: Any, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / FILE_NAME
        self.rows: dict[int, dict[str, float]] = {}
        self.columns: list[str] = []
        if resume_step is not None and self.path.is_file():
            self._read(resume_step)

    def _read(self, up_to_step: int) -> None:
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            self.columns = [c for c in reader.fieldnames or [] if c != "step"]
            for row in reader:
                step = int(row["step"])
                if step <= up_to_step:
                    self.rows[step] = {k: float(v) for k, v in row.items() if k != "step" and v}

    def log_hyperparams(
        self, params: Mapping[str, HParamValue], metric_tags: Sequence[str], config_text: str
    ) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row = self.rows.setdefault(int(step), {})
        for tag, value in metrics.items():
            if tag not in self.columns:
                self.columns.append(tag)
            row[tag] = float(value)

    def flush(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", *self.columns])
        for step in sorted(self.rows):
            row = self.rows[step]
            writer.writerow([step, *(repr(row[c]) if c in row else "" for c in self.columns)])
        write_text(buffer.getvalue(), self.path)

    def close(self, status: str) -> None:
        self.flush()
