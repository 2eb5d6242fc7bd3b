"""Entry point (``attnlstm-train``, ``python -m attnlstm``): compose -> build -> fit -> test.

attnlstm-train                                        # the default experiment
attnlstm-train model=lstm task=multiplication task.min_length=50
attnlstm-train -m attention=dot,general,concat,additive,feedforward
attnlstm-train resume=outputs/addition/lstm_attn-feedforward/<timestamp> trainer.max_epochs=20
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnlstm.config import TrainConfig, register_configs, validate
from attnlstm.contracts import TaskSpec
from attnlstm.errors import ConfigError
from attnlstm.io import CHECKPOINT_VERSION, load_checkpoint, write_text
from attnlstm.loggers import LOGGERS
from attnlstm.models import build_model, check_compatible
from attnlstm.paths import config_dir
from attnlstm.runs import family_schemas, saved_config
from attnlstm.tasks import build_task, task_family
from attnlstm.training import Trainer, resolve_device

log = logging.getLogger("attnlstm")

#: groups whose choice is part of a run's identity: a resumed run keeps them
_FIXED_ON_RESUME = ("task", "model", "attention", "optim", "experiment", "seed")


def _run_dir(resume: str | None, default: str) -> str:
    """``hydra.run.dir``: the run to resume, or a fresh timestamped folder."""
    if resume in (None, ""):
        return default
    path = Path(str(resume)).expanduser()
    if not (path / "last.pt").is_file():
        raise ValueError(
            f"resume={resume}: no last.pt there; resume takes the directory of an earlier run"
            " (e.g. outputs/addition/lstm_attn-feedforward/<timestamp>)"
        )
    return str(path)


def _hydra_subdir(resume: str | None, output_dir: str) -> str:
    """``hydra.output_subdir``. A resumed run keeps the ``.hydra/`` of its first session and
    writes its own beside it. Resolved before Hydra writes anything into ``output_dir``, so a
    fresh run pointed at an earlier run's folder stops here, leaving that run untouched."""
    if resume in (None, ""):
        if (Path(output_dir) / "last.pt").exists():
            raise ValueError(
                f"{output_dir} already holds a run; it is never overwritten (continue it with"
                f" resume={output_dir}, or choose another hydra.run.dir)"
            )
        return ".hydra"
    from datetime import datetime

    return f".hydra-resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"


def _job_dirname(override_dirname: str) -> str:
    """A multirun job's folder: Hydra's ``override_dirname``, shortened with a hash when it
    would pass the 255-byte file-name limit."""
    if len(override_dirname.encode()) <= 200:
        return override_dirname or "no-overrides"
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return f"{override_dirname.encode()[:180].decode(errors='ignore')}...{digest}"


