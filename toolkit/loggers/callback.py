"""`LoggerCallback`: the bridge from Trainer events to a `LoggerCollection`.

A custom loop does not need it: build a `LoggerCollection` and call its
``log_metrics(metrics, step)`` / ``finalize()`` directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toolkit.callbacks.base import TrainerCallback
from toolkit.loggers.base import Logger, LoggerCollection
from toolkit.state import TrainerControl, TrainerState

__all__ = ["LoggerCallback", "hyperparams_from"]


def hyperparams_from(args: Any, model: Any = None) -> dict[str, Any]:
    """The hyper-parameters a run records: the arguments, plus the model's config.

    Args:
        args: ``TrainingArguments`` (its ``to_sanitized_dict()``) or anything with
            ``to_dict()``; None gives no arguments.
        model: a model whose ``config`` has ``to_dict()`` (Hugging Face style), possibly
            wrapped (``model.module``); its config goes under ``"model_config"``.

    Returns:
        A new, possibly nested dict.

    Example:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(to_dict=lambda: {"learning_rate": 0.1})
        >>> model = SimpleNamespace(config=SimpleNamespace(to_dict=lambda: {"hidden_size": 8}))
        >>> hyperparams_from(args, model)
        {'learning_rate': 0.1, 'model_config': {'hidden_size': 8}}
    """
    params: dict[str, Any] = {}
    if args is not None:
        if callable(getattr(args, "to_sanitized_dict", None)):
            params.update(args.to_sanitized_dict())
        elif callable(getattr(args, "to_dict", None)):
            params.update(args.to_dict())
    for candidate in (model, getattr(model, "module", None)):
        config = getattr(candidate, "config", None)
        if config is not None and callable(getattr(config, "to_dict", None)):
            params["model_config"] = config.to_dict()
            break
    return params


class LoggerCallback(TrainerCallback):
    """Feeds Trainer events to loggers: hyper-parameters, every ``on_log``, then finalize.

    - ``on_train_begin``: logs `hyperparams_from` ``(args, model)`` once per training;
    - ``on_log``: logs ``logs`` at ``state.global_step`` (names as in ``log_history``);
    - ``on_train_end``: finalizes the loggers (logging again later, e.g. a final
      ``evaluate()``, opens a new file / run in each sink).

    The collection does the rank-zero filtering; the callback only copies
    ``state.is_world_process_zero`` into ``collection.is_global_zero`` at each event,
    so in a Trainer the state decides.

    Args:
        loggers: a `LoggerCollection`, or loggers to put in a new one.

    Example:
        >>> from toolkit.loggers import JSONLinesLogger
        >>> cb = LoggerCallback([JSONLinesLogger("runs/cb")])
        >>> state = TrainerState(global_step=5)
        >>> _ = cb.on_log(None, state, TrainerControl(), logs={"loss": 0.5, "note": "x"})
        >>> open("runs/cb/metrics.jsonl").read()
        '{"step": 5, "loss": 0.5}\\n'
    """

    def __init__(self, loggers: LoggerCollection | Iterable[Logger]) -> None:
        self.loggers = loggers if isinstance(loggers, LoggerCollection) else LoggerCollection(loggers)
        self._hparams_logged = False

    def _sync_rank(self, state: TrainerState) -> None:
        self.loggers.is_global_zero = bool(state.is_world_process_zero)

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._sync_rank(state)
        if not self._hparams_logged and self.loggers.active:
            params = hyperparams_from(args, kwargs.get("model"))
            if params:
                self.loggers.log_hyperparams(params)
        self._hparams_logged = True

    def on_log(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._sync_rank(state)
        logs = kwargs.get("logs")
        if logs:
            self.loggers.log_metrics(logs, state.global_step)

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._sync_rank(state)
        self.loggers.finalize("success")
        self._hparams_logged = False  # a next train() starts new runs: record them again

    def __repr__(self) -> str:
        return f"LoggerCallback({self.loggers!r})"
