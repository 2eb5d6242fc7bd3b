"""The logger backends (``logger=tensorboard|csv|mlflow|many``) on tiny runs of the default
experiment: what each writes, that they agree with metrics.json, resume, and a crashed run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnlstm.config import LoggerConfig
from attnlstm.loggers import Logger, LoggerCollection, build_loggers
from attnlstm.models import build_model
from attnlstm.tasks import build_task
from attnlstm.train import check_config
from attnlstm.training import Trainer
from tests.conftest import TINY, compose_config, run_cli

#: every scalar the default experiment (addition, lstm_attn) logs, in every backend
SCALAR_TAGS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/epoch_loss",
    "val/loss",
    "val/accuracy",
    "perf/samples_per_s",
    "perf/epoch_time_s",
    "perf/updates_per_s",
    "perf/threads",
    "perf/cpu_busy",
    "test/loss",
    "test/accuracy",
}
STEPS_PER_EPOCH = 6  # TINY: task.batches_per_epoch=6


def _tiny_run(cwd: Path, *args: str) -> Path:
    """A tiny run (TINY: 2 epochs of 6 updates) in ``cwd/run``; returns the run folder."""
    run_dir = cwd / "run"
    run_cli([*TINY, f"hydra.run.dir={run_dir}", *args], cwd)
    return run_dir


def _metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def _read_csv(run_dir: Path) -> Any:
    pandas = pytest.importorskip("pandas")
    return pandas.read_csv(run_dir / "metrics.csv")


def _column(frame: Any, tag: str) -> list[tuple[Any, Any]]:
    """(step, value) of the rows of a metrics.csv frame where ``tag`` was logged."""
    logged = frame.dropna(subset=[tag])
    return list(zip(logged["step"], logged[tag], strict=True))


def _event_file(run_dir: Path) -> Path:
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return files[0]


def _events(path: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _mlflow_client(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    tracking = pytest.importorskip("mlflow.tracking")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = tracking.MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    return client, (run_dir / "mlflow_run_id").read_text().strip()


def _epoch_values(metrics: dict[str, Any], tag: str) -> list[tuple[int, float]]:
    """(step, value) of ``tag`` for each epoch of metrics.json's history."""
    return [(record["step"], record[tag]) for record in metrics["history"]]


def _assert_same(
    logged: Sequence[tuple[Any, Any]], expected: Sequence[tuple[int, float]], rel: float = 1e-12
) -> None:
    """The same steps, and the same values (TensorBoard stores float32: ``rel=1e-6``)."""
    assert [int(step) for step, _ in logged] == [step for step, _ in expected]
    assert [float(value) for _, value in logged] == pytest.approx(
        [value for _, value in expected], rel=rel
    )


# -- one run per backend, shared by the tests that only read it ------------------------------


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_run(tmp_path_factory.mktemp("csv"), "logger=csv")


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlflow")
    return _tiny_run(tmp_path_factory.mktemp("mlflow"), "logger=mlflow")


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_run(tmp_path_factory.mktemp("tensorboard"))  # the default logger


# -- (a) csv -------------------------------------------------------------------------------


def test_csv_has_a_row_per_step_and_the_values_of_metrics_json(csv_run: Path) -> None:
    frame = _read_csv(csv_run)
    metrics = _metrics(csv_run)
    assert metrics["status"] == "completed" and metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert frame.columns[0] == "step"
    assert set(frame.columns) == {"step", *SCALAR_TAGS}
    assert frame["step"].tolist() == list(range(1, metrics["steps"] + 1))
    assert frame["train/loss"].notna().all() and frame["train/lr"].notna().all()
    per_epoch = {  # csv column -> metrics.json history key
        "val/loss": "val/loss",
        "val/accuracy": "val/accuracy",
        "train/epoch_loss": "train/loss",
        "perf/samples_per_s": "perf/samples_per_s",
        "perf/epoch_time_s": "epoch_time_s",
    }
    for column, key in per_epoch.items():
        _assert_same(_column(frame, column), _epoch_values(metrics, key))
    logged = frame.dropna(subset=["test/loss"])
    assert logged["step"].tolist() == [metrics["steps"]]
    assert {tag: logged[tag].item() for tag in metrics["test"]} == pytest.approx(metrics["test"])
    # only the csv backend wrote
    assert not list(csv_run.glob("events.out.tfevents.*"))
    assert not (csv_run / "mlruns").exists()


# -- (b) mlflow ----------------------------------------------------------------------------


