"""Scaling out (attnlstm.sweeps, conf/hparams_search, docs/sweeps.md): threads per job, the
objective an Optuna study reads, the presets, and sweeps on the joblib, submitit and Optuna
plugins (``pip install "attnlstm[sweeps]"``)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import attnlstm.train
from attnlstm import sweeps
from attnlstm.errors import ConfigError
from attnlstm.paths import config_dir
from attnlstm.sweeps import (
    MakeSweepDir,
    TrialFailed,
    apply_threads,
    available_objectives,
    check_objective,
    failed_trial,
    launcher_threads,
    objective_value,
    sweeper_reads_objective,
    threads_for_job,
)
from attnlstm.train import check_config
from tests.conftest import TINY, compose_config, run_cli

#: optuna 2.10 (the newest hydra-optuna-sweeper 1.3 allows) uses SQLAlchemy 1.4's old API
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")

PRESETS = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_joblib = pytest.mark.skipif(
    not _installed("hydra_plugins.hydra_joblib_launcher"),
    reason='hydra-joblib-launcher is not installed (pip install "attnlstm[sweeps]")',
)
needs_submitit = pytest.mark.skipif(
    not _installed("hydra_plugins.hydra_submitit_launcher"),
    reason='hydra-submitit-launcher is not installed (pip install "attnlstm[sweeps]")',
)
needs_optuna = pytest.mark.skipif(
    not _installed("hydra_plugins.hydra_optuna_sweeper"),
    reason='hydra-optuna-sweeper is not installed (pip install "attnlstm[sweeps]")',
)
needs_ray = pytest.mark.skipif(
    not _installed("hydra_plugins.hydra_ray_launcher"),
    reason='hydra-ray-launcher is not installed (pip install "attnlstm[ray]")',
)
#: _hydra_main returns objective_value(...) under an optimising sweeper (the Optuna wiring)
needs_objective_wiring = pytest.mark.skipif(
    "objective_value" not in Path(attnlstm.train.__file__).read_text(),
    reason="attnlstm.train._hydra_main does not return objective_value(...) yet",
)


def _compose_with_hydra(overrides: list[str], multirun: bool = True) -> DictConfig:
    """The config with Hydra's own node, as a job of ``attnlstm-train [-m] <overrides>``
    sees it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    if multirun:
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
    return cfg


@pytest.fixture
def as_hydra_job() -> Iterator[Any]:
    """Install a composed config as the running job's HydraConfig; removed afterwards."""
    instance = HydraConfig.instance()
    previous = instance.cfg

    def install(cfg: DictConfig) -> None:
        instance.set_config(cfg)

    yield install
    instance.cfg = previous


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_jobs", "cores", "expected"),
    [
        (2, 16, 8),
        (4, 10, 2),
        (2, 2, 1),
        (3, 2, 1),  # more jobs than cores: still one thread each
        (-1, 16, 1),  # joblib's -1: a job per core
        (-2, 8, 1),  # all cores but one: 7 jobs
        (-8, 8, None),  # 8 + 1 - 8 = 1 job at a time: PyTorch's default
        (1, 8, None),
    ],
)
def test_joblib_jobs_share_the_cores(n_jobs: int, cores: int, expected: int | None) -> None:
    assert launcher_threads({"_target_": JOBLIB, "n_jobs": n_jobs}, cores) == expected


def test_other_launchers_threads() -> None:
    assert launcher_threads({"_target_": SUBMITIT_LOCAL, "cpus_per_task": 4}, 16) == 4
    assert launcher_threads({"_target_": SUBMITIT_SLURM, "cpus_per_task": None}, 16) is None
    assert launcher_threads({"_target_": RAY, "ray": {"remote": {"num_cpus": 3}}}, 16) == 3
    assert launcher_threads({"_target_": RAY, "ray": {"remote": {}}}, 16) == 1
    assert launcher_threads({"_target_": BASIC}, 16) is None
    assert launcher_threads(None, 16) is None


