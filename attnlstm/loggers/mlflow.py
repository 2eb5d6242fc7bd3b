"""``logger=mlflow``: MLflow tracking, by default a file store in the run's own folder.

Needs the optional extra (``pip install "attnlstm[mlflow]"``, which installs
``mlflow-skinny``); no server is needed: ``tracking_uri: null`` stores the run under
``<run_dir>/mlruns`` (``mlflow ui --backend-store-uri <run_dir>/mlruns`` shows it). The MLflow
run id is kept in ``<run_dir>/mlflow_run_id`` so that a resumed attnlstm run continues the
same MLflow run. Parameters are the flattened config; metrics are logged with their step;
figures and images become artifacts; the run ends FINISHED, FAILED or KILLED by its status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from attnlstm.errors import ConfigError
from attnlstm.io import write_text
from attnlstm.loggers.base import HParamValue, Logger, register_logger

RUN_ID_FILE = "mlflow_run_id"
#: MLflow's limit on a parameter value's length
MAX_PARAM_LENGTH = 500
#: and on the parameters of one log_batch call
MAX_PARAMS_PER_BATCH = 100
#: the MLflow run status of each way an attnlstm run ends (attnlstm/training/trainer.py);
#: the rest (diverged, failed) is FAILED
_END_STATUS = {
    "completed": "FINISHED",
    "solved": "FINISHED",
    "early_stopped": "FINISHED",
    "interrupted": "KILLED",
}


def _safe_key(tag: str) -> str:
    # MLflow keys allow letters, digits, _ - . / and spaces: "perf/samples_per_s" is fine
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in tag)


@register_logger("mlflow", needs_module="mlflow")
class MLflowLogger(Logger):
    """Records to an MLflow run, through :class:`mlflow.MlflowClient` (no global state)."""

    def __init__(self, cfg: Any, run_dir: Path, resume_step: int | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                'logger=mlflow needs MLflow: pip install "attnlstm[mlflow]" (or mlflow-skinny),'
                " or choose logger=tensorboard or logger=csv"
            ) from None
        run_dir = Path(run_dir)
        uri = cfg.tracking_uri
        if uri is None:
            uri = (run_dir / "mlruns").resolve().as_uri()
            # MLflow 3 asks file-store users to opt in; the file store is the point here (no
            # server, no database: the run's folder holds everything)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        id_file = run_dir / RUN_ID_FILE
        self.started_fresh = not (resume_step is not None and id_file.is_file())
        if not self.started_fresh:
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            experiment_id = (
                self.client.create_experiment(cfg.experiment)
                if experiment is None
                else experiment.experiment_id
            )
            run = self.client.create_run(experiment_id, run_name=run_dir.name)
            self.run_id = run.info.run_id
            write_text(self.run_id + "\n", id_file)

    def log_hyperparams(
        self, params: Mapping[str, HParamValue], metric_tags: Sequence[str], config_text: str
    ) -> None:
        from mlflow.entities import Param

        entries = [Param(_safe_key(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(entries), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=entries[start : start + MAX_PARAMS_PER_BATCH])
        self.client.log_text(self.run_id, config_text, "config.yaml")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(_safe_key(k), float(v), now, int(step)) for k, v in metrics.items()],
        )

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.client.log_figure(self.run_id, figure, f"{_safe_key(tag)}/step_{step}.png")

    def log_image(self, tag: str, image: Tensor, step: int) -> None:
        pixels = (image.detach().float().clamp(0, 1) * 255).to("cpu").byte().numpy()
        self.client.log_image(self.run_id, pixels, f"{_safe_key(tag)}/step_{step}.png")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_END_STATUS.get(status, "FAILED"))
