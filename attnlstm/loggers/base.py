"""The logger interface: what the trainer reports, whoever stores it.

The trainer emits records (scalars per step and per epoch, figures, images, text, the
hyperparameters) to one :class:`Logger`; it does not know which backends exist. Backends
register in :data:`LOGGERS` (``logger=<name>``, ``conf/logger/``); several at once are one
:class:`LoggerCollection`. Only the process that owns the run folder logs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from attnlstm.registry import Registry

HParamValue = bool | int | float | str

#: A backend is built as ``cls(cfg, run_dir, resume_step)``: ``cfg`` its LoggerConfig,
#: ``resume_step`` the step a resumed run continues from (records after it are dropped where
#: the backend can), None for a new run.
LOGGERS: Registry[type[Logger]] = Registry("logger")


def register_logger(
    name: str, needs_module: str | None = None
) -> Callable[[type[Logger]], type[Logger]]:
    """Class decorator: register a :class:`Logger` backend as ``logger=<name>``;
    ``needs_module``: an optional package it imports, checked before a run starts."""
    return LOGGERS.register(name, needs_module=needs_module)


class Logger(ABC):
    """One storage backend for a run's records. Steps are optimiser updates."""

    #: False when the backend continues a store an earlier session of the run began (a
    #: resumed run's event file, MLflow run, ...): it has the hyperparameters already
    started_fresh: bool = True

    @abstractmethod
    def log_hyperparams(
        self, params: Mapping[str, HParamValue], metric_tags: Sequence[str], config_text: str
    ) -> None:
        """Once per new run: the flattened config (``params``), the tags under which final
        metrics will be logged as scalars (``metric_tags``) and the resolved config as YAML."""

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars (``train/loss``, ``val/acc``, ``perf/...``, ``test/...``) at ``step``."""

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure (closed by the caller after all loggers saw it); optional."""
        return None

    def log_image(self, tag: str, image: Tensor, step: int) -> None:
        """A grey image (H, W) with values in [0, 1]; optional."""
        return None

    def flush(self) -> None:
        """Make what was logged so far durable (called after every epoch)."""
        return None

    @abstractmethod
    def close(self, status: str) -> None:
        """The run has ended with ``status`` (completed, failed, ...); release resources."""


class LoggerCollection(Logger):
    """Several backends as one: every record goes to each of them, in order."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    @property
    def started_fresh(self) -> bool:  # type: ignore[override]
        return any(logger.started_fresh for logger in self.loggers)

    def log_hyperparams(
        self, params: Mapping[str, HParamValue], metric_tags: Sequence[str], config_text: str
    ) -> None:
        """To the backends that started fresh (all of them in a new run; in a resumed run,
        one added by the resuming command)."""
        for logger in self.loggers:
            if logger.started_fresh:
                logger.log_hyperparams(params, metric_tags, config_text)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        for logger in self.loggers:
            logger.log_figure(tag, figure, step)

    def log_image(self, tag: str, image: Tensor, step: int) -> None:
        for logger in self.loggers:
            logger.log_image(tag, image, step)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self, status: str) -> None:
        """Close every backend, even when one of them fails (its error is raised after)."""
        failure: Exception | None = None
        for logger in self.loggers:
            try:
                logger.close(status)
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure


def build_loggers(
    configs: Mapping[str, Any], run_dir: Path, resume_step: int | None = None
) -> LoggerCollection:
    """The backends named in the ``logger`` config (``{key: LoggerConfig}``), as one logger."""
    return LoggerCollection(
        [
            LOGGERS.get(str(cfg.name)).component(cfg, Path(run_dir), resume_step)
            for cfg in configs.values()
        ]
    )


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, HParamValue]:
    """``{"model": {"hidden_size": 100}}`` -> ``{"model.hidden_size": 100}``; values that
    loggers cannot show (None, lists) become strings."""
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


#: the keys that name an experiment, in the order the HParams tab should open on
DEFINING_KEYS = ("task.name", "model.name", "attention.method", "seed")
#: the config sections whose keys define a run beyond its :data:`DEFINING_KEYS`, in order
DEFINING_SECTIONS = ("task", "model", "attention", "optim", "trainer")
#: keys that say where and how a run is done or recorded, not what it is: its data folder,
#: resumption, device, progress bar, logging cadence, checkpoints, debugging aids, loggers
BOOKKEEPING_KEYS = frozenset(
    {
        "data_dir",
        "resume",
        "trainer.progress_bar",
        "trainer.log_every_n_steps",
        "trainer.attention_images",
        "trainer.checkpoint_every_n_steps",
        "trainer.fast_dev_run",
        "trainer.profile_steps",
        "trainer.threads",
        "optimized_metric",
    }
)
BOOKKEEPING_SECTIONS = ("device", "logger")


def experiment_hparams(params: Mapping[str, HParamValue | None]) -> dict[str, HParamValue]:
    """The hyperparameters that define an experiment, for a comparison table (TensorBoard's
    HParams tab), from the flattened config (:func:`flatten_config`).

    Left out: keys without a value (None, which :func:`flatten_config` writes as ``"None"``)
    and bookkeeping (:data:`BOOKKEEPING_KEYS`, and every ``device.*`` and ``logger.*`` key).
    Order: :data:`DEFINING_KEYS` first (``task.name``, ``model.name``, ``attention.method``,
    ``seed``), then the other keys of :data:`DEFINING_SECTIONS` section by section (``task.*``,
    ``model.*``, ``attention.*``, ``optim.*``, ``trainer.*``), each in the config's order, then
    any other key in the config's order. Loggers that keep the whole config (MLflow) do not
    use it.

    ``{"seed": 0, "device.type": "cpu", "model.name": "lstm", "task.max_length": "None"}``
    -> ``{"model.name": "lstm", "seed": 0}``.
    """

    def bookkeeping(name: str) -> bool:
        return name in BOOKKEEPING_KEYS or name.split(".", 1)[0] in BOOKKEEPING_SECTIONS

    def rank(name: str) -> int:
        """0..3 for the defining keys, then one rank per section, the others last."""
        if name in DEFINING_KEYS:
            return DEFINING_KEYS.index(name)
        section = name.split(".", 1)[0]
        if "." in name and section in DEFINING_SECTIONS:
            return len(DEFINING_KEYS) + DEFINING_SECTIONS.index(section)
        return len(DEFINING_KEYS) + len(DEFINING_SECTIONS)

    entries = [
        (name, value)
        for name, value in params.items()
        if value is not None and value != "None" and not bookkeeping(name)
    ]
    # a stable sort: within a rank the keys keep the config's order
    return dict(sorted(entries, key=lambda entry: rank(entry[0])))
