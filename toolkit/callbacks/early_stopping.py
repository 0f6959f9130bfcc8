"""`EarlyStoppingCallback`: stop training when the watched metric stops improving."""

from __future__ import annotations

import logging
from typing import Any

from toolkit.callbacks.base import TrainerCallback
from toolkit.state import TrainerControl, TrainerState
from toolkit.types import IntervalStrategy

__all__ = ["EarlyStoppingCallback"]

logger = logging.getLogger(__name__)


def _greater_is_better(args: Any, metric_name: str) -> bool:
    """``args.greater_is_better``, or (when unset) True unless the metric is a loss."""
    value = getattr(args, "greater_is_better", None)
    if value is None:
        return not metric_name.endswith("loss")
    return bool(value)


class EarlyStoppingCallback(TrainerCallback):
    """Stops training after ``early_stopping_patience`` evaluations without improvement.

    Watches ``args.metric_for_best_model`` (``"eval_"`` is prepended when missing) in
    the metrics of each evaluation and compares it with ``state.best_metric``, the best
    value seen so far (kept up to date by the trainer when it saves checkpoints). An
    evaluation improves when there is no best yet, or when the value is better in the
    direction of ``args.greater_is_better`` by strictly more than
    ``early_stopping_threshold``. An improvement resets the patience counter; anything
    else increments it, and once it reaches the patience ``should_training_stop`` is set.

    It needs ``load_best_model_at_end=True``, a ``metric_for_best_model`` and an
    evaluation strategy other than ``"no"``; this is checked on ``on_train_begin``.
    The counter is part of `state_dict`, so a resumed run keeps its patience.

    Args:
        early_stopping_patience: evaluations without improvement before stopping (>= 1).
        early_stopping_threshold: how much better a value must be to count as improvement.

    Raises:
        ValueError: when the patience is below 1 or the threshold is negative.

    Example:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(metric_for_best_model="loss", greater_is_better=False)
        >>> cb = EarlyStoppingCallback(early_stopping_patience=2)
        >>> state, control = TrainerState(best_metric=1.0), TrainerControl()
        >>> for loss in (1.5, 1.2):
        ...     _ = cb.on_evaluate(args, state, control, metrics={"eval_loss": loss})
        >>> control.should_training_stop
        True
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0) -> None:
        if early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {early_stopping_patience}")
        if early_stopping_threshold < 0:
            raise ValueError(f"early_stopping_threshold must be >= 0, got {early_stopping_threshold}")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0

    def on_train_begin(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Check that the arguments allow early stopping.

        Raises:
            ValueError: naming ``load_best_model_at_end``, ``metric_for_best_model`` or
                ``evaluation_strategy`` when it is not set as needed.
        """
        if not getattr(args, "load_best_model_at_end", False):
            raise ValueError("EarlyStoppingCallback requires load_best_model_at_end=True")
        if getattr(args, "metric_for_best_model", None) is None:
            raise ValueError("EarlyStoppingCallback requires metric_for_best_model to be set")
        strategy = getattr(args, "evaluation_strategy", None) or getattr(args, "eval_strategy", "no")
        if IntervalStrategy(strategy) is IntervalStrategy.NO:
            raise ValueError(
                "EarlyStoppingCallback requires evaluation_strategy to be 'steps' or 'epoch', got 'no'"
            )
        return control

    def check_metric_value(self, args: Any, state: TrainerState, metric_name: str, value: float) -> bool:
        """Update the patience counter with one metric value.

        Args:
            args: the training arguments (``greater_is_better`` is read).
            state: the run state (``best_metric`` is read).
            metric_name: the metric's full name (used when ``greater_is_better`` is unset).
            value: the new metric value.

        Returns:
            True when the value counts as an improvement.
        """
        best = state.best_metric
        if best is None:
            improved = True
        else:
            better = value > best if _greater_is_better(args, metric_name) else value < best
            improved = better and abs(value - best) > self.early_stopping_threshold
        if improved:
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1
        return improved

    def on_evaluate(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        """Count this evaluation and request a stop once the patience is used up."""
        name = args.metric_for_best_model
        if not name.startswith("eval_"):
            name = f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:
            logger.warning(
                "Early stopping needs metric %r, which is not in the evaluation metrics (%s); "
                "early stopping is skipped for this evaluation.",
                name,
                ", ".join(sorted(metrics or {})) or "none",
            )
            return control
        self.check_metric_value(args, state, name, float(value))
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True
        return control

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Settings and patience counter, in the shape HF uses for ``stateful_callbacks``."""
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Restore what `state_dict` returned (missing entries keep their current values)."""
        settings = state.get("args", {})
        self.early_stopping_patience = int(
            settings.get("early_stopping_patience", self.early_stopping_patience)
        )
        self.early_stopping_threshold = float(
            settings.get("early_stopping_threshold", self.early_stopping_threshold)
        )
        attributes = state.get("attributes", {})
        self.early_stopping_patience_counter = int(
            attributes.get("early_stopping_patience_counter", self.early_stopping_patience_counter)
        )
