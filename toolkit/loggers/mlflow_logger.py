"""`MLflowLogger`: metrics and params into an MLflow run, through `MlflowClient`."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from toolkit.loggers.base import Logger, flatten_params, require_package

__all__ = ["MLflowLogger", "sanitize_mlflow_name"]

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation), used when that module does not have them.
_MAX_PARAM_VAL_LENGTH = 6000
_MAX_KEY_LENGTH = 250
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000

_BAD_CHARS = re.compile(r"[^\w./\- ]")  # what MLflow accepts on every OS (':' is refused on Windows)

_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "killed": "KILLED"}


def sanitize_mlflow_name(name: str, max_length: int = _MAX_KEY_LENGTH) -> str:
    """A metric / param name MLflow accepts: bad characters become ``_``, the path is normalised.

    MLflow takes letters, digits, ``_ - . /`` and spaces, and refuses names that are not a
    normalised relative path (``a//b``, ``/a``, ``a/../b``).

    Example:
        >>> sanitize_mlflow_name("eval/acc@1 (top)")
        'eval/acc_1 _top_'
        >>> sanitize_mlflow_name("/train//loss/")
        'train/loss'
        >>> sanitize_mlflow_name("../x")
        '__/x'
    """
    name = _BAD_CHARS.sub("_", str(name))
    parts = ["__" if p == ".." else p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)[:max_length] or "_"


def _limits() -> tuple[int, int, int, int]:
    try:
        from mlflow.utils import validation as v
    except ImportError:  # pragma: no cover - very old or stripped mlflow
        v = None
    return (
        getattr(v, "MAX_PARAM_VAL_LENGTH", _MAX_PARAM_VAL_LENGTH),
        getattr(v, "MAX_ENTITY_KEY_LENGTH", _MAX_KEY_LENGTH),
        getattr(v, "MAX_PARAMS_TAGS_PER_BATCH", _MAX_PARAMS_PER_BATCH),
        getattr(v, "MAX_METRICS_PER_BATCH", _MAX_METRICS_PER_BATCH),
    )


class MLflowLogger(Logger):
    """Logs to one MLflow run per training (started on first use, ended by `finalize`).

    Uses `mlflow.tracking.MlflowClient`, never MLflow's global "active run", so two
    loggers (or two trainers) in one process do not interfere.

    Where the data goes: ``tracking_uri`` if given, else the ``MLFLOW_TRACKING_URI``
    environment variable, else MLflow's own default. Current MLflow versions refuse the
    old local file store (``./mlruns``, "maintenance mode"); a SQLite URI such as
    ``sqlite:///runs/mlflow.db`` works without a server (it needs ``sqlalchemy`` and
    ``alembic``, which the ``toolkit[mlflow]`` extra installs).

    Names and values are made acceptable to MLflow: metric and param names are
    sanitised (`sanitize_mlflow_name`), nested params are flattened with ``/``, param
    values longer than MLflow's limit are truncated (with one warning), and a param
    logged again with another value is skipped with a warning (MLflow params are
    immutable).

    Args:
        tracking_uri: MLflow tracking URI, e.g. ``"sqlite:///mlflow.db"``.
        experiment_name: experiment to log into (created if missing); default: the
            ``MLFLOW_EXPERIMENT_NAME`` environment variable, else ``"Default"``.
        run_name: display name of the run.
        tags: tags set on the run when it starts.

    Raises:
        ImportError: when ``mlflow`` is missing (``toolkit[mlflow]``).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        require_package("mlflow", "mlflow", "MLflowLogger")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self._client: Any = None
        self._run_id: str | None = None
        self._params: dict[str, str] = {}

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def run_id(self) -> str | None:
        """Id of the current run, or None before the first call / after `finalize`."""
        return self._run_id

    @property
    def client(self) -> Any:
        """The `MlflowClient` (created on first access)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _ensure_run(self) -> str:
        if self._run_id is None:
            client = self.client
            name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            run = client.create_run(experiment_id, run_name=self.run_name, tags=self.tags or None)
            self._run_id = run.info.run_id
            self._params = {}
            log.info("MLflow run %s started in experiment %r (%s)", self._run_id, name, client.tracking_uri)
        return self._run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run()
        _, max_key, _, per_batch = _limits()
        now = int(time.time() * 1000)
        batch = [
            Metric(sanitize_mlflow_name(k, max_key), float(v), now, int(step)) for k, v in metrics.items()
        ]
        for i in range(0, len(batch), per_batch):
            self.client.log_batch(run_id, metrics=batch[i : i + per_batch])

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        run_id = self._ensure_run()
        max_value, max_key, per_batch, _ = _limits()
        new: dict[str, str] = {}
        truncated: list[str] = []
        for key, value in flatten_params(params).items():
            key = sanitize_mlflow_name(key, max_key)
            text = str(value)
            if len(text) > max_value:
                truncated.append(key)
                text = text[:max_value]
            if key in self._params or key in new:
                if (self._params.get(key, new.get(key))) != text:
                    log.warning("MLflow params cannot change: kept the first value of %r.", key)
                continue
            new[key] = text
        if truncated:
            log.warning("Truncated MLflow param values longer than %d characters: %s", max_value, truncated)
        batch = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(batch), per_batch):
            self.client.log_batch(run_id, params=batch[i : i + per_batch])
        self._params.update(new)

    def finalize(self, status: str = "success") -> None:
        if self._run_id is not None:
            self.client.set_terminated(self._run_id, status=_STATUS.get(status, "FAILED"))
            self._run_id = None

    def __repr__(self) -> str:
        return f"MLflowLogger(tracking_uri={self.tracking_uri!r}, run_name={self.run_name!r})"