def test_configured_threads_win_and_nothing_changes_outside_hydra(as_hydra_job: Any) -> None:
    assert not HydraConfig.initialized()
    assert threads_for_job(None) is None
    assert threads_for_job(3) == 3


@needs_joblib
def test_threads_for_job_reads_the_joblib_launcher_of_the_job(
    as_hydra_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps, "available_cores", lambda: 8)
    as_hydra_job(_compose_with_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]))
    assert threads_for_job(None) == 4
    assert threads_for_job(1) == 1  # trainer.threads wins
    as_hydra_job(_compose_with_hydra([]))  # Hydra's basic launcher: one job at a time
    assert threads_for_job(None) is None


@needs_submitit
def test_threads_for_job_reads_submitit_cpus_per_task(as_hydra_job: Any) -> None:
    overrides = ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"]
    as_hydra_job(_compose_with_hydra(overrides))
    assert threads_for_job(None) == 3


def test_apply_threads_sets_pytorch_threads() -> None:
    before = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
        apply_threads(None)  # leaves PyTorch's setting alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match=r"trainer\.threads=0"):
        apply_threads(0)


def test_apply_threads_sets_interop_threads_once_and_never_raises() -> None:
    """In a fresh interpreter: the first call sets the inter-op threads, later calls (which
    PyTorch would refuse) leave them; one set by hand before is kept, without an error."""
    script = (
        "import torch\n"
        "from attnlstm.sweeps import apply_threads\n"
        "apply_threads(2)\n"
        "assert (torch.get_num_threads(), torch.get_num_interop_threads()) == (2, 2)\n"
        "apply_threads(1)\n"
        "assert (torch.get_num_threads(), torch.get_num_interop_threads()) == (1, 2)\n"
        "import attnlstm.sweeps as s\n"
        "s._interop_threads_set[0] = False  # as if another module had set them first\n"
        "apply_threads(1)\n"
        "assert torch.get_num_interop_threads() == 2\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- the objective ---------------------------------------------------------------------------

SUMMARY: dict[str, Any] = {
    "status": "completed",
    "monitor": {"metric": "val/accuracy", "mode": "max"},
    "best": {"epoch": 3, "val/loss": 0.25, "val/accuracy": 0.5},
    "final": {"epoch": 4, "val/loss": 0.2, "val/accuracy": 0.25, "train/loss": 0.1},
    "test": {"test/loss": 0.3, "test/accuracy": 1},
}


def test_objective_reads_test_and_best_validation_values() -> None:
    assert objective_value(SUMMARY, "test/accuracy") == 1.0
    assert isinstance(objective_value(SUMMARY, "test/accuracy"), float)
    assert objective_value(SUMMARY, "val/loss") == 0.25  # at the best epoch, not the last
    assert objective_value({**SUMMARY, "status": "solved"}, "val/accuracy") == 0.5
    assert available_objectives(SUMMARY) == {
        "test/loss": 0.3,
        "test/accuracy": 1.0,
        "val/loss": 0.25,
        "val/accuracy": 0.5,
    }


def test_an_unknown_metric_is_a_config_error_listing_the_available_ones() -> None:
    with pytest.raises(ConfigError) as error:
        objective_value(SUMMARY, "val/bleu")
    message = str(error.value)
    assert "optimized_metric=val/bleu" in message
    for name in ("test/accuracy", "test/loss", "val/accuracy", "val/loss"):
        assert name in message


@pytest.mark.parametrize("metric", ["accuracy", "final/val/loss", "val/", "train/loss"])
def test_a_metric_of_another_form_is_refused_before_any_run(metric: str) -> None:
    with pytest.raises(ConfigError, match=f"optimized_metric={metric} is not allowed"):
        check_objective(metric)
    with pytest.raises(ConfigError):
        objective_value(SUMMARY, metric)


@pytest.mark.parametrize("status", ["diverged", "failed", "interrupted"])
def test_a_run_without_a_result_fails_the_trial(status: str) -> None:
    summary = {**SUMMARY, "status": status, "error": "loss is nan", "test": {}}
    with pytest.raises(TrialFailed, match=f"the run {status}"):
        objective_value(summary, "test/accuracy")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_sweeper_is_never_handed_nan_or_infinity(value: float) -> None:
    summary = {**SUMMARY, "best": {"epoch": 1, "val/loss": value}}
    with pytest.raises(TrialFailed, match="val/loss is"):
        objective_value(summary, "val/loss")


def test_failed_trial_raises_an_exception_the_sweeper_records() -> None:
    with pytest.raises(TrialFailed, match="diverged job x: loss is nan"):
        failed_trial("diverged job x: loss is nan")
    assert issubclass(TrialFailed, Exception)  # Hydra's run_job catches it: a FAILED job
    assert not issubclass(TrialFailed, ConfigError)


def test_the_objective_of_a_real_run(tmp_path: Path) -> None:
    """metrics.json as the trainer writes it holds what objective_value reads."""
    run_cli([*TINY, "hydra.run.dir=run"], tmp_path)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert objective_value(summary, "test/accuracy") == summary["test"]["test/accuracy"]
    assert objective_value(summary, "val/loss") == summary["best"]["val/loss"]


def test_only_an_optimising_sweeper_reads_the_objective(as_hydra_job: Any) -> None:
    assert not sweeper_reads_objective("val/loss")  # outside Hydra
    as_hydra_job(_compose_with_hydra([]))  # a plain -m: the basic sweeper
    assert not sweeper_reads_objective("val/loss")
    check_objective(None)


@needs_optuna
def test_the_optuna_sweeper_reads_the_objective(as_hydra_job: Any) -> None:
    as_hydra_job(_compose_with_hydra(["hparams_search=lstm_attn_addition"]))
    assert sweeper_reads_objective("val/loss")
    assert not sweeper_reads_objective(None)
    with pytest.raises(ConfigError, match="optimized_metric is not set"):
        check_objective(None)
    as_hydra_job(_compose_with_hydra(["hparams_search=lstm_attn_addition"], multirun=False))
    assert not sweeper_reads_objective("val/loss")  # a single run returns nothing to read


def test_make_sweep_dir_makes_the_folder_before_the_storage_opens(tmp_path: Path) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "a" / "b")}}})
    MakeSweepDir().on_multirun_start(config=config)
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    config.hydra.sweep.dir = str(tmp_path / "file" / "sweep")
    with pytest.raises(ConfigError, match="cannot make the sweep folder"):
        MakeSweepDir().on_multirun_start(config=config)