def test_mlflow_file_store_in_the_run_folder(
    mlflow_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run_id = _mlflow_client(mlflow_run, monkeypatch)
    metrics = _metrics(mlflow_run)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert client.get_experiment(run.info.experiment_id).name == "attnlstm"
    assert run.data.params["model.hidden_size"] == "8"
    assert run.data.params["model.name"] == "lstm_attn"
    assert set(run.data.metrics) == SCALAR_TAGS
    for tag in ("val/loss", "val/accuracy"):
        history = client.get_metric_history(run_id, tag)
        _assert_same([(m.step, m.value) for m in history], _epoch_values(metrics, tag))
    assert len(client.get_metric_history(run_id, "train/loss")) == metrics["steps"]
    assert {tag: run.data.metrics[tag] for tag in metrics["test"]} == pytest.approx(metrics["test"])
    assert "config.yaml" in {artifact.path for artifact in client.list_artifacts(run_id)}
    assert not list(mlflow_run.glob("events.out.tfevents.*"))
    assert not (mlflow_run / "metrics.csv").exists()


# -- (c) many ------------------------------------------------------------------------------


def test_many_writes_all_three_and_they_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    run_dir = _tiny_run(tmp_path, "logger=many")
    expected = _epoch_values(_metrics(run_dir), "val/loss")
    events = _events(_event_file(run_dir))
    assert set(events.Tags()["scalars"]) == SCALAR_TAGS
    _assert_same([(e.step, e.value) for e in events.Scalars("val/loss")], expected, rel=1e-6)
    _assert_same(_column(_read_csv(run_dir), "val/loss"), expected)
    client, run_id = _mlflow_client(run_dir, monkeypatch)
    history = client.get_metric_history(run_id, "val/loss")
    _assert_same([(m.step, m.value) for m in history], expected)
    assert client.get_run(run_id).info.status == "FINISHED"


# -- (d) TensorBoard, as before the loggers became pluggable ----------------------------------


def test_tensorboard_tags_steps_and_hparams(tensorboard_run: Path) -> None:
    metrics = _metrics(tensorboard_run)
    event_file = _event_file(tensorboard_run)  # one file: no sub-run for the hparams
    assert [p.name for p in tensorboard_run.iterdir() if p.is_dir()] == [".hydra"]
    events = _events(event_file)
    assert set(events.Tags()["scalars"]) == SCALAR_TAGS
    steps = metrics["steps"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    epoch_ends = [STEPS_PER_EPOCH * epoch for epoch in (1, 2)]  # the last step of each epoch
    for tag in ("val/loss", "val/accuracy", "train/epoch_loss", "perf/epoch_time_s"):
        assert [e.step for e in events.Scalars(tag)] == epoch_ends, tag
    _assert_same(
        [(e.step, e.value) for e in events.Scalars("val/loss")],
        _epoch_values(metrics, "val/loss"),
        rel=1e-6,
    )
    for tag in ("test/loss", "test/accuracy"):
        assert [e.step for e in events.Scalars(tag)] == [steps], tag
    # the hparams summaries are in the same event file as the scalars
    hparams = events.PluginTagToContent("hparams")
    assert set(hparams) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["model.hidden_size"].number_value == 8
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/experiment"]
    ).experiment
    assert {info.name.tag for info in experiment.metric_infos} == {
        "val/loss",
        "val/accuracy",
        "test/loss",
        "test/accuracy",
    }
    # the default logger writes nothing else
    assert not (tensorboard_run / "metrics.csv").exists()
    assert not (tensorboard_run / "mlruns").exists()


# -- (e) resume --------------------------------------------------------------------------------


@pytest.mark.slow
def test_csv_resume_keeps_rows_up_to_the_checkpoint_and_continues(tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path, "logger=csv", "trainer.max_epochs=1")
    first = _read_csv(run_dir)
    assert first["step"].tolist() == list(range(1, STEPS_PER_EPOCH + 1))
    # a session that crashed after the checkpoint left rows past it: they must go
    with (run_dir / "metrics.csv").open("a") as handle:
        columns = first.columns.tolist()
        for step in (STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH + 2):
            handle.write(",".join(str(step) if c == "step" else "999.0" for c in columns))
            handle.write("\n")
    run_cli([f"resume={run_dir}", "trainer.max_epochs=2"], tmp_path)

    metrics = _metrics(run_dir)
    final = _read_csv(run_dir)
    assert metrics["status"] == "completed" and metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert final["step"].tolist() == list(range(1, metrics["steps"] + 1))  # each step once
    assert (final.drop(columns="step").fillna(0) != 999.0).all().all()
    assert final["train/loss"].notna().all()
    # the first session's rows are kept as they were
    kept = final[final["step"] <= STEPS_PER_EPOCH][first.columns]
    assert kept.reset_index(drop=True).equals(first)
    _assert_same(_column(final, "val/loss"), _epoch_values(metrics, "val/loss"))
    last = final.iloc[-1]
    assert {tag: last[tag] for tag in metrics["test"]} == pytest.approx(metrics["test"])


# -- (f) a crashed run -----------------------------------------------------------------------


class _Recorder(Logger):
    """Remembers how it was closed."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    def log_hyperparams(
        self, params: Mapping[str, Any], metric_tags: Sequence[str], config_text: str
    ) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def close(self, status: str) -> None:
        self.closed.append(status)


def _crash_in_epoch_two(
    run_dir: Path, backends: Sequence[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[LoggerCollection, _Recorder]:
    """Run a tiny trainer in-process whose loss raises at the 2nd update of epoch 2."""
    cfg = compose_config(TINY)
    typed = check_config(cfg)
    task = build_task(typed.task, typed.seed, typed.data_dir)
    model = build_model(typed.model, typed.attention, task.spec)
    loss, calls = task.loss, []

    def failing_loss(output: Any, batch: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == STEPS_PER_EPOCH + 2:
            raise RuntimeError("the loss broke\nat the 8th update")
        return loss(output, batch)

    monkeypatch.setattr(task, "loss", failing_loss)
    recorder = _Recorder()
    loggers = build_loggers({name: LoggerConfig(name=name) for name in backends}, run_dir)
    collection = LoggerCollection([*loggers.loggers, recorder])
    trainer = Trainer(
        task,
        model,
        torch.device("cpu"),
        run_dir,
        typed.trainer,
        typed.optim,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        loggers=collection,
    )
    with pytest.raises(RuntimeError, match="the loss broke"):
        trainer.run()
    return loggers, recorder


def test_a_crash_is_recorded_as_failed_and_the_loggers_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loggers, recorder = _crash_in_epoch_two(tmp_path, ["tensorboard", "csv"], monkeypatch)
    metrics = _metrics(tmp_path)
    assert metrics["status"] == "failed"
    assert metrics["error"] == "RuntimeError: the loss broke"  # one line
    assert metrics["epochs"] == 1 and metrics["steps"] == STEPS_PER_EPOCH + 1
    assert recorder.closed == ["failed"]
    tensorboard = loggers.loggers[0]
    assert tensorboard.writer.all_writers is None  # SummaryWriter.close() was called
    # the csv was written out on close: the 7th update's row is there, not only epoch 1's
    assert _read_csv(tmp_path)["step"].tolist() == list(range(1, STEPS_PER_EPOCH + 2))
    assert set(_events(_event_file(tmp_path)).Tags()["scalars"]) >= {"train/loss", "val/loss"}


def test_a_crash_ends_the_mlflow_run_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _, recorder = _crash_in_epoch_two(tmp_path, ["mlflow"], monkeypatch)
    assert recorder.closed == ["failed"]
    assert _metrics(tmp_path)["status"] == "failed"
    client, run_id = _mlflow_client(tmp_path, monkeypatch)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert len(client.get_metric_history(run_id, "train/loss")) == STEPS_PER_EPOCH + 1


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [
        ("completed", "FINISHED"),
        ("solved", "FINISHED"),
        ("early_stopped", "FINISHED"),
        ("interrupted", "KILLED"),
        ("diverged", "FAILED"),
        ("failed", "FAILED"),
    ],
)
def test_each_way_a_run_ends_is_its_mlflow_status(
    status: str, mlflow_status: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = build_loggers({"mlflow": LoggerConfig(name="mlflow")}, tmp_path)
    logger.close(status)
    client, run_id = _mlflow_client(tmp_path, monkeypatch)
    assert client.get_run(run_id).info.status == mlflow_status


def test_one_backend_failing_to_close_does_not_keep_the_others_open() -> None:
    class Broken(_Recorder):
        def close(self, status: str) -> None:
            super().close(status)
            raise OSError("disk full")

    broken, after = Broken(), _Recorder()
    with pytest.raises(OSError, match="disk full"):
        LoggerCollection([broken, after]).close("completed")
    assert broken.closed == after.closed == ["completed"]


def test_only_the_process_that_owns_the_run_folder_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun, RANK > 0 trains without logging: no event file, no metrics.csv."""
    monkeypatch.setenv("RANK", "1")
    cfg = compose_config([*TINY, "trainer.max_epochs=1"])
    typed = check_config(cfg)
    task = build_task(typed.task, typed.seed, typed.data_dir)
    model = build_model(typed.model, typed.attention, task.spec)
    trainer = Trainer(
        task,
        model,
        torch.device("cpu"),
        tmp_path,
        typed.trainer,
        typed.optim,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        loggers={"tensorboard": LoggerConfig(), "csv": LoggerConfig(name="csv")},
    )
    assert trainer.run()["status"] == "completed"
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert not (tmp_path / "metrics.csv").exists()
    monkeypatch.setenv("RANK", "0")
    trainer.owns_run_folder = True
    trainer.setup()
    assert [type(logger).__name__ for logger in trainer.logger.loggers] == [
        "TensorBoardLogger",
        "CSVLogger",
    ]
    trainer.close("completed")


@pytest.mark.slow
def test_a_logger_added_on_resume_gets_the_hyperparameters_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming a TensorBoard run with logger=many: the new MLflow run gets the parameters,
    the event file is not given a second hparams summary."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = _tiny_run(tmp_path, "trainer.max_epochs=1")
    run_cli([f"resume={run_dir}", "trainer.max_epochs=2", "logger=many"], tmp_path)
    client, run_id = _mlflow_client(run_dir, monkeypatch)
    assert client.get_run(run_id).data.params["model.hidden_size"] == "8"
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    hparams_tags = [
        value.tag
        for path in run_dir.glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag.startswith("_hparams_/")
    ]
    # experiment, session start, session end: the first session's only
    assert sorted(hparams_tags) == [
        "_hparams_/experiment",
        "_hparams_/session_end_info",
        "_hparams_/session_start_info",
    ]
