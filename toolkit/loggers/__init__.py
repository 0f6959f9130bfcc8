"""Loggers: metric sinks (CSV, JSON lines, TensorBoard, MLflow, W&B) behind one collection.

`LoggerCollection` owns rank-zero filtering and value cleaning; each `Logger` only
writes. `LoggerCallback` bridges Trainer events to a collection, and
`loggers_from_report_to` turns the ``report_to`` argument into loggers. Third-party
packages are imported only when a sink is first used. See ``docs/logging.md``.
"""

from toolkit.loggers.base import Logger, LoggerCollection, clean_metrics, flatten_params, to_float
from toolkit.loggers.callback import LoggerCallback, hyperparams_from
from toolkit.loggers.csv_logger import CSVLogger
from toolkit.loggers.jsonl_logger import JSONLinesLogger
from toolkit.loggers.mlflow_logger import MLflowLogger
from toolkit.loggers.registry import (
    LOGGER_REGISTRY,
    LoggerSpec,
    get_available_reporting_integrations,
    loggers_from_report_to,
    resolve_report_to,
)
from toolkit.loggers.tensorboard_logger import TensorBoardLogger
from toolkit.loggers.wandb_logger import WandbLogger

__all__ = [
    "Logger",
    "LoggerCollection",
    "LoggerCallback",
    "CSVLogger",
    "JSONLinesLogger",
    "TensorBoardLogger",
    "MLflowLogger",
    "WandbLogger",
    "LOGGER_REGISTRY",
    "LoggerSpec",
    "get_available_reporting_integrations",
    "loggers_from_report_to",
    "resolve_report_to",
    "hyperparams_from",
    "clean_metrics",
    "flatten_params",
    "to_float",
]