# -- the presets -----------------------------------------------------------------------------


def test_there_are_presets() -> None:
    assert {"lstm_attn_addition", "lm_ptb"} <= set(PRESETS)


@needs_optuna
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_into_a_resumable_optuna_study(preset: str) -> None:
    text = (config_dir() / "hparams_search" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    cfg = _compose_with_hydra([f"hparams_search={preset}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    check_objective(cfg.optimized_metric)
    assert sweeper.direction in ("minimize", "maximize")
    assert sweeper.study_name == preset
    sweep_dir = str(cfg.hydra.sweep.dir)
    assert sweeper.storage == f"sqlite:///{sweep_dir}/optuna.db"
    assert sweeper.n_trials > 0
    assert sweeper.max_failure_rate == 1.0  # a failed trial never ends the study
    assert sweeper.sampler.seed is None  # a seeded sampler repeats itself in a continued study
    assert cfg.hydra.callbacks.make_sweep_dir._target_ == "attnlstm.sweeps.MakeSweepDir"
    assert len(sweeper.params) >= 2
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


@needs_optuna
@pytest.mark.parametrize("preset", PRESETS)
def test_every_corner_of_a_preset_search_space_is_a_valid_config(preset: str) -> None:
    """Each choice and both ends of each interval pass every check that needs no data."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = _compose_with_hydra([f"hparams_search={preset}"]).hydra.sweeper.params
    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed
    for key, distribution in distributions.items():
        values = getattr(distribution, "choices", None)
        if values is None:
            values = (distribution.low, distribution.high)
        for value in values:
            cfg = compose_config([f"hparams_search={preset}", f"{key}={value}"])
            typed = check_config(cfg)
            assert OmegaConf.select(cfg, key) == pytest.approx(value)
            assert typed is not None


@needs_optuna
def test_lm_preset_ties_the_three_dropouts() -> None:
    cfg = compose_config(["hparams_search=lm_ptb", "model.dropout_input=0.35"])
    assert cfg.model.dropout_hidden == cfg.model.dropout_output == 0.35
    assert (cfg.task.name, cfg.model.name) == ("lm_ptb", "lm")


# -- end to end (slow: several processes each) -----------------------------------------------

TINY_SWEEP = [arg for arg in TINY if not arg.startswith("model.hidden_size=")]


def _job_summaries(sweep_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("metrics.json"))]


@pytest.mark.slow
@needs_joblib
def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "seed=0,1"]
    result = run_cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout
    summaries = _job_summaries(sweep)
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert len(list(sweep.glob("*/train.log"))) == 2


@pytest.mark.slow
@needs_submitit
def test_submitit_local_launcher_runs_two_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *TINY]
    run_cli([*args, "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert [s["status"] for s in _job_summaries(sweep)] == ["completed", "completed"]
    # submitit's own logs: <sweep dir>/.submitit/<job id>/<job id>_0_log.{out,err}
    logs = sorted(sweep.glob(".submitit/*/*_0_log.out"))
    assert len(logs) == 2
    assert any("run directory" in log.read_text() for log in logs)


@pytest.mark.slow
@needs_ray
def test_ray_launcher_runs_two_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", *TINY]
    run_cli([*args, "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=400)
    assert [s["status"] for s in _job_summaries(sweep)] == ["completed", "completed"]


def _trial_states(sweep: Path, study_name: str) -> list[str]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{sweep}/optuna.db")
    return [trial.state.name for trial in study.trials]


@pytest.mark.slow
@needs_optuna
@needs_objective_wiring
def test_optuna_study_survives_a_failed_trial_and_continues(tmp_path: Path) -> None:
    """Three tiny trials, one with an invalid hidden size (refused: a FAILED trial, the
    study goes on); the best trial is written down; the same command with the same sweep
    folder adds three trials to the same study."""
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hparams_search=lstm_attn_addition",
        *TINY_SWEEP,
        "hydra.sweeper.n_trials=3",
        "model.hidden_size=choice(8,0)",  # 0 is refused by the config's checks
        f"hydra.sweep.dir={sweep}",
    ]
    # seeded, so that the three trials draw both sizes (seed 1: 8, 8, 0)
    first = run_cli([*command, "hydra.sweeper.sampler.seed=1"], tmp_path)
    states = _trial_states(sweep, "lstm_attn_addition")
    assert len(states) == 3
    assert "FAIL" in states and "COMPLETE" in states, (states, first.stdout, first.stderr)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_params["model.hidden_size"] == 8
    best_values = [s["best"]["val/loss"] for s in _job_summaries(sweep)]
    assert results.best_value == pytest.approx(min(best_values))

    run_cli(command, tmp_path)  # the preset's unseeded sampler, as a user continues it
    states = _trial_states(sweep, "lstm_attn_addition")
    assert len(states) == 6
    assert (sweep / "optimization_results.yaml").is_file()


def test_the_slurm_requeue_preset_composes_on_submitit() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from attnlstm.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_requeue"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.signal_delay_s == 180 and launcher.max_num_timeout == 20
