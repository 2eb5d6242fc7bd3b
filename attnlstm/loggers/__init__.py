"""Pluggable loggers (``logger=tensorboard|csv|mlflow|many``); see :mod:`attnlstm.loggers.base`."""

# importing the backends registers them (mlflow itself is imported only when used)
from attnlstm.loggers import csv, mlflow, tensorboard  # noqa: F401
from attnlstm.loggers.base import (
    LOGGERS,
    Logger,
    LoggerCollection,
    build_loggers,
    experiment_hparams,
    flatten_config,
    register_logger,
)

__all__ = [
    "LOGGERS",
    "Logger",
    "LoggerCollection",
    "build_loggers",
    "experiment_hparams",
    "flatten_config",
    "register_logger",
]
