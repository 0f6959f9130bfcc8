"""`report_to` names -> logger classes, and the translation of ``report_to`` into loggers.

Names: ``"csv"``, ``"jsonl"`` (built in, always available), ``"tensorboard"``,
``"mlflow"``, ``"wandb"`` (third-party, available when their package is installed).
``"all"`` means every *installed and configured third-party* integration, as in the Hugging Face
Trainer: it never adds the csv / jsonl files, which are written only when named.
``"none"`` (or an empty list) means no logger.

Example:
    >>> loggers = loggers_from_report_to(["csv", "jsonl"], logging_dir="runs/reg", run_name=None, output_dir="runs")
    >>> [lg.name for lg in loggers]
    ['csv', 'jsonl']
    >>> loggers_from_report_to(["comet"], logging_dir="runs/reg", run_name=None, output_dir="runs")
    Traceback (most recent call last):
    ...
    ValueError: report_to: unknown integration 'comet'; accepted: 'csv', 'jsonl', 'tensorboard', 'mlflow', 'wandb', 'all', 'none'
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from toolkit.loggers.base import Logger
from toolkit.loggers.csv_logger import CSVLogger
from toolkit.loggers.jsonl_logger import JSONLinesLogger
from toolkit.loggers.mlflow_logger import MLflowLogger
from toolkit.loggers.tensorboard_logger import TensorBoardLogger
from toolkit.loggers.wandb_logger import WandbLogger

__all__ = [
    "LoggerSpec",
    "LOGGER_REGISTRY",
    "get_available_reporting_integrations",
    "loggers_from_report_to",
    "resolve_report_to",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggerSpec:
    """One registry entry.

    Attributes:
        cls: the logger class.
        description: one line for humans (docs, error messages).
        package: the module it needs, or None for built-in sinks.
        extra: the toolkit extra that installs ``package``.
        build: makes the logger from ``(logging_dir, run_name, output_dir)``.
        configured: whether it can run here without further set-up; ``"all"`` skips those
            that cannot (MLflow without a tracking URI, W&B without a key or offline mode).
    """

    cls: type[Logger]
    description: str
    package: str | None
    extra: str | None
    build: Callable[[str, str | None, str], Logger]
    configured: Callable[[], bool] = lambda: True

    @property
    def third_party(self) -> bool:
        """True when the sink needs an optional package (these are what ``"all"`` selects)."""
        return self.package is not None

    def is_available(self) -> bool:
        """True when the sink can be built here (its package is installed), without importing it."""
        if self.package is None:
            return True
        try:
            return importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):
            return False


def _wandb(logging_dir: str, run_name: str | None, output_dir: str) -> Logger:
    # Hugging Face's default project when WANDB_PROJECT is not set.
    return WandbLogger(
        project=os.environ.get("WANDB_PROJECT", "huggingface"), run_name=run_name, save_dir=output_dir
    )


LOGGER_REGISTRY: dict[str, LoggerSpec] = {
    "csv": LoggerSpec(
        CSVLogger,
        "CSV table <logging_dir>/metrics.csv (one row per log call) + hparams.json",
        None,
        None,
        lambda logging_dir, run_name, output_dir: CSVLogger(logging_dir),
    ),
    "jsonl": LoggerSpec(
        JSONLinesLogger,
        "JSON lines <logging_dir>/metrics.jsonl (one object per log call) + hparams.json",
        None,
        None,
        lambda logging_dir, run_name, output_dir: JSONLinesLogger(logging_dir),
    ),
    "tensorboard": LoggerSpec(
        TensorBoardLogger,
        "TensorBoard event files in <logging_dir>",
        "tensorboard",
        "tensorboard",
        lambda logging_dir, run_name, output_dir: TensorBoardLogger(logging_dir),
    ),
    "mlflow": LoggerSpec(
        MLflowLogger,
        "MLflow run named run_name (tracking URI from MLFLOW_TRACKING_URI, else MLflow's default)",
        "mlflow",
        "mlflow",
        lambda logging_dir, run_name, output_dir: MLflowLogger(run_name=run_name),
        # MLflow's default local file store refuses to start in current versions
        lambda: bool(os.environ.get("MLFLOW_TRACKING_URI")),
    ),
    "wandb": LoggerSpec(
        WandbLogger,
        "Weights & Biases run named run_name, files under <output_dir>/wandb (WANDB_MODE=offline works offline)",
        "wandb",
        "wandb",
        _wandb,
        lambda: bool(os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")),
    ),
}

_SPECIAL = ("all", "none")


def get_available_reporting_integrations() -> list[str]:
    """Names that can be used here: csv, jsonl, and the third-party ones whose package is installed.

    ``report_to="all"`` selects only the third-party part of this list.

    Example:
        >>> get_available_reporting_integrations()[:2]
        ['csv', 'jsonl']
    """
    return [name for name, spec in LOGGER_REGISTRY.items() if spec.is_available()]


def _accepted() -> str:
    return ", ".join(repr(n) for n in (*LOGGER_REGISTRY, *_SPECIAL))


def resolve_report_to(report_to: str | Iterable[str] | None) -> list[str]:
    """Validate ``report_to`` and expand ``"all"``; return registry names without duplicates.

    Raises:
        ValueError: for an unknown name, or ``"none"`` combined with other names.
        ImportError: for an explicitly named integration whose package is missing.

    Example:
        >>> resolve_report_to("none"), resolve_report_to(["csv", "csv"])
        ([], ['csv'])
    """
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    for name in names:
        if not isinstance(name, str) or (name not in LOGGER_REGISTRY and name not in _SPECIAL):
            raise ValueError(f"report_to: unknown integration {name!r}; accepted: {_accepted()}")
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"report_to: 'none' cannot be combined with other integrations, got {names!r}")
        return []
    out: list[str] = []
    for name in names:
        if name == "all":
            installed = [n for n, s in LOGGER_REGISTRY.items() if s.third_party and s.is_available()]
            ready = [n for n in installed if LOGGER_REGISTRY[n].configured()]
            skipped = [n for n in installed if n not in ready]
            log.info(
                "report_to='all' selects the installed integrations: %s%s", ready or "none",
                f" (skipped, not configured: {skipped}; set MLFLOW_TRACKING_URI / WANDB_API_KEY or WANDB_MODE, "
                "or name them in report_to)" if skipped else "",
            )
            out.extend(ready)
        else:
            spec = LOGGER_REGISTRY[name]
            if not spec.is_available():
                raise ImportError(
                    f'report_to={name!r} needs the {spec.package!r} package: pip install "toolkit[{spec.extra}]"'
                )
            out.append(name)
    return list(dict.fromkeys(out))


def loggers_from_report_to(
    report_to: str | Iterable[str] | None,
    *,
    logging_dir: str | os.PathLike,
    run_name: str | None,
    output_dir: str | os.PathLike,
) -> list[Logger]:
    """Build the loggers named by ``report_to`` (the ``TrainingArguments`` field).

    Where each writes: csv / jsonl / tensorboard into ``logging_dir``; mlflow where its
    tracking URI points (run named ``run_name``); wandb under ``output_dir/wandb`` (run
    named ``run_name``, project from ``WANDB_PROJECT`` else ``"huggingface"``).
    Nothing is opened or imported yet: each sink starts on its first call.

    Args:
        report_to: a name, a list of names, ``"all"`` or ``"none"`` / None.
        logging_dir: folder for the file-based sinks.
        run_name: run name for MLflow / W&B.
        output_dir: the training output folder.

    Returns:
        The loggers, in the order named (``"all"`` in registry order).

    Raises:
        ValueError: for an unknown name (the message lists the accepted ones).
        ImportError: for a named integration whose package is missing (names the extra).
    """
    logging_dir, output_dir = os.fspath(logging_dir), os.fspath(output_dir)
    return [LOGGER_REGISTRY[n].build(logging_dir, run_name, output_dir) for n in resolve_report_to(report_to)]