register_configs(family_schemas())
OmegaConf.register_new_resolver("attnlstm_job_dirname", _job_dirname, replace=True)
OmegaConf.register_new_resolver("attnlstm_run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("attnlstm_hydra_subdir", _hydra_subdir, replace=True)


def config_for_resume(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The stopped run's own config, with the command line's ``key=value`` overrides applied
    (e.g. ``trainer.max_epochs=50``; a new ``device=`` is allowed too)."""
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
    else:
        saved = OmegaConf.create(load_checkpoint(run_dir / "last.pt")["config"])
    had_loggers = "logger" in saved
    saved = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved_config(saved))
    if not had_loggers:  # a run from before the logger group: the default loggers
        saved.logger = cfg.logger
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        root = key.split(".", 1)[0]
        if key == "resume" or root == "hydra":
            continue
        if root in _FIXED_ON_RESUME:
            raise ConfigError(
                f"resume continues a run with its own config, so '{override}' cannot change it;"
                " only trainer.*, device and similar keys may change (start a new run instead)"
            )
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False)
    saved.resume = str(run_dir)
    return saved


def resumable_checkpoint(run_dir: Path, spec: TaskSpec, device: torch.device) -> dict[str, Any]:
    """``last.pt`` of the run to resume, checked before anything is trained or written: a
    format this attnlstm reads, and a task whose data give the model the same shape (the
    vocabularies built from today's files match the run's)."""
    checkpoint = load_checkpoint(run_dir / "last.pt", device)
    version = checkpoint.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ConfigError(
            f"{run_dir / 'last.pt'} has checkpoint format version {version}; this attnlstm"
            f" resumes versions up to {CHECKPOINT_VERSION} (update attnlstm)"
        )
    saved = checkpoint.get("spec")  # version 1 did not store it
    if saved is not None and TaskSpec.from_dict(saved) != spec:
        raise ConfigError(
            f"resume={run_dir}: the task built from today's data does not match the run's"
            f" (run: {TaskSpec.from_dict(saved)}, now: {spec}); the data files or the data"
            " directory changed since the run started; resume with the same data"
        )
    return checkpoint


def check_config(cfg: DictConfig) -> TrainConfig:
    """Every check that needs no data, in the order a user would fix them: each key's range
    (the schemas), then the model against the attention method and the task family (the
    registries' capabilities), then the device. Returns the typed config."""
    typed = validate(cfg)
    family = task_family(cfg.task)
    check_compatible(
        typed.model, typed.attention, family.target, family.inputs, task=str(cfg.task.name)
    )
    for key, logger in typed.logger.items():
        entry = LOGGERS.get(logger.name)  # ConfigError listing the loggers
        missing = entry.needs_module is not None and importlib.util.find_spec(entry.needs_module)
        if missing is None:
            raise ConfigError(
                f"logger.{key}.name={logger.name} is not allowed here: it needs the"
                f' {entry.needs_module} package (pip install "attnlstm[{logger.name}]"); or'
                " choose logger=tensorboard or logger=csv"
            )
    return typed


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the task, model and trainer from ``cfg`` and train in Hydra's run directory."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.resume:
        cfg = config_for_resume(cfg, run_dir, list(hydra_cfg.overrides.task))
    elif (run_dir / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; it is never overwritten")
    typed = check_config(cfg)
    device = resolve_device(typed.device.type, typed.device.index)

    torch.manual_seed(typed.seed)
    task = build_task(typed.task, typed.seed, typed.data_dir)
    model = build_model(typed.model, typed.attention, task.spec)
    checkpoint = resumable_checkpoint(run_dir, task.spec, device) if cfg.resume else None
    write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")

    parameters = sum(p.numel() for p in model.parameters())
    log.info("run directory: %s", run_dir)
    log.info(
        "task %s, model %s, attention %s: %d parameters on %s",
        cfg.task.name,
        cfg.model.name,
        cfg.attention.method,
        parameters,
        device,
    )
    trainer = Trainer(
        task,
        model,
        device,
        run_dir,
        typed.trainer,
        typed.optim,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        loggers=typed.logger,
    )
    summary = trainer.run(checkpoint)
    log.info("metrics: %s", run_dir / "metrics.json")
    return summary


def _remove_if_empty_run(run_dir: Path) -> None:
    """Remove a run directory that this invocation created and that holds no results."""
    leftovers = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if leftovers <= {".hydra", "train.log", "config.yaml"}:
        for name in leftovers:
            path = run_dir / name
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
        run_dir.rmdir()
        for parent in run_dir.parents:  # and the folders made for it, while empty
            if parent == Path.cwd() or any(parent.iterdir()):
                break
            parent.rmdir()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    try:
        return run(cfg)
    except ConfigError as error:
        hydra_cfg = HydraConfig.get()
        if not cfg.resume:
            _remove_if_empty_run(Path(hydra_cfg.runtime.output_dir))
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one bad combination does not stop a sweep
            log.error("skipped job %s: %s", hydra_cfg.job.override_dirname, error)
            return None
        print(f"error: {error}", file=sys.stderr)  # one line, no traceback: the user fixes it
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)  # the trainer has saved what there was and said how to resume


def main() -> None:
    """Console entry point."""
    _hydra_main()


__all__ = ["config_for_resume", "main", "run"]
